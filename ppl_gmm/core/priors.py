"""The conjugate Dirichlet × Normal-Wishart prior (Bishop, PRML eq. 10.39–10.40), and the
Normal-Wishart algebra that MAP-EM (``inference.map``), variational Bayes (``inference.vb``),
the Bayesian Pyro guide (``ppl.bayes``) and the bound (``core.vb_posterior``) share.

    α ~ Dir(alpha0 · 1_K)                                  (10.39)
    Λ_k ~ W(Λ_k | W0, nu0)          E[Λ_k] = nu0 · W0      (10.40)
    μ_k | Λ_k ~ N(m0, (beta0 Λ_k)⁻¹)

``W0`` is the Wishart *scale* (a precision-scale matrix), so the prior mean of
the covariance is E[Σ_k] = W0⁻¹ / (nu0 − D − 1) for nu0 > D + 1.  Densities are
taken in the (α, μ, Λ) parametrisation: Dirichlet on the first K − 1 simplex
coordinates, Wishart on the D(D + 1)/2 distinct entries of Λ (PRML B.16, B.78).

Conjugate update for responsibilities γ (N, K) — the same formulas serve the
VB M-step (PRML 10.58, 10.60–10.63) and the MAP M-step (the mode of the same
Dir × Normal-Wishart, :func:`posterior_mode`)::

    N_k = Σ_i γ_ik                                   (10.51)
    alpha_k = alpha0 + N_k                           (10.58)
    beta_k  = beta0 + N_k                            (10.60)
    m_k     = (beta0 m0 + Σ_i γ_ik x_i) / beta_k     (10.61)
    nu_k    = nu0 + N_k                              (10.63)
    W_k⁻¹   = W0⁻¹ + Σ_i γ_ik (x_i − m_k)(x_i − m_k)ᵀ + beta0 (m_k − m0)(m_k − m0)ᵀ   (10.62)

The last line is PRML 10.62 (W0⁻¹ + N_k S_k + beta0 N_k/(beta0 + N_k)(x̄_k − m0)(x̄_k − m0)ᵀ)
rewritten around m_k: it needs no division by N_k (an empty component gets
exactly the prior), its scatter is centred at m_k (two-pass moments, no
cancellation for data far from the origin) and it is positive definite for any γ.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from .gaussian import mahalanobis_sq
from .gmm import weighted_scatter
from .linalg import (
    checked_cholesky,
    cholesky,
    inverse_from_cholesky,
    log_det_from_cholesky,
    precision_cholesky,
)
from .params import GMMParams
from .validation import ArrayLike, as_data, check_k

__all__ = [
    "NormalWishartPrior",
    "default_prior",
    "resolve_prior",
    "ConjugateStats",
    "conjugate_update",
    "conjugate_update_from_data",
    "posterior_mode",
    "log_prior",
    "log_dirichlet_density",
    "log_normal_wishart_density",
    "log_wishart_norm",
    "log_dirichlet_norm",
    "expected_log_det",
    "normal_wishart_from_noise",
    "normal_wishart_noise",
    "sample_dirichlet",
]


def _num(value, name, meaning) -> float:
    """A finite real scalar: a Python or numpy real, or a 0-d array / tensor (never a bool, and never
    an array with one entry per component: the prior is symmetric, one value for every component)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.ndarray, torch.Tensor)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if isinstance(value, (np.ndarray, torch.Tensor)):
        if value.ndim != 0:
            raise ValueError(
                f"{name} must be a scalar ({meaning}, one value shared by every component), "
                f"got an array of shape {tuple(value.shape)}"
            )
        if isinstance(value, torch.Tensor):
            real = value.dtype != torch.bool and not value.is_complex()
        else:
            real = value.dtype.kind in "iuf"
        if not real:
            raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


def _as_float64(value, name) -> torch.Tensor:
    """A float64 CPU tensor of real numbers (no bools, strings, complex or object entries)."""
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must hold real numbers, got a tensor of dtype {value.dtype}")
        return value.detach().to(device="cpu", dtype=torch.float64)
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must hold real numbers, got {value!r}") from None
    if arr.dtype.kind not in "iuf":  # e.g. "1.5" would otherwise be parsed, True taken as 1.0
        if arr.dtype.kind == "O":  # a list of tensors or numpy scalars: numbers in an object array
            try:
                return torch.as_tensor(arr.astype(np.float64))
            except (TypeError, ValueError):
                pass
        raise TypeError(f"{name} must hold real numbers, got {value!r}")
    return torch.as_tensor(arr.astype(np.float64))


@dataclass(frozen=True, eq=False)
class NormalWishartPrior:
    """Dir(α | alpha0) × Π_k N(μ_k | m0, (beta0 Λ_k)⁻¹) W(Λ_k | W0, nu0), PRML 10.39–10.40.

    alpha0 : float > 0       symmetric Dirichlet concentration (alpha0 < 1 favours empty components)
    m0     : (D,)            prior mean of the component means (a scalar when D = 1)
    beta0  : float > 0       prior precision scaling of the means (small = vague)
    nu0    : float > D − 1   Wishart degrees of freedom
    W0     : (D, D)          Wishart scale matrix, symmetric positive definite; E[Λ_k] = nu0 W0
                             (a scalar or a 1-vector when D = 1)

    Every field is checked: the scalars are finite real numbers (Python / numpy scalars or 0-d
    arrays; one value shared by every component, so a (K,) array is refused), m0 is a finite real
    vector (never flattened from a matrix), W0 a finite, symmetric, positive-definite (D, D) real
    matrix. Stored as float64 tensors (``W0`` symmetrised); ``cast(dtype)`` gives the tensors a fit uses.
    """

    alpha0: float
    m0: torch.Tensor
    beta0: float
    nu0: float
    W0: torch.Tensor

    def __post_init__(self):
        alpha0 = _num(self.alpha0, "alpha0", "the symmetric Dirichlet concentration")
        beta0 = _num(self.beta0, "beta0", "the precision scaling of the means")
        nu0 = _num(self.nu0, "nu0", "the Wishart degrees of freedom")
        m0 = _as_float64(self.m0, "m0")
        if m0.ndim > 1:  # never flattened: a (2, 2) m0 is not a 4-D prior
            raise ValueError(
                f"m0 must be a vector of shape (D,) (or a scalar when D = 1), got an array of shape {tuple(m0.shape)}"
            )
        m0 = m0.reshape(-1)
        d = m0.shape[0]
        if d == 0 or not bool(torch.isfinite(m0).all()):
            raise ValueError(f"m0 must be a finite vector of length D >= 1, got {self.m0!r}")
        w0 = _as_float64(self.W0, "W0")
        if d == 1 and (w0.ndim == 0 or (w0.ndim == 1 and w0.numel() == 1)):  # D = 1: a scalar W0
            w0 = w0.reshape(1, 1)
        if w0.shape != (d, d):
            raise ValueError(f"W0 must have shape (D, D) = ({d}, {d}) to match m0, got {tuple(w0.shape)}")
        if alpha0 <= 0:
            raise ValueError(f"alpha0 must be > 0 (Dirichlet concentration), got {alpha0}")
        if beta0 <= 0:
            raise ValueError(f"beta0 must be > 0 (precision scaling of the means), got {beta0}")
        if nu0 <= d - 1:
            raise ValueError(f"nu0 must be > D - 1 = {d - 1} for a proper Wishart, got {nu0}")
        if not bool(torch.isfinite(w0).all()):
            raise ValueError("W0 has NaN or infinite entries")
        scale = float(w0.abs().max())
        if not torch.allclose(w0, w0.T, rtol=1e-10, atol=1e-14 * scale):
            raise ValueError("W0 must be a symmetric matrix")
        w0 = 0.5 * (w0 + w0.T)
        if checked_cholesky(w0)[1] is not None:
            raise ValueError("W0 must be positive definite (it is the Wishart scale matrix, E[Λ] = nu0 W0)")
        object.__setattr__(self, "alpha0", alpha0)
        object.__setattr__(self, "beta0", beta0)
        object.__setattr__(self, "nu0", nu0)
        object.__setattr__(self, "m0", m0)
        object.__setattr__(self, "W0", w0)

    @property
    def d(self) -> int:
        return self.m0.shape[0]

    @property
    def W0_inv(self) -> torch.Tensor:
        """W0⁻¹ (the inverse-Wishart scale of Σ_k), via Cholesky."""
        return inverse_from_cholesky(torch.linalg.cholesky(self.W0))

    def log_wishart_norm0(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """ln B(W0, nu0), the Wishart normaliser of the prior (PRML B.79)."""
        log_det_w0 = log_det_from_cholesky(torch.linalg.cholesky(self.W0.to(dtype)))
        return log_wishart_norm(log_det_w0, torch.tensor([self.nu0], dtype=dtype), self.d)[0]

    def log_normalisers(self, k: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """ln C(alpha0 1_K) + K ln B(W0, nu0) + (K D / 2) ln beta0: the prior's normalising constants."""
        log_c0 = log_dirichlet_norm(torch.full((k,), self.alpha0, dtype=dtype))
        return log_c0 + k * self.log_wishart_norm0(dtype) + 0.5 * k * self.d * math.log(self.beta0)

    def expected_cov(self) -> torch.Tensor:
        """E[Σ_k] = W0⁻¹ / (nu0 − D − 1), defined for nu0 > D + 1."""
        if self.nu0 <= self.d + 1:
            raise ValueError(f"E[Σ] exists only for nu0 > D + 1 = {self.d + 1}; nu0 = {self.nu0}")
        return self.W0_inv / (self.nu0 - self.d - 1)

    def check_data(self, x: torch.Tensor) -> None:
        """Raise if x (N, D) does not have the prior's D."""
        if x.shape[1] != self.d:
            raise ValueError(
                f"the prior is {self.d}-dimensional (m0 has length {self.d}) but x has D = {x.shape[1]} columns"
            )

    def cast(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(m0, W0, W0⁻¹) as tensors of ``dtype``."""
        return self.m0.to(dtype), self.W0.to(dtype), self.W0_inv.to(dtype)

    def as_dict(self) -> dict[str, float | torch.Tensor]:
        return {
            "alpha0": self.alpha0,
            "m0": self.m0.clone(),
            "beta0": self.beta0,
            "nu0": self.nu0,
            "W0": self.W0.clone(),
        }

    def __repr__(self) -> str:
        return (
            f"NormalWishartPrior(alpha0={self.alpha0:g}, m0={self.m0.numpy().round(4).tolist()}, "
            f"beta0={self.beta0:g}, nu0={self.nu0:g}, W0={self.W0.numpy().round(6).tolist()})"
        )


def default_prior(x: ArrayLike, k: int) -> NormalWishartPrior:
    """Weakly informative prior from the data (Fraley & Raftery 2007, §2.2):

    alpha0 = 1, m0 = mean(x), beta0 = 0.01, nu0 = D + 2, W0⁻¹ = cov(x) / k^(2/D).

    With nu0 = D + 2 the prior mean of each covariance is E[Σ_k] = W0⁻¹ = cov(x)/k^(2/D):
    the data's spread shared among k components of equal volume.  beta0 = 0.01 lets
    a component mean lie ten data standard deviations from the centre.  The covariance
    is the two-pass sample covariance (divisor N − 1); N = 1 uses the identity.
    """
    x = as_data(x).double()
    n, d = x.shape
    k = check_k(k, n)
    m0 = x.mean(0)
    xc = x - m0
    cov = xc.T @ xc / (n - 1) if n > 1 else torch.eye(d, dtype=torch.float64)
    if checked_cholesky(cov)[1] is not None:
        raise ValueError(
            "the data's sample covariance is singular (a constant column or collinear columns), "
            "so no default prior exists; drop the redundant columns or pass a NormalWishartPrior"
        )
    w0_inv = cov / k ** (2.0 / d)
    w0 = inverse_from_cholesky(torch.linalg.cholesky(w0_inv))
    return NormalWishartPrior(alpha0=1.0, m0=m0, beta0=0.01, nu0=d + 2.0, W0=w0)


def resolve_prior(x: torch.Tensor, k: int, prior: NormalWishartPrior | None) -> NormalWishartPrior:
    """``prior`` checked against validated data (N, D); ``None`` means ``default_prior(x, k)``."""
    if prior is None:
        return default_prior(x, k)
    if not isinstance(prior, NormalWishartPrior):
        raise TypeError(f"prior must be a NormalWishartPrior (or None for default_prior), got {type(prior).__name__}")
    prior.check_data(x)
    return prior


# --- Normal-Wishart algebra -----------------------------------------------------------------------
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


class ConjugateStats(NamedTuple):
    """The conjugate update of one γ (see the module docstring); ``w_inv`` is W_k⁻¹ (K, D, D)."""

    n_k: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor
    m: torch.Tensor
    nu: torch.Tensor
    w_inv: torch.Tensor
    scatter: torch.Tensor  # Σ_i γ_ik (x_i − m_k)(x_i − m_k)ᵀ, the scatter about the new m_k


def conjugate_update(
    prior: NormalWishartPrior,
    n_k: torch.Tensor,
    sum_x: torch.Tensor,
    scatter: Callable[[torch.Tensor], torch.Tensor],
    m0: torch.Tensor,
    w0_inv: torch.Tensor,
) -> ConjugateStats:
    """The Dir × Normal-Wishart posterior from sufficient statistics (PRML 10.58, 10.60–10.63).

    Parameters
    ----------
    n_k : (K,)       N_k = Σ_i γ_ik (10.51)
    sum_x : (K, D)   Σ_i γ_ik x_i
    scatter :        m ↦ Σ_i γ_ik (x_i − m_k)(x_i − m_k)ᵀ, (K, D) → (K, D, D): two-pass from the
                     data (:func:`conjugate_update_from_data`) or from raw moments (``inference.vb``)
    m0, w0_inv :     the prior's m0 and W0⁻¹ in the work dtype and coordinates
    """
    alpha = prior.alpha0 + n_k  # 10.58
    beta = prior.beta0 + n_k  # 10.60
    m = (prior.beta0 * m0 + sum_x) / beta[:, None]  # 10.61
    nu = prior.nu0 + n_k  # 10.63
    dm = m - m0
    s_m = scatter(m)
    w_inv = w0_inv + s_m + prior.beta0 * dm[:, :, None] * dm[:, None, :]  # 10.62
    return ConjugateStats(n_k, alpha, beta, m, nu, 0.5 * (w_inv + w_inv.transpose(-1, -2)), s_m)


def conjugate_update_from_data(
    x: torch.Tensor,
    gamma: torch.Tensor,
    prior: NormalWishartPrior,
    m0: torch.Tensor | None = None,
    w0_inv: torch.Tensor | None = None,
) -> ConjugateStats:
    """:func:`conjugate_update` for data ``x`` (N, D) and responsibilities ``gamma`` (N, K; a
    transposed view of (K, N) works), the scatter two-pass (``gmm.weighted_scatter``)."""
    prior_m0, _, prior_w0_inv = prior.cast(x.dtype)
    m0 = prior_m0 if m0 is None else m0
    w0_inv = prior_w0_inv if w0_inv is None else w0_inv
    n_k = gamma.sum(0)  # 10.51
    return conjugate_update(prior, n_k, gamma.T @ x, lambda m: weighted_scatter(x, gamma, m), m0, w0_inv)


def posterior_mode(st: ConjugateStats, reg_covar: float = 0.0) -> GMMParams:
    """The joint mode of Dir(alpha_k) × Π_k N(μ_k | m_k, (beta_k Λ_k)⁻¹) W(Λ_k | W_k, nu_k) in (α, μ, Λ)
    (the MAP M-step; derivation in ``inference.map``):

        α_k ∝ max(alpha_k − 1, 0),   μ_k = m_k,   Σ_k = W_k⁻¹ / (nu_k − D)  (+ reg_covar·I)

    Needs nu_k > D (checked by the callers: nu0 > D).
    """
    d = st.m.shape[1]
    weight = torch.clamp(st.alpha - 1, min=0.0)  # Dirichlet mode, max(N_k + alpha0 − 1, 0)
    cov = st.w_inv / (st.nu - d)[:, None, None]  # Λ_k = (nu_k − D) W_k
    cov = cov + reg_covar * torch.eye(d, dtype=cov.dtype)
    return GMMParams(weight / weight.sum(), st.m, cov)


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


def log_dirichlet_density(log_alpha: torch.Tensor, alpha0: float) -> torch.Tensor:
    """ln Dir(α | alpha0 1_K) = ln C(alpha0 1_K) + (alpha0 − 1) Σ_k ln α_k (PRML B.16), from ln α (..., K):
    the density on the first K − 1 coordinates of the simplex."""
    k = log_alpha.shape[-1]
    return log_dirichlet_norm(torch.full((k,), alpha0, dtype=log_alpha.dtype)) + (alpha0 - 1) * log_alpha.sum(-1)


def log_normal_wishart_density(
    mu: torch.Tensor, prec_chol: torch.Tensor, prior: NormalWishartPrior, m0: torch.Tensor, w0_inv: torch.Tensor
) -> torch.Tensor:
    """ln N(μ_k | m0, (beta0 Λ_k)⁻¹) + ln W(Λ_k | W0, nu0) per component (K,), PRML 10.40, B.37, B.78::

        ln N(μ_k | m0, (beta0 Λ_k)⁻¹) = (D/2) ln(beta0 / 2π) + ½ ln|Λ_k| − (beta0/2) (μ_k − m0)ᵀ Λ_k (μ_k − m0)
        ln W(Λ_k | W0, nu0) = ln B(W0, nu0) + ((nu0 − D − 1)/2) ln|Λ_k| − ½ tr(W0⁻¹ Λ_k)

    ``prec_chol`` (K, D, D): triangular factors U_k (lower or upper) with Λ_k = U_k U_kᵀ and a
    positive diagonal, e.g. ``linalg.precision_cholesky`` or the lower factor the NUTS coordinates
    give; ``m0`` and ``w0_inv`` are the prior's m0 and W0⁻¹ in the work dtype (``prior.cast``).
    Differentiable."""
    d = mu.shape[-1]
    log_det_lambda = log_det_from_cholesky(prec_chol)  # ln|Λ_k| = 2 Σ_d ln U_k,dd
    mahal = mahalanobis_sq(m0[None], mu, prec_chol)[0]  # (μ_k − m0)ᵀ Λ_k (μ_k − m0)
    trace = ((w0_inv @ prec_chol) * prec_chol).sum((-2, -1))  # tr(W0⁻¹ U_k U_kᵀ)
    log_normal = 0.5 * d * math.log(prior.beta0 / (2 * math.pi)) + 0.5 * log_det_lambda - 0.5 * prior.beta0 * mahal
    log_wishart = prior.log_wishart_norm0(mu.dtype) + 0.5 * (prior.nu0 - d - 1) * log_det_lambda - 0.5 * trace  # B.78
    return log_normal + log_wishart


def log_prior(params: GMMParams, prior: NormalWishartPrior) -> torch.Tensor:
    """ln p(Θ) in the (α, μ, Λ) parametrisation (PRML 10.39–10.40, B.16, B.37, B.78):
    :func:`log_dirichlet_density` + Σ_k :func:`log_normal_wishart_density`.

    With K = 1, α ≡ 1 and the Dirichlet term is 0.  Components with α_k = 0 (switched off when
    alpha0 < 1) are left out of the Dirichlet, which is then over the active components.
    """
    prior.check_data(params.mu)
    m0, _, w0_inv = prior.cast(params.dtype)
    active = params.alpha > 0
    k_active = int(active.sum())
    if k_active > 1:
        log_dir = log_dirichlet_density(torch.log(params.alpha[active]), prior.alpha0)  # B.16
    else:
        log_dir = torch.zeros((), dtype=params.dtype)
    prec_chol = precision_cholesky(chol=cholesky(params.cov))  # Λ_k = U_k U_kᵀ, U_k = L_k⁻ᵀ
    return log_dir + log_normal_wishart_density(params.mu, prec_chol, prior, m0, w0_inv).sum()
