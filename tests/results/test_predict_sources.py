"""Prediction over any data source (core.evaluate): GMMFit and VBFit give the in-memory answer for
.npy files, memmaps, sliceable datasets and Dask arrays (Dask: lazy Dask arrays), the in-memory
answer itself is checked against scipy, and weighted score / BIC / AIC equal repeated rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ppl_gmm as pg
from ppl_gmm.core import evaluate
from ppl_gmm.core.vb_posterior import VBPosterior

from oracles import Rows, random_params, scipy_objectives

da = pytest.importorskip("dask.array")

N, K, D = 301, 3, 2


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate, "EVAL_ROWS", 64)  # several blocks for the chunked kinds
    rng = np.random.default_rng(5)
    x = rng.normal(size=(N, D)) * 3.0
    x[0] = [1e3, -1e3]  # a far point: log space keeps its row finite
    path = tmp_path / "x.npy"
    np.save(path, x)
    params = random_params(K, D, seed=6)
    fit = pg.GMMFit(
        params=params,
        gamma=None,
        elbo=torch.tensor([-1.0, -0.5], dtype=torch.float64),
        log_likelihood=torch.tensor([-0.9, -0.5], dtype=torch.float64),
        method="cavi",
        n_iter=1,
        converged=False,
        seed=0,
    )
    kinds = {
        "npy": str(path),
        "memmap": np.load(path, mmap_mode="r"),
        "sliced": Rows(x),
        "dask": da.from_array(x, chunks=(70, D)),
    }
    return x, fit, kinds


def _np(v):
    if isinstance(v, da.Array):
        return v.compute()
    return v.numpy()


def test_in_memory_prediction_against_scipy(setup):
    x, fit, _ = setup
    ref = scipy_objectives(x, fit.params)
    np.testing.assert_allclose(fit.predict_proba(x).numpy(), ref["gamma"].numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(fit.responsibilities(x).numpy(), ref["gamma"].numpy(), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(fit.predict(x).numpy(), ref["gamma"].numpy().argmax(1))
    assert float(fit.score_samples(x).sum()) == pytest.approx(ref["log_likelihood"], rel=1e-12)
    assert fit.score(x) == pytest.approx(ref["log_likelihood"] / N, rel=1e-12)
    p = fit.n_parameters()
    assert fit.bic(x) == pytest.approx(-2 * ref["log_likelihood"] + p * math.log(N), rel=1e-12)
    assert fit.aic(x) == pytest.approx(-2 * ref["log_likelihood"] + 2 * p, rel=1e-12)


def test_every_source_gives_the_in_memory_predictions(setup):
    x, fit, kinds = setup
    want = {
        "predict_proba": fit.predict_proba(x),
        "responsibilities": fit.responsibilities(x),
        "predict": fit.predict(x),
        "score_samples": fit.score_samples(x),
    }
    for label, src in kinds.items():
        for name, w in want.items():
            got = getattr(fit, name)(src)
            assert isinstance(got, da.Array) == (label == "dask"), (label, name)
            g = _np(got)
            assert g.shape == tuple(w.shape) and g.dtype == w.numpy().dtype, (label, name)
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-12, atol=1e-12, err_msg=f"{label} {name}")
        for name in ("score", "bic", "aic"):
            assert getattr(fit, name)(src) == pytest.approx(getattr(fit, name)(x), rel=1e-12), (label, name)


def test_dask_predictions_stay_lazy_with_the_source_chunks(setup):
    _, fit, kinds = setup
    x = kinds["dask"]
    proba = fit.predict_proba(x)
    labels = fit.predict(x)
    assert proba.chunks == (x.chunks[0], (K,)) and labels.chunks == (x.chunks[0],)
    assert labels.dtype == np.int64


def test_weighted_score_bic_aic_equal_repeated_rows(setup):
    x, fit, kinds = setup
    w = np.random.default_rng(7).integers(0, 4, size=N)
    rep = np.repeat(x, w, axis=0)
    for src in [x, *kinds.values()]:
        assert fit.score(src, sample_weight=w) == pytest.approx(fit.score(rep), rel=1e-12)
        assert fit.bic(src, sample_weight=w) == pytest.approx(fit.bic(rep), rel=1e-12)
        assert fit.aic(src, sample_weight=w) == pytest.approx(fit.aic(rep), rel=1e-12)
    dw = da.from_array(w.astype(float), chunks=50)
    assert fit.score(kinds["dask"], sample_weight=dw) == pytest.approx(fit.score(rep), rel=1e-12)
    with pytest.raises(ValueError, match="sample_weight has 300 entries"):
        fit.score(x, sample_weight=w[:-1])
    with pytest.raises(ValueError, match="D = 3 columns but the fit is 2-dimensional"):
        fit.predict(np.zeros((4, 3)))


def test_a_fit_without_gamma_saves_loads_and_summarises(setup, tmp_path):
    x, fit, _ = setup
    fit.save(tmp_path / "fit.npz")
    back = pg.load_fit(tmp_path / "fit.npz")
    assert back.gamma is None and torch.equal(back.params.mu, fit.params.mu)
    assert torch.equal(back.kl_gap, fit.log_likelihood - fit.elbo)
    assert "cavi" in back.summary()
    assert back.to_arviz().posterior["mu"].shape == (1, 1, K, D)


def test_vbfit_predictions_over_sources(setup):
    x, _, kinds = setup
    rng = np.random.default_rng(8)
    posterior = VBPosterior(
        alpha=torch.tensor([3.0, 5.0, 7.0], dtype=torch.float64),
        m=torch.as_tensor(rng.normal(size=(K, D))),
        beta=torch.tensor([2.0, 4.0, 6.0], dtype=torch.float64),
        nu=torch.tensor([4.0, 5.0, 6.0], dtype=torch.float64),
        W=torch.eye(D, dtype=torch.float64).repeat(K, 1, 1) * 0.3,
    )
    vb = pg.VBFit(posterior=posterior, gamma=None, elbo=torch.tensor([-1.0], dtype=torch.float64))
    want = {
        "predict_proba": posterior.responsibilities(x),
        "predict": torch.argmax(posterior.log_rho(x), dim=1),
        "score_samples": posterior.predictive_log_density(x),
    }
    for label, src in kinds.items():
        for name, w in want.items():
            got = getattr(vb, name)(src)
            assert isinstance(got, da.Array) == (label == "dask")
            np.testing.assert_allclose(_np(got), w.numpy(), rtol=1e-12, atol=1e-12, err_msg=f"{label} {name}")
        assert vb.score(src) == pytest.approx(float(want["score_samples"].mean()), rel=1e-12)
    wts = np.random.default_rng(9).integers(0, 3, size=N)
    rep = np.repeat(x, wts, axis=0)
    assert vb.score(kinds["npy"], sample_weight=wts) == pytest.approx(vb.score(rep), rel=1e-12)


@pytest.mark.slow
def test_dask_predictions_and_validation_on_a_local_cluster(setup):
    """The validation pass and the per-chunk predictions run on a 2-process LocalCluster (Θ shipped to
    the workers): the in-memory answers."""
    distributed = pytest.importorskip("distributed")
    x, fit, kinds = setup
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster),
    ):
        xd = kinds["dask"]
        src = pg.as_source(xd, np.arange(N, dtype=float))
        np.testing.assert_allclose(src.summary.mean.numpy(), np.average(x, axis=0, weights=np.arange(N)), rtol=1e-13)
        np.testing.assert_allclose(fit.predict_proba(xd).compute(), fit.predict_proba(x).numpy(), rtol=0, atol=1e-12)
        assert fit.bic(xd) == pytest.approx(fit.bic(x), rel=1e-12)
        bad = x.copy()
        bad[N - 1, 0] = np.nan
        with pytest.raises(ValueError, match=f"row\\(s\\): {N - 1} "):
            pg.as_source(da.from_array(bad, chunks=(70, D)))
