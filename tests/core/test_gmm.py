"""The closed-form quantities (eq. 15–21, 26, 28) against independent references:
scipy's multivariate normal and logsumexp, brute-force enumeration of all K^N
assignments, torch autograd of an independently written eq. 18, and numpy M-steps."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import ppl_gmm as pg
from ppl_gmm.core.gmm import (
    entropy,
    expected_log_joint_from_stats,
    log_gaussian,
    weighted_log_prob,
    weighted_scatter,
)
from ppl_gmm.core.linalg import precision_cholesky

from oracles import random_gamma, random_params, scipy_log_weights

COV_TYPES = ("full", "diag", "spherical", "tied")


def numpy_elbo(x, gamma, params):
    """eq. 18 term by term in numpy: Σ γ (log α + log N) − Σ γ log γ, 0·log 0 = 0."""
    wlp = scipy_log_weights(x, params)
    g = np.asarray(gamma)
    safe = np.where(g > 0, g, 1.0)
    return float(np.sum(np.where(g > 0, g * wlp, 0.0)) - np.sum(np.where(g > 0, g * np.log(safe), 0.0)))


@pytest.mark.parametrize("d", [1, 3])
def test_log_gaussian_and_wlp_match_scipy(d):
    params = random_params(4, d, seed=d)
    x = np.random.default_rng(d).normal(scale=4, size=(50, d))
    ref = scipy_log_weights(x, params)
    got = weighted_log_prob(x, params).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-10)
    lg = log_gaussian(torch.tensor(x), params.mu, params.cov).numpy()
    np.testing.assert_allclose(lg, ref - np.log(params.alpha.numpy()), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("d", [1, 2, 4])
def test_e_step_and_log_likelihood_match_scipy(d):
    params = random_params(3, d, seed=10 + d)
    x = np.random.default_rng(d).normal(scale=3, size=(40, d))
    wlp = scipy_log_weights(x, params)
    lse = logsumexp(wlp, axis=1, keepdims=True)
    np.testing.assert_allclose(pg.e_step(x, params).numpy(), np.exp(wlp - lse), rtol=1e-11, atol=1e-14)  # eq. 20
    assert float(pg.log_likelihood(x, params)) == pytest.approx(float(lse.sum()), rel=1e-13)  # eq. 26


@pytest.mark.parametrize("d", [1, 3])
def test_elbo_matches_numpy_at_random_gamma(d):
    params = random_params(3, d, seed=20 + d)
    x = np.random.default_rng(d).normal(scale=3, size=(30, d))
    gamma = random_gamma(30, 3, seed=d).numpy()
    gamma[0] = [1.0, 0.0, 0.0]  # exact zeros: 0·log 0 = 0
    gamma[1] = [0.0, 0.5, 0.5]
    assert float(pg.elbo(x, torch.tensor(gamma), params)) == pytest.approx(numpy_elbo(x, gamma, params), rel=1e-12)


def test_elbo_equals_log_likelihood_after_e_step_and_is_below_otherwise(separated_2d):
    x, _, params = separated_2d
    gamma = pg.e_step(x, params)
    ll = float(pg.log_likelihood(x, params))
    assert ll == pytest.approx(float(logsumexp(scipy_log_weights(x.numpy(), params), axis=1).sum()), rel=1e-12)  # scipy
    assert float(pg.elbo(x, gamma, params)) == pytest.approx(ll, rel=1e-13, abs=1e-9)
    other = random_gamma(x.shape[0], 3, seed=4)
    assert float(pg.elbo(x, other, params)) < ll


def test_brute_force_enumeration_of_all_assignments():
    """log p(X) = log Σ_Z p(X, Z) over all K^N labelings (eq. 15, 26); eq. 18 as
    E_q[log p(X, Z)] + H(q) by enumeration under q(Z) = Π_i γ_{i z_i}; ELBO ≤ log p(X)."""
    k, n = 3, 5
    params = random_params(k, 2, seed=7)
    x = np.random.default_rng(7).normal(scale=2, size=(n, 2))
    wlp = scipy_log_weights(x, params)
    gamma = random_gamma(n, k, seed=8).numpy()
    log_joint, q_z = [], []
    for z in itertools.product(range(k), repeat=n):
        log_joint.append(sum(wlp[i, z[i]] for i in range(n)))  # eq. 15
        q_z.append(np.prod([gamma[i, z[i]] for i in range(n)]))
    log_joint, q_z = np.array(log_joint), np.array(q_z)
    log_px = logsumexp(log_joint)
    assert float(pg.log_likelihood(x, params)) == pytest.approx(log_px, rel=1e-12)
    elbo_enum = np.sum(q_z * log_joint) - np.sum(q_z * np.log(q_z))
    assert float(pg.elbo(x, torch.tensor(gamma), params)) == pytest.approx(elbo_enum, rel=1e-11)
    assert elbo_enum < log_px
    g_opt = pg.e_step(x, params)
    assert float(pg.elbo(x, g_opt, params)) == pytest.approx(log_px, rel=1e-12)


def _independent_elbo(x, gamma, alpha, mu, cov):
    """eq. 18 written from scratch with torch ops on a *general* Σ (logdet, solve)."""
    d = x.shape[1]
    diff = x[:, None, :] - mu[None]  # (N, K, D)
    sol = torch.linalg.solve(cov[None].expand(x.shape[0], -1, -1, -1), diff.unsqueeze(-1)).squeeze(-1)
    maha = (diff * sol).sum(-1)
    log_n = -0.5 * d * math.log(2 * math.pi) - 0.5 * torch.logdet(cov)[None] - 0.5 * maha
    return (gamma * (torch.log(alpha) + log_n)).sum() - (gamma * torch.log(gamma)).sum()


@pytest.mark.parametrize("d", [1, 3])
def test_elbo_gradients_match_autograd(d):
    params = random_params(3, d, seed=30 + d)
    x = torch.tensor(np.random.default_rng(d).normal(scale=2, size=(25, d)))
    gamma = random_gamma(25, 3, seed=d)
    leaves = [t.clone().requires_grad_(True) for t in (gamma, params.alpha, params.mu, params.cov)]
    _independent_elbo(x, *leaves).backward()
    g = pg.elbo_gradients(x, gamma, params)
    for name, leaf in zip(("gamma", "alpha", "mu", "cov"), leaves):
        torch.testing.assert_close(g[name], leaf.grad, rtol=1e-9, atol=1e-9)
    if d == 1:  # eq. 19 of the notes, literally
        xs, s2 = x[:, 0], params.cov[:, 0, 0]
        diff = xs[:, None] - params.mu[:, 0]
        torch.testing.assert_close(g["mu"][:, 0], (gamma * diff).sum(0) / s2)
        torch.testing.assert_close(g["cov"][:, 0, 0], (gamma * (diff**2 - s2)).sum(0) / (2 * s2**2))
        torch.testing.assert_close(g["alpha"], gamma.sum(0) / params.alpha)


def numpy_m_step(x, gamma, covariance_type, reg):
    n_k = gamma.sum(0)
    mu = gamma.T @ x / n_k[:, None]
    k, d = mu.shape
    s = np.stack([(gamma[:, j, None] * (x - mu[j])).T @ (x - mu[j]) for j in range(k)])
    if covariance_type == "full":
        cov = s / n_k[:, None, None]
    elif covariance_type == "tied":
        cov = np.broadcast_to(s.sum(0) / n_k.sum(), (k, d, d))
    elif covariance_type == "diag":
        cov = np.stack([np.diag(np.diag(s[j]) / n_k[j]) for j in range(k)])
    else:
        cov = np.stack([np.trace(s[j]) / (d * n_k[j]) * np.eye(d) for j in range(k)])
    return n_k / n_k.sum(), mu, cov + reg * np.eye(d)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_m_step_matches_numpy(covariance_type):
    x = np.random.default_rng(1).normal(size=(60, 3)) * [1.0, 5.0, 0.2] + 10.0
    gamma = random_gamma(60, 4, seed=2).numpy()
    p = pg.m_step(x, torch.tensor(gamma), covariance_type, reg_covar=1e-3)
    alpha, mu, cov = numpy_m_step(x, gamma, covariance_type, 1e-3)
    np.testing.assert_allclose(p.alpha.numpy(), alpha, rtol=1e-13)
    np.testing.assert_allclose(p.mu.numpy(), mu, rtol=1e-12)
    np.testing.assert_allclose(p.cov.numpy(), cov, rtol=1e-11, atol=1e-14)


def test_m_step_is_translation_equivariant_at_1e6():
    x = np.random.default_rng(3).normal(size=(200, 2))
    gamma = random_gamma(200, 2, seed=3)
    p = pg.m_step(x, gamma)
    q = pg.m_step(x + 1e6, gamma)
    torch.testing.assert_close(q.mu - 1e6, p.mu, rtol=0, atol=1e-8)
    torch.testing.assert_close(q.cov, p.cov, rtol=1e-7, atol=0)


def test_far_point_gets_finite_normalised_responsibilities(separated_2d):
    _, _, params = separated_2d
    x = torch.tensor([[1e7, 1e7], [-1e7, 3e7], [0.0, 0.0]], dtype=torch.float64)
    gamma = pg.e_step(x, params)
    assert torch.isfinite(gamma).all() and bool((gamma >= 0).all())
    # exp(ℓ − max) / Σ: every row on the simplex to round-off, however far the point is
    torch.testing.assert_close(gamma.sum(1), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-15)
    ll = float(pg.log_likelihood(x, params))
    ref = float(logsumexp(scipy_log_weights(x.numpy(), params), axis=1).sum())  # eq. 26 by scipy
    assert math.isfinite(ll) and ll == pytest.approx(ref, rel=1e-12)


def test_m_step_names_an_empty_component():
    gamma = random_gamma(20, 3, seed=1)
    gamma[:, 1] = 0.0
    gamma = gamma / gamma.sum(1, keepdim=True)
    with pytest.raises(pg.EmptyComponentError, match="component 1 is empty"):
        pg.m_step(np.random.default_rng(0).normal(size=(20, 2)), gamma)


def test_entropy_zero_log_zero():
    g = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    assert float(entropy(g)) == pytest.approx(math.log(2))


def test_zero_weight_component_gets_zero_responsibility():
    """α_k = 0: log α_k = −∞, γ_ik = 0 exactly, eq. 18 stays finite (0·(−∞) = 0)."""
    p = random_params(3, 2, seed=5)
    params = pg.GMMParams(torch.tensor([0.4, 0.0, 0.6], dtype=torch.float64), p.mu, p.cov)
    x = np.random.default_rng(5).normal(scale=3, size=(20, 2))
    gamma = pg.e_step(x, params)
    assert bool((gamma[:, 1] == 0).all())
    ref = scipy_log_weights(x, pg.GMMParams(torch.tensor([0.4, 0.6], dtype=torch.float64), p.mu[[0, 2]], p.cov[[0, 2]]))
    np.testing.assert_allclose(
        gamma[:, [0, 2]].numpy(), np.exp(ref - logsumexp(ref, axis=1, keepdims=True)), rtol=1e-11, atol=1e-14
    )
    assert float(pg.elbo(x, gamma, params)) == pytest.approx(float(logsumexp(ref, axis=1).sum()), rel=1e-12)


def _numpy_scatter(x, gamma, centres):
    """Σ_i γ_ik (x_i − c_k)(x_i − c_k)ᵀ by an explicit loop over points and components."""
    k, d = centres.shape
    out = np.zeros((k, d, d))
    for j in range(k):
        for i in range(x.shape[0]):
            diff = x[i] - centres[j]
            out[j] += gamma[i, j] * np.outer(diff, diff)
    return out


@pytest.mark.parametrize("d", [1, 3])
def test_weighted_scatter_matches_a_numpy_loop(d):
    rng = np.random.default_rng(40 + d)
    x = rng.normal(scale=2.0, size=(37, d)) + 5.0
    gamma = random_gamma(37, 4, seed=d).numpy()
    centres = rng.normal(size=(4, d))
    ref = _numpy_scatter(x, gamma, centres)
    got = weighted_scatter(torch.tensor(x), torch.tensor(gamma), torch.tensor(centres))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-12)
    # in row blocks (block boundary inside the data), and with γ as a transposed view of (K, N)
    blocked = weighted_scatter(torch.tensor(x), torch.tensor(gamma.T.copy()).T, torch.tensor(centres), block_rows=8)
    np.testing.assert_allclose(blocked.numpy(), ref, rtol=1e-12, atol=1e-12)
    # two-pass: data and centres shifted by 1e6 give the same scatter
    far = weighted_scatter(torch.tensor(x + 1e6), torch.tensor(gamma), torch.tensor(centres + 1e6))
    np.testing.assert_allclose(far.numpy(), ref, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_expected_log_joint_from_stats_plus_entropy_is_elbo(d):
    """E_q[log p(X, Z | Θ)] from (N_k, S_k about Θ's own μ_k) plus H(q) is eq. 18 (scipy, numpy) at
    random, non-optimal (Θ, γ)."""
    k, n = 3, 45
    params = random_params(k, d, seed=50 + d)
    x = np.random.default_rng(50 + d).normal(scale=3, size=(n, d))
    gamma = random_gamma(n, k, seed=60 + d)
    g = gamma.numpy()
    scatter = torch.tensor(_numpy_scatter(x, g, params.mu.numpy()))
    prec_chol = precision_cholesky(params.cov)
    got = expected_log_joint_from_stats(gamma.sum(0), scatter, params.alpha, prec_chol) + entropy(gamma)
    assert float(got) == pytest.approx(numpy_elbo(x, g, params), rel=1e-12)
    # the library's own scatter gives the same number
    lib = expected_log_joint_from_stats(
        gamma.sum(0), weighted_scatter(torch.tensor(x), gamma, params.mu), params.alpha, prec_chol
    )
    assert float(lib + entropy(gamma)) == pytest.approx(float(pg.elbo(x, gamma, params)), rel=1e-12)


def test_expected_log_joint_from_stats_empty_and_switched_off_components():
    """N_k = 0 contributes 0 even where α_k = 0; N_k > 0 with α_k = 0 gives −∞."""
    params = random_params(2, 2, seed=3)
    prec_chol = precision_cholesky(params.cov)
    x = np.random.default_rng(3).normal(size=(10, 2))
    gamma = np.zeros((10, 2))
    gamma[:, 0] = 1.0
    scatter = torch.tensor(_numpy_scatter(x, gamma, params.mu.numpy()))
    alpha = torch.tensor([1.0, 0.0], dtype=torch.float64)
    got = expected_log_joint_from_stats(torch.tensor(gamma.sum(0)), scatter, alpha, prec_chol)
    ref = multivariate_normal(params.mu[0].numpy(), params.cov[0].numpy()).logpdf(x).sum()  # log α_0 = 0
    assert float(got) == pytest.approx(ref, rel=1e-12)
    swapped = expected_log_joint_from_stats(torch.tensor(gamma.sum(0)), scatter, alpha.flip(0), prec_chol)
    assert float(swapped) == -math.inf


# --- property tests ------------------------------------------------------------------------------
_settings = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_settings
@given(seed=st.integers(0, 10_000), k=st.integers(1, 4), d=st.integers(1, 3))
def test_elbo_and_log_likelihood_are_permutation_invariant(seed, k, d):
    params = random_params(k, d, seed)
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.normal(scale=3, size=(15, d)))
    gamma = random_gamma(15, k, seed)
    perm = torch.as_tensor(rng.permutation(k))
    assert float(pg.log_likelihood(x, params.permute(perm))) == pytest.approx(
        float(pg.log_likelihood(x, params)), rel=1e-12
    )
    assert float(pg.elbo(x, gamma[:, perm], params.permute(perm))) == pytest.approx(
        float(pg.elbo(x, gamma, params)), rel=1e-12
    )
    rows = torch.as_tensor(rng.permutation(15))
    assert float(pg.elbo(x[rows], gamma[rows], params)) == pytest.approx(float(pg.elbo(x, gamma, params)), rel=1e-12)


@_settings
@given(seed=st.integers(0, 10_000), k=st.integers(1, 5), scale=st.floats(1e-3, 1e4))
def test_gamma_rows_lie_on_the_simplex(seed, k, scale):
    params = random_params(k, 2, seed)
    x = torch.tensor(np.random.default_rng(seed).normal(scale=scale, size=(20, 2)))
    gamma = pg.e_step(x, params)
    assert bool((gamma >= 0).all()) and bool((gamma <= 1).all())
    torch.testing.assert_close(gamma.sum(1), torch.ones(20, dtype=torch.float64), rtol=0, atol=1e-12)


@_settings
@given(seed=st.integers(0, 10_000), covariance_type=st.sampled_from(COV_TYPES))
def test_m_step_then_e_step_increases_elbo(seed, covariance_type):
    """Coordinate ascent on eq. 18: Θ ← argmax L(γ, ·), then γ ← argmax L(·, Θ)."""
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.normal(size=(40, 2)) + rng.integers(0, 3, 40)[:, None] * 3.0)
    gamma = random_gamma(40, 3, seed)
    params = pg.m_step(x, gamma, covariance_type)
    new_gamma = pg.e_step(x, params)
    params2 = pg.m_step(x, new_gamma, covariance_type)
    assert float(pg.elbo(x, new_gamma, params)) >= float(pg.elbo(x, gamma, params)) - 1e-9
    assert float(pg.elbo(x, new_gamma, params2)) >= float(pg.elbo(x, new_gamma, params)) - 1e-9
    if covariance_type == "full":  # no other Θ is better than the M-step's for fixed γ
        other = random_params(3, 2, seed)
        assert float(pg.elbo(x, gamma, other)) <= float(pg.elbo(x, gamma, params)) + 1e-9
