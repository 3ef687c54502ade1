"""The Gaussian log density and the E-step normalisation: the package's only implementations.

- :func:`mahalanobis_sq` — :math:`\\lVert (x_i - \\mu_k)^\\top U_k \\rVert^2` for precision factors
  :math:`U_k` (``core.linalg``), the difference formed first, in row blocks;
- :func:`log_gaussian_prec` — the D-dimensional generalisation of the bracket of eq. 15,
  :math:`\\log \\mathcal N(x \\mid \\mu, \\Sigma) = -\\tfrac D2 \\log 2\\pi - \\tfrac12 \\log|\\Sigma|
  - \\tfrac12 (x-\\mu)^\\top \\Sigma^{-1} (x-\\mu)`;
- :func:`normalise_log` — eq. 20 in log space: :math:`\\gamma_{ik} = \\exp(\\ell_{ik} - \\mathrm{lse}_i)`
  with :math:`\\mathrm{lse}_i = \\log \\sum_k \\exp \\ell_{ik}` (the terms of eq. 26), computed as
  :math:`\\exp(\\ell_{ik} - \\max_j \\ell_{ij}) / \\sum_k \\exp(\\ell_{ik} - \\max_j \\ell_{ij})`, so every row
  is on the simplex to round-off (~1e-16) however far the point is from every component.

Every responsibility in the package (``e_step``, ``predict_proba``, the VB E-step, SVI's local
step) goes through :func:`normalise_log`. The fused CAVI kernel (``inference._engine``) keeps a
blocked, transposed form of the same two formulas and is tested against these.
"""

from __future__ import annotations

import math
from typing import Literal, overload

import torch

from .linalg import log_det_from_cholesky

__all__ = ["BLOCK_ROWS", "mahalanobis_sq", "log_gaussian_prec", "normalise_log", "logsumexp_rows"]

BLOCK_ROWS = 1 << 12  # rows per block: temporaries stay a few MB whatever N is
LOG_2PI = math.log(2 * math.pi)


def mahalanobis_sq(x: torch.Tensor, mu: torch.Tensor, prec_chol: torch.Tensor) -> torch.Tensor:
    """Squared Mahalanobis distances (N, K): :math:`\\lVert (x_i - \\mu_k)^\\top U_k \\rVert^2`.

    Parameters
    ----------
    x : Tensor, shape (N, D)
    mu : Tensor, shape (K, D)
    prec_chol : Tensor, shape (K, D, D)
        Precision factors :math:`U_k` with :math:`\\Sigma_k^{-1} = U_k U_k^\\top`.

    Notes
    -----
    The difference :math:`x_i - \\mu_k` is formed before the triangular product, so data far
    from the origin (a mean of 1e6) lose no digits to cancellation.
    """
    n = x.shape[0]
    out = torch.empty(n, mu.shape[0], dtype=x.dtype, device=x.device)
    for s in range(0, n, BLOCK_ROWS):
        diff = x[s : s + BLOCK_ROWS, None, :] - mu[None]  # (b, K, D)
        y = torch.einsum("bkd,kde->bke", diff, prec_chol)
        out[s : s + BLOCK_ROWS] = (y * y).sum(-1)
    return out


def log_gaussian_prec(x: torch.Tensor, mu: torch.Tensor, prec_chol: torch.Tensor) -> torch.Tensor:
    """:math:`\\log \\mathcal N(x_i \\mid \\mu_k, \\Sigma_k)` as an (N, K) matrix (eq. 15's bracket, D-dim).

    ``prec_chol`` (K, D, D) are the precision factors :math:`U_k` (``linalg.precision_cholesky``);
    :math:`-\\tfrac12 \\log|\\Sigma_k| = \\sum_d \\log U_{k,dd}`.
    """
    half_log_det_prec = 0.5 * log_det_from_cholesky(prec_chol)  # −½ log|Σ_k|
    out = mahalanobis_sq(x, mu, prec_chol).mul_(-0.5)
    return out.add_(half_log_det_prec - 0.5 * x.shape[1] * LOG_2PI)  # in place: one (N, K) array


@overload
def normalise_log(
    wlp: torch.Tensor, dim: int = 1, *, entropy: Literal[False] = False
) -> tuple[torch.Tensor, torch.Tensor]: ...


@overload
def normalise_log(
    wlp: torch.Tensor, dim: int = 1, *, entropy: Literal[True]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


def normalise_log(
    wlp: torch.Tensor, dim: int = 1, *, entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalise log weights along ``dim``: the E-step, eq. 20.

    Parameters
    ----------
    wlp : Tensor
        :math:`\\ell_{ik} = \\log \\alpha_k + \\log \\mathcal N(x_i \\mid \\mu_k, \\Sigma_k)` (or the VB
        :math:`\\ln \\rho_{ik}`, PRML 10.46), components along ``dim``. Overwritten in place.
    dim : int
        The component axis (1 for (N, K), 0 for the transposed (K, N) layout).
    entropy : bool
        Also return :math:`H = -\\sum_{ik} \\gamma_{ik} \\log \\gamma_{ik}` (second term of eq. 18),
        computed without logarithms of :math:`\\gamma` (then one extra array of ``wlp``'s size).

    Returns
    -------
    gamma : Tensor
        Responsibilities, rows (along ``dim``) on the simplex to ~1e-16.
    lse : Tensor
        :math:`\\mathrm{lse}_i = \\log \\sum_k \\exp \\ell_{ik}`; :math:`\\sum_i \\mathrm{lse}_i` is eq. 26.
    H : Tensor, only with ``entropy=True``
    """
    top = wlp.amax(dim, keepdim=True)
    z = wlp.sub_(top)  # ℓ_ik − max_j ℓ_ij ≤ 0
    if not entropy:
        gamma = z.exp_()
    else:
        # ℓ_ik = −∞ (α_k = 0) becomes the most negative float: exp gives the same 0, and γ_ik z_ik = −0
        # instead of 0 · ∞, so Σ γ z is one fused dot product (no temporaries)
        z.clamp_(min=torch.finfo(z.dtype).min)
        gamma = torch.exp(z)
    total = gamma.sum(dim, keepdim=True)
    gamma.div_(total)  # eq. 20
    log_total = total.log_()
    lse = (top + log_total).squeeze(dim)  # the terms of eq. 26
    if not entropy:
        return gamma, lse
    # H = −Σ γ log γ with log γ_ik = z_ik − log Σ_k e^{z_ik}
    return gamma, lse, log_total.sum() - torch.dot(gamma.reshape(-1), z.reshape(-1))


def logsumexp_rows(wlp: torch.Tensor) -> torch.Tensor:
    """:math:`\\log \\sum_k \\exp \\ell_{ik}` per row (N,), in row blocks (no (N, K) temporary).
    Differentiable: when ``wlp`` requires a gradient, one ``torch.logsumexp`` (no ``out=``)."""
    if wlp.requires_grad:
        return torch.logsumexp(wlp, dim=1)
    out = torch.empty(wlp.shape[0], dtype=wlp.dtype, device=wlp.device)
    for s in range(0, wlp.shape[0], BLOCK_ROWS):
        torch.logsumexp(wlp[s : s + BLOCK_ROWS], dim=1, out=out[s : s + BLOCK_ROWS])
    return out
