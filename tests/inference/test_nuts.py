"""NUTS (Z enumerated out) against closed-form VB and Bayesian SVI on well-separated data, scipy for
the pointwise log-likelihood, brute force over permutations for the relabelling rule, and numpy
importance-sampling LOO for ArviZ's PSIS-LOO.

Agreement tolerance (posterior means): |E_NUTS − E_VB| ≤ 4·MCSE + 0.1·sd, per scalar, where MCSE is
ArviZ's Monte-Carlo standard error of the NUTS mean (sd / √ESS) and sd the NUTS posterior sd.  The
4·MCSE term is the sampler's error; the 0.1·sd term allows for the mean-field approximation, which is
nearly exact here (q(Z) is practically deterministic, and given Z the exact posterior factorises as
q(α) Π_k q(μ_k, Λ_k) does).
"""

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

import ppl_gmm as pg
from ppl_gmm.core.errors import DegenerateComponentError, DegeneratePosteriorError
from ppl_gmm.core.priors import NormalWishartPrior, default_prior
from ppl_gmm.core.threads import limited_threads
from ppl_gmm.inference import nuts
from ppl_gmm.results import arviz_io
from ppl_gmm.results.matching import relabel

pytestmark = pytest.mark.usefixtures("quiet_one_thread")  # conftest: one thread, no "Singular sample" warnings


@pytest.fixture(scope="module")
def sep2d():
    params = pg.GMMParams(
        torch.tensor([0.4, 0.6], dtype=torch.float64),
        torch.tensor([[-4.0, 0.0], [3.0, 2.0]], dtype=torch.float64),
        torch.tensor([[[1.0, 0.3], [0.3, 0.8]], [[0.7, -0.2], [-0.2, 1.2]]], dtype=torch.float64),
    )
    return pg.datasets.make_mixture(100, params, seed=2)[0].numpy()


@pytest.fixture(scope="module")
def idata1d(sep1d):
    with limited_threads():
        return pg.fit_nuts(sep1d, 2, default_prior(sep1d, 2), num_samples=150, warmup_steps=100, num_chains=2, seed=5)


@pytest.fixture(scope="module")
def idata2d(sep2d):
    with limited_threads():
        return pg.fit_nuts(sep2d, 2, default_prior(sep2d, 2), num_samples=120, warmup_steps=80, num_chains=1, seed=6)


def _vb_means(post, d):
    """E[α_k], E[μ_k] = m_k, E[Σ_k] = W_k⁻¹ / (nu_k − D − 1) under q."""
    return {"alpha": post.expected_weights().numpy(), "mu": post.m.numpy(), "cov": post.expected_cov().numpy()}


def _assert_agree(idata, means, label):
    summ = arviz_io.summary(idata, var_names=["alpha", "mu", "cov"])
    for var, ref in means.items():
        for idx in np.ndindex(ref.shape):
            row = summ.loc[f"{var}[{', '.join(str(i) for i in idx)}]"]
            tol = 4 * row["mcse_mean"] + 0.1 * row["sd"]
            assert abs(row["mean"] - ref[idx]) <= tol, (label, var, idx, row["mean"], ref[idx], tol)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["1d", "2d"])
def test_posterior_means_agree_with_vb_and_svi(case, sep1d, sep2d, idata1d, idata2d):
    x, idata = (sep1d, idata1d) if case == "1d" else (sep2d, idata2d)
    prior = default_prior(x, 2)
    vb = pg.fit_vb(x, 2, prior, seed=0)
    svi = pg.fit_svi_bayes(x, 2, prior, num_steps=150, lr=0.05, seed=0)
    ref = arviz_io.posterior_mean_params(idata)  # NUTS component order (the label rule)
    for label, fit in (("vb", vb), ("svi_bayes", svi)):
        post = fit.posterior.permute(pg.align(ref, fit))
        _assert_agree(idata, _vb_means(post, x.ndim), label)
    assert idata.attrs["num_divergences"] == 0
    assert idata.attrs["ess_bulk_min"] > 50


@pytest.mark.slow
def test_k1_matches_the_exact_conjugate_posterior():
    """K = 1: the posterior is exactly Normal-Wishart (conjugate update written out here in numpy):
    E[μ] = m_N, E[σ²] = W_N⁻¹/(ν_N − 2), Var[μ] = W_N⁻¹/(β_N (ν_N − 2)) (Student-t marginal), D = 1."""
    rng = np.random.default_rng(7)
    x = rng.normal(2.0, 1.5, size=40)
    prior = default_prior(x, 1)
    idata = pg.fit_nuts(x, 1, prior, num_samples=200, warmup_steps=100, seed=2)
    n, xbar = len(x), x.mean()
    b0, m0, nu0, w0 = prior.beta0, float(prior.m0[0]), prior.nu0, float(prior.W0[0, 0])
    beta_n, nu_n = b0 + n, nu0 + n
    m_n = (b0 * m0 + n * xbar) / beta_n
    w_n_inv = 1 / w0 + ((x - xbar) ** 2).sum() + b0 * n / beta_n * (xbar - m0) ** 2
    summ = arviz_io.summary(idata, var_names=["mu", "cov"])
    for name, exact in (("mu[0, 0]", m_n), ("cov[0, 0, 0]", w_n_inv / (nu_n - 2))):
        row = summ.loc[name]
        assert abs(row["mean"] - exact) < 4.5 * row["mcse_mean"], (name, row["mean"], exact)
    sd_mu = idata.posterior["mu"].values.std()
    np.testing.assert_allclose(sd_mu, np.sqrt(w_n_inv / (beta_n * (nu_n - 2))), rtol=0.25)
    np.testing.assert_array_equal(idata.posterior["alpha"].values, 1.0)


@pytest.mark.slow
def test_inference_data_layout(sep1d, idata1d):
    post = idata1d.posterior
    assert dict(post.sizes) == {"chain": 2, "draw": 150, "component": 2, "feature": 1, "feature_": 1}
    assert post["alpha"].dims == ("chain", "draw", "component")
    assert post["cov"].dims == ("chain", "draw", "component", "feature", "feature_")
    np.testing.assert_allclose(post["alpha"].values.sum(-1), 1.0, rtol=1e-12)
    assert bool((post["cov"].values > 0).all())
    assert idata1d.log_likelihood["x"].dims == ("chain", "draw", "obs")
    assert idata1d.posterior_predictive["x"].shape == (2, 150, 150, 1)
    np.testing.assert_array_equal(idata1d.observed_data["x"].values[:, 0], sep1d)
    stats_ = idata1d.sample_stats
    for name in nuts.sample_stat_names:
        assert stats_[name].shape == (2, 150), name
    assert stats_["diverging"].dtype == bool
    assert bool((stats_["n_steps"] >= 1).all()) and bool((stats_["tree_depth"] >= 1).all())
    assert bool((stats_["n_steps"] <= 2 ** stats_["tree_depth"] - 1 + 1e-9).all())  # a depth-j tree has ≤ 2^j − 1 steps
    assert bool(((stats_["acceptance_rate"] >= 0) & (stats_["acceptance_rate"] <= 1)).all())
    assert bool(np.isfinite(stats_["energy"]).all()) and bool(np.isfinite(stats_["lp"]).all())
    attrs = idata1d.attrs
    assert attrs["method"] == "nuts" and attrs["seed"] == 5 and len(attrs["chain_seeds"]) == 2
    assert "Hungarian" in attrs["label_rule"] and attrs["label_rule"] == nuts.LABEL_RULE
    assert attrs["num_divergences"] == int(stats_["diverging"].values.sum())
    assert np.isfinite(attrs["r_hat_max"]) and attrs["r_hat_max"] < 1.1
    # every chain relabelled to one common reference, the label-switch fraction reported per chain
    assert len(attrs["label_switch_fraction_per_chain"]) == 2 and len(attrs["label_switch_within_chain"]) == 2
    assert stats_["label_switch"].shape == (2, 150)
    # the relabelled components are ordered by the first coordinate of μ
    assert post["mu"].values[..., 0, 0].mean() < post["mu"].values[..., 1, 0].mean()


@pytest.mark.slow
def test_log_likelihood_equals_scipy(sep1d, idata1d):
    post = idata1d.posterior
    for chain, draw in [(0, 0), (1, 77), (0, 149)]:
        a = post["alpha"].values[chain, draw]
        m = post["mu"].values[chain, draw, :, 0]
        s = np.sqrt(post["cov"].values[chain, draw, :, 0, 0])
        ref = logsumexp(np.log(a) + stats.norm.logpdf(sep1d[:, None], m, s), axis=1)
        np.testing.assert_allclose(idata1d.log_likelihood["x"].values[chain, draw], ref, rtol=1e-10)


@pytest.mark.slow
def test_loo_against_numpy_importance_sampling(sep1d, idata1d):
    res = arviz_io.loo(idata1d)
    elpd, se = res  # unpacks as (elpd_loo, se)
    ll = idata1d.log_likelihood["x"].values.reshape(-1, len(sep1d))
    is_loo = -(logsumexp(-ll, axis=0) - np.log(ll.shape[0]))  # plain importance-sampling LOO per point
    lppd = logsumexp(ll, axis=0) - np.log(ll.shape[0])
    assert abs(elpd - is_loo.sum()) < 1.0  # PSIS smooths only the tail weights
    assert elpd < lppd.sum() and 0 < res.p_loo < 15  # ~ 5 parameters
    np.testing.assert_allclose(se, np.sqrt(len(sep1d) * np.var(is_loo)), rtol=0.1)
    assert res.pareto_k.shape == (150,) and res.n_high_k <= 3


def test_relabel_recovers_scrambled_labels():
    rng = np.random.default_rng(0)
    k, d, m = 4, 2, 300
    mu0 = np.array([[0.0, 0.0], [5.0, 1.0], [-5.0, 2.0], [1.0, 6.0]])
    cov0 = np.broadcast_to(np.eye(d), (k, d, d)).copy()
    alpha = rng.dirichlet(np.ones(k) * 50, size=m)
    mu = mu0[None] + 0.3 * rng.normal(size=(m, k, d))
    cov = np.broadcast_to(cov0, (m, k, d, d)).copy() * rng.uniform(0.5, 2, size=(m, k, 1, 1))
    scramble = np.stack([rng.permutation(k) for _ in range(m)])
    rows = np.arange(m)[:, None]
    a2, m2, c2, perms = relabel(alpha[rows, scramble], mu[rows, scramble], cov[rows, scramble], mu0[scramble[0]], cov0)
    order = np.argsort(mu0[:, 0])  # the rule orders components by the first coordinate of μ
    np.testing.assert_array_equal(m2, mu[:, order])
    np.testing.assert_array_equal(a2, alpha[:, order])
    np.testing.assert_array_equal(c2, cov[:, order])
    # brute force: the chosen permutation minimises the Mahalanobis cost over all K! permutations
    import itertools

    ref = m2.mean(0)
    for i in range(0, m, 37):
        costs = {
            p: sum(((mu[rows[i, 0], scramble[i]][list(p)][j] - ref[j]) ** 2).sum() for j in range(k))
            for p in itertools.permutations(range(k))
        }
        assert costs[tuple(perms[i])] == pytest.approx(min(costs.values()))


@pytest.mark.slow
def test_reproducible_and_chains_independent_of_their_number(sep1d):
    x = sep1d[::5]  # 30 points
    prior = default_prior(x, 2)
    kw = {"num_samples": 12, "warmup_steps": 12, "jit": False}
    one = pg.fit_nuts(x, 2, prior, num_chains=1, seed=11, **kw)
    two = pg.fit_nuts(x, 2, prior, num_chains=2, seed=11, **kw)
    again = pg.fit_nuts(x, 2, prior, num_chains=1, seed=11, **kw)
    for var in ("alpha", "mu", "cov"):
        np.testing.assert_array_equal(one.posterior[var].values, again.posterior[var].values)
        np.testing.assert_array_equal(one.posterior[var].values[0], two.posterior[var].values[0])
    np.testing.assert_array_equal(one.posterior_predictive["x"].values, again.posterior_predictive["x"].values)
    assert not np.array_equal(two.posterior["mu"].values[0], two.posterior["mu"].values[1])
    # loo_elpd: the (x, k, prior, seed, ...) call of inference.model_selection, a tuple (elpd_loo, se)
    res = nuts.loo_elpd(x, 2, prior, 11, num_samples=12, warmup_steps=12, jit=False)
    assert len(res) == 2 and np.isfinite(res.elpd_loo) and res.se > 0 and np.isfinite(res.p_loo)


def test_divergences_are_reported_not_hidden(sep1d):
    x = sep1d[::5]
    with pytest.warns(RuntimeWarning, match="diverged"):
        idata = pg.fit_nuts(
            x,
            2,
            default_prior(x, 2),
            num_samples=20,
            warmup_steps=10,
            seed=3,
            target_accept_prob=0.01,
            max_tree_depth=3,
            jit=False,
        )
    n = idata.attrs["num_divergences"]
    assert n > 0 and n == int(idata.sample_stats["diverging"].values.sum())


def test_bad_input_fails_before_work(sep1d):
    prior = default_prior(sep1d, 2)
    with pytest.raises(TypeError, match="NormalWishartPrior"):
        pg.fit_nuts(sep1d, 2, "default")
    with pytest.raises(ValueError, match="larger than the number of data points"):
        pg.fit_nuts(sep1d[:3], 5, default_prior(sep1d[:3], 3))
    with pytest.raises(ValueError, match="num_samples"):
        pg.fit_nuts(sep1d, 2, prior, num_samples=0)
    with pytest.raises(ValueError, match="num_chains"):
        pg.fit_nuts(sep1d, 2, prior, num_chains=0)
    with pytest.raises(ValueError, match="target_accept_prob"):
        pg.fit_nuts(sep1d, 2, prior, target_accept_prob=1.5)
    with pytest.raises(ValueError, match="nu0 > D"):
        pg.fit_nuts(sep1d, 2, NormalWishartPrior(1.0, [0.0], 0.01, 0.5, [[1.0]]))
    with pytest.raises(ValueError, match="D = 2|dimensional"):
        pg.fit_nuts(np.c_[sep1d, sep1d], 2, prior)
    with pytest.raises(ValueError, match="seed"):
        pg.fit_nuts(sep1d, 2, prior, seed=-1)


def test_degenerate_draws_give_a_clear_error():
    lam = np.broadcast_to(np.eye(2), (1, 3, 2, 2, 2)).copy()
    lam[0, 1, 1] = [[1.0, 2.0], [2.0, 1.0]]  # not positive definite
    with pytest.raises(
        DegeneratePosteriorError, match="component 1's precision matrix .* numerically degenerate"
    ) as info:
        nuts._covariances(lam)
    assert info.value.component == 1 and isinstance(info.value, DegenerateComponentError)  # the package's family
