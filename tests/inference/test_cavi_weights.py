"""fit_cavi with frequency weights (issue 10, item 3). One weighted pass of the engine against
numpy/scipy (Σ_i w_i lse_i, N_k = Σ_i w_i γ_ik, the weighted M-step with ``np.cov(aweights=)`` and
eq. 18 with weights, tests/oracles.py); whole fits: integer weights = the rows repeated (1e-10,
the four covariance types, in memory and from a .npy file with the weights in a memmap); a zero
weight = the row removed; weights c·w give the same Θ and c times the traces; bad weights are
refused before any pass."""

import math

import numpy as np
import pytest
import torch

import ppl_gmm as pg
from ppl_gmm.inference import _engine
from ppl_gmm.inference._engine import Engine, Theta, elbo_from_stats, m_step_from_stats

from oracles import assert_rel_close, numpy_weighted_m_step, random_params, scipy_objectives_weighted

F64 = torch.float64
COV_TYPES = ("full", "diag", "spherical", "tied")

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: small problems, one torch thread


@pytest.fixture(scope="module")
def data():
    """(x, w, Θ₀): 600 rows, D = 2, integer weights 0..3 (some rows weigh 0)."""
    rng = np.random.default_rng(11)
    centres = np.array([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
    x = np.concatenate([rng.normal(size=(200, 2)) * [1.0, 0.6] + c for c in centres]) + 50.0
    w = rng.integers(0, 4, size=len(x)).astype(np.float64)
    start = pg.fit_cavi(x, 3, seed=0, max_iter=0).params
    return x, w, start


@pytest.mark.parametrize("d, block", [(2, 97), (6, 61)], ids=["D2-shifted", "D6-raw"])
def test_weighted_pass_and_m_step_against_numpy(d, block):
    x, _ = pg.datasets.make_mixture(500, random_params(3, d, seed=d), seed=d)
    w = torch.as_tensor(np.random.default_rng(d).uniform(0.0, 3.0, size=500))
    params = random_params(3, d, seed=d + 50)
    params = pg.GMMParams(params.alpha, 0.5 * params.mu, params.cov)  # γ far from one-hot
    src = pg.as_source(x, w)
    shift = x.mean(0)
    eng = Engine(src, shift, 3, block)
    data_scale = torch.ones(d, dtype=F64)
    th = Theta(params.alpha, params.mu - shift, params.cov, data_scale, F64)
    st = eng.run_pass(th)
    gamma = pg.e_step(x, params)
    ref = scipy_objectives_weighted(x.numpy(), params, w.numpy())
    assert abs(float(st.lse) - ref["log_likelihood"]) <= 1e-12 * abs(ref["log_likelihood"])  # Σ_i w_i lse_i
    assert_rel_close(st.n_k, (gamma * w[:, None]).sum(0), 1e-12)  # N_k = Σ_i w_i γ_ik
    for covariance_type in COV_TYPES:
        alpha, mu, cov, scatter, moment = m_step_from_stats(st, th, covariance_type, 1e-3, F64)
        a_ref, mu_ref, cov_ref = numpy_weighted_m_step(x.numpy(), gamma.numpy(), w.numpy(), covariance_type, 1e-3)
        assert_rel_close(alpha, a_ref, 1e-12)
        assert_rel_close(mu + shift, mu_ref, 1e-11)
        assert_rel_close(cov, cov_ref, 1e-11)
        new = Theta(alpha, mu, cov, data_scale, F64, scale=moment)
        value = float(elbo_from_stats(st, scatter, th, new))  # eq. 18 at (γ, Θ'), weighted
        new_params = pg.GMMParams(alpha, mu + shift, cov)
        e_ref = scipy_objectives_weighted(x.numpy(), new_params, w.numpy(), gamma.numpy())["elbo"]
        assert abs(value - e_ref) <= 1e-11 * abs(e_ref), covariance_type


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_integer_weights_are_repeated_rows(data, covariance_type, tmp_path):
    x, w, start = data
    kw = {"init": start, "covariance_type": covariance_type, "max_iter": 15, "tol": 0}
    rep = pg.fit_cavi(np.repeat(x, w.astype(int), axis=0), 3, **kw)
    path, wpath = tmp_path / "x.npy", tmp_path / "w.npy"
    np.save(path, x)
    np.save(wpath, w)
    for xs, ws in ((x, w), (path, np.load(wpath, mmap_mode="r"))):
        fit = pg.fit_cavi(xs, 3, sample_weight=ws, **kw)
        for name in ("alpha", "mu", "cov"):
            assert_rel_close(getattr(fit.params, name), getattr(rep.params, name))
        assert_rel_close(fit.elbo, rep.elbo)  # Σ_i w_i (…) = the sum over the repeated rows
        assert_rel_close(fit.log_likelihood, rep.log_likelihood)
    fit = pg.fit_cavi(x, 3, sample_weight=w, **kw)
    assert_rel_close(fit.gamma[w > 0].repeat_interleave(torch.as_tensor(w[w > 0], dtype=torch.long), 0), rep.gamma)


def test_zero_weight_removes_the_row(data):
    x, w, start = data
    keep = w > 0
    fit = pg.fit_cavi(x, 3, sample_weight=keep.astype(float), init=start, max_iter=20, tol=1e-10)
    ref = pg.fit_cavi(x[keep], 3, init=start, max_iter=20, tol=1e-10)
    assert fit.n_iter == ref.n_iter  # the stopping rule divides by Σ_i w_i = the rows kept
    for name in ("alpha", "mu", "cov"):
        assert_rel_close(getattr(fit.params, name), getattr(ref.params, name))
    assert_rel_close(fit.elbo, ref.elbo)
    assert_rel_close(fit.gamma[keep], ref.gamma)  # and the removed rows still get their γ


def test_scaled_weights_scale_the_objective_only(data):
    x, w, start = data
    c = 2.5
    a = pg.fit_cavi(x, 3, sample_weight=w, init=start, max_iter=10, tol=0)
    b = pg.fit_cavi(x, 3, sample_weight=c * w, init=start, max_iter=10, tol=0)
    for name in ("alpha", "mu", "cov"):
        assert_rel_close(getattr(b.params, name), getattr(a.params, name))
    assert_rel_close(b.elbo, c * a.elbo)


@pytest.mark.parametrize(
    "bad, match",
    [
        ("negative", "negative"),
        ("nan", "NaN"),
        ("inf", "infinite"),
        ("short", "entries"),
        ("2d", "1-D"),
        ("zeros", "sums to 0"),
    ],
)
def test_bad_weights_are_refused_before_any_pass(data, bad, match, monkeypatch):
    x, w, _ = data
    wb = {
        "negative": np.where(np.arange(len(w)) == 7, -1.0, w),
        "nan": np.where(np.arange(len(w)) == 7, math.nan, w),
        "inf": np.where(np.arange(len(w)) == 7, math.inf, w),
        "short": w[:-1],
        "2d": w[:, None],
        "zeros": np.zeros_like(w),
    }[bad]
    monkeypatch.setattr(_engine.Engine, "__init__", lambda *a, **k: pytest.fail("a pass was prepared"))
    with pytest.raises(ValueError, match=match) as err:
        pg.fit_cavi(x, 3, sample_weight=wb, seed=0)
    assert "sample_weight" in str(err.value)
