"""Frequency weights in the closed-form maths (core.gmm): integer weights equal repeated rows, a zero
weight removes the row, and scipy / numpy oracles agree; bad weights are refused before any work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ppl_gmm as pg
from ppl_gmm.core import gmm

from oracles import numpy_weighted_m_step, random_gamma, random_params, scipy_objectives_weighted

N, K, D = 60, 3, 2


@pytest.fixture
def problem():
    rng = np.random.default_rng(1)
    x = torch.as_tensor(rng.normal(size=(N, D)) * 2.0 + 1e3)
    w = rng.integers(0, 4, size=N)
    w[:3] = [0, 2, 3]  # at least one zero and one repeat
    params = random_params(K, D, seed=2)
    params = pg.GMMParams(params.alpha, params.mu + 1e3, params.cov)
    gamma = random_gamma(N, K, seed=3)
    return x, w, params, gamma


def _rep(t, w):
    return torch.repeat_interleave(t, torch.as_tensor(w), dim=0)


def _rel(a, b):
    return abs(float(a) - float(b)) / abs(float(b))


def test_integer_weights_equal_repeated_rows(problem):
    x, w, params, gamma = problem
    wf = w.astype(float)
    assert _rel(pg.log_likelihood(x, params, sample_weight=wf), pg.log_likelihood(_rep(x, w), params)) < 1e-12
    assert _rel(pg.elbo(x, gamma, params, sample_weight=wf), pg.elbo(_rep(x, w), _rep(gamma, w), params)) < 1e-12
    for cov_type in ("full", "diag", "spherical", "tied"):
        got = pg.m_step(x, gamma, cov_type, 1e-6, sample_weight=wf)
        want = pg.m_step(_rep(x, w), _rep(gamma, w), cov_type, 1e-6)
        for a, b in zip((got.alpha, got.mu, got.cov), (want.alpha, want.mu, want.cov)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_zero_weight_removes_the_row(problem):
    x, _, params, gamma = problem
    w = np.ones(N)
    w[[0, 7, 30]] = 0.0
    keep = w > 0
    x_far = x.clone()
    x_far[0] = 1e150  # a removed row may hold anything finite, even a point where every ℓ_ik = −∞
    assert _rel(pg.log_likelihood(x_far, params, w), pg.log_likelihood(x[keep], params)) < 1e-12
    g0 = gamma.clone()
    assert _rel(pg.elbo(x_far, g0, params, w), pg.elbo(x[keep], gamma[keep], params)) < 1e-12
    got = pg.m_step(x, gamma, "full", 0.0, sample_weight=w)
    want = pg.m_step(x[keep], gamma[keep], "full", 0.0)
    torch.testing.assert_close(got.cov, want.cov, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got.mu, want.mu, rtol=1e-12, atol=1e-12)


def test_fractional_weights_against_scipy_and_numpy(problem):
    x, _, params, gamma = problem
    w = np.random.default_rng(4).uniform(0.0, 3.0, size=N)
    ref = scipy_objectives_weighted(x.numpy(), params, w, gamma)
    assert _rel(pg.log_likelihood(x, params, w), ref["log_likelihood"]) < 1e-12
    assert _rel(pg.elbo(x, gamma, params, torch.as_tensor(w)), ref["elbo"]) < 1e-12
    for cov_type in ("full", "diag", "spherical", "tied"):
        got = pg.m_step(x, gamma, cov_type, 1e-6, sample_weight=w)
        alpha, mu, cov = numpy_weighted_m_step(x.numpy(), gamma.numpy(), w, cov_type, 1e-6)
        np.testing.assert_allclose(got.alpha.numpy(), alpha, rtol=1e-12)
        np.testing.assert_allclose(got.mu.numpy(), mu, rtol=1e-12)
        np.testing.assert_allclose(got.cov.numpy(), cov, rtol=1e-9, atol=1e-12)  # np.cov: one-pass sums at 1e3


def test_entropy_weighted_by_hand():
    gamma = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]], dtype=torch.float64)
    w = torch.tensor([2.0, 5.0, 0.0], dtype=torch.float64)
    assert float(gmm.entropy(gamma, w)) == pytest.approx(2 * np.log(2), rel=1e-15)


@pytest.mark.parametrize(
    "w, err, match",
    [
        (np.ones(N - 1), ValueError, "has 59 entries"),
        (np.r_[np.ones(N - 1), -1.0], ValueError, "negative"),
        (np.r_[np.nan, np.ones(N - 1)], ValueError, "row 0, NaN"),
        (np.r_[np.inf, np.ones(N - 1)], ValueError, "infinite"),
        (np.zeros(N), ValueError, "sums to 0"),
        (np.ones((N, 2)), ValueError, "1-D"),
    ],
)
def test_bad_weights_refused_before_any_work(problem, monkeypatch, w, err, match):
    x, _, params, gamma = problem

    def no_work(*args, **kwargs):
        raise AssertionError("work started before sample_weight was validated")

    monkeypatch.setattr(gmm, "log_gaussian_prec", no_work)
    monkeypatch.setattr(gmm, "weighted_scatter", no_work)
    for call in (
        lambda: pg.log_likelihood(x, params, sample_weight=w),
        lambda: pg.elbo(x, gamma, params, sample_weight=w),
        lambda: pg.m_step(x, gamma, sample_weight=w),
    ):
        with pytest.raises(err, match=match) as e:
            call()
        assert "sample_weight" in str(e.value)


# --- the weighted start (core.init) -----------------------------------------------------------------
def test_weighted_kmeans_plusplus_is_sklearns(problem):
    from sklearn.cluster import kmeans_plusplus as sk_kmeans_plusplus

    from ppl_gmm.core.init import kmeans_plusplus

    x, w, _, _ = problem
    wf = w.astype(float)
    for seed in range(5):
        want, _ = sk_kmeans_plusplus(x.numpy(), 4, sample_weight=wf, random_state=np.random.RandomState(seed))
        got = kmeans_plusplus(x, 4, 0, torch.as_tensor(wf), rng=np.random.RandomState(seed))
        np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-9)  # the same rows: centred vs not
        assert not any(np.all(x.numpy()[w == 0] == c, axis=1).any() for c in got.numpy())  # never a 0-weight row


def test_weighted_start_counts_rows_by_weight(problem):
    from ppl_gmm.core.init import initial_params

    x, w, _, _ = problem
    for init in ("kmeans++", "random"):
        p = initial_params(x, K, init, 3, "full", 1e-6, sample_weight=torch.as_tensor(w, dtype=torch.float64))
        gamma = pg.e_step(x, p)  # Θ₀ is an M-step: α₀ sums to 1 and is a weighted one (positive)
        assert abs(float(p.alpha.sum()) - 1) < 1e-12 and bool((p.alpha > 0).all()) and gamma.shape == (N, K)
