"""ArviZ conversion and diagnostics: draws from q against VB's closed-form moments, the pointwise
log-likelihood against scipy, replicate data against the mixture's moments, summary/loo wrappers,
the netCDF round trip, and the rule that every ArviZ call lives in ppl_gmm/results/arviz_io.py."""

import pathlib
import re

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

import ppl_gmm as pg
from ppl_gmm.core.priors import default_prior
from ppl_gmm.inference.vb import fit_vb
from ppl_gmm.results import arviz_io


@pytest.fixture(scope="module")
def vbfit():
    params = pg.GMMParams(
        torch.tensor([0.3, 0.7], dtype=torch.float64),
        torch.tensor([[-3.0, 0.0], [2.0, 1.0]], dtype=torch.float64),
        torch.tensor([[[1.0, 0.4], [0.4, 0.8]], [[0.6, 0.0], [0.0, 1.5]]], dtype=torch.float64),
    )
    x = pg.datasets.make_mixture(80, params, seed=4)[0].numpy()
    return x, fit_vb(x, 2, default_prior(x, 2), seed=0)


def test_every_arviz_call_lives_in_arviz_io():
    root = pathlib.Path(pg.__file__).parent
    offenders = []
    home = root / "results" / "arviz_io.py"
    assert home.is_file() and re.search(r"^\s*import arviz", home.read_text(encoding="utf-8"), re.M)
    for path in root.rglob("*.py"):
        if path == home:
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"^\s*(import arviz|from arviz)", text, re.M) or re.search(r"\baz\.\w+\(", text):
            offenders.append(str(path.relative_to(root)))
    assert offenders == []


def test_vb_draws_match_closed_form_moments(vbfit):
    x, fit = vbfit
    idata = fit.to_arviz(num_samples=4000, seed=1)
    post = idata.posterior
    assert dict(post.sizes) == {"chain": 1, "draw": 4000, "component": 2, "feature": 2, "feature_": 2}
    q = fit.posterior
    refs = {"alpha": q.expected_weights().numpy(), "mu": q.m.numpy(), "cov": q.expected_cov().numpy()}
    for var, ref in refs.items():
        draws = arviz_io.posterior_arrays(idata, var)[0]
        se = draws.std(0, ddof=1) / np.sqrt(draws.shape[0])
        assert np.all(np.abs(draws.mean(0) - ref) < 4.5 * se + 1e-12), var
    again = arviz_io.vb_to_inference_data(fit, 4000, seed=1)
    np.testing.assert_array_equal(again.posterior["mu"].values, post["mu"].values)
    assert idata.attrs["method"] == "vb" and idata.attrs["seed"] == 1


def test_vb_with_data_has_log_likelihood_and_predictive(vbfit):
    x, fit = vbfit
    idata = arviz_io.vb_to_inference_data(fit, 2000, seed=2, x=x)
    assert {"posterior", "log_likelihood", "posterior_predictive", "observed_data"} <= set(idata.groups())
    assert idata.log_likelihood["x"].shape == (1, 2000, 80)
    res = arviz_io.loo(idata)
    assert np.isfinite(res.elpd_loo) and res.elpd_loo < 0 and res.se > 0
    # the mean pointwise predictive density is close to VB's Student-t mixture (PRML 10.81)
    ll = idata.log_likelihood["x"].values[0]
    lppd = logsumexp(ll, axis=0) - np.log(ll.shape[0])
    np.testing.assert_allclose(lppd, fit.predictive_log_density(x).numpy(), atol=0.05)


def test_pointwise_log_likelihood_equals_scipy():
    rng = np.random.default_rng(3)
    m, k, d, n = 5, 3, 2, 20
    x = rng.normal(size=(n, d))
    alpha = rng.dirichlet(np.ones(k), size=m)
    mu = rng.normal(size=(m, k, d))
    a = rng.normal(size=(m, k, d, d))
    cov = a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(d)
    got = arviz_io.pointwise_log_likelihood(x, alpha, mu, cov)
    for s in range(m):
        ref = logsumexp(
            np.stack(
                [np.log(alpha[s, j]) + stats.multivariate_normal.logpdf(x, mu[s, j], cov[s, j]) for j in range(k)], 1
            ),
            axis=1,
        )
        np.testing.assert_allclose(got[s], ref, rtol=1e-11)


def test_posterior_predictive_draws_have_the_mixture_moments():
    alpha = np.array([[0.25, 0.75]])
    mu = np.array([[[-2.0, 1.0], [3.0, 0.0]]])
    cov = np.array([[[[1.0, 0.5], [0.5, 2.0]], [[0.5, 0.0], [0.0, 0.3]]]])
    rep = arviz_io.posterior_predictive_draws(alpha, mu, cov, 40000, seed=0)[0]
    mean = (alpha[0, :, None] * mu[0]).sum(0)
    second = sum(alpha[0, j] * (cov[0, j] + np.outer(mu[0, j], mu[0, j])) for j in range(2))
    np.testing.assert_allclose(rep.mean(0), mean, atol=0.04)
    np.testing.assert_allclose(np.cov(rep.T), second - np.outer(mean, mean), atol=0.08)
    np.testing.assert_array_equal(rep, arviz_io.posterior_predictive_draws(alpha, mu, cov, 40000, seed=0)[0])


def test_summary_diagnostics_and_arrays():
    rng = np.random.default_rng(0)
    c, s, k, d = 3, 200, 2, 1
    post = {
        "alpha": rng.dirichlet([20, 30], size=(c, s)),
        "mu": rng.normal(size=(c, s, k, d)),
        "cov": np.exp(rng.normal(size=(c, s, k, d, d)) * 0.1),
    }
    idata = arviz_io.draws_to_inference_data(post)
    summ = arviz_io.summary(idata)
    assert {"mean", "sd", "ess_bulk", "ess_tail", "r_hat", "mcse_mean"} <= set(summ.columns)
    assert len(summ) == k + k * d + k * d * d
    diag = arviz_io.diagnostics(idata)
    np.testing.assert_allclose(
        diag["ess_bulk_min"], summ.loc[[i for i in summ.index if not i.startswith("cov")], "ess_bulk"].min(), atol=1.0
    )
    assert diag["r_hat_max"] < 1.05  # independent draws
    np.testing.assert_array_equal(arviz_io.posterior_arrays(idata, "mu"), post["mu"])
    params = arviz_io.posterior_mean_params(idata)
    np.testing.assert_allclose(params.alpha.numpy(), post["alpha"].mean((0, 1)))
    np.testing.assert_allclose(params.mu.numpy(), post["mu"].mean((0, 1)), rtol=1e-12)
    np.testing.assert_allclose(params.cov.numpy(), post["cov"].mean((0, 1)), rtol=1e-12)
    # a chain stuck away from the others is flagged by R-hat
    stuck = {**post, "mu": post["mu"].copy()}
    stuck["mu"][0] += 3.0
    assert arviz_io.diagnostics(arviz_io.draws_to_inference_data(stuck))["r_hat_max"] > 1.5


def test_fit_to_inference_data_and_netcdf_round_trip(tmp_path, vbfit):
    x, fit = vbfit
    cavi = pg.fit_cavi(x, 2, seed=0)
    one = cavi.to_arviz()
    assert one.posterior["mu"].shape == (1, 1, 2, 2) and one.attrs["method"] == "cavi"
    for var in ("alpha", "mu", "cov"):  # the one draw is the point estimate, bit for bit
        np.testing.assert_array_equal(one.posterior[var].values[0, 0], getattr(cavi.params, var).numpy())
    assert one.attrs["elbo"] == float(cavi.elbo[-1])
    idata = arviz_io.vb_to_inference_data(fit, 50, seed=3, x=x)
    path = tmp_path / "vb.nc"
    arviz_io.save_inference_data(idata, path)
    back = arviz_io.load_inference_data(path)
    for group in ("posterior", "log_likelihood", "posterior_predictive", "observed_data"):
        for var in getattr(idata, group).data_vars:
            np.testing.assert_array_equal(getattr(back, group)[var].values, getattr(idata, group)[var].values)
    assert back.attrs["method"] == "vb" and int(back.attrs["seed"]) == 3


def test_a_seed_past_int64_survives_netcdf(tmp_path, vbfit):
    """Any non-negative seed is valid; netCDF holds at most int64, so a bigger seed is stored as its
    decimal string (before, to_netcdf failed after the whole fit: 'no native HDF5 equivalent')."""
    x, fit = vbfit
    seed = 2**70 + 1
    idata = arviz_io.vb_to_inference_data(fit, 20, seed=seed, x=x)
    path = tmp_path / "vb.nc"
    arviz_io.save_inference_data(idata, path)
    assert int(arviz_io.load_inference_data(path).attrs["seed"]) == seed
