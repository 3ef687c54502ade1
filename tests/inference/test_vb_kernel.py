"""The blocked VB kernel (inference._vb_kernel) against core: one ``scan`` — the design path (ln ρ
as a linear function of the features) and the exact path (differences first) — gives the r, the
entropy H[r] and Σ_i ln Σ_k ρ_ik of ``VBPosterior.log_rho`` normalised by scipy (softmax,
logsumexp), for a posterior built by ``VBPosterior.from_update``; the M-step from T = r φ is
``core.priors.conjugate_update_from_data``. Each to ~1e-12."""

import numpy as np
import pytest
import torch
from scipy.special import log_softmax, logsumexp, softmax

import ppl_gmm as pg
from ppl_gmm.core.priors import NormalWishartPrior, conjugate_update_from_data
from ppl_gmm.core.vb_posterior import VBPosterior, expected_log_weights, posterior_cholesky
from ppl_gmm.inference import _vb_kernel as kernel

from oracles import random_gamma, random_params

F64 = torch.float64

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: small problems, one torch thread


def _setup(d, far=False, n=300, k=3, seed=0):
    """Data, the centre, a prior, and a posterior from a random (not optimal) r, as VBProblem holds
    them: ConjugateStats ``st`` and Cholesky factors of W_k⁻¹ in centred coordinates."""
    params = random_params(k, d, seed=seed)
    params = pg.GMMParams(torch.full((k,), 1.0 / k, dtype=F64), params.mu, params.cov)
    if far:  # component 2 1e5 away: G = max_k ν_k m_kᵀ W_k m_k ≫ G_EXPANSION_MAX
        mu = params.mu.clone()
        mu[2, 0] += 1e5
        params = pg.GMMParams(params.alpha, mu, params.cov)
    x, z = pg.datasets.make_mixture(n, params, seed=seed)
    beta0 = 1e-8 if far else 0.05  # far: the prior term beta0 (m_k − m0)(m_k − m0)ᵀ must not swamp W_k⁻¹
    prior = NormalWishartPrior(0.7, x.mean(0) + 0.3, beta0, d + 1.5, 0.5 * torch.eye(d, dtype=F64))
    centre = x.mean(0)
    xc = x - centre
    m0, _, w0_inv = prior.cast(F64)
    m0c = m0 - centre
    gamma = torch.nn.functional.one_hot(z, k).to(F64)
    if not far:  # (far: any share of the far points would give every component a huge scatter)
        gamma = 0.5 * gamma + 0.5 * random_gamma(n, k, seed=seed + 1)
    st = conjugate_update_from_data(xc, gamma, prior, m0c, w0_inv)
    chol = posterior_cholesky(st.w_inv)
    post = VBPosterior.from_update(st.alpha, st.beta, st.m + centre, st.nu, chol)  # data coordinates
    return x, xc, prior, m0c, w0_inv, st, chol, post


def _reference(x, post):
    """r (N, K), H[r] and Σ_i ln Σ_k ρ_ik from VBPosterior.log_rho, normalised by scipy."""
    log_rho = post.log_rho(x).numpy()
    return (
        softmax(log_rho, axis=1),
        -(softmax(log_rho, axis=1) * log_softmax(log_rho, axis=1)).sum(),
        logsumexp(log_rho, axis=1).sum(),
    )


def _rel(a, b):
    return abs(float(a) - float(b)) / abs(float(b))


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("block_rows, cache", [(None, True), (None, False), (37, True), (37, False)])
def test_design_scan_is_log_rho_normalised(d, block_rows, cache):
    x, xc, prior, m0c, w0_inv, st, chol, post = _setup(d)
    c, u, _ = kernel.e_terms(st, chol, d, expected_log_weights(st.alpha))
    assert kernel.spread(st, u) <= kernel.G_EXPANSION_MAX  # the design path is the one VBProblem takes
    iu = torch.triu_indices(d, d)
    design = kernel.design_t(st.m, u @ u.transpose(1, 2), c, iu)
    feats = kernel.features_t(xc, iu) if cache else None
    blocks, t_stats, h, lse = kernel.scan(xc, 3, design=design, feats_t=feats, iu=iu, block_rows=block_rows)
    assert len(blocks) == (1 if block_rows is None else -(-len(x) // block_rows))
    r_ref, h_ref, lse_ref = _reference(x, post)
    np.testing.assert_allclose(torch.cat(blocks, 1).T.numpy(), r_ref, rtol=0, atol=1e-12)
    assert _rel(h, h_ref) < 1e-12 and _rel(lse, lse_ref) < 1e-12
    # T = r φ: the M-step from it is the two-pass conjugate update of the same r
    new = kernel.m_step_from_stats(t_stats, prior, m0c, w0_inv, iu, d)
    ref = conjugate_update_from_data(xc, torch.cat(blocks, 1).T, prior, m0c, w0_inv)
    for name in ref._fields:
        torch.testing.assert_close(getattr(new, name), getattr(ref, name), rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("far", [False, True], ids=["near", "far"])
def test_exact_scan_is_log_rho_normalised(d, far):
    x, xc, prior, m0c, w0_inv, st, chol, post = _setup(d, far=far)
    c, u, _ = kernel.e_terms(st, chol, d, expected_log_weights(st.alpha))
    assert (kernel.spread(st, u) > kernel.G_EXPANSION_MAX) == far  # far: VBProblem takes the exact path
    blocks, t_stats, h, lse = kernel.scan(xc, 3, exact=(st.m, u, c), want_stats=False, block_rows=64)
    assert t_stats is None and len(blocks) == 5
    r_ref, h_ref, lse_ref = _reference(x, post)
    # far: centring at the data mean (~3e4 from the near points) costs ~ε·3e4 in x_c, ~6e-13 in r (measured)
    np.testing.assert_allclose(torch.cat(blocks, 1).T.numpy(), r_ref, rtol=0, atol=5e-12 if far else 1e-12)
    assert _rel(lse, lse_ref) < 1e-12
    assert abs(float(h) - h_ref) < 1e-12 * max(abs(h_ref), 1.0)  # far: r is almost one-hot, H small


@pytest.mark.parametrize("d", [1, 2, 4])
def test_m_step_from_stats_is_conjugate_update_from_data(d):
    """For any r (here random) and T = r φ built directly: the raw-moment scatter gives the same
    posterior as the two-pass one, every field."""
    x, xc, prior, m0c, w0_inv, *_ = _setup(d, seed=d)
    iu = torch.triu_indices(d, d)
    for gamma in (random_gamma(len(x), 3, seed=7), torch.nn.functional.one_hot(torch.arange(len(x)) % 3, 3).to(F64)):
        t_stats = gamma.T @ kernel.features_t(xc, iu).T  # (K, P)
        new = kernel.m_step_from_stats(t_stats, prior, m0c, w0_inv, iu, d)
        ref = conjugate_update_from_data(xc, gamma, prior, m0c, w0_inv)
        for name in ref._fields:
            torch.testing.assert_close(getattr(new, name), getattr(ref, name), rtol=1e-12, atol=1e-12, msg=name)
