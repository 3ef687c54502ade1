"""``BayesianGaussianMixture``: scikit-learn's estimator of the same name, backed by ``fit_vb``
(closed-form variational Bayes, PRML §10.2) or ``fit_svi_bayes`` (Pyro SVI on the same model).

The prior is scikit-learn's, as one ``NormalWishartPrior(alpha0, m0, beta0, nu0, W0)``:
``weight_concentration_prior`` = alpha0 (default 1/K; the Dirichlet's, or the Dirichlet process's
concentration), ``mean_precision_prior`` = beta0 (default 1), ``mean_prior`` = m0 (default the data
mean), ``degrees_of_freedom_prior`` = nu0 (default D), ``covariance_prior`` = W0⁻¹ in the type's shape
(default the data's covariance: full/tied ``np.cov(X.T)``, diag the variances, spherical their mean).

Parity: from the same responsibilities the posterior equals scikit-learn's iteration for iteration
(``tests/sklearn``). Differences, by design:

- ``lower_bound_`` is scikit-learn's bound (PRML 10.70 without the constants it drops) at the
  *returned* posterior and responsibilities: ``fit_.elbo[-1]`` (the full bound, every constant) less
  those constants; scikit-learn's is the one before its last E-step (less than ``tol`` apart once
  converged).
- ``reg_covar``: variational Bayes needs none (the Wishart prior keeps every W_k⁻¹ positive definite);
  it is passed to ``fit_vb`` only if that takes it. scikit-learn adds N_k·reg_covar·I to W_k⁻¹.
- ``init_params`` as for ``GaussianMixture``: Θ₀ from ppl_gmm's start, then r₀ = e_step(X, Θ₀).
- ``score_samples`` is ln Σ_k ρ_ik (PRML 10.46), as scikit-learn; ppl_gmm's posterior predictive
  density (the Student-t mixture, PRML 10.81) is ``fit_.score_samples(X)``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch
from sklearn.utils import check_array

from ..core.linalg import cholesky, inverse_from_cholesky
from ..core.params import GMMParams
from ..core.priors import NormalWishartPrior
from ..core.validation import check_positive
from ..core.vb_posterior import VBPosterior, prior_constant
from ..inference.svi_bayes import fit_svi_bayes
from ..inference.vb import fit_vb
from ..results.vb_fit import VBFit
from .base import (
    MixtureEstimator,
    check_precisions,
    covariances_from_precisions,
    precisions_from_covariances,
    to_full,
    to_sklearn_shape,
)

__all__ = ["BayesianGaussianMixture"]

WEIGHT_PRIORS = {"dirichlet_process": "dirichlet_process", "dirichlet_distribution": "dirichlet"}


class BayesianGaussianMixture(MixtureEstimator):
    """Variational Bayesian Gaussian mixture (``fit_vb``) with scikit-learn's
    ``BayesianGaussianMixture`` interface.

    Parameters
    ----------
    n_components, covariance_type, tol, reg_covar, max_iter, n_init, init_params,
    weight_concentration_prior_type, weight_concentration_prior, mean_precision_prior, mean_prior,
    degrees_of_freedom_prior, covariance_prior, random_state, warm_start, verbose, verbose_interval
        scikit-learn's, with its names and defaults (module docstring for the prior's mapping).
    method : {"vb", "svi"}
        ``fit_vb`` (closed form, the default) or ``fit_svi_bayes`` (``max_iter`` SVI steps; full
        covariance and a finite Dirichlet only).
    dtype : numpy.float64 (default) or numpy.float32
        The precision of the fit; inputs and outputs are float64 numpy arrays.

    Attributes
    ----------
    weights_, means_, covariances_, precisions_, precisions_cholesky_
        The posterior's point summaries in scikit-learn's shapes: E[π_k], m_k, E[Λ_k]⁻¹ = W_k⁻¹ / nu_k.
    weight_concentration_ ((K,), or the sticks' (a, b) for the Dirichlet process), mean_precision_
    (beta_k), degrees_of_freedom_ (nu_k; one value for "tied"), and the resolved priors
    weight_concentration_prior_, mean_precision_prior_, mean_prior_, degrees_of_freedom_prior_,
    covariance_prior_; converged_, n_iter_, lower_bound_, n_features_in_, feature_names_in_.
    fit_ : VBFit
        ppl_gmm's result (``fit_.posterior``, ``fit_.elbo`` the full bound, ``fit_.prior``).
    """

    _methods = ("vb", "svi")
    _prior: NormalWishartPrior
    _prior_attributes: dict[str, Any]

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
        weight_concentration_prior_type: str = "dirichlet_process",
        weight_concentration_prior: float | None = None,
        mean_precision_prior: float | None = None,
        mean_prior: Any = None,
        degrees_of_freedom_prior: float | None = None,
        covariance_prior: Any = None,
        random_state: Any = None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = 10,
        method: str = "vb",
        dtype: Any = np.float64,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.method = method
        self.dtype = dtype

    # --- checks: the prior ---------------------------------------------------------------------
    def _check_params(self, X: np.ndarray, weights: np.ndarray | None) -> None:
        n, d = X.shape
        k, ct = self.n_components, self.covariance_type
        if self.weight_concentration_prior_type not in WEIGHT_PRIORS:
            raise ValueError(
                f"weight_concentration_prior_type must be one of {sorted(WEIGHT_PRIORS)}, "
                f"got {self.weight_concentration_prior_type!r}"
            )
        if self.method == "svi" and (ct != "full" or self.weight_concentration_prior_type != "dirichlet_distribution"):
            raise ValueError(
                "method='svi' (fit_svi_bayes) fits covariance_type='full' with "
                "weight_concentration_prior_type='dirichlet_distribution' only"
            )

        def scalar(value: Any, name: str, default: float) -> float:
            return default if value is None else check_positive(value, name)

        alpha0 = scalar(self.weight_concentration_prior, "weight_concentration_prior", 1 / k)
        beta0 = scalar(self.mean_precision_prior, "mean_precision_prior", 1.0)
        w = np.ones(n) if weights is None else weights  # frequency weights: the moments of the repeated rows
        m0 = w @ X / w.sum()
        if self.mean_prior is not None:
            m0 = check_array(self.mean_prior, ensure_2d=False, dtype=np.float64, input_name="mean_prior")
        if m0.shape != (d,):
            raise ValueError(f"mean_prior must have shape ({d},), got {m0.shape}")
        nu0 = float(d) if self.degrees_of_freedom_prior is None else self.degrees_of_freedom_prior
        if isinstance(nu0, bool) or not isinstance(nu0, numbers.Real) or not nu0 > d - 1:
            raise ValueError(f"degrees_of_freedom_prior must be a number > D − 1 = {d - 1}, got {nu0!r}")
        if self.covariance_prior is None:
            if not w.sum() > 1:
                raise ValueError("the default covariance_prior needs sum(sample_weight) > 1; pass covariance_prior")
            xc = X - w @ X / w.sum()
            data_cov = (w * xc.T) @ xc / (w.sum() - 1)  # np.cov(X.T) of the repeated rows
            cov_prior = data_cov if ct in ("full", "tied") else np.diag(data_cov).copy()
            cov_prior = cov_prior.mean() if ct == "spherical" else cov_prior
        elif ct == "spherical":
            cov_prior = check_positive(self.covariance_prior, "covariance_prior")
        elif ct == "diag":  # (D,) positive
            value = self.covariance_prior
            cov_prior = check_array(value, ensure_2d=False, dtype=np.float64, input_name="covariance_prior")
            if cov_prior.shape != (d,) or np.any(cov_prior <= 0):
                raise ValueError(f"covariance_prior must be positive with shape ({d},), got {cov_prior.shape}")
        else:  # one (D, D) symmetric positive definite matrix (full, tied)
            cov_prior = check_precisions(self.covariance_prior, "covariance_prior", "tied", 1, d)
        w0_inv = np.asarray(cov_prior, dtype=np.float64)  # W0⁻¹ in the type's shape (scikit-learn's reading)
        w0_inv = w0_inv if w0_inv.ndim == 2 else np.diag(np.broadcast_to(w0_inv, (d,)))
        if self.covariance_prior is None and np.linalg.eigvalsh(w0_inv)[0] <= 1e-12 * np.abs(w0_inv).max():
            raise ValueError(
                "the default covariance_prior, the data's covariance, is singular (N <= D, or constant or collinear "
                "columns), so the Wishart prior on the precisions is improper: pass a positive definite "
                "covariance_prior, or drop the redundant columns"
            )
        w0 = inverse_from_cholesky(cholesky(torch.as_tensor(w0_inv)[None]))[0]
        self._prior = NormalWishartPrior(alpha0, m0, beta0, float(nu0), w0)
        self._prior_attributes = {
            "weight_concentration_prior_": alpha0,
            "mean_precision_prior_": beta0,
            "mean_prior_": m0,
            "degrees_of_freedom_prior_": float(nu0),
            "covariance_prior_": cov_prior,
        }

    # --- the fit -------------------------------------------------------------------------------
    def _fit_once(self, x: torch.Tensor, init: str | GMMParams | VBPosterior, seed: int, weights: Any) -> VBFit:
        if self.method == "svi":
            return fit_svi_bayes(x, self.n_components, self._prior, num_steps=self.max_iter, init=init, seed=seed)
        return fit_vb(
            x,
            self.n_components,
            self._prior,
            init=init,
            max_iter=self.max_iter,
            tol=self.tol,
            seed=seed,
            dtype=x.dtype,
            covariance_type=self.covariance_type,
            weight_prior=WEIGHT_PRIORS[self.weight_concentration_prior_type],
            sample_weight=weights,
        )

    def _run_fits(self, x: torch.Tensor, seed: int, warm: bool, weights: Any) -> VBFit:
        if warm:  # continue from the fitted posterior: r₀ = its E-step (scikit-learn's warm_start)
            post = self.fit_.posterior
            return self._restarts(lambda s: self._fit_once(x, post, s, weights), seed, 1)
        init = self._ppl_init()

        def run(s: int) -> VBFit:
            return self._fit_once(x, init if init is not None else self._from_data(x, s), s, weights)

        return self._restarts(run, seed, self.n_init)

    def _set_fitted(self, fit: VBFit, n: float) -> None:
        post, ct = fit.posterior, self.covariance_type
        nu = post.nu.double().numpy()
        prec = nu[:, None, None] * post.W.double().numpy()  # E[Λ_k] = nu_k W_k (PRML B.80)
        self.weights_ = fit.weights.double().numpy()
        self.means_ = post.m.double().numpy()
        self.covariances_ = to_sklearn_shape(covariances_from_precisions(prec, "full", *self.means_.shape), ct)
        self.precisions_, self.precisions_cholesky_ = precisions_from_covariances(self.covariances_, ct)
        self.mean_precision_ = post.beta.double().numpy()
        self.degrees_of_freedom_ = float(nu[0]) if ct == "tied" else nu
        stick_b = getattr(post, "stick_b", None)
        alpha = post.alpha.double().numpy()
        self.weight_concentration_ = alpha if stick_b is None else (alpha, stick_b.double().numpy())
        self.lower_bound_ = self._sklearn_bound(fit, n)
        for name, value in self._prior_attributes.items():
            setattr(self, name, value)

    def _sklearn_bound(self, fit: VBFit, n: float) -> float:
        """scikit-learn's ``lower_bound_``: the full bound (PRML 10.70–10.77) at the returned (r, q),
        ``fit_.elbo[-1]``, less the constants scikit-learn drops (at the M-step optimum its bound is
        H[r] − Σ_k [ln B(W_k, nu_k) + D(D−1)/4 ln π] − ln C(q(weights)) − (D/2) Σ_k ln beta_k):

            −(N D / 2) ln 2π + ln C(prior weights) + K ln B(W0, nu0) + (K D / 2) ln beta0 + K D(D−1)/4 ln π
        """
        k, d = self.n_components, fit.posterior.d
        wp = WEIGHT_PRIORS[self.weight_concentration_prior_type]
        const = float(prior_constant(self._prior, k, self.covariance_type, wp, torch.float64))
        dropped = -0.5 * n * d * math.log(2 * math.pi) + const + 0.25 * k * d * (d - 1) * math.log(math.pi)
        return float(fit.elbo[-1]) - dropped

    # --- prediction ----------------------------------------------------------------------------
    def _weighted_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.fit_.posterior.log_rho(x)  # ln ρ_ik, PRML 10.46

    def _sample_params(self) -> GMMParams:
        """The point summaries scikit-learn samples from: E[π], m_k and E[Λ_k]⁻¹."""
        k, d = self.means_.shape
        cov = to_full(self.covariances_, self.covariance_type, k, d)
        as_t = torch.as_tensor
        return GMMParams(as_t(self.weights_ / self.weights_.sum()), as_t(self.means_), as_t(cov))
