"""Bad input is refused before any work starts, with a message that names the problem."""
import numpy as np
import pandas as pd
import pytest
import torch

import ppl_gmm as pg
from ppl_gmm._validation import as_data

GOOD = np.random.default_rng(0).normal(size=(30, 2))


@pytest.fixture(autouse=True)
def no_work(monkeypatch):
    """Any initialisation during these tests means validation came too late."""
    import ppl_gmm.cavi as cavi

    def boom(*args, **kwargs):
        raise AssertionError("work started before the input was validated")

    monkeypatch.setattr(cavi, "initial_params", boom)


def refuse(exc, match, x=GOOD, k=2, **kw):
    with pytest.raises(exc, match=match):
        pg.fit_cavi(x, k, **kw)


def test_nan_and_inf_rows_are_named():
    x = GOOD.copy()
    x[3, 0] = np.nan
    x[17, 1] = np.inf
    refuse(ValueError, r"NaN or infinite values in 2 row\(s\): 3, 17", x=x)
    refuse(ValueError, r"row\(s\): 5", x=torch.tensor(np.where(np.arange(30)[:, None] == 5, -np.inf, GOOD)))


@pytest.mark.parametrize(
    "x, match",
    [
        (np.empty((0, 2)), "empty"),
        (np.empty((5, 0)), "no columns"),
        (np.zeros((4, 3, 2)), "3-D"),
        (3.0, "scalar"),
        (np.array([["1", "2"], ["3", "4"]]), "strings"),
        (np.array([[1.0, "a"], [2.0, 3.0]], dtype=object), "found str 'a' at index \\(0, 1\\)"),
        (np.array([[True, False], [False, True]]), "booleans"),
        (np.array([[1 + 2j, 0], [1, 1]]), "complex"),
        (torch.tensor([[1 + 1j, 2]]), "complex"),
        (np.array(["2020-01-01", "2020-01-02"], dtype="datetime64[D]"), "dates"),
        ([[1.0, 2.0], [3.0]], "could not be read"),
        (pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "z"]}), "found str 'x'"),
    ],
)
def test_bad_data_is_refused(x, match):
    with pytest.raises((TypeError, ValueError), match=match):
        pg.fit_cavi(x, 1)


def test_numeric_tables_and_object_numbers_are_accepted():
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [4, 5, 7]})
    torch.testing.assert_close(as_data(frame), torch.tensor([[1.0, 4.0], [2.0, 5.0], [3.0, 7.0]], dtype=torch.float64))
    objects = np.array([[1, 2.5], [3, 4]], dtype=object)
    assert as_data(objects).dtype == torch.float64
    assert as_data(np.arange(5)).shape == (5, 1)
    assert as_data(np.ones((3, 2), dtype=np.float32)).dtype == torch.float32
    assert as_data(GOOD, dtype=torch.float32).dtype == torch.float32


@pytest.mark.parametrize(
    "k, exc, match",
    [(0, ValueError, "at least 1"), (-1, ValueError, "at least 1"), (31, ValueError, "larger than the number of data"),
     (2.0, TypeError, "must be an integer"), (True, TypeError, "must be an integer"), ("2", TypeError, "integer")],
)
def test_bad_k(k, exc, match):
    refuse(exc, match, k=k)


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        (dict(covariance_type="full_rank"), ValueError, "unknown covariance_type 'full_rank'"),
        (dict(covariance_type=None), ValueError, "unknown covariance_type"),
        (dict(init="kmeans"), ValueError, "unknown init 'kmeans'"),
        (dict(init=np.zeros((2, 2))), ValueError, "unknown init"),
        (dict(tol=-1.0), ValueError, "tol must be >= 0"),
        (dict(tol=float("nan")), ValueError, "tol"),
        (dict(tol="small"), TypeError, "tol must be a number"),
        (dict(max_iter=-1), ValueError, "max_iter must be >= 0"),
        (dict(max_iter=10.5), TypeError, "max_iter must be an integer"),
        (dict(n_init=0), ValueError, "n_init must be >= 1"),
        (dict(reg_covar=-1e-6), ValueError, "reg_covar"),
        (dict(reg_covar=float("inf")), ValueError, "reg_covar"),
        (dict(seed=-3), ValueError, "seed"),
        (dict(seed=1.5), ValueError, "seed"),
        (dict(dtype=torch.float16), ValueError, "dtype"),
    ],
)
def test_bad_options(kw, exc, match):
    refuse(exc, match, **kw)


def test_init_params_of_the_wrong_shape():
    three = pg.GMMParams(np.ones(3) / 3, np.zeros((3, 2)), np.tile(np.eye(2), (3, 1, 1)))
    refuse(ValueError, "K = 3, D = 2 but the fit asks for K = 2", init=three)
    one_d = pg.GMMParams(np.ones(2) / 2, np.zeros((2, 1)), np.ones((2, 1, 1)))
    refuse(ValueError, "D = 1 but the fit asks for K = 2 on D = 2", init=one_d)


# --- GMMParams validates its own fields ----------------------------------------------------------
EYE2 = np.tile(np.eye(2), (2, 1, 1))


@pytest.mark.parametrize(
    "alpha, mu, cov, exc, match",
    [
        ([0.5, 0.6], np.zeros((2, 2)), EYE2, ValueError, "simplex"),
        ([1.5, -0.5], np.zeros((2, 2)), EYE2, ValueError, "simplex"),
        ([[0.5, 0.5]], np.zeros((2, 2)), EYE2, ValueError, r"alpha must have shape \(K,\)"),
        ([], np.zeros((0, 2)), np.zeros((0, 2, 2)), ValueError, "K >= 1"),
        ([0.5, 0.5], np.zeros((3, 2)), EYE2, ValueError, r"mu must have shape \(K, D\) = \(2, D\)"),
        ([0.5, 0.5], np.zeros((2, 2)), np.eye(2), ValueError, r"cov must have shape \(K, D, D\) = \(2, 2, 2\)"),
        ([0.5, 0.5], [[0.0, np.nan], [0.0, 0.0]], EYE2, ValueError, "mu has NaN"),
        ([0.5, 0.5], np.zeros((2, 2)), [[[1, 0.5], [0, 1]], np.eye(2)], ValueError, "symmetric"),
        ([0.5, 0.5], np.zeros((2, 2)), [np.eye(2), [[1, 2], [2, 1]]], pg.DegenerateComponentError, "component 1"),
        (["a", "b"], np.zeros((2, 2)), EYE2, TypeError, "alpha must hold real numbers"),
        ([0.5, 0.5], np.zeros((2, 2)), torch.ones(2, 2, 2, dtype=torch.bool), TypeError, "cov must hold real"),
    ],
)
def test_gmm_params_validation(alpha, mu, cov, exc, match):
    with pytest.raises(exc, match=match):
        pg.GMMParams(alpha, mu, cov)


def test_gmm_params_shapes_and_dtypes():
    p = pg.GMMParams([0.25, 0.75], [1.0, 2.0], [0.5, 2.0])  # 1-D shorthands
    assert p.mu.shape == (2, 1) and p.cov.shape == (2, 1, 1) and p.dtype == torch.float64
    q = pg.GMMParams(torch.tensor([1.0], dtype=torch.float32), torch.zeros(1, 3), torch.eye(3)[None])
    assert q.dtype == torch.float32 and q.mu.dtype == q.cov.dtype == torch.float32
    with pytest.raises(Exception):
        p.alpha = torch.ones(2)  # immutable
