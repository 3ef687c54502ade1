"""GMMFit: persistence, alignment, and prediction / information criteria against
scikit-learn's GaussianMixture holding the same parameters."""
import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture
from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky

import ppl_gmm as pg
from ppl_gmm.result import n_parameters

COV_TYPES = ("full", "diag", "spherical", "tied")


def sklearn_holding(fit):
    """A GaussianMixture whose fitted attributes are ``fit``'s parameters."""
    p, ct = fit.params, fit.covariance_type
    cov = p.cov.double().numpy()
    sk_cov = {"full": cov, "tied": cov[0], "diag": np.diagonal(cov, axis1=1, axis2=2).copy(), "spherical": cov[:, 0, 0].copy()}[ct]
    g = GaussianMixture(p.k, covariance_type=ct)
    g.weights_ = p.alpha.double().numpy()
    g.means_ = p.mu.double().numpy()
    g.covariances_ = sk_cov
    g.precisions_cholesky_ = _compute_precision_cholesky(sk_cov, ct)
    g.n_features_in_ = p.d
    g.converged_, g.n_iter_, g.lower_bound_ = True, fit.n_iter, 0.0
    return g


@pytest.fixture(params=COV_TYPES)
def fit_and_data(request, separated_2d):
    x, _, _ = separated_2d
    return pg.fit_cavi(x, 3, covariance_type=request.param, seed=2, max_iter=30), x


def test_predictions_and_criteria_match_sklearn(fit_and_data):
    fit, x = fit_and_data
    g = sklearn_holding(fit)
    new = np.random.default_rng(1).normal(scale=6, size=(50, 2))
    for data in (x.numpy(), new):
        np.testing.assert_allclose(fit.predict_proba(data).numpy(), g.predict_proba(data), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(fit.predict(data).numpy(), g.predict(data))
        np.testing.assert_allclose(fit.score_samples(data).numpy(), g.score_samples(data), rtol=1e-12)
        assert fit.bic(data) == pytest.approx(g.bic(data), rel=1e-12)
        assert fit.aic(data) == pytest.approx(g.aic(data), rel=1e-12)
        assert fit.score(data) == pytest.approx(g.score(data), rel=1e-12)
    assert fit.n_parameters() == g._n_parameters() == n_parameters(3, 2, fit.covariance_type)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_save_load_round_trips_exactly(tmp_path, separated_2d, dtype):
    x, _, _ = separated_2d
    fit = pg.fit_cavi(x.to(dtype), 3, seed=4, n_init=2, max_iter=15, covariance_type="diag")
    path = tmp_path / "fit.npz"
    fit.save(path)
    back = pg.load_fit(path)
    for name in ("alpha", "mu", "cov"):
        assert torch.equal(getattr(back.params, name), getattr(fit.params, name))
        assert getattr(back.params, name).dtype == dtype
    for name in ("gamma", "elbo", "log_likelihood", "times"):
        assert torch.equal(getattr(back, name), getattr(fit, name))
    for name in ("method", "n_iter", "converged", "seed", "covariance_type", "reg_covar", "info"):
        assert getattr(back, name) == getattr(fit, name)
    no_times = pg.GMMFit(**{**fit.__dict__, "times": None})
    no_times.save(path)
    assert pg.load_fit(path).times is None


def test_load_refuses_other_files(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, meta=np.array('{"format": "something else"}'), alpha=np.ones(1))
    with pytest.raises(ValueError, match="not a ppl_gmm fit"):
        pg.load_fit(path)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, meta=np.array([{"format": 1}], dtype=object))
    with pytest.raises(ValueError):
        pg.load_fit(pickled)  # allow_pickle=False: no arbitrary code


def test_align_recovers_a_shuffled_permutation(separated_2d):
    x, _, truth = separated_2d
    fit = pg.fit_cavi(x, 3, seed=0, max_iter=50)
    perm = torch.tensor([2, 0, 1])
    shuffled = pg.GMMFit(**{**fit.__dict__, "params": fit.params.permute(perm)})
    back = pg.align(fit, shuffled)
    assert torch.equal(shuffled.params.permute(back).mu, fit.params.mu)
    assert torch.equal(fit.params.permute(perm).permute(torch.argsort(perm)).cov, fit.params.cov)
    # against the generating parameters, with either argument a GMMParams or a fit
    lined = fit.params.permute(pg.align(truth, fit))
    torch.testing.assert_close(lined.mu, truth.mu, rtol=0, atol=0.3)
    assert torch.equal(pg.align(truth, fit), pg.align(truth, fit.params))
    with pytest.raises(ValueError, match="permutation"):
        fit.params.permute([0, 0, 1])


def test_kl_gap_summary_and_repr(separated_2d):
    x, _, _ = separated_2d
    fit = pg.fit_cavi(x, 3, seed=0, max_iter=10, tol=0)
    torch.testing.assert_close(fit.kl_gap, fit.log_likelihood - fit.elbo)
    text = fit.summary()
    assert "method: cavi" in text and "iterations: 10" in text and f"{float(fit.elbo[-1]):.10g}" in text
    assert "GMMFit(method='cavi', K=3, D=2, n_iter=10" in repr(fit)
    with pytest.raises(ValueError, match="3 columns"):
        fit.predict(np.zeros((4, 3)))


def test_gmm_params_helpers(separated_2d):
    _, _, p = separated_2d
    torch.testing.assert_close(p.scale_tril @ p.scale_tril.mT, p.cov)
    u = p.precision_cholesky
    torch.testing.assert_close(u @ u.mT, torch.linalg.inv(p.cov))
    assert p.shift([1.0, -1.0]).allclose(pg.GMMParams(p.alpha, p.mu + torch.tensor([1.0, -1.0]), p.cov))
    assert p.to(torch.float32).dtype == torch.float32 and set(p.as_numpy()) == {"alpha", "mu", "cov"}
    assert "GMMParams(K=3, D=2" in repr(p)
