"""Positive-definite matrices as an unconstrained vector, for Pyro's samplers and guides.

Λ_k is sampled from a :class:`Wishart` whose support carries a package-private constraint; it is
mapped to R^{D(D+1)/2} by :class:`TrilVecToPD` (lower Cholesky factor with log diagonal), so
NUTS, ``init_to_uniform`` and ``AutoDelta`` work on an unconstrained, proper space (torch
registers no bijection for ``positive_definite``).

Importing this module registers that bijection with ``torch.distributions.biject_to`` /
``transform_to`` — for the private constraint class only, so torch's own registry is unchanged
for every other distribution.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch.distributions import biject_to, transform_to
from torch.distributions import constraints as torch_constraints
from torch.distributions.transforms import Transform

__all__ = ["TrilVecToPD", "Wishart", "positive_definite"]


# --- positive-definite matrices as an unconstrained vector -------------------------------------
class _PositiveDefinite(torch_constraints._PositiveDefinite):
    """``positive_definite``, as a private class so that the bijection registered below applies
    to this package's Wishart only (torch's own registry is left untouched for everyone else)."""


positive_definite = _PositiveDefinite()


def _tril_size_to_d(n: int) -> int:
    d = int(round((math.sqrt(8 * n + 1) - 1) / 2))
    if d * (d + 1) // 2 != n:
        raise ValueError(f"a vector of length {n} is not the lower triangle of a square matrix")
    return d


class TrilVecToPD(Transform):
    """u ∈ R^{D(D+1)/2} ↦ Λ = L Lᵀ, L lower triangular with L_ij = u_ij (i > j), L_ii = exp(u_ii).

    Entries of u follow ``torch.tril_indices(D, D)`` (row-major lower triangle).  The log
    Jacobian of u ↦ (distinct entries of Λ) is D log 2 + Σ_{i=1..D} (D − i + 2) log L_ii:
    2^D Π L_ii^{D−i+1} for L ↦ L Lᵀ, times Π L_ii for the exponentiated diagonal.
    """

    domain = constraints.independent(constraints.real, 1)
    codomain = positive_definite
    bijective = True

    def __eq__(self, other):
        return isinstance(other, TrilVecToPD)

    def __hash__(self):
        return hash(TrilVecToPD)

    @staticmethod
    def _index(d: int, device):
        rows, cols = torch.tril_indices(d, d, device=device)
        return rows, cols, torch.nonzero(rows == cols).flatten()

    def _tril(self, u):
        d = _tril_size_to_d(u.shape[-1])
        rows, cols, diag = self._index(d, u.device)
        off = torch.where(rows == cols, torch.zeros_like(u), u)
        tril = u.new_zeros(u.shape[:-1] + (d, d))
        tril[..., rows, cols] = off
        return tril + torch.diag_embed(torch.exp(u[..., diag]))

    def _call(self, u):
        tril = self._tril(u)
        return tril @ tril.transpose(-1, -2)

    def _inverse(self, y):
        d = y.shape[-1]
        tril = torch.linalg.cholesky(y)
        rows, cols, _ = self._index(d, y.device)
        u = tril[..., rows, cols]
        return torch.where(rows == cols, torch.log(tril[..., rows, cols].clamp_min(torch.finfo(y.dtype).tiny)), u)

    def log_abs_det_jacobian(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d = _tril_size_to_d(u.shape[-1])
        _, _, diag = self._index(d, u.device)
        coef = torch.arange(d + 1, 1, -1, dtype=u.dtype, device=u.device)  # D − i + 2, i = 1..D
        return d * math.log(2.0) + (coef * u[..., diag]).sum(-1)

    def forward_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        d = _tril_size_to_d(shape[-1])
        return tuple(shape[:-1]) + (d, d)

    def inverse_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        d = shape[-1]
        return tuple(shape[:-2]) + (d * (d + 1) // 2,)


biject_to.register(_PositiveDefinite, lambda constraint: TrilVecToPD())
transform_to.register(_PositiveDefinite, lambda constraint: TrilVecToPD())


class Wishart(dist.Wishart):
    """Pyro's (torch's) Wishart with the package's positive-definite support (see TrilVecToPD).

    W(Λ | W, ν) ∝ |Λ|^{(ν−D−1)/2} exp(−½ tr(W⁻¹ Λ)), E[Λ] = ν W (PRML B.78–B.80); ``scale_tril``
    is the Cholesky factor of the scale W.  ``rsample`` is reparameterised (Bartlett
    decomposition with implicit Gamma gradients), so it serves in SVI guides.
    """

    support = positive_definite
