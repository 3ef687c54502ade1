"""GMMFit: persistence, alignment (against brute force over all permutations), the KL gap (against
the reference CAVI loop), and prediction / information criteria against scikit-learn's
GaussianMixture holding the same parameters."""

import itertools

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture
from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky

import ppl_gmm as pg
from ppl_gmm.results.gmm_fit import n_parameters
from ppl_gmm.results.matching import align, match_means

from oracles import random_params, reference_fit

COV_TYPES = ("full", "diag", "spherical", "tied")


def sklearn_holding(fit):
    """A GaussianMixture whose fitted attributes are ``fit``'s parameters."""
    p, ct = fit.params, fit.covariance_type
    cov = p.cov.double().numpy()
    sk_cov = {
        "full": cov,
        "tied": cov[0],
        "diag": np.diagonal(cov, axis1=1, axis2=2).copy(),
        "spherical": cov[:, 0, 0].copy(),
    }[ct]
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
    # rows 1e7 from every component: finite, on the simplex to round-off (exp(ℓ − max) / Σ)
    far = torch.tensor([[1e7, 1e7], [-1e7, 3e7], [0.0, -1e7]], dtype=torch.float64)
    proba = fit.predict_proba(far)
    assert torch.isfinite(proba).all() and bool((proba >= 0).all())
    torch.testing.assert_close(proba.sum(1), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-15)


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
    with pytest.raises(ValueError, match="allow_pickle=False"):
        pg.load_fit(pickled)  # allow_pickle=False: no arbitrary code


def test_align_recovers_a_shuffled_permutation(separated_2d):
    x, _, truth = separated_2d
    fit = pg.fit_cavi(x, 3, seed=0, max_iter=50)
    perm = torch.tensor([2, 0, 1])
    shuffled = pg.GMMFit(**{**fit.__dict__, "params": fit.params.permute(perm)})
    back = pg.align(fit, shuffled)
    assert torch.equal(back, torch.argsort(perm))  # the known inverse permutation
    assert torch.equal(shuffled.params.permute(back).mu, fit.params.mu)
    assert torch.equal(fit.params.permute(perm).permute(torch.argsort(perm)).cov, fit.params.cov)
    # against the generating parameters, with either argument a GMMParams or a fit
    lined = fit.params.permute(pg.align(truth, fit))
    torch.testing.assert_close(lined.mu, truth.mu, rtol=0, atol=0.3)
    assert torch.equal(pg.align(truth, fit), pg.align(truth, fit.params))
    with pytest.raises(ValueError, match="permutation"):
        fit.params.permute([0, 0, 1])


def _brute_force_match(mu, ref_mu, ref_cov):
    """The permutation minimising Σ_j (ref_μ_j − μ_perm[j])ᵀ P (ref_μ_j − μ_perm[j]), P = (mean ref Σ)⁻¹,
    by trying all K! of them."""
    prec = np.linalg.inv(ref_cov.mean(0))
    best, best_cost = None, np.inf
    for perm in itertools.permutations(range(len(ref_mu))):
        diff = ref_mu - mu[list(perm)]
        cost = np.einsum("jd,de,je->", diff, prec, diff)
        if cost < best_cost:
            best, best_cost = perm, cost
    return np.array(best)


def test_match_means_recovers_known_permutations_and_agrees_with_brute_force():
    rng = np.random.default_rng(0)
    m, k, d = 6, 4, 2
    ref_mu = rng.normal(scale=5.0, size=(k, d))
    ref_cov = random_params(k, d, seed=1).cov.numpy()
    truth = np.stack([rng.permutation(k) for _ in range(m)])
    mu = np.empty((m, k, d))
    for i in range(m):
        mu[i, truth[i]] = ref_mu + rng.normal(scale=0.05, size=(k, d))  # component truth[i, j] ↔ reference j
    np.testing.assert_array_equal(match_means(mu, ref_mu, ref_cov), truth)
    np.testing.assert_array_equal(match_means(mu, ref_mu), truth)  # Euclidean
    # noisy means: the Hungarian optimum is the brute-force optimum
    noisy = mu + rng.normal(scale=3.0, size=mu.shape)
    got = match_means(noisy, ref_mu, ref_cov)
    for i in range(m):
        np.testing.assert_array_equal(got[i], _brute_force_match(noisy[i], ref_mu, ref_cov))
    # align: GMMParams with a known shuffle come back in the reference's order
    ref = random_params(k, d, seed=2)
    perm = torch.tensor([3, 0, 2, 1])
    assert torch.equal(align(ref, ref.permute(perm)), torch.argsort(perm))
    with pytest.raises(ValueError, match="cannot align"):
        align(ref, random_params(k + 1, d, seed=3))
    with pytest.raises(TypeError, match="align\\(\\) needs GMMParams or a fit"):
        align(ref, ref.mu)


def test_kl_gap_summary_and_repr(separated_2d):
    """kl_gap = log p(X | Θ_t) − eq. 18 per trace entry, against the reference CAVI loop
    (oracles.reference_fit) from the same, poor Θ₀: positive, and 0 after the closing E-step."""
    x, _, _ = separated_2d
    params0 = random_params(3, 2, seed=1)
    fit = pg.fit_cavi(x, 3, init=params0, max_iter=10, tol=0, reg_covar=1e-6)
    ref = reference_fit(x, params0, max_iter=10, reg_covar=1e-6)
    ref_gap = np.array(ref["log_likelihood"]) - np.array(ref["elbo"])
    assert ref_gap[0] > 1e-3  # a non-trivial gap to reproduce
    np.testing.assert_allclose(fit.kl_gap.numpy(), ref_gap, rtol=0, atol=1e-10)  # |ll| ~ 1e3: ~1e-13 relative
    assert bool((fit.kl_gap >= -1e-9).all())
    assert abs(float(fit.kl_gap[-1])) <= 1e-12 * abs(float(fit.log_likelihood[-1]))  # KL = 0 after the E-step
    fit = pg.fit_cavi(x, 3, seed=0, max_iter=10, tol=0)
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
