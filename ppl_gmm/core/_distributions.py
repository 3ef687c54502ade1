"""The Dirichlet, Wishart, Normal-Wishart and Gamma laws that the conjugate prior
(``core.priors``) and the variational posterior (``core.vb_posterior``) are built from: their log
normalisers, the log densities that need no prior object, and seeded draws.

    ln B(W, ν)   the Wishart normaliser                         (PRML B.79)
    ln C(α)      the Dirichlet normaliser                       (PRML B.23)
    E[ln |Λ|]    under W(Λ | W, ν)                              (PRML 10.65, B.81)
    ln Dir(α | alpha0 1_K), ln Gamma(λ | a, b)                  (PRML B.16, B.26)
    a Normal-Wishart draw from its Bartlett noise, the noise, a Dirichlet draw

Densities are taken in the (α, μ, Λ) parametrisation: Dirichlet on the first K − 1 simplex
coordinates, Wishart on the D(D + 1)/2 distinct entries of Λ (PRML B.16, B.78).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "log_wishart_norm",
    "log_dirichlet_norm",
    "expected_log_det",
    "log_dirichlet_density",
    "log_gamma_density",
    "normal_wishart_from_noise",
    "normal_wishart_noise",
    "sample_dirichlet",
]


def log_wishart_norm(log_det_w: torch.Tensor, nu: torch.Tensor, d: int) -> torch.Tensor:
    """ln B(W, ν) of the Wishart normaliser, PRML B.79:

    ln B(W, ν) = −(ν/2) ln|W| − (νD/2) ln 2 − (D(D−1)/4) ln π − Σ_{i=1..D} ln Γ((ν + 1 − i)/2)
    """
    i = torch.arange(1, d + 1, dtype=nu.dtype)
    return (
        -0.5 * nu * log_det_w
        - 0.5 * nu * d * math.log(2.0)
        - 0.25 * d * (d - 1) * math.log(math.pi)
        - torch.lgamma(0.5 * (nu[..., None] + 1 - i)).sum(-1)
    )  # B.79


def log_dirichlet_norm(alpha: torch.Tensor) -> torch.Tensor:
    """ln C(α) = ln Γ(Σ_k α_k) − Σ_k ln Γ(α_k), PRML B.23."""
    return torch.lgamma(alpha.sum(-1)) - torch.lgamma(alpha).sum(-1)  # B.23


def expected_log_det(log_det_w: torch.Tensor, nu: torch.Tensor, d: int) -> torch.Tensor:
    """E[ln |Λ|] under W(Λ | W, ν), PRML 10.65 / B.81:

    ln Λ̃ = Σ_{i=1..D} ψ((ν + 1 − i)/2) + D ln 2 + ln |W|
    """
    i = torch.arange(1, d + 1, dtype=nu.dtype)
    return torch.digamma(0.5 * (nu[..., None] + 1 - i)).sum(-1) + d * math.log(2.0) + log_det_w  # 10.65


def log_dirichlet_density(log_alpha: torch.Tensor, alpha0: float) -> torch.Tensor:
    """ln Dir(α | alpha0 1_K) = ln C(alpha0 1_K) + (alpha0 − 1) Σ_k ln α_k (PRML B.16), from ln α (..., K):
    the density on the first K − 1 coordinates of the simplex."""
    k = log_alpha.shape[-1]
    return log_dirichlet_norm(torch.full((k,), alpha0, dtype=log_alpha.dtype)) + (alpha0 - 1) * log_alpha.sum(-1)


def log_gamma_density(lam: torch.Tensor, shape: float, rate: torch.Tensor) -> torch.Tensor:
    """ln Gamma(λ | a, b) = a ln b − ln Γ(a) + (a − 1) ln λ − b λ (PRML B.26, b the rate), elementwise."""
    return shape * torch.log(rate) - math.lgamma(shape) + (shape - 1) * torch.log(lam) - rate * lam  # B.26


# --- draws ----------------------------------------------------------------------------------------
def normal_wishart_from_noise(
    m: torch.Tensor, beta: torch.Tensor, chol_w: torch.Tensor, a: torch.Tensor, eps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A draw (μ, Λ) ~ N(μ | m, (beta Λ)⁻¹) W(Λ | W, nu) from its noise (Bartlett decomposition), for
    stacks that broadcast: m (..., D), beta (...), chol_w = chol(W) (..., D, D), a, eps::

        Λ = B Bᵀ,  B = chol(W) A    A lower triangular: A_jj = √χ²(nu − j + 1), A_ij ~ N(0, 1) (i > j)
        Σ = Λ⁻¹ = B⁻ᵀ B⁻¹,   μ = m + beta^{−½} B⁻ᵀ ε,   ε ~ N(0, I),  so Cov[μ | Λ] = (beta Λ)⁻¹

    Returns (B, μ, Σ).  B is lower triangular with a positive diagonal and Λ = B Bᵀ, so it serves
    as a precision factor wherever ``core.gaussian`` takes one (its quadratic form and its
    ``log_det_from_cholesky`` only need a triangular factor).  The noise comes from
    :func:`normal_wishart_noise` (torch) or numpy (``vb_posterior.sample_posterior``).
    """
    b = chol_w @ a  # Λ = B Bᵀ, B lower triangular
    eye = torch.eye(b.shape[-1], dtype=b.dtype).expand(b.shape)
    b_inv = torch.linalg.solve_triangular(b, eye, upper=False)  # B⁻¹
    cov = b_inv.transpose(-1, -2) @ b_inv  # Σ = Λ⁻¹ = B⁻ᵀ B⁻¹
    mu = m + (b_inv.transpose(-1, -2) @ eps[..., None])[..., 0] / torch.sqrt(beta)[..., None]
    return b, mu, 0.5 * (cov + cov.transpose(-1, -2))


def normal_wishart_noise(nu: torch.Tensor, d: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The noise (A, ε) of one Normal-Wishart draw per entry of ``nu`` (K,), from ``generator``:
    A (K, D, D) lower triangular with A_jj = √χ²(nu_k − j + 1) (χ²(ν) = 2 Gamma(ν/2)) and standard
    normals below the diagonal, ε (K, D) standard normal.  Draw order: the normals of A, the
    chi-squares, ε."""
    k, dtype = nu.shape[0], nu.dtype
    a = torch.randn((k, d, d), dtype=dtype, generator=generator).tril_(-1)
    dfs = nu[:, None] - torch.arange(d, dtype=dtype)  # nu_k − j + 1 for j = 1..D
    chi2 = 2.0 * torch._standard_gamma(0.5 * dfs, generator=generator)
    a.diagonal(dim1=-2, dim2=-1).copy_(chi2.sqrt())
    return a, torch.randn((k, d), dtype=dtype, generator=generator)


def sample_dirichlet(alpha: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw from Dir(alpha) (alpha (K,), at least one entry ≥ 1 so that the sum is positive):
    independent Gamma(alpha_k, 1) draws from ``generator``, normalised (PRML B.16)."""
    g = torch._standard_gamma(alpha, generator=generator)
    return g / g.sum()
