"""core.sources: every kind of data source gives the in-memory rows, and bad input is refused before
any work (the oracle throughout is the numpy array the source was made from)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ppl_gmm as pg
from ppl_gmm.core import init as init_module
from ppl_gmm.core import sources
from ppl_gmm.core.init import initial_params, initial_params_source
from ppl_gmm.core.sources import Source, as_source, check_sample_weight
from ppl_gmm.core.validation import as_data, data_scale

da = pytest.importorskip("dask.array")

N, D = 523, 3


class Sliced:
    """A minimal h5py/zarr-like dataset: 2-D shape, dtype, row slicing; records every read."""

    def __init__(self, a: np.ndarray) -> None:
        self.a = a
        self.shape = a.shape
        self.dtype = a.dtype
        self.reads: list = []

    def __getitem__(self, key):
        self.reads.append(key)
        if not isinstance(key, slice):
            raise TypeError("rows by slice only")  # exercises the block fallback of take()
        return self.a[key]


class CountingMemmap(np.memmap):
    """A memmap that records the row slices read from it (``__getitem__`` of the top-level view)."""

    log: list = []

    def __getitem__(self, key):
        if isinstance(key, slice):
            CountingMemmap.log.append((key.start, key.stop))
        return np.asarray(super().__getitem__(key))


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(N, D)) * [1.0, 10.0, 0.1] + [5.0, -3.0, 1e3]
    w = rng.integers(0, 4, size=N).astype(float)
    path = tmp_path / "x.npy"
    np.save(path, a)
    return a, w, path


def _kinds(a, path, tmp_path):
    import h5py
    import zarr

    f = h5py.File(tmp_path / "x.h5", "w")
    f["x"] = a
    return {
        "memory": a,
        "tensor": torch.as_tensor(a),
        "npy path": str(path),
        "npy pathlib": path,
        "memmap": np.load(path, mmap_mode="r"),
        "sliced": Sliced(a),
        "h5py": f["x"],
        "zarr": zarr.array(a, chunks=(100, D)),
        "dask": da.from_array(a, chunks=(97, D)),
    }


@pytest.mark.parametrize("weighted", [False, True])
def test_every_kind_gives_the_in_memory_blocks(data, tmp_path, weighted):
    a, w, path = data
    expected_kind = {"memory": "memory", "tensor": "memory", "npy path": "npy", "npy pathlib": "npy"}
    expected_kind |= {"memmap": "npy", "sliced": "sliced", "h5py": "sliced", "zarr": "sliced", "dask": "dask"}
    idx = np.array([0, 3, 4, 100, 250, N - 1])
    for label, x in _kinds(a, path, tmp_path).items():
        src = as_source(x, w if weighted else None)
        want = (expected_kind[label], N, D, torch.float64, weighted)
        assert (src.kind, src.n, src.d, src.dtype, src.weighted) == want
        assert src.total_weight == (w.sum() if weighted else N)
        starts = []
        for blk in src.blocks(100, start=50, stop=N - 5):
            starts.append(blk.start)
            assert torch.equal(blk.x, torch.as_tensor(a[blk.start : blk.start + 100][: len(blk.x)])), label
            if weighted:
                assert blk.w is not None and blk.w.dtype == torch.float64
                assert torch.equal(blk.w, torch.as_tensor(w[blk.start : blk.start + len(blk.x)]))
            else:
                assert blk.w is None
        assert starts == list(range(50, N - 5, 100)), label
        got = src.take(idx)
        assert torch.equal(got.x, torch.as_tensor(a[idx])), label
        if weighted:
            assert torch.equal(got.w, torch.as_tensor(w[idx]))
        s = src.summary
        mean = np.average(a, axis=0, weights=w if weighted else None)
        np.testing.assert_allclose(s.mean.numpy(), mean, rtol=1e-13, atol=0)
        assert torch.equal(s.lo, torch.as_tensor(a.min(0))) and torch.equal(s.hi, torch.as_tensor(a.max(0)))
        assert s.n == N and s.total_weight == src.total_weight
        assert s.scale(1e-6) == data_scale(torch.as_tensor(a), 1e-6)
        assert (src.tensor() is not None) == (src.kind == "memory")
        if src.kind == "dask":
            assert isinstance(src.dask_array, da.Array) and src.dask_array.chunks[0] == x.chunks[0]
            assert (src.dask_weights is not None) == weighted
            if weighted:
                assert src.dask_weights.chunks[0] == x.chunks[0]
                np.testing.assert_array_equal(src.dask_weights.compute(), w)


def test_memory_kind_is_as_data_bit_for_bit(data):
    a, w, _ = data
    for x in (a, a.astype(np.float32), a.tolist(), torch.as_tensor(a[:, 0])):
        src = as_source(x)
        assert torch.equal(src.tensor(), as_data(x)) and src.tensor().dtype == as_data(x).dtype
    src = as_source(a, w)
    assert torch.equal(src.weights_tensor(), torch.as_tensor(w))
    assert as_source(src) is src  # a Source is returned as is
    assert pg.as_source is as_source


def test_float32_and_1d_and_integer_files(tmp_path):
    a = np.arange(12, dtype=np.float32)
    np.save(tmp_path / "f.npy", a)
    src = as_source(tmp_path / "f.npy")
    assert (src.n, src.d, src.dtype) == (12, 1, torch.float32)
    assert torch.equal(src.read(2, 5).x, torch.as_tensor(a[2:5, None]))
    assert as_source(tmp_path / "f.npy", dtype=torch.float64).dtype == torch.float64
    np.save(tmp_path / "i.npy", np.arange(12, dtype=np.int16).reshape(6, 2))
    src = as_source(tmp_path / "i.npy")
    assert src.dtype == torch.float64 and torch.equal(src.read(0, 6).x, torch.arange(12.0).reshape(6, 2).double())


def test_memmap_reads_only_block_sized_slices(data, monkeypatch):
    a, _, path = data
    monkeypatch.setattr(sources, "VALIDATION_BYTES", 8 * D * 64)  # a pass of 64-row blocks
    mm = np.load(path, mmap_mode="r").view(CountingMemmap)
    CountingMemmap.log = []
    src = as_source(mm)
    assert src.kind == "npy"
    assert CountingMemmap.log == [(s, min(s + 64, N)) for s in range(0, N, 64)]  # the pass: each row once
    CountingMemmap.log = []
    for _ in src.blocks(50):
        pass
    assert CountingMemmap.log == [(s, min(s + 50, N)) for s in range(0, N, 50)]


@pytest.mark.parametrize("kind", ["npy", "sliced", "dask"])
def test_nan_in_the_last_chunk_names_its_global_row(data, tmp_path, monkeypatch, kind):
    a, _, _ = data
    monkeypatch.setattr(sources, "VALIDATION_BYTES", 8 * D * 64)
    bad = a.copy()
    bad[N - 2, 1] = np.nan
    bad[N - 1, 0] = -np.inf
    np.save(tmp_path / "bad.npy", bad)
    x = {"npy": tmp_path / "bad.npy", "sliced": Sliced(bad), "dask": da.from_array(bad, chunks=(100, D))}[kind]
    with pytest.raises(ValueError, match=f"in 2 row\\(s\\): {N - 2}, {N - 1} "):
        as_source(x)


@pytest.mark.parametrize(
    "array, match",
    [
        (np.ones((4, 2), dtype=complex), "complex"),
        (np.array([[1, "a"]], dtype=object), "objects"),
        (np.array([["1", "2"]]), "strings"),
        (np.ones((4, 2), dtype=bool), "booleans"),
        (np.ones((4, 2), dtype=np.float16), "float16"),
        (np.zeros(3, dtype=[("a", "f8")]), "records"),
        (np.zeros((4, 2, 2)), "3-D"),
        (np.zeros((0, 2)), "empty"),
        (np.zeros((4, 0)), "no columns"),
        (np.asfortranarray(np.ones((4, 2))), "Fortran"),
    ],
)
def test_bad_npy_files_are_refused_before_loading(tmp_path, monkeypatch, array, match):
    path = tmp_path / "bad.npy"
    np.save(path, array, allow_pickle=True)

    def no_load(*args, **kwargs):
        raise AssertionError("np.load called before the header was checked")

    monkeypatch.setattr(np, "load", no_load)
    with pytest.raises((ValueError, TypeError), match=match) as err:
        as_source(path)
    assert str(path) in str(err.value)


def test_not_an_npy_file(tmp_path):
    (tmp_path / "x.csv").write_text("1,2\n3,4\n")
    with pytest.raises(ValueError, match="not a readable .npy file"):
        as_source(tmp_path / "x.csv")
    with pytest.raises(ValueError, match="not an existing .npy file"):
        as_source(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match="not an existing"):
        as_source("abc")


def test_dask_chunked_along_columns_is_refused_before_any_compute(data):
    a, _, _ = data
    calls = []

    def counted(block):
        if block.size:  # (dask calls it once on an empty "meta" block at graph construction)
            calls.append(block.shape)
        return block

    x = da.from_array(a, chunks=(100, 1)).map_blocks(counted, dtype=a.dtype)
    with pytest.raises(ValueError, match="chunked along columns"):
        as_source(x)
    assert calls == []
    with pytest.raises(TypeError, match="complex"):
        as_source(da.ones((4, 2), dtype=complex))


WEIGHT_CASES = [
    (np.ones(N - 1), ValueError, "has 522 entries but the data have N = 523"),
    (np.ones((N, 1)), ValueError, "must be 1-D"),
    (np.r_[np.ones(N - 1), -1.0], ValueError, f"row {N - 1}, negative"),
    (np.r_[np.ones(N - 1), np.nan], ValueError, f"row {N - 1}, NaN"),
    (np.r_[np.ones(N - 1), np.inf], ValueError, f"row {N - 1}, infinite"),
    (np.zeros(N), ValueError, "sums to 0"),
    (np.array(["1"] * N), TypeError, "real numbers"),
    (torch.ones(N, dtype=torch.bool), TypeError, "real numbers"),
    (np.full(N, 1e308), ValueError, "past float64's range"),
]


@pytest.mark.parametrize("w, err, match", WEIGHT_CASES)
def test_bad_weights_are_refused_before_any_read(data, w, err, match):
    a, _, _ = data
    with pytest.raises(err, match=match) as e:
        check_sample_weight(w, N)
    assert "sample_weight" in str(e.value)
    for x in (a, Sliced(a), da.from_array(a, chunks=(100, D))):
        with pytest.raises(err, match=match):
            as_source(x, w)
        if isinstance(x, Sliced):
            assert x.reads == []  # refused before the validation pass read any row


def test_chunked_weights_are_checked_in_the_pass(data, tmp_path, monkeypatch):
    a, w, path = data
    monkeypatch.setattr(sources, "VALIDATION_BYTES", 8 * D * 64)
    np.save(tmp_path / "w.npy", w)
    src = as_source(path, tmp_path / "w.npy")
    assert src.weights_tensor() is None and src.total_weight == w.sum()
    assert torch.equal(torch.cat([b.w for b in src.blocks(128)]), torch.as_tensor(w))
    bad = w.copy()
    bad[N - 3] = -2.0
    np.save(tmp_path / "w.npy", bad)
    with pytest.raises(ValueError, match=f"row {N - 3}, negative"):
        as_source(path, tmp_path / "w.npy")
    with pytest.raises(ValueError, match=f"row {N - 3}, negative"):
        as_source(da.from_array(a, chunks=(100, D)), da.from_array(bad, chunks=50))
    src = as_source(da.from_array(a, chunks=(100, D)), da.from_array(w, chunks=50))
    assert src.dask_weights.chunks == (src.dask_array.chunks[0],)
    assert torch.equal(torch.cat([b.w for b in src.blocks(128)]), torch.as_tensor(w))
    with pytest.raises(ValueError, match="has 10 entries"):
        as_source(path, np.load(tmp_path / "w.npy", mmap_mode="r")[:10])


def test_a_source_with_weights_or_another_dtype_is_not_rewrapped(data):
    a, w, _ = data
    src = as_source(a)
    with pytest.raises(ValueError, match="pass sample_weight when building"):
        as_source(src, w)
    with pytest.raises(ValueError, match="already carries weights"):
        as_source(as_source(a, w), w)
    with pytest.raises(ValueError, match="dtype"):
        as_source(src, dtype=torch.float32)
    assert isinstance(src, Source) and "memory" in repr(src)


# --- the start for every source (core.init.initial_params_source) -------------------------------------
@pytest.mark.parametrize("init", ["kmeans++", "random"])
@pytest.mark.parametrize("cov_type", ["full", "diag", "spherical", "tied"])
def test_small_in_memory_start_is_initial_params_bit_for_bit(data, init, cov_type):
    a, _, _ = data
    x = torch.as_tensor(a)
    got = initial_params_source(as_source(a), 3, init, 7, cov_type, 1e-6)
    want = initial_params(x, 3, init, 7, cov_type, 1e-6)
    for g, h in zip((got.alpha, got.mu, got.cov), (want.alpha, want.mu, want.cov)):
        assert torch.equal(g, h)


@pytest.mark.parametrize("weighted", [False, True])
def test_large_data_start_on_the_same_seeded_sample_for_every_kind(data, tmp_path, monkeypatch, weighted):
    a, w, path = data
    monkeypatch.setattr(init_module, "INIT_SAMPLE", 100)
    idx = np.sort(np.random.default_rng(11).choice(N, 100, replace=False))  # the documented sample
    sw = torch.as_tensor(w[idx]) if weighted else None
    want = initial_params(torch.as_tensor(a[idx]), 3, "kmeans++", 11, "full", 1e-6, sample_weight=sw)
    for label, x in _kinds(a, path, tmp_path).items():
        got = initial_params_source(as_source(x, w if weighted else None), 3, "kmeans++", 11, "full", 1e-6)
        for g, h in zip((got.alpha, got.mu, got.cov), (want.alpha, want.mu, want.cov)):
            assert torch.equal(g, h), label
    given = initial_params(torch.as_tensor(a), 3, "random", 0)
    from_file = initial_params_source(as_source(str(path)), 3, given, 0)  # a given Θ₀ is used as given
    assert torch.equal(from_file.mu, given.mu) and torch.equal(from_file.cov, given.cov)
    with pytest.raises(ValueError, match="K = 3, D = 3 but the fit asks for K = 2"):
        initial_params_source(as_source(str(path)), 2, given, 0)


def test_start_sample_with_only_zero_weights_is_refused(data, monkeypatch):
    a, _, _ = data
    monkeypatch.setattr(init_module, "INIT_SAMPLE", 10)
    w = np.zeros(N)
    w[np.setdiff1d(np.arange(N), init_module.init_sample_indices(N, 0))[0]] = 1.0
    with pytest.raises(ValueError, match="has weight 0"):
        initial_params_source(as_source(a, w), 2, "kmeans++", 0)


def test_device_is_checked_and_followed(data, tmp_path):
    a, w, path = data
    with pytest.raises(ValueError, match="not a torch device"):
        as_source(a, device="bogus")
    with pytest.raises(TypeError, match="device must be"):
        as_source(path, device=3)
    assert as_source(path, device="cpu").read(0, 3).x.device == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_blocks_move_to_cuda(data, tmp_path):  # pragma: no cover - needs a GPU
    a, w, path = data
    for x in (a, path, da.from_array(a, chunks=(100, D))):
        blk = as_source(x, w, device="cuda").read(0, 10)
        assert blk.x.is_cuda and blk.w.is_cuda
        assert torch.equal(blk.x.cpu(), torch.as_tensor(a[:10]))


def test_fortran_memmap_and_1d_chunked_kinds(data, tmp_path):
    a, _, _ = data
    mm = np.memmap(tmp_path / "f.dat", dtype=np.float64, mode="w+", shape=(N, D), order="F")
    mm[:] = a
    with pytest.raises(ValueError, match="not in C \\(row-major\\) order"):
        as_source(mm)
    col = a[:, 1].copy()
    for x in (
        Sliced(col),
        da.from_array(col, chunks=100),
        np.memmap(tmp_path / "c.dat", dtype=np.float64, mode="w+", shape=(N,)),
    ):
        if isinstance(x, np.memmap):
            x[:] = col
        src = as_source(x)
        assert (src.n, src.d) == (N, 1)
        assert torch.equal(torch.cat([b.x for b in src.blocks(64)]), torch.as_tensor(col[:, None]))
