"""What the two scikit-learn estimators share: parameter and data checks, seeds, the sklearn shapes of
the covariances, the fit/predict/sample methods, ``verbose`` output and the convergence warning.

Shapes (scikit-learn's, per ``covariance_type``): ``covariances_`` full (K, D, D), tied (D, D),
diag (K, D), spherical (K,); ``precisions_`` the same shapes holding Σ⁻¹ (diag/spherical: 1 / σ²);
``precisions_cholesky_`` U with Σ⁻¹ = U Uᵀ, U = L⁻ᵀ for Σ = L Lᵀ (diag/spherical: 1 / σ). ppl_gmm
stores every covariance as a full (K, D, D) matrix (``GMMParams``); :func:`to_sklearn_shape` and
:func:`to_full` convert, exactly (a diagonal is taken or embedded, a tied matrix shared).
"""

from __future__ import annotations

import numbers
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning
from sklearn.utils import check_array
from sklearn.utils.validation import check_is_fitted

from ..core.errors import ConvergenceWarning as PackageConvergenceWarning
from ..core.gaussian import logsumexp_rows, normalise_log
from ..core.linalg import cholesky, inverse_from_cholesky, precision_cholesky
from ..core.params import GMMParams
from ..core.rng import resolve_seed
from ..core.source_checks import check_sample_weight
from ..core.validation import check_bool, check_covariance_type, check_int, check_positive
from ..datasets import make_mixture

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - scikit-learn 1.3-1.5

    def _validate_data(estimator: Any, X: Any, **kwargs: Any) -> np.ndarray:
        return estimator._validate_data(X, **kwargs)


__all__ = [
    "ConvergenceWarning",
    "MixtureEstimator",
    "to_sklearn_shape",
    "to_full",
    "precisions_from_covariances",
    "torch_dtype",
    "seed_from_random_state",
    "check_precisions",
    "covariances_from_precisions",
]

#: scikit-learn's ``init_params`` and the ppl_gmm start each maps to ("random_from_data" is built here)
INIT_PARAMS = {"kmeans": "kmeans", "k-means++": "kmeans++", "random": "random", "random_from_data": None}


class ConvergenceWarning(PackageConvergenceWarning, SklearnConvergenceWarning):
    """The estimators' convergence warning: both ``ppl_gmm.ConvergenceWarning`` and scikit-learn's
    ``sklearn.exceptions.ConvergenceWarning``, so filters written for either catch it."""


# --- conversions ------------------------------------------------------------------------------
def torch_dtype(dtype: Any) -> torch.dtype:
    """The torch dtype of the estimators' ``dtype`` parameter (numpy type, its name, or torch dtype)."""
    table = {"float64": torch.float64, "float32": torch.float32}
    if isinstance(dtype, torch.dtype) and dtype in (torch.float64, torch.float32):
        return dtype
    try:
        name = np.dtype(dtype).name if dtype is not None else None
    except TypeError:
        name = None
    if name not in table:
        raise ValueError(f"dtype must be numpy.float64 (the default) or numpy.float32, got {dtype!r}")
    return table[name]


def seed_from_random_state(random_state: Any) -> int:
    """ppl_gmm's ``seed`` from scikit-learn's ``random_state``: a non-negative int is the seed itself
    (so ``random_state=0`` is ``seed=0`` of the ``pg.fit_*`` functions); None draws one from OS entropy;
    a ``RandomState`` or ``Generator`` gives one draw (and advances, as scikit-learn's do)."""
    if random_state is None or (isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool)):
        if random_state is not None and random_state < 0:
            raise ValueError(f"random_state must be None, a non-negative integer or a RandomState, got {random_state}")
        return resolve_seed(None if random_state is None else int(random_state))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**63 - 1))
    raise TypeError(f"random_state must be None, a non-negative integer or a RandomState, got {random_state!r}")


def to_sklearn_shape(cov: np.ndarray, covariance_type: str) -> np.ndarray:
    """Full (K, D, D) covariances (or precisions) in scikit-learn's shape for ``covariance_type``."""
    if covariance_type == "full":
        return cov
    if covariance_type == "tied":
        return cov[0]
    diag = np.diagonal(cov, axis1=1, axis2=2)
    return diag.copy() if covariance_type == "diag" else diag.mean(1)


def to_full(value: np.ndarray, covariance_type: str, k: int, d: int) -> np.ndarray:
    """The inverse of :func:`to_sklearn_shape`: scikit-learn's shape to full (K, D, D) matrices."""
    if covariance_type == "full":
        return np.asarray(value, dtype=np.float64)
    if covariance_type == "tied":
        return np.broadcast_to(value, (k, d, d)).copy()
    diag = np.broadcast_to(np.asarray(value, dtype=np.float64).reshape(k, -1), (k, d))
    return np.einsum("kd,de->kde", diag, np.eye(d))


def precisions_from_covariances(cov: np.ndarray, covariance_type: str) -> tuple[np.ndarray, np.ndarray]:
    """(precisions_, precisions_cholesky_) from ``covariances_`` in scikit-learn's shapes."""
    if covariance_type in ("diag", "spherical"):
        return 1.0 / cov, 1.0 / np.sqrt(cov)
    full = torch.as_tensor(cov if covariance_type == "full" else cov[None], dtype=torch.float64)
    u = precision_cholesky(full)  # U_k = L_k⁻ᵀ, Σ_k⁻¹ = U_k U_kᵀ
    prec = (u @ u.transpose(-1, -2)).numpy()
    u_np = u.numpy()
    return (prec, u_np) if covariance_type == "full" else (prec[0], u_np[0])


def covariances_from_precisions(prec: np.ndarray, covariance_type: str, k: int, d: int) -> np.ndarray:
    """Full (K, D, D) covariances Σ_k = P_k⁻¹ from precisions in scikit-learn's shape."""
    if covariance_type in ("diag", "spherical"):
        return to_full(1.0 / np.asarray(prec), covariance_type, k, d)
    full = torch.as_tensor(to_full(prec, covariance_type, k, d))
    cov = inverse_from_cholesky(cholesky(full)).numpy()
    return 0.5 * (cov + np.swapaxes(cov, 1, 2))


def check_precisions(value: Any, name: str, covariance_type: str, k: int, d: int) -> np.ndarray:
    """A user's precisions (or covariances) in scikit-learn's shape for ``covariance_type``:
    finite, positive (diag/spherical) or symmetric positive definite (full/tied)."""
    shape = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[covariance_type]
    arr = check_array(value, dtype=np.float64, ensure_2d=False, allow_nd=True, input_name=name)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape} for covariance_type={covariance_type!r}, got {arr.shape}")
    if covariance_type in ("diag", "spherical"):
        if np.any(arr <= 0):
            raise ValueError(f"{name} must be positive for covariance_type={covariance_type!r}")
        return arr
    mats = arr.reshape(-1, d, d)
    for j, m in enumerate(mats):
        if not np.allclose(m, m.T) or np.any(np.linalg.eigvalsh(m) <= 0):
            which = f" (component {j})" if covariance_type == "full" else ""
            raise ValueError(f"{name} must be symmetric positive definite{which}")
    return arr


# --- the estimator base -----------------------------------------------------------------------
class MixtureEstimator(DensityMixin, BaseEstimator):
    """Fit/predict/sample shared by ``GaussianMixture`` and ``BayesianGaussianMixture``.

    A subclass implements ``_check_params(X, weights)``, ``_run_fits(x, seed, warm, weights)`` (the
    ppl_gmm fit, after restarts), ``_set_fitted(fit, n)`` (n = N or Σ sample_weight),
    ``_weighted_log_prob(x)`` (ln α_k + ln N, or the VB ln ρ_ik) and ``_sample_params()`` (the
    GMMParams ``sample`` draws from)."""

    _methods: tuple[str, ...] = ()

    # --- checks (in fit, scikit-learn's convention) -------------------------------------------
    def _check_common(self, n: int) -> None:
        check_int(self.n_components, "n_components", 1)
        check_covariance_type(self.covariance_type)
        check_positive(self.tol, "tol", allow_zero=True)
        check_positive(self.reg_covar, "reg_covar", allow_zero=True)
        check_int(self.max_iter, "max_iter", 0)
        check_int(self.n_init, "n_init", 1)
        if self.init_params not in INIT_PARAMS:
            raise ValueError(f"init_params must be one of {sorted(INIT_PARAMS)}, got {self.init_params!r}")
        check_bool(self.warm_start, "warm_start")
        if not isinstance(self.verbose, numbers.Integral) or self.verbose < 0:  # a bool is accepted, as in sklearn
            raise ValueError(f"verbose must be an integer >= 0 (or a bool), got {self.verbose!r}")
        check_int(self.verbose_interval, "verbose_interval", 1)
        if self.method not in self._methods:
            raise ValueError(f"method must be one of {', '.join(map(repr, self._methods))}, got {self.method!r}")
        torch_dtype(self.dtype)
        if n < self.n_components:
            raise ValueError(
                f"Expected n_samples >= n_components but got n_components = {self.n_components}, n_samples = {n}"
            )

    def _ppl_init(self) -> str | None:
        """ppl_gmm's ``init`` for ``init_params`` (None: "random_from_data", built by :meth:`_from_data`)."""
        return INIT_PARAMS[self.init_params]

    def _from_data(self, x: torch.Tensor, seed: int) -> GMMParams:
        """scikit-learn's "random_from_data" start: K distinct rows as means, equal weights and
        covariances reg_covar·I (what its M-step gives from one-hot responsibilities on those rows)."""
        if self.reg_covar <= 0:
            raise ValueError("init_params='random_from_data' needs reg_covar > 0 (its covariances are reg_covar·I)")
        n, d = x.shape
        k = self.n_components
        rows = np.random.default_rng(seed).choice(n, size=k, replace=False)
        cov = torch.eye(d, dtype=x.dtype).expand(k, d, d) * self.reg_covar
        return GMMParams(torch.full((k,), 1.0 / k, dtype=x.dtype), x[torch.as_tensor(rows)], cov)

    def _check_sample_weight(self, sample_weight: Any, n: int) -> np.ndarray | None:
        if sample_weight is None:
            return None
        w = check_array(sample_weight, ensure_2d=False, dtype=np.float64, input_name="sample_weight")
        if w.size and not np.any(w):
            raise ValueError("sample_weight is all zero: at least one row needs a positive weight")
        return check_sample_weight(w, n).numpy()  # 1-D, one per row, finite, >= 0

    def _validate(self, X: Any, reset: bool) -> np.ndarray:
        return _validate_data(self, X, dtype=np.float64, ensure_min_samples=2 if reset else 1, reset=reset)

    # --- fit ----------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> MixtureEstimator:
        """Fit the mixture (``n_init`` starts, the best kept); returns ``self``."""
        self.fit_predict(X, y, sample_weight=sample_weight)
        return self

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> np.ndarray:
        """Fit, then the most responsible component of each training row (N,)."""
        X = self._validate(X, reset=True)
        self._check_common(X.shape[0])
        weights = self._check_sample_weight(sample_weight, X.shape[0])
        if weights is not None and self.method == "svi":  # fit_svi / fit_svi_bayes take no weights
            raise ValueError(
                f"sample_weight needs a closed-form method ({', '.join(m for m in self._methods if m != 'svi')}); "
                "method='svi' takes no sample weights"
            )
        self._check_params(X, weights)
        warm = self.warm_start and hasattr(self, "fit_")
        x = torch.tensor(X, dtype=torch_dtype(self.dtype))  # a copy: X may be read-only
        seed = seed_from_random_state(self.random_state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PackageConvergenceWarning)  # re-issued below, sklearn's way
            fit = self._run_fits(x, seed, warm, weights)
        self.fit_ = fit
        self.converged_ = bool(fit.converged)
        self.n_iter_ = int(fit.n_iter)
        self._set_fitted(fit, X.shape[0] if weights is None else float(weights.sum()))
        if not self.converged_ and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init parameters, or increase "
                "max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
                stacklevel=2,
            )
        return np.asarray(fit.gamma).argmax(1)

    def _restarts(self, run: Callable[[int], Any], seed: int, n_init: int) -> Any:
        """``run(s)`` for the restart seeds of ``seed`` (``ascent.best_of_restarts``), printing the
        ``verbose`` lines of each restart after it."""
        from ..inference.ascent import best_of_restarts

        count = iter(range(n_init))

        def verbose_run(s: int) -> Any:
            start = time.perf_counter()
            fit = run(s)
            self._print_verbose(next(count), fit, time.perf_counter() - start)
            return fit

        return best_of_restarts(verbose_run if self.verbose else run, seed, n_init)

    def _print_verbose(self, init: int, fit: Any, seconds: float) -> None:
        """scikit-learn's ``verbose`` lines, from the fit's trace (per-iteration change of the objective)."""
        print(f"Initialization {init}")
        trace = fit.elbo.double().numpy() / fit.gamma.shape[0]
        times = fit.times.numpy() if getattr(fit, "times", None) is not None else np.zeros(len(trace))
        for it in range(self.verbose_interval, fit.n_iter + 1, self.verbose_interval):
            if self.verbose >= 2:
                change = trace[it - 1] - trace[it - 2] if it >= 2 else float("nan")
                print(f"  Iteration {it}\t time lapse {times[it - 1]:.5f}s\t ll change {change:.5f}")
            else:
                print(f"  Iteration {it}")
        state = "converged" if fit.converged else "did not converge"
        if self.verbose >= 2:
            print(f"Initialization {state}. time lapse {seconds:.5f}s\t lower bound {trace[-1]:.5f}.")
        else:
            print(f"Initialization {state}.")

    # --- prediction ---------------------------------------------------------------------------
    def _log_prob(self, X: Any) -> torch.Tensor:
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        return self._weighted_log_prob(torch.as_tensor(X, dtype=self.fit_.gamma.dtype))

    def score_samples(self, X: Any) -> np.ndarray:
        """ln Σ_k exp(weighted log-probability) per row (N,): ln p(x_i | Θ) (eq. 26 per row) for
        ``GaussianMixture``; ln Σ_k ρ_ik (PRML 10.46) for ``BayesianGaussianMixture``, as scikit-learn."""
        return logsumexp_rows(self._log_prob(X)).double().numpy()  # eq. 26 per row

    def score(self, X: Any, y: Any = None) -> float:
        """Mean of :meth:`score_samples` over the rows."""
        return float(self.score_samples(X).mean())

    def predict(self, X: Any) -> np.ndarray:
        """The most responsible component of each row (N,) (int64)."""
        return self._log_prob(X).argmax(1).numpy()

    def predict_proba(self, X: Any) -> np.ndarray:
        """Responsibilities (N, K): eq. 20 (``GaussianMixture``), PRML 10.49 (Bayesian)."""
        return normalise_log(self._log_prob(X))[0].double().numpy()  # eq. 20

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """``n_samples`` draws (X (n, D) float64, y (n,) int64) from the fitted mixture (``weights_``,
        ``means_``, ``covariances_``), seeded from ``random_state``; sorted by component, as scikit-learn."""
        check_is_fitted(self)
        if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples!r}. The sampling requires at least one sample "
                "(an integer >= 1)."
            )
        x, z = make_mixture(int(n_samples), self._sample_params(), seed_from_random_state(self.random_state))
        order = torch.argsort(z, stable=True)
        return x[order].double().numpy(), z[order].numpy()

    # --- subclass hooks -----------------------------------------------------------------------
    def _check_params(self, X: np.ndarray, weights: np.ndarray | None) -> None:
        raise NotImplementedError

    def _run_fits(self, x: torch.Tensor, seed: int, warm: bool, weights: np.ndarray | None) -> Any:
        raise NotImplementedError

    def _set_fitted(self, fit: Any, n: float) -> None:
        raise NotImplementedError

    def _weighted_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _sample_params(self) -> GMMParams:
        raise NotImplementedError
