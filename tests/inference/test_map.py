"""MAP-EM: the closed-form mode against numerical optimisation of an independent log posterior
(torch.distributions, autograd, LBFGS) and against the written-out M-step of ``oracles``, the
objective's trace, and the documented recoveries."""

import numpy as np
import pytest
import torch
import torch.distributions as td
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import ppl_gmm as pg
from ppl_gmm.core.priors import (
    NormalWishartPrior,
    conjugate_update_from_data,
    default_prior,
    log_prior,
    posterior_mode,
)

from oracles import lbfgs_max, map_m_step, random_gamma, random_params

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: small problems, one torch thread


def _standardise(x):
    x = np.asarray(x, dtype=np.float64)
    return (x - x.mean(0)) / x.std(0)


def _unpack(theta, k, d):
    """Unconstrained θ -> (α, μ, Λ): softmax logits, free means, Λ = L Lᵀ with log-diagonal L."""
    logits = torch.cat([theta[: k - 1], torch.zeros(1, dtype=theta.dtype)])
    mu = theta[k - 1 : k - 1 + k * d].reshape(k, d)
    raw = theta[k - 1 + k * d :].reshape(k, d, d)
    chol = torch.tril(raw, -1) + torch.diag_embed(torch.exp(torch.diagonal(raw, dim1=-2, dim2=-1)))
    return torch.softmax(logits, 0), mu, chol @ chol.transpose(-1, -2)


def _pack(params):
    lam = torch.linalg.inv(params.cov)
    chol = torch.linalg.cholesky(0.5 * (lam + lam.transpose(-1, -2)))
    raw = torch.tril(chol, -1) + torch.diag_embed(torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)))
    logits = torch.log(params.alpha) - torch.log(params.alpha[-1])
    return torch.cat([logits[:-1], params.mu.reshape(-1), raw.reshape(-1)]).clone()


def _log_prior_td(alpha, mu, lam, prior):
    """ln p(Θ) from torch.distributions: Dirichlet × Normal(m0, (beta0 Λ)⁻¹) × Wishart(W0, nu0), Λ-densities."""
    k, d = mu.shape
    lp = td.Dirichlet(torch.full((k,), prior.alpha0, dtype=mu.dtype)).log_prob(alpha) if k > 1 else 0.0
    lp = lp + td.MultivariateNormal(prior.m0.expand(k, d), precision_matrix=prior.beta0 * lam).log_prob(mu).sum()
    wishart = td.Wishart(df=torch.tensor(prior.nu0, dtype=mu.dtype), covariance_matrix=prior.W0)
    return lp + wishart.log_prob(lam).sum()


def _q_td(theta, x, gamma, prior, k, d):
    """Σ_ik γ_ik [ln α_k + ln N(x_i | μ_k, Λ_k⁻¹)] + ln p(Θ): the MAP M-step objective, independently."""
    alpha, mu, lam = _unpack(theta, k, d)
    comp = td.MultivariateNormal(mu, precision_matrix=lam).log_prob(x[:, None, :])
    return (gamma * (torch.log(alpha) + comp)).sum() + _log_prior_td(alpha, mu, lam, prior)


def _log_post_td(theta, x, prior, k, d):
    """ln p(X | Θ) + ln p(Θ) (Z summed out, eq. 26), independently."""
    alpha, mu, lam = _unpack(theta, k, d)
    comp = td.MultivariateNormal(mu, precision_matrix=lam).log_prob(x[:, None, :])
    return torch.logsumexp(torch.log(alpha) + comp, 1).sum() + _log_prior_td(alpha, mu, lam, prior)


def _grad(f, theta):
    theta = theta.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(theta), theta)
    return g


def test_m_step_is_the_joint_mode_in_alpha_mu_lambda(faithful):
    """Σ_k = W_k⁻¹/(ν_k − D): the library's M-step (posterior_mode of the conjugate update) equals the
    written-out oracle, its gradient is 0, and LBFGS from elsewhere lands on it."""
    x = torch.as_tensor(_standardise(faithful))[::3]
    k, d = 3, 2
    gamma = random_gamma(len(x), k, seed=3)
    prior = NormalWishartPrior(2.5, [0.1, -0.2], 0.7, 4.5, [[1.5, 0.3], [0.3, 0.8]])
    mode = posterior_mode(conjugate_update_from_data(x, gamma, prior))
    ref = map_m_step(x, gamma, prior)
    for name in ("alpha", "mu", "cov"):
        torch.testing.assert_close(getattr(mode, name), getattr(ref, name), rtol=1e-12, atol=1e-14)
    with_reg = posterior_mode(conjugate_update_from_data(x, gamma, prior), reg_covar=1e-3)
    torch.testing.assert_close(with_reg.cov, map_m_step(x, gamma, prior, reg_covar=1e-3).cov, rtol=1e-12, atol=1e-14)
    f = lambda th: _q_td(th, x, gamma, prior, k, d)
    theta = _pack(mode)
    assert float(_grad(f, theta).abs().max()) < 1e-8
    opt = lbfgs_max(
        f, theta + 0.2 * torch.randn(theta.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    )
    alpha, mu, lam = _unpack(opt, k, d)
    torch.testing.assert_close(alpha, mode.alpha, rtol=0, atol=1e-6)
    torch.testing.assert_close(mu, mode.mu, rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.linalg.inv(lam), mode.cov, rtol=0, atol=1e-6)
    # the Σ-parametrisation's mode W⁻¹/(ν + D + 2) is a different point: the Λ-mode is not it
    assert float(f(theta)) > float(f(_pack(pg.GMMParams(mode.alpha, mode.mu, mode.cov * 0.9)))) + 1e-3


def test_log_prior_equals_torch_distributions(faithful):
    prior = NormalWishartPrior(1.7, [0.3, 1.0], 0.4, 3.3, [[0.9, -0.2], [-0.2, 0.5]])
    for k in (1, 4):
        p = random_params(k, 2, seed=k)
        ref = _log_prior_td(p.alpha, p.mu, torch.linalg.inv(p.cov), prior)
        assert float(log_prior(p, prior)) == pytest.approx(float(ref), abs=1e-10)


def test_fit_map_reaches_the_posterior_mode(faithful):
    """The converged MAP-EM point is a stationary point of ln p(X | Θ) + ln p(Θ) that LBFGS
    cannot improve, and .elbo[-1] is that log posterior."""
    x = torch.as_tensor(_standardise(faithful))[::2]
    k, d = 2, 2
    prior = default_prior(x, k)
    fit = pg.fit_map(x, k, prior, seed=0, tol=0, max_iter=200)
    f = lambda th: _log_post_td(th, x, prior, k, d)
    theta = _pack(fit.params)
    assert float(fit.elbo[-1]) == pytest.approx(float(f(theta)), abs=1e-9)
    assert float(_grad(f, theta).abs().max()) < 1e-6
    opt = lbfgs_max(f, theta + 0.05)
    assert float(f(opt)) <= float(fit.elbo[-1]) + 1e-9
    alpha, mu, lam = _unpack(opt, k, d)
    torch.testing.assert_close(mu, fit.params.mu, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.linalg.inv(lam), fit.params.cov, rtol=1e-5, atol=1e-6)


def test_trace_is_monotone_and_ends_with_an_e_step(faithful):
    fit = pg.fit_map(faithful, 3, default_prior(faithful, 3), seed=1, max_iter=60, tol=0)
    assert fit.method == "map" and fit.n_iter == 60 and len(fit.elbo) == 61
    assert bool((torch.diff(fit.elbo) >= -1e-9 * fit.elbo.abs()[1:]).all())
    log_prior_trace = torch.tensor(fit.info["log_prior"], dtype=torch.float64)
    # KL gap after the closing E-step is 0: eq. 18 − ... = eq. 26
    assert float(fit.elbo[-1] - log_prior_trace[-1]) == pytest.approx(float(fit.log_likelihood[-1]), abs=1e-8)
    assert bool((fit.log_likelihood - (fit.elbo - log_prior_trace) >= -1e-8).all())  # KL ≥ 0
    torch.testing.assert_close(fit.kl_gap, fit.log_likelihood - (fit.elbo - log_prior_trace))
    assert abs(float(fit.kl_gap[-1])) < 1e-8 and bool((fit.kl_gap >= -1e-8).all())
    torch.testing.assert_close(fit.gamma, pg.e_step(faithful, fit.params), rtol=0, atol=1e-14)
    # γ and eq. 26 against scipy, ln p(Θ) against torch.distributions (independent implementations)
    p = fit.params
    wlp = np.stack(
        [
            np.log(float(p.alpha[j])) + multivariate_normal(p.mu[j].numpy(), p.cov[j].numpy()).logpdf(faithful)
            for j in range(3)
        ],
        1,
    )
    lse = logsumexp(wlp, axis=1, keepdims=True)
    np.testing.assert_allclose(fit.gamma.numpy(), np.exp(wlp - lse), rtol=0, atol=1e-12)
    assert float(fit.log_likelihood[-1]) == pytest.approx(float(lse.sum()), rel=1e-12)
    lp_ref = float(_log_prior_td(p.alpha, p.mu, torch.linalg.inv(p.cov), default_prior(faithful, 3)))
    assert float(log_prior_trace[-1]) == pytest.approx(lp_ref, rel=1e-12, abs=1e-10)


def test_weak_prior_limit_is_maximum_likelihood(faithful):
    """alpha0 = 1, beta0 → 0, W0⁻¹ → 0, nu0 → D: the mode → the MLE of fit_cavi (reg_covar = 0)."""
    x = _standardise(faithful)
    weak = NormalWishartPrior(1.0, [0.0, 0.0], 1e-10, 2.0 + 1e-10, np.eye(2) * 1e10)
    m = pg.fit_map(x, 2, weak, seed=0, tol=0, max_iter=100)
    c = pg.fit_cavi(x, 2, seed=0, tol=0, max_iter=100, reg_covar=0.0)
    assert m.params.allclose(c.params, rtol=1e-7, atol=1e-8)


def test_empty_component_falls_back_to_the_prior_mode(faithful):
    x = _standardise(faithful)
    prior = NormalWishartPrior(2.0, [0.5, -0.5], 0.1, 5.0, np.eye(2) * 2.0)
    init = pg.GMMParams(
        torch.tensor([0.5, 0.49, 0.01], dtype=torch.float64),
        torch.tensor([[-1.0, -1.0], [1.0, 1.0], [1e4, 1e4]], dtype=torch.float64),
        torch.eye(2, dtype=torch.float64).repeat(3, 1, 1) * 0.3,
    )
    assert float(pg.e_step(x, init)[:, 2].max()) == 0.0  # component 2 receives γ = 0 (underflow)
    fit = pg.fit_map(x, 3, prior, init=init, max_iter=1, tol=0)  # one M-step from that γ: no error
    torch.testing.assert_close(fit.params.mu[2], prior.m0, rtol=0, atol=0)
    torch.testing.assert_close(fit.params.cov[2], prior.W0_inv / (5.0 - 2), rtol=1e-12, atol=0)
    n = len(x)
    assert float(fit.params.alpha[2]) == pytest.approx((2.0 - 1) / (n + 3 * (2.0 - 1)), rel=1e-12)
    longer = pg.fit_map(x, 3, prior, init=init, max_iter=30, tol=0)  # it then takes part again
    assert bool(torch.isfinite(longer.elbo).all()) and bool((torch.diff(longer.elbo) >= -1e-9).all())


def test_small_alpha0_switches_components_off(faithful):
    x = _standardise(faithful)
    prior = NormalWishartPrior(0.05, [0.0, 0.0], 1.0, 3.0, np.eye(2))
    init = pg.GMMParams(
        torch.tensor([0.49, 0.49, 0.02], dtype=torch.float64),
        torch.tensor([[-1.0, -1.0], [1.0, 1.0], [8.0, 8.0]], dtype=torch.float64),
        torch.eye(2, dtype=torch.float64).repeat(3, 1, 1) * 0.3,
    )
    fit = pg.fit_map(x, 3, prior, init=init, max_iter=50, tol=0)
    assert float(fit.params.alpha[2]) == 0.0 and float(fit.gamma[:, 2].max()) == 0.0
    assert bool(torch.isfinite(fit.elbo).all()) and float(fit.params.alpha.sum()) == pytest.approx(1.0)
    # after the switch-off the objective is again non-decreasing
    assert bool((torch.diff(fit.elbo[5:]) >= -1e-9 * fit.elbo.abs()[6:]).all())


@pytest.mark.parametrize(
    "prior, kwargs, error, match",
    [
        (NormalWishartPrior(1.0, [0.0, 0.0], 1.0, 2.0, np.eye(2)), {}, ValueError, "nu0 > D = 2"),
        (NormalWishartPrior(1.0, [0.0], 1.0, 2.0, 1.0), {}, ValueError, "1-dimensional"),
        (None, {"sample_weight": np.ones(5)}, ValueError, "sample_weight has 5 entries"),
        (None, {"sample_weight": -np.ones(272)}, ValueError, "sample_weight has 272 invalid"),
        (None, {"covariance_type": "nope"}, ValueError, "unknown covariance_type"),
        ("prior", {}, TypeError, "NormalWishartPrior"),
        (None, {"init": "bogus"}, ValueError, "unknown init"),
    ],
)
def test_bad_input_is_refused_before_work(faithful, prior, kwargs, error, match):
    with pytest.raises(error, match=match):
        pg.fit_map(faithful, 2, prior, **kwargs)


def test_k_larger_than_data_and_reproducibility(faithful):
    from ppl_gmm.inference.map import fit_map

    with pytest.raises(ValueError, match="larger than the number of data points"):
        pg.fit_map(faithful[:3], 4)
    a = pg.fit_map(faithful, 3, seed=7, n_init=2, max_iter=30, tol=0)
    b = pg.fit_map(faithful, 3, seed=7, n_init=2, max_iter=30, tol=0)
    assert torch.equal(a.params.mu, b.params.mu) and torch.equal(a.elbo, b.elbo) and a.seed == 7
    f32 = pg.fit_map(faithful.astype(np.float32), 2, seed=0, max_iter=20)
    assert f32.params.dtype == torch.float32 and bool(torch.isfinite(f32.elbo).all())
    assert pg.fit_map is fit_map


def test_fit_map_is_the_optimum_of_the_pyro_log_joint(faithful):
    """The issue's check against the Pyro model with the prior as sample sites (ppl.bayes.log_joint,
    Z enumerated by TraceEnum_ELBO): at fit_map's point its value is .elbo[-1] and its gradient
    vanishes (μ, the entries of Λ, and α along the simplex)."""
    from ppl_gmm.ppl.bayes import log_joint

    x = torch.as_tensor(_standardise(faithful))[::2]
    prior = default_prior(x, 2)
    fit = pg.fit_map(x, 2, prior, seed=0, tol=0, max_iter=300)
    p = fit.params
    alpha = p.alpha.clone().requires_grad_(True)
    mu = p.mu.clone().requires_grad_(True)
    lam = torch.linalg.inv(p.cov)
    lam = (0.5 * (lam + lam.transpose(-1, -2))).requires_grad_(True)
    value = log_joint(x, 2, prior, alpha, mu, lam)
    assert float(value.detach()) == pytest.approx(float(fit.elbo[-1]), abs=1e-8)
    g_alpha, g_mu, g_lam = torch.autograd.grad(value, (alpha, mu, lam))
    assert float((g_alpha - g_alpha.mean()).abs().max()) < 1e-6  # tangent to the simplex
    assert float(g_mu.abs().max()) < 1e-6
    assert float((g_lam + g_lam.transpose(-1, -2)).abs().max()) < 1e-6  # symmetric directions
