"""core.linalg (Cholesky factors, precision factors, log-determinants) against numpy's
cholesky / inv / slogdet, and the index of the first failing matrix against a per-matrix loop."""

import numpy as np
import pytest
import torch

import ppl_gmm as pg
from ppl_gmm.core.linalg import (
    checked_cholesky,
    cholesky,
    inverse_from_cholesky,
    inverse_lower,
    log_det_from_cholesky,
    precision_cholesky,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: small problems, one torch thread


def _spd(k, d, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(k, d, d))
    return scale * (a @ np.swapaxes(a, -1, -2) + 0.3 * np.eye(d))


def _first_failure_numpy(a, pivot_tol=None):
    """The first matrix (flattened leading index) numpy cannot factorise, or whose pivot
    L_jj² / a_jj falls below ``pivot_tol``; None if all pass."""
    flat = a.reshape(-1, a.shape[-2], a.shape[-1])
    for i, m in enumerate(flat):
        if not np.isfinite(m).all():
            return i
        try:
            chol = np.linalg.cholesky(m)
        except np.linalg.LinAlgError:
            return i
        if pivot_tol is not None and (np.diag(chol) ** 2 / np.diag(m) < pivot_tol).any():
            return i
    return None


@pytest.mark.parametrize("d", [1, 2, 4])
def test_checked_cholesky_factors_match_numpy(d):
    a = _spd(5, d, seed=d)
    chol, bad = checked_cholesky(torch.tensor(a))
    assert bad is None
    np.testing.assert_allclose(chol.numpy(), np.linalg.cholesky(a), rtol=1e-12, atol=1e-14)


def test_checked_cholesky_names_the_first_failing_matrix():
    a = _spd(6, 3, seed=1)
    a[2] = np.diag([1.0, -1.0, 1.0])  # indefinite
    a[4] = np.ones((3, 3))  # singular (rank 1)
    assert _first_failure_numpy(a) == 2
    _, bad = checked_cholesky(torch.tensor(a))
    assert bad == 2
    # a leading batch shape (2, 3): the index is into the flattened stack
    b = _spd(6, 2, seed=2).reshape(2, 3, 2, 2)
    b[1, 1] = [[1.0, 2.0], [2.0, 1.0]]
    assert _first_failure_numpy(b) == 4
    assert checked_cholesky(torch.tensor(b))[1] == 4
    # a non-finite matrix is named even where the factorisation reports nothing
    c = _spd(3, 2, seed=3)
    c[1, 0, 0] = np.nan
    assert checked_cholesky(torch.tensor(c))[1] == 1


def test_checked_cholesky_pivot_tol_names_a_nearly_singular_matrix():
    """A matrix whose second coordinate is the first one to 1e-7 relative: the factorisation
    succeeds (pivot ratio ~1e-14) but pivot_tol = 1e-10 names it; a looser tol does not."""
    a = _spd(4, 2, seed=4)
    v = np.array([1.0, 1.0 + 1e-7])
    a[3] = np.outer(v, v) * 5.0 + 1e-13 * np.eye(2)
    a[1] = _spd(1, 2, seed=9, scale=1e8)[0]  # large but well-conditioned: no false alarm (scale-free)
    assert _first_failure_numpy(a) is None
    assert checked_cholesky(torch.tensor(a))[1] is None
    assert _first_failure_numpy(a, pivot_tol=1e-10) == 3
    assert checked_cholesky(torch.tensor(a), pivot_tol=1e-10)[1] == 3
    assert _first_failure_numpy(a, pivot_tol=1e-16) is None
    assert checked_cholesky(torch.tensor(a), pivot_tol=1e-16)[1] is None
    # a failed factorisation is still reported first when pivot_tol is given
    a[0] = -np.eye(2)
    assert checked_cholesky(torch.tensor(a), pivot_tol=1e-10)[1] == 0


def test_cholesky_raises_naming_the_component():
    a = _spd(3, 2, seed=5)
    a[1] = [[1.0, 2.0], [2.0, 1.0]]
    with pytest.raises(pg.DegenerateComponentError, match="component 1"):
        cholesky(torch.tensor(a))
    with pytest.raises(pg.DegenerateComponentError, match="component 1"):
        precision_cholesky(torch.tensor(a))


@pytest.mark.parametrize("d", [1, 3])
def test_precision_cholesky_inverts_the_covariance(d):
    """U U^T = Σ^{-1} (numpy.linalg.inv), U upper triangular, from cov or from its factor."""
    cov = _spd(4, d, seed=10 + d)
    ref = np.linalg.inv(cov)
    u = precision_cholesky(torch.tensor(cov))
    np.testing.assert_allclose((u @ u.mT).numpy(), ref, rtol=1e-10, atol=1e-12)
    assert torch.equal(u, torch.triu(u))
    from_chol = precision_cholesky(chol=torch.tensor(np.linalg.cholesky(cov)))
    np.testing.assert_allclose((from_chol @ from_chol.mT).numpy(), ref, rtol=1e-10, atol=1e-12)
    with pytest.raises(TypeError, match="needs cov or chol"):
        precision_cholesky()


@pytest.mark.parametrize("d", [1, 2, 5])
def test_log_det_from_cholesky_matches_slogdet(d):
    a = _spd(3, d, seed=20 + d, scale=7.0)
    sign, ref = np.linalg.slogdet(a)
    assert (sign == 1).all()
    got = log_det_from_cholesky(torch.tensor(np.linalg.cholesky(a)))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-12)
    # a precision factor U = L^{-T} gives −log|Σ|
    u = precision_cholesky(torch.tensor(a))
    np.testing.assert_allclose(log_det_from_cholesky(u).numpy(), -ref, rtol=1e-12, atol=1e-12)


def test_inverses_match_numpy():
    a = _spd(3, 3, seed=30)
    chol = np.linalg.cholesky(a)
    inv = inverse_from_cholesky(torch.tensor(chol))
    np.testing.assert_allclose(inv.numpy(), np.linalg.inv(a), rtol=1e-10, atol=1e-12)
    assert torch.equal(inv, inv.mT)  # symmetrised
    np.testing.assert_allclose(inverse_lower(torch.tensor(chol)).numpy(), np.linalg.inv(chol), rtol=1e-10, atol=1e-12)
