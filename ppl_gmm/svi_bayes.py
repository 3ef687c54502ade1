"""Bayesian SVI: the prior model and the mean-field guide of ``bayes_model``, ``TraceEnum_ELBO``.

The guide's family is the family of ``fit_vb`` (PRML §10.2)::

    q(α) Π_k q(μ_k, Λ_k) Π_i q(z_i) = Dir(α | alpha) Π_k N(μ_k | m_k, (beta_k Λ_k)⁻¹) W(Λ_k | W_k, nu_k)
                                      Π_i Categorical(z_i | γ_i)

and the objective is the same bound L(q) = E_q[ln p(X, Z, α, μ, Λ)] − E_q[ln q] (PRML 10.70).
``TraceEnum_ELBO`` sums z exactly (parallel enumeration, weighted by γ) and estimates the global
part with ``num_particles`` reparameterised draws (Dirichlet and Wishart draws are reparameterised
through implicit Gamma gradients).  Optimiser: ``ClippedAdam``, learning rate ``lr`` decayed
geometrically to ``lr · LRD`` (LRD = 0.1) over ``num_steps``.

Gradient estimator.  ``stl=True`` (default) uses the "sticking the landing" estimator (Roeder et al.
2017; ``bayes_model._site``): the score term ∂ ln q_φ(θ)/∂φ, whose expectation is zero, is dropped.
Its expectation is the same gradient, and at VB's optimum ln p(X, θ, ·) − ln q(θ) is constant in θ
(ln q* = E_q(Z)[ln p] + const), so the estimate is *exactly* zero there: SVI then converges to the
VB optimum like a deterministic method.  ``stl=False`` is the textbook reparameterisation estimator,
whose variance does not vanish at the optimum: Adam then jitters around it.

How close to ``fit_vb`` (tests/test_svi_bayes.py, well-separated data): both maximise the same L over
the same family, so they share their optima.  From a start ~100 nats below the optimum, 400 steps
(lr 0.05) bring every factor parameter within ~1e-4 relative and the bound within ~2e-4 nats of
fit_vb's; 500 steps reach ~1e-8.  What is left is only Adam's finite run (and which local optimum
each method reaches from its start; the same ``init`` and ``seed`` give both the same start).  With
``stl=False`` the noise floor leaves a gap of order 1e-2–1 nat.

Traces: since q is in VB's family, the bound of the current q is known in closed form
(``vb.lower_bound``, PRML 10.70–10.77, every constant), so ``.elbo[t]`` is that *exact* bound
after step t — directly comparable with ``fit_vb(...).elbo``, but, unlike VB's, not monotone.
``.info["elbo_estimate"]`` keeps SVI's own Monte-Carlo estimate −loss per step (exact over z,
one draw of the globals: an unbiased, noisy estimate of the bound *before* that step's update).
"""
from __future__ import annotations

import functools
import math
import time

import pyro
import torch
from pyro.infer import SVI, TraceEnum_ELBO
from pyro.optim import ClippedAdam

from ._fitting import progress_bar
from ._threads import limited_threads
from ._validation import check_int, check_positive
from .bayes_model import (GUIDE_PARAMS, bayes_gmm_model, bayes_meanfield_guide, guide_constraints, guide_factors,
                          guide_init, guide_values)
from .cavi import check_fit_args
from .errors import DivergenceError
from .init import resolve_seed, preserved_global_rng
from .vb import VBFit, VBPosterior, initial_responsibilities, lower_bound, resolve_prior

__all__ = ["fit_svi_bayes", "guide_posterior"]

LRD = 0.1


def guide_posterior(store=None) -> tuple[VBPosterior, torch.Tensor]:
    """(VBPosterior, γ) from the guide's parameters: the current Pyro param store, or a dict."""
    get = (lambda name: store[name]) if store is not None else pyro.param
    with torch.no_grad():
        f = guide_factors({name: get(name).detach().clone() for name in GUIDE_PARAMS})
        post = VBPosterior(alpha=f["alpha"], m=f["m"], beta=f["beta"], nu=f["nu"], W=f["W"])
    return post, f["gamma"]


def _initial_values(x, k, prior, init, seed) -> dict:
    """fit_vb's start: r₀ = ``vb.initial_responsibilities`` (e_step(x, Θ₀), Θ₀ as fit_vb) and one VB
    M-step for the globals (or a given VBPosterior); γ = the VB E-step of those globals."""
    if isinstance(init, VBPosterior):
        post = VBPosterior(*(getattr(init, f).to(x.dtype) for f in ("alpha", "m", "beta", "nu", "W")))
    else:
        resp0 = initial_responsibilities(x, k, init, seed)
        post, _ = guide_posterior(guide_init(x, resp0, prior))  # PRML 10.58-10.63 from r₀
    gamma = post.responsibilities(x)  # the VB E-step, PRML 10.46-10.49
    return guide_values(post.alpha, post.m, post.beta, post.nu, post.W, gamma)


def fit_svi_bayes(x, k, prior=None, *, num_steps=1000, lr=0.05, seed=None, progress=False, init="kmeans++",
                  num_particles=1, stl=True, dtype=None) -> VBFit:
    """Fit q(α) q(μ, Λ) q(Z) by SVI on the Bayesian model (module docstring); returns a ``VBFit``
    with ``method == "svi_bayes"``, ``.elbo`` the exact bound after each step and
    ``.info["elbo_estimate"]`` SVI's Monte-Carlo estimates.

    ``prior``: NormalWishartPrior (None: ``default_prior(x, k)``).  ``init``: as ``fit_vb``
    ("kmeans++", "random", a GMMParams or a VBPosterior); with the same ``init`` and ``seed`` the
    start is fit_vb's first q.  Exactly ``num_steps`` steps (no stopping rule: ``converged`` is
    False).  Every random choice flows from ``seed`` (``pyro.set_rng_seed``).  A non-finite loss
    raises ``DivergenceError`` with the last finite posterior attached.
    """
    x, k = check_fit_args(x, k, "kmeans++" if isinstance(init, VBPosterior) else init, dtype)
    prior = resolve_prior(x, k, prior)
    num_steps = check_int(num_steps, "num_steps", 1)
    num_particles = check_int(num_particles, "num_particles", 1)
    lr = check_positive(lr, "lr")
    seed = resolve_seed(seed)
    if isinstance(init, VBPosterior) and (init.k != k or init.d != x.shape[1]):
        raise ValueError(f"init posterior has K = {init.k}, D = {init.d}; the fit asks for K = {k}, D = {x.shape[1]}")
    start = time.perf_counter()
    with limited_threads(), preserved_global_rng(), pyro.get_param_store().scope():
        pyro.set_rng_seed(seed)
        values = _initial_values(x, k, prior, init, seed)
        bayes_meanfield_guide_params(values)
        optim = ClippedAdam({"lr": lr, "lrd": LRD ** (1.0 / num_steps), "clip_norm": 10.0})
        elbo_fn = TraceEnum_ELBO(max_plate_nesting=1, num_particles=num_particles, vectorize_particles=False)
        guide = functools.partial(bayes_meanfield_guide, stl=stl)
        svi = SVI(bayes_gmm_model, guide, optim, loss=elbo_fn)
        bounds, estimates, times = [], [], []
        last, last_gamma = guide_posterior()
        bar = progress_bar(progress, num_steps, "SVI (Bayes)")
        for step in range(num_steps):
            detail = "non-finite ELBO"
            try:
                loss = svi.step(x, k, prior)
                post, gamma = guide_posterior()
                bound = lower_bound(x, gamma, post, prior)  # PRML 10.70-10.77, exact
            except (ValueError, RuntimeError) as err:  # a parameter left its domain (NaN, not PD, ...)
                loss, bound, detail = float("nan"), torch.tensor(float("nan")), f"{type(err).__name__}: {err}"[:300]
            if not (math.isfinite(loss) and bool(torch.isfinite(bound))):
                if bar is not None:
                    bar.close()
                raise DivergenceError(
                    step + 1, last,
                    f"Bayesian SVI diverged at step {step + 1} ({detail}); the last finite posterior is "
                    "attached as `.last_finite`. Lower lr, standardise the data, or start from fit_vb "
                    "(init=fit_vb(x, k, prior).posterior).")
            last, last_gamma = post, gamma
            bounds.append(float(bound))
            estimates.append(-float(loss))
            times.append(time.perf_counter() - start)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(elbo=f"{bounds[-1]:.6g}")
        if bar is not None:
            bar.close()
    return VBFit(
        posterior=last,
        gamma=last_gamma,
        elbo=torch.tensor(bounds, dtype=x.dtype),
        method="svi_bayes",
        n_iter=num_steps,
        converged=False,
        seed=seed,
        prior=prior,
        times=torch.tensor(times, dtype=torch.float64),
        info={"elbo_estimate": estimates, "lr": lr, "lr_final": lr * LRD, "num_particles": num_particles, "stl": stl},
    )


def bayes_meanfield_guide_params(values: dict) -> None:
    """Put the guide's parameters into the current param store (constraints as the guide's)."""
    cons = guide_constraints(values["q_m"].shape[-1])
    for name in GUIDE_PARAMS:
        pyro.param(name, values[name].detach().clone(), constraint=cons[name])
