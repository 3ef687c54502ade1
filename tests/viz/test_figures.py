"""ppl_gmm.viz.figures: byte-identical files on re-run, no version stamps, one progress line per
figure, failures isolated; the Pyro identity helper (viz.identities) checked against the closed form."""

import io

import numpy as np
import pyro
import pytest
import torch

import ppl_gmm as pg
from ppl_gmm.viz import figures
from ppl_gmm.viz.identities import pyro_elbo_and_grads, tangent

from oracles import random_gamma, random_params

# the figures the byte-identity test regenerates twice (quick mode): every figure except
# the NUTS one, which is slow and whose determinism is the NUTS module's to test
QUICK_SUBSET = ["svi_vs_cavi", "faithful_mixture", "galaxies_density", "vb_pruning", "select_k", "identities"]

REQUIRED = {"svi_vs_cavi", "faithful_mixture", "galaxies_density", "vb_pruning", "nuts_vs_vb", "identities"}


def test_registry():
    assert REQUIRED <= set(figures.FIGURES)
    files = [filename for _, filename in figures.FIGURES.values()]
    assert len(set(files)) == len(files) and all(f.endswith(".png") for f in files)
    for fn, _ in figures.FIGURES.values():
        assert fn.__doc__ and fn.__doc__.strip()


def _png_text_chunks(data: bytes) -> list:
    """Keywords of the tEXt/iTXt/zTXt chunks of a PNG (parsed by hand)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, keys = 8, []
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind in (b"tEXt", b"iTXt", b"zTXt"):
            keys.append(data[pos + 8 : pos + 8 + length].split(b"\0")[0].decode())
        pos += 12 + length
    return keys


@pytest.mark.slow
def test_figures_are_byte_identical_on_rerun(tmp_path):
    runs = []
    for name in ("a", "b"):
        stream = io.StringIO()
        results = figures.make_figures(tmp_path / name, quick=True, only=QUICK_SUBSET, stream=stream)
        failed = {k: v for k, v in results.items() if isinstance(v, Exception)}
        assert not failed, failed
        lines = stream.getvalue().splitlines()
        assert len(lines) == len(QUICK_SUBSET) and all(" ok" in ln for ln in lines)
        runs.append({p.name: p.read_bytes() for p in results.values()})
    assert runs[0].keys() == runs[1].keys()
    for filename, data in runs[0].items():
        assert data == runs[1][filename], f"{filename} differs between two runs"
        assert "Software" not in _png_text_chunks(data)
        assert len(data) > 10_000  # something was drawn


def test_failures_are_reported_and_isolated(tmp_path, monkeypatch):
    def broken(quick=False):
        """A figure that fails."""
        raise RuntimeError("boom")

    monkeypatch.setitem(figures.FIGURES, "broken", (broken, "broken.png"))
    stream = io.StringIO()
    results = figures.make_figures(tmp_path, quick=True, only=["broken", "faithful_mixture"], stream=stream)
    assert isinstance(results["broken"], RuntimeError)
    assert results["faithful_mixture"].exists() and not (tmp_path / "broken.png").exists()
    first, second = stream.getvalue().splitlines()
    assert first.startswith("[1/2] broken.png") and "FAILED: RuntimeError: boom" in first
    assert second.startswith("[2/2] faithful_mixture.png") and second.endswith("ok")
    with pytest.raises(ValueError, match="unknown figure"):
        figures.make_figures(tmp_path, only=["nope"])


def test_threads_restored(tmp_path):
    before = torch.get_num_threads()
    figures.make_figures(tmp_path, quick=True, only=["faithful_mixture"], stream=io.StringIO())
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("d", [1, 2])
def test_pyro_elbo_and_grads_against_closed_form(d):
    params = random_params(3, d, seed=10 + d)
    gamma = random_gamma(30, 3, seed=20 + d)
    x = torch.as_tensor(np.random.default_rng(d).normal(scale=3.0, size=(30, d)))
    pyro.clear_param_store()
    pyro.param("untouched", torch.ones(2))
    value, grads = pyro_elbo_and_grads(x, gamma, params)
    assert list(pyro.get_param_store().keys()) == ["untouched"]  # the caller's store is left alone
    pyro.clear_param_store()
    ref = pg.elbo(x, gamma, params)
    assert abs(float(value - ref)) <= 1e-12 * abs(float(ref))
    analytic = pg.elbo_gradients(x, gamma, params)  # eq. 19
    for key in ("mu", "cov"):
        torch.testing.assert_close(grads[key], analytic[key], rtol=1e-10, atol=1e-10)
    for key in ("alpha", "gamma"):
        diff = grads[key] - analytic[key]
        # Categorical normalises: the difference is −Σ_k p_k g_k per row, nothing else
        weights = params.alpha if key == "alpha" else gamma
        torch.testing.assert_close(
            diff, -(weights * analytic[key]).sum(-1, keepdim=True).expand_as(diff), rtol=1e-10, atol=1e-9
        )
        torch.testing.assert_close(tangent(grads[key]), tangent(analytic[key]), rtol=1e-10, atol=1e-9)
    assert torch.allclose(-(params.alpha * analytic["alpha"]).sum(), torch.tensor(-30.0, dtype=torch.float64))
