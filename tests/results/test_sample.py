"""Sampling: ``GMMParams.sample`` / ``GMMFit.sample`` (eq. 15), ``VBFit.sample`` (the posterior
predictive, PRML 10.81) and ``arviz_io.posterior_predictive`` (replicates per posterior draw).

Oracles: the exact mixture moments (E[x] = Σ_k α_k μ_k, Cov[x] = Σ_k α_k (Σ_k + μ_k μ_kᵀ) − E[x]E[x]ᵀ)
checked within a few standard errors, Pyro's ``Predictive`` on ``gmm_model`` with the same Θ as
``pyro.param``s (two-sample KS per dimension and a χ² test of the labels, scipy), and for VB the
Student-t predictive of PRML 10.81–10.82 through ``scipy.stats.t`` (KS)."""

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive
from scipy import stats

import ppl_gmm as pg
from ppl_gmm.core.rng import preserved_global_rng, seed_global_rng
from ppl_gmm.core.vb_posterior import VBPosterior
from ppl_gmm.results import arviz_io
from ppl_gmm.results.vb_fit import VBFit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N = 20_000
Z_SE = 4.5  # |estimate − truth| within 4.5 standard errors (each check: p < 1e-5 of a false alarm)


def _theta(dtype=torch.float64):
    return pg.GMMParams(
        torch.tensor([0.2, 0.5, 0.3], dtype=dtype),
        torch.tensor([[-4.0, 1.0], [0.0, 3.0], [5.0, -2.0]], dtype=dtype),
        torch.tensor([[[1.0, 0.4], [0.4, 0.8]], [[0.5, -0.1], [-0.1, 2.0]], [[2.0, 0.0], [0.0, 0.3]]], dtype=dtype),
    )


def mixture_moments(alpha, mu, cov):
    """Exact mean and covariance of Σ_k α_k N(μ_k, C_k) (law of total covariance)."""
    alpha, mu, cov = (np.asarray(a, dtype=np.float64) for a in (alpha, mu, cov))
    mean = alpha @ mu
    second = np.einsum("k,kde->de", alpha, cov + np.einsum("kd,ke->kde", mu, mu))
    return mean, second - np.outer(mean, mean)


def _check_moments(x, z, alpha, mu, cov):
    """Frequencies, per-component means and the overall mean / covariance within Z_SE standard errors."""
    x, z = np.asarray(x, dtype=np.float64), np.asarray(z)
    n = len(x)
    freq = np.bincount(z, minlength=len(alpha)) / n
    assert np.all(np.abs(freq - alpha) <= Z_SE * np.sqrt(alpha * (1 - alpha) / n)), (freq, alpha)
    for k in range(len(alpha)):
        rows = x[z == k]
        se = np.sqrt(np.diag(cov[k]) / len(rows))
        assert np.all(np.abs(rows.mean(0) - mu[k]) <= Z_SE * se), k
    mean, covariance = mixture_moments(alpha, mu, cov)
    assert np.all(np.abs(x.mean(0) - mean) <= Z_SE * np.sqrt(np.diag(covariance) / n))
    # Var of the sample covariance entry (d, e) ≈ Var[(x_d − m_d)(x_e − m_e)] / n, estimated from the draws
    dev = x - mean
    prods = dev[:, :, None] * dev[:, None, :]
    se_cov = prods.std(0) / np.sqrt(n)
    assert np.all(np.abs(prods.mean(0) - covariance) <= Z_SE * se_cov)


# --- GMMParams.sample / GMMFit.sample ------------------------------------------------------------
def test_params_sample_has_the_mixture_moments():
    theta = _theta()
    x, z = theta.sample(N, seed=1)
    assert x.shape == (N, 2) and x.dtype == torch.float64 and z.shape == (N,) and z.dtype == torch.long
    _check_moments(x, z, theta.alpha.numpy(), theta.mu.numpy(), theta.cov.numpy())


def test_same_seed_same_bits_and_float32():
    theta = _theta()
    a, b, c = theta.sample(50, 7), theta.sample(50, 7), theta.sample(50, 8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    x32, z32 = _theta(torch.float32).sample(50, 7)
    assert x32.dtype == torch.float32 and torch.equal(z32, a[1])
    # make_mixture is this draw; GMMFit.sample delegates
    xm, zm = pg.datasets.make_mixture(50, theta, seed=7)
    assert torch.equal(xm, a[0]) and torch.equal(zm, a[1])
    fit = pg.fit_cavi(a[0], 3, seed=0, max_iter=0)
    xf, zf = fit.sample(40, seed=3)
    xp, zp = fit.params.sample(40, seed=3)
    assert torch.equal(xf, xp) and torch.equal(zf, zp)
    # seeds of any size (core.rng)
    big = theta.sample(5, 2**70)
    assert torch.equal(big[0], theta.sample(5, 2**70)[0])


def test_n_zero_gives_empty_draws():
    theta = _theta()
    for sampler in (theta.sample, pg.fit_cavi(theta.sample(30, 0)[0], 3, seed=0, max_iter=0).sample):
        x, z = sampler(0, seed=1)
        assert x.shape == (0, 2) and z.shape == (0,) and z.dtype == torch.long


@pytest.mark.parametrize(
    "n, error",
    [(-1, ValueError), (2.0, TypeError), (2.5, TypeError), (True, TypeError), ("3", TypeError), (None, TypeError)],
)
def test_bad_n_is_refused_naming_n(n, error):
    theta = _theta()
    vbfit = VBFit(posterior=_posterior(), gamma=torch.ones(1, 3) / 3, elbo=torch.zeros(1))
    rng = np.random.default_rng(0)
    idata = arviz_io.draws_to_inference_data(
        {
            "alpha": rng.dirichlet([1.0] * 3, (1, 2)),
            "mu": np.zeros((1, 2, 3, 2)),
            "cov": np.broadcast_to(np.eye(2), (1, 2, 3, 2, 2)),
        }
    )
    for sample in (theta.sample, vbfit.sample, lambda n, seed: arviz_io.posterior_predictive(idata, n, seed)):
        with pytest.raises(error, match=r"\bn\b"):
            sample(n, seed=0)
    with pytest.raises(ValueError, match="seed"):
        theta.sample(3, seed=-1)


def test_matches_pyros_predictive_on_gmm_model():
    """The same Θ as pyro.params of ``gmm_model``: Pyro's ``Predictive`` (observation released with
    ``poutine.uncondition``) and ``GMMParams.sample`` give the same distribution (fixed seeds)."""
    theta = _theta()
    n = 4000
    pyro.clear_param_store()
    pyro.param("alpha", theta.alpha.clone())
    pyro.param("mu", theta.mu.clone())
    pyro.param("scale_tril", theta.scale_tril.clone())
    with preserved_global_rng():
        seed_global_rng(0)
        predictive = Predictive(poutine.uncondition(pg.gmm_model), num_samples=1, return_sites=["x", "z"])
        out = predictive(torch.zeros(n, 2, dtype=torch.float64), 3)
    pyro.clear_param_store()
    x_pyro, z_pyro = out["x"].reshape(n, 2).numpy(), out["z"].reshape(n).numpy()
    x, z = theta.sample(n, seed=0)
    assert not np.allclose(x_pyro[:10], x.numpy()[:10])  # two independent samples, not one stream
    for dim in range(2):
        assert stats.ks_2samp(x.numpy()[:, dim], x_pyro[:, dim]).pvalue > 1e-3, dim
    table = np.stack([np.bincount(z.numpy(), minlength=3), np.bincount(z_pyro, minlength=3)])
    assert stats.chi2_contingency(table).pvalue > 1e-3
    for k in range(3):  # the component draws themselves
        assert stats.ks_2samp(x.numpy()[z.numpy() == k, 0], x_pyro[z_pyro == k, 0]).pvalue > 1e-3
    # the test can fail: a shifted Θ is told apart
    shifted = theta.shift([0.3, 0.0]).sample(n, seed=0)[0].numpy()
    assert stats.ks_2samp(shifted[:, 0], x_pyro[:, 0]).pvalue < 1e-3


# --- VBFit.sample: the posterior predictive ------------------------------------------------------
def _posterior():
    return VBPosterior(
        torch.tensor([30.0, 60.0, 10.0], dtype=torch.float64),
        torch.tensor([[-4.0, 1.0], [0.0, 3.0], [5.0, -2.0]], dtype=torch.float64),
        torch.tensor([20.0, 50.0, 8.0], dtype=torch.float64),
        torch.tensor([25.0, 55.0, 12.0], dtype=torch.float64),
        torch.stack([torch.tensor([[0.05, 0.01], [0.01, 0.04]]), torch.eye(2) * 0.02, torch.eye(2) * 0.08]).double(),
    )


def _predictive_t(post):
    """PRML 10.81–10.82: x | z = k ~ St(m_k, L_k, ν_k + 1 − D), L_k = (ν_k + 1 − D) β_k W_k / (1 + β_k);
    its covariance (ν_k + 1 − D) / (ν_k − 1 − D) L_k⁻¹; P(z = k) = E[π_k] = alpha_k / Σ alpha."""
    d = post.m.shape[1]
    dof = (post.nu + 1 - d).numpy()
    lam = (dof * post.beta.numpy() / (1 + post.beta.numpy()))[:, None, None] * post.W.numpy()
    cov = np.linalg.inv(lam) * (dof / (dof - 2))[:, None, None]
    return (post.alpha / post.alpha.sum()).numpy(), post.m.numpy(), cov, dof, np.linalg.inv(lam)


def test_vbfit_sample_is_the_student_t_predictive():
    post = _posterior()
    fit = VBFit(posterior=post, gamma=torch.ones(1, 3) / 3, elbo=torch.zeros(1))
    x, z = fit.sample(N, seed=2)
    assert x.shape == (N, 2) and x.dtype == torch.float64 and z.dtype == torch.long
    weights, m, cov, dof, scale2 = _predictive_t(post)
    _check_moments(x, z, weights, m, cov)
    for k in range(3):  # each coordinate of component k: a Student-t (B.68 marginal), KS against scipy
        for dim in range(2):
            t = stats.t(dof[k], loc=m[k, dim], scale=np.sqrt(scale2[k, dim, dim]))
            assert stats.kstest(x.numpy()[z.numpy() == k, dim], t.cdf).pvalue > 1e-3, (k, dim)
    # heavier tails than the plug-in Gaussian of E[Σ]: the t's kurtosis is seen (the test can fail)
    rows = x.numpy()[z.numpy() == 2, 0]
    assert stats.kurtosis(rows) > 0.3  # 6 / (dof − 4) = 0.86 for dof = 11
    again = fit.sample(N, seed=2)
    assert torch.equal(again[0], x) and torch.equal(again[1], z)
    assert fit.sample(0, seed=2)[0].shape == (0, 2)


# --- InferenceData: replicates per posterior draw ------------------------------------------------
def test_posterior_predictive_of_inference_data():
    rng = np.random.default_rng(0)
    c, s, k, d = 2, 3, 2, 2
    draws = {
        "alpha": rng.dirichlet([5.0, 5.0], (c, s)),
        "mu": rng.normal(scale=4.0, size=(c, s, k, d)),
        "cov": np.broadcast_to(np.diag([1.0, 0.5]), (c, s, k, d, d)).copy(),
    }
    idata = arviz_io.draws_to_inference_data(draws)
    n = 5000
    rep = arviz_io.posterior_predictive(idata, n, seed=4)
    assert rep.shape == (c, s, n, d) and rep.dtype == np.float64
    for ci in range(c):
        for si in range(s):
            alpha, mu, cov = draws["alpha"][ci, si], draws["mu"][ci, si], draws["cov"][ci, si]
            mean, covariance = mixture_moments(alpha, mu, cov)
            se = np.sqrt(np.diag(covariance) / n)
            assert np.all(np.abs(rep[ci, si].mean(0) - mean) <= Z_SE * se), (ci, si)
    np.testing.assert_array_equal(rep, arviz_io.posterior_predictive(idata, n, seed=4))
    assert not np.array_equal(rep, arviz_io.posterior_predictive(idata, n, seed=5))
    assert "posterior_predictive" not in idata.groups()
    small = arviz_io.posterior_predictive(idata, 7, seed=1, add_group=True)
    np.testing.assert_array_equal(idata.posterior_predictive["x"].values, small)
    assert idata.posterior_predictive["x"].dims == ("chain", "draw", "obs", "feature")
    arviz_io.posterior_predictive(idata, 3, seed=1, add_group=True)  # replaces the group
    assert idata.posterior_predictive["x"].shape == (c, s, 3, d)
    assert arviz_io.posterior_predictive(idata, 0, seed=1).shape == (c, s, 0, d)
