"""core.gaussian (the E-step normalisation, eq. 20, and log N through precision factors) against
scipy's softmax / logsumexp / xlogy / multivariate normal and a direct numpy Mahalanobis formula;
and every responsibility the package computes (``e_step``, ``VBPosterior.responsibilities``) on
the simplex to round-off for points 1e7 away from every component."""

import math

import numpy as np
import pytest
import torch
from scipy.special import digamma, logsumexp, softmax, xlogy
from scipy.stats import multivariate_normal

import ppl_gmm as pg
from ppl_gmm.core.gaussian import BLOCK_ROWS, log_gaussian_prec, logsumexp_rows, mahalanobis_sq, normalise_log
from ppl_gmm.core.linalg import precision_cholesky

from oracles import random_params

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: small problems, one torch thread


def _wlp(n, k, seed, scale=30.0):
    return np.random.default_rng(seed).normal(scale=scale, size=(n, k))


def _numpy_prec_chol(cov):
    """U = L^{-T} with Σ = L L^T, by numpy."""
    return np.swapaxes(np.linalg.inv(np.linalg.cholesky(cov)), -1, -2)


# --- normalise_log ---------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 5])
def test_normalise_log_matches_scipy(k):
    wlp = _wlp(40, k, seed=k)
    ref_gamma = softmax(wlp, axis=1)
    ref_lse = logsumexp(wlp, axis=1)
    gamma, lse = normalise_log(torch.tensor(wlp))  # a fresh tensor: normalise_log overwrites its input
    np.testing.assert_allclose(gamma.numpy(), ref_gamma, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(lse.numpy(), ref_lse, rtol=1e-14, atol=1e-13)
    g2, lse2, h = normalise_log(torch.tensor(wlp), entropy=True)
    np.testing.assert_allclose(g2.numpy(), ref_gamma, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(lse2.numpy(), ref_lse, rtol=1e-14, atol=1e-13)
    assert float(h) == pytest.approx(-xlogy(ref_gamma, ref_gamma).sum(), rel=1e-11, abs=1e-12)


def test_normalise_log_dim0_is_the_transposed_layout():
    wlp = _wlp(30, 4, seed=7)
    gamma_t, lse, h = normalise_log(torch.tensor(wlp.T.copy()), dim=0, entropy=True)
    assert gamma_t.shape == (4, 30) and lse.shape == (30,)
    ref = softmax(wlp, axis=1)
    np.testing.assert_allclose(gamma_t.numpy(), ref.T, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(lse.numpy(), logsumexp(wlp, axis=1), rtol=1e-14, atol=1e-13)
    assert float(h) == pytest.approx(-xlogy(ref, ref).sum(), rel=1e-11)


def test_normalise_log_overwrites_its_input():
    """Documented contract: ``wlp`` is overwritten (callers must pass a tensor they own)."""
    wlp = torch.tensor(_wlp(5, 3, seed=8))
    before = wlp.clone()
    normalise_log(wlp)
    assert not torch.equal(wlp, before)


def test_rows_far_from_every_component_stay_on_the_simplex():
    """ℓ_ik ≈ −5e13 (a point 1e7 away in unit-variance units): on the simplex to 1e-15, and equal
    to scipy's softmax (both subtract the row maximum; the differences are exact)."""
    base = -0.5 * 1e14
    wlp = np.array(
        [[base, base - 3.0, base + 1.0], [base * 3, base * 3 - 700.0, base * 3 - 1.0], [-1e300, -1e300, -1e300 + 1e285]]
    )
    gamma, lse, h = normalise_log(torch.tensor(wlp), entropy=True)
    assert torch.isfinite(gamma).all() and bool((gamma >= 0).all()) and torch.isfinite(h)
    torch.testing.assert_close(gamma.sum(1), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-15)
    np.testing.assert_allclose(gamma.numpy(), softmax(wlp, axis=1), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(lse.numpy(), logsumexp(wlp, axis=1), rtol=1e-15)
    # and through the E-step: rows 1e7 away from every component of a random mixture
    params = random_params(4, 3, seed=9)
    x = torch.tensor([[1e7, 0.0, 0.0], [-1e7, 1e7, 3e7], [0.0, 0.0, -1e7]], dtype=torch.float64)
    g = pg.e_step(x, params)
    assert torch.isfinite(g).all() and bool((g >= 0).all())
    torch.testing.assert_close(g.sum(1), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-15)


def test_rows_with_a_switched_off_component():
    """ℓ_ik = −∞ (α_k = 0): γ_ik = 0 there, the entropy finite (0·log 0 = 0), lse as scipy's."""
    wlp = _wlp(6, 3, seed=11)
    wlp[:, 1] = -np.inf
    wlp[2, 2] = -np.inf  # a row with a single finite entry
    gamma, lse, h = normalise_log(torch.tensor(wlp), entropy=True)
    assert bool((gamma[:, 1] == 0).all()) and float(gamma[2, 2]) == 0.0 and float(gamma[2, 0]) == 1.0
    ref = softmax(wlp, axis=1)
    np.testing.assert_allclose(gamma.numpy(), ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(lse.numpy(), logsumexp(wlp, axis=1), rtol=1e-14, atol=1e-13)
    assert math.isfinite(float(h))
    assert float(h) == pytest.approx(-xlogy(ref, ref).sum(), rel=1e-11)


def test_logsumexp_rows_matches_scipy_across_blocks():
    wlp = _wlp(BLOCK_ROWS + 17, 3, seed=12)
    np.testing.assert_allclose(
        logsumexp_rows(torch.tensor(wlp)).numpy(), logsumexp(wlp, axis=1), rtol=1e-14, atol=1e-13
    )


# --- Mahalanobis distances and log N ---------------------------------------------------------------
@pytest.mark.parametrize("d", [1, 3])
def test_mahalanobis_sq_matches_numpy(d):
    k = 4
    params = random_params(k, d, seed=13 + d)
    x = np.random.default_rng(d).normal(scale=4, size=(BLOCK_ROWS + 5, d))  # crosses a row block
    mu, cov = params.mu.numpy(), params.cov.numpy()
    diff = x[:, None, :] - mu[None]  # (N, K, D)
    ref = np.einsum("nkd,kde,nke->nk", diff, np.linalg.inv(cov), diff)
    got = mahalanobis_sq(torch.tensor(x), params.mu, torch.tensor(_numpy_prec_chol(cov)))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)
    # data and means far from the origin: the difference is formed first, no digits lost
    far = mahalanobis_sq(torch.tensor(x + 1e6), params.mu + 1e6, precision_cholesky(params.cov))
    np.testing.assert_allclose(far.numpy(), ref, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("d", [1, 2, 4])
def test_log_gaussian_prec_matches_scipy(d):
    params = random_params(3, d, seed=20 + d)
    x = np.random.default_rng(20 + d).normal(scale=3, size=(25, d))
    ref = np.stack(
        [multivariate_normal(params.mu[j].numpy(), params.cov[j].numpy()).logpdf(x).reshape(-1) for j in range(3)],
        axis=1,
    )
    got = log_gaussian_prec(torch.tensor(x), params.mu, torch.tensor(_numpy_prec_chol(params.cov.numpy())))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-10)


# --- VBPosterior.responsibilities (the VB E-step, PRML 10.46–10.49) --------------------------------
def _posterior(d=2):
    rng = np.random.default_rng(31)
    k = 3
    a = rng.normal(size=(k, d, d))
    w = a @ np.swapaxes(a, -1, -2) / d + 0.5 * np.eye(d)
    return pg.VBPosterior(
        alpha=np.array([2.5, 10.0, 40.0]),
        m=rng.normal(scale=3.0, size=(k, d)),
        beta=np.array([3.0, 11.0, 41.0]),
        nu=np.array([d + 2.0, 12.0, 42.0]),
        W=w,
    )


def _prml_responsibilities(post, x):
    """r_ik of PRML 10.46–10.49 written out in numpy / scipy."""
    alpha, m, beta, nu, w = (getattr(post, n).numpy() for n in ("alpha", "m", "beta", "nu", "W"))
    d = m.shape[1]
    elog_pi = digamma(alpha) - digamma(alpha.sum())  # 10.66
    elog_det = np.array(
        [
            sum(digamma((nu[j] + 1 - i) / 2) for i in range(1, d + 1)) + d * np.log(2) + np.linalg.slogdet(w[j])[1]
            for j in range(len(alpha))
        ]
    )  # 10.65
    diff = x[:, None, :] - m[None]
    quad = d / beta + nu * np.einsum("nkd,kde,nke->nk", diff, w, diff)  # 10.64
    log_rho = elog_pi + 0.5 * elog_det - 0.5 * d * np.log(2 * np.pi) - 0.5 * quad  # 10.46
    return softmax(log_rho, axis=1)  # 10.49


def test_vb_responsibilities_match_prml_and_stay_on_the_simplex_far_away():
    post = _posterior()
    x = np.random.default_rng(32).normal(scale=3, size=(30, 2))
    np.testing.assert_allclose(
        post.responsibilities(x).numpy(), _prml_responsibilities(post, x), rtol=1e-10, atol=1e-14
    )
    far = torch.tensor([[1e7, 1e7], [-1e7, 3e7], [0.0, -1e7]], dtype=torch.float64)
    r = post.responsibilities(far)
    assert torch.isfinite(r).all() and bool((r >= 0).all())
    torch.testing.assert_close(r.sum(1), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-15)
