"""fit_vb with frequency weights: integer weights = the fit on repeated rows, a zero weight = the row
removed (both from the same start, init= a GMMParams), in every covariance type and weight prior,
on both kernels; bad weights refused before any work."""

import numpy as np
import pytest
import torch

import ppl_gmm as pg
from ppl_gmm.core.priors import NormalWishartPrior
from ppl_gmm.core.vb_posterior import global_terms, lower_bound
from ppl_gmm.inference import _vb_kernel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(n=40, seed=2):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(size=(n, 2)) + c for c in ([0, 0], [5, 1], [1, 6])])


PRIOR = NormalWishartPrior(0.5, [1.0, 2.0], 0.3, 3.5, [[0.6, 0.1], [0.1, 0.9]])


def _start(x, k=3):
    """A start both fits share: Θ₀ from a fixed labelling (independent of the weights)."""
    labels = np.arange(len(x)) % k
    mu = np.stack([x[labels == j].mean(0) + 0.1 * j for j in range(k)])
    return pg.GMMParams(np.full(k, 1.0 / k), mu, np.stack([np.eye(2)] * k))


def _assert_same_fit(a, b, rtol=1e-10):
    pa, pb = a.posterior, b.posterior
    for name in ("alpha", "beta", "nu", "m", "W"):
        torch.testing.assert_close(getattr(pa, name), getattr(pb, name), rtol=rtol, atol=rtol)
    if pa.stick_b is not None:
        torch.testing.assert_close(pa.stick_b, pb.stick_b, rtol=rtol, atol=rtol)
    torch.testing.assert_close(a.elbo, b.elbo, rtol=rtol, atol=1e-9)


@pytest.mark.parametrize(
    "covariance_type, weight_prior", [("full", "dirichlet"), ("diag", "dirichlet_process"), ("tied", "dirichlet")]
)
@pytest.mark.parametrize("exact_kernel", [False, True])
def test_integer_weights_are_repeated_rows(covariance_type, weight_prior, exact_kernel, monkeypatch):
    if exact_kernel:
        monkeypatch.setattr(_vb_kernel, "G_EXPANSION_MAX", -1.0)  # difference-first kernels every iteration
    x = _data()
    w = np.random.default_rng(0).integers(1, 4, len(x))
    start = _start(x)
    kw = {"covariance_type": covariance_type, "weight_prior": weight_prior, "init": start, "max_iter": 30, "tol": 0}
    weighted = pg.fit_vb(x, 3, PRIOR, sample_weight=w, **kw)
    repeated = pg.fit_vb(np.repeat(x, w, axis=0), 3, PRIOR, **kw)
    _assert_same_fit(weighted, repeated)
    torch.testing.assert_close(weighted.gamma, repeated.gamma[np.cumsum(w) - 1], rtol=0, atol=1e-12)
    # the default prior with weights = the default prior of the repeated rows
    a = pg.fit_vb(x, 3, sample_weight=w, init=start, max_iter=5, tol=0)
    b = pg.fit_vb(np.repeat(x, w, axis=0), 3, init=start, max_iter=5, tol=0)
    torch.testing.assert_close(a.prior.W0, b.prior.W0, rtol=1e-12, atol=0)
    _assert_same_fit(a, b)


def test_zero_weight_is_the_row_removed_and_the_bound_is_the_weighted_bound():
    x = _data()
    w = np.ones(len(x))
    drop = [3, 50, 51, 100]
    w[drop] = 0.0
    keep = np.setdiff1d(np.arange(len(x)), drop)
    start = _start(x)
    kw = {"init": start, "max_iter": 25, "tol": 0}
    zero = pg.fit_vb(x, 3, PRIOR, sample_weight=w, **kw)
    removed = pg.fit_vb(x[keep], 3, PRIOR, **kw)
    _assert_same_fit(zero, removed)
    assert bool((torch.diff(zero.elbo) >= -1e-10 * zero.elbo.abs()[1:]).all())
    # fractional weights: the last entry is Σ_i w_i (data terms of row i) + the global terms, checked
    # against lower_bound on rows repeated by hand where the weights are integers (2 w)
    wf = np.random.default_rng(1).integers(1, 5, len(x)) / 2.0
    half = pg.fit_vb(x, 3, PRIOR, sample_weight=wf, **kw)
    post = half.posterior
    doubled_rows = np.repeat(x, (2 * wf).astype(int), axis=0)
    doubled_gamma = np.repeat(half.gamma.numpy(), (2 * wf).astype(int), axis=0)
    # L(w) = Σ_i w_i (data terms of row i) + G = ½ (L(rows repeated 2 w_i times) − G) + G
    g = float(global_terms(post, PRIOR))
    full2 = float(lower_bound(doubled_rows, doubled_gamma, post, PRIOR))
    assert float(half.elbo[-1]) == pytest.approx(0.5 * (full2 - g) + g, abs=1e-8)


@pytest.mark.parametrize(
    "weights, error, match",
    [
        (np.ones(5), ValueError, "sample_weight has 5 entries"),
        (np.ones((120, 1)), ValueError, "1-D"),
        (np.r_[-1.0, np.ones(119)], ValueError, "negative"),
        (np.r_[np.nan, np.ones(119)], ValueError, "NaN"),
        (np.r_[np.inf, np.ones(119)], ValueError, "infinite"),
        (np.zeros(120), ValueError, "positive weight"),
        (np.array(["a"] * 120), TypeError, "real numbers"),
    ],
)
def test_bad_weights_refused_before_work(weights, error, match, monkeypatch):
    from ppl_gmm.inference import vb

    monkeypatch.setattr(vb, "VBProblem", None)  # any work would fail differently
    with pytest.raises(error, match=match):
        pg.fit_vb(_data(), 3, PRIOR, sample_weight=weights)
