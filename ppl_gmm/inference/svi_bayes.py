"""Bayesian SVI: the prior model and the mean-field guide of ``ppl.bayes``, ``TraceEnum_ELBO``.

The guide's family is the family of ``fit_vb`` (PRML §10.2)::

    q(α) Π_k q(μ_k, Λ_k) Π_i q(z_i) = Dir(α | alpha) Π_k N(μ_k | m_k, (beta_k Λ_k)⁻¹) W(Λ_k | W_k, nu_k)
                                      Π_i Categorical(z_i | γ_i)

and the objective is the same bound L(q) = E_q[ln p(X, Z, α, μ, Λ)] − E_q[ln q] (PRML 10.70).
``TraceEnum_ELBO`` sums z exactly (parallel enumeration, weighted by γ) and estimates the global
part with ``num_particles`` reparameterised draws (Dirichlet and Wishart draws are reparameterised
through implicit Gamma gradients).  Optimiser: ``ClippedAdam``, learning rate ``lr`` decayed
geometrically to ``lr · LRD`` (LRD = 0.1) over ``num_steps``.

Gradient estimator.  ``stl=True`` (default) uses the "sticking the landing" estimator (Roeder et al.
2017; ``ppl.bayes._site``): the score term ∂ ln q_φ(θ)/∂φ, whose expectation is zero, is dropped.
Its expectation is the same gradient, and at VB's optimum ln p(X, θ, ·) − ln q(θ) is constant in θ
(ln q* = E_q(Z)[ln p] + const), so the estimate is *exactly* zero there: SVI then converges to the
VB optimum like a deterministic method.  ``stl=False`` is the textbook reparameterisation estimator,
whose variance does not vanish at the optimum: Adam then jitters around it.

How close to ``fit_vb`` (tests/inference/test_svi_bayes.py, well-separated data): both maximise the same L over
the same family, so they share their optima.  From a start ~100 nats below the optimum, 400 steps
(lr 0.05) bring every factor parameter within ~1e-4 relative and the bound within ~2e-4 nats of
fit_vb's; 500 steps reach ~1e-8.  What is left is only Adam's finite run (and which local optimum
each method reaches from its start; the same ``init`` and ``seed`` give both the same start).  With
``stl=False`` the noise floor leaves a gap of order 1e-2–1 nat.

Minibatches (``subsample_size``): the "data" plate of the model and the guide draws |B| rows per step
(``pyro.plate(..., subsample_size=)``, indices from torch's generator, seeded by ``seed``; the model
replays the guide's), Pyro scales their terms by N / |B| and the guide uses q(z_i) for i in B only, so
each step's loss is an unbiased estimate of −L (tests/ppl/test_bayes.py) and its gradient an unbiased
estimate of −∇L.  Rows outside B get no gradient in that step (Adam's momentum still moves them).
The trace ``.elbo`` stays the exact full-data bound (a pass over every row per step).

Traces: since q is in VB's family, the bound of the current q is known in closed form
(``core.vb_posterior.lower_bound``, PRML 10.70–10.77, every constant), so ``.elbo[t]`` is that *exact* bound
after step t — directly comparable with ``fit_vb(...).elbo``, but, unlike VB's, not monotone.
``.info["elbo_estimate"]`` keeps SVI's own Monte-Carlo estimate −loss per step (exact over z,
one draw of the globals: an unbiased, noisy estimate of the bound *before* that step's update).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import pyro
import torch
from pyro.infer import SVI, TraceEnum_ELBO
from pyro.optim import ClippedAdam

from ..core.init import initial_responsibilities
from ..core.params import GMMParams
from ..core.priors import NormalWishartPrior, resolve_prior
from ..core.rng import resolve_seed
from ..core.threads import limited_threads
from ..core.validation import ArrayLike, check_bool, check_fit_args, check_int, check_positive, data_scale
from ..core.vb_posterior import VBPosterior, lower_bound
from ..ppl.bayes import (
    GUIDE_PARAMS,
    bayes_gmm_model,
    bayes_meanfield_guide,
    check_subsample_size,
    guide_constraints,
    guide_factors,
    guide_init,
    guide_values,
)
from ..results.vb_fit import VBFit
from .ascent import scale_offsets, scale_posterior, scale_prior
from .svi_driver import StepOut, pyro_session, run_svi

__all__ = ["fit_svi_bayes", "guide_posterior", "set_guide_params"]

LRD = 0.1
_ADVICE = "Lower lr, standardise the data, or start from fit_vb (init=fit_vb(x, k, prior).posterior)."


def guide_posterior(store: Mapping[str, torch.Tensor] | None = None) -> tuple[VBPosterior, torch.Tensor]:
    """(VBPosterior, γ) from the guide's parameters: the current Pyro param store, or a dict."""
    get = (lambda name: store[name]) if store is not None else pyro.param
    with torch.no_grad():
        f = guide_factors({name: get(name).detach().clone() for name in GUIDE_PARAMS})
        post = VBPosterior(alpha=f["alpha"], m=f["m"], beta=f["beta"], nu=f["nu"], W=f["W"])
    return post, f["gamma"]


def set_guide_params(values: dict) -> None:
    """Put the guide's parameters into the current param store (constraints as the guide's)."""
    cons = guide_constraints(values["q_m"].shape[-1])
    for name in GUIDE_PARAMS:
        pyro.param(name, values[name].detach().clone(), constraint=cons[name])


def _initial_values(x, k, prior, init, seed) -> dict:
    """fit_vb's start: r₀ = e_step(x, Θ₀) (Θ₀ as fit_vb) and one VB M-step for the globals (or a given
    VBPosterior); γ = the VB E-step of those globals."""
    if isinstance(init, VBPosterior):
        post = VBPosterior(*(getattr(init, f).to(x.dtype) for f in ("alpha", "m", "beta", "nu", "W")))
    else:
        resp0 = initial_responsibilities(x, k, init, seed)
        post, _ = guide_posterior(guide_init(x, resp0, prior))  # PRML 10.58-10.63 from r₀
    gamma = post.responsibilities(x)  # the VB E-step, PRML 10.46-10.49
    return guide_values(post.alpha, post.m, post.beta, post.nu, post.W, gamma)


def fit_svi_bayes(
    x: ArrayLike,
    k: int,
    prior: NormalWishartPrior | None = None,
    *,
    num_steps: int = 1000,
    lr: float = 0.05,
    seed: int | None = None,
    progress: bool = False,
    init: str | GMMParams | VBPosterior = "kmeans++",
    num_particles: int = 1,
    stl: bool = True,
    subsample_size: int | None = None,
    dtype: torch.dtype | None = None,
) -> VBFit:
    """Fit q(α) q(μ, Λ) q(Z) by SVI on the Bayesian model (module docstring).

    Parameters
    ----------
    prior : NormalWishartPrior or None
        None means ``default_prior(x, k)``.
    init : {"kmeans++", "kmeans", "random"}, GMMParams or VBPosterior
        As ``fit_vb`` ("kmeans": Lloyd's k-means from the k-means++ seeds, scikit-learn's default).
        With the same ``init`` and ``seed`` the start is fit_vb's first q.
    num_steps : int
        Exactly this many steps (no stopping rule: ``converged`` is False).
    num_particles, stl
        Draws of the globals per step; the "sticking the landing" estimator (module docstring).
    subsample_size : int or None
        Minibatches: each step's ELBO estimate uses |B| = ``subsample_size`` rows drawn by
        ``pyro.plate("data", N, subsample_size=...)`` (from ``seed``), scaled by N / |B| (module
        docstring, "Minibatches"). None: every row.

    Returns
    -------
    VBFit
        ``method == "svi_bayes"``, ``.elbo`` the exact bound after each step and
        ``.info["elbo_estimate"]`` SVI's Monte-Carlo estimates. Every random choice flows from
        ``seed``; a non-finite loss raises ``DivergenceError`` with the last finite posterior attached.
    """
    x, k, init = check_fit_args(x, k, init, dtype, extra_inits=(VBPosterior,))
    num_steps = check_int(num_steps, "num_steps", 1)
    num_particles = check_int(num_particles, "num_particles", 1)
    lr = check_positive(lr, "lr")
    stl = check_bool(stl, "stl")
    subsample_size = check_subsample_size(subsample_size, x.shape[0])
    progress = check_bool(progress, "progress")
    seed = resolve_seed(seed)
    scale = data_scale(x, scatter=True)  # as fit_vb: refuses data whose W_k⁻¹ float64 cannot hold
    xs = scale.down(x)  # the fit runs in x' = x / s (s = 1 at ordinary scales; ``ascent``, "Scale")
    prior_s = resolve_prior(xs, k, scale_prior(prior, scale))  # None: default_prior of x' (equivariant)
    prior = prior if prior is not None else scale_prior(prior_s, scale, up=True)
    if isinstance(init, VBPosterior):
        init = scale_posterior(init, scale)
    elif isinstance(init, GMMParams):
        init = scale.params_down(init)
    offset = scale_offsets(scale, x.shape[0], x.shape[1])[0]  # the bound loses N·D·ln s in x' (KLs invariant)
    with pyro_session(seed), limited_threads():  # the thread count too is changed under the global-state lock
        set_guide_params(_initial_values(xs, k, prior_s, init, seed))
        optim = ClippedAdam({"lr": lr, "lrd": LRD ** (1.0 / num_steps), "clip_norm": 10.0})
        elbo_fn = TraceEnum_ELBO(max_plate_nesting=1, num_particles=num_particles, vectorize_particles=False)
        model = functools.partial(bayes_gmm_model, subsample_size=subsample_size)
        guide = functools.partial(bayes_meanfield_guide, stl=stl, subsample_size=subsample_size)
        svi = SVI(model, guide, optim, loss=elbo_fn)

        def step(t: int) -> StepOut:
            loss = svi.step(xs, k, prior_s)
            post, gamma = guide_posterior()
            bound = lower_bound(xs, gamma, post, prior_s)  # PRML 10.70-10.77, exact
            return StepOut(
                check=(loss, bound), record=(float(bound) + offset, offset - float(loss)), state=(post, gamma)
            )

        run = run_svi(
            step,
            num_steps=num_steps,
            n=x.shape[0],
            initial_state=guide_posterior(),
            progress=progress,
            desc="SVI (Bayes)",
            catch=(ValueError, RuntimeError),
            advice=_ADVICE,
            describe_state=lambda state: scale_posterior(state[0], scale, up=True),
        )
    posterior, gamma = run.last_finite
    posterior = scale_posterior(posterior, scale, up=True)
    return VBFit(
        posterior=posterior,
        gamma=gamma,
        elbo=torch.tensor([r[0] for r in run.records], dtype=x.dtype),
        method="svi_bayes",
        n_iter=num_steps,
        converged=False,
        seed=seed,
        prior=prior,
        times=torch.tensor(run.times, dtype=torch.float64),
        info={
            "elbo_estimate": [r[1] for r in run.records],
            "lr": lr,
            "lr_final": lr * LRD,
            "num_particles": num_particles,
            "stl": stl,
            "subsample_size": subsample_size,
        },
    )
