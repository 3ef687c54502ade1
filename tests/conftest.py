"""Shared test set-up: headless matplotlib, float64, fixed seeds. Oracles live in ``oracles.py``."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pytest
import torch
from hypothesis import settings

import ppl_gmm as pg

# Property tests draw the same examples on every run (CI must not flake on a newly drawn case);
# HYPOTHESIS_PROFILE=explore searches afresh.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# `pytest -n 2` runs two workers on two cores: one torch thread each, or they oversubscribe the
# machine (a two-thread torch op on a busy core is ~10x slower). The tests of "a fit restores the
# caller's thread count" set a different count themselves (tests/test_global_state.py).
torch.set_num_threads(1)


@pytest.fixture
def faithful():
    return pg.datasets.load_old_faithful()


@pytest.fixture
def galaxies():
    return pg.datasets.load_galaxies()


@pytest.fixture
def separated_2d():
    """(x, z, params): 300 points from three well-separated 2-D components."""
    params = pg.GMMParams(
        torch.tensor([0.3, 0.3, 0.4], dtype=torch.float64),
        torch.tensor([[-6.0, 0.0], [0.0, 6.0], [6.0, 0.0]], dtype=torch.float64),
        torch.tensor(
            [[[1.0, 0.3], [0.3, 0.8]], [[0.7, -0.2], [-0.2, 1.2]], [[1.1, 0.0], [0.0, 0.6]]], dtype=torch.float64
        ),
    )
    x, z = pg.datasets.make_mixture(300, params, seed=1)
    return x, z, params


@pytest.fixture
def one_torch_thread():
    """Small problems: one torch thread per test, restored afterwards (pytest -n 2 already fills both
    cores, and oversubscribed OpenMP threads spin-wait, making small operations ~10x slower).
    Use as ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def quiet_one_thread(one_torch_thread):
    """One torch thread, and Pyro's "Singular sample detected" warnings (Wishart draws) silenced."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Singular sample detected.*")
        yield


@pytest.fixture(scope="module")
def sep1d():
    """150 points from two well-separated 1-D normals (60 at N(−4, 1), 90 at N(3, 0.6²))."""
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(-4.0, 1.0, 60), rng.normal(3.0, 0.6, 90)])
