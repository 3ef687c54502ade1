"""The fused CAVI kernel (inference._engine) against core, one function at a time, at a random
(not optimal) Θ: one pass gives eq. 26 (Σ lse = log_likelihood), N_k and γ (= e_step); the M-step
from its statistics is m_step(x, e_step(x, Θ)) for the four covariance types; eq. 18 from the
statistics is elbo(x, e_step(x, Θ), m_step(...)); the entropy is core's. Shifted moments (D ≤
SHIFTED_MAX_D), raw moments (D = 6, also with every component forced shifted), several row blocks,
and float32 data (against the float64 core, at float32's tolerance)."""

import math

import pytest
import torch

import ppl_gmm as pg
from ppl_gmm.core.gmm import entropy
from ppl_gmm.inference import _engine
from ppl_gmm.inference._engine import Engine, Theta, elbo_from_stats, entropy_from_stats, m_step_from_stats

from oracles import random_params

F64 = torch.float64
COV_TYPES = ("full", "diag", "spherical", "tied")

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: small problems, one torch thread


def _problem(d, n=500, k=3, seed=0):
    """Data from one random mixture, Θ another (so that γ is far from one-hot), both float64."""
    x, _ = pg.datasets.make_mixture(n, random_params(k, d, seed=seed), seed=seed)
    theta = random_params(k, d, seed=seed + 100)
    theta = pg.GMMParams(theta.alpha, 0.5 * theta.mu, theta.cov)  # components inside the data cloud
    return x, theta


def _engine_at(x, params, block=None):
    """(engine, Θ in its coordinates, shift), set up as CAVIProblem does: the data centred at the
    column means (the shift representable in x's dtype), Θ float64, centred."""
    n, d = x.shape
    shift = x.mean(0, dtype=F64).to(x.dtype)
    eng = Engine(x, shift, params.k, block)
    shift = shift.to(F64)
    data_scale = torch.linalg.vector_norm(eng.xt[:d], dim=1, dtype=F64) / math.sqrt(n)
    th = Theta(params.alpha.to(F64), params.mu.to(F64) - shift, params.cov.to(F64), data_scale, x.dtype)
    return eng, th, shift, data_scale


def _rel(a, b):
    return abs(float(a) - float(b)) / abs(float(b))


CASES = [
    pytest.param(2, None, None, id="D2-shifted"),
    pytest.param(2, 97, None, id="D2-shifted-blocks"),
    pytest.param(1, 64, None, id="D1-shifted-blocks"),
    pytest.param(6, None, None, id="D6-raw"),
    pytest.param(6, 97, None, id="D6-raw-blocks"),
    pytest.param(6, None, 0.0, id="D6-all-shifted"),
]


@pytest.mark.parametrize("d, block, limit", CASES)
def test_pass_is_log_likelihood_and_e_step(d, block, limit, monkeypatch):
    if limit is not None:
        monkeypatch.setattr(_engine, "RAW_OFFSET_LIMIT", limit)
    x, params = _problem(d)
    eng, th, _, _ = _engine_at(x, params, block)
    assert eng.raw_mode == (d > _engine.SHIFTED_MAX_D) and (block is None or eng.block == block)
    st = eng.run_pass(th)
    assert (st.raw is not None) == (d > _engine.SHIFTED_MAX_D and limit is None)  # which moments were taken
    gamma_ref = pg.e_step(x, params)
    assert _rel(st.lse, pg.log_likelihood(x, params)) < 1e-12  # Σ_i lse_i = eq. 26
    torch.testing.assert_close(st.n_k, gamma_ref.sum(0), rtol=1e-12, atol=0)  # N_k
    assert _rel(entropy_from_stats(st, th), entropy(gamma_ref)) < 1e-12  # H(γ), from the statistics
    for stats in (True, False):  # the closing pass writes γ (with or without statistics)
        gamma = torch.full((x.shape[0], params.k), math.nan, dtype=x.dtype)
        out = eng.run_pass(th, stats=stats, gamma_out=gamma)
        torch.testing.assert_close(gamma, gamma_ref, rtol=0, atol=1e-13)
        assert float(out.lse) == float(st.lse) or _rel(out.lse, st.lse) < 1e-14


@pytest.mark.parametrize("covariance_type", COV_TYPES)
@pytest.mark.parametrize("d, block, limit", CASES)
@pytest.mark.parametrize("reg_covar", [0.0, 1e-3])
def test_m_step_and_elbo_from_stats_are_core(d, block, limit, covariance_type, reg_covar, monkeypatch):
    if limit is not None:
        monkeypatch.setattr(_engine, "RAW_OFFSET_LIMIT", limit)
    x, params = _problem(d)
    eng, th, shift, data_scale = _engine_at(x, params, block)
    st = eng.run_pass(th)
    alpha, mu, cov, scatter, moment = m_step_from_stats(st, th, covariance_type, reg_covar, x.dtype)
    gamma = pg.e_step(x, params)
    ref = pg.m_step(x, gamma, covariance_type, reg_covar)  # eq. 21 / 28
    torch.testing.assert_close(alpha, ref.alpha, rtol=1e-12, atol=0)
    torch.testing.assert_close(mu + shift, ref.mu, rtol=1e-12, atol=1e-12)  # μ shifted back by the centre
    torch.testing.assert_close(cov, ref.cov, rtol=1e-11, atol=1e-12 * float(ref.cov.abs().max()))
    new = Theta(alpha, mu, cov, data_scale, x.dtype, scale=moment)
    value = elbo_from_stats(st, scatter, th, new)  # eq. 18 at (γ of the pass, Θ')
    assert _rel(value, pg.elbo(x, gamma, ref)) < 1e-12


def test_float32_pass_and_m_step_against_float64_core():
    """float32 data: blocks in float32, statistics accumulated in float64 (measured errors ~1e-7)."""
    x64, params = _problem(2, n=2000)
    x = x64.float()
    eng, th, shift, data_scale = _engine_at(x, params, block=300)
    assert eng.dtype == torch.float32 and th.w_aug.dtype == torch.float32
    st = eng.run_pass(th)
    assert st.lse.dtype == st.n_k.dtype == F64  # accumulated in float64
    xr = x.double()  # the float32 data, exactly, in float64
    gamma_ref = pg.e_step(xr, params)
    assert _rel(st.lse, pg.log_likelihood(xr, params)) < 1e-6
    torch.testing.assert_close(st.n_k, gamma_ref.sum(0), rtol=1e-6, atol=0)
    gamma = torch.empty(x.shape[0], params.k, dtype=torch.float32)
    eng.run_pass(th, stats=False, gamma_out=gamma)
    torch.testing.assert_close(gamma.double(), gamma_ref, rtol=0, atol=1e-5)
    for covariance_type in COV_TYPES:
        alpha, mu, cov, scatter, moment = m_step_from_stats(st, th, covariance_type, 0.0, x.dtype)
        ref = pg.m_step(xr, gamma_ref, covariance_type)
        torch.testing.assert_close(alpha, ref.alpha, rtol=1e-6, atol=0)
        torch.testing.assert_close(mu + shift, ref.mu, rtol=0, atol=1e-6 * float(xr.abs().max()))
        torch.testing.assert_close(cov, ref.cov, rtol=1e-5, atol=1e-6 * float(ref.cov.abs().max()))
        new = Theta(alpha, mu, cov, data_scale, x.dtype, scale=moment)
        assert _rel(elbo_from_stats(st, scatter, th, new), pg.elbo(xr, gamma_ref, ref)) < 1e-6
