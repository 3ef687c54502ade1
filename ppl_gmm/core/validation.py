"""Input checks, run before any work starts.

Every public entry point funnels its data through :func:`as_data` and its
number of components through :func:`check_k`, so a bad input fails with one
message that names the problem and says what to do.
"""

from __future__ import annotations

import numbers
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import torch

from .params import GMMParams

__all__ = [
    "ArrayLike",
    "as_data",
    "check_k",
    "check_int",
    "check_positive",
    "resolve_dtype",
    "check_covariance_type",
    "check_init",
    "check_fit_args",
    "COVARIANCE_TYPES",
    "INITS",
]

#: What every public function accepts as data: a numpy array, a torch tensor, or anything
#: ``np.asarray`` takes (nested lists, pandas objects).
ArrayLike: TypeAlias = npt.ArrayLike | torch.Tensor

COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")
INITS = ("kmeans++", "random")


def resolve_dtype(x: ArrayLike, dtype: torch.dtype | None = None) -> torch.dtype:
    """float64 unless the caller passed float32 data or asked for a dtype."""
    if dtype is not None:
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        return dtype
    if isinstance(x, torch.Tensor) and x.dtype == torch.float32:
        return torch.float32
    if isinstance(x, np.ndarray) and x.dtype == np.float32:
        return torch.float32
    return torch.float64


def as_data(x: ArrayLike, dtype: torch.dtype | None = None, name: str = "x") -> torch.Tensor:
    """Return the data as a contiguous (N, D) floating tensor, or raise.

    Accepts a numpy array, a torch tensor or anything ``np.asarray`` takes.
    Shape (N,) means D = 1.  Refuses empty data, arrays of more than two
    dimensions, non-numeric values and NaN/inf (naming the offending rows).
    """
    target = resolve_dtype(x, dtype)
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{name} must be real numbers, got a tensor of dtype {t.dtype}")
        t = t.to(dtype=target, device="cpu")
    else:
        try:
            arr = np.asarray(x)
        except Exception as err:  # ragged lists and the like
            raise TypeError(f"{name} could not be read as a numeric array: {err}") from None
        if arr.dtype == object:
            arr = _numeric_objects(arr, name)
        elif arr.dtype.kind not in "iuf":
            kind = {
                "U": "strings",
                "S": "bytes",
                "b": "booleans",
                "c": "complex numbers",
                "M": "dates",
                "m": "time spans",
                "V": "records",
            }.get(arr.dtype.kind, f"values of dtype {arr.dtype}")
            raise TypeError(
                f"{name} must contain only real numbers; got {kind} (dtype {arr.dtype}): "
                "convert or drop the non-numeric columns first"
            )
        t = torch.as_tensor(np.ascontiguousarray(arr) if arr.ndim else arr, dtype=target)
    if t.ndim == 0:
        raise ValueError(f"{name} must be 1-D (N,) or 2-D (N, D); got a scalar")
    if t.ndim == 1:
        t = t.unsqueeze(-1)
    if t.ndim != 2:
        raise ValueError(
            f"{name} must be 1-D (N,) or 2-D (N, D); got {t.ndim}-D shape {tuple(t.shape)} (reshape it to (N, D) first)"
        )
    n, d = t.shape
    if n == 0:
        raise ValueError(f"{name} is empty: it has no rows (N = 0)")
    if d == 0:
        raise ValueError(f"{name} has no columns (D = 0)")
    finite = torch.isfinite(t).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        shown = ", ".join(str(i) for i in bad[:10]) + (" ..." if len(bad) > 10 else "")
        raise ValueError(
            f"{name} has NaN or infinite values in {len(bad)} row(s): {shown} (drop or impute those rows first)"
        )
    return t.contiguous()


def _numeric_objects(arr: np.ndarray, name: str) -> np.ndarray:
    """An object array (e.g. from a mixed-type table) is accepted only if every entry is a
    real number; otherwise the first offending entry is named."""
    for index, value in np.ndenumerate(arr):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            where = f" at index {index}" if arr.ndim else ""
            raise TypeError(
                f"{name} must contain only real numbers; found {type(value).__name__} {value!r}{where} "
                "(convert or drop the non-numeric columns first)"
            )
    return arr.astype(np.float64)


def check_k(k: int, n: int | None = None) -> int:
    """k must be an integer with 1 <= k <= N."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k (the number of components) must be an integer, got {k!r}")
    k = int(k)
    if k < 1:
        raise ValueError(f"k (the number of components) must be at least 1, got {k}")
    if n is not None and k > n:
        raise ValueError(f"k = {k} is larger than the number of data points N = {n}; use k <= N")
    return k


def check_covariance_type(covariance_type: str) -> str:
    if not isinstance(covariance_type, str) or covariance_type not in COVARIANCE_TYPES:
        raise ValueError(f"unknown covariance_type {covariance_type!r}; use one of {', '.join(COVARIANCE_TYPES)}")
    return covariance_type


def check_positive(value: float, name: str, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value!r}")
    return v


def check_int(value: int, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_init(init: Any, k: int, d: int, extra: tuple = ()) -> Any:
    """``init`` is "kmeans++", "random", a GMMParams of K components on D features, or an instance
    of one of the ``extra`` types (e.g. ``VBPosterior`` for the VB fits); returned unchanged."""
    if isinstance(init, str) and init in INITS:
        return init
    if isinstance(init, GMMParams) or (extra and isinstance(init, extra)):
        if init.k != k or init.d != d:
            raise ValueError(
                f"init parameters have K = {init.k}, D = {init.d} but the fit asks for K = {k} on D = {d} data"
            )
        return init
    names = ", ".join(["'kmeans++'", "'random'", "a GMMParams", *(f"a {t.__name__}" for t in extra)])
    raise ValueError(f"unknown init {init!r}; use {names}")


def check_fit_args(
    x: ArrayLike, k: int, init: Any, dtype: torch.dtype | None = None, extra_inits: tuple = ()
) -> tuple[torch.Tensor, int, Any]:
    """Validate the data, ``k`` and ``init`` of a fit before any work; returns ``(x, k, init)``."""
    x = as_data(x, dtype=dtype)
    k = check_k(k, x.shape[0])
    init = check_init(init, k, x.shape[1], extra_inits)
    return x, k, init
