"""fit_cavi: the fused engine against the plain reference loop and against scikit-learn's
GaussianMixture iteration for iteration; trace semantics (γ and eq. 26 against scipy); the Old
Faithful MLE; robustness (1e6 offsets, far points, collapsing and empty components); seeds."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture

import ppl_gmm as pg
from ppl_gmm.inference import _engine
from ppl_gmm.inference.ascent import fit_ascent, restart_seeds
from ppl_gmm.inference.cavi import CAVIProblem

from oracles import random_params, reference_fit, scipy_objectives

COV_TYPES = ("full", "diag", "spherical", "tied")


def sklearn_precisions(params, covariance_type):
    cov = params.cov.double().numpy()
    if covariance_type == "full":
        return np.linalg.inv(cov)
    if covariance_type == "tied":
        return np.linalg.inv(cov[0])
    if covariance_type == "diag":
        return 1.0 / np.diagonal(cov, axis1=1, axis2=2)
    return 1.0 / cov[:, 0, 0]


def sklearn_cov(g, covariance_type, k, d):
    c = g.covariances_
    if covariance_type == "tied":
        return np.broadcast_to(c, (k, d, d))
    if covariance_type == "diag":
        return np.stack([np.diag(v) for v in c])
    if covariance_type == "spherical":
        return np.stack([v * np.eye(d) for v in c])
    return c


def run_sklearn(x, params, covariance_type, n_iter, reg_covar=0.0):
    g = GaussianMixture(
        params.k,
        covariance_type=covariance_type,
        tol=0,
        max_iter=n_iter,
        reg_covar=reg_covar,
        weights_init=params.alpha.numpy(),
        means_init=params.mu.numpy(),
        precisions_init=sklearn_precisions(params, covariance_type),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: tol=0 never "converges"
        return g.fit(x)


def _scipy_e_step(x, params):
    """(γ, eq. 26) by scipy (oracles.scipy_objectives)."""
    out = scipy_objectives(x, params)
    return out["gamma"], out["log_likelihood"]


def reference(x, params, **kwargs):
    """oracles.reference_fit with the traces as float64 tensors."""
    ref = reference_fit(x, params, **kwargs)
    return {
        **ref,
        "elbo": torch.tensor(ref["elbo"], dtype=torch.float64),
        "log_likelihood": torch.tensor(ref["log_likelihood"], dtype=torch.float64),
    }


def engine_fit(x, params, *, max_iter, block=None, covariance_type="full", reg_covar=0.0):
    """The fused engine's loop (fit_ascent on a CAVIProblem) from Θ₀ = ``params``, tol = 0."""
    problem = CAVIProblem(torch.as_tensor(x), params, covariance_type, reg_covar, block=block)
    run = fit_ascent(problem, max_iter=max_iter, tol=0.0)
    p = problem.params(run.state)
    return {
        "alpha": p.alpha,
        "mu": p.mu,
        "cov": p.cov,
        "gamma": problem.gamma,
        "elbo": run.elbo,
        "log_likelihood": run.log_likelihood,
        "n_iter": run.n_iter,
    }


def assert_params_close(p, q, rtol):
    for a, b in ((p.alpha, q.alpha), (p.mu, q.mu), (p.cov, q.cov)):
        scale = b.abs().max()
        assert float((a - b).abs().max() / scale) < rtol, (a, b)


@pytest.fixture
def start(faithful):
    """Θ₀ for Old Faithful, K = 3 (a k-means++ start, not an optimum)."""
    return pg.fit_cavi(faithful, 3, max_iter=0, seed=3, reg_covar=0).params


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_agrees_with_sklearn_iteration_for_iteration(faithful, covariance_type):
    x = faithful
    p0 = pg.fit_cavi(x, 3, max_iter=0, seed=3, reg_covar=0, covariance_type=covariance_type).params
    for n in (1, 2, 5, 20):
        fit = pg.fit_cavi(x, 3, init=p0, covariance_type=covariance_type, max_iter=n, tol=0, reg_covar=0)
        g = run_sklearn(x, p0, covariance_type, n)
        assert fit.n_iter == n == g.n_iter_
        ref = pg.GMMParams(
            torch.tensor(g.weights_), torch.tensor(g.means_), torch.tensor(sklearn_cov(g, covariance_type, 3, 2))
        )
        assert_params_close(fit.params, ref, 1e-10)
        np.testing.assert_allclose(fit.gamma.numpy(), g.predict_proba(x), rtol=0, atol=1e-10)


def test_agrees_with_sklearn_with_reg_covar_in_five_dimensions():
    params = random_params(3, 5, seed=11)
    x, _ = pg.datasets.make_mixture(600, params, seed=11)
    p0 = pg.fit_cavi(x, 3, max_iter=0, seed=1).params
    fit = pg.fit_cavi(x, 3, init=p0, max_iter=10, tol=0, reg_covar=1e-3)
    g = run_sklearn(x.numpy(), p0, "full", 10, reg_covar=1e-3)
    ref = pg.GMMParams(torch.tensor(g.weights_), torch.tensor(g.means_), torch.tensor(g.covariances_))
    assert_params_close(fit.params, ref, 1e-10)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_engine_matches_reference_loop(start, faithful, covariance_type):
    """The fused engine vs the loop over the public closed-form functions, every trace entry."""
    p0 = pg.fit_cavi(faithful, 3, max_iter=0, seed=5, reg_covar=0, covariance_type=covariance_type).params
    fit = pg.fit_cavi(faithful, 3, init=p0, covariance_type=covariance_type, max_iter=15, tol=0, reg_covar=0)
    ref = reference(faithful, p0, covariance_type=covariance_type, max_iter=15)
    assert fit.n_iter == ref["n_iter"] == 15
    torch.testing.assert_close(fit.elbo, ref["elbo"], rtol=1e-12, atol=0)
    torch.testing.assert_close(fit.log_likelihood, ref["log_likelihood"], rtol=1e-12, atol=0)
    assert_params_close(fit.params, ref["params"], 1e-11)
    torch.testing.assert_close(fit.gamma, ref["gamma"], rtol=0, atol=1e-11)


def _far_cluster_data():
    """D = 6, two components near the centre and a tight one far away (μᵀΣ⁻¹μ ≫ 1e3), so the
    raw-moment path and the per-component shifted fallback both run."""
    base = random_params(3, 6, seed=5).cov
    cov = torch.stack([base[0] + 4 * torch.eye(6), base[1] + 4 * torch.eye(6), 1e-2 * base[2]])
    mu = torch.zeros(3, 6, dtype=torch.float64)
    mu[1, 1] = 6.0
    mu[2, 0] = 300.0
    p = pg.GMMParams(torch.tensor([0.45, 0.45, 0.1], dtype=torch.float64), mu, cov)
    x, _ = pg.datasets.make_mixture(800, p, seed=3)
    return x, p


@pytest.mark.parametrize("limit", [None, 0.0, float("inf")], ids=["mixed", "all-shifted", "all-raw"])
@pytest.mark.parametrize("block", [None, 97])
def test_engine_paths_and_blocks_match_reference(block, limit, monkeypatch):
    x, p = _far_cluster_data()
    if limit is None:
        assert x.shape[1] > _engine.SHIFTED_MAX_D  # raw mode: the per-component choice is made
        th = _engine.Theta(p.alpha, p.mu - x.mean(0), p.cov, torch.ones(6, dtype=torch.float64), torch.float64)
        assert (th.offset2 > _engine.RAW_OFFSET_LIMIT).tolist() == [False, False, True]  # mixed paths
    else:
        monkeypatch.setattr(_engine, "RAW_OFFSET_LIMIT", limit)
    out = engine_fit(x, p, max_iter=6, block=block)
    ref = reference(x, p, max_iter=6)
    # raw moments for the far, tight component lose digits to cancellation: why the guard exists
    loose = 1e3 if limit == float("inf") else 1.0
    torch.testing.assert_close(out["elbo"], ref["elbo"], rtol=1e-12 * loose, atol=0)
    torch.testing.assert_close(out["log_likelihood"], ref["log_likelihood"], rtol=1e-12 * loose, atol=0)
    torch.testing.assert_close(out["cov"], ref["params"].cov, rtol=1e-9 * loose, atol=1e-12 * loose)
    torch.testing.assert_close(out["mu"], ref["params"].mu, rtol=1e-12 * loose, atol=1e-11 * loose)
    torch.testing.assert_close(out["gamma"], ref["gamma"], rtol=0, atol=1e-11 * loose)


@pytest.mark.parametrize("d", [1, 2])
def test_blocked_passes_match_single_block(d):
    params = random_params(3, d, seed=2)
    x, _ = pg.datasets.make_mixture(500, params, seed=2)
    a = engine_fit(x, params, max_iter=5)
    b = engine_fit(x, params, max_iter=5, block=64)
    assert a["n_iter"] == b["n_iter"] == 5
    for key in ("elbo", "log_likelihood", "mu", "cov", "gamma"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-12, atol=1e-13)


def test_trace_semantics(faithful, start):
    fit = pg.fit_cavi(faithful, 3, init=start, max_iter=30, tol=0, reg_covar=0)
    assert fit.n_iter == 30 and not fit.converged
    assert fit.elbo.shape == fit.log_likelihood.shape == fit.times.shape == (31,)
    assert torch.isfinite(fit.elbo).all()
    assert bool((fit.elbo.diff() >= -1e-9 * fit.elbo.abs().max()).all())  # coordinate ascent: non-decreasing
    assert bool((fit.log_likelihood.diff() >= -1e-9).all())  # eq. 22: monotone log-likelihood
    assert bool((fit.kl_gap >= -1e-9).all())
    assert float(fit.elbo[0]) >= float(pg.log_likelihood(faithful, start)) - 1e-9  # elbo_0 = eq. 26 at Θ₀
    # the closing E-step: KL gap 0, γ = e_step(x, Θ), elbo[-1] = eq. 18 = eq. 26 at the returned Θ
    assert float(fit.kl_gap[-1]) == 0.0
    # the engine's closing pass against core's e_step / eq. 26 (round-off apart) and against scipy
    torch.testing.assert_close(fit.gamma, pg.e_step(faithful, fit.params), rtol=0, atol=1e-12)
    gamma_ref, ll_ref = _scipy_e_step(faithful, fit.params)
    torch.testing.assert_close(fit.gamma, gamma_ref, rtol=0, atol=1e-12)
    ll = float(pg.log_likelihood(faithful, fit.params))
    assert float(fit.elbo[-1]) == pytest.approx(ll, rel=1e-12)
    assert float(fit.elbo[-1]) == pytest.approx(ll_ref, rel=1e-12)
    assert float(pg.elbo(faithful, fit.gamma, fit.params)) == pytest.approx(ll, rel=1e-13)
    # entry t: eq. 18 at (γ_{t-1}, Θ_t) is below eq. 26 at Θ_t
    assert float(fit.log_likelihood[-2]) == pytest.approx(ll, rel=1e-13)


def test_tolerance_stops_and_tol_zero_runs_max_iter(faithful, start):
    fit = pg.fit_cavi(faithful, 3, init=start, tol=1e-6, max_iter=500)
    assert fit.converged and fit.n_iter < 500
    change = abs(float(fit.elbo[fit.n_iter - 1] - fit.elbo[fit.n_iter - 2])) / faithful.shape[0]
    assert change < 1e-6
    earlier = abs(float(fit.elbo[fit.n_iter - 2] - fit.elbo[fit.n_iter - 3])) / faithful.shape[0]
    assert earlier >= 1e-6
    zero = pg.fit_cavi(faithful, 3, init=start, tol=0, max_iter=7)
    assert zero.n_iter == 7 and not zero.converged
    none = pg.fit_cavi(faithful, 3, init=start, max_iter=0)
    assert none.n_iter == 0 and none.elbo.shape == (1,)
    assert float(none.elbo[0]) == pytest.approx(float(pg.log_likelihood(faithful, start)), rel=1e-13)


def test_old_faithful_mle_k2(faithful):
    fit = pg.fit_cavi(faithful, 2, n_init=5, seed=0, tol=1e-12, reg_covar=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = GaussianMixture(2, n_init=10, tol=1e-12, max_iter=2000, reg_covar=0, random_state=0).fit(faithful)
    assert float(fit.elbo[-1]) == pytest.approx(-1130.264, abs=1e-3)
    assert float(fit.elbo[-1]) == pytest.approx(g.score(faithful) * faithful.shape[0], abs=1e-6)
    order = torch.argsort(fit.params.mu[:, 0])
    torch.testing.assert_close(
        fit.params.mu[order], torch.tensor([[2.036, 54.48], [4.290, 79.97]], dtype=torch.float64), rtol=0, atol=5e-3
    )
    np.testing.assert_allclose(fit.params.mu[order].numpy(), g.means_[np.argsort(g.means_[:, 0])], rtol=1e-6)


def test_seeds_reproduce_bit_for_bit(faithful):
    for init in ("kmeans++", "random"):
        a = pg.fit_cavi(faithful, 3, init=init, seed=42, max_iter=20)
        b = pg.fit_cavi(faithful, 3, init=init, seed=42, max_iter=20)
        c = pg.fit_cavi(faithful, 3, init=init, seed=43, max_iter=20)
        for name in ("alpha", "mu", "cov"):
            assert torch.equal(getattr(a.params, name), getattr(b.params, name))
        assert torch.equal(a.gamma, b.gamma) and torch.equal(a.elbo, b.elbo)
        assert torch.equal(a.log_likelihood, b.log_likelihood) and a.seed == b.seed == 42
        assert not torch.equal(a.elbo, c.elbo)
    auto = pg.fit_cavi(faithful, 2, max_iter=3)
    again = pg.fit_cavi(faithful, 2, max_iter=3, seed=auto.seed)
    assert torch.equal(auto.params.mu, again.params.mu)


def test_n_init_keeps_the_best_restart(faithful):
    best = pg.fit_cavi(faithful, 4, n_init=4, seed=9, max_iter=40, init="random")
    singles = [pg.fit_cavi(faithful, 4, seed=s, max_iter=40, init="random") for s in restart_seeds(9, 4)]
    finals = [float(f.elbo[-1]) for f in singles]
    assert float(best.elbo[-1]) == max(finals)
    assert best.seed == 9 and best.info["restart_seed"] == restart_seeds(9, 4)[int(np.argmax(finals))]
    assert len(set(finals)) > 1  # the restarts really differ


def test_float32_on_request(faithful):
    f64 = pg.fit_cavi(faithful, 2, seed=1, max_iter=40, tol=0)
    for f32 in (
        pg.fit_cavi(faithful.astype(np.float32), 2, seed=1, max_iter=40, tol=0),
        pg.fit_cavi(faithful, 2, seed=1, max_iter=40, tol=0, dtype=torch.float32),
    ):
        assert f32.params.dtype == f32.gamma.dtype == f32.elbo.dtype == torch.float32
        torch.testing.assert_close(f32.params.mu.double(), f64.params.mu, rtol=1e-4, atol=0)
        assert float(f32.elbo[-1]) == pytest.approx(float(f64.elbo[-1]), rel=1e-5)
        torch.testing.assert_close(f32.gamma.sum(1), torch.ones(272), rtol=0, atol=1e-6)


def test_data_offset_by_1e6_gives_the_shifted_answer(faithful, start):
    fit = pg.fit_cavi(faithful, 3, init=start, max_iter=25, tol=0)
    moved = pg.fit_cavi(faithful + 1e6, 3, init=start.shift([1e6, 1e6]), max_iter=25, tol=0)
    torch.testing.assert_close(moved.params.mu - 1e6, fit.params.mu, rtol=0, atol=1e-6)
    torch.testing.assert_close(moved.params.cov, fit.params.cov, rtol=1e-6, atol=0)
    torch.testing.assert_close(moved.elbo, fit.elbo, rtol=1e-9, atol=0)


def test_point_1e7_away_gets_finite_normalised_gamma(separated_2d):
    x, _, params = separated_2d
    far = torch.cat([x, torch.tensor([[1e7, -1e7]], dtype=torch.float64)])
    # fixed Θ: the E-step in log space (eq. 20) keeps the far row finite and normalised
    fit = pg.fit_cavi(far, 3, init=params, max_iter=0)
    torch.testing.assert_close(fit.gamma.sum(1), torch.ones(far.shape[0], dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.isfinite(fit.gamma).all() and torch.isfinite(fit.elbo).all()
    # a fit: k-means++ gives the far point its own component, held at the reg_covar floor
    fit = pg.fit_cavi(far, 4, seed=0, max_iter=20)
    assert torch.isfinite(fit.gamma).all() and torch.isfinite(fit.elbo).all()
    torch.testing.assert_close(fit.gamma.sum(1), torch.ones(far.shape[0], dtype=torch.float64), rtol=0, atol=1e-12)
    j = int(fit.gamma[-1].argmax())
    assert float(fit.gamma[-1, j]) == 1.0 and float(fit.params.alpha[j]) == pytest.approx(1 / far.shape[0])
    torch.testing.assert_close(fit.params.cov[j], 1e-6 * torch.eye(2, dtype=torch.float64), rtol=1e-6, atol=0)


def test_predict_proba_1e7_from_every_component_is_on_the_simplex(separated_2d):
    x, _, _ = separated_2d
    fit = pg.fit_cavi(x, 3, seed=0, max_iter=50)
    far = torch.tensor([[1e7, -1e7], [-1e7, 1e7], [1e7, 1e7], [0.0, 1e7], [-1e7, 0.0]], dtype=torch.float64)
    proba = fit.predict_proba(far)
    assert proba.shape == (5, 3) and bool(torch.isfinite(proba).all()) and bool((proba >= 0).all())
    torch.testing.assert_close(proba.sum(1), torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-15)


def test_single_point_cluster_with_reg_covar_0_names_the_component(faithful):
    x = np.vstack([faithful, [[100.0, 500.0]]])
    with pytest.raises(pg.DegenerateComponentError, match=r"component \d .*reg_covar"):
        pg.fit_cavi(x, 3, seed=0, reg_covar=0)
    fit = pg.fit_cavi(x, 3, seed=0, reg_covar=1e-6)  # documented recovery: the floor reg_covar
    assert torch.isfinite(fit.elbo).all()
    assert float(fit.params.cov[:, 0, 0].min()) == pytest.approx(1e-6, rel=1e-3)


def test_duplicated_points_collapse_is_an_error_not_nan(faithful):
    x = np.vstack([faithful, np.tile([[3.0, 70.0]], (20, 1))])
    with pytest.raises(
        pg.DegenerateComponentError, match=r"component \d has a covariance that is not positive"
    ) as info:
        pg.fit_cavi(x, 4, seed=1, reg_covar=0, max_iter=200)
    assert type(info.value) is pg.DegenerateComponentError  # not the posterior subclass
    assert 0 <= info.value.component < 4 and "Remedies" in str(info.value)


def test_empty_component_is_named(faithful):
    p = pg.GMMParams(
        torch.tensor([0.5, 0.4, 0.1], dtype=torch.float64),
        torch.tensor([[2.0, 55.0], [4.3, 80.0], [1e4, 1e4]], dtype=torch.float64),
        torch.tensor([[0.1, 0.0], [0.0, 30.0]], dtype=torch.float64).expand(3, 2, 2),
    )
    with pytest.raises(pg.EmptyComponentError, match="component 2 is empty"):
        pg.fit_cavi(faithful, 3, init=p, max_iter=5)


def test_progress_bar(faithful, capsys):
    fit = pg.fit_cavi(faithful, 2, seed=0, max_iter=5, tol=0, progress=True)
    assert fit.n_iter == 5
    assert "CAVI" in capsys.readouterr().err
