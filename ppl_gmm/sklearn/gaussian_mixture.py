"""``GaussianMixture``: scikit-learn's estimator of the same name, backed by ``fit_cavi`` (EM = CAVI,
eq. 20–21/28), ``fit_map`` (MAP-EM) or ``fit_svi`` (Pyro SVI, full covariance).

Parity: from the same start (``weights_init``, ``means_init``, ``precisions_init``) and the same number
of iterations, the fitted attributes equal scikit-learn's to round-off (both iterate E-step, M-step;
tested to 1e-8 in all four covariance types). Differences, by design:

- ``lower_bound_`` is the mean log-likelihood per sample, (1/N) eq. 26, at the *returned* Θ (so it
  equals ``score(X_train)``); scikit-learn's is the one at the Θ before its last M-step (they differ
  by less than ``tol`` once converged). With ``max_iter=0`` it is eq. 26 at Θ₀ (scikit-learn: −inf).
- The stopping rule is ``fit_cavi``'s: |Δ eq. 18| / N < ``tol`` after each M-step, which is met
  one iteration before scikit-learn's |Δ mean log-likelihood| < ``tol`` typically is.
- ``init_params`` maps to ppl_gmm's starts: "kmeans" (Lloyd from k-means++ seeds), "k-means++"
  (``init="kmeans++"``: every row assigned to its nearest k-means++ centre, then an M-step, where
  scikit-learn gives each component only its centre's row), "random" (``init="random"``: Dirichlet
  responsibilities, where scikit-learn normalises uniform draws), "random_from_data" (as
  scikit-learn: K distinct rows as means, equal weights, covariances reg_covar·I). The random draws
  come from ``random_state`` as ppl_gmm's ``seed`` (``random_state=0`` is ``seed=0``), not from
  scikit-learn's generator, so a given ``random_state`` starts elsewhere than scikit-learn's.
- Degenerate fits raise ``EmptyComponentError`` / ``DegenerateComponentError`` (both ``ValueError``)
  naming the component, where scikit-learn raises a generic ``ValueError`` or lets a weight vanish.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ..core.gmm import weighted_log_prob
from ..core.init import initial_params
from ..core.params import GMMParams
from ..core.priors import NormalWishartPrior
from ..inference.cavi import fit_cavi
from ..inference.map import fit_map
from ..inference.svi import fit_svi
from ..results.gmm_fit import GMMFit
from .base import (
    MixtureEstimator,
    check_precisions,
    covariances_from_precisions,
    precisions_from_covariances,
    to_sklearn_shape,
)

__all__ = ["GaussianMixture"]


class GaussianMixture(MixtureEstimator):
    """Gaussian mixture by EM (``fit_cavi``), MAP-EM (``fit_map``) or SVI (``fit_svi``), with
    scikit-learn's ``GaussianMixture`` interface.

    Parameters
    ----------
    n_components, covariance_type, tol, reg_covar, max_iter, n_init, init_params, weights_init,
    means_init, precisions_init, random_state, warm_start, verbose, verbose_interval
        scikit-learn's, with its names and defaults (see the module docstring for the differences).
    method : {"cavi", "map", "svi"}
        The fit: ``fit_cavi`` (EM, the default), ``fit_map`` (MAP-EM under ``prior``) or ``fit_svi``
        (``max_iter`` gradient steps; full covariance only).
    prior : NormalWishartPrior or None
        ``method="map"`` only; None means ``default_prior(X, n_components)``.
    dtype : numpy.float64 (default) or numpy.float32
        The precision of the fit; inputs and outputs are float64 numpy arrays.

    Attributes
    ----------
    weights_ (K,), means_ (K, D), covariances_, precisions_, precisions_cholesky_
        In scikit-learn's shapes (``ppl_gmm.sklearn.base``).
    converged_, n_iter_, lower_bound_, lower_bounds_, n_features_in_, feature_names_in_
        ``lower_bound_`` = (1/N) eq. 26 at the returned Θ; ``lower_bounds_`` the same per iteration.
    fit_ : GMMFit
        ppl_gmm's result, with its full traces (``fit_.elbo`` eq. 18, ``fit_.log_likelihood`` eq. 26).
    """

    _methods = ("cavi", "map", "svi")

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weights_init: Any = None,
        means_init: Any = None,
        precisions_init: Any = None,
        random_state: Any = None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = 10,
        method: str = "cavi",
        prior: NormalWishartPrior | None = None,
        dtype: Any = np.float64,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.method = method
        self.prior = prior
        self.dtype = dtype

    # --- checks --------------------------------------------------------------------------------
    def _check_params(self, X: np.ndarray, weights: np.ndarray | None) -> None:
        k, d = self.n_components, X.shape[1]
        if self.prior is not None and not isinstance(self.prior, NormalWishartPrior):
            raise TypeError(f"prior must be a NormalWishartPrior or None, got {type(self.prior).__name__}")
        if self.prior is not None and self.method != "map":
            raise ValueError(f"prior is used by method='map' only, got method={self.method!r}")
        if self.method == "svi" and self.covariance_type != "full":
            raise ValueError(f"method='svi' fits full covariances only, got covariance_type={self.covariance_type!r}")
        weights = means = cov = None
        if self.weights_init is not None:
            weights = np.asarray(self.weights_init, dtype=np.float64)
            if weights.shape != (k,):
                raise ValueError(f"weights_init must have shape ({k},), got {weights.shape}")
            if np.any(weights < 0) or np.any(weights > 1) or not np.isclose(weights.sum(), 1.0, rtol=0, atol=1e-8):
                raise ValueError(f"weights_init must lie in [0, 1] and sum to 1, got sum {weights.sum():.8g}")
        if self.means_init is not None:
            means = np.asarray(self.means_init, dtype=np.float64)
            if means.shape != (k, d):
                raise ValueError(f"means_init must have shape ({k}, {d}), got {means.shape}")
        if self.precisions_init is not None:
            prec = check_precisions(self.precisions_init, "precisions_init", self.covariance_type, k, d)
            cov = covariances_from_precisions(prec, self.covariance_type, k, d)
        self._user_start = (weights, means, cov)

    # --- the fit -------------------------------------------------------------------------------
    def _start(self, x: torch.Tensor, seed: int) -> GMMParams:
        """Θ₀: the user's ``*_init`` where given, the rest from ``init_params`` (scikit-learn's rule)."""
        weights, means, cov = self._user_start
        if weights is None or means is None or cov is None:
            init = self._ppl_init()
            base = (
                initial_params(x, self.n_components, init, seed, self.covariance_type, self.reg_covar)
                if init is not None
                else self._from_data(x, seed)
            )
            weights = base.alpha if weights is None else weights
            means = base.mu if means is None else means
            cov = base.cov if cov is None else cov
        as_t = lambda v: torch.as_tensor(v, dtype=x.dtype)
        return GMMParams(as_t(weights), as_t(means), as_t(cov))

    def _fit_once(self, x: torch.Tensor, theta0: GMMParams, seed: int, weights: np.ndarray | None) -> GMMFit:
        k = self.n_components
        if self.method == "svi":
            steps: dict[str, Any] = {"num_steps": self.max_iter, "tol": self.tol, "reg_covar": self.reg_covar}
            return fit_svi(x, k, init=theta0, seed=seed, dtype=x.dtype, **steps)
        common: dict[str, Any] = {
            "init": theta0,
            "covariance_type": self.covariance_type,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "reg_covar": self.reg_covar,
            "seed": seed,
            "dtype": x.dtype,
        }
        if self.method == "map":
            return fit_map(x, k, self.prior, **common, sample_weight=weights)
        return fit_cavi(x, k, **common, sample_weight=weights)

    def _run_fits(self, x: torch.Tensor, seed: int, warm: bool, weights: np.ndarray | None) -> GMMFit:
        if warm:  # continue from the fitted Θ (scikit-learn's warm_start: one start, no initialisation)
            start = self.fit_.params.to(x.dtype)
            return self._restarts(lambda s: self._fit_once(x, start, s, weights), seed, 1)
        fixed = all(v is not None for v in self._user_start)  # every start is the same Θ₀
        n_init = 1 if fixed else self.n_init
        return self._restarts(lambda s: self._fit_once(x, self._start(x, s), s, weights), seed, n_init)

    def _set_fitted(self, fit: GMMFit, n: float) -> None:
        p, ct = fit.params, self.covariance_type
        self.weights_ = p.alpha.double().numpy()
        self.means_ = p.mu.double().numpy()
        self.covariances_ = to_sklearn_shape(p.cov.double().numpy(), ct)
        self.precisions_, self.precisions_cholesky_ = precisions_from_covariances(self.covariances_, ct)
        ll = fit.log_likelihood.double().numpy()
        self.lower_bound_ = float(ll[-1]) / n  # (1/N) eq. 26 at the returned Θ
        self.lower_bounds_ = ll[: fit.n_iter] / n

    # --- prediction ----------------------------------------------------------------------------
    def _weighted_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return weighted_log_prob(x, self.fit_.params)  # ln α_k + ln N(x_i | μ_k, Σ_k), eq. 15

    def _sample_params(self) -> GMMParams:
        return self.fit_.params.to(torch.float64)

    def bic(self, X: Any) -> float:
        """Bayesian information criterion −2 ln p(X | Θ) + p ln N (scikit-learn's parameter count p)."""
        check_is_fitted(self)
        return self.fit_.bic(self._validate(X, reset=False))

    def aic(self, X: Any) -> float:
        """Akaike information criterion −2 ln p(X | Θ) + 2 p."""
        check_is_fitted(self)
        return self.fit_.aic(self._validate(X, reset=False))

    def _n_parameters(self) -> int:
        """Free parameters (weights K − 1, means K·D, covariances), as scikit-learn counts them."""
        return self.fit_.n_parameters()
