"""init="kmeans": Lloyd's k-means from the k-means++ centres (``core.init.kmeans_lloyd``), checked
against scikit-learn's ``KMeans(init=centres, n_init=1, algorithm="lloyd")`` from the same centres,
then one M-step from the hard assignments, in every fit that takes ``init=``."""

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

import ppl_gmm as pg
from ppl_gmm.core.gmm import m_step
from ppl_gmm.core.init import initial_params, kmeans_lloyd, kmeans_plusplus

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sklearn(x, centres, sample_weight=None, **kw):
    km = KMeans(centres.shape[0], init=np.asarray(centres), n_init=1, algorithm="lloyd", **kw)
    return km.fit(np.asarray(x), sample_weight=sample_weight)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("data", ["faithful", "blobs"])
def test_lloyd_matches_sklearn_from_the_same_centres(faithful, separated_2d, k, data):
    x = torch.as_tensor(faithful) if data == "faithful" else separated_2d[0]
    for seed in (0, 1):
        centres0 = kmeans_plusplus(x, k, seed)
        labels, centres, n_iter = kmeans_lloyd(x, centres0)
        km = _sklearn(x, centres0)
        np.testing.assert_array_equal(labels.numpy(), km.labels_)
        np.testing.assert_allclose(centres.numpy(), km.cluster_centers_, rtol=1e-10, atol=1e-10)
        assert n_iter == km.n_iter_ and labels.dtype == torch.long and centres.dtype == x.dtype


def test_lloyd_options_match_sklearn(faithful):
    """max_iter, tol (relative to the mean column variance; 0: until the labels repeat), weights."""
    x = torch.as_tensor(faithful)
    centres0 = kmeans_plusplus(x, 6, 4)
    w = torch.as_tensor(np.random.default_rng(0).uniform(0.1, 3.0, len(x)))
    cases = [
        ({"max_iter": 2}, {"max_iter": 2}),
        ({"tol": 0.0}, {"tol": 0.0}),
        ({"tol": 0.5}, {"tol": 0.5}),
        ({"sample_weight": w}, {"sample_weight": w.numpy()}),
    ]
    for ours, theirs in cases:
        sw = theirs.pop("sample_weight", None)
        labels, centres, n_iter = kmeans_lloyd(x, centres0, **ours)
        km = _sklearn(x, centres0, sample_weight=sw, **theirs)
        np.testing.assert_array_equal(labels.numpy(), km.labels_, err_msg=str(ours))
        np.testing.assert_allclose(centres.numpy(), km.cluster_centers_, rtol=1e-10, atol=1e-10)
        assert n_iter == km.n_iter_, ours


def test_an_empty_cluster_is_relocated_as_sklearn_does():
    """A start centre far from every point receives no rows: it is moved to the farthest row."""
    x = torch.as_tensor(np.random.default_rng(2).normal(size=(40, 2)))
    centres0 = torch.tensor([[0.0, 0.0], [0.5, 0.5], [100.0, 100.0]], dtype=torch.float64)
    labels, centres, _ = kmeans_lloyd(x, centres0)
    km = _sklearn(x, centres0)
    np.testing.assert_array_equal(labels.numpy(), km.labels_)
    np.testing.assert_allclose(centres.numpy(), km.cluster_centers_, rtol=1e-10, atol=1e-10)
    assert set(labels.tolist()) == {0, 1, 2}


def test_init_kmeans_is_one_m_step_from_the_lloyd_labels(faithful):
    x = torch.as_tensor(faithful)
    theta0 = initial_params(x, 3, "kmeans", 5, "full", 1e-6)
    km = _sklearn(x, kmeans_plusplus(x, 3, 5))
    gamma = torch.nn.functional.one_hot(torch.as_tensor(km.labels_, dtype=torch.long), 3).double()
    expected = m_step(x, gamma, covariance_type="full", reg_covar=1e-6)
    assert theta0.allclose(expected, rtol=1e-12, atol=0)
    # a better start than k-means++'s nearest centres: its hard partition has lower inertia
    kpp = initial_params(x, 3, "kmeans++", 5, "full", 1e-6)
    assert not theta0.allclose(kpp)


def test_every_fit_accepts_init_kmeans(faithful):
    fits = {
        "fit_cavi": lambda: pg.fit_cavi(faithful, 2, init="kmeans", seed=0, max_iter=3, tol=0),
        "fit_map": lambda: pg.fit_map(faithful, 2, init="kmeans", seed=0, max_iter=3, tol=0),
        "fit_vb": lambda: pg.fit_vb(faithful, 2, init="kmeans", seed=0, max_iter=3, tol=0),
        "fit_svi": lambda: pg.fit_svi(faithful, 2, init="kmeans", seed=0, num_steps=2),
    }
    theta0 = initial_params(torch.as_tensor(faithful), 2, "kmeans", 0, "full", 1e-6)
    assert pg.fit_cavi(faithful, 2, init="kmeans", seed=0, max_iter=0).params.allclose(theta0, rtol=1e-12, atol=0)
    for name, fit in fits.items():
        assert np.isfinite(float(fit().elbo[-1])), name


def test_an_unknown_init_names_kmeans_among_the_choices(faithful):
    with pytest.raises(ValueError, match="'kmeans\\+\\+', 'kmeans', 'random'"):
        pg.fit_cavi(faithful, 2, init="k-means")
