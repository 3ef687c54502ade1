"""Thread defaults (issue 10, item 5): the Pyro fits (fit_svi, fit_svi_bayes, fit_nuts), the Gibbs
sampler, the small closed-form fits and the command line run their small tensors on **one** torch
thread by default, and leave the caller's process-wide count as they found it — after success and
after an error.

How it is checked: the caller sets torch to ``CALLER_THREADS`` threads; a probe wrapped around a
function the fit calls *inside* its work (the SVI loop, the chains, the ascent) records
``torch.get_num_threads()`` there. The oracle is torch's own counter, read at the point where the
fit does its work; the value before and after the call is the caller's."""

import numpy as np
import pytest
import torch

import ppl_gmm as pg
from ppl_gmm.app import cli
from ppl_gmm.inference import cavi, gibbs, nuts, svi, svi_bayes, vb
from ppl_gmm.inference import map as map_module

CALLER_THREADS = 2


@pytest.fixture
def caller_threads():
    """The caller's setting: two torch threads (restored after the test)."""
    before = torch.get_num_threads()
    torch.set_num_threads(CALLER_THREADS)
    assert torch.get_num_threads() == CALLER_THREADS
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    x = pg.datasets.load_galaxies()
    return x, pg.default_prior(x, 2)


def probe(monkeypatch, module, name, seen, fail=False):
    """Wrap ``module.name`` so that each call records torch's thread count (and raises if ``fail``)."""
    original = getattr(module, name)

    def wrapped(*args, **kwargs):
        seen.append(torch.get_num_threads())
        if fail:
            raise RuntimeError("probe: the fit fails here")
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


FITS = {
    "fit_svi": (svi, "run_svi", lambda d: pg.fit_svi(d[0], 2, num_steps=5, seed=0)),
    "fit_svi_natural": (
        svi,
        "run_svi",
        lambda d: pg.fit_svi(d[0], 2, num_steps=3, local_updates="natural", seed=0),
    ),
    "fit_svi_bayes": (svi_bayes, "run_svi", lambda d: pg.fit_svi_bayes(d[0], 2, d[1], num_steps=5, seed=0)),
    "fit_nuts": (
        nuts,
        "_run_chains",
        lambda d: pg.fit_nuts(
            d[0], 2, d[1], num_samples=3, warmup_steps=3, max_tree_depth=2, jit=False, seed=0, chain_method="sequential"
        ),
    ),
    "fit_gibbs": (gibbs, "sample_chains", lambda d: pg.fit_gibbs(d[0], 2, d[1], num_samples=3, warmup_steps=3, seed=0)),
    "fit_cavi": (cavi, "fit_ascent", lambda d: pg.fit_cavi(d[0], 2, max_iter=3, seed=0)),
    "fit_map": (map_module, "fit_ascent", lambda d: pg.fit_map(d[0], 2, max_iter=3, seed=0)),
    "fit_vb": (vb, "fit_ascent", lambda d: pg.fit_vb(d[0], 2, max_iter=3, seed=0)),
}


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")  # tiny runs: convergence, divergences
@pytest.mark.parametrize("name", FITS)
def test_fit_runs_on_one_thread_and_restores_the_callers_count(name, data, caller_threads, monkeypatch):
    module, inner, call = FITS[name]
    seen: list[int] = []
    probe(monkeypatch, module, inner, seen)
    call(data)
    assert seen, f"the probe around {inner} was not called"
    assert set(seen) == {1}, f"{name} ran on {seen} torch threads"
    assert torch.get_num_threads() == CALLER_THREADS


@pytest.mark.parametrize("name", ["fit_svi", "fit_svi_bayes", "fit_nuts", "fit_gibbs", "fit_cavi"])
def test_count_is_restored_after_an_error(name, data, caller_threads, monkeypatch):
    module, inner, call = FITS[name]
    seen: list[int] = []
    probe(monkeypatch, module, inner, seen, fail=True)
    with pytest.raises(RuntimeError, match="probe"):
        call(data)
    assert seen == [1]
    assert torch.get_num_threads() == CALLER_THREADS


def test_cli_svi_runs_on_one_thread(tmp_path, caller_threads, monkeypatch, capsys):
    """``ppl-gmm fit --method svi`` (measured at 96 s on 272 rows on a busy machine before)."""
    x = np.asarray(pg.datasets.load_old_faithful())
    path = tmp_path / "faithful.npy"
    np.save(path, x)
    seen: list[int] = []
    probe(monkeypatch, svi, "run_svi", seen)
    assert cli.main(["fit", str(path), "-k", "2", "--method", "svi", "--num-steps", "5", "--no-progress"]) == 0
    assert seen == [1]
    assert torch.get_num_threads() == CALLER_THREADS
    assert "method: svi" in capsys.readouterr().out


def test_large_closed_form_passes_keep_the_pool(caller_threads, monkeypatch):
    """Large work is not forced onto one thread: fit_cavi at N·K·D >= PARALLEL_WORK hands its
    passes to ``threads`` = the caller's torch count worker threads (``_passes.map_in_order``)."""
    from ppl_gmm.core.threads import PARALLEL_WORK
    from ppl_gmm.inference import _em

    seen: list[int] = []
    original = _em.CAVIProblem.__init__

    def init(self, *args, threads=None, **kwargs):
        seen.append(threads)
        original(self, *args, threads=threads, **kwargs)

    monkeypatch.setattr(_em.CAVIProblem, "__init__", init)
    n = PARALLEL_WORK // 4 + 1  # K = 2, D = 2: N·K·D just above the threshold
    x = np.random.default_rng(0).normal(size=(n, 2))
    pg.fit_cavi(x, 2, max_iter=1, tol=0, seed=0)
    assert seen == [CALLER_THREADS]
    assert torch.get_num_threads() == CALLER_THREADS
