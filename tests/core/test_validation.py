"""Bad input is refused before any work starts, with a message that names the problem."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

import ppl_gmm as pg
from ppl_gmm.core.validation import as_data, check_fit_args, check_init

GOOD = np.random.default_rng(0).normal(size=(30, 2))


@pytest.fixture(autouse=True)
def no_work(monkeypatch):
    """Any initialisation during these tests means validation came too late."""
    import ppl_gmm.inference.cavi as cavi

    def boom(*args, **kwargs):
        raise AssertionError("work started before the input was validated")

    monkeypatch.setattr(cavi, "initial_params_source", boom)


def test_the_no_work_guard_intercepts_a_valid_fit():
    """The autouse guard above patches the initialisation fit_cavi really calls (else every
    "refused before any work" test below would pass vacuously)."""
    with pytest.raises(AssertionError, match="work started before the input was validated"):
        pg.fit_cavi(GOOD, 2, seed=0)


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
    "x, exc, match",
    [
        (np.empty((0, 2)), ValueError, "empty"),
        (np.empty((5, 0)), ValueError, "no columns"),
        (np.zeros((4, 3, 2)), ValueError, "3-D"),
        (3.0, ValueError, "scalar"),
        (np.array([["1", "2"], ["3", "4"]]), TypeError, "strings"),
        (np.array([[1.0, "a"], [2.0, 3.0]], dtype=object), TypeError, "found str 'a' at index \\(0, 1\\)"),
        (np.array([[True, False], [False, True]]), TypeError, "booleans"),
        (np.array([[1 + 2j, 0], [1, 1]]), TypeError, "complex"),
        (torch.tensor([[1 + 1j, 2]]), TypeError, "complex"),
        (np.array(["2020-01-01", "2020-01-02"], dtype="datetime64[D]"), TypeError, "dates"),
        ([[1.0, 2.0], [3.0]], TypeError, "could not be read"),
        (pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "z"]}), TypeError, "found str 'x'"),
    ],
)
def test_bad_data_is_refused(x, exc, match):
    with pytest.raises(exc, match=match) as info:
        pg.fit_cavi(x, 1)
    assert type(info.value) is exc  # not merely a subclass


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
    [
        (0, ValueError, "at least 1"),
        (-1, ValueError, "at least 1"),
        (31, ValueError, "larger than the number of data"),
        (2.0, TypeError, "must be an integer"),
        (True, TypeError, "must be an integer"),
        ("2", TypeError, "integer"),
    ],
)
def test_bad_k(k, exc, match):
    refuse(exc, match, k=k)


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        ({"covariance_type": "full_rank"}, ValueError, "unknown covariance_type 'full_rank'"),
        ({"covariance_type": None}, ValueError, "unknown covariance_type"),
        ({"init": "k-means"}, ValueError, "unknown init 'k-means'"),
        ({"init": np.zeros((2, 2))}, ValueError, "unknown init"),
        ({"tol": -1.0}, ValueError, "tol must be >= 0"),
        ({"tol": float("nan")}, ValueError, "tol"),
        ({"tol": "small"}, TypeError, "tol must be a number"),
        ({"max_iter": -1}, ValueError, "max_iter must be >= 0"),
        ({"max_iter": 10.5}, TypeError, "max_iter must be an integer"),
        ({"n_init": 0}, ValueError, "n_init must be >= 1"),
        ({"reg_covar": -1e-6}, ValueError, "reg_covar"),
        ({"reg_covar": float("inf")}, ValueError, "reg_covar"),
        ({"seed": -3}, ValueError, "seed"),
        ({"seed": 1.5}, ValueError, "seed"),
        ({"dtype": torch.float16}, ValueError, "dtype"),
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
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'alpha'"):
        p.alpha = torch.ones(2)  # immutable


def test_check_init_and_check_fit_args():
    """The validators the fits share (core.validation), called directly."""
    x, k, init = check_fit_args(GOOD.tolist(), 2, "random")
    assert x.dtype == torch.float64 and x.shape == (30, 2) and k == 2 and init == "random"
    assert check_fit_args(GOOD.astype(np.float32), 2, "kmeans++")[0].dtype == torch.float32
    assert check_fit_args(GOOD, 2, "kmeans++", dtype=torch.float32)[0].dtype == torch.float32
    two = pg.GMMParams(np.ones(2) / 2, np.zeros((2, 2)), np.tile(np.eye(2), (2, 1, 1)))
    assert check_init(two, 2, 2) is two

    class Other:  # an extra init type (the VB fits accept a VBPosterior)
        k, d = 2, 2

    other = Other()
    assert check_init(other, 2, 2, extra=(Other,)) is other
    with pytest.raises(ValueError, match="unknown init .*; use 'kmeans\\+\\+', 'kmeans', 'random', a GMMParams$"):
        check_init(other, 2, 2)
    with pytest.raises(
        ValueError, match="unknown init 'k-means'; use 'kmeans\\+\\+', 'kmeans', 'random', a GMMParams, a Other"
    ):
        check_init("k-means", 2, 2, extra=(Other,))
    with pytest.raises(ValueError, match="K = 2, D = 2 but the fit asks for K = 3 on D = 2"):
        check_init(two, 3, 2)
    with pytest.raises(TypeError, match="must be an integer"):
        check_fit_args(GOOD, 2.5, "random")


@pytest.mark.parametrize("value", ["yes", 1, None, "False"])
def test_check_bool_refuses_anything_but_a_bool(value):
    from ppl_gmm.core.validation import check_bool

    with pytest.raises(TypeError, match="progress must be True or False"):
        check_bool(value, "progress")
    assert check_bool(np.bool_(True), "progress") is True


@pytest.mark.parametrize("value", ["1e-3", b"1", True])
def test_check_positive_refuses_strings_and_bools(value):
    from ppl_gmm.core.validation import check_positive

    with pytest.raises(TypeError, match="tol must be a number"):
        check_positive(value, "tol")


def test_every_fit_refuses_a_truthy_string_flag():
    """progress="yes" (and jit="no", which is truthy) used to be accepted silently."""
    import ppl_gmm as pg

    x = np.random.default_rng(0).normal(size=(40, 2))
    calls = {
        "fit_cavi": lambda: pg.fit_cavi(x, 2, progress="yes"),
        "fit_map": lambda: pg.fit_map(x, 2, None, progress="yes"),
        "fit_vb": lambda: pg.fit_vb(x, 2, None, progress="yes"),
        "fit_svi": lambda: pg.fit_svi(x, 2, jit="no"),
        "fit_svi_bayes": lambda: pg.fit_svi_bayes(x, 2, progress="yes"),
        "fit_nuts": lambda: pg.fit_nuts(x, 2, jit="no"),
        "select_k": lambda: pg.select_k(x, [1, 2], progress="yes"),
    }
    for name, call in calls.items():
        with pytest.raises(TypeError, match=r"(progress|jit) must be True or False"):
            call()
            pytest.fail(f"{name} accepted a string flag")
