"""fit_vb over every data source (issue 10, item 1): a ``.npy`` path, a ``numpy.memmap``, a sliceable
dataset and a Dask array are read block by block (Dask: chunk by chunk where the chunks live) and
give the in-memory fit to 1e-10 relative — same seed, same start (``initial_params_source``), same
iterations — in all four covariance types, both weight priors, with and without frequency
weights. The in-memory fit is itself checked against scikit-learn's BayesianGaussianMixture in
test_vb_types.py / test_vb_weights.py. Independent oracles here: the in-memory fit; the fit on
repeated rows for integer weights; the same fit with 1, 2, 3 worker threads (the same bits).
Also: the exact path (r recomputed from its recipe in two passes), ``fit.gamma is None`` and
``fit.responsibilities(x)``, bad data in the last chunk and bad arguments refused before any pass,
the seeded start sample above 2**16 rows, and a two-process ``dask.distributed`` LocalCluster."""

import numpy as np
import pytest
import torch

import ppl_gmm as pg
from ppl_gmm.inference import _vb_kernel
from ppl_gmm.inference.vb import fit_vb

from oracles import Rows, assert_rel_close

da = pytest.importorskip("dask.array")

COV_TYPES = ("full", "diag", "spherical", "tied")
WEIGHT_PRIORS = ("dirichlet", "dirichlet_process")

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),  # conftest: small problems, one torch thread
    pytest.mark.filterwarnings("ignore::UserWarning"),  # ConvergenceWarning: the fits stop at max_iter
]


@pytest.fixture(scope="module")
def data():
    """(x, w): 600 rows, D = 2, three clusters offset far from the origin; integer weights 0..3."""
    rng = np.random.default_rng(7)
    centres = np.array([[0.0, 0.0], [5.0, 1.0], [1.0, 6.0]]) + 1e3
    x = np.concatenate([rng.normal(size=(200, 2)) * [1.0, 0.6] + c for c in centres])
    return x, rng.integers(0, 4, size=len(x)).astype(np.float64)


@pytest.fixture(scope="module")
def npy(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("vb") / "x.npy"
    np.save(path, data[0])
    return path


def w_inv(post):
    """W_k⁻¹ (PRML 10.62, a sum of weighted squares: well conditioned, unlike W_k itself)."""
    chol = post.W_inv_cholesky
    return chol @ chol.transpose(-1, -2)


def assert_same_vb(fit, ref, rtol=1e-10):
    """Two VBFits agree: the bound trace, every factor of q and the iteration count."""
    assert fit.n_iter == ref.n_iter and fit.converged == ref.converged
    assert_rel_close(fit.elbo, ref.elbo, rtol)
    for name in ("alpha", "beta", "nu", "m"):
        assert_rel_close(getattr(fit.posterior, name), getattr(ref.posterior, name), rtol)
    assert_rel_close(w_inv(fit.posterior), w_inv(ref.posterior), rtol)
    assert (fit.posterior.stick_b is None) == (ref.posterior.stick_b is None)
    if ref.posterior.stick_b is not None:
        assert_rel_close(fit.posterior.stick_b, ref.posterior.stick_b, rtol)
    assert fit.posterior.covariance_type == ref.posterior.covariance_type


def sources(x, path):
    return {
        "npy-path": path,
        "memmap": np.load(path, mmap_mode="r"),
        "sliced": Rows(x),
        "dask": da.from_array(x, chunks=(97, x.shape[1])),  # Dask's threaded scheduler
    }


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("weight_prior", WEIGHT_PRIORS)
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_every_source_gives_the_in_memory_fit(data, npy, covariance_type, weight_prior, weighted):
    x, w = data
    sw = w if weighted else None
    kw = {"covariance_type": covariance_type, "weight_prior": weight_prior, "seed": 3, "max_iter": 12, "tol": 0}
    ref = fit_vb(x, 3, sample_weight=sw, **kw)
    assert ref.gamma.shape == (600, 3)
    for kind, src in sources(x, npy).items():
        sw_kind = da.from_array(w, chunks=97) if (weighted and kind == "dask") else sw
        fit = fit_vb(src, 3, sample_weight=sw_kind, **kw)
        assert fit.gamma is None, kind  # out of core: r (N, K) is not materialised
        assert_same_vb(fit, ref)
        assert fit.prior is not None
        assert_rel_close(fit.prior.m0, ref.prior.m0)  # the default prior, weighted, over the source
        assert_rel_close(fit.prior.W0, ref.prior.W0)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_the_start_is_the_same_for_every_source(data, npy, covariance_type, weighted):
    """max_iter = 0: q after the first M-step from r₀ = e_step(x, Θ₀) (for a source: two passes,
    N_k and Σ r x, then the scatter about m_k) — checked directly, before later iterations could
    wash a difference out (the bound is stationary in q there, so its trace alone would not show it)."""
    x, w = data
    kw = {"covariance_type": covariance_type, "seed": 6, "max_iter": 0, "sample_weight": w if weighted else None}
    ref = fit_vb(x, 3, **kw)
    for src in sources(x, npy).values():
        assert_same_vb(fit_vb(src, 3, **kw), ref)


def test_responsibilities_of_a_source_fit(data, npy):
    x, _ = data
    ref = fit_vb(x, 3, seed=1, max_iter=10, tol=0)
    fit = fit_vb(npy, 3, seed=1, max_iter=10, tol=0)
    assert_rel_close(fit.responsibilities(npy), ref.gamma)  # γ of the returned posterior
    lazy = fit.responsibilities(da.from_array(x, chunks=(150, 2)))
    assert hasattr(lazy, "compute")  # a lazy Dask array
    assert_rel_close(torch.as_tensor(np.asarray(lazy.compute())), ref.gamma)


class _Alternate:
    """``_vb_kernel.spread`` replaced: 0 for the E-step's check (the one-GEMM design E-step), ∞ for
    the M-step's (so every M-step falls back to the exact, two-pass one from that E-step's r)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, st, u):
        self.calls += 1
        return 0.0 if self.calls % 2 else float("inf")


@pytest.mark.parametrize("path", ["exact", "design-then-exact"])
@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_exact_m_step_recomputes_r_from_its_recipe(data, npy, covariance_type, path, monkeypatch):
    """For a source no r is kept: the exact M-step recomputes it (two passes) by the recipe of the
    E-step that made it — the difference-first E-step, or the design E-step — and gives the
    in-memory exact M-step from the stored r (same decisions in both, forced here)."""
    x, w = data
    kw = {"covariance_type": covariance_type, "weight_prior": "dirichlet_process", "seed": 2, "max_iter": 8}
    fits = []
    for src in (x, npy, da.from_array(x, chunks=(128, 2))):
        if path == "exact":
            monkeypatch.setattr(_vb_kernel, "G_EXPANSION_MAX", -1.0)  # every E-step difference-first
        else:
            monkeypatch.setattr(_vb_kernel, "spread", _Alternate())
        fits.append(fit_vb(src, 3, sample_weight=w, tol=0, **kw))
    for fit in fits[1:]:
        assert_same_vb(fit, fits[0])


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_tasks_and_threads_do_not_change_the_bits(data, npy, covariance_type, monkeypatch):
    """Rows split into tasks of 64 rows of 32-row blocks (10 tasks) on 1, 2 and 3 worker threads:
    the same bits (tasks are added in order), and the in-memory fit to 1e-10."""
    x, w = data
    monkeypatch.setattr(_vb_kernel, "TASK_ROWS", 64)
    monkeypatch.setattr(_vb_kernel, "SCAN_ROWS", 32)
    monkeypatch.setattr("ppl_gmm.inference.vb.PARALLEL_WORK", 0)  # the pool even for this small fit
    kw = {"covariance_type": covariance_type, "seed": 4, "max_iter": 10, "tol": 0, "sample_weight": w}
    fits = {t: fit_vb(npy, 3, threads=t, **kw) for t in (1, 2, 3)}
    for t in (2, 3):
        assert torch.equal(fits[t].elbo, fits[1].elbo), t
        for name in ("alpha", "beta", "nu", "m", "W"):
            assert torch.equal(getattr(fits[t].posterior, name), getattr(fits[1].posterior, name)), (t, name)
    assert_same_vb(fits[2], fit_vb(x, 3, **kw))


@pytest.mark.parametrize("weight_prior", WEIGHT_PRIORS)
def test_integer_weights_on_a_source_are_repeated_rows(data, tmp_path, weight_prior):
    """A weighted .npy source (weights 0..3, so zeros remove rows) = the in-memory fit of the
    repeated rows, from the same Θ₀ (the bound, N = Σ w, the default prior: all as repeated rows)."""
    x, w = data
    path = tmp_path / "x.npy"
    np.save(path, x)
    start = pg.fit_cavi(x, 3, seed=0, max_iter=0).params
    kw = {"init": start, "covariance_type": "diag", "weight_prior": weight_prior, "max_iter": 12, "tol": 0}
    fit = fit_vb(path, 3, sample_weight=w, **kw)
    ref = fit_vb(np.repeat(x, w.astype(int), axis=0), 3, **kw)
    assert_same_vb(fit, ref)


def test_a_posterior_init_on_a_source(data, npy):
    """init=VBPosterior: r₀ is its E-step, recomputed block by block for the source."""
    x, _ = data
    q0 = fit_vb(x, 3, seed=0, max_iter=3, tol=0, covariance_type="spherical").posterior
    kw = {"init": q0, "covariance_type": "spherical", "max_iter": 6, "tol": 0}
    assert_same_vb(fit_vb(Rows(x), 3, **kw), fit_vb(x, 3, **kw))


@pytest.mark.slow
def test_the_start_sample_above_init_sample_rows(tmp_path):
    """N > 2**16: the start runs on the same seeded sample of rows for memory and for the file."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(35_000, 2)), rng.normal(size=(35_000, 2)) + [6.0, 0.0]])
    path = tmp_path / "big.npy"
    np.save(path, x)
    kw = {"seed": 9, "max_iter": 3, "tol": 0, "covariance_type": "full"}
    assert_same_vb(fit_vb(path, 2, **kw), fit_vb(x, 2, **kw))


def test_nan_in_the_last_chunk_is_refused_before_any_pass(data, tmp_path, monkeypatch):
    bad = data[0].copy()
    bad[-1, 1] = np.nan
    path = tmp_path / "bad.npy"
    np.save(path, bad)
    monkeypatch.setattr(_vb_kernel, "source_pass", lambda *a, **k: pytest.fail("a pass ran"))
    with pytest.raises(ValueError, match="599"):  # the global row index
        fit_vb(path, 3, seed=0)


def test_bad_arguments_are_refused_before_the_data_are_read(npy, monkeypatch):
    """A chunked source's validation pass reads the whole file: the cheap checks come first."""
    from ppl_gmm.core import sources

    monkeypatch.setattr(sources, "_chunked_source", lambda *a, **k: pytest.fail("the data were read"))
    cases = (
        ({"tol": -1}, "tol"),
        ({"threads": 0}, "threads"),
        ({"covariance_type": "ful"}, "ful"),
        ({"weight_prior": "dp"}, "dp"),
        ({"prior": "default"}, "prior"),
    )
    for kw, name in cases:
        with pytest.raises((ValueError, TypeError), match=name):
            fit_vb(npy, 3, **kw)


@pytest.fixture(scope="module")
def client():
    """A two-worker LocalCluster of processes (one thread each), closed after the module."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.mark.slow
def test_local_cluster_gives_the_in_memory_fit(client, data):
    """The passes run on two worker processes (the chunk function and the recipe are pickled)."""
    x, w = data
    arr = da.from_array(x, chunks=(150, 2))
    for kw in (
        {"covariance_type": "tied", "weight_prior": "dirichlet_process"},
        {"covariance_type": "full", "sample_weight": w},
    ):
        kw |= {"seed": 5, "max_iter": 8, "tol": 0}
        assert_same_vb(fit_vb(arr, 3, **kw), fit_vb(x, 3, **kw))
