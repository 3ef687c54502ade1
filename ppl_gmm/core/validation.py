"""Input checks, run before any work starts.

Every public entry point funnels its data through :func:`as_data` and its
number of components through :func:`check_k`, so a bad input fails with one
message that names the problem and says what to do.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import torch

from .checks import check_int
from .params import GMMParams

__all__ = [
    "ArrayLike",
    "as_data",
    "check_k",
    "check_int",
    "check_positive",
    "check_bool",
    "check_device",
    "resolve_dtype",
    "check_covariance_type",
    "check_init",
    "check_fit_args",
    "DataScale",
    "UNSCALED",
    "data_scale",
    "range_scale",
    "COVARIANCE_TYPES",
    "INITS",
]

#: What every public function accepts as data: a numpy array, a torch tensor, or anything
#: ``np.asarray`` takes (nested lists, pandas objects).
ArrayLike: TypeAlias = npt.ArrayLike | torch.Tensor

COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")
INITS = ("kmeans++", "kmeans", "random")


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


def check_bool(value: bool, name: str) -> bool:
    """A flag: ``True``/``False`` (or a numpy bool), nothing else ("yes" is truthy but is a mistake)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_positive(value: float, name: str, allow_zero: bool = False) -> float:
    if isinstance(value, (str, bytes, bool, np.bool_)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value!r}")
    return v


def check_device(device: Any, name: str = "device") -> torch.device | None:
    """``None`` (the data's device), or a ``torch.device`` / device string such as "cpu", "cuda:0"
    whose backend is available here; anything else refused naming ``name``."""
    if device is None:
        return None
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"{name} must be a torch.device or a string such as 'cpu' or 'cuda', got {device!r}")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"{name} = {device!r} is not a torch device; use e.g. 'cpu', 'cuda' or 'cuda:1'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name} = {device!r} but torch has no CUDA device here (torch.cuda.is_available() is False)")
    return dev


def check_init(init: Any, k: int, d: int, extra: tuple = ()) -> Any:
    """``init`` is one of :data:`INITS` ("kmeans++", "kmeans", "random"), a GMMParams of K
    components on D features, or an instance of one of the ``extra`` types (e.g. ``VBPosterior``
    for the VB fits); returned unchanged."""
    if isinstance(init, str) and init in INITS:
        return init
    if isinstance(init, GMMParams) or (extra and isinstance(init, extra)):
        if init.k != k or init.d != d:
            raise ValueError(
                f"init parameters have K = {init.k}, D = {init.d} but the fit asks for K = {k} on D = {d} data"
            )
        return init
    names = ", ".join([*(repr(i) for i in INITS), "a GMMParams", *(f"a {t.__name__}" for t in extra)])
    raise ValueError(f"unknown init {init!r}; use {names}")


def check_fit_args(
    x: ArrayLike, k: int, init: Any, dtype: torch.dtype | None = None, extra_inits: tuple = ()
) -> tuple[torch.Tensor, int, Any]:
    """Validate the data, ``k`` and ``init`` of a fit before any work; returns ``(x, k, init)``."""
    x = as_data(x, dtype=dtype)
    k = check_k(k, x.shape[0])
    init = check_init(init, k, x.shape[1], extra_inits)
    return x, k, init


# --- the data's scale ----------------------------------------------------------------------------
#: Data whose spread r (below) lies in [2^-w, 2^w) with w = ``SAFE_LOG2[dtype]`` are computed on as
#: given (s = 1): every result there is bit for bit that of the plain computation.
SAFE_LOG2 = {torch.float64: 60, torch.float32: 30}


@dataclass(frozen=True)
class DataScale:
    """The scale s = 2^``exponent`` of a fit's coordinates x' = x / s (see :func:`data_scale`).

    Multiplying by a power of two is exact in floating point (away from overflow and subnormals),
    so mapping data, Θ and reg_covar into x' and the answer back loses nothing. Eq. 15 is
    scale-equivariant: with x' = x / s, μ' = μ / s, Σ' = Σ / s² (reg_covar' = reg_covar / s²),
    γ is unchanged, log N(x | μ, Σ) = log N(x' | μ', Σ') − D log s, so eq. 18 and eq. 26 lose
    N·D·log s (:attr:`log_s`).
    """

    exponent: int = 0

    @property
    def is_identity(self) -> bool:
        return self.exponent == 0

    @property
    def s(self) -> float:
        return math.ldexp(1.0, self.exponent)

    @property
    def log_s(self) -> float:
        """ln s = exponent · ln 2."""
        return self.exponent * math.log(2.0)

    def down(self, x: torch.Tensor) -> torch.Tensor:
        """x' = x / s (``x`` itself when s = 1)."""
        return x if self.is_identity else x * math.ldexp(1.0, -self.exponent)

    def reg_down(self, reg_covar: float) -> float:
        """reg_covar' = reg_covar / s², the same regularisation in x' units."""
        return reg_covar if self.is_identity else reg_covar * math.ldexp(1.0, -2 * self.exponent)

    def params_down(self, params: GMMParams) -> GMMParams:
        """Θ' = (α, μ / s, Σ / s²)."""
        return self._params(params, -self.exponent)

    def params_up(self, params: GMMParams) -> GMMParams:
        """Θ = (α, s μ', s² Σ') from Θ' in x' units."""
        return self._params(params, self.exponent)

    def _params(self, params: GMMParams, e: int) -> GMMParams:
        if e == 0:
            return params
        return GMMParams(params.alpha, params.mu * math.ldexp(1.0, e), params.cov * math.ldexp(1.0, 2 * e))


UNSCALED = DataScale(0)  #: s = 1


def data_scale(x: torch.Tensor, reg_covar: float = 0.0, *, scatter: bool = False) -> DataScale:
    """The coordinates x' = (x − c) / s a closed-form fit computes in, or a ValueError before any
    work when the answer itself is not representable in ``x.dtype``.

    - The spread r = max_d (max_i x_id − min_i x_id) / 2 is the largest |x_id − c_d| about the
      mid-range c_d. Covariances of the data (eq. 21 / 28) lie below (2r)² and scale as r².
    - s = 2^j with r / s in [½, 1); s = 1 when r lies in [2^-61, 2^60) (float32: 2^±30) or r = 0,
      so ordinary data are computed on as given, bit for bit. The centre is c = 0: scaling by
      2^j is then exact, and every kernel centres the data itself (at their mean).
    - Refused: r ≥ 2^510 (float32: 2^62), where (2r)² overflows, and r < 2^-500 (float32:
      2^-52), where r² falls within 2^20 of the smallest normal number — the covariances of such
      data are not representable (with reg_covar = 0), so no rescaling can return them; the
      remedy is to rescale the data (fits are scale-equivariant: ``DataScale``). ``scatter=True``
      (variational Bayes, whose answer holds W_k⁻¹ = W0⁻¹ + a sum of N squared deviations, PRML
      10.62, and W_k ~ 1 / (N r²)) also refuses N (2r)² above max / 4. Also refused: a
      ``reg_covar`` whose value in x' units (reg_covar / s²) overflows.
    """
    lo, hi = torch.aminmax(x, dim=0)
    return range_scale(lo, hi, x.shape[0], reg_covar, scatter=scatter)


def range_scale(
    lo: torch.Tensor, hi: torch.Tensor, n: float, reg_covar: float = 0.0, *, scatter: bool = False
) -> DataScale:
    """:func:`data_scale` from the column minima ``lo`` and maxima ``hi`` (D,) of the data and its
    row count ``n`` (Σ_i w_i for frequency-weighted data): the same answer without the data, for
    sources read in blocks (``core.sources.DataSummary.scale``)."""
    r = float((hi * 0.5 - lo * 0.5).max())  # halves first: no overflow for data near ±max
    if r == 0.0:  # constant data: nothing to scale (k-means++ and the M-step name the problem)
        return UNSCALED
    fi = torch.finfo(lo.dtype)
    name = "float64" if lo.dtype == torch.float64 else "float32"
    j = math.frexp(r)[1]  # r = m 2^j, m in [½, 1)
    rows = max(0, math.ceil(math.log2(n))) if scatter else 0
    top = (math.frexp(fi.max)[1] - 4 - rows) // 2  # 510 (float32: 62): 2^rows (2r)² < 2^(2j+2+rows) ≤ max / 4
    bottom = -((-math.frexp(fi.tiny)[1] - 21) // 2)  # -500 (float32: -52): r² ≥ 2^(2j-2) ≥ tiny · 2^20
    remedy = "— fits are scale-equivariant: μ scales with that constant, Σ and reg_covar with its square"
    if j > top:
        what = f"covariances would be ~{_pow10(2 * math.log10(r))}"
        if scatter:
            what += (
                f" and the posterior's W_k⁻¹ = W0⁻¹ + scatter (PRML 10.62), sums over N = {n:.15g} rows, "
                f"~{_pow10(2 * math.log10(r) + math.log10(n))}"
            )
        raise ValueError(
            f"the data's scale (~{r:.0e}, the largest half-range of a column) squares past {name}'s range "
            f"(its {what}, above the largest {name} {fi.max:.3g} or within 4 of it): divide the data by a constant "
            f"such as 2**{j} {remedy}"
        )
    if j < bottom:
        raise ValueError(
            f"the data's scale (~{r:.0e}, the largest half-range of a column) squares below {name}'s range "
            f"(its covariances would be ~{_pow10(2 * math.log10(r))}, within 2^20 of the smallest normal {name}, "
            f"{fi.tiny:.3g}, or below it, where their digits are lost): multiply the data by a constant such as "
            f"2**{-j} {remedy}"
        )
    scale = UNSCALED if abs(j) <= SAFE_LOG2[lo.dtype] else DataScale(j)
    if not scale.reg_down(reg_covar) <= fi.max:
        raise ValueError(
            f"reg_covar = {reg_covar:g} is ~{_pow10(math.log10(reg_covar) - 2 * math.log10(r))} times the data's "
            f"squared scale (~{_pow10(2 * math.log10(r))}): the covariances would be reg_covar·I whatever the data; "
            "use a reg_covar relative to the data's scale"
        )
    return scale


def _pow10(log10: float) -> str:
    """10^log10 as "1e+400", for magnitudes past float range."""
    return f"1e{math.floor(log10 + 0.5):+d}"
