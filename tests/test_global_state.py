"""Fits leave the caller's global state alone: RNGs, torch's default dtype and thread count.

Every random choice of a fit flows from its ``seed``; a user's later ``np.random`` /
``torch.rand`` / ``random`` draws must not depend on whether a fit ran in between.
"""

import random

import numpy as np
import pytest
import torch

import ppl_gmm as pg


def _draws():
    return (float(torch.rand(1)), float(np.random.rand()), random.random())


def _state_after(fit_call):
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    fit_call()
    return _draws(), torch.get_default_dtype(), torch.get_num_threads()


@pytest.fixture(scope="module")
def small():
    x, _ = pg.datasets.make_mixture(
        40,
        pg.GMMParams(torch.tensor([0.5, 0.5]), torch.tensor([[-4.0], [4.0]]), torch.ones(2, 1, 1)),
        seed=3,
    )
    return x


FITS = {
    "cavi": lambda x: pg.fit_cavi(x, 2, seed=1),
    "svi": lambda x: pg.fit_svi(x, 2, seed=1, num_steps=5),
    "map": lambda x: pg.fit_map(x, 2, pg.default_prior(x, 2), seed=1),
    "vb": lambda x: pg.fit_vb(x, 2, pg.default_prior(x, 2), seed=1),
    "svi_bayes": lambda x: pg.fit_svi_bayes(x, 2, pg.default_prior(x, 2), num_steps=5, lr=0.05, seed=1),
    "nuts": lambda x: pg.fit_nuts(x, 2, pg.default_prior(x, 2), num_samples=5, warmup_steps=5, seed=1),
    "gibbs": lambda x: pg.fit_gibbs(x, 2, num_samples=5, warmup_steps=5, num_chains=2, seed=1),
}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("method", sorted(FITS))
def test_fit_leaves_global_rng_dtype_and_threads_alone(small, method):
    # the caller runs on 2 threads (not the suite's 1), so a fit that drops to one thread and does
    # not restore the count is seen
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        before = _state_after(lambda: None)
        after = _state_after(lambda: FITS[method](small))
    finally:
        torch.set_num_threads(threads)
    assert before[2] == 2
    assert after == before, f"{method} changed the caller's global state"


def test_gamma_rows_must_be_on_the_simplex(small):
    params = pg.fit_cavi(small, 2, seed=0).params
    gamma = torch.full((small.shape[0], 2), 0.9, dtype=torch.float64)
    with pytest.raises(ValueError, match="row 0 sums to 1.8"):
        pg.elbo(small, gamma, params)
    with pytest.raises(ValueError, match="simplex"):
        pg.elbo_gradients(small, gamma, params)


def test_params_must_be_gmmparams(small):
    with pytest.raises(TypeError, match="params must be a GMMParams"):
        pg.e_step(small, {"alpha": 1})
