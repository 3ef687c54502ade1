"""Cholesky factors, precision factors and log-determinants: the package's only implementation.

Every density in the package is evaluated through triangular factors (see ``docs/maths.md``,
"Numerics"):

- the covariance factor  :math:`\\Sigma_k = L_k L_k^\\top` (lower triangular);
- the precision factor   :math:`U_k = L_k^{-\\top}`, so :math:`\\Sigma_k^{-1} = U_k U_k^\\top` and
  :math:`(x - \\mu)^\\top \\Sigma^{-1} (x - \\mu) = \\lVert (x - \\mu)^\\top U \\rVert^2`
  (scikit-learn's ``precisions_cholesky_``);
- :math:`\\log |\\Sigma_k| = 2 \\sum_d \\log L_{k,dd} = -2 \\sum_d \\log U_{k,dd}`.

:func:`checked_cholesky` is the one factorisation that reports *which* matrix of a stack failed.
The callers turn that index into the error that fits their setting: a collapsed component
(:func:`cholesky`, ``DegenerateComponentError``), a degenerate variational posterior
(``core.vb_posterior``), a sampled precision (``inference.nuts``).
"""

from __future__ import annotations

import functools

import torch

from .errors import DegenerateComponentError

__all__ = [
    "checked_cholesky",
    "cholesky",
    "precision_cholesky",
    "inverse_lower",
    "log_det_from_cholesky",
    "inverse_from_cholesky",
]


@functools.lru_cache(maxsize=16)
def _eye(d: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.eye(d, dtype=dtype)


def checked_cholesky(a: torch.Tensor, pivot_tol: float | None = None) -> tuple[torch.Tensor, int | None]:
    """Lower Cholesky factors of a stack ``a`` (..., D, D) and the flat index of the first matrix
    that is not (numerically) positive definite, or ``None``.

    Parameters
    ----------
    a : Tensor, shape (..., D, D)
        Symmetric matrices.
    pivot_tol : float, optional
        Also count a matrix as singular when a pivot :math:`L_{jj}^2 / a_{jj}` falls below
        ``pivot_tol``: coordinate j is then a linear function of the earlier ones to that
        relative precision (a scale-free test).

    Returns
    -------
    chol : Tensor, shape (..., D, D)
    bad : int or None
        Index of the first failing matrix in the flattened leading dimensions.
    """
    chol, info = torch.linalg.cholesky_ex(a)
    bad = (info != 0).reshape(-1)
    if pivot_tol is not None and not bool(bad.any()):
        pivots = torch.diagonal(chol, dim1=-2, dim2=-1).square() / torch.diagonal(a, dim1=-2, dim2=-1)
        bad = (pivots < pivot_tol).any(-1).reshape(-1)
    if not bool(torch.isfinite(a).all()):
        bad = bad | ~torch.isfinite(a).reshape(bad.shape[0], -1).all(-1)
    return chol, (int(torch.nonzero(bad).flatten()[0]) if bool(bad.any()) else None)


def cholesky(cov: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factors :math:`L_k` of covariances (K, D, D).

    Raises
    ------
    DegenerateComponentError
        Naming the first component whose covariance is not positive definite.
    """
    chol, bad = checked_cholesky(cov)
    if bad is not None:
        raise DegenerateComponentError(bad, "its Cholesky factorisation failed")
    return chol


def inverse_lower(chol: torch.Tensor) -> torch.Tensor:
    """:math:`L^{-1}` for lower-triangular factors (..., D, D), by a triangular solve."""
    eye = _eye(chol.shape[-1], chol.dtype).expand_as(chol)
    return torch.linalg.solve_triangular(chol, eye, upper=False)


def precision_cholesky(cov: torch.Tensor | None = None, *, chol: torch.Tensor | None = None) -> torch.Tensor:
    """Precision factors :math:`U_k = L_k^{-\\top}` (K, D, D), with :math:`\\Sigma_k^{-1} = U_k U_k^\\top`.

    Give either the covariances ``cov`` (factorised with :func:`cholesky`) or their factors ``chol``.
    """
    if chol is None:
        if cov is None:
            raise TypeError("precision_cholesky needs cov or chol")
        chol = cholesky(cov)
    return inverse_lower(chol).transpose(-1, -2)


def log_det_from_cholesky(chol: torch.Tensor) -> torch.Tensor:
    """:math:`\\log |A| = 2 \\sum_d \\log L_{dd}` for :math:`A = L L^\\top` (per matrix of the stack)."""
    return 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)


def inverse_from_cholesky(chol: torch.Tensor) -> torch.Tensor:
    """:math:`A^{-1}` from :math:`A = L L^\\top`, symmetrised (``torch.cholesky_inverse``)."""
    inv = torch.cholesky_inverse(chol)
    return 0.5 * (inv + inv.transpose(-1, -2))
