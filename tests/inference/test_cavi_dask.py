"""fit_cavi on a Dask array (issue 10, item 2): each pass computes the per-chunk statistics where
the chunks live and reduces them in chunk order. Against the in-memory fit (itself checked
against the plain reference loop in test_cavi.py) to 1e-10: on Dask's threaded scheduler (four
covariance types, with weights) and on a two-process ``dask.distributed`` LocalCluster that the
module starts and closes itself (one fixture); the chunk function is shipped to the workers
(only O(K·D²) statistics per chunk come back)."""

import numpy as np
import pytest
import torch

import ppl_gmm as pg
from ppl_gmm.inference import _engine

from oracles import assert_same_fit

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

COV_TYPES = ("full", "diag", "spherical", "tied")

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: small problems, one torch thread


@pytest.fixture(scope="module")
def data():
    """(x, w, Θ₀): 1200 rows, D = 3, offset from the origin; integer weights 0..2."""
    rng = np.random.default_rng(5)
    centres = rng.normal(scale=4.0, size=(3, 3)) - 200.0
    x = np.concatenate([rng.normal(size=(400, 3)) * [1.0, 0.5, 1.5] + c for c in centres])
    w = rng.integers(0, 3, size=len(x)).astype(np.float64)
    return x, w, pg.fit_cavi(x, 3, seed=0, max_iter=0).params


@pytest.fixture(scope="module")
def client():
    """A two-worker LocalCluster of processes (one thread each), closed after the module."""
    with (
        distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_threaded_scheduler_gives_the_in_memory_fit(data, covariance_type):
    x, w, start = data
    kw = {"init": start, "covariance_type": covariance_type, "max_iter": 12, "tol": 0}
    with dask.config.set(scheduler="threads"):
        fit = pg.fit_cavi(da.from_array(x, chunks=(250, 3)), 3, **kw)  # uneven chunks: 4 × 250 + 200
        fit_w = pg.fit_cavi(da.from_array(x, chunks=(250, 3)), 3, sample_weight=da.from_array(w, chunks=300), **kw)
    assert_same_fit(fit, pg.fit_cavi(x, 3, **kw))
    assert_same_fit(fit_w, pg.fit_cavi(x, 3, sample_weight=w, **kw))
    assert fit.gamma is None  # not materialised for Dask data


def test_kmeanspp_start_on_dask_is_the_in_memory_start(data):
    x, _, _ = data
    with dask.config.set(scheduler="threads"):
        fit = pg.fit_cavi(da.from_array(x, chunks=(300, 3)), 3, seed=4, max_iter=5, tol=0)
    assert_same_fit(fit, pg.fit_cavi(x, 3, seed=4, max_iter=5, tol=0))


def test_chunks_are_reduced_in_order(data, monkeypatch):
    """The per-chunk statistics are reduced in chunk order whatever finishes first: the threaded
    scheduler (two threads, then one worker thread asked for) and the serial one give the same bits."""
    x, _, start = data
    arr = da.from_array(x, chunks=(100, 3))
    with dask.config.set(scheduler="threads"):
        a = pg.fit_cavi(arr, 3, init=start, max_iter=6, tol=0)
        b = pg.fit_cavi(arr, 3, init=start, max_iter=6, tol=0, threads=1)
    assert torch.equal(a.params.cov, b.params.cov) and torch.equal(a.elbo, b.elbo)
    calls = []
    real = _engine._dask_chunk

    def spy(shared, xc, wc):
        calls.append(len(xc))
        return real(shared, xc, wc)

    monkeypatch.setattr(_engine, "_dask_chunk", spy)
    with dask.config.set(scheduler="sync"):
        c = pg.fit_cavi(arr, 3, init=start, max_iter=6, tol=0)
    assert torch.equal(c.params.cov, a.params.cov) and torch.equal(c.elbo, a.elbo)
    assert len(calls) == 12 * 7  # 12 chunks per pass: the first E-step, then one per iteration (the last closing)


@pytest.mark.slow
def test_local_cluster_gives_the_in_memory_fit(client, data):
    x, w, start = data
    kw = {"init": start, "covariance_type": "full", "max_iter": 10, "tol": 0}
    arr = da.from_array(x, chunks=(300, 3))
    fit = pg.fit_cavi(arr, 3, **kw)  # the active Client computes the passes
    assert_same_fit(fit, pg.fit_cavi(x, 3, **kw))
    fit_w = pg.fit_cavi(arr, 3, sample_weight=w, **kw)
    assert_same_fit(fit_w, pg.fit_cavi(x, 3, sample_weight=w, **kw))
    assert len(client.scheduler_info()["workers"]) == 2
