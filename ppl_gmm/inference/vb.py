"""Closed-form variational Bayes for the GMM (Bishop, PRML §10.2): CAVI over q(Z) q(α) q(μ, Λ).

Model: the generative process of ``docs/maths.md`` (eq. 15) under the conjugate prior
``NormalWishartPrior`` (PRML 10.39–10.40).  The mean-field family and its optimum
(eq. 16 applied factor by factor) are

    q(Z) = Π_i Categorical(r_i)                       (10.48; eq. 17 with Θ integrated out)
    q(α) = Dir(α | alpha_k)                           (10.57)
    q(μ_k, Λ_k) = N(μ_k | m_k, (beta_k Λ_k)⁻¹) W(Λ_k | W_k, nu_k)     (10.59)

E-step (the expectation of eq. 15 under q(α) q(μ, Λ); eq. 20 with Θ integrated out):

    ln ρ_ik = E[ln π_k] + ½ E[ln |Λ_k|] − (D/2) ln 2π − ½ E[(x_i − μ_k)ᵀ Λ_k (x_i − μ_k)]   (10.46)
    E[ln π_k]   = ψ(alpha_k) − ψ(Σ_j alpha_j)                                             (10.66)
    E[ln |Λ_k|] = Σ_{d=1..D} ψ((nu_k + 1 − d)/2) + D ln 2 + ln |W_k|                       (10.65)
    E[quad]     = D / beta_k + nu_k (x_i − m_k)ᵀ W_k (x_i − m_k)                          (10.64)
    r_ik = ρ_ik / Σ_j ρ_ij   (log space)                                                  (10.49)

M-step: the conjugate update ``core.priors.conjugate_update`` (10.58, 10.60–10.63).

``.elbo`` is the full bound L = E[ln p(X, Z, α, μ, Λ)] − E[ln q] with every constant
(10.70–10.77), so for K = 1 it equals the exact log evidence ln p(X) once converged.
Iterations and traces follow ``fit_cavi`` (one driver, ``ascent.fit_ascent``): Θ₀ from
``core.init.initial_params`` (fit_cavi's default Θ₀, reg_covar = 1e-6), r₀ = e_step(x, Θ₀),
one VB M-step; then iteration t is an
E-step followed by an M-step and ``elbo[t−1]`` is the bound after it; a closing E-step
adds the last entry, so ``len(elbo) == n_iter + 1`` and ``gamma``/``elbo[-1]`` belong to
the returned posterior.  Each update is a coordinate ascent step, so the trace is
non-decreasing.

Speed: in coordinates centred at the data mean, ln ρ_ik is linear in the features
φ(x_i) = [x_i,d x_i,e (d ≤ e), x_i, 1], so an iteration is one blocked pass over the rows
with two GEMMs (ln ρ = A φ for the E-step, T = r φᵀ for the M-step's N_k, Σ r x, Σ r x xᵀ);
when a component lies so far from the data mean that this expansion could cost digits
(see ``_vb_kernel``) the iteration falls back to difference-first, two-pass kernels.
Scale: the fit runs in x' = x / s (``ascent``, "Scale"; s = 1 at ordinary scales) under the prior
mapped to x' units (m0 / s, s² W0), from fit_cavi's default Θ₀ of x'; the posterior maps back as
m = s m', W = W' / s² and the bound as L = L' − N D ln s.
Small fits run on one torch thread (``core.threads.limited_threads``).  The posterior type, its
expectations and the bound live in ``core.vb_posterior``; the result type in ``results.vb_fit``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.gmm import entropy
from ..core.init import initial_responsibilities
from ..core.linalg import log_det_from_cholesky
from ..core.params import GMMParams
from ..core.priors import ConjugateStats, NormalWishartPrior, conjugate_update_from_data, resolve_prior
from ..core.rng import resolve_seed
from ..core.threads import limited_threads
from ..core.validation import ArrayLike, check_bool, check_fit_args, check_int, check_positive, data_scale
from ..core.vb_posterior import VBPosterior, bound_after_m_step, global_terms, posterior_cholesky
from ..results.vb_fit import VBFit
from . import _vb_kernel as kernel
from .ascent import fit_ascent, scale_offsets, scale_posterior, scale_prior

__all__ = ["fit_vb", "VBProblem"]


@dataclass
class _State:
    st: ConjugateStats  # q(α) q(μ, Λ) in centred coordinates
    chol: torch.Tensor  # Cholesky factors of W_k⁻¹
    blocks: list  # r of the last E-step, (K, b) blocks
    t_stats: torch.Tensor | None  # T = r φ of the last E-step (None: use the exact M-step)
    entropy: torch.Tensor  # H[r] of the last E-step
    lse: torch.Tensor  # Σ_i ln Σ_k ρ_ik of the last E-step
    terms: tuple | None = None  # kernel.e_terms(st, chol) when the M-step already computed them


class VBProblem:
    """Variational Bayes as an ``ascent.AscentProblem`` on the blocked kernel ``_vb_kernel``."""

    name = "the VB bound"

    def __init__(self, x: torch.Tensor, k: int, prior: NormalWishartPrior, resp0_t: torch.Tensor) -> None:
        self.n, self.d = x.shape
        self.k, self.prior = k, prior
        self.centre = x.mean(0)
        self.xc = x - self.centre  # centred coordinates throughout; m_k is shifted back at the end
        m0, _, self.w0_inv = prior.cast(x.dtype)
        self.m0c = m0 - self.centre
        self.const = prior.log_normalisers(k, x.dtype)
        self.iu = torch.triu_indices(self.d, self.d)
        p = self.iu.shape[1] + self.d + 1
        self.feats_t = kernel.features_t(self.xc, self.iu) if self.n * p <= kernel.FEATURE_CACHE_MAX else None
        self.resp0_t = resp0_t

    def _exact_m_step(self, resp_t: torch.Tensor) -> tuple[ConjugateStats, torch.Tensor]:
        st = conjugate_update_from_data(self.xc, resp_t.T, self.prior, self.m0c, self.w0_inv)  # two-pass
        return st, posterior_cholesky(st.w_inv)

    def _bound(self, entropy, st: ConjugateStats, chol: torch.Tensor) -> torch.Tensor:
        log_det_w = -log_det_from_cholesky(chol)  # ln |W_k|
        return bound_after_m_step(entropy, st.alpha, st.beta, st.nu, log_det_w, self.const, self.n, self.d)

    def _scan(self, st: ConjugateStats, chol: torch.Tensor, want_stats: bool, terms: tuple | None = None) -> _State:
        c, u, _ = kernel.e_terms(st, chol, self.d) if terms is None else terms
        if kernel.spread(st, u) <= kernel.G_EXPANSION_MAX:
            design = kernel.design_t(st.m, u @ u.transpose(1, 2), c, self.iu)
            out = kernel.scan(self.xc, self.k, design=design, feats_t=self.feats_t, iu=self.iu, want_stats=want_stats)
        else:
            out = kernel.scan(self.xc, self.k, exact=(st.m, u, c), want_stats=False)
        return _State(st, chol, *out)

    def start(self, final: bool) -> tuple[_State, float]:
        st, chol = self._exact_m_step(self.resp0_t)
        prev = float(self._bound(entropy(self.resp0_t), st, chol))  # H[r₀]: entropy is symmetric in γ, γᵀ
        return self._scan(st, chol, not final), prev

    def m_step(self, state: _State) -> tuple[_State, torch.Tensor]:
        new, terms = None, None
        if state.t_stats is not None:  # the M-step from r φ, unless it would cost digits
            new = kernel.m_step_from_stats(state.t_stats, self.prior, self.m0c, self.w0_inv, self.iu, self.d)
            new_chol, bad = posterior_cholesky(new.w_inv, check_only=True)
            if bad is None:
                terms = kernel.e_terms(new, new_chol, self.d)  # reused by the next E-step
            if terms is None or kernel.spread(new, terms[1]) > kernel.G_EXPANSION_MAX:
                new, terms = None, None
        if new is None:
            st, chol = self._exact_m_step(torch.cat(state.blocks, 1))
        else:
            st, chol = new, new_chol
        value = self._bound(state.entropy, st, chol)
        return _State(st, chol, state.blocks, None, state.entropy, state.lse, terms), value

    def e_step(self, state: _State, final: bool) -> tuple[_State, None]:
        return self._scan(state.st, state.chol, not final, state.terms), None  # 10.46–10.49

    def posterior(self, state: _State) -> VBPosterior:
        st = state.st
        return VBPosterior.from_update(st.alpha, st.beta, st.m + self.centre, st.nu, state.chol)

    def finish(self, state: _State) -> tuple[torch.Tensor, None]:
        return state.lse + global_terms(self.posterior(state), self.prior), None  # 10.70, r = softmax(ln ρ)

    def last_finite(self, state: _State) -> ConjugateStats:
        return state.st


def fit_vb(
    x: ArrayLike,
    k: int,
    prior: NormalWishartPrior | None = None,
    *,
    init: str | GMMParams | VBPosterior = "kmeans++",
    max_iter: int = 1000,
    tol: float = 1e-8,
    seed: int | None = None,
    progress: bool = False,
    dtype: torch.dtype | None = None,
) -> VBFit:
    """Closed-form variational Bayes: CAVI over q(Z) q(α) q(μ, Λ), PRML §10.2 (module docstring).

    Parameters
    ----------
    x, k, max_iter, tol, seed, progress, dtype
        As ``fit_cavi``; converged when the change of the bound divided by N falls below ``tol``.
    prior : NormalWishartPrior or None
        None means ``default_prior(x, k)``.
    init : {"kmeans++", "random"}, GMMParams or VBPosterior
        Θ₀ (r₀ = e_step(x, Θ₀)), or a posterior (r₀ = its E-step). The default Θ₀ is fit_cavi's
        default Θ₀ of the data in the fit's coordinates x / s (x itself at ordinary scales).

    Returns
    -------
    VBFit
        ``.elbo`` the full bound (PRML 10.70–10.77), non-decreasing; the last entry after the
        closing E-step, so ``gamma`` and ``elbo[-1]`` belong to the returned posterior.

    Raises
    ------
    ValueError
        Bad input, before any work; also data whose covariances, or whose posterior scale
        matrices W_k⁻¹ ~ N r² (PRML 10.62), float64 cannot hold (``core.validation.data_scale``).
    """
    x, k, init = check_fit_args(x, k, init, dtype, extra_inits=(VBPosterior,))
    progress = check_bool(progress, "progress")
    max_iter = check_int(max_iter, "max_iter", 0)
    tol = check_positive(tol, "tol", allow_zero=True)
    scale = data_scale(x, scatter=True)  # refuses data whose covariances or W_k⁻¹ float64 cannot hold
    xs = scale.down(x)  # the fit runs in x' = x / s (s = 1 at ordinary scales; ``ascent``, "Scale")
    prior_s = resolve_prior(xs, k, scale_prior(prior, scale))  # None: default_prior of x' (equivariant)
    if prior is None:
        prior = scale_prior(prior_s, scale, up=True)
    seed = resolve_seed(seed)
    with limited_threads(x.shape[0] * k * x.shape[1]):
        if isinstance(init, VBPosterior):
            resp0 = scale_posterior(init, scale).responsibilities(xs)
        else:
            init = scale.params_down(init) if isinstance(init, GMMParams) else init
            resp0 = initial_responsibilities(xs, k, init, seed)  # fit_cavi's default Θ₀ of x'
        problem = VBProblem(xs, k, prior_s, resp0.T.contiguous())
        run = fit_ascent(problem, max_iter=max_iter, tol=tol, progress=progress, desc="VB")
        offset = scale_offsets(scale, x.shape[0], x.shape[1])[0]  # the bound loses N·D·ln s in x'
        return VBFit(
            posterior=scale_posterior(problem.posterior(run.state), scale, up=True),
            gamma=torch.cat(run.state.blocks, 1).T.contiguous(),
            **run.trace_fields(x.dtype, offset),
            method="vb",
            n_iter=run.n_iter,
            converged=run.converged,
            seed=seed,
            prior=prior,
        )
