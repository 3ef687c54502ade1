"""Row-wise evaluation of a fitted model over any data source (``core.sources``): the prediction
methods of ``GMMFit`` and ``VBFit``.

A fitted model is given by its **log weights** ℓ(x) (b, D) → (b, K), one row per data row:

- point estimates: ℓ_ik = log α_k + log N(x_i | μ_k, Σ_k), the bracket of eq. 15
  (:func:`gmm_log_weights`); γ_ik = eq. 20 and lse_i = log Σ_k exp ℓ_ik, the terms of eq. 26;
- variational Bayes: ln ρ_ik of PRML 10.46 for γ, and the predictive density PRML 10.81 per row.

Every per-row output is computed block by block and joined:

=========  ==================================================================================
kind       what :func:`map_rows` returns
=========  ==================================================================================
"memory"   the function applied to the whole tensor (as before: bit-identical)
"npy",     a tensor, computed in blocks of :data:`EVAL_ROWS` rows (the (N,) or (N, K) result is
"sliced"   what the caller asked for; the data are never held whole)
"dask"     a lazy ``dask.array.Array`` with the source's row chunks (``map_blocks``: each chunk is
           evaluated where it lives, with the fitted Θ shipped to the workers)
=========  ==================================================================================

Sums over rows (:func:`row_total`) are weighted by the source's frequency weights,
Σ_i w_i f(x_i), and return Σ_i w_i alongside (N when unweighted), so score = Σ w lse / Σ w and
BIC = −2 Σ w lse + p log Σ w.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch

from .gaussian import log_gaussian_prec, logsumexp_rows, normalise_log
from .gmm import weighted_sum
from .params import GMMParams
from .sources import Source

__all__ = [
    "EVAL_ROWS",
    "RowFn",
    "gmm_log_weights",
    "proba_from",
    "label_from",
    "lse_from",
    "map_rows",
    "row_total",
]

EVAL_ROWS = 1 << 16  #: rows per block for the chunked kinds

#: A function of a (b, D) block of rows returning (b,) or (b, K) per-row values.
RowFn = Callable[[torch.Tensor], torch.Tensor]


def _gmm_log_weights(params: GMMParams, x: torch.Tensor) -> torch.Tensor:
    x = x.to(params.dtype)
    chol = params.precision_cholesky.to(x.device)
    return log_gaussian_prec(x, params.mu.to(x.device), chol).add_(torch.log(params.alpha.to(x.device)))  # eq. 15


def gmm_log_weights(params: GMMParams) -> RowFn:
    """ℓ(x)_ik = log α_k + log N(x_i | μ_k, Σ_k) (the bracket of eq. 15), as a picklable function."""
    return partial(_gmm_log_weights, params)


def _proba(log_weights: RowFn, x: torch.Tensor) -> torch.Tensor:
    return normalise_log(log_weights(x))[0]  # eq. 20


def _label(log_weights: RowFn, x: torch.Tensor) -> torch.Tensor:
    return torch.argmax(log_weights(x), dim=1)


def _lse(log_weights: RowFn, x: torch.Tensor) -> torch.Tensor:
    return logsumexp_rows(log_weights(x))  # eq. 26 per row


def proba_from(log_weights: RowFn) -> RowFn:
    """γ_ik = exp(ℓ_ik − lse_i), eq. 20, normalised in log space (``gaussian.normalise_log``)."""
    return partial(_proba, log_weights)


def label_from(log_weights: RowFn) -> RowFn:
    """argmax_k ℓ_ik, the most responsible component (int64)."""
    return partial(_label, log_weights)


def lse_from(log_weights: RowFn) -> RowFn:
    """lse_i = log Σ_k exp ℓ_ik, the terms of eq. 26."""
    return partial(_lse, log_weights)


def _numpy_block(fn: RowFn, dtype: torch.dtype, device: torch.device, chunk: np.ndarray) -> np.ndarray:
    """``fn`` on one Dask chunk (numpy in, numpy out), run where the chunk lives."""
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    x = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np_dtype).reshape(chunk.shape[0], -1)).to(device)
    return fn(x).cpu().numpy()


def map_rows(source: Source, fn: RowFn, k: int | None = None, *, integer: bool = False) -> Any:
    """``fn`` over every row of ``source``: (N,) when ``k`` is None, else (N, k).

    A tensor for kinds memory / npy / sliced (block by block for the last two); a lazy
    ``dask.array.Array`` with the source's row chunks for kind "dask". ``integer``: the values are
    int64 (labels), else the source's dtype."""
    if source.kind == "memory":
        x = source.tensor()
        assert x is not None
        return fn(x)
    if source.kind == "dask":
        arr = source.dask_array
        out_dtype = np.int64 if integer else (np.float64 if source.dtype == torch.float64 else np.float32)
        chunks = (arr.chunks[0],) if k is None else (arr.chunks[0], (k,))
        block = partial(_numpy_block, fn, source.dtype, source.device)
        if k is None:
            return arr.map_blocks(block, dtype=out_dtype, chunks=chunks, drop_axis=1)
        return arr.map_blocks(block, dtype=out_dtype, chunks=chunks)
    parts = [fn(blk.x) for blk in source.blocks(EVAL_ROWS)]
    return torch.cat(parts)


def row_total(source: Source, fn: RowFn) -> tuple[float, float]:
    """(Σ_i w_i f_i, Σ_i w_i) for a per-row scalar ``fn`` (w_i = 1 when unweighted); rows of weight
    0 contribute 0 whatever f_i is. For Dask the chunks' partial sums are computed where they live."""
    if source.kind == "memory":
        f = fn(source.tensor())  # type: ignore[arg-type]
        w = source.weights_tensor()
        if w is None:
            return float(f.sum()), float(source.n)
        return float(weighted_sum(f, w.to(f))), source.total_weight
    if source.kind == "dask":
        f = map_rows(source, fn)
        if source.dask_weights is None:
            return float(f.sum().compute()), float(source.n)
        import dask.array as da

        w = source.dask_weights
        return float(da.where(w > 0, w * f, 0.0).sum().compute()), source.total_weight
    total = 0.0
    for blk in source.blocks(EVAL_ROWS):
        f = fn(blk.x)
        if blk.w is None:
            total += float(f.sum())
        else:
            total += float(weighted_sum(f, blk.w.to(f)))
    return total, (float(source.n) if not source.weighted else source.total_weight)
