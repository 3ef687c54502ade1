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
