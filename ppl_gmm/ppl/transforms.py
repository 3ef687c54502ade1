"""Unconstrained coordinates for Pyro's samplers and guides, and for the NUTS potential.

Λ_k is sampled from a :class:`Wishart` whose support carries a package-private constraint; it is
mapped to R^{D(D+1)/2} by :class:`TrilVecToPD` (lower Cholesky factor with log diagonal), so
NUTS, ``init_to_uniform`` and ``AutoDelta`` work on an unconstrained, proper space (torch
registers no bijection for ``positive_definite``).

Importing this module registers that bijection with ``torch.distributions.biject_to`` /
``transform_to`` — for the private constraint class only, so torch's own registry is unchanged
for every other distribution.

The same maps as plain functions, each with its log Jacobian, serve the hand-written NUTS
potential (``ppl.potential``):

- :func:`vec_to_tril`: u ↦ L, the lower factor of ``TrilVecToPD`` (Λ = L Lᵀ);
- :func:`stick_breaking_log`: u ∈ R^{K−1} ↦ ln α on the simplex, the map of torch's
  ``StickBreakingTransform`` (Pyro's ``biject_to(simplex)``) computed in log space;
- :func:`ordered_first_coordinate`: w ↦ μ with μ_{1,1} < μ_{2,1} < … < μ_{K,1} (Stan's ordered
  transform on the first coordinate of the means).
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch.distributions import biject_to, transform_to
from torch.distributions import constraints as torch_constraints
from torch.distributions.transforms import Transform

__all__ = [
    "TrilVecToPD",
    "Wishart",
    "positive_definite",
    "vec_to_tril",
    "tril_indices",
    "stick_breaking_log",
    "stick_breaking_inverse",
    "ordered_first_coordinate",
    "ordered_first_coordinate_inverse",
]


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


def tril_indices(d: int, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, cols, diag): ``torch.tril_indices(d, d)`` (the order of the entries of u) and the
    positions in u of the diagonal entries."""
    rows, cols = torch.tril_indices(d, d, device=device)
    return rows, cols, torch.nonzero(rows == cols).flatten()


def vec_to_tril(u: torch.Tensor) -> torch.Tensor:
    """u (..., D(D+1)/2) ↦ L (..., D, D) lower triangular, L_ij = u_ij (i > j), L_ii = exp(u_ii)
    (the factor of :class:`TrilVecToPD`: Λ = L Lᵀ; entries in ``torch.tril_indices`` order)."""
    d = _tril_size_to_d(u.shape[-1])
    rows, cols, diag = tril_indices(d, u.device)
    off = torch.where(rows == cols, torch.zeros_like(u), u)
    tril = u.new_zeros(u.shape[:-1] + (d, d))
    tril[..., rows, cols] = off
    return tril + torch.diag_embed(torch.exp(u[..., diag]))


def stick_breaking_log(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """u (..., K−1) ↦ (ln α (..., K), ln |J|): torch's ``StickBreakingTransform`` in log space.

    With v_j = u_j − ln(K − j) and s_j = σ(v_j), j = 1..K−1::

        α_j = s_j Π_{i<j} (1 − s_i)  (j < K),      α_K = Π_{i<K} (1 − s_i)
        ln |J| = Σ_{j<K} [ln(1 − s_j) + ln α_j]

    (the Jacobian of u ↦ (α_1..α_{K−1}), the coordinates of the Dirichlet density).  ln σ and
    ln(1 − σ) = ln σ(−v) are taken directly, so ln α stays finite where α underflows.
    """
    km1 = u.shape[-1]
    v = u - torch.log(torch.arange(km1, 0, -1, dtype=u.dtype, device=u.device))
    log_s = torch.nn.functional.logsigmoid(v)
    log_1ms = torch.nn.functional.logsigmoid(-v)
    cum = torch.cumsum(log_1ms, -1)  # Σ_{i<=j} ln(1 − s_i)
    zero = u.new_zeros(u.shape[:-1] + (1,))
    log_alpha = torch.cat([log_s, zero], -1) + torch.cat([zero, cum], -1)
    return log_alpha, (log_1ms + log_alpha[..., :-1]).sum(-1)


def stick_breaking_inverse(alpha: torch.Tensor) -> torch.Tensor:
    """α on the simplex (..., K) ↦ u (..., K−1), the inverse of :func:`stick_breaking_log`."""
    return torch.distributions.transforms.StickBreakingTransform().inv(alpha)


def ordered_first_coordinate(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w (..., K, D) ↦ (μ (..., K, D), ln |J| (...)): μ_{1,1} = w_{1,1}, μ_{k,1} = μ_{k−1,1} + exp(w_{k,1}),
    the other coordinates unchanged; ln |J| = Σ_{k≥2} w_{k,1}.  μ_{1,1} < … < μ_{K,1} for every w."""
    first = torch.cumsum(torch.cat([w[..., :1, 0], torch.exp(w[..., 1:, 0])], -1), -1)
    return torch.cat([first[..., None], w[..., 1:]], -1), w[..., 1:, 0].sum(-1)


def ordered_first_coordinate_inverse(mu: torch.Tensor) -> torch.Tensor:
    """μ (K, D) with strictly increasing μ_{k,1} ↦ w, the inverse of :func:`ordered_first_coordinate`."""
    gaps = torch.diff(mu[:, 0])
    if not bool((gaps > 0).all()):
        raise ValueError("ordered_first_coordinate_inverse needs strictly increasing first coordinates of mu")
    return torch.cat([torch.cat([mu[:1, 0], torch.log(gaps)])[:, None], mu[:, 1:]], 1)


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

    def _call(self, u):
        tril = vec_to_tril(u)
        return tril @ tril.transpose(-1, -2)

    def _inverse(self, y):
        d = y.shape[-1]
        tril = torch.linalg.cholesky(y)
        rows, cols, _ = tril_indices(d, y.device)
        u = tril[..., rows, cols]
        return torch.where(rows == cols, torch.log(tril[..., rows, cols].clamp_min(torch.finfo(y.dtype).tiny)), u)

    def log_abs_det_jacobian(self, u: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        d = _tril_size_to_d(u.shape[-1])
        _, _, diag = tril_indices(d, u.device)
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
