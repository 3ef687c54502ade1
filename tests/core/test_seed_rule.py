"""One seed rule for every public function with a ``seed``: any non-negative integer (Python int of
any size, numpy integer) or None; bools, negatives, floats and strings refused with one message.

Seeds that do not fit a generator (torch: 64 bits, numpy's legacy global generator: 32) are mapped
by ``core.rng.generator_seed``: small seeds unchanged, larger ones hashed deterministically."""

import random
import re
import warnings
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch

import ppl_gmm as pg
from ppl_gmm.core.rng import SEED_RULE, generator_seed, preserved_global_rng, resolve_seed, seed_global_rng

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: small problems, one torch thread

BIG = 2**70
BIG_SEEDS = [BIG, 2**64 + 1, np.uint64(2**64 - 1)]
BAD_SEEDS = [True, False, np.bool_(True), -1, np.int64(-3), -(2**70), 1.0, 0.5, np.float64(2.0), "0", "seed", b"1", [1]]


@pytest.fixture(scope="module")
def data():
    x = pg.datasets.load_galaxies()
    return x, pg.default_prior(x, 2)


def _nuts_draws(idata):
    return np.concatenate([idata.posterior[v].values.ravel() for v in ("alpha", "mu", "cov")])


# each entry: seed -> a float64 numpy array of what the seed decides (bit-compared)
FITS = {
    "fit_cavi": lambda d, s: pg.fit_cavi(d[0], 2, seed=s, init="random", max_iter=2).elbo.numpy(),
    "fit_cavi_restarts": lambda d, s: pg.fit_cavi(d[0], 2, seed=s, n_init=2, max_iter=2).elbo.numpy(),
    "fit_map": lambda d, s: pg.fit_map(d[0], 2, d[1], seed=s, init="random", max_iter=2).elbo.numpy(),
    "fit_vb": lambda d, s: pg.fit_vb(d[0], 2, d[1], seed=s, init="random", max_iter=2).elbo.numpy(),
    "fit_svi": lambda d, s: pg.fit_svi(d[0], 2, seed=s, init="random", num_steps=3).elbo.numpy(),
    "fit_svi_subsample": lambda d, s: pg.fit_svi(
        d[0], 2, seed=s, num_steps=3, subsample_size=20, local_updates="natural"
    ).elbo.numpy(),
    "fit_svi_bayes": lambda d, s: pg.fit_svi_bayes(d[0], 2, d[1], seed=s, init="random", num_steps=3).elbo.numpy(),
    "fit_nuts": lambda d, s: _nuts_draws(pg.fit_nuts(d[0], 2, d[1], seed=s, num_samples=4, warmup_steps=4, jit=False)),
    "select_k": lambda d, s: np.array(
        [r["bic"] for r in pg.select_k(d[0], [1, 2], seed=s, n_init=1, init="random", max_iter=2).rows]
    ),
    "make_mixture": lambda d, s: pg.datasets.make_mixture(
        20, pg.GMMParams(torch.tensor([0.5, 0.5]), torch.tensor([[0.0], [5.0]]), torch.ones(2, 1, 1)), seed=s
    )[0].numpy(),
    "GMMParams.sample": lambda d, s: (
        pg.GMMParams(torch.tensor([0.5, 0.5]), torch.tensor([[0.0], [5.0]]), torch.ones(2, 1, 1))
        .sample(20, seed=s)[0]
        .numpy()
    ),
    "VBFit.sample": lambda d, s: pg.fit_vb(d[0], 2, d[1], seed=0, max_iter=2, tol=0).sample(20, seed=s)[0].numpy(),
    "posterior_predictive": lambda d, s: pg.arviz_io.posterior_predictive(
        pg.fit_vb(d[0], 2, d[1], seed=0, max_iter=2, tol=0).to_arviz(num_samples=3, seed=0), 4, seed=s
    ),
    "VBFit.to_arviz": lambda d, s: _nuts_draws(
        pg.fit_vb(d[0], 2, d[1], seed=0, max_iter=2).to_arviz(num_samples=5, seed=s)
    ),
}


def _run(name, data, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NUTS' divergence warning, ArviZ's notices on tiny runs
        return FITS[name](data, seed)


@pytest.mark.parametrize("name", sorted(FITS))
def test_big_seeds_work_are_reproducible_and_distinct(data, name):
    results = {}
    for seed in BIG_SEEDS:
        first, again = _run(name, data, seed), _run(name, data, seed)
        assert np.all(np.isfinite(first)), (name, seed)
        np.testing.assert_array_equal(first, again, err_msg=f"{name}: seed {seed} not reproducible")
        results[int(seed)] = first
    neighbour = _run(name, data, BIG + 1)
    assert not np.array_equal(results[BIG], neighbour), f"{name}: seeds 2**70 and 2**70 + 1 gave the same draws"


@pytest.mark.parametrize("name", sorted(FITS))
def test_bad_seeds_are_refused_with_one_message(data, name):
    for bad in BAD_SEEDS:
        with pytest.raises(ValueError, match=re.escape(SEED_RULE)) as err:
            _run(name, data, bad)
        assert str(err.value) == f"{SEED_RULE}, got {bad!r}", name


@pytest.mark.parametrize("seed", [0, 1, 7, 12345, 2**31, 2**32 - 1])
def test_small_seeds_seed_the_global_generators_exactly_as_pyro_does(seed):
    """Figures and tests depend on today's draws: seeds < 2**32 are passed to the generators unchanged."""

    def draws():
        return (torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)])  # noqa: NPY002

    with preserved_global_rng():
        pyro.set_rng_seed(seed)
        expected = draws()
        seed_global_rng(seed)
        assert draws() == expected
    assert generator_seed(seed, 32) == generator_seed(seed, 64) == seed


def test_generator_seed_maps_only_what_does_not_fit():
    assert generator_seed(2**64 - 1, 64) == 2**64 - 1  # torch takes 64 bits: unchanged
    for bits in (32, 64):
        mapped = {generator_seed(s, bits) for s in (2**70, 2**70 + 1, 2**64 + 1, 2**100, 2**bits)}
        assert len(mapped) == 5 and all(0 <= m < 2**bits for m in mapped)
        assert generator_seed(2**70, bits) == generator_seed(2**70, bits)
    assert generator_seed(np.uint64(2**64 - 1), 32) == generator_seed(2**64 - 1, 32)


@pytest.mark.parametrize("bad", BAD_SEEDS)
def test_resolve_seed_is_the_one_rule(bad):
    with pytest.raises(ValueError, match=re.escape(f"{SEED_RULE}, got {bad!r}")):
        resolve_seed(bad)
    with pytest.raises(ValueError, match=re.escape(SEED_RULE)):
        generator_seed(bad, 32)


def test_resolve_seed_keeps_every_non_negative_integer():
    for seed in (0, 2**32, BIG, np.uint64(2**64 - 1), np.int8(5), np.uint32(7)):
        assert resolve_seed(seed) == int(seed) and type(resolve_seed(seed)) is int
    assert 0 <= resolve_seed(None) < 2**32


def test_command_line_takes_a_big_seed(capsys):
    from ppl_gmm.app.cli import main

    csv = str(Path(pg.datasets.__file__).parent / "data" / "old_faithful.csv")
    args = ["fit", csv, "-k", "2", "--method", "svi", "--num-steps", "3", "--no-progress", "--seed"]
    assert main([*args, str(BIG)]) == 0
    assert main([*args, "-1"]) == 2  # one line naming the seed, no traceback
    assert "seed" in capsys.readouterr().err
