"""NormalWishartPrior, default_prior and the Normal-Wishart algebra, against scipy and PRML's
literal formulas."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import digamma

import ppl_gmm as pg
from ppl_gmm.core.priors import (
    NormalWishartPrior,
    conjugate_update_from_data,
    default_prior,
    expected_log_det,
    log_dirichlet_norm,
    log_prior,
    log_wishart_norm,
    posterior_mode,
    resolve_prior,
)

from oracles import map_m_step, random_gamma, random_params

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
        ({"alpha0": 0.0}, "alpha0 must be > 0"),
        ({"alpha0": -1.0}, "alpha0 must be > 0"),
        ({"beta0": 0.0}, "beta0 must be > 0"),
        ({"nu0": 1.0}, r"nu0 must be > D - 1 = 1"),
        ({"W0": [[1.0, 2.0], [2.0, 1.0]]}, "positive definite"),
        ({"W0": [[1.0, 0.5], [0.0, 1.0]]}, "symmetric"),
        ({"W0": np.eye(3)}, r"shape \(D, D\) = \(2, 2\)"),
        ({"m0": [np.nan, 0.0]}, "m0 must be a finite"),
        ({"W0": [[np.inf, 0], [0, 1]]}, "NaN or infinite"),
        ({"alpha0": float("inf")}, "alpha0 must be finite"),
    ],
)
def test_invalid_priors_are_refused_with_a_clear_message(kwargs, match):
    base = {"alpha0": 1.0, "m0": [0.0, 0.0], "beta0": 1.0, "nu0": 3.0, "W0": np.eye(2)}
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
    gamma = random_gamma(len(faithful), 3, seed=4).numpy()
    p = default_prior(faithful, 3)
    x = torch.as_tensor(faithful)
    st = conjugate_update_from_data(x, torch.as_tensor(gamma), p)
    prml = _prml_update(faithful, gamma, p)
    for j, (a, b, m, nu, w_inv) in enumerate(prml):
        assert float(st.n_k[j]) == pytest.approx(gamma[:, j].sum(), rel=1e-14)
        assert float(st.alpha[j]) == pytest.approx(a, rel=1e-14)
        assert float(st.beta[j]) == pytest.approx(b, rel=1e-14)
        assert float(st.nu[j]) == pytest.approx(nu, rel=1e-14)
        np.testing.assert_allclose(st.m[j].numpy(), m, rtol=1e-12)
        np.testing.assert_allclose(st.w_inv[j].numpy(), w_inv, rtol=1e-10)
        # the new field: the scatter about the new m_k, Σ_i γ_ik (x_i − m_k)(x_i − m_k)ᵀ
        diff = faithful - m
        np.testing.assert_allclose(st.scatter[j].numpy(), (gamma[:, j, None] * diff).T @ diff, rtol=1e-10)
    # γ given as a transposed view of a (K, N) array: the same update
    st_t = conjugate_update_from_data(x, torch.as_tensor(gamma.T.copy()).T, p)
    for name in ("alpha", "beta", "m", "nu", "w_inv", "scatter"):
        torch.testing.assert_close(getattr(st_t, name), getattr(st, name), rtol=1e-13, atol=0)
    # explicit m0 and W0⁻¹ (the work dtype and coordinates) are used instead of the prior's
    m0 = torch.tensor([1.0, 50.0], dtype=torch.float64)
    w0_inv = torch.tensor([[2.0, 0.3], [0.3, 40.0]], dtype=torch.float64)
    moved = NormalWishartPrior(p.alpha0, m0, p.beta0, p.nu0, torch.linalg.inv(w0_inv))
    st_m = conjugate_update_from_data(x, torch.as_tensor(gamma), p, m0=m0, w0_inv=w0_inv)
    for j, (_, _, m, _, w_inv) in enumerate(_prml_update(faithful, gamma, moved)):
        np.testing.assert_allclose(st_m.m[j].numpy(), m, rtol=1e-12)
        np.testing.assert_allclose(st_m.w_inv[j].numpy(), w_inv, rtol=1e-10)


def test_conjugate_update_empty_component_is_the_prior_and_shift_is_exact(faithful):
    x = torch.as_tensor(faithful)
    gamma = torch.zeros(len(x), 2, dtype=torch.float64)
    gamma[:, 0] = 1.0
    p = default_prior(faithful, 2)
    st = conjugate_update_from_data(x, gamma, p)
    assert float(st.n_k[1]) == 0.0
    assert torch.equal(st.m[1], p.m0) and torch.allclose(st.w_inv[1], p.W0_inv, rtol=0, atol=0)
    assert float(st.alpha[1]) == p.alpha0 and float(st.nu[1]) == p.nu0 and float(st.beta[1]) == p.beta0
    # data and m0 shifted by 1e6: the same W_k⁻¹ (two-pass scatter about m_k), shifted m_k
    g = random_gamma(len(x), 3, seed=5)
    p3 = default_prior(faithful, 3)
    shifted = NormalWishartPrior(p3.alpha0, p3.m0 + 1e6, p3.beta0, p3.nu0, p3.W0)
    a = conjugate_update_from_data(x, g, p3)
    b = conjugate_update_from_data(x + 1e6, g, shifted)
    torch.testing.assert_close(b.w_inv, a.w_inv, rtol=1e-8, atol=0)
    torch.testing.assert_close(b.m - 1e6, a.m, rtol=0, atol=1e-8)


@pytest.mark.parametrize("reg_covar", [0.0, 1e-3])
def test_posterior_mode_equals_the_map_m_step_oracle(faithful, reg_covar):
    """The joint mode of the conjugate posterior = oracles.map_m_step (PRML 10.62 about x̄_k)."""
    x = torch.as_tensor(faithful)
    for seed, alpha0 in ((6, 1.0), (7, 0.3)):  # alpha0 < 1: a tiny component's weight clamps at 0
        gamma = random_gamma(len(x), 3, seed=seed)
        gamma[:, 2] *= 1e-3
        gamma = gamma / gamma.sum(1, keepdim=True)
        base = default_prior(faithful, 3)
        p = NormalWishartPrior(alpha0, base.m0, base.beta0, base.nu0, base.W0)
        got = posterior_mode(conjugate_update_from_data(x, gamma, p), reg_covar)
        ref = map_m_step(faithful, gamma, p, reg_covar)
        torch.testing.assert_close(got.alpha, ref.alpha, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(got.mu, ref.mu, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got.cov, ref.cov, rtol=1e-10, atol=1e-12)
        if alpha0 < 1:
            assert float(got.alpha[2]) == 0.0  # max(N_k + alpha0 − 1, 0)


def _scipy_log_prior(params, prior):
    """ln Dir(α) + Σ_k [ln W(Λ_k | W0, nu0) + ln N(μ_k | m0, (beta0 Λ_k)⁻¹)] by scipy.stats."""
    alpha, mu, cov = (t.numpy() for t in (params.alpha, params.mu, params.cov))
    active = alpha > 0
    out = stats.dirichlet.logpdf(alpha[active], np.full(active.sum(), prior.alpha0)) if active.sum() > 1 else 0.0
    for j in range(len(alpha)):
        lam = np.linalg.inv(cov[j])
        out += stats.wishart.logpdf(lam, df=prior.nu0, scale=prior.W0.numpy())
        out += stats.multivariate_normal.logpdf(mu[j], prior.m0.numpy(), cov[j] / prior.beta0)
    return float(out)


@pytest.mark.parametrize("k,d", [(1, 1), (3, 1), (2, 2), (4, 3)])
def test_log_prior_matches_scipy(k, d):
    rng = np.random.default_rng(10 * k + d)
    a = rng.normal(size=(d, d))
    prior = NormalWishartPrior(alpha0=0.7, m0=rng.normal(size=d), beta0=0.3, nu0=d + 1.5, W0=a @ a.T + np.eye(d))
    params = random_params(k, d, seed=k + d)
    assert float(log_prior(params, prior)) == pytest.approx(_scipy_log_prior(params, prior), rel=1e-11)
    if k > 2:  # a switched-off component (α_k = 0) leaves the Dirichlet over the active ones
        alpha = params.alpha.clone()
        alpha[0] = 0.0
        off = pg.GMMParams(alpha / alpha.sum(), params.mu, params.cov)
        assert float(log_prior(off, prior)) == pytest.approx(_scipy_log_prior(off, prior), rel=1e-11)
    with pytest.raises(ValueError, match=f"the prior is {d}-dimensional"):
        log_prior(random_params(k, d + 1, seed=0), prior)


def test_log_normalisers_match_scipy():
    """ln C(alpha0 1_K) + K ln B(W0, nu0) + (K D / 2) ln beta0, each normaliser read off scipy's
    density minus its kernel at one point."""
    d, k = 2, 3
    prior = NormalWishartPrior(alpha0=0.8, m0=[0.0, 1.0], beta0=0.25, nu0=3.5, W0=[[1.5, 0.2], [0.2, 0.7]])
    w0 = prior.W0.numpy()
    lam = np.array([[2.0, 0.3], [0.3, 1.0]])
    log_b = stats.wishart(df=prior.nu0, scale=w0).logpdf(lam) - (
        0.5 * (prior.nu0 - d - 1) * np.linalg.slogdet(lam)[1] - 0.5 * np.trace(np.linalg.solve(w0, lam))
    )
    assert float(prior.log_wishart_norm0()) == pytest.approx(log_b, abs=1e-12)
    point = np.array([0.2, 0.3, 0.5])
    log_c = stats.dirichlet(np.full(k, prior.alpha0)).logpdf(point) - ((prior.alpha0 - 1) * np.log(point)).sum()
    ref = log_c + k * log_b + 0.5 * k * d * math.log(prior.beta0)
    assert float(prior.log_normalisers(k)) == pytest.approx(ref, abs=1e-11)
    assert prior.log_normalisers(k, torch.float32).dtype == torch.float32


def test_resolve_prior(faithful):
    x = torch.as_tensor(faithful)
    default = resolve_prior(x, 3, None)
    ref = default_prior(faithful, 3)
    assert torch.equal(default.W0, ref.W0) and torch.equal(default.m0, ref.m0)
    assert resolve_prior(x, 3, ref) is ref
    with pytest.raises(TypeError, match="prior must be a NormalWishartPrior"):
        resolve_prior(x, 3, {"alpha0": 1.0})
    with pytest.raises(ValueError, match="the prior is 1-dimensional"):
        resolve_prior(x, 3, NormalWishartPrior(1.0, 0.0, 1.0, 2.0, 1.0))


def test_public_names():
    assert pg.NormalWishartPrior is NormalWishartPrior and pg.default_prior is default_prior
    assert "alpha0=1" in repr(default_prior(np.arange(10.0), 2))
