"""Initial parameters Θ₀ (and the initial responsibilities γ₀ = e_step(x, Θ₀)).

``init="kmeans++"``: seeded k-means++ centres (Arthur & Vassilvitskii 2007, the
greedy variant scikit-learn uses), every point assigned to its nearest centre,
then one M-step (eq. 21/28) from those hard responsibilities.
``init="random"``: responsibilities drawn row-wise from a flat Dirichlet, then
one M-step.  ``init=GMMParams(...)``: used as given (shapes checked).

Both run in the coordinates x' = x / s of ``validation.data_scale`` (s = 1, nothing changes, for
data at ordinary scales), so squared distances and moments neither overflow nor underflow for data
at 1e±150; data whose covariances float64 cannot hold are refused there, before any work.
"""

from __future__ import annotations

import math
from typing import NoReturn

import numpy as np
import torch

from .gmm import e_step, m_step
from .params import GMMParams
from .validation import INITS, data_scale

__all__ = ["kmeans_plusplus", "nearest_centre", "initial_params", "initial_responsibilities", "INIT_REG_COVAR", "INITS"]

INIT_REG_COVAR = 1e-6  # fit_cavi's default: Θ₀ of fit_vb / fit_map / fit_svi_bayes is fit_cavi's default Θ₀


def kmeans_plusplus(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Greedy k-means++ centres (K, D) drawn with ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    xn = x.double().numpy()
    n = xn.shape[0]
    xn = xn - xn.mean(0)  # centred distances: no cancellation for data far from the origin
    sq_norms = (xn * xn).sum(1)
    n_trials = 2 + int(math.log(k))
    centres = np.empty((k, xn.shape[1]))
    first = rng.integers(n)
    centres[0] = xn[first]
    closest = np.maximum(sq_norms - 2 * xn @ xn[first] + sq_norms[first], 0.0)
    for c in range(1, k):
        pot = closest.sum()
        if not 0 < pot < math.inf:  # 0, or NaN / inf from squared distances that overflowed
            _no_centre(x, k, c, float(pot))
        cand = np.searchsorted(np.cumsum(closest), rng.uniform(size=n_trials) * pot)
        cand = np.minimum(cand, n - 1)
        d_cand = np.maximum(sq_norms[cand, None] - 2 * xn[cand] @ xn.T + sq_norms[None], 0.0)
        d_cand = np.minimum(closest[None], d_cand)
        best = int(np.argmin(d_cand.sum(1)))
        closest = d_cand[best]
        centres[c] = xn[cand[best]]
    return torch.as_tensor(centres + x.double().numpy().mean(0), dtype=x.dtype)


def _no_centre(x: torch.Tensor, k: int, c: int, pot: float) -> NoReturn:
    """Why k-means++ found no point for centre ``c``: fewer distinct points than k, or (the points
    being distinct) squared distances that float64 cannot resolve at the data's scale."""
    distinct = len(np.unique(x.double().numpy(), axis=0))  # the data as given, not centred
    if distinct < k:
        raise ValueError(f"k = {k} is larger than the number of distinct data points ({distinct}); use k <= {distinct}")
    raise ValueError(
        f"k-means++ found no point for centre {c + 1} of {k} although the data have {distinct} distinct points: "
        f"their squared distances to the chosen centres are {'not finite' if not np.isfinite(pot) else 'all 0'} "
        "in floating point (distinct points closer than round-off, or data whose squares overflow or underflow); "
        "rescale the data, or use init='random'"
    )


def nearest_centre(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index (N,) of the nearest of ``centres`` (K, D) for every row of ``x`` (distances after centring)."""
    xc = x - x.mean(0)
    cc = centres - x.mean(0)
    d2 = (xc * xc).sum(1, keepdim=True) - 2 * xc @ cc.T + (cc * cc).sum(1)
    return torch.argmin(d2, dim=1)


def initial_params(
    x: torch.Tensor,
    k: int,
    init: str | GMMParams,
    seed: int,
    covariance_type: str = "full",
    reg_covar: float = 0.0,
) -> GMMParams:
    """Θ₀ for a fit; ``x`` is validated (N, D) data, ``reg_covar`` in its units.

    k-means++ and the M-step run in x' = x / s (``validation.data_scale``, which refuses data whose
    covariances are not representable) and Θ₀ is mapped back: μ = s μ', Σ = s² Σ' (exact)."""
    n, d = x.shape
    if isinstance(init, GMMParams):
        if init.k != k or init.d != d:
            raise ValueError(
                f"init parameters have K = {init.k}, D = {init.d} but the fit asks for K = {k} on D = {d} data"
            )
        return init.to(x.dtype)
    scale = data_scale(x, reg_covar)
    if not scale.is_identity:
        xs, reg = scale.down(x), scale.reg_down(reg_covar)
        return scale.params_up(initial_params(xs, k, init, seed, covariance_type, reg))
    if init == "kmeans++":
        labels = nearest_centre(x, kmeans_plusplus(x, k, seed))
        gamma = torch.nn.functional.one_hot(labels, k).to(x.dtype)
    elif init == "random":
        rng = np.random.default_rng(seed)
        gamma = torch.as_tensor(rng.dirichlet(np.ones(k), size=n), dtype=x.dtype)
    else:
        raise ValueError(f"unknown init {init!r}; use 'kmeans++', 'random' or a GMMParams")
    return m_step(x, gamma, covariance_type=covariance_type, reg_covar=reg_covar)


def initial_responsibilities(
    x: torch.Tensor, k: int, init: str | GMMParams = "kmeans++", seed: int = 0
) -> torch.Tensor:
    """γ₀ = e_step(x, Θ₀) (N, K) with fit_cavi's default Θ₀ (reg_covar = ``INIT_REG_COVAR``): the
    start of ``fit_vb`` and ``fit_svi_bayes``. ``x`` is validated (N, D) data."""
    return e_step(x, initial_params(x, k, init, seed, "full", INIT_REG_COVAR))
