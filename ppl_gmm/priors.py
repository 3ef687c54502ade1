"""The conjugate Dirichlet × Normal-Wishart prior (Bishop, PRML eq. 10.39–10.40).

    α ~ Dir(alpha0 · 1_K)                                  (10.39)
    Λ_k ~ Wishart(W0, nu0)          E[Λ_k] = nu0 · W0      (10.40)
    μ_k | Λ_k ~ N(m0, (beta0 Λ_k)⁻¹)

``W0`` is the Wishart *scale* (a precision-scale matrix), so the prior mean of
the covariance is E[Σ_k] = W0⁻¹ / (nu0 − D − 1) for nu0 > D + 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._validation import as_data, check_k

__all__ = ["NormalWishartPrior", "default_prior"]


def _num(value, name) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


@dataclass(frozen=True, eq=False)
class NormalWishartPrior:
    """Dir(alpha0) × Π_k N(μ_k | m0, (beta0 Λ_k)⁻¹) Wishart(Λ_k | W0, nu0).

    alpha0 : float > 0       symmetric Dirichlet concentration
    m0     : (D,)            prior mean of the component means
    beta0  : float > 0       prior precision scaling of the means
    nu0    : float > D − 1   Wishart degrees of freedom
    W0     : (D, D)          Wishart scale matrix, symmetric positive definite
    """

    alpha0: float
    m0: torch.Tensor
    beta0: float
    nu0: float
    W0: torch.Tensor

    def __post_init__(self):
        alpha0 = _num(self.alpha0, "alpha0")
        beta0 = _num(self.beta0, "beta0")
        nu0 = _num(self.nu0, "nu0")
        m0 = torch.as_tensor(np.asarray(self.m0, dtype=np.float64)).reshape(-1)
        d = m0.shape[0]
        if d == 0 or not bool(torch.isfinite(m0).all()):
            raise ValueError(f"m0 must be a finite vector of length D >= 1, got {self.m0!r}")
        w0 = torch.as_tensor(np.asarray(self.W0, dtype=np.float64))
        if w0.ndim == 0 or (w0.ndim == 1 and w0.numel() == 1):
            w0 = w0.reshape(1, 1)
        if w0.shape != (d, d):
            raise ValueError(f"W0 must have shape (D, D) = ({d}, {d}) to match m0, got {tuple(w0.shape)}")
        if alpha0 <= 0:
            raise ValueError(f"alpha0 must be > 0 (Dirichlet concentration), got {alpha0}")
        if beta0 <= 0:
            raise ValueError(f"beta0 must be > 0, got {beta0}")
        if nu0 <= d - 1:
            raise ValueError(f"nu0 must be > D - 1 = {d - 1} for a proper Wishart, got {nu0}")
        if not bool(torch.isfinite(w0).all()) or not torch.allclose(w0, w0.T, rtol=1e-10, atol=0):
            raise ValueError("W0 must be a finite symmetric matrix")
        if int(torch.linalg.cholesky_ex(w0).info) != 0:
            raise ValueError("W0 must be positive definite (it is the Wishart scale matrix)")
        object.__setattr__(self, "alpha0", alpha0)
        object.__setattr__(self, "beta0", beta0)
        object.__setattr__(self, "nu0", nu0)
        object.__setattr__(self, "m0", m0)
        object.__setattr__(self, "W0", w0)

    @property
    def d(self) -> int:
        return self.m0.shape[0]

    def check_data(self, x: torch.Tensor) -> None:
        if x.shape[1] != self.d:
            raise ValueError(f"the prior is {self.d}-dimensional but x has D = {x.shape[1]} columns")

    def __repr__(self) -> str:
        return (
            f"NormalWishartPrior(alpha0={self.alpha0:g}, m0={self.m0.numpy().round(4).tolist()}, "
            f"beta0={self.beta0:g}, nu0={self.nu0:g}, W0={self.W0.numpy().round(6).tolist()})"
        )


def default_prior(x, k) -> NormalWishartPrior:
    """Weakly informative prior from the data (Fraley & Raftery 2007):

    alpha0 = 1, m0 = mean(x), beta0 = 0.01, nu0 = D + 2, W0⁻¹ = cov(x) / k^(2/D).

    The covariance is the two-pass sample covariance (divisor N − 1; N = 1 uses
    the identity), so the prior follows the data's location and scale.
    """
    x = as_data(x).double()
    n, d = x.shape
    k = check_k(k, n)
    m0 = x.mean(0)
    xc = x - m0
    cov = xc.T @ xc / (n - 1) if n > 1 else torch.eye(d, dtype=torch.float64)
    if int(torch.linalg.cholesky_ex(cov).info) != 0:
        raise ValueError(
            "the data's sample covariance is singular (a constant column or collinear columns), "
            "so no default prior exists; drop the redundant columns or pass a NormalWishartPrior"
        )
    w0_inv = cov / k ** (2.0 / d)
    w0 = torch.linalg.inv(w0_inv)
    return NormalWishartPrior(alpha0=1.0, m0=m0, beta0=0.01, nu0=d + 2.0, W0=0.5 * (w0 + w0.T))
