"""The shipped data and draws from the generative process."""

import numpy as np
import pytest
import torch

import ppl_gmm as pg


def test_old_faithful(faithful):
    assert faithful.shape == (272, 2) and faithful.dtype == np.float64
    assert faithful[:, 0].min() == pytest.approx(1.6) and faithful[:, 0].max() == pytest.approx(5.1)
    assert faithful[:, 1].min() == 43 and faithful[:, 1].max() == 96
    assert faithful[:, 1].mean() == pytest.approx(70.897, abs=1e-3)  # R: mean(faithful$waiting)


def test_galaxies_in_1000_km_per_s(galaxies):
    assert galaxies.shape == (82,) and galaxies.dtype == np.float64
    assert galaxies.min() == pytest.approx(9.172) and galaxies.max() == pytest.approx(34.279)
    assert galaxies.mean() == pytest.approx(20.828, abs=1e-3)  # mean 20 828 km/s (Roeder 1990)
    assert galaxies.std(ddof=1) == pytest.approx(4.57, abs=0.01)


def test_make_mixture_is_reproducible_and_has_the_right_moments(separated_2d):
    _, _, params = separated_2d
    x1, z1 = pg.datasets.make_mixture(50, params, seed=7)
    x2, z2 = pg.datasets.make_mixture(50, params, seed=7)
    x3, _ = pg.datasets.make_mixture(50, params, seed=8)
    assert torch.equal(x1, x2) and torch.equal(z1, z2) and not torch.equal(x1, x3)
    assert x1.shape == (50, 2) and z1.dtype == torch.long and x1.dtype == torch.float64
    n = 200_000
    x, z = pg.datasets.make_mixture(n, params, seed=1)
    freq = torch.bincount(z, minlength=3).double() / n
    torch.testing.assert_close(freq, params.alpha, rtol=0, atol=4 * 0.5 / n**0.5)
    for j in range(3):
        xj = x[z == j]
        nj = xj.shape[0]
        torch.testing.assert_close(xj.mean(0), params.mu[j], rtol=0, atol=5 * 1.2 / nj**0.5)
        torch.testing.assert_close(torch.cov(xj.T), params.cov[j], rtol=0, atol=5 * 1.6 / nj**0.5)
    # the mixture's overall mean and covariance
    mean = (params.alpha[:, None] * params.mu).sum(0)
    torch.testing.assert_close(x.mean(0), mean, rtol=0, atol=0.05)


def test_make_mixture_dtype_and_bad_input():
    p32 = pg.GMMParams(torch.tensor([1.0], dtype=torch.float32), torch.zeros(1, 1), torch.ones(1, 1, 1))
    x, _ = pg.datasets.make_mixture(10, p32, seed=0)
    assert x.dtype == torch.float32 and x.shape == (10, 1)
    with pytest.raises(ValueError, match="positive integer"):
        pg.datasets.make_mixture(0, p32)
    with pytest.raises(TypeError, match="GMMParams"):
        pg.datasets.make_mixture(10, {"alpha": [1.0]})
