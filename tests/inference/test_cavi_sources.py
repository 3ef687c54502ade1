"""fit_cavi over every data source (issue 10, item 1): a ``.npy`` path, a ``numpy.memmap`` and a
sliceable dataset are read block by block and give the in-memory fit to 1e-10 (same start, same
iterations; the in-memory fit is itself checked against the plain reference loop in
test_cavi.py); the worker pool splits the rows into fixed tasks, so the answer does not depend on
the number of threads (bit for bit) and equals the plain loop over the public functions
(tests/oracles.py ``reference_fit``); bad data in a late chunk is refused before the fit starts;
``device=`` (a CUDA run where a GPU exists). The Dask source: test_cavi_dask.py."""

import numpy as np
import pytest
import torch

import ppl_gmm as pg
from ppl_gmm.core import init as core_init
from ppl_gmm.inference import _engine

from oracles import Rows, assert_rel_close, assert_same_fit, reference_fit

COV_TYPES = ("full", "diag", "spherical", "tied")

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: small problems, one torch thread


@pytest.fixture(scope="module")
def blobs():
    """1500 rows, D = 3, from three clusters offset far from the origin (centring matters)."""
    rng = np.random.default_rng(3)
    centres = rng.normal(scale=4.0, size=(3, 3)) + 1e3
    return np.concatenate([rng.normal(size=(500, 3)) * [1.0, 0.5, 2.0] + c for c in centres])


@pytest.fixture(scope="module")
def start(blobs):
    return pg.fit_cavi(blobs, 3, seed=0, max_iter=0).params  # Θ₀ (k-means++ + one M-step)


@pytest.fixture
def npy(blobs, tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, blobs)
    return path


@pytest.mark.parametrize("covariance_type", COV_TYPES)
@pytest.mark.parametrize("kind", ["npy-path", "memmap", "sliced"])
def test_chunked_sources_give_the_in_memory_fit(blobs, start, npy, kind, covariance_type):
    x = {"npy-path": npy, "memmap": np.load(npy, mmap_mode="r"), "sliced": Rows(blobs)}[kind]
    ref = pg.fit_cavi(blobs, 3, init=start, covariance_type=covariance_type, max_iter=15, tol=0)
    fit = pg.fit_cavi(x, 3, init=start, covariance_type=covariance_type, max_iter=15, tol=0)
    assert_same_fit(fit, ref)
    assert fit.gamma is None and ref.gamma.shape == (1500, 3)  # out of core: γ is not materialised
    if kind == "sliced":  # read block by block: 1 + 16 passes of one block each, and the validation pass
        assert x.reads <= 3 * (15 + 2)


def test_float32_npy_gives_the_float32_in_memory_fit(blobs, start, tmp_path):
    path = tmp_path / "x32.npy"
    np.save(path, blobs.astype(np.float32))
    ref = pg.fit_cavi(blobs.astype(np.float32), 3, init=start, max_iter=10, tol=0)
    fit = pg.fit_cavi(path, 3, init=start, max_iter=10, tol=0)
    assert fit.params.dtype == ref.params.dtype == torch.float32
    assert_rel_close(fit.params.mu, ref.params.mu, 1e-6)  # float32: a different shift rounds differently
    assert_rel_close(fit.elbo, ref.elbo, 1e-6)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_tasks_and_threads_do_not_change_the_bits(blobs, start, npy, covariance_type, monkeypatch):
    """Rows split into tasks of 2 blocks of 97 rows (8 tasks): 1, 2 and 3 worker threads give the
    same bits, from memory and from the .npy file, and the plain reference loop to 1e-10."""
    monkeypatch.setattr(_engine, "TASK_BLOCKS", 2)
    monkeypatch.setattr(_engine, "block_rows", lambda n, k, d: 97)
    monkeypatch.setattr("ppl_gmm.inference.cavi.PARALLEL_WORK", 0)  # the pool even for this small fit
    kw = {"init": start, "covariance_type": covariance_type, "max_iter": 12, "tol": 0}
    fits = {t: pg.fit_cavi(blobs, 3, threads=t, **kw) for t in (1, 2, 3)}
    for t in (2, 3):
        for name in ("alpha", "mu", "cov"):
            assert torch.equal(getattr(fits[t].params, name), getattr(fits[1].params, name)), (t, name)
        assert torch.equal(fits[t].elbo, fits[1].elbo) and torch.equal(fits[t].gamma, fits[1].gamma)
    from_file = pg.fit_cavi(npy, 3, threads=2, **kw)
    assert_same_fit(from_file, fits[1])
    # the reference loop does not centre: run it on the data moved to the origin (eq. 18–21 are
    # translation-equivariant), so that its own round-off stays below 1e-10
    moved = pg.GMMParams(start.alpha, start.mu - 1e3, start.cov)
    ref = reference_fit(blobs - 1e3, moved, covariance_type=covariance_type, max_iter=12, reg_covar=1e-6)
    assert_rel_close(fits[2].params.mu - 1e3, ref["params"].mu)
    for name in ("alpha", "cov"):
        assert_rel_close(getattr(fits[2].params, name), getattr(ref["params"], name))
    assert_rel_close(fits[2].elbo, torch.tensor(ref["elbo"], dtype=torch.float64))
    assert_rel_close(fits[2].gamma, ref["gamma"])


def test_kmeanspp_start_is_the_same_for_every_source(blobs, npy):
    if not hasattr(core_init, "initial_params_source"):
        pytest.skip("core.init.initial_params_source (engineer E) not there yet")
    ref = pg.fit_cavi(blobs, 3, seed=5, max_iter=5, tol=0)
    for x in (npy, Rows(blobs)):
        assert_same_fit(pg.fit_cavi(x, 3, seed=5, max_iter=5, tol=0), ref)


def test_nan_in_the_last_chunk_is_refused_before_the_fit(blobs, tmp_path, monkeypatch):
    bad = blobs.copy()
    bad[-1, 2] = np.nan
    path = tmp_path / "bad.npy"
    np.save(path, bad)
    calls = []
    monkeypatch.setattr(_engine.Engine, "run_pass", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match="1499"):  # the global row index
        pg.fit_cavi(path, 3, seed=0)
    assert calls == []  # no pass ran


def test_bad_arguments_are_refused_before_the_data_are_read(npy, monkeypatch):
    """A chunked source's validation pass reads the whole file: cheap checks come first."""
    from ppl_gmm.core import sources

    monkeypatch.setattr(sources, "_chunked_source", lambda *a, **k: pytest.fail("the data were read"))
    for kw, name in (({"tol": -1}, "tol"), ({"threads": 0}, "threads"), ({"covariance_type": "ful"}, "ful")):
        with pytest.raises((ValueError, TypeError), match=name):
            pg.fit_cavi(npy, 3, **kw)


def test_device_argument_cpu(blobs, start):
    ref = pg.fit_cavi(blobs, 3, init=start, max_iter=5, tol=0)
    fit = pg.fit_cavi(blobs, 3, init=start, max_iter=5, tol=0, device="cpu")
    assert torch.equal(fit.params.mu, ref.params.mu) and fit.gamma.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_fit_equals_the_cpu_fit(blobs, start, npy):  # pragma: no cover - needs a GPU
    ref = pg.fit_cavi(blobs, 3, init=start, max_iter=10, tol=0)
    for x in (blobs, npy):
        fit = pg.fit_cavi(x, 3, init=start, max_iter=10, tol=0, device="cuda")
        assert_same_fit(fit, ref, rtol=1e-9)
