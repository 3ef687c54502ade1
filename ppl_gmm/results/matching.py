"""Matching components: the one Hungarian matcher, behind ``align`` and the NUTS relabelling.

Components of a mixture are exchangeable, so two fits (or two posterior draws) list the same
components in different orders (label switching). :func:`match_means` finds, for each reference
component, the component of the other mixture whose mean is closest in the reference's pooled
Mahalanobis metric (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``); the metric
makes the match independent of the data's units.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..core.params import GMMParams

if TYPE_CHECKING:
    from typing import Protocol, TypeAlias

    # GMMFit and VBFit import arviz_io, which imports this module: their types here are structural
    class _PointFit(Protocol):
        @property
        def params(self) -> GMMParams: ...

    class _PosteriorFit(Protocol):
        @property
        def posterior(self) -> Any: ...

    _Fitted: TypeAlias = GMMParams | _PointFit | _PosteriorFit

__all__ = ["match_means", "align", "relabel", "order_by_first_coordinate", "switch_fraction"]


def match_means(mu: np.ndarray, ref_mu: np.ndarray, ref_cov: np.ndarray | None = None) -> np.ndarray:
    """Permutations (M, K) matching each of M mixtures' means ``mu`` (M, K, D) to ``ref_mu`` (K, D):
    component ``perm[m, j]`` of mixture m goes to reference component j. Distances are squared
    Mahalanobis distances under the mean of ``ref_cov`` (K, D, D) (Euclidean when ``None``)."""
    from scipy.optimize import linear_sum_assignment

    d = ref_mu.shape[-1]
    pooled = np.eye(d) if ref_cov is None else np.asarray(ref_cov, dtype=np.float64).mean(0)
    prec = np.linalg.inv(pooled + 1e-12 * np.eye(d))
    diff = ref_mu[None, :, None, :] - mu[:, None, :, :]  # (M, K_ref, K_other, D)
    cost = np.einsum("mijd,de,mije->mij", diff, prec, diff)
    return np.stack([linear_sum_assignment(c)[1] for c in cost])


def _means_and_cov(obj) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(mu (K, D), cov (K, D, D) or None) of a GMMParams, a GMMFit or a VB-style fit."""
    if isinstance(obj, GMMParams):
        return obj.mu, obj.cov
    if hasattr(obj, "params") and isinstance(obj.params, GMMParams):
        return obj.params.mu, obj.params.cov
    post = getattr(obj, "posterior", None)
    if post is not None and hasattr(post, "m"):
        return torch.as_tensor(post.m, dtype=torch.float64), None
    raise TypeError(f"align() needs GMMParams or a fit, got {type(obj).__name__}")


def align(reference: _Fitted, other: _Fitted) -> torch.Tensor:
    """The permutation ``perm`` (LongTensor (K,)) with ``other.params.permute(perm)`` lined up
    with ``reference`` (either a GMMParams, a GMMFit or a VBFit): :func:`match_means` of the means,
    distances in the reference's pooled covariance."""
    mu_r, cov_r = _means_and_cov(reference)
    mu_o, _ = _means_and_cov(other)
    if mu_r.shape != mu_o.shape:
        raise ValueError(f"cannot align {tuple(mu_o.shape)} components/features to {tuple(mu_r.shape)}")
    ref_cov = None if cov_r is None else cov_r.double().numpy()
    perm = match_means(mu_o.double().numpy()[None], mu_r.double().numpy(), ref_cov)[0]
    return torch.as_tensor(perm, dtype=torch.long)


def order_by_first_coordinate(mu: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Components sorted by the first coordinate of their means (a canonical reference order)."""
    order = np.argsort(mu[:, 0], kind="stable")
    return mu[order], cov[order]


def relabel(
    alpha: np.ndarray, mu: np.ndarray, cov: np.ndarray, ref_mu: np.ndarray, ref_cov: np.ndarray, passes: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Relabel draws alpha (M, K), mu (M, K, D), cov (M, K, D, D) to a reference (the NUTS label
    rule): match every draw to (ref_mu, ref_cov) ordered by the first coordinate; then make the
    posterior mean of the relabelled draws the reference and match again (``passes`` in all).
    Returns (alpha, mu, cov, perms) relabelled."""
    ref_mu, ref_cov = order_by_first_coordinate(np.asarray(ref_mu), np.asarray(ref_cov))
    rows = np.arange(mu.shape[0])[:, None]
    perms = np.empty(mu.shape[:2], dtype=np.int64)
    a, m, c = alpha, mu, cov
    for _ in range(passes):
        perms = match_means(mu, ref_mu, ref_cov)
        a, m, c = alpha[rows, perms], mu[rows, perms], cov[rows, perms]
        ref_mu, ref_cov = order_by_first_coordinate(m.mean(0), c.mean(0))
    return a, m, c, perms


def switch_fraction(perms: np.ndarray) -> float:
    """Fraction of draws (perms: chain, draw, K) whose relabelling differs from their chain's most
    frequent one."""
    total = 0
    for chain in perms:
        _, counts = np.unique(chain, axis=0, return_counts=True)
        total += chain.shape[0] - counts.max()
    return float(total / (perms.shape[0] * perms.shape[1]))
