"""The Pyro model and guides compute the notes' objectives exactly (eq. 15, 18, 19, 26).

Independent references: scipy's multivariate normal log density, brute-force enumeration of all
K^N assignments, torch autograd through a Cholesky factorisation, and the closed-form engine.
"""

import itertools

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from scipy.special import logsumexp
from torch.distributions import constraints

import ppl_gmm as pg
from ppl_gmm.ppl import model as model_module
from ppl_gmm.ppl.model import marginal_guide, marginal_model, param_values

from oracles import random_gamma, random_params, scipy_log_weights


@pytest.fixture(autouse=True)
def _fresh_store():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: thread start-up dominates on 2 shared cores
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()
    torch.set_num_threads(threads)


def _data(n, d, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=3.0, size=(n, d))
    return torch.tensor(x[:, 0] if d == 1 else x, dtype=torch.float64)


def _set_store(params, gamma=None):
    pyro.param("alpha", params.alpha.clone(), constraint=constraints.simplex)
    pyro.param("mu", params.mu.clone())
    pyro.param("scale_tril", params.scale_tril, constraint=constraints.lower_cholesky)
    if gamma is not None:
        pyro.param("gamma", gamma.clone(), constraint=constraints.simplex)


def _loss(model, guide, x, k, **kwargs):
    return TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, x, k, **kwargs)


@pytest.mark.parametrize("d", [1, 3])
def test_meanfield_loss_is_eq18_at_random_points(d):
    """−TraceEnum_ELBO loss = eq. 18 (pg.elbo and scipy) for random, non-optimal Θ and γ."""
    for seed in range(3):
        x, params, gamma = _data(60, d, seed), random_params(3, d, seed), random_gamma(60, 3, seed + 10)
        pyro.clear_param_store()
        _set_store(params, gamma)
        value = -_loss(pg.gmm_model, pg.meanfield_guide, x, 3)
        reference = float(pg.elbo(x, gamma, params))
        g = gamma.numpy()
        by_scipy = float((g * scipy_log_weights(x, params)).sum() - (g * np.log(g)).sum())  # eq. 18
        assert value == pytest.approx(reference, rel=1e-10)
        assert value == pytest.approx(by_scipy, rel=1e-10)


def test_meanfield_loss_equals_brute_force_over_all_assignments():
    """E_q[log p(X, Z) − log q(Z)] summed over all K^N joint assignments (N = 5, K = 3)."""
    n, k = 5, 3
    x, params, gamma = _data(n, 2, 7), random_params(k, 2, 7), random_gamma(n, k, 8)
    _set_store(params, gamma)
    log_joint = scipy_log_weights(x, params)
    g = gamma.numpy()
    total = 0.0
    for z in itertools.product(range(k), repeat=n):
        rows = np.arange(n)
        q = float(np.prod(g[rows, z]))
        total += q * (log_joint[rows, z].sum() - np.log(g[rows, z]).sum())
    assert -_loss(pg.gmm_model, pg.meanfield_guide, x, k) == pytest.approx(total, rel=1e-10)


@pytest.mark.parametrize("d", [1, 2])
def test_marginal_loss_is_eq26(d):
    x, params = _data(80, d, 3), random_params(4, d, 3)
    _set_store(params)
    value = -_loss(marginal_model, marginal_guide, x, 4)
    by_scipy = float(logsumexp(scipy_log_weights(x, params), axis=1).sum())  # eq. 26
    assert value == pytest.approx(float(pg.log_likelihood(x, params)), rel=1e-10)
    assert value == pytest.approx(by_scipy, rel=1e-10)


def test_elbo_is_loglik_minus_kl():
    """Second note: ELBO = log p(X) − KL(q ‖ p(Z | X)); at γ = e_step both guides agree."""
    x, params, gamma = _data(70, 2, 4), random_params(3, 2, 4), random_gamma(70, 3, 5)
    _set_store(params, gamma)
    meanfield = -_loss(pg.gmm_model, pg.meanfield_guide, x, 3)
    marginal = -_loss(marginal_model, marginal_guide, x, 3)
    log_joint = scipy_log_weights(x, params)
    log_post = log_joint - logsumexp(log_joint, axis=1, keepdims=True)  # eq. 27 by scipy
    g = gamma.numpy()
    kl = float((g * (np.log(g) - log_post)).sum())
    assert kl > 1.0
    assert meanfield == pytest.approx(marginal - kl, rel=1e-10)
    pyro.get_param_store()["gamma"] = pg.e_step(x, params)  # the E-step closes the gap
    assert -_loss(pg.gmm_model, pg.meanfield_guide, x, 3) == pytest.approx(marginal, rel=1e-10)


@pytest.mark.parametrize("d", [1, 2])
def test_gradients_are_eq19(d):
    """∂(−loss)/∂(α, μ, Σ, γ) by autograd through Pyro equal elbo_gradients (eq. 19).

    Σ enters as a leaf through L = cholesky(Σ); α and γ are normalised by torch's Categorical
    (p/Σp), whose Jacobian maps the unconstrained gradient g to g − (pᵀg)·1 row-wise.  A second,
    independent route checks the gradient w.r.t. L itself: ∂/∂L = tril((G + Gᵀ) L), G = ∂/∂Σ.
    """
    n, k = 50, 3
    x, params, gamma0 = _data(n, d, 11), random_params(k, d, 11), random_gamma(n, k, 12)
    alpha, mu, cov, gamma = (t.clone().requires_grad_() for t in (params.alpha, params.mu, params.cov, gamma0))
    scale_tril = torch.linalg.cholesky(cov)
    model = poutine.substitute(pg.gmm_model, {"alpha": alpha, "mu": mu, "scale_tril": scale_tril})
    guide = poutine.substitute(pg.meanfield_guide, {"gamma": gamma})
    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, x, k)
    g_alpha, g_mu, g_cov, g_gamma = torch.autograd.grad(-loss, [alpha, mu, cov, gamma])
    ref = pg.elbo_gradients(x, gamma0, params)
    tol = {"rtol": 1e-9, "atol": 1e-9}
    torch.testing.assert_close(g_alpha, ref["alpha"] - (params.alpha * ref["alpha"]).sum(), **tol)
    torch.testing.assert_close(g_mu, ref["mu"], **tol)
    torch.testing.assert_close(g_cov, ref["cov"], **tol)
    torch.testing.assert_close(g_gamma, ref["gamma"] - (gamma0 * ref["gamma"]).sum(1, keepdim=True), **tol)

    leaf = params.scale_tril.clone().requires_grad_()
    model = poutine.substitute(pg.gmm_model, {"alpha": params.alpha, "mu": params.mu, "scale_tril": leaf})
    guide = poutine.substitute(pg.meanfield_guide, {"gamma": gamma0})
    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, x, k)
    (g_tril,) = torch.autograd.grad(-loss, [leaf])
    g = ref["cov"]
    torch.testing.assert_close(torch.tril(g_tril), torch.tril((g + g.transpose(-1, -2)) @ params.scale_tril), **tol)


def test_sites_shapes_and_dtype():
    x = _data(30, 2, 0)
    trace = poutine.trace(pg.gmm_model).get_trace(x, 2)
    assert trace.nodes["z"]["value"].shape == (30,)
    assert trace.nodes["x"]["is_observed"] and torch.equal(trace.nodes["x"]["value"], x)
    assert [f.name for f in trace.nodes["z"]["cond_indep_stack"]] == ["data"]
    store = pyro.get_param_store()
    assert set(store.keys()) == {"alpha", "mu", "scale_tril"}
    assert all(v.dtype == torch.float64 for _, v in store.items())
    assert torch.get_default_dtype() == torch.float32  # the library never changes it
    guide_trace = poutine.trace(pg.meanfield_guide).get_trace(x, 2)
    assert guide_trace.nodes["z"]["infer"]["enumerate"] == "parallel"
    assert pyro.param("gamma").shape == (30, 2) and pyro.param("gamma").dtype == torch.float64


def test_default_and_given_initial_values():
    x = _data(40, 2, 1)
    start = pg.fit_cavi(x, 3, max_iter=0, seed=0, reg_covar=0.0).params  # initial_params(..., seed=0)
    pg.meanfield_guide(x, 3)
    pg.gmm_model(x, 3)
    params, gamma = param_values()
    assert params.allclose(start, rtol=1e-12, atol=1e-12)
    # γ₀ is the posterior of Z under Θ₀ (eq. 20), by scipy
    log_joint = scipy_log_weights(x, start)
    ref = np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))
    np.testing.assert_allclose(gamma.numpy(), ref, rtol=1e-10, atol=1e-14)
    pyro.clear_param_store()
    given = random_params(3, 2, 5)
    pg.gmm_model(x, 3, init=given)
    assert param_values()[0].allclose(given, rtol=1e-12, atol=1e-12)


def test_subsample_scales_the_minibatch_to_the_full_data():
    """With subsample_size B the loss is N/B times eq. 18 of the drawn rows (the guide draws
    the indices, the model replays them)."""
    n, b, k = 60, 15, 3
    x, params, gamma = _data(n, 2, 2), random_params(k, 2, 2), random_gamma(n, k, 3)
    _set_store(params, gamma)
    torch.manual_seed(123)
    idx = poutine.trace(pg.meanfield_guide).get_trace(x, k, subsample_size=b).nodes["data"]["value"]
    torch.manual_seed(123)
    value = -_loss(pg.gmm_model, pg.meanfield_guide, x, k, subsample_size=b)
    assert len(set(idx.tolist())) == b
    assert value == pytest.approx(n / b * float(pg.elbo(x[idx], gamma[idx], params)), rel=1e-10)


def test_bad_input_is_refused_before_work():
    with pytest.raises(ValueError, match="NaN"):
        pg.gmm_model(torch.tensor([[0.0], [float("nan")]]), 1)
    with pytest.raises(ValueError, match="larger than the number"):
        pg.meanfield_guide(torch.zeros(3, 2), 4)
    with pytest.raises(ValueError, match="init has K"):
        pg.gmm_model(_data(10, 2, 0), 3, init=random_params(2, 2, 0))
    with pytest.raises(ValueError, match="subsample_size"):
        pg.gmm_model(_data(10, 2, 0), 2, subsample_size=11)
    assert len(pyro.get_param_store().keys()) == 0


def test_prior_delegates_to_the_bayesian_layer(monkeypatch):
    monkeypatch.setattr(model_module, "bayes_gmm_model", lambda x, k, prior: ("model", k, prior))
    monkeypatch.setattr(model_module, "bayes_meanfield_guide", lambda x, k, prior: ("guide", k, prior))
    assert pg.gmm_model is model_module.gmm_model
    assert pg.gmm_model(None, 2, prior="p") == ("model", 2, "p")
    assert pg.meanfield_guide(None, 2, prior="p") == ("guide", 2, "p")
