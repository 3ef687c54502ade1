"""Θ = {α, μ, Σ}: the point estimate of the GMM's parameters, and helpers on it.

Covariances are always stored as full (K, D, D) matrices; ``covariance_type``
only constrains how the M-step estimates them (diagonal, spherical, tied).
Everything numeric goes through Cholesky factors: Σ_k = L_k L_kᵀ and the
precision factor U_k = L_k⁻ᵀ (so Σ_k⁻¹ = U_k U_kᵀ, sklearn's
``precisions_cholesky_``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .checks import check_int
from .linalg import cholesky, precision_cholesky

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["GMMParams", "draw_mixture"]


def _tensor(value, dtype=None, name: str = "value") -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{name} must hold real numbers, got a tensor of dtype {t.dtype}")
        return t.to(dtype) if dtype is not None else (t if t.dtype in (torch.float32, torch.float64) else t.double())
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must hold real numbers: {err}") from None
    return torch.as_tensor(arr, dtype=dtype or torch.float64)


@dataclass(frozen=True, eq=False)
class GMMParams:
    """Point estimate Θ of a K-component, D-dimensional GMM.

    alpha : (K,)       mixing weights α_k on the simplex (eq. 15)
    mu    : (K, D)     component means μ_k
    cov   : (K, D, D)  component covariances Σ_k, symmetric positive definite
                       (1-D data: (K, 1, 1) variances σ_k²)
    """

    alpha: torch.Tensor
    mu: torch.Tensor
    cov: torch.Tensor

    def __post_init__(self):
        a = self.alpha
        dtype = a.dtype if isinstance(a, torch.Tensor) and a.dtype in (torch.float32, torch.float64) else None
        alpha = _tensor(self.alpha, dtype, "alpha")
        dtype = alpha.dtype
        mu = _tensor(self.mu, dtype, "mu")
        cov = _tensor(self.cov, dtype, "cov")
        if alpha.ndim != 1 or alpha.shape[0] == 0:
            raise ValueError(f"alpha must have shape (K,) with K >= 1, got {tuple(alpha.shape)}")
        k = alpha.shape[0]
        if mu.ndim == 1 and k == 1:
            mu = mu.unsqueeze(0)
        elif mu.ndim == 1:
            mu = mu.unsqueeze(-1)  # K scalar means of 1-D data
        if mu.ndim != 2 or mu.shape[0] != k:
            raise ValueError(f"mu must have shape (K, D) = ({k}, D), got {tuple(mu.shape)}")
        d = mu.shape[1]
        if d == 1 and cov.ndim == 1 and cov.shape[0] == k:
            cov = cov.reshape(k, 1, 1)  # K variances of 1-D data
        if cov.shape != (k, d, d):
            raise ValueError(f"cov must have shape (K, D, D) = ({k}, {d}, {d}), got {tuple(cov.shape)}")
        for name, t in (("alpha", alpha), ("mu", mu), ("cov", cov)):
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} has NaN or infinite entries")
        if bool((alpha < 0).any()) or abs(float(alpha.sum()) - 1.0) > 1e-6 * max(1, k):
            raise ValueError(f"alpha must be on the simplex (non-negative, summing to 1); got sum {float(alpha.sum())}")
        if not torch.allclose(cov, cov.transpose(-1, -2), rtol=1e-8, atol=1e-12 * float(cov.abs().max())):
            raise ValueError("cov must be symmetric")
        object.__setattr__(self, "alpha", alpha.contiguous())
        object.__setattr__(self, "mu", mu.contiguous())
        object.__setattr__(self, "cov", cov.contiguous())
        cholesky(self.cov)  # positive definite, or a DegenerateComponentError naming the component

    # --- shape ---------------------------------------------------------------------------------
    @property
    def k(self) -> int:
        return self.alpha.shape[0]

    @property
    def d(self) -> int:
        return self.mu.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self.alpha.dtype

    # --- derived quantities --------------------------------------------------------------------
    @property
    def scale_tril(self) -> torch.Tensor:
        """L_k with Σ_k = L_k L_kᵀ."""
        return cholesky(self.cov)

    @property
    def precision_cholesky(self) -> torch.Tensor:
        """U_k = L_k⁻ᵀ, so Σ_k⁻¹ = U_k U_kᵀ."""
        return precision_cholesky(self.cov)

    # --- transformations -----------------------------------------------------------------------
    def permute(self, perm: npt.ArrayLike | torch.Tensor) -> GMMParams:
        """Reorder the components: component j of the result is component perm[j] of self."""
        perm = torch.as_tensor(perm, dtype=torch.long)
        if sorted(perm.tolist()) != list(range(self.k)):
            raise ValueError(f"perm must be a permutation of 0..{self.k - 1}, got {perm.tolist()}")
        return GMMParams(self.alpha[perm], self.mu[perm], self.cov[perm])

    def to(self, dtype: torch.dtype) -> GMMParams:
        return GMMParams(self.alpha.to(dtype), self.mu.to(dtype), self.cov.to(dtype))

    def shift(self, offset: npt.ArrayLike | torch.Tensor) -> GMMParams:
        """The same mixture translated by ``offset`` (D,): μ_k + offset."""
        offset = torch.as_tensor(offset, dtype=self.dtype)
        return GMMParams(self.alpha, self.mu + offset, self.cov)

    def allclose(self, other: GMMParams, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
        return all(
            torch.allclose(a, b.to(a.dtype), rtol=rtol, atol=atol)
            for a, b in ((self.alpha, other.alpha), (self.mu, other.mu), (self.cov, other.cov))
        )

    # --- the generative process ----------------------------------------------------------------
    def sample(self, n: int, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw n rows (x, z) from the generative process α → Z → X (eq. 15).

        z_i ~ Categorical(α), x_i | z_i = k ~ N(μ_k, Σ_k) = μ_k + L_k ε_i, ε_i ~ N(0, I)
        (:func:`draw_mixture`). Returns x (n, D) in Θ's dtype and z (n,) LongTensor; n = 0 gives
        empty tensors of those shapes.

        Parameters
        ----------
        n : int
            Number of draws, an integer >= 0 (bools and floats such as 2.0 are refused).
        seed : int or None
            Every draw flows from one ``torch.Generator`` seeded with it (``core.rng``; any
            non-negative integer, None for OS entropy): the same seed gives the same bits.
            ``datasets.make_mixture(n, Θ, seed)`` is this draw.
        """
        from .rng import resolve_seed, torch_generator

        n = check_int(n, "n", 0)
        gen = torch_generator(resolve_seed(seed))
        return draw_mixture(self.alpha, self.mu, self.scale_tril, n, gen)

    def as_numpy(self) -> dict[str, np.ndarray]:
        return {"alpha": self.alpha.numpy(), "mu": self.mu.numpy(), "cov": self.cov.numpy()}

    def __repr__(self) -> str:
        fmt = lambda t: np.array2string(t.numpy(), precision=4, suppress_small=True, separator=", ")
        return (
            f"GMMParams(K={self.k}, D={self.d}, dtype={self.dtype},\n"
            f"  alpha={fmt(self.alpha)},\n  mu={fmt(self.mu)},\n  cov={fmt(self.cov)})"
        )


def draw_mixture(
    alpha: torch.Tensor, mu: torch.Tensor, scale_tril: torch.Tensor, n: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """n draws (x, z) of eq. 15 from one Θ or from one Θ_i per row, in float64, cast to mu's dtype.

    One Θ: ``alpha`` (K,), ``mu`` (K, D), ``scale_tril`` (K, D, D) (Σ_k = L_k L_kᵀ); z is drawn
    with ``torch.multinomial(α, n, replacement=True)``. One Θ_i per row (posterior predictive
    draws, Θ_i ~ q or a posterior): ``alpha`` (n, K), ``mu`` (n, K, D), ``scale_tril`` (n, K, D, D),
    z_i ~ Cat(α_i). Then ε ~ N(0, I) (n, D) and x_i = μ_{z_i} + L_{z_i} ε_i, all from ``generator``.
    """
    d = mu.shape[-1]
    if n == 0:
        return torch.empty(0, d, dtype=mu.dtype), torch.empty(0, dtype=torch.long)
    if alpha.ndim == 1:
        z = torch.multinomial(alpha.double(), n, replacement=True, generator=generator)  # z_i ~ Cat(α) (eq. 15)
        rows: tuple[torch.Tensor, ...] = (z,)
    else:
        z = torch.multinomial(alpha.double(), 1, generator=generator).squeeze(1)  # z_i ~ Cat(α_i)
        rows = (torch.arange(n), z)
    eps = torch.randn(n, d, generator=generator, dtype=torch.float64)
    x = mu.double()[rows] + torch.einsum("nde,ne->nd", scale_tril.double()[rows], eps)  # x_i ~ N(μ_z, Σ_z) (eq. 15)
    return x.to(mu.dtype), z
