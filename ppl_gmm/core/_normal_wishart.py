"""``NormalWishartPrior``: the parameters of the conjugate Dirichlet × Normal-Wishart prior (Bishop,
PRML eq. 10.39–10.40), each checked when the prior is built.

    α ~ Dir(alpha0 · 1_K)                                  (10.39)
    Λ_k ~ W(Λ_k | W0, nu0)          E[Λ_k] = nu0 · W0      (10.40)
    μ_k | Λ_k ~ N(m0, (beta0 Λ_k)⁻¹)

``W0`` is the Wishart *scale* (a precision-scale matrix), so the prior mean of
the covariance is E[Σ_k] = W0⁻¹ / (nu0 − D − 1) for nu0 > D + 1.  ``core.priors`` is the public
home of the class (with ``default_prior``); the algebra on it is in ``core._conjugate`` and
``core._map_modes``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from ._distributions import log_dirichlet_norm, log_wishart_norm
from .linalg import checked_cholesky, inverse_from_cholesky, log_det_from_cholesky

__all__ = ["NormalWishartPrior"]


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
