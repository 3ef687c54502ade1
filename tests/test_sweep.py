"""The adversarial sweep (tools/sweep.py) stays runnable: a sample of its cases, one per class of the
contract, runs here in forked children; ``make sweep`` runs all of them (about 10 minutes)."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the sweep forks")


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("ppl_gmm_sweep", ROOT / "tools" / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


SAMPLE = [
    "cli: /dev/zero",
    "cli: --out vb to .npz",
    "cli: header-less numeric",
    "load_fit: truncated archive",
    "load_fit: header declares 1e12 rows",
    "elbo_gradients: alpha_k = 0",
    "m_step: rows not summing to 1",
    "NormalWishartPrior: m0 2-D (2,2)",
    "fit_cavi: data x 1e+200",
    "fit_cavi: seed=True",
]


def test_a_sample_of_the_sweep_keeps_the_contract(sweep, capsys):
    cases = {c.name: c for c in sweep.CASES}
    assert len(cases) > 600 and all(name in cases for name in SAMPLE)
    assert sweep.main(["--only", *SAMPLE, "--timeout", "120"]) == 0, capsys.readouterr().out


def test_the_sweep_fails_a_case_that_breaks_the_contract(sweep):
    """The judge is not a rubber stamp: an internal error type, a NaN, accepted bad input, a
    traceback on the command line and a hang are each reported."""
    import numpy as np

    bad = [
        sweep.Case("keyerror", "refuse", lambda: {}["gamma"]),
        sweep.Case("nan", "ok", lambda: np.array([np.nan])),
        sweep.Case("accepted", "refuse", lambda: 1.0),
        sweep.Case("dependency", "refuse", lambda: np.load("/nonexistent.npz")),
        sweep.Case("hang", "ok", lambda: __import__("time").sleep(60)),
    ]
    for case in bad:
        _, why, _ = sweep.run_one(case, timeout=3)
        assert why is not None, case.name
