"""The conjugate update of the Dirichlet × Normal-Wishart prior (``core.priors``) and its log density
from a precision factor — the algebra that MAP-EM (``inference.map``), variational Bayes
(``inference.vb``), the Bayesian Pyro guide (``ppl.bayes``), Gibbs and the bound
(``core.vb_posterior``) share.

Conjugate update for responsibilities γ (N, K) — the same formulas serve the
VB M-step (PRML 10.58, 10.60–10.63) and the MAP M-step (the mode of the same
Dir × Normal-Wishart, ``core._map_modes.posterior_mode``)::

    N_k = Σ_i γ_ik                                   (10.51)
    alpha_k = alpha0 + N_k                           (10.58)
    beta_k  = beta0 + N_k                            (10.60)
    m_k     = (beta0 m0 + Σ_i γ_ik x_i) / beta_k     (10.61)
    nu_k    = nu0 + N_k                              (10.63)
    W_k⁻¹   = W0⁻¹ + Σ_i γ_ik (x_i − m_k)(x_i − m_k)ᵀ + beta0 (m_k − m0)(m_k − m0)ᵀ   (10.62)

The last line is PRML 10.62 (W0⁻¹ + N_k S_k + beta0 N_k/(beta0 + N_k)(x̄_k − m0)(x̄_k − m0)ᵀ)
rewritten around m_k: it needs no division by N_k (an empty component gets
exactly the prior), its scatter is centred at m_k (two-pass moments, no
cancellation for data far from the origin) and it is positive definite for any γ.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from ._normal_wishart import NormalWishartPrior
from .gaussian import mahalanobis_sq
from .gmm import weighted_scatter
from .linalg import log_det_from_cholesky

__all__ = [
    "ConjugateStats",
    "conjugate_update",
    "conjugate_update_from_data",
    "log_normal_wishart_density",
    "log_wishart_density",
]


class ConjugateStats(NamedTuple):
    """The conjugate update of one γ (see the module docstring); ``w_inv`` is W_k⁻¹ (K, D, D)."""

    n_k: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor
    m: torch.Tensor
    nu: torch.Tensor
    w_inv: torch.Tensor
    scatter: torch.Tensor  # Σ_i γ_ik (x_i − m_k)(x_i − m_k)ᵀ, the scatter about the new m_k


def conjugate_update(
    prior: NormalWishartPrior,
    n_k: torch.Tensor,
    sum_x: torch.Tensor,
    scatter: Callable[[torch.Tensor], torch.Tensor],
    m0: torch.Tensor,
    w0_inv: torch.Tensor,
) -> ConjugateStats:
    """The Dir × Normal-Wishart posterior from sufficient statistics (PRML 10.58, 10.60–10.63).

    Parameters
    ----------
    n_k : (K,)       N_k = Σ_i γ_ik (10.51)
    sum_x : (K, D)   Σ_i γ_ik x_i
    scatter :        m ↦ Σ_i γ_ik (x_i − m_k)(x_i − m_k)ᵀ, (K, D) → (K, D, D): two-pass from the
                     data (:func:`conjugate_update_from_data`) or from raw moments (``inference.vb``)
    m0, w0_inv :     the prior's m0 and W0⁻¹ in the work dtype and coordinates
    """
    alpha = prior.alpha0 + n_k  # 10.58
    beta = prior.beta0 + n_k  # 10.60
    m = (prior.beta0 * m0 + sum_x) / beta[:, None]  # 10.61
    nu = prior.nu0 + n_k  # 10.63
    dm = m - m0
    s_m = scatter(m)
    w_inv = w0_inv + s_m + prior.beta0 * dm[:, :, None] * dm[:, None, :]  # 10.62
    return ConjugateStats(n_k, alpha, beta, m, nu, 0.5 * (w_inv + w_inv.transpose(-1, -2)), s_m)


def conjugate_update_from_data(
    x: torch.Tensor,
    gamma: torch.Tensor,
    prior: NormalWishartPrior,
    m0: torch.Tensor | None = None,
    w0_inv: torch.Tensor | None = None,
) -> ConjugateStats:
    """:func:`conjugate_update` for data ``x`` (N, D) and responsibilities ``gamma`` (N, K; a
    transposed view of (K, N) works), the scatter two-pass (``gmm.weighted_scatter``).

    The sums over rows run on the data's device; the O(K·D²) update on ``m0``'s (the prior's:
    the CPU), so data on a GPU need only their statistics moved."""
    prior_m0, _, prior_w0_inv = prior.cast(x.dtype)
    m0 = prior_m0 if m0 is None else m0
    w0_inv = prior_w0_inv if w0_inv is None else w0_inv
    here, there = x.device, m0.device
    n_k = gamma.sum(0).to(there)  # 10.51
    sum_x = (gamma.T @ x).to(there)  # Σ_i γ_ik x_i
    scatter = lambda m: weighted_scatter(x, gamma, m.to(here)).to(there)
    return conjugate_update(prior, n_k, sum_x, scatter, m0, w0_inv)


def log_normal_wishart_density(
    mu: torch.Tensor, prec_chol: torch.Tensor, prior: NormalWishartPrior, m0: torch.Tensor, w0_inv: torch.Tensor
) -> torch.Tensor:
    """ln N(μ_k | m0, (beta0 Λ_k)⁻¹) + ln W(Λ_k | W0, nu0) per component (K,), PRML 10.40, B.37, B.78::

        ln N(μ_k | m0, (beta0 Λ_k)⁻¹) = (D/2) ln(beta0 / 2π) + ½ ln|Λ_k| − (beta0/2) (μ_k − m0)ᵀ Λ_k (μ_k − m0)
        ln W(Λ_k | W0, nu0) = ln B(W0, nu0) + ((nu0 − D − 1)/2) ln|Λ_k| − ½ tr(W0⁻¹ Λ_k)

    ``prec_chol`` (K, D, D): triangular factors U_k (lower or upper) with Λ_k = U_k U_kᵀ and a
    positive diagonal, e.g. ``linalg.precision_cholesky`` or the lower factor the NUTS coordinates
    give; ``m0`` and ``w0_inv`` are the prior's m0 and W0⁻¹ in the work dtype (``prior.cast``).
    Differentiable."""
    return _log_mean_density(mu, prec_chol, prior, m0) + log_wishart_density(prec_chol, prior, w0_inv)


def _log_mean_density(
    mu: torch.Tensor, prec_chol: torch.Tensor, prior: NormalWishartPrior, m0: torch.Tensor
) -> torch.Tensor:
    """ln N(μ_k | m0, (beta0 Λ_k)⁻¹) per component (PRML B.37), Λ_k = U_k U_kᵀ."""
    d = mu.shape[-1]
    log_det_lambda = log_det_from_cholesky(prec_chol)  # ln|Λ_k| = 2 Σ_d ln U_k,dd
    mahal = mahalanobis_sq(m0[None], mu, prec_chol)[0]  # (μ_k − m0)ᵀ Λ_k (μ_k − m0)
    return 0.5 * d * math.log(prior.beta0 / (2 * math.pi)) + 0.5 * log_det_lambda - 0.5 * prior.beta0 * mahal


def log_wishart_density(prec_chol: torch.Tensor, prior: NormalWishartPrior, w0_inv: torch.Tensor) -> torch.Tensor:
    """ln W(Λ | W0, nu0) = ln B(W0, nu0) + ((nu0 − D − 1)/2) ln|Λ| − ½ tr(W0⁻¹ Λ) (PRML B.78) per
    factor U (..., D, D) of Λ = U Uᵀ (triangular, positive diagonal); differentiable."""
    d = prec_chol.shape[-1]
    log_det_lambda = log_det_from_cholesky(prec_chol)  # ln|Λ| = 2 Σ_d ln U_dd
    trace = ((w0_inv @ prec_chol) * prec_chol).sum((-2, -1))  # tr(W0⁻¹ U Uᵀ)
    return prior.log_wishart_norm0(prec_chol.dtype) + 0.5 * (prior.nu0 - d - 1) * log_det_lambda - 0.5 * trace  # B.78
