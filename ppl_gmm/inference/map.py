"""MAP-EM: EM (eq. 20 then a modified eq. 21/28) for the posterior mode under the conjugate prior.

The objective is the log posterior up to the constant ln p(X),

    ln p(X | Θ) + ln p(Θ),   ln p(Θ) = ln Dir(α | alpha0) + Σ_k [ln N(μ_k | m0, (beta0 Λ_k)⁻¹) + ln W(Λ_k | W0, nu0)]

with the densities taken in the (α, μ, Λ) parametrisation (Dirichlet on the first K − 1
coordinates of the simplex, Wishart on the distinct entries of Λ_k = Σ_k⁻¹), PRML 10.39–10.40.
EM's bound on it is eq. 18 + ln p(Θ): the E-step is eq. 20 unchanged (the prior does not involve
Z), and the M-step maximises Σ_ik γ_ik [ln α_k + ln N(x_i | μ_k, Λ_k⁻¹)] + ln p(Θ), which for the
conjugate prior is ln of an (unnormalised) Dir × Normal-Wishart with the parameters of the
conjugate update (``core.priors.conjugate_update``: alpha_k, beta_k, m_k, W_k, nu_k; PRML 10.58–10.63).
Its joint mode in (α, μ, Λ):

    α_k = (alpha_k − 1) / Σ_j (alpha_j − 1) = (N_k + alpha0 − 1) / (N + K(alpha0 − 1))   (Dirichlet mode)
    μ_k = m_k                                      (the Gaussian factor is maximal at its mean for any Λ_k)
    Λ_k = (nu_k − D) W_k,  i.e.  Σ_k = W_k⁻¹ / (nu_k − D)

The last line: at μ_k = m_k the terms in Λ_k are ½ ln|Λ_k| (from the Gaussian factor) +
½ (nu_k − D − 1) ln|Λ_k| − ½ tr(W_k⁻¹ Λ_k); setting the gradient ½ (nu_k − D) Λ_k⁻¹ − ½ W_k⁻¹ to
zero gives Λ_k = (nu_k − D) W_k.  (In the Σ parametrisation the Jacobian |Σ|^{−(D+1)} would move the
mode to W_k⁻¹ / (nu_k + D + 2); the API fixes Λ.)  It needs nu_k > D, so ``fit_map`` requires
nu0 > D: then even an empty component (N_k = 0) has a mode — the prior's, μ_k = m0,
Σ_k = W0⁻¹ / (nu0 − D) — which is the documented recovery from empty components.

alpha0 < 1: the Dirichlet density is unbounded at the faces of the simplex, so the posterior has
no mode; the rule α_k ∝ max(N_k + alpha0 − 1, 0) then switches components off (α_k = 0; Figueiredo
& Jain 2002).  A switched-off component stays off (the E-step gives it γ = 0), its (μ_k, Σ_k) sit at
the prior's mode, and ln Dir is evaluated on the face of the active components.  The objective is
non-decreasing for alpha0 ≥ 1; with alpha0 < 1 it can drop at the iteration that switches a
component off (where eq. 18 at the previous γ is −∞, so that entry is ln p(X | Θ_t) + ln p(Θ_t)).

Covariance types (the priors: ``core.priors``, "MAP per covariance type"; all from the one
full conjugate update, R_k = W_k⁻¹ − W0⁻¹ = Σ_i γ_ik (x_i − m_k)(x_i − m_k)ᵀ + beta0 (m_k − m0)(m_k − m0)ᵀ):

- diag, λ_kd ~ Gamma(nu0/2, rate (W0⁻¹)_dd/2), μ_kd | λ_kd ~ N(m0_d, (beta0 λ_kd)⁻¹): the terms in
  (μ_kd, λ_kd) are λ_kd^{(nu_k − 1)/2} exp(−λ_kd (W_k⁻¹)_dd / 2) · exp(−beta_k λ_kd (μ_kd − m_kd)² / 2)
  (N_k/2 + ½ + nu0/2 − 1 powers of λ), so μ_kd = m_kd and λ_kd = (nu_k − 1) / (W_k⁻¹)_dd — the full
  rule with D = 1; needs nu0 > 1.
- spherical, λ_k ~ Gamma(D nu0/2, rate tr(W0⁻¹)/2), μ_k | λ_k ~ N(m0, (beta0 λ_k)⁻¹ I): the power of
  λ_k is D N_k/2 + D/2 + D nu0/2 − 1 and the rate tr(W_k⁻¹)/2, so λ_k = (D (nu_k + 1) − 2) / tr(W_k⁻¹);
  needs D (nu0 + 1) > 2.
- tied, one Λ ~ W(W0, nu0), μ_k | Λ ~ N(m0, (beta0 Λ)⁻¹) for every k: the terms in Λ are
  ½ (N + K + nu0 − D − 1) ln|Λ| − ½ tr((W0⁻¹ + Σ_k R_k) Λ), so Λ = (nu0 + N + K − D − 1)(W0⁻¹ + Σ_k R_k)⁻¹
  (K = 1: the full rule); the mode exists whenever nu0 + N + K − D − 1 > 0.

α and μ are as for full. ``core.priors.check_map_prior`` refuses a prior whose mode does not exist,
before any work; ``core.priors.log_prior(params, prior, covariance_type)`` is ln p(Θ) of each type.

Engine, sources and weights. The E-step is eq. 20, the same as CAVI's, and the M-step needs only
N_k, x̄_k and the scatter S_k about x̄_k, so :class:`MAPProblem` is ``inference._em.CAVIProblem``
with its two hooks replaced: ``update`` turns the pass's statistics (``_engine.m_step_from_stats``)
into the conjugate update — sum_x = N_k x̄_k and Σ_i γ_ik (x_i − m)(x_i − m)ᵀ = S_k + N_k (x̄_k − m)(x̄_k − m)ᵀ
— and its mode, and ``objective`` adds ln p(Θ). The passes are the engine's: in centred coordinates
(the prior's m0 is shifted with the data), over any ``core.sources`` source block by block (Dask:
chunk by chunk), on the worker threads, with frequency weights w_i (every statistic Σ_i w_i (...),
N = Σ_i w_i in the stopping rule and the tied mode; integer weights = repeated rows). ``fit.gamma``
is None for the out-of-memory kinds, as for ``fit_cavi``.

Scale: the fit runs in x' = x / s (``ascent``, "Scale"; s = 1 at ordinary scales) under the prior
mapped to x' units (m0 / s, s² W0), from fit_cavi's default Θ₀ of x'. The objective maps back as
ln p(X | Θ) = ln p(X' | Θ') − N D ln s and ln p(Θ) = ln p'(Θ') + c ln s, with c counting +2 per
distinct precision entry and −1 per mean entry: K D² (full), K D (diag), K (2 − D) (spherical),
D (D + 1) − K D (tied) (:func:`prior_scale_power`).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from ..core.init import INIT_REG_COVAR, initial_params_source
from ..core.params import GMMParams
from ..core.priors import (
    NormalWishartPrior,
    check_cov_structure,
    check_map_prior,
    conjugate_update,
    default_prior_source,
    log_prior,
    posterior_mode,
)
from ..core.rng import resolve_seed
from ..core.sources import Source, as_source
from ..core.threads import PARALLEL_WORK, limited_threads
from ..core.validation import (
    UNSCALED,
    ArrayLike,
    DataScale,
    check_bool,
    check_covariance_type,
    check_init,
    check_int,
    check_k,
    check_positive,
)
from ..core.vb_posterior import posterior_cholesky
from ..results.gmm_fit import GMMFit
from ._em import CAVIProblem
from ._engine import Stats, Theta, m_step_from_stats
from ._passes import resolve_threads
from .ascent import best_of_restarts, fit_ascent, scale_offsets, scale_prior

__all__ = ["fit_map", "MAPProblem", "prior_scale_power"]

_F64 = torch.float64


def prior_scale_power(covariance_type: str, k: int, d: int) -> int:
    """c in ln p(Θ) = ln p'(Θ') + c ln s for x' = x / s (module docstring, "Scale"): each mean entry
    μ = s μ' gives −ln s, each distinct precision entry λ = λ' / s² gives +2 ln s."""
    precisions = {"full": k * d * (d + 1) // 2, "diag": k * d, "spherical": k, "tied": d * (d + 1) // 2}
    return 2 * precisions[covariance_type] - k * d


class MAPProblem(CAVIProblem):
    """MAP-EM on the CAVI engine (``inference._em``): the same passes (eq. 20, over any source,
    with weights, threads and Dask); the M-step hook is the conjugate posterior mode of
    ``covariance_type`` from the pass's N_k, x̄_k and S_k, and the objective hook adds ln p(Θ)."""

    name = "eq. 18 + ln p(Θ)"

    def __init__(
        self,
        x: torch.Tensor | Source,
        params0: GMMParams,
        prior: NormalWishartPrior,
        covariance_type: str,
        reg_covar: float,
        scale: DataScale = UNSCALED,
        *,
        threads: int = 1,
    ) -> None:
        """``params0``, ``prior`` and ``reg_covar`` in x' = x / s units (``CAVIProblem`` for ``x``)."""
        super().__init__(x, params0, covariance_type, reg_covar, scale=scale, threads=threads)
        # the prior in the engine's centred coordinates x̃ = x' − x̄' (ln p(Θ) is unchanged by the shift)
        self.prior = NormalWishartPrior(prior.alpha0, prior.m0 - self.shift, prior.beta0, prior.nu0, prior.W0)
        self.m0, _, self.w0_inv = self.prior.cast(_F64)
        self.lp = log_prior(params0.to(_F64), prior, covariance_type)  # ln p(Θ) of the current Θ
        self.log_priors: list[float] = []  # ln p(Θ) of every trace entry
        self._tiny = 10 * torch.finfo(self.dtype).eps  # N_k below this: an empty component (``check_nonempty``)

    def start(self, final: bool) -> tuple[Any, float]:
        state, lse = super().start(final)
        return state, lse + float(self.lp)  # eq. 26 + ln p(Θ₀)

    def update(self, st: Stats, th: Theta) -> tuple[Theta, torch.Tensor]:
        """Θ' = the joint posterior mode (module docstring) from N_k, x̄_k and S_k of the pass;
        returns the scatter about the new μ_k = m_k for the objective."""
        n_k = st.n_k
        empty = n_k < self._tiny
        if bool(empty.any()):  # x̄_k is undefined there: the moments about any point (all ~0) do
            st = copy.copy(st)
            st.n_k = torch.where(empty, torch.ones_like(n_k), n_k)
        _, xbar, _, s_xbar, _ = m_step_from_stats(st, th, "full", 0.0, self.dtype)  # x̄_k, S_k about x̄_k (eq. 28)
        outer = lambda v: v[:, :, None] * v[:, None, :]
        scatter = lambda m: s_xbar + n_k[:, None, None] * outer(xbar - m)  # Σ_i w_i γ_ik (x̃_i − m_k)(x̃_i − m_k)ᵀ
        cst = conjugate_update(self.prior, n_k, n_k[:, None] * xbar, scatter, self.m0, self.w0_inv)  # 10.58–10.63
        posterior_cholesky(cst.w_inv)  # a clear error if W_k⁻¹ lost positive definiteness
        p = posterior_mode(cst, self.reg_covar, self.covariance_type, self.prior)  # the joint mode (docstring)
        self.lp = log_prior(p, self.prior, self.covariance_type)
        return Theta(p.alpha, p.mu, p.cov, self.data_scale, self.dtype), cst.scatter

    def objective(self, st: Stats, scatter: torch.Tensor, th: Theta, new: Theta) -> torch.Tensor:
        """eq. 18 at (γ of the pass at ``th``, Θ' = ``new``) + ln p(Θ')."""
        if not bool(torch.isfinite(th.const).all()):  # α_k = 0 (switched off): N_k = 0, its term is 0
            th = copy.copy(th)
            th.const = torch.where(torch.isfinite(th.const), th.const, torch.zeros((), dtype=_F64))
        value = super().objective(st, scatter, th, new)  # eq. 18 at (γ of the pass at th, Θ')
        if not bool(torch.isfinite(value)):  # a component switched off that still had γ > 0
            value = self.engine.run_pass(new, stats=False).lse  # eq. 26 at Θ' (eq. 18 at γ_{t−1} is −∞)
        self.log_priors.append(float(self.lp))
        return value + self.lp

    def finish(self, state: Any) -> tuple[torch.Tensor, torch.Tensor]:
        self.log_priors.append(float(self.lp))
        return state.lse + self.lp, state.lse  # KL gap 0 after the closing E-step


def _run(source, k, prior, init, seed, covariance_type, max_iter, tol, reg_covar, progress, scale, prior_repr, threads):
    """One fit in x' = x / s: ``prior`` in x' units; ``init`` and ``reg_covar`` in x's."""
    init_reg = math.ldexp(INIT_REG_COVAR, 2 * scale.exponent)  # 1e-6 in x' units, fit_cavi's default Θ₀ of x'
    params0 = scale.params_down(initial_params_source(source, k, init, seed, covariance_type, init_reg))
    reg = scale.reg_down(reg_covar)
    problem = MAPProblem(source, params0, prior, covariance_type, reg, scale, threads=threads)
    run = fit_ascent(problem, max_iter=max_iter, tol=tol, progress=progress, desc="MAP-EM")
    data = scale_offsets(scale, 1, source.d)[0] * source.total_weight  # eq. 26: −(Σ_i w_i)·D·ln s
    lp = prior_scale_power(covariance_type, k, source.d) * scale.log_s if not scale.is_identity else 0.0
    return GMMFit(
        params=problem.params(run.state),
        gamma=problem.gamma,  # None for the out-of-memory sources
        **run.trace_fields(source.dtype, data + lp, data),
        method="map",
        n_iter=run.n_iter,
        converged=run.converged,
        seed=seed,
        covariance_type=covariance_type,
        reg_covar=reg_covar,
        info={"log_prior": [v + lp for v in problem.log_priors] if lp else problem.log_priors, "prior": prior_repr},
    )


def fit_map(
    x: ArrayLike | Source | Any,
    k: int,
    prior: NormalWishartPrior | None = None,
    *,
    init: str | GMMParams = "kmeans++",
    covariance_type: str = "full",
    max_iter: int = 1000,
    tol: float = 1e-8,
    reg_covar: float = 0.0,
    n_init: int = 1,
    seed: int | None = None,
    progress: bool = False,
    dtype: torch.dtype | None = None,
    sample_weight: Any = None,
    device: torch.device | str | None = None,
    threads: int | None = None,
) -> GMMFit:
    """MAP-EM under the conjugate prior of ``covariance_type`` (module docstring).

    Parameters
    ----------
    x, k, init, max_iter, tol, n_init, seed, progress, dtype, sample_weight, device, threads
        As ``fit_cavi``: in-memory data, a ``.npy`` path or memmap, an h5py/zarr-like dataset or a
        Dask array, read block by block; ``fit.gamma`` is None for the out-of-memory kinds.
        ``init``: "kmeans++", "kmeans" (Lloyd's k-means from the k-means++ seeds, scikit-learn's
        default), "random" or a GMMParams; ``n_init`` restarts: the first uses ``seed``, the others
        its child seeds (``inference.ascent.restart_seeds``), the best final objective wins. Θ₀ is
        fit_cavi's default Θ₀ of ``covariance_type`` (``initial_params_source``, reg_covar = 1e-6
        in the fit's coordinates x / s: x itself at ordinary scales; module docstring, "Scale");
        a GMMParams ``init`` must have the type's structure (diagonal, a multiple of I, or one
        covariance shared by every component).
    prior : NormalWishartPrior or None
        Read per covariance type (``core.priors``, "MAP per covariance type"): full Normal-Wishart,
        diag one Normal-Gamma per dimension, spherical one Normal-Gamma per component, tied one
        shared Wishart. Its mode must exist even for an empty component: full nu0 > D, diag
        nu0 > 1, spherical D (nu0 + 1) > 2, tied nu0 + N + K − D − 1 > 0. None means
        ``default_prior`` of the data (``default_prior_source``: weighted as repeated rows).
    covariance_type : {"full", "diag", "spherical", "tied"}
    reg_covar : float
        Added to Σ_k after the mode (default 0: the prior keeps every Σ_k positive definite).

    Returns
    -------
    GMMFit
        ``method == "map"``. ``elbo[t]`` = eq. 18 + ln p(Θ) after iteration t's M-step, the last
        entry after the closing E-step (= ln p(X | Θ) + ln p(Θ), the log posterior up to ln p(X));
        ``log_likelihood`` is eq. 26 alone (Σ_i w_i lse_i with weights); ``info["log_prior"]`` holds
        ln p(Θ) per entry, so KL(q ‖ p(Z | X, Θ)) = log_likelihood − (elbo − log_prior).
    """
    progress = check_bool(progress, "progress")  # the cheap checks first: a chunked source's
    check_covariance_type(covariance_type)  # validation pass reads all the data
    max_iter = check_int(max_iter, "max_iter", 0)
    n_init = check_int(n_init, "n_init", 1)
    tol = check_positive(tol, "tol", allow_zero=True)
    reg_covar = check_positive(reg_covar, "reg_covar", allow_zero=True)
    threads = resolve_threads(threads)
    if prior is not None and not isinstance(prior, NormalWishartPrior):
        raise TypeError(f"prior must be a NormalWishartPrior (or None for default_prior), got {type(prior).__name__}")
    source = as_source(x, sample_weight, dtype=dtype, device=device)
    k = check_k(k, source.n)
    init = check_init(init, k, source.d)
    if isinstance(init, GMMParams):
        check_cov_structure(init.cov, covariance_type, "init")
    if prior is not None:
        prior.check_data(torch.empty(0, source.d))
    scale = source.summary.scale(reg_covar)  # refuses data whose covariances float64 cannot hold
    if prior is None:  # default_prior of x' (equivariant), in one pass for chunked sources
        prior_s = default_prior_source(source, k, 1.0 / scale.s)
    else:
        prior_s = scale_prior(prior, scale)
    assert prior_s is not None
    check_map_prior(prior_s, covariance_type, k, source.total_weight)
    prior_repr = repr(prior if prior is not None else scale_prior(prior_s, scale, up=True))
    seed = resolve_seed(seed)
    if source.n * k * source.d < PARALLEL_WORK:
        threads = 1  # small fits: one thread is fastest and not slowed by a busy core
    args = (covariance_type, max_iter, tol, reg_covar, progress, scale, prior_repr, threads)
    with limited_threads():  # the fit's small operations on one torch thread; passes on the pool
        return best_of_restarts(lambda s: _run(source, k, prior_s, init, s, *args), seed, n_init)
