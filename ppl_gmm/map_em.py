"""MAP-EM: EM (eq. 20 then a modified eq. 21/28) for the posterior mode under the conjugate prior.

The objective is the log posterior up to the constant ln p(X),

    ln p(X | Θ) + ln p(Θ),   ln p(Θ) = ln Dir(α | alpha0) + Σ_k [ln N(μ_k | m0, (beta0 Λ_k)⁻¹) + ln W(Λ_k | W0, nu0)]

with the densities taken in the (α, μ, Λ) parametrisation (Dirichlet on the first K − 1
coordinates of the simplex, Wishart on the distinct entries of Λ_k = Σ_k⁻¹), PRML 10.39–10.40.
EM's bound on it is eq. 18 + ln p(Θ): the E-step is eq. 20 unchanged (the prior does not involve
Z), and the M-step maximises Σ_ik γ_ik [ln α_k + ln N(x_i | μ_k, Λ_k⁻¹)] + ln p(Θ), which for the
conjugate prior is ln of an (unnormalised) Dir × Normal-Wishart with the parameters of the
conjugate update (``priors.conjugate_update``: alpha_k, beta_k, m_k, W_k, nu_k; PRML 10.58–10.63).
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
"""
from __future__ import annotations

import math
import time

import torch

from ._fitting import AscentTrace, best_of_restarts, progress_bar
from ._threads import limited_threads
from ._validation import check_covariance_type, check_int, check_positive
from .cavi import check_fit_args
from .closed_form import e_step, elbo, log_likelihood
from .errors import DivergenceError
from .init import initial_params, resolve_seed
from .params import GMMParams
from .priors import NormalWishartPrior, conjugate_update, log_dirichlet_norm, log_wishart_norm
from .result import GMMFit
from .vb import INIT_REG_COVAR, resolve_prior
from .vb_posterior import _chol

__all__ = ["fit_map", "map_m_step", "log_prior"]


def log_prior(params: GMMParams, prior: NormalWishartPrior) -> torch.Tensor:
    """ln p(Θ) in the (α, μ, Λ) parametrisation (PRML 10.39–10.40, B.16, B.37, B.78):

    ln Dir(α | alpha0) = ln C(alpha0 1_K) + (alpha0 − 1) Σ_k ln α_k            (B.16)
    ln N(μ_k | m0, (beta0 Λ_k)⁻¹) = (D/2) ln(beta0 / 2π) + ½ ln|Λ_k| − (beta0/2) (μ_k − m0)ᵀ Λ_k (μ_k − m0)
    ln W(Λ_k | W0, nu0) = ln B(W0, nu0) + ((nu0 − D − 1)/2) ln|Λ_k| − ½ tr(W0⁻¹ Λ_k)   (B.78)

    With K = 1, α ≡ 1 and the Dirichlet term is 0.  Components with α_k = 0 (switched off when
    alpha0 < 1) are left out of the Dirichlet, which is then over the active components.
    """
    prior.check_data(params.mu)
    d = params.d
    m0, w0, w0_inv = prior.cast(params.dtype)
    active = params.alpha > 0
    k_active = int(active.sum())
    if k_active > 1:
        a = params.alpha[active]
        log_dir = log_dirichlet_norm(torch.full((k_active,), prior.alpha0, dtype=params.dtype)) \
            + (prior.alpha0 - 1) * torch.log(a).sum()  # B.16
    else:
        log_dir = torch.zeros((), dtype=params.dtype)
    chol = params.scale_tril  # Σ_k = L Lᵀ, Λ_k = L⁻ᵀ L⁻¹
    log_det_lambda = -2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    z = torch.linalg.solve_triangular(chol, (params.mu - m0)[..., None], upper=False)[..., 0]
    mahal = z.square().sum(-1)  # (μ_k − m0)ᵀ Λ_k (μ_k − m0)
    eye = torch.eye(d, dtype=params.dtype).expand_as(chol)
    chol_inv = torch.linalg.solve_triangular(chol, eye, upper=False)
    trace = torch.einsum("de,kfd,kfe->k", w0_inv, chol_inv, chol_inv)  # tr(W0⁻¹ Λ_k), Λ = L⁻ᵀ L⁻¹
    log_normal = 0.5 * d * math.log(prior.beta0 / (2 * math.pi)) + 0.5 * log_det_lambda - 0.5 * prior.beta0 * mahal
    log_det_w0 = 2.0 * torch.log(torch.diagonal(torch.linalg.cholesky(w0))).sum()
    log_b0 = log_wishart_norm(log_det_w0, torch.tensor([prior.nu0], dtype=params.dtype), d)[0]
    log_wishart = log_b0 + 0.5 * (prior.nu0 - d - 1) * log_det_lambda - 0.5 * trace  # B.78
    return log_dir + (log_normal + log_wishart).sum()


def map_m_step(x: torch.Tensor, gamma: torch.Tensor, prior: NormalWishartPrior, reg_covar: float = 0.0) -> GMMParams:
    """The MAP M-step: the joint mode of the conjugate update in (α, μ, Λ) (module docstring).

    α_k ∝ max(N_k + alpha0 − 1, 0),  μ_k = m_k,  Σ_k = W_k⁻¹ / (nu_k − D) (+ reg_covar·I).
    """
    d = x.shape[1]
    if prior.nu0 <= d:
        raise ValueError(f"MAP needs nu0 > D = {d} (the Wishart mode (nu - D) W exists only then); "
                         f"got nu0 = {prior.nu0}")
    m0, _, w0_inv = prior.cast(x.dtype)
    st = conjugate_update(x, gamma.T, prior, w0_inv, m0)  # 10.51, 10.58–10.63
    _chol(st.w_inv)  # a clear error if W_k⁻¹ lost positive definiteness
    weight = torch.clamp(st.alpha - 1, min=0.0)  # Dirichlet mode, max(N_k + alpha0 − 1, 0)
    alpha = weight / weight.sum()
    cov = st.w_inv / (st.nu - d)[:, None, None]  # Λ_k = (nu_k − D) W_k
    cov = 0.5 * (cov + cov.transpose(-1, -2)) + reg_covar * torch.eye(d, dtype=x.dtype)
    return GMMParams(alpha, st.m, cov)


def _objective(x, gamma, params, prior):
    """eq. 18 at (γ, Θ) + ln p(Θ), or ln p(X | Θ) + ln p(Θ) where eq. 18 is −∞ (see module doc)."""
    lp = log_prior(params, prior)
    dead = params.alpha == 0
    if bool(dead.any()) and bool((gamma[:, dead] > 0).any()):
        return log_likelihood(x, params) + lp, lp
    return elbo(x, gamma, params) + lp, lp


def _run(x, k, prior, init, seed, max_iter, tol, reg_covar, progress) -> GMMFit:
    start = time.perf_counter()
    params = initial_params(x, k, init, seed, "full", INIT_REG_COVAR)
    lps = []
    bar = progress_bar(progress, max_iter, "MAP-EM")
    prev = float(log_likelihood(x, params) + log_prior(params, prior))
    trace = AscentTrace(x.shape[0], tol, prev, start, bar, label="objective")
    converged, n_iter = False, 0
    for it in range(max_iter):
        gamma = e_step(x, params)  # eq. 20
        params = map_m_step(x, gamma, prior, reg_covar)  # the posterior mode, module doc
        value, lp = _objective(x, gamma, params, prior)  # eq. 18 + ln p(Θ) at (γ_{t−1}, Θ_t)
        ll = log_likelihood(x, params)  # eq. 26 at Θ_t
        n_iter = it + 1
        if not (torch.isfinite(value) and torch.isfinite(ll)):
            raise DivergenceError(n_iter, params)
        lps.append(lp)
        if trace.record(value, ll):
            converged = True
            break
    trace.close_bar()
    gamma = e_step(x, params)  # closing E-step: eq. 18 + ln p(Θ) = ln p(X | Θ) + ln p(Θ)
    value, lp = _objective(x, gamma, params, prior)
    lps.append(lp)
    trace.finish(value, log_likelihood(x, params))
    return GMMFit(
        params=params,
        gamma=gamma,
        **trace.fields(),
        method="map",
        n_iter=n_iter,
        converged=converged,
        seed=seed,
        covariance_type="full",
        reg_covar=reg_covar,
        info={"log_prior": torch.stack(lps).tolist(), "prior": repr(prior)},
    )


def fit_map(x, k, prior=None, *, init="kmeans++", covariance_type="full", max_iter=1000, tol=1e-8, reg_covar=0.0,
            n_init=1, seed=None, progress=False, dtype=None) -> GMMFit:
    """MAP-EM under the Dir × Normal-Wishart prior (module docstring); returns a GMMFit, method "map".

    Arguments as ``fit_cavi``; ``prior`` a NormalWishartPrior with nu0 > D (None: ``default_prior``).
    Θ₀ is fit_cavi's default Θ₀ (``initial_params`` with reg_covar = 1e-6).  ``reg_covar`` (default 0:
    the prior keeps every Σ_k positive definite) is added to Σ_k after the mode.  Traces as GMMFit:
    ``elbo[t]`` = eq. 18 + ln p(Θ) after iteration t's M-step, the last entry after the closing
    E-step (= ln p(X | Θ) + ln p(Θ), the log posterior up to ln p(X)); ``log_likelihood`` is eq. 26
    alone; ``info["log_prior"]`` holds ln p(Θ) per entry, so KL(q ‖ p(Z | X, Θ)) =
    log_likelihood − (elbo − log_prior).  Only ``covariance_type="full"`` (the Wishart is on full Λ).
    """
    x, k = check_fit_args(x, k, init, dtype)
    check_covariance_type(covariance_type)
    if covariance_type != "full":
        raise ValueError(f"fit_map supports covariance_type='full' only (the Wishart prior is on full precision "
                         f"matrices), got {covariance_type!r}")
    max_iter = check_int(max_iter, "max_iter", 0)
    n_init = check_int(n_init, "n_init", 1)
    tol = check_positive(tol, "tol", allow_zero=True)
    reg_covar = check_positive(reg_covar, "reg_covar", allow_zero=True)
    prior = resolve_prior(x, k, prior)
    if prior.nu0 <= x.shape[1]:
        raise ValueError(f"fit_map needs nu0 > D = {x.shape[1]} so that the Wishart posterior mode (nu_k − D) W_k "
                         f"exists even for an empty component; got nu0 = {prior.nu0}")
    seed = resolve_seed(seed)
    with limited_threads(x.shape[0] * k * x.shape[1]):
        return best_of_restarts(lambda s: _run(x, k, prior, init, s, max_iter, tol, reg_covar, progress),
                                seed, n_init)
