"""``ppl_gmm.sklearn``: parity with scikit-learn from the same start, Pipeline / GridSearchCV, sample
weights, the other methods, bad input, and the ImportError without scikit-learn.

Oracles: scikit-learn's own ``GaussianMixture`` / ``BayesianGaussianMixture`` (for the Bayesian one
started from the same responsibilities through its ``_initialize``, as ``tests/oracles.sklearn_bgm``),
repeated rows for integer weights, and ``oracles.map_estimate`` (a numerical maximiser) for MAP.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from sklearn import mixture
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import ppl_gmm as pg
from ppl_gmm.core.init import initial_params, initial_responsibilities
from ppl_gmm.sklearn import BayesianGaussianMixture, GaussianMixture
from ppl_gmm.sklearn import gaussian_mixture as gm_module

from oracles import map_estimate

TYPES = ["full", "tied", "diag", "spherical"]


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(3)
    centres = np.array([[0.0, 0.0], [6.0, 1.0], [1.0, 7.0]])
    scales = [np.array([[1.0, 0.4], [0.4, 0.8]]), np.eye(2) * 0.6, np.array([[0.5, -0.2], [-0.2, 1.2]])]
    x = np.concatenate([rng.multivariate_normal(c, s, size=n) for c, s, n in zip(centres, scales, (60, 50, 40))])
    return rng.permutation(x)


def _start(x, k, covariance_type):
    """A start in scikit-learn's *_init form (weights, means, precisions in the type's shape)."""
    p = initial_params(torch.as_tensor(x), k, "kmeans++", 0, covariance_type, 1e-6)
    prec = torch.linalg.inv(p.cov).numpy()
    prec = {"full": prec, "tied": prec[0], "diag": np.diagonal(prec, axis1=1, axis2=2), "spherical": prec[:, 0, 0]}
    return {"weights_init": p.alpha.numpy(), "means_init": p.mu.numpy(), "precisions_init": prec[covariance_type]}


def _close(a, b, rtol=1e-8):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


# --- 3. parity with scikit-learn ------------------------------------------------------------------
@pytest.mark.parametrize("covariance_type", TYPES)
def test_gaussian_mixture_equals_sklearn_from_the_same_start(blobs, covariance_type):
    start = _start(blobs, 3, covariance_type)
    kw = {"n_components": 3, "covariance_type": covariance_type, "max_iter": 20, "tol": 0.0, **start}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixture._base.ConvergenceWarning)  # tol=0: exactly max_iter, both warn
        ours = GaussianMixture(**kw).fit(blobs)
        ref = mixture.GaussianMixture(**kw).fit(blobs)
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        _close(getattr(ours, name), getattr(ref, name))
    assert ours.n_iter_ == ref.n_iter_ == 20 and not ours.converged_
    _close(ours.predict_proba(blobs), ref.predict_proba(blobs))
    _close(ours.score_samples(blobs), ref.score_samples(blobs))
    assert ours.lower_bound_ == pytest.approx(ref.score(blobs), rel=1e-10)  # (1/N) eq. 26 at the returned Θ
    assert ours.bic(blobs) == pytest.approx(ref.bic(blobs), rel=1e-10)
    assert ours.aic(blobs) == pytest.approx(ref.aic(blobs), rel=1e-10)
    np.testing.assert_array_equal(ours.predict(blobs), ref.predict(blobs))
    assert isinstance(ours.fit_, pg.GMMFit) and ours.fit_.covariance_type == covariance_type


def _sklearn_bgm_from(x, ours, resp0):
    """scikit-learn's estimator with our estimator's parameters, started from r₀ (its private
    ``_initialize`` is the VB M-step from r₀: it has no responsibility init)."""
    ref = mixture.BayesianGaussianMixture(
        **{k: v for k, v in ours.get_params().items() if k not in ("method", "dtype")}
    )
    ref._check_parameters(x)
    ref._initialize(x, resp0)
    return ref


@pytest.mark.parametrize("weight_prior", ["dirichlet_distribution", "dirichlet_process"])
@pytest.mark.parametrize("covariance_type", TYPES)
def test_bayesian_mixture_equals_sklearn_iteration_for_iteration(blobs, covariance_type, weight_prior):
    k, iters = 4, 15
    ours = BayesianGaussianMixture(
        n_components=k,
        covariance_type=covariance_type,
        weight_concentration_prior_type=weight_prior,
        init_params="k-means++",
        reg_covar=0.0,
        max_iter=iters,
        tol=0.0,
        random_state=5,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixture._base.ConvergenceWarning)
        ours.fit(blobs)
    resp0 = initial_responsibilities(torch.as_tensor(blobs), k, "kmeans++", 5).numpy()  # fit_vb's r₀ for seed 5
    ref = _sklearn_bgm_from(blobs, ours, resp0)
    for _ in range(iters):
        _, log_resp = ref._e_step(blobs)
        ref._m_step(blobs, log_resp)
    ref._set_parameters(ref._get_parameters())  # sets its weights_ and precisions_
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_", "mean_precision_"):
        _close(getattr(ours, name), getattr(ref, name))
    _close(ours.degrees_of_freedom_, ref.degrees_of_freedom_)
    for a, b in zip(np.atleast_2d(ours.weight_concentration_), np.atleast_2d(ref.weight_concentration_)):
        _close(a, b)
    _close(ours.predict_proba(blobs), ref.predict_proba(blobs))
    _close(ours.score_samples(blobs), ref.score_samples(blobs))
    for name in ("mean_prior_", "covariance_prior_", "degrees_of_freedom_prior_", "mean_precision_prior_"):
        _close(getattr(ours, name), getattr(ref, name))


@pytest.mark.parametrize("weight_prior", ["dirichlet_distribution", "dirichlet_process"])
@pytest.mark.parametrize("covariance_type", TYPES)
def test_bayesian_lower_bound_is_sklearns(blobs, covariance_type, weight_prior):
    """lower_bound_ = fit_.elbo[-1] (the full bound) less the constants scikit-learn drops; the same
    constants taken from the bound after the last M-step, fit_.elbo[-2], give scikit-learn's own
    ``lower_bound_`` (its bound after its last M-step) to 1e-10."""
    kw = {"covariance_type": covariance_type, "weight_concentration_prior_type": weight_prior}
    ours = BayesianGaussianMixture(
        n_components=3, init_params="k-means++", reg_covar=0.0, max_iter=8, tol=0.0, random_state=2, **kw
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixture._base.ConvergenceWarning)
        ours.fit(blobs)
    resp0 = initial_responsibilities(torch.as_tensor(blobs), 3, "kmeans++", 2).numpy()
    ref = _sklearn_bgm_from(blobs, ours, resp0)
    for _ in range(ours.n_iter_):
        log_prob_norm, log_resp = ref._e_step(blobs)
        ref._m_step(blobs, log_resp)
    dropped = float(ours.fit_.elbo[-1]) - ours.lower_bound_
    expected = ref._compute_lower_bound(log_resp, log_prob_norm)
    assert float(ours.fit_.elbo[-2]) - dropped == pytest.approx(expected, rel=1e-10)


# --- 2. Pipeline and GridSearchCV --------------------------------------------------------------
def test_pipeline_equals_sklearns_pipeline(blobs):
    scaled = StandardScaler().fit_transform(blobs)
    start = _start(scaled, 3, "full")
    ours = make_pipeline(StandardScaler(), GaussianMixture(3, tol=1e-10, max_iter=500, **start)).fit(blobs)
    ref = make_pipeline(StandardScaler(), mixture.GaussianMixture(3, tol=1e-10, max_iter=500, **start)).fit(blobs)
    assert ours.score(blobs) == pytest.approx(ref.score(blobs), rel=1e-8)
    np.testing.assert_array_equal(ours.predict(blobs), ref.predict(blobs))
    _close(ours[-1].means_, ref[-1].means_, rtol=1e-7)


def test_grid_search_over_n_components(blobs):
    """Both pick K = 3, and the held-out scores of K = 1 and K = 3 (a single optimum on these data)
    equal scikit-learn's."""
    grid = {"n_components": [1, 2, 3]}
    cv = KFold(3, shuffle=True, random_state=0)
    kw = {"tol": 1e-10, "max_iter": 1000, "random_state": 0, "init_params": "k-means++"}
    ours = GridSearchCV(GaussianMixture(**kw), grid, cv=cv).fit(blobs)
    ref = GridSearchCV(mixture.GaussianMixture(**kw), grid, cv=cv).fit(blobs)
    assert ours.best_params_ == ref.best_params_ == {"n_components": 3}
    mine, theirs = ours.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"]
    _close(mine[[0, 2]], theirs[[0, 2]], rtol=1e-7)  # K = 1, 3: one optimum (K = 2 has several)


def test_bayesian_grid_search_and_pipeline(blobs):
    """The Bayesian estimator in both: the held-out score of each K equals a hand-written K-fold loop."""
    grid = {"bayesiangaussianmixture__n_components": [2, 3]}
    cv = KFold(3, shuffle=True, random_state=0)
    pipe = make_pipeline(StandardScaler(), BayesianGaussianMixture(random_state=0, max_iter=300))
    search = GridSearchCV(pipe, grid, cv=cv).fit(blobs)
    for i, k in enumerate(grid["bayesiangaussianmixture__n_components"]):
        scores = []
        for train, test in cv.split(blobs):
            scaler = StandardScaler().fit(blobs[train])
            est = BayesianGaussianMixture(n_components=k, random_state=0, max_iter=300)
            est.fit(scaler.transform(blobs[train]))
            scores.append(est.score(scaler.transform(blobs[test])))
        assert search.cv_results_["mean_test_score"][i] == pytest.approx(np.mean(scores), rel=1e-12)


# --- sample weights, methods, dtype, sample --------------------------------------------------------
def test_integer_sample_weights_equal_repeated_rows(blobs):
    w = np.random.default_rng(0).integers(0, 4, size=len(blobs))
    start = _start(blobs, 3, "diag")
    kw = {"n_components": 3, "covariance_type": "diag", "tol": 0.0, "max_iter": 15, **start}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pg.ConvergenceWarning)
        weighted = GaussianMixture(**kw).fit(blobs, sample_weight=w)
        repeated = GaussianMixture(**kw).fit(np.repeat(blobs, w, axis=0))
    for name in ("weights_", "means_", "covariances_"):
        _close(getattr(weighted, name), getattr(repeated, name), rtol=1e-10)
    assert weighted.lower_bound_ == pytest.approx(repeated.lower_bound_, rel=1e-10)


def test_bayesian_integer_sample_weights_equal_repeated_rows(blobs):
    """From the same posterior (a warm start from one fit), 10 VB iterations with integer weights equal
    10 on the repeated rows; the default priors are the repeated rows' mean and covariance."""
    w = np.random.default_rng(1).integers(0, 4, size=len(blobs))
    repeated = np.repeat(blobs, w, axis=0)
    first = BayesianGaussianMixture(n_components=3, covariance_type="diag", random_state=0, max_iter=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pg.ConvergenceWarning)
        first.fit(repeated)
        a = clone(first).set_params(warm_start=True, max_iter=10, tol=0.0)
        b = clone(a)
        a.fit_ = b.fit_ = first.fit_  # both continue from this posterior
        a.fit(blobs, sample_weight=w)
        b.fit(repeated)
    _close(a.mean_prior_, repeated.mean(0), rtol=1e-12)
    _close(a.covariance_prior_, np.var(repeated, axis=0, ddof=1), rtol=1e-12)
    for name in ("weights_", "means_", "covariances_", "degrees_of_freedom_", "mean_precision_"):
        _close(getattr(a, name), getattr(b, name), rtol=1e-10)
    assert a.lower_bound_ == pytest.approx(b.lower_bound_, rel=1e-10)


@pytest.mark.slow
def test_map_method_reaches_the_posterior_mode(blobs):
    x = StandardScaler().fit_transform(blobs)
    prior = pg.default_prior(x, 3)
    est = GaussianMixture(3, method="map", prior=prior, tol=1e-12, max_iter=2000, random_state=0).fit(x)
    mode, _ = map_estimate(torch.as_tensor(x), 3, prior, est.fit_.params)  # numerical maximiser from our answer
    _close(est.means_, mode.mu.numpy(), rtol=1e-6)
    _close(est.weights_, mode.alpha.numpy(), rtol=1e-6)
    assert est.fit_.method == "map"


@pytest.mark.slow
def test_svi_methods_approach_the_closed_form_answers(blobs):
    x = StandardScaler().fit_transform(blobs)
    start = _start(x, 3, "full")
    em = mixture.GaussianMixture(3, tol=1e-10, max_iter=1000, **start).fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pg.ConvergenceWarning)
        svi = GaussianMixture(3, method="svi", max_iter=600, tol=0.0, random_state=0, **start).fit(x)
    assert svi.fit_.method == "svi"
    _close(svi.means_, em.means_, rtol=2e-2)
    assert svi.score(x) == pytest.approx(em.score(x), abs=5e-3)


def test_float32_fit(blobs):
    ref = GaussianMixture(3, random_state=0, tol=1e-8).fit(blobs)
    est = GaussianMixture(3, random_state=0, tol=1e-5, dtype=np.float32).fit(blobs)
    assert est.fit_.params.dtype == torch.float32 and est.means_.dtype == np.float64
    order = np.argsort(est.means_[:, 0]), np.argsort(ref.means_[:, 0])
    np.testing.assert_allclose(est.means_[order[0]], ref.means_[order[1]], atol=1e-3)


def test_sample_matches_the_fitted_mixture(blobs):
    est = GaussianMixture(3, covariance_type="tied", random_state=0).fit(blobs)
    x, y = est.sample(30000)
    assert x.shape == (30000, 2) and x.dtype == np.float64 and y.dtype == np.int64
    assert np.all(np.diff(y) >= 0)  # grouped by component, as scikit-learn
    np.testing.assert_allclose(np.bincount(y, minlength=3) / 30000, est.weights_, atol=0.01)
    for j in range(3):
        np.testing.assert_allclose(x[y == j].mean(0), est.means_[j], atol=0.05)
        np.testing.assert_allclose(np.cov(x[y == j].T), est.covariances_, atol=0.1)
    again, _ = est.sample(30000)
    np.testing.assert_array_equal(x, again)  # random_state=0 fixes the draws


def test_warm_start_continues_the_fit(blobs):
    """Two warm fits of 3 iterations equal one fit of 6 (scikit-learn's warm_start) — checked
    against scikit-learn's own 6-iteration fit from the same start."""
    start = _start(blobs, 3, "full")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixture._base.ConvergenceWarning)
        warm = GaussianMixture(3, max_iter=3, tol=0.0, warm_start=True, **start)
        warm.fit(blobs).fit(blobs)
        ref = mixture.GaussianMixture(3, max_iter=6, tol=0.0, **start).fit(blobs)
    _close(warm.means_, ref.means_)
    _close(warm.covariances_, ref.covariances_)


def test_feature_names_are_recorded():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 2)), columns=["a", "b"])
    est = GaussianMixture(2, random_state=0).fit(frame)
    assert list(est.feature_names_in_) == ["a", "b"] and est.n_features_in_ == 2


# --- 5. bad input: a clear error naming the parameter, in fit, before any work --------------------
BAD_GMM = [
    ({"n_components": 0}, ValueError, "n_components"),
    ({"n_components": 2.5}, TypeError, "n_components"),
    ({"covariance_type": "banded"}, ValueError, "covariance_type"),
    ({"tol": -1.0}, ValueError, "tol"),
    ({"reg_covar": -1e-3}, ValueError, "reg_covar"),
    ({"max_iter": -1}, ValueError, "max_iter"),
    ({"n_init": 0}, ValueError, "n_init"),
    ({"init_params": "spectral"}, ValueError, "init_params"),
    ({"warm_start": "yes"}, TypeError, "warm_start"),
    ({"verbose": -1}, ValueError, "verbose"),
    ({"verbose_interval": 0}, ValueError, "verbose_interval"),
    ({"method": "vb"}, ValueError, "method"),
    ({"dtype": "int32"}, ValueError, "dtype"),
    ({"random_state": -3}, ValueError, "random_state"),
    ({"random_state": "seed"}, TypeError, "random_state"),
    ({"weights_init": [0.5, 0.5]}, ValueError, "weights_init"),
    ({"weights_init": [0.7, 0.7, -0.4]}, ValueError, "weights_init"),
    ({"means_init": np.zeros((3, 3))}, ValueError, "means_init"),
    ({"precisions_init": -np.ones(3), "covariance_type": "spherical"}, ValueError, "precisions_init"),
    ({"precisions_init": np.array([[1.0, 2.0], [2.0, 1.0]]), "covariance_type": "tied"}, ValueError, "precisions_init"),
    ({"prior": "weak"}, TypeError, "prior"),
    ({"method": "svi", "covariance_type": "diag"}, ValueError, "covariance_type"),
    ({"init_params": "random_from_data", "reg_covar": 0.0}, ValueError, "reg_covar"),
]
BAD_BGM = [
    ({"weight_concentration_prior_type": "pitman_yor"}, ValueError, "weight_concentration_prior_type"),
    ({"weight_concentration_prior": 0.0}, ValueError, "weight_concentration_prior"),
    ({"mean_precision_prior": -1.0}, ValueError, "mean_precision_prior"),
    ({"mean_prior": [0.0, 0.0, 0.0]}, ValueError, "mean_prior"),
    ({"degrees_of_freedom_prior": 0.5}, ValueError, "degrees_of_freedom_prior"),
    ({"covariance_prior": np.array([[1.0, 2.0], [2.0, 1.0]])}, ValueError, "covariance_prior"),
    ({"covariance_prior": -1.0, "covariance_type": "spherical"}, ValueError, "covariance_prior"),
    ({"covariance_prior": [1.0, -1.0], "covariance_type": "diag"}, ValueError, "covariance_prior"),
    ({"method": "map"}, ValueError, "method"),
    ({"n_components": 0}, ValueError, "n_components"),
]


@pytest.mark.parametrize(("params", "error", "name"), BAD_GMM)
def test_gaussian_mixture_bad_parameters(blobs, monkeypatch, params, error, name):
    est = GaussianMixture(**{"n_components": 3, **params})  # construction never validates (scikit-learn's convention)
    monkeypatch.setattr(gm_module, "fit_cavi", None)  # any work would fail with another error
    with pytest.raises(error, match=name):
        est.fit(blobs)


@pytest.mark.parametrize(("params", "error", "name"), BAD_BGM)
def test_bayesian_mixture_bad_parameters(blobs, params, error, name):
    with pytest.raises(error, match=name):
        BayesianGaussianMixture(**{"n_components": 3, **params}).fit(blobs)


def test_bad_sample_and_sample_weight(blobs):
    est = GaussianMixture(2, random_state=0)
    with pytest.raises(ValueError, match="sample_weight"):
        est.fit(blobs, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="sample_weight"):
        est.fit(blobs, sample_weight=-np.ones(len(blobs)))
    with pytest.raises(ValueError, match="n_components"):
        GaussianMixture(200).fit(blobs)
    est.fit(blobs)
    for n in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n_samples"):
            est.sample(n)
    with pytest.raises(ValueError, match="features"):
        est.predict(blobs[:, :1])


def test_singular_default_covariance_prior_is_named():
    x = np.random.default_rng(0).normal(size=(5, 8))  # N <= D: np.cov(X.T) is singular
    with pytest.raises(ValueError, match="covariance_prior"):
        BayesianGaussianMixture(2).fit(x)


def test_clone_and_params_round_trip():
    est = BayesianGaussianMixture(n_components=4, covariance_type="diag", method="vb", dtype=np.float32)
    assert clone(est).get_params() == est.get_params()
    assert est.set_params(n_components=2).n_components == 2


def test_import_without_sklearn_says_how_to_install():
    code = "import sys; sys.modules['sklearn'] = None\nimport ppl_gmm.sklearn"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "ImportError" in out.stderr and "pip install ppl-gmm[sklearn]" in out.stderr


@pytest.mark.parametrize("cls", [GaussianMixture, BayesianGaussianMixture])
def test_svi_refuses_sample_weight_instead_of_ignoring_it(cls):
    """fit_svi / fit_svi_bayes take no weights: a weighted SVI fit is refused before any work, not
    silently fitted unweighted."""
    x = np.random.default_rng(0).normal(size=(40, 2))
    with pytest.raises(ValueError, match="method='svi' takes no sample weights"):
        cls(n_components=2, method="svi", random_state=0).fit(x, sample_weight=np.ones(40))


def test_verbose_true_is_accepted_like_scikit_learn(capsys):
    x = np.random.default_rng(0).normal(size=(60, 2))
    GaussianMixture(n_components=2, verbose=True, random_state=0).fit(x)
    assert "Initialization" in capsys.readouterr().out
