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

Scale: the fit runs in x' = x / s (``ascent``, "Scale"; s = 1 at ordinary scales) under the prior
mapped to x' units (m0 / s, s² W0), from fit_cavi's default Θ₀ of x'. The objective maps back as
ln p(X | Θ) = ln p(X' | Θ') − N D ln s and ln p(Θ) = ln p'(Θ') + K D² ln s (``ascent.scale_offsets``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.gaussian import log_gaussian_prec, normalise_log
from ..core.gmm import expected_log_joint_from_stats, log_likelihood
from ..core.init import INIT_REG_COVAR, initial_params
from ..core.params import GMMParams
from ..core.priors import NormalWishartPrior, conjugate_update_from_data, log_prior, posterior_mode, resolve_prior
from ..core.rng import resolve_seed
from ..core.threads import limited_threads
from ..core.validation import (
    UNSCALED,
    ArrayLike,
    DataScale,
    check_bool,
    check_covariance_type,
    check_fit_args,
    check_int,
    check_positive,
    data_scale,
)
from ..core.vb_posterior import posterior_cholesky
from ..results.gmm_fit import GMMFit
from .ascent import best_of_restarts, fit_ascent, scale_offsets, scale_prior

__all__ = ["fit_map", "MAPProblem"]


@dataclass
class _State:
    params: GMMParams
    gamma: torch.Tensor  # γ of the last E-step (eq. 20 at params)
    entropy: torch.Tensor  # H(γ), second term of eq. 18
    log_likelihood: torch.Tensor  # eq. 26 at params
    log_prior: torch.Tensor  # ln p(params)


class MAPProblem:
    """MAP-EM as an ``ascent.AscentProblem``: E-step eq. 20, M-step the conjugate posterior mode."""

    name = "eq. 18 + ln p(Θ)"

    def __init__(
        self,
        x: torch.Tensor,
        params0: GMMParams,
        prior: NormalWishartPrior,
        reg_covar: float,
        scale: DataScale = UNSCALED,
    ) -> None:
        """Everything in the coordinates x' = x / s of ``scale``; ``last_finite`` maps Θ back."""
        self.x, self.n = x, x.shape[0]
        self.scale = scale
        self.params0, self.prior, self.reg_covar = params0, prior, reg_covar
        self.m0, _, self.w0_inv = prior.cast(x.dtype)
        self.log_priors: list[float] = []  # ln p(Θ) of every trace entry

    def _e(self, params: GMMParams, lp: torch.Tensor) -> _State:
        wlp = log_gaussian_prec(self.x, params.mu, params.precision_cholesky).add_(torch.log(params.alpha))
        gamma, lse, entropy = normalise_log(wlp, entropy=True)  # eq. 20
        return _State(params, gamma, entropy, lse.sum(), lp)  # Σ lse = eq. 26

    def start(self, final: bool) -> tuple[_State, float]:
        state = self._e(self.params0, log_prior(self.params0, self.prior))
        return state, float(state.log_likelihood + state.log_prior)

    def m_step(self, state: _State) -> tuple[_State, torch.Tensor]:
        st = conjugate_update_from_data(self.x, state.gamma, self.prior, self.m0, self.w0_inv)  # 10.51, 10.58–10.63
        posterior_cholesky(st.w_inv)  # a clear error if W_k⁻¹ lost positive definiteness
        params = posterior_mode(st, self.reg_covar)  # the joint mode (module docstring)
        lp = log_prior(params, self.prior)
        value = expected_log_joint_from_stats(st.n_k, st.scatter, params.alpha, params.precision_cholesky)
        value = value + state.entropy  # eq. 18 at (γ_{t−1}, Θ_t): S_k is about μ_k = m_k
        if not bool(torch.isfinite(value)):  # a component switched off that still had γ > 0
            value = log_likelihood(self.x, params)
        self.log_priors.append(float(lp))
        return _State(params, state.gamma, state.entropy, state.log_likelihood, lp), value + lp

    def e_step(self, state: _State, final: bool) -> tuple[_State, torch.Tensor]:
        new = self._e(state.params, state.log_prior)
        return new, new.log_likelihood

    def finish(self, state: _State) -> tuple[torch.Tensor, torch.Tensor]:
        self.log_priors.append(float(state.log_prior))
        return state.log_likelihood + state.log_prior, state.log_likelihood  # KL gap 0 after the E-step

    def last_finite(self, state: _State) -> GMMParams:
        return self.scale.params_up(state.params)


def _run(x, k, prior, init, seed, max_iter, tol, reg_covar, progress, scale, prior_repr) -> GMMFit:
    """One fit in x' = x / s: ``x``, ``prior`` and ``init`` already in x' units, ``reg_covar`` in x's."""
    params0 = initial_params(x, k, init, seed, "full", INIT_REG_COVAR)  # fit_cavi's default Θ₀ of x'
    problem = MAPProblem(x, params0, prior, scale.reg_down(reg_covar), scale)
    run = fit_ascent(problem, max_iter=max_iter, tol=tol, progress=progress, desc="MAP-EM")
    data, lp, both = scale_offsets(scale, x.shape[0], x.shape[1], k)  # eq. 26: −N·D·ln s; ln p(Θ): +K·D²·ln s
    return GMMFit(
        params=scale.params_up(run.state.params),
        gamma=run.state.gamma,
        **run.trace_fields(x.dtype, both, data),
        method="map",
        n_iter=run.n_iter,
        converged=run.converged,
        seed=seed,
        covariance_type="full",
        reg_covar=reg_covar,
        info={"log_prior": [v + lp for v in problem.log_priors] if lp else problem.log_priors, "prior": prior_repr},
    )


def fit_map(
    x: ArrayLike,
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
) -> GMMFit:
    """MAP-EM under the Dir × Normal-Wishart prior (module docstring).

    Parameters
    ----------
    x, k, init, max_iter, tol, n_init, seed, progress, dtype
        As ``fit_cavi``. Θ₀ is fit_cavi's default Θ₀ (``initial_params`` with reg_covar = 1e-6) in the
        fit's coordinates x / s (x itself at ordinary scales; module docstring, "Scale").
    prior : NormalWishartPrior or None
        Needs nu0 > D; None means ``default_prior(x, k)``.
    covariance_type : "full"
        The only type: the Wishart prior is on full precision matrices.
    reg_covar : float
        Added to Σ_k after the mode (default 0: the prior keeps every Σ_k positive definite).

    Returns
    -------
    GMMFit
        ``method == "map"``. ``elbo[t]`` = eq. 18 + ln p(Θ) after iteration t's M-step, the last
        entry after the closing E-step (= ln p(X | Θ) + ln p(Θ), the log posterior up to ln p(X));
        ``log_likelihood`` is eq. 26 alone; ``info["log_prior"]`` holds ln p(Θ) per entry, so
        KL(q ‖ p(Z | X, Θ)) = log_likelihood − (elbo − log_prior).
    """
    x, k, init = check_fit_args(x, k, init, dtype)
    progress = check_bool(progress, "progress")
    check_covariance_type(covariance_type)
    if covariance_type != "full":
        raise ValueError(
            "fit_map supports covariance_type='full' only (the Wishart prior is on full precision "
            f"matrices), got {covariance_type!r}"
        )
    max_iter = check_int(max_iter, "max_iter", 0)
    n_init = check_int(n_init, "n_init", 1)
    tol = check_positive(tol, "tol", allow_zero=True)
    reg_covar = check_positive(reg_covar, "reg_covar", allow_zero=True)
    scale = data_scale(x, reg_covar)  # refuses data whose covariances float64 cannot hold
    xs = scale.down(x)  # the fit runs in x' = x / s (s = 1 at ordinary scales; ``ascent``, "Scale")
    prior_s = resolve_prior(xs, k, scale_prior(prior, scale))  # None: default_prior of x' (equivariant)
    if prior_s.nu0 <= x.shape[1]:
        raise ValueError(
            f"fit_map needs nu0 > D = {x.shape[1]} so that the Wishart posterior mode (nu_k − D) W_k "
            f"exists even for an empty component; got nu0 = {prior_s.nu0}"
        )
    prior_repr = repr(prior if prior is not None else scale_prior(prior_s, scale, up=True))
    init = scale.params_down(init) if isinstance(init, GMMParams) else init
    seed = resolve_seed(seed)
    with limited_threads(x.shape[0] * k * x.shape[1]):
        return best_of_restarts(
            lambda s: _run(xs, k, prior_s, init, s, max_iter, tol, reg_covar, progress, scale, prior_repr), seed, n_init
        )
