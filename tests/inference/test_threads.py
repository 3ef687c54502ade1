"""Fits called from several Python threads at once give the bits of the same calls made one after
another, and leave the caller's global generators as they were.

Pyro's parameter store and effect-handler stack and torch's global generator are process-global:
the Pyro fits (fit_svi, fit_svi_bayes, fit_nuts) hold ``core.rng.GLOBAL_STATE_LOCK`` for the whole
fit. fit_cavi and fit_vb draw from their own generators and run concurrently without it."""

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import ppl_gmm as pg

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),  # conftest: small problems, one torch thread
    # tiny runs: NUTS' divergences, singular Wishart draws; not filtered per thread, because
    # warnings.catch_warnings is process-global and not thread-safe
    pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::UserWarning"),
]

SEEDS = (0, 1, 2, 3)
TIMEOUT = 300  # seconds: a deadlock fails the test instead of hanging the suite


@pytest.fixture(scope="module")
def data():
    x = pg.datasets.load_galaxies()
    return x, pg.default_prior(x, 2)


def _gmm_bits(fit):
    p = fit.params
    return [fit.elbo, p.alpha, p.mu, p.cov, fit.gamma]


def _vb_bits(fit):
    q = fit.posterior
    return [fit.elbo, q.alpha, q.m, q.beta, q.nu, q.W, fit.gamma]


def _nuts_bits(idata):
    return [idata.posterior[v].values for v in ("alpha", "mu", "cov")] + [idata.sample_stats["lp"].values]


FITS = {
    "fit_svi": lambda d, s: _gmm_bits(pg.fit_svi(d[0], 2, seed=s, num_steps=15)),
    "fit_svi_natural": lambda d, s: _gmm_bits(pg.fit_svi(d[0], 2, seed=s, num_steps=5, local_updates="natural")),
    "fit_svi_bayes": lambda d, s: _vb_bits(pg.fit_svi_bayes(d[0], 2, d[1], seed=s, num_steps=10)),
    "fit_nuts": lambda d, s: _nuts_bits(
        pg.fit_nuts(d[0], 2, d[1], seed=s, num_samples=5, warmup_steps=5, max_tree_depth=3, jit=False)
    ),
    "fit_cavi": lambda d, s: _gmm_bits(pg.fit_cavi(d[0], 2, seed=s, init="random")),
    "fit_vb": lambda d, s: _vb_bits(pg.fit_vb(d[0], 2, d[1], seed=s, init="random")),
}


def _call(name, data, seed):
    return [v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for v in FITS[name](data, seed)]


def _global_states():
    return torch.random.get_rng_state(), np.random.get_state(), random.getstate()  # noqa: NPY002


def _assert_same_states(before, after):
    assert torch.equal(before[0], after[0]), "torch's global generator changed"
    assert before[1][0] == after[1][0] and np.array_equal(before[1][1], after[1][1]) and before[1][2:] == after[1][2:]
    assert before[2] == after[2], "Python's random generator changed"


def _concurrently(jobs):
    """Run the zero-argument ``jobs`` in as many threads, released together; their results in order."""
    barrier = threading.Barrier(len(jobs))

    def run(job):
        barrier.wait()
        return job()

    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(run, job) for job in jobs]
        return [f.result(timeout=TIMEOUT) for f in futures]


def _assert_bit_identical(a, b, what):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert u.shape == v.shape and u.dtype == v.dtype, what
        np.testing.assert_array_equal(u, v, err_msg=what)


@pytest.mark.parametrize("name", sorted(FITS))
def test_four_threads_give_the_bits_of_sequential_calls(data, name):
    sequential = [_call(name, data, s) for s in SEEDS]
    torch.manual_seed(123)
    np.random.seed(123)  # noqa: NPY002
    random.seed(123)
    before = _global_states()
    concurrent = _concurrently([lambda s=s: _call(name, data, s) for s in SEEDS])
    _assert_same_states(before, _global_states())
    for s, seq, par in zip(SEEDS, sequential, concurrent):
        _assert_bit_identical(seq, par, f"{name}, seed {s}: a threaded call differs from the sequential one")


def test_different_fits_at_once_do_not_disturb_each_other(data):
    names = sorted(FITS)
    sequential = [_call(name, data, 7) for name in names]
    before = _global_states()
    concurrent = _concurrently([lambda n=n: _call(n, data, 7) for n in names])
    _assert_same_states(before, _global_states())
    for name, seq, par in zip(names, sequential, concurrent):
        _assert_bit_identical(seq, par, f"{name} run beside the other fits differs from its sequential call")


# --- fit_cavi's worker pool (inference._passes) -----------------------------------------------------
def _spy_kernel(monkeypatch):
    """Record (thread name, torch thread count) for every block the fused kernel runs."""
    from ppl_gmm.inference import _engine

    seen = []
    real = _engine._Kernel.run

    def run(self, *args, **kwargs):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(_engine._Kernel, "run", run)
    return seen


def test_large_passes_run_on_the_pool_with_one_torch_thread_each(monkeypatch):
    """Work above PARALLEL_WORK: whole tasks on ``threads`` pool workers, each on one torch thread;
    the caller's torch thread count is what it was afterwards (also after an error)."""
    from ppl_gmm.inference import _engine

    monkeypatch.setattr(_engine, "TASK_BLOCKS", 1)
    monkeypatch.setattr(_engine, "block_rows", lambda n, k, d: 64)
    monkeypatch.setattr("ppl_gmm.inference.cavi.PARALLEL_WORK", 0)
    x = pg.datasets.load_old_faithful()  # 272 rows: 5 tasks of 64 rows
    seen = _spy_kernel(monkeypatch)
    torch.set_num_threads(2)
    fit = pg.fit_cavi(x, 2, seed=0, max_iter=3, tol=0, threads=2)
    assert torch.get_num_threads() == 2
    assert {n for n, _ in seen} <= {f"ppl_gmm_{i}" for i in range(2)} and len(seen) == 5 * 4
    assert {t for _, t in seen} == {1}
    ref = pg.fit_cavi(x, 2, seed=0, max_iter=3, tol=0, threads=1)  # the same tasks in the calling thread
    assert torch.equal(fit.params.cov, ref.params.cov) and torch.equal(fit.elbo, ref.elbo)
    with pytest.raises(pg.EmptyComponentError):  # far init: a component empties during the fit
        far = pg.GMMParams(fit.params.alpha, fit.params.mu + torch.tensor([[0.0, 0.0], [1e4, 1e4]]), fit.params.cov)
        pg.fit_cavi(x, 2, init=far, max_iter=3, threads=2, reg_covar=0.0)
    assert torch.get_num_threads() == 2


def test_small_fits_stay_in_the_calling_thread(monkeypatch):
    seen = _spy_kernel(monkeypatch)
    torch.set_num_threads(2)
    pg.fit_cavi(pg.datasets.load_old_faithful(), 2, seed=0, max_iter=3, tol=0)  # N·K·D < PARALLEL_WORK
    assert torch.get_num_threads() == 2
    assert {n for n, _ in seen} == {threading.current_thread().name} and {t for _, t in seen} == {1}
