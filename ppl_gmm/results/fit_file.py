"""The fit file: the schema of what ``GMMFit.save`` writes and ``load_fit`` reads, checked in full
before anything is built.

A fit file is a zip archive (``numpy.savez``; members stored or deflated) of ``.npy`` members, none
of them pickled:

==================  ===========  =====================================================================
member              shape        values
==================  ===========  =====================================================================
``meta``            ()           a unicode string: the JSON object below
``alpha``           (K,)         finite, on the simplex (``GMMParams``'s tolerance)
``mu``              (K, D)       finite
``cov``             (K, D, D)    symmetric positive definite; full matrices for every covariance_type
``gamma``           (N, K)       optional (absent when the fit kept no γ: out-of-core / Dask fits);
                                 finite rows on the simplex (``core.gmm.check_simplex_rows``)
``elbo``            (T,)         finite
``log_likelihood``  (T,)         finite
``times``           (T,)         optional; finite seconds ≥ 0, float32 or float64
==================  ===========  =====================================================================

K, D, N, T ≥ 1; ``alpha`` to ``log_likelihood`` share one dtype, float32 or float64. No other
member. ``meta`` holds exactly the keys ``format`` ("ppl_gmm.GMMFit/<version>"; a version above
``FORMAT_VERSION`` asks for an upgrade), ``method`` (one of ``METHODS``), ``n_iter`` (int ≥ 0),
``converged`` (bool), ``seed`` (None or int ≥ 0), ``covariance_type`` (one of
``COVARIANCE_TYPES``), ``reg_covar`` (finite ≥ 0) and ``info`` (an object; its ``log_prior`` and
``trace_steps``, read by ``GMMFit.kl_gap`` and the trace plots, must be T numbers). A new key is
a new format version. Every problem raises ``FitFileError`` naming the file. Each member's
``.npy`` header is checked against its zip entry and the other members before its data is read,
so no file makes us allocate more than ~1000 times its own size.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Mapping
from typing import IO, Any, NoReturn

import numpy as np
import torch

from .. import __version__
from ..core.errors import FitFileError
from ..core.gmm import check_gamma, check_simplex_rows
from ..core.linalg import checked_cholesky
from ..core.validation import COVARIANCE_TYPES

__all__ = ["FORMAT", "FORMAT_VERSION", "METHODS", "check_fit", "read_fit_file"]

FORMAT_VERSION = 1
FORMAT = f"ppl_gmm.GMMFit/{FORMAT_VERSION}"
METHODS = ("cavi", "svi", "map")
# member -> its dimensions, in the order they are defined (K by alpha, D by mu, N by gamma, T by elbo)
LAYOUT = {
    "alpha": "K",
    "mu": "KD",
    "cov": "KDD",
    "gamma": "NK",
    "elbo": "T",
    "log_likelihood": "T",
    "times": "T",
}
REQUIRED = ("meta", "alpha", "mu", "cov", "elbo", "log_likelihood")  # + gamma, times: optional
META_KEYS = ("format", "method", "n_iter", "converged", "seed", "covariance_type", "reg_covar", "info")
_MAX_DEFLATE_RATIO = 1100  # deflate expands at most ~1032:1
_NETCDF_HINT = (
    "this is a netCDF file (a VB/NUTS result, e.g. from `ppl-gmm fit --method vb|nuts --out`); read it "
    "with arviz.from_netcdf / ppl_gmm's arviz_io.load_inference_data, not load_fit"
)


def _fail(path: Any, problem: str, writing: bool = False) -> NoReturn:
    raise FitFileError(path, problem, writing=writing)


def _odd(what: str, missing: list[str], unknown: list[str]) -> str:
    """ "missing members ['gamma']; unknown members ['x.npy']" (the non-empty parts)."""
    return "; ".join(f"{kind} {what} {names}" for kind, names in (("missing", missing), ("unknown", unknown)) if names)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_format(meta: Any, path: Any, writing: bool = False) -> None:
    if not isinstance(meta, dict):
        _fail(path, f"member 'meta' must be a JSON object, got a JSON {type(meta).__name__}", writing)
    fmt = meta.get("format")
    match = re.fullmatch(r"ppl_gmm\.GMMFit/([0-9]{1,9})", fmt) if isinstance(fmt, str) else None
    if match is None or int(match[1]) < 1:
        _fail(path, f"it is not a ppl_gmm fit (meta format {fmt!r}; a fit file says {FORMAT!r})", writing)
    if int(match[1]) > FORMAT_VERSION:
        _fail(
            path,
            f"it was written by a newer ppl_gmm (format {fmt!r}; ppl_gmm {__version__} reads versions up to "
            f"{FORMAT_VERSION}); upgrade ppl_gmm to read it",
            writing,
        )


def _check_meta(meta: dict, t: int, path: Any, writing: bool = False) -> None:
    """The meta keys, their types and allowed values (``format`` is checked by ``_check_format``)."""

    def bad(key: str, want: str) -> NoReturn:
        _fail(path, f"meta {key!r} must be {want}, got {meta[key]!r}", writing)

    missing, unknown = [k for k in META_KEYS if k not in meta], sorted(set(meta) - set(META_KEYS))
    if missing or unknown:
        _fail(
            path,
            f"meta has {_odd('keys', missing, unknown)}; it holds exactly the keys {list(META_KEYS)}",
            writing,
        )
    if meta["method"] not in METHODS:
        bad("method", f"one of {', '.join(METHODS)}")
    if not _is_int(meta["n_iter"]) or meta["n_iter"] < 0:
        bad("n_iter", "a non-negative integer")
    if not isinstance(meta["converged"], bool):
        bad("converged", "true or false")
    if meta["seed"] is not None and (not _is_int(meta["seed"]) or meta["seed"] < 0):
        bad("seed", "null or a non-negative integer")
    if meta["covariance_type"] not in COVARIANCE_TYPES:
        bad("covariance_type", f"one of {', '.join(COVARIANCE_TYPES)}")
    if not _is_real(meta["reg_covar"]) or not math.isfinite(meta["reg_covar"]) or meta["reg_covar"] < 0:
        bad("reg_covar", "a finite number >= 0")
    info = meta["info"]
    if not isinstance(info, dict):
        bad("info", "a JSON object")
    for key in ("log_prior", "trace_steps"):
        v = info.get(key)
        if v is not None and not (isinstance(v, list) and len(v) == t and all(_is_real(e) for e in v)):
            _fail(path, f"meta info[{key!r}] must be a list of T = {t} numbers (one per trace entry)", writing)


def _check_shapes(shapes: Mapping[str, tuple[int, ...]], path: Any, writing: bool = False) -> dict[str, int]:
    """K, D, N, T from the members' shapes, or a ``FitFileError`` naming the first inconsistent one."""
    dims: dict[str, int] = {}
    source: dict[str, str] = {}
    for name, layout in LAYOUT.items():
        if name not in shapes:
            continue
        shape = tuple(shapes[name])
        want = (
            "(" + ", ".join(f"{s} = {dims[s]}" if s in dims else s for s in layout) + ("," * (len(layout) == 1)) + ")"
        )
        why = "; ".join(f"{s} from {source[s]!r}" for s in dict.fromkeys(layout) if s in source)
        if len(shape) != len(layout) or any(s in dims and dims[s] != n for s, n in zip(layout, shape)):
            _fail(path, f"member {name!r} has shape {shape}, expected {want}{' (' + why + ')' if why else ''}", writing)
        for s, n in zip(layout, shape):
            if n < 1:
                _fail(path, f"member {name!r} has shape {shape}: {s} must be at least 1", writing)
            dims.setdefault(s, n)
            source.setdefault(s, name)
    return dims


def _refuse_pickle(name: str, dt: np.dtype, path: Any, writing: bool = False) -> None:
    if dt.hasobject:
        _fail(
            path,
            f"member {name!r} is a pickled object array; fit files hold none, and ppl_gmm never unpickles "
            "(allow_pickle=False)",
            writing,
        )


def _check_dtypes(dtypes: Mapping[str, np.dtype], path: Any, writing: bool = False) -> None:
    for name, dt in dtypes.items():
        _refuse_pickle(name, dt, path, writing)
        if dt.kind != "f" or dt.itemsize not in (4, 8) or dt.shape or dt.names:
            _fail(path, f"member {name!r} has dtype {dt}; arrays must be real float32 or float64", writing)
    kinds = {name: dt.newbyteorder("=") for name, dt in dtypes.items() if name not in ("meta", "times")}
    if len(set(kinds.values())) > 1:
        _fail(path, f"the arrays must share one dtype, got {', '.join(f'{n} {d}' for n, d in kinds.items())}", writing)


def check_fit(arrays: Mapping[str, np.ndarray], meta: Any, path: Any, writing: bool = False) -> None:
    """Check a fit's arrays and parsed meta against the schema; raise ``FitFileError`` naming ``path``."""
    _check_format(meta, path, writing)
    unknown, missing = sorted(set(arrays) - set(LAYOUT)), [n for n in REQUIRED[1:] if n not in arrays]
    if unknown or missing:
        _fail(
            path, f"{_odd('members', missing, unknown)} (a fit has {list(LAYOUT)}; gamma and times optional)", writing
        )
    _check_dtypes({n: a.dtype for n, a in arrays.items()}, path, writing)
    dims = _check_shapes({n: a.shape for n, a in arrays.items()}, path, writing)
    _check_meta(meta, dims["T"], path, writing)
    for name, a in arrays.items():
        finite = np.isfinite(a)
        if not finite.all():
            where = list(map(int, np.unravel_index(int(np.argmin(finite)), a.shape)))
            _fail(path, f"member {name!r} has {int((~finite).sum())} NaN/inf entries (first at {where})", writing)
    alpha = torch.from_numpy(np.asarray(arrays["alpha"]))
    if bool((alpha < 0).any()) or abs(float(alpha.sum()) - 1.0) > 1e-6 * max(1, dims["K"]):  # GMMParams' rule
        sums = f"sum {float(alpha.sum())!r}, min {float(alpha.min())!r}"
        _fail(path, f"member 'alpha' is not on the simplex ({sums}): weights must be >= 0 and sum to 1", writing)
    if "gamma" in arrays:
        gamma = torch.from_numpy(np.asarray(arrays["gamma"]))
        try:
            check_simplex_rows(check_gamma(gamma, dims["N"], dims["K"], gamma.dtype))
        except ValueError as err:
            _fail(path, f"member 'gamma': {err}", writing)
    if "times" in arrays and bool((arrays["times"] < 0).any()):
        _fail(path, "member 'times' has negative entries (seconds since the start of the fit)", writing)
    cov = torch.from_numpy(np.asarray(arrays["cov"]))
    scale = float(cov.abs().max())
    asym = ((cov - cov.mT).abs() > 1e-8 * cov.mT.abs() + 1e-12 * scale).flatten(1).any(1)  # GMMParams' rule
    if bool(asym.any()):
        _fail(path, f"member 'cov': component {int(asym.nonzero()[0])}'s covariance is not symmetric", writing)
    bad = checked_cholesky(cov)[1]
    if bad is not None:
        _fail(path, f"member 'cov': component {bad}'s covariance is not positive definite", writing)


def _sniff(head: bytes, fh: IO[bytes], path: Any) -> None:
    """Refuse, with a useful message, a file that is not a zip archive."""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return
    hdf5 = b"\x89HDF\r\n\x1a\n"
    if head.startswith((b"CDF\x01", b"CDF\x02", b"CDF\x05", hdf5)) or any(
        fh.seek(off) == off and fh.read(8) == hdf5 for off in (512, 1024, 2048)
    ):
        _fail(path, _NETCDF_HINT)
    if head.startswith(b"\x93NUMPY"):
        _fail(path, "it is a single .npy array (numpy.save), not a fit archive: GMMFit.save writes a .npz zip archive")
    what = "it is empty" if not head else f"it is not a zip archive (it starts with {head[:16]!r})"
    _fail(path, f"{what}; a fit file is the .npz zip archive GMMFit.save writes")


def _header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Any) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a member's ``.npy`` header, checked against the member's size in the zip."""
    name = info.filename[:-4]
    reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    with zf.open(info) as fp:
        try:
            version = np.lib.format.read_magic(fp)
            shape, _, dtype = reader[version](fp) if version in reader else ((), None, None)
        except ValueError as err:
            _fail(path, f"member {name!r} is not a valid .npy array ({err})")
        if dtype is None:
            _fail(path, f"member {name!r} is a .npy file of unsupported version {version}")
        offset = fp.tell()
    if not dtype.hasobject and info.file_size != offset + math.prod(shape) * dtype.itemsize:
        _fail(path, f"member {name!r} declares shape {shape} of {dtype} but holds {info.file_size - offset} bytes")
    return shape, dtype


def _read_archive(zf: zipfile.ZipFile, size: int, path: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    infos = zf.infolist()
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        _fail(path, f"the archive has duplicate members {sorted({n for n in names if names.count(n) > 1})}")
    if sum(i.compress_size for i in infos) > size:
        _fail(path, "the zip archive is truncated or corrupt (its members are larger than the file)")
    for i in infos:
        deflated = i.compress_type == zipfile.ZIP_DEFLATED
        if i.flag_bits & 0x1 or i.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            _fail(path, f"member {i.filename!r} is encrypted or compressed other than by numpy.savez[_compressed]")
        if i.file_size > (_MAX_DEFLATE_RATIO * max(i.compress_size, 1) if deflated else i.compress_size):
            _fail(path, f"member {i.filename!r} claims {i.file_size} bytes from {i.compress_size}: corrupt or hostile")
    members = {n[:-4]: i for n, i in zip(names, infos) if n.endswith(".npy")}
    if "meta" not in members:
        _fail(path, "it has no 'meta' member, so it is not a ppl_gmm fit (GMMFit.save writes one)")
    shape, dtype = _header(zf, members["meta"], path)
    _refuse_pickle("meta", dtype, path)
    if dtype.kind != "U" or shape != ():
        _fail(path, f"member 'meta' must be a 0-d unicode string holding JSON, got shape {shape} of {dtype}")
    with zf.open(members["meta"]) as fp:
        text = np.lib.format.read_array(fp, allow_pickle=False).item()
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as err:
        _fail(path, f"member 'meta' is not valid JSON ({err})")
    _check_format(meta, path)
    unknown = sorted(set(names) - {f"{n}.npy" for n in LAYOUT} - {"meta.npy"})
    missing = [n for n in REQUIRED if n not in members]
    if unknown or missing:
        _fail(path, f"it has {_odd('members', missing, unknown)}; a fit file holds {list(REQUIRED)} (+ gamma, times)")
    headers = {n: _header(zf, i, path) for n, i in members.items() if n != "meta"}
    _check_dtypes({n: h[1] for n, h in headers.items()}, path)
    _check_shapes({n: h[0] for n, h in headers.items()}, path)  # before any array is read
    arrays = {}
    for name in headers:
        with zf.open(members[name]) as fp:
            a = np.lib.format.read_array(fp, allow_pickle=False)
        arrays[name] = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("="), copy=False))
    check_fit(arrays, meta, path)
    return arrays, meta


def read_fit_file(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and meta of a fit file, checked against the whole schema; else ``FitFileError``."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError as err:
        raise FitFileError(path, "no such file") from err
    except IsADirectoryError as err:
        raise FitFileError(path, "it is a directory, not a file") from err
    except PermissionError as err:
        raise FitFileError(path, "permission denied") from err
    except OSError as err:
        raise FitFileError(path, f"it cannot be opened ({err.strerror or err})") from err
    with fh:
        _sniff(fh.read(16), fh, path)
        size = os.fstat(fh.fileno()).st_size
        fh.seek(0)
        try:
            with zipfile.ZipFile(fh) as zf:
                return _read_archive(zf, size, path)
        except FitFileError:
            raise
        except (
            zipfile.BadZipFile,
            zlib.error,
            struct.error,
            EOFError,
            NotImplementedError,
            OSError,
            ValueError,
        ) as err:
            raise FitFileError(path, f"the zip archive is truncated or corrupt ({err})") from err
