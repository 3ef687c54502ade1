"""The command line's ``.npy`` input: memory-mapped, read in row blocks, never loaded whole.

A file is read as ``.npy`` when its name ends in ``.npy`` or its first bytes are the ``.npy``
magic (``\\x93NUMPY``); anything else is CSV (``csv_input``). The checks are those of
``core.sources.as_source`` (the header's dtype — float32, float64 or an integer type — its shape,
1-D (N,) or 2-D (N, D), C order, and the validation pass over every block that names the first
row holding NaN/inf), run before any fitting; the file must be a regular file
(``csv_input.check_input_file``) of any size.

For ``--dask`` / ``--scheduler`` the file becomes a Dask array chunked by rows whose every chunk is
read *by the worker* from the path (:func:`npy_dask_array`: only the path and the row range travel,
so the workers must see the same file system), and ``as_source`` validates it on the cluster.

The methods that need the whole data in memory (svi, nuts) read a ``.npy`` of at most
:data:`~ppl_gmm.app.csv_input.MAX_INPUT_BYTES` whole (:func:`in_memory`); cavi, map and vb read it
in blocks whatever its size (``dask_session.DASK_METHODS``).
"""

from __future__ import annotations

import math
import os
import stat
from typing import Any

import numpy as np

from ..core.sources import Source, as_source
from .csv_input import MAX_INPUT_BYTES, CliError, check_input_file, size_text

__all__ = [
    "NPY_MAGIC",
    "CHUNK_BYTES",
    "is_npy",
    "open_npy",
    "npy_dask_array",
    "chunk_rows",
    "in_memory",
    "column_names",
]

NPY_MAGIC = b"\x93NUMPY"
#: The most float64 bytes in one Dask chunk (64 MiB): rows per chunk = CHUNK_BYTES / (8 D).
CHUNK_BYTES = 1 << 26


def is_npy(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` ends in ``.npy`` or starts with the ``.npy`` magic bytes."""
    if os.fspath(path).lower().endswith(".npy"):
        return True
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # never open a pipe or device: it may block
            return False
        with open(path, "rb") as fh:
            return fh.read(len(NPY_MAGIC)) == NPY_MAGIC
    except (OSError, ValueError):
        return False  # the CSV reader reports what is wrong with the path


def open_npy(path: str | os.PathLike[str]) -> Source:
    """The ``.npy`` file as a memory-mapped :class:`~ppl_gmm.core.sources.Source` (kind "npy"),
    validated by one pass over its blocks; bad input raises ValueError/TypeError naming the file."""
    check_input_file(path, max_bytes=None, kind="a .npy file")
    return as_source(os.fspath(path), name=os.fspath(path))  # the library's messages name the file


def _header(path: str) -> np.memmap:
    """The file memory-mapped (reads the header only); errors as one line."""
    check_input_file(path, max_bytes=None, kind="a .npy file")
    try:
        mm = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        raise CliError(f"{path}: not a readable .npy file ({err}); save the data with numpy.save") from None
    except OSError as err:
        raise CliError(f"{path}: cannot read it: {err.strerror or err}") from None
    if not isinstance(mm, np.memmap):  # an .npz archive
        raise CliError(f"{path}: not a .npy file (an .npz archive?); save one array with numpy.save")
    if mm.ndim not in (1, 2) or 0 in mm.shape:
        raise CliError(f"{path}: the array has shape {mm.shape}; it must be (N,) or (N, D) with N, D >= 1")
    if not (mm.dtype.kind in "iu" or mm.dtype in (np.float32, np.float64)):
        raise CliError(f"{path}: the array has dtype {mm.dtype}; it must be float32, float64 or an integer type")
    if mm.ndim == 2 and mm.shape[1] > 1 and not mm.flags.c_contiguous:
        raise CliError(
            f"{path}: stored in Fortran (column-major) order, so a block of rows is scattered over the whole "
            "file; save it in C order: numpy.save(path, numpy.ascontiguousarray(a))"
        )
    return mm


def _read_rows(path: str, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of the ``.npy`` at ``path`` (a copy; run by a Dask worker)."""
    return np.array(np.load(path, mmap_mode="r")[start:stop])


def chunk_rows(n: int, d: int, workers: int) -> int:
    """Rows per Dask chunk: at least 4 chunks per worker while a chunk is small, at most
    :data:`CHUNK_BYTES` of float64 per chunk."""
    return max(1, min(math.ceil(n / (4 * workers)), CHUNK_BYTES // (8 * d)))


def npy_dask_array(path: str | os.PathLike[str], workers: int) -> Any:
    """The ``.npy`` file as a lazy Dask array chunked by rows (:func:`chunk_rows`), each chunk read
    from ``path`` where it is computed. The header is checked here (shape, dtype, order: the rules
    of ``as_source``, with the file named); the values later, by ``as_source`` on the cluster."""
    import dask
    import dask.array as da

    p = os.path.abspath(os.fspath(path))
    mm = _header(p)
    n = mm.shape[0]
    d = mm.shape[1] if mm.ndim == 2 else 1
    rows = chunk_rows(n, d, workers)
    parts = [
        da.from_delayed(
            dask.delayed(_read_rows, pure=True)(p, a, min(a + rows, n)),
            shape=(min(a + rows, n) - a, *mm.shape[1:]),
            dtype=mm.dtype,
        )
        for a in range(0, n, rows)
    ]
    return parts[0] if len(parts) == 1 else da.concatenate(parts, axis=0)


def in_memory(source: Source, method: str) -> np.ndarray:
    """The whole data of a ``.npy`` source as an (N, D) array, for the methods that need it in
    memory; refused above :data:`MAX_INPUT_BYTES` (CSV's limit)."""
    size = source.n * source.d * 8
    if size > MAX_INPUT_BYTES:
        raise CliError(
            f"--method {method} holds the data in memory, and they take {size_text(size)}, more than the limit of "
            f"{size_text(MAX_INPUT_BYTES)}; use --method cavi, map or vb, which read a .npy in blocks"
        )
    return source.read(0, source.n).x.cpu().numpy()


def column_names(d: int) -> list[str]:
    """A ``.npy`` has no header: its columns are named x1..xD (as CSV's ``--no-header``)."""
    return [f"x{j + 1}" for j in range(d)]
