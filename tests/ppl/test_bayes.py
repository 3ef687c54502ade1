"""The Bayesian Pyro model and guide against independent references: scipy's Dirichlet / Wishart /
multivariate normal densities (log joint), torch autograd (the Λ bijection's Jacobian), PRML's
closed-form bound (core.vb_posterior.lower_bound) for TraceEnum_ELBO's estimate, and fit_map's MAP-EM optimum
for L-BFGS on the Pyro log joint."""

import functools

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import TraceEnum_ELBO
from scipy import stats
from scipy.special import logsumexp

import ppl_gmm as pg
from ppl_gmm.core.priors import NormalWishartPrior, default_prior
from ppl_gmm.core.vb_posterior import lower_bound
from ppl_gmm.inference.svi_bayes import guide_posterior, set_guide_params
from ppl_gmm.inference.vb import fit_vb
from ppl_gmm.ppl import bayes as bm
from ppl_gmm.ppl.transforms import TrilVecToPD, Wishart, positive_definite

from oracles import map_estimate

# conftest: tiny tensors, one torch thread; Pyro's "Singular sample detected" (Wishart draws) silenced
pytestmark = pytest.mark.usefixtures("quiet_one_thread")


def _random_theta(k, d, seed):
    rng = np.random.default_rng(seed)
    alpha = torch.tensor(rng.dirichlet(np.ones(k)))
    mu = torch.tensor(rng.normal(scale=2.0, size=(k, d)))
    a = rng.normal(size=(k, d, d))
    lam = torch.tensor(a @ np.swapaxes(a, -1, -2) + 0.7 * np.eye(d))
    return alpha, mu, lam


def _scipy_log_joint(x, prior, alpha, mu, lam):
    """ln Dir(α) + Σ_k [ln W(Λ_k) + ln N(μ_k | m0, (beta0 Λ_k)⁻¹)] + Σ_i ln Σ_k α_k N(x_i | μ_k, Λ_k⁻¹)."""
    x = np.asarray(x).reshape(len(x), -1)
    k = len(alpha)
    cov = np.linalg.inv(lam.numpy())
    out = stats.dirichlet.logpdf(alpha.numpy(), np.full(k, prior.alpha0)) if k > 1 else 0.0
    comp = []
    for j in range(k):
        out += stats.wishart.logpdf(lam[j].numpy(), df=prior.nu0, scale=prior.W0.numpy())
        out += stats.multivariate_normal.logpdf(mu[j].numpy(), prior.m0.numpy(), cov[j] / prior.beta0)
        comp.append(np.log(alpha[j].item()) + stats.multivariate_normal.logpdf(x, mu[j].numpy(), cov[j]).reshape(-1))
    return out + logsumexp(np.stack(comp, 1), axis=1).sum()


@pytest.mark.parametrize("k,d", [(1, 1), (3, 1), (2, 2), (3, 3)])
def test_log_joint_equals_scipy(k, d):
    rng = np.random.default_rng(k + 10 * d)
    x = rng.normal(size=(25, d)) * 2.0
    prior = NormalWishartPrior(alpha0=0.7, m0=rng.normal(size=d), beta0=0.3, nu0=d + 1.5, W0=np.eye(d) * 0.4 + 0.05)
    alpha, mu, lam = _random_theta(k, d, seed=k * d)
    value = bm.log_joint(x, k, prior, alpha, mu, lam)
    np.testing.assert_allclose(float(value), _scipy_log_joint(x, prior, alpha, mu, lam), rtol=1e-11)


def test_model_trace_sites_and_shapes():
    x = torch.randn(7, 2, dtype=torch.float64)
    prior = default_prior(x, 3)
    tr = pyro.poutine.trace(bm.bayes_gmm_model).get_trace(x, 3, prior)
    assert tr.nodes["alpha"]["value"].shape == (3,)
    assert tr.nodes["Lambda"]["value"].shape == (3, 2, 2)
    assert tr.nodes["mu"]["value"].shape == (3, 2)
    assert tr.nodes["z"]["value"].shape == (7,)
    assert tr.nodes["x"]["is_observed"]
    cov = tr.nodes["cov"]["value"]
    torch.testing.assert_close(cov @ tr.nodes["Lambda"]["value"], torch.eye(2, dtype=torch.float64).expand(3, 2, 2))
    assert "alpha" not in pyro.poutine.trace(bm.bayes_gmm_model).get_trace(x, 1, default_prior(x, 1)).nodes
    # the public entry point delegates here
    tr2 = pyro.poutine.trace(pg.gmm_model).get_trace(x, 3, prior)
    assert {"alpha", "Lambda", "mu", "z", "x"} <= set(tr2.nodes)


@pytest.mark.parametrize("d", [1, 2, 4])
def test_pd_bijection_round_trip_and_jacobian(d):
    t = TrilVecToPD()
    u = torch.randn(3, d * (d + 1) // 2, dtype=torch.float64)
    y = t(u)
    assert y.shape == (3, d, d)
    assert bool(positive_definite.check(y).all())
    torch.testing.assert_close(t.inv(y), u, rtol=1e-10, atol=1e-10)
    rows, cols = torch.tril_indices(d, d)
    for b in range(3):  # |∂ vech(Λ) / ∂u| by autograd
        jac = torch.autograd.functional.jacobian(lambda v: t(v)[rows, cols], u[b])
        np.testing.assert_allclose(
            float(torch.linalg.slogdet(jac)[1]), float(t.log_abs_det_jacobian(u[b], y[b])), rtol=1e-10
        )
    assert t.forward_shape((5, d * (d + 1) // 2)) == (5, d, d)
    assert t.inverse_shape((5, d, d)) == (5, d * (d + 1) // 2)
    # registered for the package's Wishart only
    assert isinstance(torch.distributions.biject_to(Wishart(torch.tensor(d + 1.0), torch.eye(d)).support), TrilVecToPD)
    with pytest.raises(NotImplementedError, match="Cannot transform _PositiveDefinite constraints"):
        torch.distributions.biject_to(torch.distributions.constraints.positive_definite)


def _vb_guide_values(fit):
    p = fit.posterior
    return bm.guide_values(p.alpha, p.m, p.beta, p.nu, p.W, fit.gamma)


def _elbo_draws(x, k, prior, values, n, stl=False):
    with pyro.get_param_store().scope():
        pyro.set_rng_seed(0)
        set_guide_params(values)
        post, gamma = guide_posterior()
        elbo = TraceEnum_ELBO(max_plate_nesting=1)
        guide = lambda *a: bm.bayes_meanfield_guide(*a, stl=stl)
        draws = np.array([-elbo.loss(bm.bayes_gmm_model, guide, x, k, prior) for _ in range(n)])
    return draws, float(lower_bound(x, gamma, post, prior))


@pytest.mark.slow  # ~2-3.5 s: 200 Monte-Carlo ELBO estimates
def test_traceenum_estimate_is_unbiased_for_the_prml_bound(separated_2d):
    """At an arbitrary q in VB's family (VB's state after 1 iteration, with γ perturbed), the mean of
    TraceEnum_ELBO's estimates equals PRML's closed-form bound (10.70–10.77) within Monte-Carlo error."""
    x, _, _ = separated_2d
    x = x[:60]
    prior = default_prior(x, 3)
    fit = fit_vb(x, 3, prior, seed=0, max_iter=1)
    values = _vb_guide_values(fit)
    values["q_nu"] = values["q_nu"] * 0.7  # move off the optimum so the estimate has variance
    values["q_m"] = values["q_m"] + 0.3
    draws, exact = _elbo_draws(x, 3, prior, values, 200)
    se = draws.std(ddof=1) / np.sqrt(len(draws))
    assert se > 1e-3  # a genuinely random estimate
    assert abs(draws.mean() - exact) < 4 * se


def test_estimate_has_zero_variance_at_the_vb_optimum(separated_2d):
    """At VB's fixed point ln q*(θ) = E_q(Z)[ln p(X, Z, θ)] + const, so ln p − ln q is constant in θ:
    every single-draw estimate equals the closed-form bound."""
    x, _, _ = separated_2d
    prior = default_prior(x, 3)
    fit = fit_vb(x, 3, prior, seed=0, tol=0, max_iter=200)
    draws, exact = _elbo_draws(x, 3, prior, _vb_guide_values(fit), 20)
    np.testing.assert_allclose(draws, exact, rtol=1e-11)
    np.testing.assert_allclose(exact, float(fit.elbo[-1]), rtol=1e-9)
    stl_draws, _ = _elbo_draws(x, 3, prior, _vb_guide_values(fit), 5, stl=True)
    np.testing.assert_allclose(stl_draws, exact, rtol=1e-11)  # STL changes gradients, not values


@pytest.mark.slow  # ~4-5 s: 2 × 150 differentiable ELBO draws
def test_stl_gradient_is_zero_at_the_optimum_and_unbiased_elsewhere(separated_2d):
    x, _, _ = separated_2d
    x = x[:60]
    prior = default_prior(x, 3)
    fit = fit_vb(x, 3, prior, seed=0, tol=0, max_iter=200)

    def grads(values, stl, n):
        out = []
        with pyro.get_param_store().scope():
            pyro.set_rng_seed(1)
            set_guide_params(values)
            store = pyro.get_param_store()
            elbo = TraceEnum_ELBO(max_plate_nesting=1)
            for _ in range(n):
                loss = elbo.differentiable_loss(
                    bm.bayes_gmm_model, lambda *a: bm.bayes_meanfield_guide(*a, stl=stl), x, 3, prior
                )
                g = torch.autograd.grad(
                    loss, [store._params[name] for name in ("q_nu", "q_m", "q_alpha_sum", "q_Lambda_tril")]
                )
                out.append(torch.cat([t.reshape(-1) for t in g]))
        return torch.stack(out)

    at_opt = grads(_vb_guide_values(fit), True, 3)
    assert float(at_opt.abs().max()) < 1e-6  # sticking the landing: exactly 0 up to round-off
    assert float(grads(_vb_guide_values(fit), False, 3).abs().max()) > 1e-3  # the plain estimator is noisy there
    off = _vb_guide_values(fit)
    off["q_nu"] = off["q_nu"] * 0.8
    g_stl, g_plain = grads(off, True, 150), grads(off, False, 150)
    diff = g_stl.mean(0) - g_plain.mean(0)
    se = torch.sqrt(g_stl.var(0) / 150 + g_plain.var(0) / 150)
    assert float((diff.abs() / se.clamp_min(1e-12)).max()) < 4.5  # same expectation


def _subsampled_draws(x, k, prior, values, n, subsample_size, seed=0):
    """−loss of ``n`` TraceEnum_ELBO estimates with the "data" plate subsampled (fresh B each draw)."""
    model = functools.partial(bm.bayes_gmm_model, subsample_size=subsample_size)
    guide = functools.partial(bm.bayes_meanfield_guide, subsample_size=subsample_size)
    with pyro.get_param_store().scope():
        pyro.set_rng_seed(seed)
        set_guide_params(values)
        elbo = TraceEnum_ELBO(max_plate_nesting=1)
        return np.array([-elbo.loss(model, guide, x, k, prior) for _ in range(n)])


def test_subsample_of_every_row_is_the_full_plate_loss(sep1d):
    """|B| = N: the same global draws (sampled before the plate), the rows permuted, scale N/|B| = 1 —
    the full-plate estimate to round-off; and a proper subsample changes it (the plate really subsamples)."""
    x = torch.as_tensor(sep1d[:60])
    prior = default_prior(x, 2)
    values = _vb_guide_values(fit_vb(x, 2, prior, seed=0, max_iter=0))
    values["q_m"] = values["q_m"] + 0.3
    full, _ = _elbo_draws(x, 2, prior, values, 3)
    np.testing.assert_allclose(_subsampled_draws(x, 2, prior, values, 3, 60), full, rtol=1e-12)
    assert not np.allclose(_subsampled_draws(x, 2, prior, values, 3, 10), full, rtol=1e-6)
    with pytest.raises(ValueError, match="subsample_size must be <= N = 60"):
        bm.bayes_gmm_model(x, 2, prior, subsample_size=61)
    with pytest.raises(ValueError, match="subsample_size"):
        bm.bayes_meanfield_guide(x, 2, prior, subsample_size=0)


@pytest.mark.slow  # ~12 s on an idle core, 45 s on a busy one (Pyro's overhead, ~12 ms per estimate)
def test_subsampled_estimate_is_unbiased_for_the_full_data_bound(separated_2d):
    """Issue 10, item 4: at a fixed guide (fit_vb's optimum, where the full-plate estimate has no
    variance, so "the full-data loss" is one number, checked against PRML's closed form), the mean of
    1000 subsampled estimates (|B| = 15 of N = 60, scaled by N/|B| = 4) lies within 3 standard errors
    (measured: the estimates' sd ~13 nats, so SE ~0.4; seeds 1-3 with 1500 draws: within 1 SE)."""
    x = separated_2d[0][:60]
    prior = default_prior(x, 3)
    values = _vb_guide_values(fit_vb(x, 3, prior, seed=0, tol=0, max_iter=200))
    full, exact = _elbo_draws(x, 3, prior, values, 2)
    np.testing.assert_allclose(full, exact, rtol=1e-11)  # the full-plate loss: deterministic here
    draws = _subsampled_draws(x, 3, prior, values, 1000, 15)
    se = draws.std(ddof=1) / np.sqrt(len(draws))
    assert se > 0.1  # subsampling makes it genuinely random
    assert abs(draws.mean() - exact) < 3 * se
    assert abs(draws.mean() / 4 - exact) > 10 * se  # an unscaled minibatch sum would be far off


def test_map_by_lbfgs_on_pyro_log_joint_matches_fit_map(separated_2d):
    """Issue 4: fit_map's MAP-EM optimum = the maximum of the Pyro log joint (with the prior)."""
    x, _, _ = separated_2d
    x = x[:120]
    prior = default_prior(x, 3)
    fmap = pg.fit_map(x, 3, prior, seed=0, tol=1e-14, max_iter=2000)
    start = pg.fit_cavi(x, 3, seed=0).params  # a different starting point (the MLE)
    opt, value = map_estimate(x, 3, prior, start)
    perm = pg.align(fmap.params, opt)
    opt = opt.permute(perm)
    assert opt.allclose(fmap.params, rtol=1e-6, atol=1e-7)
    # the optimum's log joint equals fit_map's objective (eq. 26 + ln p(Θ), its final .elbo entry)
    np.testing.assert_allclose(float(value.detach()), float(fmap.elbo[-1]), rtol=1e-9)
    # and it is a maximum: moving a mean lowers it
    lam = torch.linalg.inv(fmap.params.cov)
    moved = bm.log_joint(x, 3, prior, fmap.params.alpha, fmap.params.mu + 0.01, lam)
    assert float(moved.detach()) < float(value.detach())


def test_guide_default_init_and_prior_checks():
    x = torch.randn(12, 2, dtype=torch.float64)
    prior = default_prior(x, 2)
    with pyro.get_param_store().scope():
        tr = pyro.poutine.trace(bm.bayes_meanfield_guide).get_trace(x, 2, prior)
        assert {"alpha", "Lambda", "mu", "z"} <= set(tr.nodes)
        for name in bm.GUIDE_PARAMS:
            assert name in pyro.get_param_store()
    with pytest.raises(TypeError, match="NormalWishartPrior"):
        bm.bayes_gmm_model(x, 2, {"alpha0": 1.0})
    with pytest.raises(ValueError, match="2 columns|D = 2"):
        bm.bayes_gmm_model(x, 2, default_prior(np.ones((5, 1)) * np.arange(5)[:, None], 2))
    with pytest.raises(ValueError, match="larger than the number of data points"):
        bm.bayes_gmm_model(x, 13, prior)
