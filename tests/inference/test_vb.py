"""Closed-form variational Bayes against scikit-learn's BayesianGaussianMixture, the exact
Normal-Wishart evidence (K = 1), scipy's Student-t, Monte Carlo over q, and PRML fig. 10.6."""

import math

import numpy as np
import pytest
import torch
import torch.distributions as td
from scipy import stats
from scipy.special import gammaln, multigammaln

import ppl_gmm as pg
from ppl_gmm.core.errors import DegeneratePosteriorError
from ppl_gmm.core.init import initial_responsibilities
from ppl_gmm.core.priors import NormalWishartPrior, default_prior
from ppl_gmm.core.vb_posterior import VBPosterior, lower_bound, sample_posterior
from ppl_gmm.inference import _vb_kernel
from ppl_gmm.results.vb_fit import VBFit

from oracles import normal_wishart_evidence, sklearn_bgm

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: small problems, one torch thread


def _standardise(x):
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return (x - x.mean(0)) / x.std(0)


# --- scikit-learn as the oracle ---------------------------------------------------------------------
def _sklearn_constant(prior, n, k):
    """L − scikit-learn's lower_bound_ (it drops these; see core.vb_posterior.bound_after_m_step)."""
    d = prior.d
    log_b0 = (
        -0.5 * prior.nu0 * np.linalg.slogdet(prior.W0.numpy())[1]
        - 0.5 * prior.nu0 * d * math.log(2)
        - multigammaln(0.5 * prior.nu0, d)
    )  # ln B(W0, nu0), multigammaln holds the ln π term
    return (
        -0.5 * n * d * math.log(2 * math.pi)
        + gammaln(k * prior.alpha0)
        - k * gammaln(prior.alpha0)
        + 0.5 * k * d * math.log(prior.beta0)
        + k * log_b0
        + k * d * (d - 1) / 4 * math.log(math.pi)
    )


def _assert_posterior_equals_sklearn(post, bgm, rtol=1e-8):
    np.testing.assert_allclose(post.alpha.numpy(), bgm.weight_concentration_, rtol=rtol)
    np.testing.assert_allclose(post.beta.numpy(), bgm.mean_precision_, rtol=rtol)
    np.testing.assert_allclose(post.nu.numpy(), bgm.degrees_of_freedom_, rtol=rtol)
    scale = np.abs(bgm.means_).max()
    np.testing.assert_allclose(post.m.numpy(), bgm.means_, rtol=rtol, atol=rtol * scale)
    cov = (torch.linalg.inv(post.W) / post.nu[:, None, None]).numpy()
    np.testing.assert_allclose(cov, bgm.covariances_, rtol=rtol, atol=rtol * np.abs(bgm.covariances_).max())


@pytest.mark.parametrize("case", ["faithful", "d3", "far"])
def test_iteration_for_iteration_equal_to_sklearn(case, faithful):
    rng = np.random.default_rng(11)
    if case == "faithful":
        x, k = _standardise(faithful), 4
        prior = default_prior(x, k)
    elif case == "d3":
        x = np.concatenate([rng.normal(size=(60, 3)) + c for c in ([0, 0, 0], [4, 0, 1], [0, 5, -2])])
        k = 3
        prior = NormalWishartPrior(0.3, [0.5, 0.5, 0.0], 2.0, 4.5, np.diag([0.5, 1.0, 2.0]))
    else:  # components 1e5 apart: G ≫ 1e6, the exact (difference-first, two-pass) kernels run
        x = np.concatenate([rng.normal(size=(50, 2)) + c for c in ([-1e5, 0], [0, 0], [1e5, 3])])
        k = 3
        prior = default_prior(x, k)
    xt = torch.as_tensor(x)
    resp0 = initial_responsibilities(xt, k, "kmeans++", 0).numpy()
    bgm = sklearn_bgm(x, k, prior, resp0)
    fits = {t: pg.fit_vb(x, k, prior, seed=0, max_iter=t, tol=0) for t in (1, 3, 25)}
    const = _sklearn_constant(prior, len(x), k)
    for it in range(1, 26):
        log_prob_norm, log_resp = bgm._e_step(x)
        bgm._m_step(x, log_resp)
        if it in fits:
            _assert_posterior_equals_sklearn(fits[it].posterior, bgm)
            lb = bgm._compute_lower_bound(log_resp, log_prob_norm)
            assert float(fits[it].elbo[-2]) == pytest.approx(lb + const, rel=1e-10, abs=1e-8)
    _, log_resp = bgm._e_step(x)  # the closing E-step
    np.testing.assert_allclose(fits[25].gamma.numpy(), np.exp(log_resp), atol=1e-8)


# --- K = 1: the bound is the exact log evidence -------------------------------------------------------
def _log_evidence_murphy(x, prior):
    """ln p(X) of the Normal-Wishart model, Murphy (2007) eq. 266 (Λ0 = W0⁻¹ there)."""
    return normal_wishart_evidence(x, prior.m0.numpy(), prior.beta0, prior.nu0, prior.W0_inv.numpy())[1]


def _log_evidence_sequential(x, prior):
    """ln p(X) = Σ_n ln p(x_n | x_<n): each factor a multivariate Student-t (scipy), from the
    Normal-Wishart posterior of the points before it (Murphy 2007 eq. 258)."""
    n, d = x.shape
    m, beta, nu, s = prior.m0.numpy(), prior.beta0, prior.nu0, prior.W0_inv.numpy()
    total = 0.0
    for i in range(n):
        dof = nu - d + 1
        total += stats.multivariate_t(loc=m, shape=s * (beta + 1) / (beta * dof), df=dof).logpdf(x[i])
        m_new = (beta * m + x[i]) / (beta + 1)
        s = s + beta / (beta + 1) * np.outer(x[i] - m, x[i] - m)
        m, beta, nu = m_new, beta + 1, nu + 1
    return total


@pytest.mark.parametrize("data", ["faithful", "galaxies"])
def test_k1_bound_is_the_exact_log_evidence(data, faithful, galaxies):
    x = _standardise(faithful if data == "faithful" else galaxies)[:120]
    d = x.shape[1]
    prior = NormalWishartPrior(1.0, np.full(d, 0.2), 0.5, d + 1.5, np.eye(d) * 0.7)
    fit = pg.fit_vb(x, 1, prior, seed=0)
    exact = _log_evidence_murphy(x, prior)
    assert _log_evidence_sequential(x, prior) == pytest.approx(exact, abs=1e-9)
    assert float(fit.elbo[-1]) == pytest.approx(exact, abs=1e-9)
    assert fit.converged and float(fit.elbo[0]) == pytest.approx(exact, abs=1e-9)
    # K = 1 predictive (PRML 10.81) = ln p(X ∪ {x̂}) − ln p(X)
    x_new = np.full((1, d), 0.3)
    pred = float(fit.score_samples(x_new)[0])
    assert pred == pytest.approx(_log_evidence_murphy(np.vstack([x, x_new]), prior) - exact, abs=1e-9)


# --- the trace ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("k, init, seed", [(3, "kmeans++", 0), (5, "random", 1), (6, "random", 2)])
def test_bound_is_non_decreasing_and_consistent(k, init, seed, faithful):
    x = _standardise(faithful)
    prior = default_prior(x, k)
    fit = pg.fit_vb(x, k, prior, init=init, seed=seed, max_iter=40, tol=0)
    assert fit.n_iter == 40 and len(fit.elbo) == 41 and not fit.converged and fit.method == "vb"
    assert bool((torch.diff(fit.elbo) >= -1e-10 * fit.elbo.abs()[1:]).all())
    # the last entry is the general bound (10.70–10.77) at (gamma, posterior)
    assert float(lower_bound(x, fit.gamma, fit.posterior, prior)) == pytest.approx(float(fit.elbo[-1]), abs=1e-9)
    # entry t is the bound at (r_t, q_t): r_t is the closing E-step of the fit stopped one iteration earlier
    before = pg.fit_vb(x, k, prior, init=init, seed=seed, max_iter=39, tol=0)
    assert float(lower_bound(x, before.gamma, fit.posterior, prior)) == pytest.approx(float(fit.elbo[-2]), abs=1e-9)
    torch.testing.assert_close(fit.gamma.sum(1), torch.ones(len(x), dtype=torch.float64))
    torch.testing.assert_close(fit.predict_proba(x), fit.gamma, rtol=0, atol=1e-12)


def test_bound_equals_monte_carlo_over_q():
    """L(q) for a non-optimal q, estimated from draws of q with torch.distributions densities."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(size=(15, 2)) - 2, rng.normal(size=(15, 2)) + 2])
    k = 2
    prior = NormalWishartPrior(1.5, [0.0, 0.0], 0.5, 3.0, np.eye(2) * 0.5)
    early = pg.fit_vb(x, k, prior, seed=0, max_iter=2, tol=0)
    post = early.posterior
    gamma = 0.8 * early.gamma + 0.2 * torch.as_tensor(rng.dirichlet(np.ones(k), size=len(x)))  # a non-optimal q(Z)
    exact = float(lower_bound(x, gamma, post, prior))
    draws = sample_posterior(post, 20000, seed=5)
    alpha, mu, cov = (torch.as_tensor(draws[n]) for n in ("alpha", "mu", "cov"))
    lam = torch.linalg.inv(cov)
    lam = 0.5 * (lam + lam.transpose(-1, -2))
    xt = torch.as_tensor(x)
    comp = td.MultivariateNormal(mu[:, None], covariance_matrix=cov[:, None]).log_prob(xt[None, :, None, :])
    e_log_lik = (gamma * (torch.log(alpha)[:, None, :] + comp)).sum((1, 2))  # E_q(Z)[ln p(X, Z | θ)]
    log_p = (
        td.Dirichlet(torch.full((k,), prior.alpha0, dtype=torch.float64)).log_prob(alpha)
        + td.MultivariateNormal(prior.m0, precision_matrix=prior.beta0 * lam).log_prob(mu).sum(1)
        + td.Wishart(df=torch.tensor(prior.nu0, dtype=torch.float64), covariance_matrix=prior.W0).log_prob(lam).sum(1)
    )
    log_q = (
        td.Dirichlet(post.alpha).log_prob(alpha)
        + td.MultivariateNormal(post.m, precision_matrix=post.beta[:, None, None] * lam).log_prob(mu).sum(1)
        + td.Wishart(df=post.nu, covariance_matrix=post.W).log_prob(lam).sum(1)
    )
    values = e_log_lik + log_p - log_q - torch.special.xlogy(gamma, gamma).sum()
    se = float(values.std()) / math.sqrt(len(values))
    assert abs(float(values.mean()) - exact) < 4 * se
    assert se < 0.1  # power to see a wrong constant of ~0.4 nat


def test_fast_kernel_equals_exact_kernel_and_shift(faithful, monkeypatch):
    x = _standardise(faithful)
    prior = default_prior(x, 4)
    scans = []  # (exact kernel?, number of row blocks) of every pass, to see which path ran
    real_scan = _vb_kernel.scan

    def spy(*args, **kwargs):
        out = real_scan(*args, **kwargs)
        scans.append((kwargs.get("exact") is not None, len(out[0])))
        return out

    monkeypatch.setattr(_vb_kernel, "scan", spy)
    fast = pg.fit_vb(x, 4, prior, seed=3, max_iter=30, tol=0)
    assert scans and set(scans) == {(False, 1)}  # the feature expansion, one block
    scans.clear()
    monkeypatch.setattr(_vb_kernel, "G_EXPANSION_MAX", -1.0)  # every iteration through the exact kernels
    exact = pg.fit_vb(x, 4, prior, seed=3, max_iter=30, tol=0)
    assert scans and set(scans) == {(True, 1)}
    torch.testing.assert_close(fast.elbo, exact.elbo, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(fast.posterior.W, exact.posterior.W, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fast.gamma, exact.gamma, rtol=0, atol=1e-10)
    scans.clear()
    monkeypatch.setattr(_vb_kernel, "G_EXPANSION_MAX", 1e6)
    monkeypatch.setattr(_vb_kernel, "FEATURE_CACHE_MAX", 0)  # features built block by block
    monkeypatch.setattr(_vb_kernel, "SCAN_ROWS", 50)
    blocked = pg.fit_vb(x, 4, prior, seed=3, max_iter=30, tol=0)
    assert scans and set(scans) == {(False, 6)}  # 272 rows in blocks of 50
    torch.testing.assert_close(blocked.elbo, fast.elbo, rtol=1e-13, atol=1e-10)
    torch.testing.assert_close(blocked.gamma, fast.gamma, rtol=0, atol=1e-12)
    monkeypatch.undo()
    shifted = NormalWishartPrior(prior.alpha0, prior.m0 + 1e6, prior.beta0, prior.nu0, prior.W0)
    far = pg.fit_vb(x + 1e6, 4, shifted, seed=3, max_iter=30, tol=0)
    torch.testing.assert_close(far.posterior.m - 1e6, fast.posterior.m, rtol=0, atol=1e-6)
    torch.testing.assert_close(far.posterior.W, fast.posterior.W, rtol=1e-6, atol=0)
    torch.testing.assert_close(far.elbo, fast.elbo, rtol=1e-9, atol=1e-6)


# --- PRML fig. 10.6 ------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_old_faithful_surplus_components_switch_off(faithful, seed):
    """Standardised Old Faithful, K = 6, alpha0 = 1e-3 and scikit-learn's default hyperparameters
    (m0 = mean = 0, beta0 = 1, nu0 = D, W0⁻¹ = I): two components keep E[π_k] > 1e-2 (PRML fig. 10.6)."""
    x = _standardise(faithful)
    prior = NormalWishartPrior(1e-3, [0.0, 0.0], 1.0, 2.0, np.eye(2))
    fit = pg.fit_vb(x, 6, prior, seed=seed)
    assert fit.converged and fit.n_effective(1e-2) == 2
    weights = torch.sort(fit.weights, descending=True).values
    np.testing.assert_allclose(weights[:2].numpy(), [0.644, 0.356], atol=0.01)
    assert float(weights[2:].sum()) < 1e-3
    # the surplus components keep only their prior share, E[π_k] = alpha_k / Σ alpha ≈ alpha0 / (N + K alpha0)
    surplus = fit.posterior.alpha[fit.weights < 1e-2]
    torch.testing.assert_close(surplus, torch.full_like(surplus, 1e-3), rtol=0, atol=1e-6)
    # a large alpha0 (a prior that favours equal weights) keeps all six busy
    assert pg.fit_vb(x, 6, NormalWishartPrior(10.0, [0.0, 0.0], 1.0, 2.0, np.eye(2)), seed=seed).n_effective(1e-2) == 6


# --- the posterior: predictive density, draws, summaries ---------------------------------------------------
def test_predictive_density_is_the_student_t_mixture(faithful, galaxies):
    x = _standardise(faithful)
    fit = pg.fit_vb(x, 3, default_prior(x, 3), seed=0)
    p = fit.posterior
    grid = np.vstack([x[::40], [[4.0, -4.0]]])  # data points and one far point
    ref = np.zeros(len(grid))
    for j in range(3):
        dof = float(p.nu[j]) + 1 - 2
        shape = np.linalg.inv(p.W[j].numpy()) * (1 + float(p.beta[j])) / (dof * float(p.beta[j]))  # L_k⁻¹, 10.82
        ref += float(p.alpha[j] / p.alpha.sum()) * stats.multivariate_t(p.m[j].numpy(), shape, df=dof).pdf(grid)
    np.testing.assert_allclose(fit.score_samples(grid).numpy(), np.log(ref), rtol=1e-10)
    # Monte Carlo: the predictive is the average over q of the mixture density
    draws = fit.sample_posterior(3000, seed=1)
    comp = td.MultivariateNormal(
        torch.as_tensor(draws["mu"])[:, None], covariance_matrix=torch.as_tensor(draws["cov"])[:, None]
    )
    dens = torch.as_tensor(draws["alpha"])[:, None, :] * comp.log_prob(torch.as_tensor(grid)[None, :, None]).exp()
    mc = dens.sum(-1).mean(0).numpy()
    np.testing.assert_allclose(mc[:-1], ref[:-1], rtol=0.05)  # (the far point's Student-t tail needs more draws)
    # 1-D: integrates to one
    g = _standardise(galaxies)
    fit1 = pg.fit_vb(g, 4, default_prior(g, 4), seed=0)
    t = np.linspace(-30, 30, 60001)
    assert np.trapezoid(np.exp(fit1.score_samples(t).numpy()), t) == pytest.approx(1.0, abs=1e-4)


def test_sample_posterior_moments_and_reproducibility():
    post = VBPosterior(
        alpha=[3.0, 7.0],
        m=[[0.0, 1.0], [2.0, -1.0]],
        beta=[4.0, 9.0],
        nu=[6.0, 9.5],
        W=[[[0.5, 0.1], [0.1, 0.3]], [[1.0, -0.2], [-0.2, 0.4]]],
    )
    s = sample_posterior(post, 40000, seed=3)
    assert s["alpha"].shape == (40000, 2) and s["mu"].shape == (40000, 2, 2) and s["cov"].shape == (40000, 2, 2, 2)
    np.testing.assert_allclose(s["alpha"].mean(0), [0.3, 0.7], atol=0.005)
    np.testing.assert_allclose(s["mu"].mean(0), post.m.numpy(), atol=0.01)
    lam = np.linalg.inv(s["cov"])
    np.testing.assert_allclose(lam.mean(0), post.expected_precision().numpy(), rtol=0.02)
    np.testing.assert_allclose(s["cov"].mean(0), post.expected_cov().numpy(), rtol=0.03)
    np.testing.assert_allclose(np.linalg.slogdet(lam)[1].mean(0), post.expected_log_det_precision().numpy(), atol=0.01)
    # Cov[μ_k | Λ_k] = (β_k Λ_k)⁻¹: the whitened deviations have unit variance
    dev = s["mu"] - post.m.numpy()
    chol = np.linalg.cholesky(lam * post.beta.numpy()[None, :, None, None])
    z = np.einsum("skde,skd->ske", chol, dev)
    np.testing.assert_allclose(z.var(0), np.ones((2, 2)), atol=0.03)
    again = sample_posterior(post, 40000, seed=3)
    assert all(np.array_equal(s[n], again[n]) for n in s)


def test_posterior_summaries_and_construction_by_others(faithful):
    x = _standardise(faithful)
    fit = pg.fit_vb(x, 2, seed=0)
    p = fit.posterior
    mp = fit.mean_params()
    torch.testing.assert_close(mp.cov, torch.linalg.inv(p.expected_precision()))
    torch.testing.assert_close(fit.mean_params("expected").cov, torch.linalg.inv(p.W) / (p.nu - 3)[:, None, None])
    torch.testing.assert_close(mp.alpha, p.alpha / p.alpha.sum())
    perm = pg.align(mp, fit.mean_params().permute([1, 0]))
    assert perm.tolist() == [1, 0] and torch.equal(p.permute([1, 0]).m, p.m[[1, 0]])
    other = VBFit(posterior=p, gamma=fit.gamma, elbo=torch.tensor([-1.0, -0.5]), method="svi_bayes", n_iter=2)
    assert other.method == "svi_bayes" and other.n_effective() == 2 and "svi_bayes" in repr(other)
    torch.testing.assert_close(other.score_samples(x[:5]), fit.score_samples(x[:5]))
    torch.testing.assert_close(p.expected_log_weights(), torch.digamma(p.alpha) - torch.digamma(p.alpha.sum()))
    assert "VBPosterior(K=2" in repr(p) and fit.predict(x).shape == (len(x),)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": [1.0, -1.0]}, "alpha and beta must be > 0"),
        ({"nu": [0.5, 3.0]}, "nu must be > D − 1"),
        ({"W": np.stack([np.eye(2), -np.eye(2)])}, "positive definite"),
        ({"m": np.zeros((3, 2))}, "m must have shape"),
        ({"beta": [1.0, np.nan]}, "NaN"),
    ],
)
def test_posterior_validation(kwargs, match):
    base = {
        "alpha": [1.0, 2.0],
        "m": np.zeros((2, 2)),
        "beta": [1.0, 1.0],
        "nu": [3.0, 3.0],
        "W": np.stack([np.eye(2)] * 2),
    }
    with pytest.raises(ValueError, match=match):
        VBPosterior(**{**base, **kwargs})


def test_to_arviz_draws_from_q(faithful):
    fit = pg.fit_vb(_standardise(faithful), 2, seed=0, max_iter=20)
    idata = fit.to_arviz(num_samples=50, seed=0)
    post = idata.posterior
    assert post["mu"].shape[-3:] == (50, 2, 2) or post["mu"].shape[-2:] == (2, 2)
    assert "component" in post["alpha"].dims and "feature" in post["mu"].dims


# --- bad input, degenerate posteriors, reproducibility ---------------------------------------------------
@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((np.zeros((3, 2)) + np.arange(3)[:, None], 4), {}, ValueError, "larger than the number of data points"),
        ((np.ones((10, 2)), 2, NormalWishartPrior(1.0, [0.0], 1.0, 1.0, 1.0)), {}, ValueError, "1-dimensional"),
        ((np.ones((10, 2)), 2, "default"), {}, TypeError, "NormalWishartPrior"),
        ((np.ones((10, 2)), 2), {"init": "bogus"}, ValueError, "unknown init"),
        ((np.arange(20.0).reshape(10, 2) ** 1.5, 2), {"max_iter": -1}, ValueError, "max_iter"),
        ((np.arange(20.0).reshape(10, 2) ** 1.5, 2), {"tol": -1.0}, ValueError, "tol"),
        ((np.array([[np.nan, 1.0], [1.0, 2.0]]), 1), {}, ValueError, "NaN"),
    ],
)
def test_bad_input_is_refused_before_work(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        pg.fit_vb(*args, **kwargs)


def test_numerically_degenerate_posterior_is_named():
    rng = np.random.default_rng(0)
    t = rng.normal(size=40)
    x = np.c_[t, t]  # identical columns, and a prior whose W0⁻¹ is negligible
    prior = NormalWishartPrior(1.0, [0.0, 0.0], 1.0, 3.0, np.eye(2) * 1e40)
    with pytest.raises(DegeneratePosteriorError, match="component 0: the posterior scale matrix"):
        pg.fit_vb(x, 1, prior, seed=0)
    with pytest.raises(pg.DegenerateComponentError, match="numerically degenerate posterior"):
        pg.fit_vb(x, 1, prior, seed=0)  # the same error, under the package's family
    assert pg.DegeneratePosteriorError is DegeneratePosteriorError


def test_reproducible_float32_and_progress(faithful):
    a = pg.fit_vb(faithful, 3, seed=4, max_iter=30)
    b = pg.fit_vb(faithful, 3, seed=4, max_iter=30)
    assert torch.equal(a.elbo, b.elbo) and torch.equal(a.posterior.W, b.posterior.W) and a.seed == 4
    f32 = pg.fit_vb(faithful.astype(np.float32), 2, seed=0, max_iter=20, progress=True)
    assert f32.posterior.dtype == torch.float32 and f32.gamma.dtype == torch.float32
    assert bool(torch.isfinite(f32.elbo).all())
    warm = pg.fit_vb(faithful, 3, init=a.posterior, max_iter=5)
    assert float(warm.elbo[-1]) >= float(a.elbo[-1]) - 1e-8
    from ppl_gmm.inference.vb import fit_vb

    assert pg.fit_vb is fit_vb and pg.VBFit is VBFit


def test_predict_proba_1e7_from_every_component_is_on_the_simplex(faithful):
    x = _standardise(faithful)
    fit = pg.fit_vb(x, 3, seed=0, max_iter=50)
    far = torch.tensor([[1e7, -1e7], [-1e7, 1e7], [1e7, 1e7], [0.0, 1e7], [-1e7, 0.0]], dtype=torch.float64)
    proba = fit.predict_proba(far)
    assert proba.shape == (5, 3) and bool(torch.isfinite(proba).all()) and bool((proba >= 0).all())
    torch.testing.assert_close(proba.sum(1), torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-15)


def test_more_components_than_distinct_points():
    """k-means++ cannot seed more centres than distinct points (a clear error); from a random
    start the prior carries the surplus component: E[π] = alpha0 / (N + K alpha0) for it."""
    x = np.repeat(np.array([[0.0, 0.0], [1.0, 2.0], [3.0, 1.0]]), 5, axis=0)
    with pytest.raises(ValueError, match="larger than the number of distinct data points"):
        pg.fit_vb(x, 4, seed=0)
    fit = pg.fit_vb(x, 4, init="random", seed=0)
    assert bool(torch.isfinite(fit.elbo).all()) and bool((torch.diff(fit.elbo) >= -1e-10).all())
    assert sorted(np.round(fit.weights.numpy(), 4).tolist()) == [0.0526, 0.3158, 0.3158, 0.3158]
