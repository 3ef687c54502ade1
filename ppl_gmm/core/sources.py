"""Data sources: one interface over in-memory, memory-mapped, sliceable and Dask data (issue 10).

Every closed-form fit, the prediction methods and the command line read their data through a
:class:`Source`, built (and validated, **before any work**) by :func:`as_source`:

==========  ====================================================================================
kind        what ``x`` is
==========  ====================================================================================
"memory"    a numpy array, torch tensor, nested list, pandas object — validated by
            ``core.validation.as_data`` exactly as before (in-memory behaviour is bit-identical)
"npy"       a ``.npy`` path (``str`` / ``os.PathLike``) or a ``numpy.memmap``: the header is checked
            (``numpy.lib.format``) and the file memory-mapped read-only, never loaded whole
"sliced"    any object with a 1-D/2-D ``shape``, a ``dtype`` and row slicing ``x[a:b]`` (an h5py or
            zarr dataset)
"dask"      a ``dask.array.Array`` chunked along rows only (``dask`` is imported only then)
==========  ====================================================================================

Reading::

    src = as_source(x, sample_weight)          # a Source is returned as is
    for blk in src.blocks(rows=65536):         # consecutive Block(start, x, w), in order
        ...                                    # blk.x (b, D) in src.dtype on src.device; blk.w (b,) float64 or None
    src.read(a, b); src.take(sorted_idx)       # one block; rows at sorted indices (the init sample)
    src.tensor(), src.weights_tensor()         # the whole (N, D) / (N,) tensors for kind "memory", else None
    src.summary                                # DataSummary: n, total weight, weighted mean, column min/max
    src.dask_array, src.dask_weights           # kind "dask": (N, D) and (N,) arrays with the same row chunks

Weights are **frequencies**: a row of weight w counts as w copies of that row, so every statistic is
Σ_i w_i (...) and N becomes Σ_i w_i (:attr:`Source.total_weight`). They are checked (1-D, length N,
finite, ≥ 0, positive total) by :func:`check_sample_weight`, the one rule for every function that
takes ``sample_weight``.

For the chunked kinds one validation pass (at construction) reads every block once: finiteness
(an error names the global row index), column min/max and the weighted mean (:class:`DataSummary`),
so a NaN in the last chunk is refused before a fit starts. Block reads copy only that block (peak
memory O(rows · D)). For Dask the pass runs per chunk where the chunk lives (``dask.compute`` on the
chunks' delayed objects: the active scheduler, e.g. a ``distributed.Client``).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch

from .source_checks import (
    DataSummary,
    block_stats,
    check_dtype,
    check_sample_weight,
    check_shape,
    check_weight_shape,
    dask_chunk_stats,
    open_npy,
    reduce_stats,
)
from .validation import as_data, check_device, check_int, resolve_dtype

__all__ = [
    "Block",
    "DataSummary",
    "Source",
    "as_source",
    "check_sample_weight",
    "is_dask_array",
    "VALIDATION_BYTES",
]

#: Bytes of (float64) data per block of the validation pass of the chunked kinds.
VALIDATION_BYTES = 1 << 23


class Block(NamedTuple):
    """Consecutive rows ``start:start + len(x)`` of a source (for :meth:`Source.take`, ``start``
    is the first index taken)."""

    start: int  #: global index of the first row
    x: torch.Tensor  #: (b, D), the source's dtype and device
    w: torch.Tensor | None  #: (b,) float64 frequency weights; None when unweighted


def is_dask_array(x: Any) -> bool:
    """True for a ``dask.array.Array`` (without importing dask unless ``x`` comes from it)."""
    if not type(x).__module__.startswith("dask."):
        return False
    import dask.array as da

    return isinstance(x, da.Array)


# --- readers: rows [a, b) as numpy ----------------------------------------------------------------
class _Reader:
    """Rows of one array-like as numpy (copies of exactly the rows asked for)."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def rows(self, a: int, b: int) -> np.ndarray:
        return np.array(self.obj[a:b])

    def pick(self, idx: np.ndarray) -> np.ndarray:
        try:  # numpy / h5py (increasing indices) / zarr fancy indexing reads only those rows
            out = np.array(self.obj[idx])
            if out.shape[:1] == idx.shape:
                return out
        except Exception:
            pass
        return np.concatenate([self.rows(int(i), int(i) + 1) for i in idx]) if len(idx) else self.rows(0, 0)


class _MemmapReader(_Reader):
    """Rows of a ``numpy.memmap``, copied, after which the pages they came from are handed back to
    the kernel (``madvise(MADV_DONTNEED)``; they stay in the page cache). Without this every page a
    pass touches stays mapped into the process, so a pass over a 1.6 GB file would add 1.6 GB to
    the resident set; with it the resident set holds about one block."""

    def __init__(self, obj: np.memmap) -> None:
        super().__init__(obj)
        mm = getattr(obj, "_mmap", None)
        self._map = mm if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED") else None
        if self._map is not None:
            base = np.frombuffer(self._map, dtype=np.uint8).ctypes.data  # the mapping's first byte
            self._start = obj.ctypes.data - base  # the array's first byte within the mapping
            self._row = obj.strides[0] if obj.ndim else obj.itemsize
            self._size = len(self._map)

    def _release(self, a: int, b: int) -> None:
        if self._map is None or b <= a:
            return
        lo = self._start + a * self._row
        hi = min(self._start + b * self._row, self._size)
        lo -= lo % mmap.PAGESIZE
        if hi > lo:
            try:
                self._map.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
            except (OSError, ValueError):  # not supported here: the pages simply stay mapped
                self._map = None

    def rows(self, a: int, b: int) -> np.ndarray:
        out = super().rows(a, b)
        self._release(a, b)
        return out

    def pick(self, idx: np.ndarray) -> np.ndarray:
        out = super().pick(idx)
        if len(idx):
            self._release(int(idx.min()), int(idx.max()) + 1)
        return out


class _DaskReader(_Reader):
    def rows(self, a: int, b: int) -> np.ndarray:
        return np.asarray(self.obj[a:b].compute())

    def pick(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.obj[idx].compute())


class Source:
    """Data of N rows and D columns, read in consecutive row blocks (module docstring)."""

    kind: str
    n: int
    d: int
    dtype: torch.dtype
    device: torch.device
    weighted: bool
    total_weight: float

    def __init__(
        self,
        kind: str,
        n: int,
        d: int,
        dtype: torch.dtype,
        device: torch.device,
        *,
        x: torch.Tensor | None = None,
        w: torch.Tensor | None = None,
        reader: _Reader | None = None,
        w_reader: _Reader | None = None,
        summary: DataSummary | None = None,
        dask_array: Any = None,
        dask_weights: Any = None,
    ) -> None:
        self.kind, self.n, self.d, self.dtype, self.device = kind, n, d, dtype, device
        self._x, self._w, self._reader, self._w_reader = x, w, reader, w_reader
        self.weighted = w is not None or w_reader is not None
        self._summary = summary
        self.dask_array = dask_array  #: kind "dask": the (N, D) array, chunked along rows only
        self.dask_weights = dask_weights  #: kind "dask", weighted: (N,) float64, the same row chunks
        if summary is not None:
            self.total_weight = summary.total_weight
        elif w is not None:
            self.total_weight = float(w.sum())
        else:
            self.total_weight = float(n)

    def __repr__(self) -> str:
        dt = str(self.dtype).replace("torch.", "")
        return f"Source(kind={self.kind!r}, n={self.n}, d={self.d}, dtype={dt}, weighted={self.weighted})"

    # -- whole arrays (kind "memory") --
    def tensor(self) -> torch.Tensor | None:
        """The whole (N, D) tensor for kind "memory"; None otherwise."""
        return self._x

    def weights_tensor(self) -> torch.Tensor | None:
        """The (N,) float64 weights for kind "memory" when weighted; None otherwise."""
        return self._w if self._x is not None else None

    # -- blocks --
    def read(self, start: int, stop: int) -> Block:
        """Rows ``start:stop`` (clipped to [0, N])."""
        start, stop = max(0, start), min(self.n, stop)
        if self._x is not None:
            return Block(start, self._x[start:stop], None if self._w is None else self._w[start:stop])
        assert self._reader is not None
        x = self._to_tensor(self._reader.rows(start, stop))
        w = None
        if self._w is not None:
            w = self._w[start:stop].to(self.device)
        elif self._w_reader is not None:
            w = torch.as_tensor(np.asarray(self._w_reader.rows(start, stop), dtype=np.float64), device=self.device)
        return Block(start, x, w)

    def blocks(self, rows: int, start: int = 0, stop: int | None = None) -> Iterator[Block]:
        """Consecutive blocks of at most ``rows`` rows covering ``start:stop``, in order."""
        rows = check_int(rows, "rows", minimum=1)
        stop = self.n if stop is None else min(stop, self.n)
        for a in range(max(0, start), stop, rows):
            yield self.read(a, min(a + rows, stop))

    def take(self, idx: np.ndarray) -> Block:
        """The rows at the sorted indices ``idx`` (e.g. the init sample)."""
        idx = np.asarray(idx, dtype=np.int64)
        first = int(idx[0]) if len(idx) else 0
        if self._x is not None:
            t = torch.as_tensor(idx, device=self._x.device)
            return Block(first, self._x[t], None if self._w is None else self._w[t])
        assert self._reader is not None
        x = self._to_tensor(self._reader.pick(idx))
        w = None
        if self._w is not None:
            w = self._w[torch.as_tensor(idx)].to(self.device)
        elif self._w_reader is not None:
            w = torch.as_tensor(np.asarray(self._w_reader.pick(idx), dtype=np.float64), device=self.device)
        return Block(first, x, w)

    def _to_tensor(self, arr: np.ndarray) -> torch.Tensor:
        arr = arr.reshape(arr.shape[0], self.d)
        np_dtype = np.float64 if self.dtype == torch.float64 else np.float32
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np_dtype)).to(self.device)

    @property
    def summary(self) -> DataSummary:
        """Weighted column mean, column min/max, N and Σ w (computed once)."""
        if self._summary is None:  # kind "memory": on first use, so plain fits do no extra work
            x = self._x
            assert x is not None
            lo, hi = torch.aminmax(x, dim=0)
            if self._w is None:
                mean = x.double().mean(0)
            else:
                w = self._w.to(x.device)
                mean = (w @ x.double()) / w.sum()
            self._summary = DataSummary(self.n, self.total_weight, mean.cpu(), lo, hi)
        return self._summary


# --- building a source ----------------------------------------------------------------------------
def as_source(
    x: Any,
    sample_weight: Any = None,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    name: str = "x",
) -> Source:
    """Validate ``x`` (and ``sample_weight``) before any work and wrap it as a :class:`Source`.

    Parameters
    ----------
    x : array_like, tensor, str / os.PathLike (a ``.npy`` file), numpy.memmap, sliceable 2-D
        dataset (h5py / zarr), dask.array.Array, or a Source (returned as is)
        (N,) means D = 1, otherwise (N, D).
    sample_weight : array_like (N,), optional
        Frequency weights (finite, ≥ 0, positive total). For kind "dask" also a Dask array; for the
        chunked kinds also a memmap / ``.npy`` path / sliceable 1-D dataset (checked in the pass).
    dtype : torch.float32 or torch.float64, optional
        float64 unless the data are float32 (``validation.resolve_dtype``).
    device : torch.device or str, optional
        Where the blocks' tensors live (``validation.check_device``); default: a tensor's own
        device, else the CPU.
    name : str
        The parameter's name in error messages.
    """
    checked = check_device(device)
    if isinstance(x, Source):
        if (dtype is not None and dtype != x.dtype) or (checked is not None and checked != x.device):
            raise ValueError(
                f"{name} is a Source of dtype {x.dtype} on {x.device}; build it with the dtype/device you want"
            )
        if sample_weight is not None:
            if x.weighted:
                raise ValueError(f"{name} is a Source that already carries weights; do not pass sample_weight too")
            raise ValueError(f"pass sample_weight when building the source: as_source({name}, sample_weight)")
        return x
    dev = checked or (x.device if isinstance(x, torch.Tensor) else torch.device("cpu"))
    if isinstance(x, (str, os.PathLike)):
        return _npy_source(open_npy(x, name), sample_weight, dtype, dev, name)
    if isinstance(x, np.memmap):
        return _npy_source(x, sample_weight, dtype, dev, name)
    if is_dask_array(x):
        return _dask_source(x, sample_weight, dtype, dev, name)
    if _is_sliced(x):
        return _chunked_source("sliced", x, _Reader(x), sample_weight, dtype, dev, name)
    t = as_data(x, dtype=dtype, name=name)
    if dev.type != "cpu":
        t = t.to(dev)
    w = None if sample_weight is None else check_sample_weight(sample_weight, t.shape[0]).to(dev)
    return Source("memory", t.shape[0], t.shape[1], t.dtype, dev, x=t, w=w)


def _is_sliced(x: Any) -> bool:
    """A 1-D/2-D dataset with a dtype and row slicing that is not an in-memory array."""
    if isinstance(x, (np.ndarray, torch.Tensor, list, tuple, dict)) or x is None:
        return False
    module = type(x).__module__.split(".")[0]
    if module in ("pandas", "numpy", "torch", "polars", "scipy"):  # in-memory tables / sparse: as_data's rules
        return False
    shape = getattr(x, "shape", None)
    return isinstance(shape, tuple) and len(shape) in (1, 2) and hasattr(x, "dtype") and hasattr(type(x), "__getitem__")


def _target_dtype(dt: np.dtype, dtype: torch.dtype | None) -> torch.dtype:
    if dtype is not None:
        return resolve_dtype(np.empty(0), dtype)  # checks float32 / float64
    return torch.float32 if dt == np.float32 else torch.float64


def _npy_source(mm: np.memmap, sample_weight: Any, dtype: torch.dtype | None, dev: torch.device, name: str) -> Source:
    if mm.ndim == 2 and mm.shape[1] > 1 and not mm.flags.c_contiguous:
        raise ValueError(
            f"{name} (a numpy.memmap) is not in C (row-major) order, so a block of rows is scattered over the "
            "whole file; save it in C order"
        )
    return _chunked_source("npy", mm, _MemmapReader(mm), sample_weight, dtype, dev, name)


def _weights_reader(sample_weight: Any, n: int) -> tuple[torch.Tensor | None, _Reader | None]:
    """In-memory weights are checked whole; a memmap / .npy path / sliceable 1-D dataset is read
    per block (shape checked now, values in the validation pass)."""
    if sample_weight is None:
        return None, None
    if isinstance(sample_weight, (str, os.PathLike)):
        sample_weight = open_npy(sample_weight, "sample_weight")
    if isinstance(sample_weight, np.memmap) or _is_sliced(sample_weight):
        check_dtype(sample_weight.dtype, "sample_weight", "a chunked array")
        check_weight_shape(tuple(sample_weight.shape), n, "sample_weight")
        reader = _MemmapReader(sample_weight) if isinstance(sample_weight, np.memmap) else _Reader(sample_weight)
        return None, reader
    return check_sample_weight(sample_weight, n), None


def _chunked_source(
    kind: str, obj: Any, reader: _Reader, sample_weight: Any, dtype: torch.dtype | None, dev: torch.device, name: str
) -> Source:
    """kinds "npy" and "sliced": checks of the header-level facts, then the validation pass."""
    what = "a numpy.memmap" if kind == "npy" else f"a {type(obj).__name__} dataset"
    dt = check_dtype(obj.dtype, name, what)
    n, d = check_shape(tuple(obj.shape), name, what)
    target = _target_dtype(dt, dtype)
    w, w_reader = _weights_reader(sample_weight, n)
    rows = max(1, VALIDATION_BYTES // (8 * d))
    parts = []
    for a in range(0, n, rows):
        b = min(a + rows, n)
        xb = np.asarray(reader.rows(a, b), dtype=np.float64).reshape(b - a, d)
        wb = None
        if w is not None:
            wb = w[a:b].numpy()
        elif w_reader is not None:
            wb = np.asarray(w_reader.rows(a, b), dtype=np.float64)
        parts.append(block_stats(xb, wb, a, name, w_reader is not None))
    summary = reduce_stats(parts, n, target, name)
    return Source(kind, n, d, target, dev, w=w, reader=reader, w_reader=w_reader, summary=summary)


def _dask_source(x: Any, sample_weight: Any, dtype: torch.dtype | None, dev: torch.device, name: str) -> Source:
    """kind "dask": rows chunked only; the pass runs per chunk on the active scheduler."""
    import dask
    import dask.array as da

    what = "a dask array"
    dt = check_dtype(x.dtype, name, what)
    n, d = check_shape(tuple(x.shape), name, what)
    if x.ndim == 2 and len(x.chunks[1]) > 1:
        raise ValueError(
            f"{name} (a dask array) is chunked along columns too (column chunks {x.chunks[1]}): each chunk must hold "
            f"whole rows; rechunk it with x.rechunk({{1: -1}})"
        )
    target = _target_dtype(dt, dtype)
    arr = x if x.ndim == 2 else x[:, None]
    row_chunks = arr.chunks[0]
    w_tensor, dw = None, None
    if sample_weight is not None:
        if is_dask_array(sample_weight):
            check_dtype(sample_weight.dtype, "sample_weight", "a dask array")
            check_weight_shape(tuple(sample_weight.shape), n, "sample_weight")
            dw = sample_weight.astype(np.float64).rechunk((row_chunks,))
        else:
            w_tensor = check_sample_weight(sample_weight, n)
            dw = da.from_array(w_tensor.numpy(), chunks=(row_chunks,))
    starts = np.concatenate([[0], np.cumsum(row_chunks)[:-1]]).tolist()
    xs = arr.to_delayed().ravel().tolist()
    ws = dw.to_delayed().ravel().tolist() if dw is not None else [None] * len(xs)
    check_w = dw is not None and w_tensor is None
    tasks = [dask.delayed(dask_chunk_stats)(xc, wc, int(s), name, check_w) for xc, wc, s in zip(xs, ws, starts)]
    parts = list(dask.compute(*tasks))
    summary = reduce_stats(parts, n, target, name)
    return Source(
        "dask",
        n,
        d,
        target,
        dev,
        w=w_tensor,
        reader=_DaskReader(arr),
        w_reader=_DaskReader(dw) if dw is not None and w_tensor is None else None,
        summary=summary,
        dask_array=arr,
        dask_weights=dw,
    )
