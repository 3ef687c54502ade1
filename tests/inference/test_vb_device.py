"""fit_vb's ``device=`` and device-following tensors (issue 10, item 7).

Every tensor a VB pass makes follows the rows' device and dtype; ``device=`` moves each block there
(``core.sources.as_source``), and q(α) q(μ, Λ) is updated on the CPU from the statistics a pass
brings back. Oracles: the fit without ``device=`` (``device="cpu"`` must give the same bits, for
every kind of source and start); the kernel run on PyTorch's ``meta`` device, where an operand left
on the CPU raises or leaves an output on the CPU (so a hard-coded CPU tensor in a pass is caught
without a GPU); and, where a GPU exists, the CPU fit (to 1e-9)."""

import numpy as np
import pytest
import torch

import ppl_gmm as pg
from ppl_gmm.inference import _vb_kernel as kernel

from oracles import assert_rel_close

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),  # conftest: small problems, one torch thread
    pytest.mark.filterwarnings("ignore::UserWarning"),  # ConvergenceWarning: the fits stop at max_iter
]

META = torch.device("meta")
K, D = 3, 2


@pytest.fixture(scope="module")
def data():
    """(x, w): 300 rows, D = 2, three clusters; integer weights 0..3."""
    rng = np.random.default_rng(11)
    centres = np.array([[0.0, 0.0], [5.0, 1.0], [1.0, 6.0]])
    x = np.concatenate([rng.normal(size=(100, D)) + c for c in centres])
    return x, rng.integers(0, 4, size=len(x)).astype(np.float64)


@pytest.fixture(scope="module")
def npy(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("vb_device") / "x.npy"
    np.save(path, data[0])
    return path


def assert_same_bits(fit, ref):
    assert fit.n_iter == ref.n_iter and torch.equal(fit.elbo, ref.elbo)
    for name in ("alpha", "beta", "nu", "m", "W"):
        assert torch.equal(getattr(fit.posterior, name), getattr(ref.posterior, name)), name
    assert (fit.gamma is None) == (ref.gamma is None)
    if ref.gamma is not None:
        assert fit.gamma.device.type == "cpu" and torch.equal(fit.gamma, ref.gamma)


@pytest.mark.parametrize("kind", ["array", "tensor", "weighted", "npy", "npy-weighted", "posterior-init", "dask"])
def test_device_cpu_gives_the_bits_of_no_device(kind, data, npy):
    x, w = data
    kw = {"seed": 0, "max_iter": 8, "tol": 0.0}
    if kind == "tensor":
        x = torch.as_tensor(x)
    elif kind in ("weighted", "npy-weighted"):
        kw["sample_weight"] = w
    if kind.startswith("npy"):
        x = npy
    elif kind == "posterior-init":
        kw["init"] = pg.fit_vb(x, K, seed=1, max_iter=2).posterior
    elif kind == "dask":
        x = pytest.importorskip("dask.array").from_array(x, chunks=(70, D))
    assert_same_bits(pg.fit_vb(x, K, device="cpu", **kw), pg.fit_vb(x, K, **kw))


def test_device_cpu_on_the_exact_path(data, npy, monkeypatch):
    """The difference-first E-step and the two-pass M-step (r recomputed from its recipe)."""
    monkeypatch.setattr(kernel, "G_EXPANSION_MAX", -1.0)
    for x in (data[0], npy):
        assert_same_bits(pg.fit_vb(x, K, seed=0, max_iter=4, device="cpu"), pg.fit_vb(x, K, seed=0, max_iter=4))


@pytest.mark.parametrize(
    "device, error, match",
    [("bogus", ValueError, "device"), (3.5, TypeError, "device"), ("cpu:x", ValueError, "device")],
)
def test_bad_device_is_refused_before_the_data_are_read(device, error, match, npy, monkeypatch):
    from ppl_gmm.core import sources

    monkeypatch.setattr(sources, "_chunked_source", lambda *a, **k: pytest.fail("the data were read"))
    with pytest.raises(error, match=match):
        pg.fit_vb(npy, K, device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device exists")
def test_cuda_without_a_gpu_is_refused(data):
    with pytest.raises(ValueError, match="CUDA"):
        pg.fit_vb(data[0], K, device="cuda")


# --- the kernel on the meta device: nothing of a pass stays on the CPU ---------------------------
def _problem():
    gen = torch.Generator().manual_seed(0)
    f64 = {"dtype": torch.float64}
    x = torch.randn(40, D, generator=gen, **f64)
    iu = torch.triu_indices(D, D)
    m = torch.randn(K, D, generator=gen, **f64)
    u = torch.eye(D, **f64).expand(K, D, D).clone()
    c = torch.randn(K, generator=gen, **f64)
    design = kernel.design_t(m, u @ u.transpose(1, 2), c, iu)
    params = pg.GMMParams(torch.full((K,), 1 / K, **f64), m, u @ u.transpose(1, 2))
    post = pg.fit_vb(x.numpy(), K, seed=0, max_iter=1).posterior
    recipes = {
        "design": kernel.Recipe("design", (design, iu)),
        "exact": kernel.Recipe("exact", (m, u, c)),
        "gmm": kernel.Recipe.from_params(params),
        "posterior": kernel.Recipe.from_posterior(post),
    }
    return x, iu, recipes, params, post


def test_scan_and_features_follow_the_rows_device():
    x, iu, recipes, _, _ = _problem()
    xm, w = x.to(META), torch.ones(len(x), dtype=x.dtype, device=META)
    assert kernel.features_t(xm, iu.to(META)).device == META
    design = recipes["design"].to(META).args[0]
    for out in (
        kernel.scan(xm, K, design=design, iu=iu.to(META), want_stats=True, w=w),
        kernel.scan(xm, K, exact=recipes["exact"].to(META).args, want_stats=False),
    ):
        blocks, stats, h, lse = out
        assert all(b.device == META for b in blocks) and h.device == META and lse.device == META
        assert stats is None or stats.device == META


@pytest.mark.parametrize("kind", ["design", "exact", "gmm", "posterior"])
def test_responsibilities_follow_the_rows_device(kind):
    x, iu, recipes, params, post = _problem()
    recipe = recipes[kind]
    xc = x - x.mean(0)
    assert kernel.responsibilities_t(x.to(META), xc.to(META), recipe.to(META)).device == META
    # on the CPU the recipe's E-step is core's (eq. 20 / PRML 10.46-10.49), bit for bit
    r = kernel.responsibilities_t(x, xc, recipe)
    if kind == "gmm":
        assert torch.equal(r, pg.e_step(x, params).T)
    elif kind == "posterior":
        assert torch.equal(r, post.responsibilities(x).T)
    assert recipe.to(torch.device("cpu")) is recipe  # already there: no copy


def test_chunk_statistics_come_back_to_the_cpu():
    """chunk_stats runs where ``centre`` is and returns CPU tensors; on ``meta`` the only failure
    left is that last copy (no data to copy), so every operation before it followed the device."""
    x, _, recipes, _, _ = _problem()
    centre = x.mean(0)
    for op, arg in (("scan", True), ("moments", None), ("scatter", torch.zeros(K, D, dtype=x.dtype))):
        out = kernel.chunk_stats((op, recipes["design"], centre, 1.0, K, arg), x, None)
        assert all(t is None or t.device.type == "cpu" for t in out)
        meta_arg = arg.to(META) if isinstance(arg, torch.Tensor) else arg
        with pytest.raises(NotImplementedError, match="meta"):
            kernel.chunk_stats((op, recipes["design"].to(META), centre.to(META), 1.0, K, meta_arg), x, None)


# --- a GPU, where one exists -----------------------------------------------------------------------
def assert_same_vb(fit, ref, rtol):
    assert fit.n_iter == ref.n_iter
    assert_rel_close(fit.elbo, ref.elbo, rtol)
    for name in ("alpha", "beta", "nu", "m", "W"):
        assert_rel_close(getattr(fit.posterior, name), getattr(ref.posterior, name), rtol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("weighted", [False, True])
def test_cuda_fit_equals_the_cpu_fit(data, npy, weighted):  # pragma: no cover - needs a GPU
    x, w = data
    kw = {"seed": 0, "max_iter": 10, "tol": 0.0, "sample_weight": w if weighted else None}
    ref = pg.fit_vb(x, K, **kw)
    for src in (x, npy):
        fit = pg.fit_vb(src, K, device="cuda", **kw)
        assert_same_vb(fit, ref, rtol=1e-9)
        if fit.gamma is not None:
            assert fit.gamma.device.type == "cuda"
            np.testing.assert_allclose(fit.gamma.cpu().numpy(), ref.gamma.numpy(), rtol=1e-9, atol=1e-12)
    fit = pg.fit_vb(torch.as_tensor(x, device="cuda"), K, **kw)  # the data's own device
    assert_same_vb(fit, ref, rtol=1e-9)
