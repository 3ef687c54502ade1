"""The MAP side of the conjugate prior (``core.priors``): ln p(Θ) with every constant and the joint
posterior mode per covariance type (``inference.map``), from the one full conjugate update
(``core._conjugate``).
"""

from __future__ import annotations

import torch

from ._conjugate import ConjugateStats, _log_mean_density, log_normal_wishart_density, log_wishart_density
from ._distributions import log_dirichlet_density, log_gamma_density
from ._normal_wishart import NormalWishartPrior
from .linalg import cholesky, precision_cholesky
from .params import GMMParams

__all__ = [
    "posterior_mode",
    "log_prior",
    "check_map_prior",
    "check_cov_structure",
    "gamma_precision_prior",
    "log_typed_prior",
]


def posterior_mode(
    st: ConjugateStats,
    reg_covar: float = 0.0,
    covariance_type: str = "full",
    prior: NormalWishartPrior | None = None,
) -> GMMParams:
    """The joint posterior mode in (α, μ, precision) from the conjugate update ``st`` of the full
    Normal-Wishart (the MAP M-step; the per-type priors and derivations in "MAP per covariance type"
    below and in ``inference.map``)::

        α_k ∝ max(alpha_k − 1, 0)      (Dirichlet mode)       μ_k = m_k         and
        full       Σ_k  = W_k⁻¹ / (nu_k − D)                   Λ_k = (nu_k − D) W_k
        diag       σ²_kd = (W_k⁻¹)_dd / (nu_k − 1)             one Gamma per λ_kd
        spherical  σ²_k  = tr(W_k⁻¹) / (D (nu_k + 1) − 2)      one Gamma per λ_k
        tied       Σ = (W0⁻¹ + Σ_k R_k) / (nu0 + N + K − D − 1),  R_k = W_k⁻¹ − W0⁻¹ (needs ``prior``)

    (+ reg_covar·I). Every denominator must be positive, even for an empty component: the callers
    check it first (:func:`check_map_prior`).
    """
    d = st.m.shape[1]
    weight = torch.clamp(st.alpha - 1, min=0.0)  # Dirichlet mode, max(N_k + alpha0 − 1, 0)
    if covariance_type == "full":
        cov = st.w_inv / (st.nu - d)[:, None, None]  # Λ_k = (nu_k − D) W_k
    else:
        cov = _typed_mode_cov(st, covariance_type, prior)
    cov = cov + reg_covar * torch.eye(d, dtype=cov.dtype)
    return GMMParams(weight / weight.sum(), st.m, cov)


def log_prior(params: GMMParams, prior: NormalWishartPrior, covariance_type: str = "full") -> torch.Tensor:
    """ln p(Θ), the full log density with every constant, in the (α, μ, precision) parametrisation:
    :func:`log_dirichlet_density` (B.16) + the covariance type's prior on (μ, precision) —
    full: Σ_k :func:`log_normal_wishart_density` (10.40, B.37, B.78); diag, spherical, tied: the
    priors of "MAP per covariance type" below (:func:`log_typed_prior`).

    With K = 1, α ≡ 1 and the Dirichlet term is 0.  Components with α_k = 0 (switched off when
    alpha0 < 1) are left out of the Dirichlet, which is then over the active components.
    """
    prior.check_data(params.mu)
    active = params.alpha > 0
    k_active = int(active.sum())
    if k_active > 1:
        log_dir = log_dirichlet_density(torch.log(params.alpha[active]), prior.alpha0)  # B.16
    else:
        log_dir = torch.zeros((), dtype=params.dtype)
    if covariance_type != "full":
        return log_dir + log_typed_prior(params, prior, covariance_type)
    m0, _, w0_inv = prior.cast(params.dtype)
    prec_chol = precision_cholesky(chol=cholesky(params.cov))  # Λ_k = U_k U_kᵀ, U_k = L_k⁻ᵀ
    return log_dir + log_normal_wishart_density(params.mu, prec_chol, prior, m0, w0_inv).sum()


# --- MAP per covariance type (engineer M; inference.map) ---------------------------------------
# The one NormalWishartPrior(alpha0, m0, beta0, nu0, W0) read per covariance type. Every type keeps
# α ~ Dir(alpha0) and μ_k | precision ~ N(m0, (beta0 · precision_k)⁻¹). The precision priors are the
# laws that fit_vb's prior of the type (``vb_posterior.vb_prior``: W(W0_t, nu0), W0_t⁻¹ = scikit-
# learn's covariance_prior = diag(W0⁻¹) for diag, mean(diag W0⁻¹) I for spherical) gives the
# precisions the type keeps — for a diagonal scale the diagonal entries of a Wishart matrix are
# independent χ²'s, and tr(Λ) is one χ²_{D·nu0} — and their posterior *means* are scikit-learn's
# ``_estimate_wishart_{diag,spherical}`` updates (nu_k / (W_k⁻¹)_dd, nu_k / mean(diag W_k⁻¹)):
#
#   full       Λ_k ~ W(W0, nu0)                                             (PRML 10.40)
#   diag       λ_kd ~ Gamma(shape nu0/2, rate (W0⁻¹)_dd/2), independent     (the diagonal of W(W0_t, nu0))
#              posterior shape nu_k/2, rate (W_k⁻¹)_dd/2
#   spherical  λ_k ~ Gamma(shape D·nu0/2, rate tr(W0⁻¹)/2)    (Λ_k = λ_k I; the law of tr(Λ)/D)
#              posterior shape D·nu_k/2, rate tr(W_k⁻¹)/2
#   tied       Λ ~ W(W0, nu0), one for all components; μ_k | Λ ~ N(m0, (beta0 Λ)⁻¹) for every k
#              exact posterior: nu = nu0 + N, W⁻¹ = W0⁻¹ + Σ_k R_k.  (scikit-learn's tied VB, and so
#              fit_vb, keep K copies of the prior — nu0 + N/K and W0⁻¹ + Σ_k R_k / K — which is not
#              this posterior: fit_map follows the "one shared Wishart".)
#
# with nu_k = nu0 + N_k, W_k⁻¹ = W0⁻¹ + R_k and R_k = Σ_i γ_ik (x_i − m_k)(x_i − m_k)ᵀ
# + beta0 (m_k − m0)(m_k − m0)ᵀ, all from the one full ``conjugate_update``: diag and spherical read
# its diagonal / trace. The densities are in λ (not σ²) and in Λ's distinct entries.
def gamma_precision_prior(
    prior: NormalWishartPrior, covariance_type: str, dtype: torch.dtype = torch.float64
) -> tuple[float, torch.Tensor]:
    """(shape a0, rate b0) of the Gamma prior on the precisions: diag (nu0/2, diag(W0⁻¹)/2) with b0
    (D,); spherical (D·nu0/2, tr(W0⁻¹)/2) with b0 0-d (see the section comment)."""
    w0_inv = prior.cast(dtype)[2]
    if covariance_type == "diag":
        return 0.5 * prior.nu0, 0.5 * torch.diagonal(w0_inv)
    if covariance_type == "spherical":
        return 0.5 * prior.d * prior.nu0, 0.5 * torch.trace(w0_inv)
    raise ValueError(f"the Gamma precision prior is for covariance_type 'diag' or 'spherical', got {covariance_type!r}")


def check_map_prior(prior: NormalWishartPrior, covariance_type: str, k: int, total_weight: float) -> None:
    """Raise ValueError unless the MAP mode of :func:`posterior_mode` exists for every γ, an empty
    component included (its denominator at N_k = 0 positive): full nu0 > D, diag nu0 > 1,
    spherical D (nu0 + 1) > 2, tied nu0 + N + K − D − 1 > 0 (N = Σ_i w_i)."""
    d, nu0 = prior.d, prior.nu0
    need = {
        "full": (nu0 > d, f"nu0 > D = {d} so that the Wishart posterior mode (nu_k − D) W_k"),
        "diag": (nu0 > 1, "nu0 > 1 so that the Gamma posterior mode (nu_k − 1) / (W_k⁻¹)_dd of every precision"),
        "spherical": (
            d * (nu0 + 1) > 2,
            f"nu0 > 2/D − 1 = {2 / d - 1:g} so that the Gamma posterior mode (D (nu_k + 1) − 2) / tr(W_k⁻¹)",
        ),
        "tied": (
            nu0 + total_weight + k - d - 1 > 0,
            f"nu0 + N + K − D − 1 > 0 (N = {total_weight:g}, K = {k}, D = {d}) so that the shared Wishart mode",
        ),
    }
    ok, what = need[covariance_type]
    if not ok:
        raise ValueError(
            f"fit_map with covariance_type={covariance_type!r} needs {what} exists even for an empty "
            f"component; got nu0 = {nu0}"
        )


def _typed_mode_cov(st: ConjugateStats, covariance_type: str, prior: NormalWishartPrior | None) -> torch.Tensor:
    """Σ (K, D, D) of :func:`posterior_mode` for diag, spherical and tied (derivations in ``inference.map``)."""
    k, d = st.m.shape
    if covariance_type == "diag":
        var = torch.diagonal(st.w_inv, dim1=-2, dim2=-1) / (st.nu - 1)[:, None]  # λ_kd = (nu_k − 1) / (W_k⁻¹)_dd
        return torch.diag_embed(var)
    if covariance_type == "spherical":
        trace = torch.diagonal(st.w_inv, dim1=-2, dim2=-1).sum(-1)
        var = trace / (d * (st.nu + 1) - 2)  # λ_k = (D (nu_k + 1) − 2) / tr(W_k⁻¹)
        return var[:, None, None] * torch.eye(d, dtype=var.dtype)
    if covariance_type != "tied":
        raise ValueError(f"unknown covariance_type {covariance_type!r}")
    if prior is None:
        raise ValueError("posterior_mode(covariance_type='tied') needs the prior (W0⁻¹, m0, nu0 of the shared Wishart)")
    m0, _, w0_inv = prior.cast(st.m.dtype)
    dm = st.m - m0
    r = st.scatter + prior.beta0 * dm[:, :, None] * dm[:, None, :]  # R_k = W_k⁻¹ − W0⁻¹ (10.62)
    w_inv = w0_inv + r.sum(0)  # W⁻¹ of the shared Λ
    cov = w_inv / (prior.nu0 + st.n_k.sum() + k - d - 1)  # Λ = (nu0 + N + K − D − 1) W
    return (0.5 * (cov + cov.T)).expand(k, d, d)


def check_cov_structure(cov: torch.Tensor, covariance_type: str, name: str = "params.cov") -> None:
    """Raise ValueError unless ``cov`` (K, D, D) has the structure of ``covariance_type``: diagonal
    (diag), a multiple of I (spherical, to 1e-10 relative), one matrix for every k (tied, 1e-10)."""
    diag = torch.diagonal(cov, dim1=-2, dim2=-1)
    scale = float(cov.abs().max())
    if covariance_type in ("diag", "spherical") and bool((cov - torch.diag_embed(diag)).abs().max() > 0):
        raise ValueError(f"{name}: covariance_type={covariance_type!r} needs diagonal covariances")
    if covariance_type == "spherical" and not torch.allclose(diag, diag[:, :1].expand_as(diag), rtol=1e-10, atol=0):
        raise ValueError(f"{name}: covariance_type='spherical' needs every covariance to be a multiple of I")
    if covariance_type == "tied" and not torch.allclose(cov, cov[:1].expand_as(cov), rtol=1e-10, atol=1e-14 * scale):
        raise ValueError(f"{name}: covariance_type='tied' needs one covariance shared by every component")


def log_typed_prior(params: GMMParams, prior: NormalWishartPrior, covariance_type: str) -> torch.Tensor:
    """The (μ, precision) part of ln p(Θ) for diag, spherical and tied (section comment), full constants:

        diag       Σ_kd [ln N(μ_kd | m0_d, (beta0 λ_kd)⁻¹) + ln Gamma(λ_kd | nu0/2, (W0⁻¹)_dd/2)]
        spherical  Σ_k [ln N(μ_k | m0, (beta0 λ_k)⁻¹ I) + ln Gamma(λ_k | D nu0/2, tr(W0⁻¹)/2)]
        tied       Σ_k ln N(μ_k | m0, (beta0 Λ)⁻¹) + ln W(Λ | W0, nu0)

    (PRML B.26, B.37, B.78); ``params.cov`` must have the type's structure (else ValueError)."""
    check_cov_structure(params.cov, covariance_type)
    m0, _, w0_inv = prior.cast(params.dtype)
    prec_chol = precision_cholesky(chol=cholesky(params.cov))  # U_k, Λ_k = U_k U_kᵀ
    log_normal = _log_mean_density(params.mu, prec_chol, prior, m0).sum()  # diag, spherical: a product over d
    if covariance_type == "tied":
        return log_normal + log_wishart_density(prec_chol[0], prior, w0_inv)  # one Λ (B.78)
    shape, rate = gamma_precision_prior(prior, covariance_type, params.dtype)
    lam = 1.0 / torch.diagonal(params.cov, dim1=-2, dim2=-1)  # λ_kd
    if covariance_type == "spherical":
        lam = lam.mean(-1)  # λ_k (all D equal)
    return log_normal + log_gamma_density(lam, shape, rate).sum()
