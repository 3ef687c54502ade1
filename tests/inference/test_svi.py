"""fit_svi: same start as fit_cavi, exact eq. 18 traces (checked against scipy), the CAVI optimum,
the fast option."""

import math

import numpy as np
import pyro
import pytest
import torch

import ppl_gmm as pg

from oracles import scipy_objectives


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: thread start-up dominates on 2 shared cores
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def plain_faithful():
    """Plain SVI (Adam on Θ and γ) on Old Faithful, shared by two tests."""
    x = pg.datasets.load_old_faithful()
    return x, pg.fit_svi(x, 2, seed=0, num_steps=600, lr=0.1, tol=0)


def _rel(a, b):
    return abs(float(a) - float(b)) / abs(float(b))


def _steps_to(fit, target, rel):
    """First trace entry within ``rel`` (relative) of ``target``, or None."""
    close = ((fit.elbo - target).abs() / abs(float(target)) < rel).nonzero()
    return int(close[0]) if len(close) else None


@pytest.mark.parametrize("init", ["kmeans++", "random"])
@pytest.mark.parametrize("local_updates", ["gradient", "natural"])
def test_starts_where_cavi_starts(faithful, init, local_updates):
    """Same init and seed: Θ₀ bit for bit, γ₀ = e_step(x, Θ₀), first entry = eq. 26 at Θ₀."""
    cavi0 = pg.fit_cavi(faithful, 2, init=init, seed=3, max_iter=0)  # Θ₀ and e_step(x, Θ₀)
    svi0 = pg.fit_svi(faithful, 2, init=init, seed=3, num_steps=0, local_updates=local_updates)
    for name in ("alpha", "mu", "cov"):
        assert torch.equal(getattr(svi0.params, name), getattr(cavi0.params, name))
    assert torch.equal(svi0.gamma, pg.e_step(faithful, cavi0.params))  # γ₀ = e_step(x, Θ₀), as documented
    torch.testing.assert_close(svi0.gamma, cavi0.gamma, rtol=0, atol=1e-12)  # CAVI's γ: the fused engine's pass
    torch.testing.assert_close(svi0.gamma, scipy_objectives(faithful, cavi0.params)["gamma"], rtol=0, atol=1e-12)
    for standardize in (True, False):
        fit = pg.fit_svi(
            faithful, 2, init=init, seed=3, num_steps=2, local_updates=local_updates, standardize=standardize
        )
        # −loss of the first step (standardised units + Jacobian) = L(γ₀, Θ₀) = log p(X | Θ₀)
        assert _rel(fit.elbo[0], pg.log_likelihood(faithful, cavi0.params)) < 1e-12
        assert _rel(fit.log_likelihood[0], pg.log_likelihood(faithful, cavi0.params)) < 1e-12


@pytest.mark.parametrize("local_updates", ["gradient", "natural"])
def test_trace_is_exact_eq18(separated_2d, local_updates):
    x = separated_2d[0]
    fit = pg.fit_svi(x, 3, seed=0, num_steps=40, tol=0, local_updates=local_updates, lr=0.1)
    assert fit.method == "svi" and fit.n_iter == 40 and len(fit.elbo) == len(fit.log_likelihood) == 41
    ref = scipy_objectives(x, fit.params, fit.gamma)  # eq. 18 and 26 at the returned (γ, Θ), by scipy
    assert _rel(fit.elbo[-1], ref["elbo"]) < 1e-12
    assert _rel(fit.log_likelihood[-1], ref["log_likelihood"]) < 1e-12
    assert torch.isfinite(fit.elbo).all() and torch.isfinite(fit.log_likelihood).all()
    gap = fit.log_likelihood - fit.elbo  # KL(q ‖ p(Z | X, Θ)) ≥ 0 (second note)
    if local_updates == "natural":  # γ = e_step(Θ) before every step: KL = 0 exactly
        torch.testing.assert_close(fit.elbo, fit.log_likelihood, rtol=1e-11, atol=0)
        torch.testing.assert_close(fit.gamma, ref["gamma"], rtol=0, atol=1e-12)
    else:
        assert bool((gap > -1e-9 * fit.elbo.abs()).all())
        assert float(gap[1:].max()) > 1e-6  # γ lags Θ in plain SVI
    assert torch.allclose(fit.gamma.sum(1), torch.ones(len(x), dtype=torch.float64), atol=1e-12)
    assert fit.times.shape == fit.elbo.shape and bool((fit.times[1:] >= fit.times[:-1]).all())


def _assert_at_cavi_optimum(x, k, fit, rel=1e-6, param_rtol=2e-3):
    cavi = pg.fit_cavi(x, k, seed=0, tol=1e-12)
    assert _rel(fit.elbo[-1], cavi.elbo[-1]) < rel
    aligned = fit.params.permute(pg.align(cavi, fit))
    scale = x.std(0) if x.ndim == 2 else x.std()
    scale = torch.as_tensor(scale, dtype=torch.float64)
    torch.testing.assert_close(aligned.alpha, cavi.params.alpha, rtol=0, atol=param_rtol)
    torch.testing.assert_close(aligned.mu / scale, cavi.params.mu / scale, rtol=0, atol=param_rtol)
    cov_scale = scale.reshape(-1, 1) * scale.reshape(1, -1)
    torch.testing.assert_close(aligned.cov / cov_scale, cavi.params.cov / cov_scale, rtol=0, atol=param_rtol)
    return cavi


@pytest.mark.parametrize("dataset", ["separated_2d", "faithful"])
def test_natural_option_reaches_the_cavi_optimum_fast(dataset, request):
    x = request.getfixturevalue(dataset)
    x = x[0] if dataset == "separated_2d" else x
    k = 3 if dataset == "separated_2d" else 2
    fit = pg.fit_svi(x, k, seed=0, num_steps=400, local_updates="natural", lr=0.1)
    assert fit.converged and fit.n_iter < 400
    cavi = _assert_at_cavi_optimum(x, k, fit, rel=1e-7)
    assert _steps_to(fit, cavi.elbo[-1], 1e-3) <= 30


@pytest.mark.slow  # with the shared plain_faithful fit (600 Adam steps): 3–5 s
def test_plain_svi_reaches_the_cavi_optimum(separated_2d, plain_faithful):
    x = separated_2d[0]
    _assert_at_cavi_optimum(x, 3, pg.fit_svi(x, 3, seed=0, num_steps=300, lr=0.1, tol=0), rel=2e-6)
    x, fit = plain_faithful
    _assert_at_cavi_optimum(x, 2, fit, rel=2e-5, param_rtol=5e-3)


@pytest.mark.slow  # with the shared plain_faithful fit (600 Adam steps): 3–5 s
def test_natural_is_much_faster_than_plain(plain_faithful):
    x, plain = plain_faithful
    cavi = pg.fit_cavi(x, 2, seed=0, tol=1e-12).elbo[-1]
    natural = pg.fit_svi(x, 2, seed=0, num_steps=300, lr=0.1, local_updates="natural", tol=0)
    n_natural = _steps_to(natural, cavi, 1e-6)
    assert n_natural is not None and n_natural < 150
    assert _steps_to(plain, cavi, 1e-6) is None  # plain SVI still > 1e-6 away after 600 steps
    assert _rel(natural.elbo[-1], cavi) < 0.01 * _rel(plain.elbo[-1], cavi)


def test_one_dimensional_data(galaxies):
    fit = pg.fit_svi(galaxies, 3, seed=0, num_steps=600, local_updates="natural", lr=0.1)
    assert fit.params.cov.shape == (3, 1, 1) and fit.converged
    cavi = pg.fit_cavi(galaxies, 3, seed=0, tol=1e-12)
    assert _rel(fit.elbo[-1], cavi.elbo[-1]) < 1e-6


@pytest.mark.parametrize("local_updates", ["gradient", "natural"])
def test_same_seed_same_bits(separated_2d, local_updates):
    x = separated_2d[0]
    kw = {"seed": 5, "num_steps": 25, "subsample_size": 64, "eval_every": 5, "local_updates": local_updates, "tol": 0}
    a, b = pg.fit_svi(x, 3, **kw), pg.fit_svi(x, 3, **kw)
    assert torch.equal(a.elbo, b.elbo) and torch.equal(a.params.mu, b.params.mu) and torch.equal(a.gamma, b.gamma)
    c = pg.fit_svi(x, 3, **{**kw, "seed": 6})
    assert not torch.equal(a.elbo, c.elbo)  # a different seed: different start and minibatches
    assert a.seed == 5 and isinstance(pg.fit_svi(x, 3, num_steps=1).seed, int)


@pytest.mark.parametrize("local_updates", ["gradient", "natural"])
def test_jit_gives_the_same_fit(faithful, local_updates):
    kw = {"seed": 0, "num_steps": 15, "local_updates": local_updates, "tol": 0}
    plain, jitted = pg.fit_svi(faithful, 2, **kw), pg.fit_svi(faithful, 2, jit=True, **kw)
    torch.testing.assert_close(jitted.elbo, plain.elbo, rtol=1e-11, atol=0)
    assert jitted.params.allclose(plain.params, rtol=1e-9, atol=1e-12) and jitted.info["jit"]
    assert torch.get_default_dtype() == torch.float32  # set to float64 only while compiling/running


@pytest.mark.parametrize("local_updates", ["gradient", "natural"])
def test_minibatch_svi(local_updates):
    f64 = torch.float64
    truth = pg.GMMParams(
        torch.tensor([0.5, 0.5], dtype=f64),
        torch.tensor([[-3.0, 0.0], [3.0, 0.0]], dtype=f64),
        torch.eye(2, dtype=f64).expand(2, 2, 2).clone(),
    )
    x, _ = pg.datasets.make_mixture(2000, truth, seed=0)
    assert x.dtype == f64
    fit = pg.fit_svi(
        x, 2, seed=0, num_steps=120, subsample_size=200, eval_every=20, local_updates=local_updates, lr=0.05, tol=0
    )
    assert fit.info["trace_steps"] == [0, 20, 40, 60, 80, 100, 120] and len(fit.elbo) == 7
    assert fit.elbo.dtype == fit.params.dtype == f64
    assert _rel(fit.elbo[-1], scipy_objectives(x, fit.params, fit.gamma)["elbo"]) < 1e-12
    # the recorded entries are full-data objectives, not the noisy minibatch estimate
    assert _rel(fit.elbo[0], pg.log_likelihood(x, pg.fit_cavi(x, 2, seed=0, max_iter=0).params)) < 1e-12
    cavi = pg.fit_cavi(x, 2, seed=0).elbo[-1]
    assert _rel(fit.elbo[-1], cavi) < (2e-4 if local_updates == "natural" else 2e-3)


@pytest.mark.parametrize("local_updates", ["gradient", "natural"])
def test_predict_proba_1e7_from_every_component_is_on_the_simplex(separated_2d, local_updates):
    x = separated_2d[0]
    fit = pg.fit_svi(x, 3, seed=0, num_steps=20, local_updates=local_updates, lr=0.1, tol=0)
    far = torch.tensor([[1e7, -1e7], [-1e7, 1e7], [1e7, 1e7], [0.0, 1e7], [-1e7, 0.0]], dtype=torch.float64)
    proba = fit.predict_proba(far)
    assert proba.shape == (5, 3) and bool(torch.isfinite(proba).all()) and bool((proba >= 0).all())
    torch.testing.assert_close(proba.sum(1), torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-15)


def test_divergence_is_caught_with_the_last_finite_state(faithful):
    with pytest.raises(pg.DivergenceError, match=r"SVI diverged at step \d+ ") as err:
        pg.fit_svi(faithful, 2, seed=0, num_steps=20, lr=1e3, standardize=False, tol=0)
    assert err.value.step >= 1 and f"step {err.value.step}" in str(err.value)
    last = err.value.last_finite
    assert isinstance(last, pg.GMMParams) and torch.isfinite(last.cov).all()


def test_global_state_is_left_alone(faithful):
    pyro.clear_param_store()
    pyro.param("user_param", torch.ones(2))
    rng = torch.get_rng_state()
    validation = pyro.infer.util.is_validation_enabled()
    dtype = torch.get_default_dtype()
    pg.fit_svi(faithful, 2, seed=0, num_steps=3, subsample_size=50, eval_every=2)
    assert list(pyro.get_param_store().keys()) == ["user_param"]
    assert torch.equal(torch.get_rng_state(), rng)
    assert pyro.infer.util.is_validation_enabled() == validation and torch.get_default_dtype() == dtype
    pyro.clear_param_store()


def test_float32_data_give_float32_results(faithful):
    fit = pg.fit_svi(faithful.astype(np.float32), 2, seed=0, num_steps=5, local_updates="natural")
    assert fit.params.dtype == torch.float32 and fit.gamma.dtype == torch.float32 and fit.elbo.dtype == torch.float32


def test_convergence_rule(faithful):
    fit = pg.fit_svi(faithful, 2, seed=0, num_steps=1000, local_updates="natural", lr=0.1, tol=1e-6, window=5)
    assert fit.converged and fit.n_iter < 1000
    changes = fit.elbo[-7:-1].diff().abs() / len(faithful)  # the window before the closing entry
    assert bool((changes < 1e-6).all())
    assert not pg.fit_svi(faithful, 2, seed=0, num_steps=5, tol=1e-12).converged


def test_bad_arguments_are_refused(faithful):
    with pytest.raises(ValueError, match="lr"):
        pg.fit_svi(faithful, 2, lr=0)
    with pytest.raises(ValueError, match="num_steps"):
        pg.fit_svi(faithful, 2, num_steps=-1)
    with pytest.raises(ValueError, match="local_updates"):
        pg.fit_svi(faithful, 2, local_updates="newton")
    with pytest.raises(ValueError, match="subsample_size"):
        pg.fit_svi(faithful, 2, subsample_size=1000)
    with pytest.raises(ValueError, match="lr_decay"):
        pg.fit_svi(faithful, 2, lr_decay=2.0)
    with pytest.raises(ValueError, match="unknown init"):
        pg.fit_svi(faithful, 2, init="nope")
    with pytest.raises(ValueError, match="larger than the number"):
        pg.fit_svi(faithful[:3], 4)


def test_progress_bar_runs(faithful):
    fit = pg.fit_svi(faithful, 2, seed=0, num_steps=3, progress=True)
    assert math.isfinite(float(fit.elbo[-1]))
