"""MAP-EM in every covariance type and with frequency weights, against independent oracles: the
written-out M-step (``oracles.map_m_step``), an autograd / L-BFGS maximiser of the log posterior
built from torch.distributions (``oracles.map_objective_td``), scipy.stats densities for ln p(Θ),
repeated rows for integer weights and a removed row for a zero weight."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import ppl_gmm as pg
from ppl_gmm.core.priors import NormalWishartPrior, conjugate_update_from_data, log_prior, posterior_mode

from oracles import Rows, lbfgs_max, map_m_step, map_objective_td, map_pack, map_unpack, random_gamma

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: small problems, one torch thread

TYPES = ("full", "diag", "spherical", "tied")
PRIOR = NormalWishartPrior(2.5, [0.1, -0.2], 0.7, 4.5, [[1.5, 0.3], [0.3, 0.8]])


def _x(faithful, step=3):
    x = np.asarray(faithful, dtype=np.float64)
    return torch.as_tensor((x - x.mean(0)) / x.std(0))[::step]


def _weights(n, seed=0):
    return torch.as_tensor(np.random.default_rng(seed).integers(0, 4, size=n), dtype=torch.float64)


def _grad(f, u):
    u = u.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(u), u)
    return g


@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_m_step_is_the_argmax(faithful, covariance_type, weighted):
    """posterior_mode of the conjugate update = the written-out oracle (1e-12), the gradient of the
    independent M-step objective vanishes there, and L-BFGS from a perturbed point lands on it."""
    x = _x(faithful)
    k = 3
    gamma = random_gamma(len(x), k, seed=3)
    w = _weights(len(x)) if weighted else None
    gw = gamma if w is None else gamma * w[:, None]
    mode = posterior_mode(conjugate_update_from_data(x, gw, PRIOR), 0.0, covariance_type, PRIOR)
    ref = map_m_step(x, gamma, PRIOR, covariance_type=covariance_type, sample_weight=w)
    for name in ("alpha", "mu", "cov"):
        torch.testing.assert_close(getattr(mode, name), getattr(ref, name), rtol=1e-12, atol=1e-14)
    f = lambda u: map_objective_td(u, x, PRIOR, k, covariance_type, gamma=gamma, sample_weight=w)
    u = map_pack(mode, covariance_type)
    assert float(_grad(f, u).abs().max()) < 1e-8
    noise = torch.randn(u.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    opt = lbfgs_max(f, u + 0.1 * noise, rounds=1)
    assert float(f(opt)) <= float(f(u)) + 1e-9  # nothing beats the closed form
    for got, want in zip(map_unpack(opt, k, 2, covariance_type), map_unpack(u, k, 2, covariance_type)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)  # (α, μ, precision, Λ)


def _scipy_log_prior(p, prior, covariance_type):
    """ln p(Θ) from scipy.stats: dirichlet, multivariate_normal, norm, gamma, wishart."""
    k, d = p.mu.shape
    a, mu, cov = p.alpha.numpy(), p.mu.numpy(), p.cov.numpy()
    m0, w0, w0_inv, beta0, nu0 = prior.m0.numpy(), prior.W0.numpy(), prior.W0_inv.numpy(), prior.beta0, prior.nu0
    total = stats.dirichlet(np.full(k, prior.alpha0)).logpdf(a[:-1] / a.sum() if False else a) if k > 1 else 0.0
    if covariance_type in ("full", "tied"):
        lams = [np.linalg.inv(c) for c in cov]
        for j in range(k):
            total += stats.multivariate_normal(m0, np.linalg.inv(beta0 * lams[j])).logpdf(mu[j])
        for lam in lams if covariance_type == "full" else lams[:1]:
            total += stats.wishart(df=nu0, scale=w0).logpdf(lam)
        return total
    var = np.diagonal(cov, axis1=1, axis2=2)
    total += stats.norm(m0, np.sqrt(var / beta0)).logpdf(mu).sum()
    if covariance_type == "diag":
        return total + stats.gamma(nu0 / 2, scale=2 / np.diag(w0_inv)).logpdf(1 / var).sum()
    return total + stats.gamma(d * nu0 / 2, scale=2 / np.trace(w0_inv)).logpdf(1 / var[:, 0]).sum()


@pytest.mark.parametrize("covariance_type", TYPES)
def test_log_prior_equals_scipy(faithful, covariance_type):
    x = _x(faithful)
    for k in (1, 3):
        gamma = random_gamma(len(x), k, seed=k)
        p = map_m_step(x, gamma, PRIOR, covariance_type=covariance_type)  # a point with the type's structure
        got = float(log_prior(p, PRIOR, covariance_type))
        assert got == pytest.approx(_scipy_log_prior(p, PRIOR, covariance_type), rel=1e-12, abs=1e-10)
    with pytest.raises(ValueError, match="needs diagonal"):
        log_prior(map_m_step(x, gamma, PRIOR), PRIOR, "diag")
    if covariance_type == "spherical":
        with pytest.raises(ValueError, match="multiple of I"):
            log_prior(map_m_step(x, gamma, PRIOR, covariance_type="diag"), PRIOR, "spherical")
    if covariance_type == "tied":
        with pytest.raises(ValueError, match="one covariance shared"):
            log_prior(map_m_step(x, gamma, PRIOR), PRIOR, "tied")


@pytest.mark.parametrize("covariance_type", TYPES)
def test_fit_reaches_the_posterior_mode_and_the_trace_is_monotone(faithful, covariance_type):
    """The converged fit is a stationary point of the independent log posterior that L-BFGS cannot
    improve; .elbo[-1] is that log posterior; the trace never decreases; γ and eq. 26 are the E-step."""
    x = _x(faithful, 3)
    k = 2
    prior = pg.default_prior(x, k)
    fit = pg.fit_map(x, k, prior, covariance_type=covariance_type, seed=0, tol=1e-13, max_iter=500)
    assert fit.covariance_type == covariance_type and fit.converged and len(fit.elbo) == fit.n_iter + 1
    assert bool((torch.diff(fit.elbo) >= -1e-9 * fit.elbo.abs()[1:]).all())
    f = lambda u: map_objective_td(u, x, prior, k, covariance_type)
    u = map_pack(fit.params, covariance_type)
    assert float(fit.elbo[-1]) == pytest.approx(float(f(u)), abs=1e-9)
    assert float(_grad(f, u).abs().max()) < 1e-6
    assert float(f(lbfgs_max(f, u + 0.05, rounds=1))) <= float(fit.elbo[-1]) + 1e-9
    lp = torch.tensor(fit.info["log_prior"], dtype=torch.float64)
    assert float(lp[-1]) == pytest.approx(_scipy_log_prior(fit.params, prior, covariance_type), rel=1e-12)
    assert abs(float(fit.kl_gap[-1])) < 1e-8 and bool((fit.kl_gap >= -1e-8).all())
    torch.testing.assert_close(fit.gamma, pg.e_step(x, fit.params), rtol=0, atol=1e-13)
    assert float(fit.log_likelihood[-1]) == pytest.approx(float(pg.log_likelihood(x, fit.params)), rel=1e-13)


@pytest.mark.parametrize("covariance_type", ("diag", "spherical", "tied"))
def test_empty_component_recovers_to_the_prior_mode(faithful, covariance_type):
    """A component with γ = 0: μ_k = m0 and the type's prior mode; α_k = (alpha0 − 1)/(N + K(alpha0 − 1))."""
    x = _x(faithful, 1)
    n, d = x.shape
    prior = NormalWishartPrior(2.0, [0.5, -0.5], 0.1, 5.0, [[2.0, 0.3], [0.3, 1.0]])
    cov0 = torch.eye(2, dtype=torch.float64).repeat(3, 1, 1) * 0.3
    init = pg.GMMParams([0.5, 0.49, 0.01], [[-1.0, -1.0], [1.0, 1.0], [1e4, 1e4]], cov0)
    assert float(pg.e_step(x, init)[:, 2].max()) == 0.0
    fit = pg.fit_map(x, 3, prior, init=init, covariance_type=covariance_type, max_iter=1, tol=0)
    torch.testing.assert_close(fit.params.mu[2], prior.m0, rtol=0, atol=0)
    w0_inv = prior.W0_inv
    if covariance_type == "diag":
        expect = torch.diag(torch.diagonal(w0_inv) / (5.0 - 1))  # Gamma mode with the ½ of the mean factor
    elif covariance_type == "spherical":
        expect = torch.eye(d, dtype=torch.float64) * torch.trace(w0_inv) / (d * (5.0 + 1) - 2)
    else:  # tied: the empty component shares Σ; check it against the oracle's mode from the same γ
        expect = map_m_step(x, pg.e_step(x, init), prior, covariance_type="tied").cov[2]
    torch.testing.assert_close(fit.params.cov[2], expect, rtol=1e-12, atol=0)
    assert float(fit.params.alpha[2]) == pytest.approx((2.0 - 1) / (n + 3 * (2.0 - 1)), rel=1e-12)
    longer = pg.fit_map(x, 3, prior, init=init, covariance_type=covariance_type, max_iter=30, tol=0)
    assert bool(torch.isfinite(longer.elbo).all()) and bool((torch.diff(longer.elbo) >= -1e-9).all())


@pytest.mark.parametrize("covariance_type", TYPES)
def test_integer_weights_equal_repeated_rows(faithful, covariance_type):
    x = _x(faithful, 2)
    w = _weights(len(x), seed=1)
    w[0] = 3.0  # at least one repeat
    rep = torch.repeat_interleave(x, w.long(), dim=0)
    init = pg.fit_map(x, 2, covariance_type=covariance_type, seed=0, max_iter=2, tol=0).params
    prior = pg.default_prior(x, 2)
    kw = {"init": init, "covariance_type": covariance_type, "max_iter": 25, "tol": 0}
    a = pg.fit_map(x, 2, prior, sample_weight=w, **kw)
    b = pg.fit_map(rep, 2, prior, **kw)
    assert a.params.allclose(b.params, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a.elbo, b.elbo, rtol=1e-10, atol=0)
    torch.testing.assert_close(a.log_likelihood, b.log_likelihood, rtol=1e-10, atol=0)
    torch.testing.assert_close(torch.tensor(a.info["log_prior"]), torch.tensor(b.info["log_prior"]), rtol=1e-10, atol=0)
    # a zero weight is the row removed (the rest weighted 1)
    w01 = torch.ones(len(x), dtype=torch.float64)
    w01[[3, 10, 11]] = 0.0
    c = pg.fit_map(x, 2, prior, sample_weight=w01, **kw)
    d = pg.fit_map(x[w01 > 0], 2, prior, **kw)
    assert c.params.allclose(d.params, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(c.elbo, d.elbo, rtol=1e-10, atol=0)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_scale_equivariance(faithful, covariance_type):
    """Data × 2^300 (fit in scaled coordinates): μ, Σ scale exactly and .elbo / info["log_prior"]
    move by −N D ln s and by the type's Jacobian power, checked by the independent objective."""
    x = _x(faithful, 4)
    s = 2.0**300
    prior = pg.default_prior(x, 2)
    big_prior = NormalWishartPrior(prior.alpha0, prior.m0 * s, prior.beta0, prior.nu0, prior.W0 / s**2)
    kw = {"covariance_type": covariance_type, "seed": 1, "max_iter": 20, "tol": 0}
    a = pg.fit_map(x, 2, prior, **kw)
    b = pg.fit_map(x * s, 2, big_prior, **kw)
    torch.testing.assert_close(b.params.mu / s, a.params.mu, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(b.params.cov / s**2, a.params.cov, rtol=1e-12, atol=1e-13)
    n, d, k = len(x), 2, 2
    dof = {"full": k * d * (d + 1) // 2, "diag": k * d, "spherical": k, "tied": d * (d + 1) // 2}[covariance_type]
    lp_shift = (2 * dof - k * d) * math.log(s)  # +2 ln s per precision entry, −ln s per mean entry
    lp_a, lp_b = a.info["log_prior"][-1], b.info["log_prior"][-1]
    assert lp_b == pytest.approx(lp_a + lp_shift, rel=1e-12)
    assert float(b.elbo[-1]) == pytest.approx(float(a.elbo[-1]) - n * d * math.log(s) + lp_shift, rel=1e-12)


@pytest.mark.parametrize(
    "prior, kwargs, match",
    [
        (NormalWishartPrior(1.0, [0.0], 1.0, 0.8, 1.0), {"covariance_type": "diag"}, "needs nu0 > 1"),
        (NormalWishartPrior(1.0, [0.0], 1.0, 0.8, 1.0), {"covariance_type": "spherical"}, "nu0 > 2/D − 1 = 1"),
        (NormalWishartPrior(1.0, [0.0], 1.0, 0.8, 1.0), {"covariance_type": "full"}, "nu0 > D = 1"),
        (
            NormalWishartPrior(1.0, [0.0, 0.0], 1.0, 1.2, np.eye(2)),
            {"covariance_type": "tied", "sample_weight": np.r_[0.5, np.zeros(271)]},
            r"nu0 \+ N \+ K − D − 1 > 0 \(N = 0.5",
        ),
        (NormalWishartPrior(1.0, [0.0, 0.0, 0.0], 1.0, 4.0, np.eye(3)), {"covariance_type": "diag"}, "3-dimensional"),
        (None, {"covariance_type": "diag", "init": pg.GMMParams([1.0], [[0, 0]], [[[2, 0.1], [0.1, 1]]])}, "diagonal"),
        (None, {"covariance_type": "spherical", "init": pg.GMMParams([1.0], [[0, 0]], [np.diag([2, 1])])}, "of I"),
        (
            None,
            {"covariance_type": "tied", "init": pg.GMMParams([0.5, 0.5], [[0, 0], [1, 1]], [np.eye(2), 2 * np.eye(2)])},
            "one covariance shared",
        ),
        (None, {"sample_weight": np.full(272, np.nan)}, "sample_weight has 272 invalid entries"),
        (None, {"sample_weight": np.zeros(272)}, "sample_weight sums to 0"),
        (None, {"sample_weight": np.ones((272, 1))}, "sample_weight must be 1-D"),
    ],
)
def test_prior_type_mismatch_and_bad_weights_are_refused(faithful, prior, kwargs, match):
    x = np.asarray(faithful)[:, :1] if prior is not None and prior.d == 1 else faithful
    k = kwargs["init"].k if "init" in kwargs else (1 if "sample_weight" in kwargs and prior is not None else 2)
    with pytest.raises(ValueError, match=match):
        pg.fit_map(x, k, prior, **kwargs)


# --- any data source (issue 10): the engine's passes, block by block ----------------------------------
@pytest.fixture(scope="module")
def far_blobs():
    """600 rows, D = 2, three clusters offset 1e3 from the origin (centring matters); weights 0..2."""
    rng = np.random.default_rng(3)
    centres = rng.normal(scale=3.0, size=(3, 2)) + 1e3
    x = np.concatenate([rng.normal(size=(200, 2)) * [1.0, 0.5] + c for c in centres])
    return x, rng.integers(0, 3, size=len(x)).astype(np.float64)


def _close(a, b, rtol=1e-10):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    err = float((a - b).abs().max())
    assert err <= rtol * float(b.abs().max()), f"max |Δ| = {err:.3g} vs max |ref| = {float(b.abs().max()):.3g}"


@pytest.mark.parametrize("covariance_type", TYPES)
def test_every_source_gives_the_in_memory_fit(far_blobs, covariance_type, tmp_path, monkeypatch):
    """.npy path, memmap, sliced dataset and Dask (threaded scheduler), with and without weights,
    in blocks of 97 rows on 2 worker threads: the in-memory fit (default prior included) to 1e-10."""
    from ppl_gmm.inference import _engine

    da = pytest.importorskip("dask.array")
    monkeypatch.setattr(_engine, "TASK_BLOCKS", 2)
    monkeypatch.setattr(_engine, "block_rows", lambda n, k, d: 97)
    monkeypatch.setattr("ppl_gmm.inference.map.PARALLEL_WORK", 0)  # the pool even for this small fit
    x, w = far_blobs
    path = tmp_path / "x.npy"
    np.save(path, x)
    kw = {"covariance_type": covariance_type, "seed": 4, "max_iter": 12, "tol": 0, "threads": 2}
    for weights in (None, w):
        ref = pg.fit_map(x, 3, sample_weight=weights, **kw)
        assert ref.gamma.shape == (600, 3)
        sources = {
            "npy": path,
            "memmap": np.load(path, mmap_mode="r"),
            "sliced": Rows(x),
            "dask": da.from_array(x, chunks=(150, 2)),
        }
        for kind, src in sources.items():
            fit = pg.fit_map(src, 3, sample_weight=weights, **kw)
            assert fit.gamma is None, kind
            for name in ("alpha", "mu", "cov"):
                _close(getattr(fit.params, name), getattr(ref.params, name))
            _close(fit.elbo, ref.elbo)
            _close(torch.tensor(fit.info["log_prior"]), torch.tensor(ref.info["log_prior"]))
            assert fit.info["prior"] == ref.info["prior"] and fit.n_iter == ref.n_iter == 12


def test_weighted_default_prior_is_the_default_prior_of_repeated_rows(far_blobs, tmp_path):
    from ppl_gmm.core.priors import default_prior_source
    from ppl_gmm.core.sources import as_source

    x, w = far_blobs
    rep = np.repeat(x, w.astype(int), axis=0)
    ref = pg.default_prior(rep, 3)
    path = tmp_path / "x.npy"
    np.save(path, x)
    for src in (as_source(x, w), as_source(path, w), as_source(x)):
        got = default_prior_source(src, 3)
        want = ref if src.weighted else pg.default_prior(x, 3)
        torch.testing.assert_close(got.m0, want.m0, rtol=1e-13, atol=0)
        torch.testing.assert_close(got.W0, want.W0, rtol=1e-10, atol=0)
        assert (got.alpha0, got.beta0, got.nu0) == (want.alpha0, want.beta0, want.nu0)
    # scaled by a power of two: the default prior of x · 2^-10
    got = default_prior_source(as_source(path), 3, 2.0**-10)
    torch.testing.assert_close(got.m0, pg.default_prior(x, 3).m0 * 2.0**-10, rtol=1e-13, atol=0)
    torch.testing.assert_close(got.W0, pg.default_prior(x, 3).W0 * 2.0**20, rtol=1e-10, atol=0)
