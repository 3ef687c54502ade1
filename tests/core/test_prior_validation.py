"""Every field of NormalWishartPrior is checked for its shape and kind, never silently reshaped:
a (2, 2) m0 is refused rather than flattened into a 4-D prior, a (K,) alpha0 rather than read as
one number, strings and bools rather than parsed."""

import numpy as np
import pytest
import torch

from ppl_gmm.core.priors import NormalWishartPrior

BASE = {"alpha0": 1.0, "m0": [0.0, 0.0], "beta0": 1.0, "nu0": 3.0, "W0": np.eye(2)}


def _prior(**kwargs):
    return NormalWishartPrior(**{**BASE, **kwargs})


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        # m0: a vector (D,), never flattened from a matrix
        ({"m0": np.zeros((2, 2)), "W0": np.eye(4)}, ValueError, r"m0 must be a vector of shape \(D,\).*\(2, 2\)"),
        ({"m0": np.zeros((1, 2))}, ValueError, r"m0 must be a vector of shape \(D,\).*\(1, 2\)"),
        ({"m0": torch.zeros(2, 1)}, ValueError, r"m0 must be a vector of shape \(D,\).*\(2, 1\)"),
        ({"m0": [[0.0], [0.0]]}, ValueError, r"m0 must be a vector of shape \(D,\).*\(2, 1\)"),
        ({"m0": ["1", "2"]}, TypeError, "m0 must hold real numbers"),
        ({"m0": [True, False]}, TypeError, "m0 must hold real numbers"),
        ({"m0": torch.zeros(2, dtype=torch.complex128)}, TypeError, "m0 must hold real numbers"),
        ({"m0": [np.inf, 0.0]}, ValueError, "m0 must be a finite"),
        ({"m0": [], "W0": np.zeros((0, 0))}, ValueError, "m0 must be a finite vector of length D >= 1"),
        # W0: (D, D), real, finite, symmetric, positive definite
        ({"W0": np.eye(2)[..., None]}, ValueError, r"W0 must have shape \(D, D\) = \(2, 2\).*\(2, 2, 1\)"),
        ({"W0": np.ones(4)}, ValueError, r"W0 must have shape \(D, D\) = \(2, 2\).*\(4,\)"),
        ({"W0": 2.0}, ValueError, r"W0 must have shape \(D, D\) = \(2, 2\)"),
        ({"W0": [["1", "0"], ["0", "1"]]}, TypeError, "W0 must hold real numbers"),
        ({"W0": np.eye(2, dtype=bool)}, TypeError, "W0 must hold real numbers"),
        ({"W0": [[np.nan, 0.0], [0.0, 1.0]]}, ValueError, "NaN or infinite"),
        ({"W0": [[1.0, 0.5], [0.0, 1.0]]}, ValueError, "symmetric"),
        ({"W0": [[1.0, 2.0], [2.0, 1.0]]}, ValueError, "positive definite"),
        ({"W0": np.zeros((2, 2))}, ValueError, "positive definite"),
        # alpha0, beta0, nu0: one finite real number each (the prior is symmetric over components)
        ({"alpha0": np.ones(3)}, ValueError, r"alpha0 must be a scalar .*shape \(3,\)"),
        ({"alpha0": np.ones(1)}, ValueError, r"alpha0 must be a scalar .*shape \(1,\)"),
        ({"beta0": torch.ones(2)}, ValueError, r"beta0 must be a scalar .*shape \(2,\)"),
        ({"nu0": np.full((1, 1), 3.0)}, ValueError, r"nu0 must be a scalar .*shape \(1, 1\)"),
        ({"alpha0": np.bool_(True)}, TypeError, "alpha0 must be a real number"),
        ({"beta0": np.array(True)}, TypeError, "beta0 must be a real number"),
        ({"nu0": torch.tensor(3.0 + 0j)}, TypeError, "nu0 must be a real number"),
        ({"nu0": "3"}, TypeError, "nu0 must be a real number"),
        ({"beta0": float("nan")}, ValueError, "beta0 must be finite"),
        ({"nu0": np.inf}, ValueError, "nu0 must be finite"),
        ({"alpha0": 0.0}, ValueError, "alpha0 must be > 0"),
        ({"beta0": -1.0}, ValueError, "beta0 must be > 0"),
        ({"nu0": 1.0}, ValueError, r"nu0 must be > D - 1 = 1"),
    ],
)
def test_each_malformed_field_is_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        _prior(**kwargs)


def test_what_is_supported_still_works():
    # D = 1: m0 and W0 may be scalars, a 1-vector, or W0 (1, 1)
    for m0, w0 in [(0.0, 2.0), ([0.0], [2.0]), (np.array(0.0), [[2.0]]), (torch.zeros(1), torch.full((1, 1), 2.0))]:
        p = NormalWishartPrior(1.0, m0, 0.1, 1.5, w0)
        assert p.m0.shape == (1,) and p.W0.shape == (1, 1) and float(p.W0) == 2.0
    # scalars as numpy / 0-d arrays / 0-d tensors; integer vectors; a list of 0-d tensors
    p = NormalWishartPrior(np.float32(0.5), [1, 2], np.array(2.0), torch.tensor(4.0), np.eye(2, dtype=int))
    assert (p.alpha0, p.beta0, p.nu0) == (0.5, 2.0, 4.0) and all(isinstance(v, float) for v in (p.alpha0, p.nu0))
    assert p.m0.dtype == torch.float64 and p.m0.tolist() == [1.0, 2.0] and p.W0.dtype == torch.float64
    assert _prior(m0=[torch.tensor(1.0), torch.tensor(2.0)]).m0.tolist() == [1.0, 2.0]
    assert _prior(nu0=1.0 + 1e-9).nu0 > 1.0  # nu0 just above D - 1
