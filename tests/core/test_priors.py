"""NormalWishartPrior, default_prior and the Normal-Wishart algebra, against scipy and PRML's
literal formulas."""
import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import digamma

import ppl_gmm as pg
from ppl_gmm.priors import (
    NormalWishartPrior,
    conjugate_update,
    default_prior,
    expected_log_det,
    log_dirichlet_norm,
    log_wishart_norm,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: small problems, one torch thread


def test_prior_stores_float64_symmetric_tensors():
    w0 = np.array([[2.0, 0.5], [0.5 + 1e-15, 1.0]])
    p = NormalWishartPrior(alpha0=np.float32(0.5), m0=[1, 2], beta0=1, nu0=3, W0=w0)
    assert p.m0.dtype == torch.float64 and p.W0.dtype == torch.float64
    assert torch.equal(p.W0, p.W0.T) and p.d == 2 and isinstance(p.alpha0, float)
    assert torch.allclose(p.W0_inv @ p.W0, torch.eye(2, dtype=torch.float64), atol=1e-12)
    one_d = NormalWishartPrior(1.0, 0.0, 0.1, 1.5, 2.0)  # D = 1: scalars
    assert one_d.W0.shape == (1, 1) and one_d.m0.shape == (1,)
    with pytest.raises(ValueError, match="nu0 > D \\+ 1"):
        p.expected_cov()  # nu0 = 3 = D + 1: E[Σ] does not exist
    p5 = NormalWishartPrior(1.0, [0, 0], 1.0, 5.0, w0)
    np.testing.assert_allclose(p5.expected_cov().numpy(), np.linalg.inv(p5.W0.numpy()) / 2, rtol=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(alpha0=0.0), "alpha0 must be > 0"),
        (dict(alpha0=-1.0), "alpha0 must be > 0"),
        (dict(beta0=0.0), "beta0 must be > 0"),
        (dict(nu0=1.0), r"nu0 must be > D - 1 = 1"),
        (dict(W0=[[1.0, 2.0], [2.0, 1.0]]), "positive definite"),
        (dict(W0=[[1.0, 0.5], [0.0, 1.0]]), "symmetric"),
        (dict(W0=np.eye(3)), r"shape \(D, D\) = \(2, 2\)"),
        (dict(m0=[np.nan, 0.0]), "m0 must be a finite"),
        (dict(W0=[[np.inf, 0], [0, 1]]), "NaN or infinite"),
        (dict(alpha0=float("inf")), "alpha0 must be finite"),
    ],
)
def test_invalid_priors_are_refused_with_a_clear_message(kwargs, match):
    base = dict(alpha0=1.0, m0=[0.0, 0.0], beta0=1.0, nu0=3.0, W0=np.eye(2))
    with pytest.raises(ValueError, match=match):
        NormalWishartPrior(**{**base, **kwargs})


@pytest.mark.parametrize("bad", [True, "1", None])
def test_non_numeric_hyperparameters_are_type_errors(bad):
    with pytest.raises(TypeError, match="alpha0 must be a real number"):
        NormalWishartPrior(bad, [0.0], 1.0, 1.0, 1.0)


def test_nu0_just_above_d_minus_one_is_accepted():
    NormalWishartPrior(1.0, [0.0, 0.0], 1.0, 1.0 + 1e-9, np.eye(2))


def test_check_data_names_the_dimension_mismatch():
    p = NormalWishartPrior(1.0, [0.0, 0.0], 1.0, 3.0, np.eye(2))
    with pytest.raises(ValueError, match="2-dimensional .* D = 3"):
        p.check_data(torch.zeros(5, 3))


def test_default_prior_follows_fraley_raftery(faithful):
    for k in (1, 3):
        p = default_prior(faithful, k)
        cov = np.cov(faithful.T)  # numpy's two-pass sample covariance, divisor N − 1
        np.testing.assert_allclose(p.m0.numpy(), faithful.mean(0), rtol=1e-14)
        np.testing.assert_allclose(p.W0_inv.numpy(), cov / k ** (2 / 2), rtol=1e-10)
        assert (p.alpha0, p.beta0, p.nu0) == (1.0, 0.01, 4.0)
        np.testing.assert_allclose(p.expected_cov().numpy(), cov / k, rtol=1e-10)  # E[Σ] = W0⁻¹ for nu0 = D + 2


def test_default_prior_one_dimensional_and_bad_data(galaxies):
    p = default_prior(galaxies, 4)
    assert p.d == 1 and p.nu0 == 3.0
    np.testing.assert_allclose(float(p.W0_inv), np.var(galaxies, ddof=1) / 16, rtol=1e-10)
    with pytest.raises(ValueError, match="singular"):
        default_prior(np.c_[galaxies, 2 * galaxies], 2)
    with pytest.raises(ValueError, match="larger than the number of data points"):
        default_prior(galaxies[:3], 4)


def test_log_wishart_norm_and_expected_log_det_match_scipy():
    rng = np.random.default_rng(0)
    for d, nu in ((1, 0.5), (2, 3.7), (4, 9.0)):
        a = rng.normal(size=(d, d))
        w = a @ a.T + d * np.eye(d)
        lam = stats.wishart(df=nu, scale=w).rvs(random_state=1).reshape(d, d)
        log_det_w = torch.tensor(np.linalg.slogdet(w)[1])
        log_b = float(log_wishart_norm(log_det_w, torch.tensor([nu], dtype=torch.float64), d)[0])
        kernel = 0.5 * (nu - d - 1) * np.linalg.slogdet(lam)[1] - 0.5 * np.trace(np.linalg.solve(w, lam))
        assert log_b + kernel == pytest.approx(stats.wishart(df=nu, scale=w).logpdf(lam), abs=1e-10)
        # E[ln|Λ|] (PRML 10.65): scipy's digamma and a Monte Carlo average
        elog = float(expected_log_det(log_det_w, torch.tensor([nu], dtype=torch.float64), d)[0])
        ref = sum(digamma((nu + 1 - i) / 2) for i in range(1, d + 1)) + d * math.log(2) + np.linalg.slogdet(w)[1]
        assert elog == pytest.approx(ref, abs=1e-12)
        draws = stats.wishart(df=nu, scale=w).rvs(size=20000, random_state=2).reshape(-1, d, d)
        mc = np.linalg.slogdet(draws)[1]
        assert abs(mc.mean() - elog) < 4 * mc.std() / math.sqrt(len(mc))


def test_log_dirichlet_norm_matches_scipy():
    alpha = np.array([0.3, 2.0, 5.5])
    point = np.array([0.2, 0.3, 0.5])
    kernel = ((alpha - 1) * np.log(point)).sum()
    got = float(log_dirichlet_norm(torch.tensor(alpha)))
    assert got + kernel == pytest.approx(stats.dirichlet(alpha).logpdf(point), abs=1e-12)


def _prml_update(x, gamma, p):
    """PRML 10.51–10.53, 10.58, 10.60–10.63 literally, in numpy."""
    m0, w0_inv = p.m0.numpy(), p.W0_inv.numpy()
    n_k = gamma.sum(0)
    xbar = gamma.T @ x / n_k[:, None]
    out = []
    for j in range(gamma.shape[1]):
        diff = x - xbar[j]
        s_k = (gamma[:, j, None] * diff).T @ diff / n_k[j]
        beta = p.beta0 + n_k[j]
        dm = xbar[j] - m0
        w_inv = w0_inv + n_k[j] * s_k + p.beta0 * n_k[j] / beta * np.outer(dm, dm)  # 10.62
        out.append((p.alpha0 + n_k[j], beta, (p.beta0 * m0 + n_k[j] * xbar[j]) / beta, p.nu0 + n_k[j], w_inv))
    return out


def test_conjugate_update_equals_prml_literal_form(faithful):
    from conftest import random_gamma

    gamma = random_gamma(len(faithful), 3, seed=4).numpy()
    p = default_prior(faithful, 3)
    st = conjugate_update(torch.as_tensor(faithful), torch.as_tensor(gamma.T), p)
    for j, (a, b, m, nu, w_inv) in enumerate(_prml_update(faithful, gamma, p)):
        assert float(st.alpha[j]) == pytest.approx(a, rel=1e-14)
        assert float(st.beta[j]) == pytest.approx(b, rel=1e-14)
        assert float(st.nu[j]) == pytest.approx(nu, rel=1e-14)
        np.testing.assert_allclose(st.m[j].numpy(), m, rtol=1e-12)
        np.testing.assert_allclose(st.w_inv[j].numpy(), w_inv, rtol=1e-10)


def test_conjugate_update_empty_component_is_the_prior_and_shift_is_exact(faithful):
    x = torch.as_tensor(faithful)
    gamma = torch.zeros(len(x), 2, dtype=torch.float64)
    gamma[:, 0] = 1.0
    p = default_prior(faithful, 2)
    st = conjugate_update(x, gamma.T, p)
    assert float(st.n_k[1]) == 0.0
    assert torch.equal(st.m[1], p.m0) and torch.allclose(st.w_inv[1], p.W0_inv, rtol=0, atol=0)
    assert float(st.alpha[1]) == p.alpha0 and float(st.nu[1]) == p.nu0 and float(st.beta[1]) == p.beta0
    # data and m0 shifted by 1e6: the same W_k⁻¹ (two-pass scatter about m_k), shifted m_k
    from conftest import random_gamma

    g = random_gamma(len(x), 3, seed=5)
    p3 = default_prior(faithful, 3)
    shifted = NormalWishartPrior(p3.alpha0, p3.m0 + 1e6, p3.beta0, p3.nu0, p3.W0)
    a = conjugate_update(x, g.T, p3)
    b = conjugate_update(x + 1e6, g.T, shifted)
    torch.testing.assert_close(b.w_inv, a.w_inv, rtol=1e-8, atol=0)
    torch.testing.assert_close(b.m - 1e6, a.m, rtol=0, atol=1e-8)


def test_public_names():
    assert pg.NormalWishartPrior is NormalWishartPrior and pg.default_prior is default_prior
    assert "alpha0=1" in repr(default_prior(np.arange(10.0), 2))
