"""The checks behind ``core.sources``: frequency weights, the dtype / shape / ``.npy`` header of
chunked data, and the one validation pass of the chunked kinds (finiteness with the global row index,
column min/max, the weighted mean), all before any work."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from .validation import DataScale, range_scale

__all__ = [
    "DataSummary",
    "check_sample_weight",
    "check_weight_shape",
    "check_weight_values",
    "check_dtype",
    "check_shape",
    "open_npy",
    "BlockStats",
    "block_stats",
    "reduce_stats",
    "dask_chunk_stats",
]


@dataclass(frozen=True)
class DataSummary:
    """What the validation pass learns about the data, computed once.

    ``mean`` (D,) float64 is the weighted column mean Σ_i w_i x_i / Σ_i w_i; ``lo``/``hi`` (D,)
    (the source's dtype) the column minima/maxima; ``n`` the rows; ``total_weight`` Σ_i w_i (N when
    unweighted)."""

    n: int
    total_weight: float
    mean: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor

    def scale(self, reg_covar: float = 0.0, *, scatter: bool = False) -> DataScale:
        """``core.validation.data_scale`` from the column ranges (identical to it on the whole data;
        with ``scatter=True`` the sums run over Σ_i w_i rows)."""
        return range_scale(self.lo, self.hi, self.total_weight, reg_covar, scatter=scatter)


# --- weights ---------------------------------------------------------------------------------------
def check_sample_weight(sample_weight: Any, n: int, name: str = "sample_weight") -> torch.Tensor:
    """In-memory frequency weights as an (N,) float64 tensor, or one clear error naming ``name``:
    1-D, length ``n``, real numbers, finite, ≥ 0, with a positive total."""
    if isinstance(sample_weight, torch.Tensor):
        w = sample_weight.detach().cpu()
        if w.is_complex() or w.dtype == torch.bool:
            raise TypeError(f"{name} must hold real numbers, got a tensor of dtype {w.dtype}")
        w = w.to(torch.float64)
    else:
        try:
            arr = np.asarray(sample_weight)
        except Exception as err:
            raise TypeError(f"{name} could not be read as a numeric array: {err}") from None
        if arr.dtype.kind not in "iuf":
            raise TypeError(f"{name} must hold real numbers (frequency weights), got dtype {arr.dtype}")
        w = torch.as_tensor(np.array(arr, dtype=np.float64))
    check_weight_shape(tuple(w.shape), n, name)
    check_weight_values(w.numpy(), 0, name)
    total = float(w.sum())
    if not total > 0:
        raise ValueError(f"{name} sums to {total:g}: at least one row needs a positive weight")
    if not math.isfinite(total):
        raise ValueError(f"{name} sums to {total:g}, past float64's range: rescale the weights")
    return w


def check_weight_shape(shape: tuple, n: int, name: str) -> None:
    if len(shape) != 1:
        raise ValueError(f"{name} must be 1-D with one weight per row (N = {n}); got shape {shape}")
    if shape[0] != n:
        raise ValueError(f"{name} has {shape[0]} entries but the data have N = {n} rows: give one weight per row")


def check_weight_values(w: np.ndarray, start: int, name: str) -> None:
    """Finite and ≥ 0, naming the first offending global row."""
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        i = int(np.argmax(bad))
        what = "NaN" if np.isnan(w[i]) else ("infinite" if not np.isfinite(w[i]) else "negative")
        raise ValueError(
            f"{name} has {int(bad.sum())} invalid entr{'y' if bad.sum() == 1 else 'ies'} (first: row {start + i}, "
            f"{what}: {w[i]!r}); weights are frequencies: finite and >= 0"
        )


def check_dtype(dt: Any, name: str, what: str) -> np.dtype:
    """float32 / float64 / an integer type; anything else refused naming it."""
    try:
        dt = np.dtype(dt)
    except TypeError:
        raise TypeError(f"{name} ({what}) has dtype {dt!r}, not a numpy dtype: convert it to float64") from None
    if dt.kind in "iu" or (dt.kind == "f" and dt.itemsize in (4, 8)):
        return dt
    kind = {
        "U": "strings",
        "S": "bytes",
        "O": "Python objects",
        "b": "booleans",
        "c": "complex numbers",
        "V": "records",
        "M": "dates",
        "m": "time spans",
    }
    raise TypeError(
        f"{name} ({what}) holds {kind.get(dt.kind, 'values')} (dtype {dt}); it must be float32, float64 "
        "or an integer type: convert and save it again"
    )


def check_shape(shape: tuple, name: str, what: str) -> tuple[int, int]:
    if len(shape) not in (1, 2):
        raise ValueError(
            f"{name} ({what}) must be 1-D (N,) or 2-D (N, D); got {len(shape)}-D shape {tuple(shape)} "
            "(reshape it to (N, D) first)"
        )
    n = shape[0]
    d = shape[1] if len(shape) == 2 else 1
    if isinstance(n, float) and math.isnan(n):
        raise ValueError(f"{name} ({what}) has unknown chunk sizes: call x.compute_chunk_sizes() first")
    if n == 0:
        raise ValueError(f"{name} ({what}) is empty: it has no rows (N = 0)")
    if d == 0:
        raise ValueError(f"{name} ({what}) has no columns (D = 0)")
    return int(n), int(d)


def open_npy(path: str | os.PathLike, name: str) -> np.memmap:
    """Check a ``.npy`` header (magic, dtype, shape, order) and memory-map the file read-only."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise ValueError(f"{name} = {p!r} is not an existing .npy file (a str or path names a .npy file)")
    fmt = np.lib.format
    try:
        with open(p, "rb") as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, fortran, dt = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dt = fmt.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
    except OSError as err:
        raise ValueError(f"{name}: cannot read {p!r}: {err}") from None
    except ValueError as err:
        raise ValueError(f"{name}: {p!r} is not a readable .npy file ({err}); save the data with numpy.save") from None
    what = f"the .npy file {p!r}"
    check_dtype(dt, name, what)
    check_shape(shape, name, what)
    if fortran and len(shape) == 2 and shape[1] > 1:
        raise ValueError(
            f"{name} ({what}) is stored in Fortran (column-major) order, so a block of rows is scattered over "
            "the whole file; save it in C order: numpy.save(path, numpy.ascontiguousarray(a))"
        )
    mm = np.load(p, mmap_mode="r")
    if not isinstance(mm, np.memmap):  # pragma: no cover - np.load of a .npy with mmap_mode
        raise ValueError(f"{name}: {p!r} could not be memory-mapped")
    return mm


# --- the validation pass --------------------------------------------------------------------------
class BlockStats(NamedTuple):
    start: int
    bad_rows: list  # global indices (first 10) of rows with NaN/inf
    n_bad: int
    lo: np.ndarray
    hi: np.ndarray
    sw: float  # Σ w
    swx: np.ndarray  # Σ w x


def block_stats(xb: np.ndarray, wb: np.ndarray | None, start: int, name: str, check_w: bool) -> BlockStats:
    """One block's share of the pass: non-finite rows, min/max, Σ w, Σ w x (float64; torch's column
    reductions, numpy's are strided and ~10x slower on narrow rows)."""
    if check_w and wb is not None:
        check_weight_values(wb, start, "sample_weight")
    if not np.isfinite(xb).all():  # one flat pass; the rows only when something is wrong
        bad = np.flatnonzero(~np.isfinite(xb).all(axis=1))
        return BlockStats(start, [start + int(i) for i in bad[:10]], len(bad), xb[0], xb[0], 0.0, xb[0])
    t = torch.from_numpy(xb)
    lo, hi = torch.aminmax(t, dim=0)
    if wb is None:
        sw, swx = float(len(xb)), t.sum(0)
    else:
        w = torch.from_numpy(wb)
        sw, swx = float(w.sum()), w @ t
    return BlockStats(start, [], 0, lo.numpy(), hi.numpy(), sw, swx.numpy())


def reduce_stats(parts: list[BlockStats], n: int, target: torch.dtype, name: str) -> DataSummary:
    bad = [p for p in parts if p.n_bad]
    if bad:
        rows = [r for p in bad for r in p.bad_rows][:10]
        total = sum(p.n_bad for p in bad)
        shown = ", ".join(str(r) for r in rows) + (" ..." if total > len(rows) else "")
        raise ValueError(
            f"{name} has NaN or infinite values in {total} row(s): {shown} (drop or impute those rows first)"
        )
    sw = math.fsum(p.sw for p in parts)
    if not sw > 0 or not math.isfinite(sw):
        raise ValueError(f"sample_weight sums to {sw:g}: it needs a positive, finite total")
    swx = np.sum([p.swx for p in parts], axis=0)
    lo = np.min([p.lo for p in parts], axis=0)
    hi = np.max([p.hi for p in parts], axis=0)
    return DataSummary(
        n, sw, torch.as_tensor(swx / sw), torch.as_tensor(lo, dtype=target), torch.as_tensor(hi, dtype=target)
    )


def dask_chunk_stats(xc: Any, wc: Any, start: int, name: str, check_w: bool) -> BlockStats:
    xb = np.asarray(xc, dtype=np.float64)
    xb = xb.reshape(xb.shape[0], -1)
    wb = None if wc is None else np.asarray(wc, dtype=np.float64)
    return block_stats(xb, wb, start, name, check_w)
