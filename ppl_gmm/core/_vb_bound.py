"""The full variational lower bound L(q) of the Bayesian GMM (PRML 10.70–10.77, every constant) for
the posterior ``core._vb_q.VBPosterior``: term by term for any q(Z) (:func:`lower_bound`), its
global part (:func:`global_terms`, :func:`weight_terms`), and its closed form at the M-step optimum
(:func:`bound_after_m_step`, evaluated by ``vb.fit_vb`` each iteration).
"""

from __future__ import annotations

import math

import torch

from ._distributions import expected_log_det, log_dirichlet_norm, log_wishart_norm
from ._normal_wishart import NormalWishartPrior
from ._vb_covariance import vb_prior
from ._vb_q import VBPosterior
from ._vb_weights import log_weight_norm, stick_expectations
from .gaussian import LOG_2PI
from .gmm import check_gamma, elbo_from_log_weights
from .validation import ArrayLike

__all__ = ["weight_terms", "global_terms", "lower_bound", "bound_after_m_step"]


def weight_terms(post: VBPosterior, alpha0: float) -> torch.Tensor:
    """E[ln p(weights)] − E[ln q(weights)], every constant: PRML 10.73 − 10.76 (Dirichlet), or for the
    sticks Σ_k [ln alpha0 + (alpha0 − 1) E ln(1 − v_k)] − Σ_k [(a_k − 1) E ln v_k + (b_k − 1) E ln(1 − v_k)
    − ln B(a_k, b_k)] (Blei & Jordan 2006)."""
    k, dtype = post.k, post.dtype
    if post.stick_b is None:
        elog_pi = post.expected_log_weights()  # ln π̃_k, 10.66
        e_log_p = log_dirichlet_norm(torch.full((k,), alpha0, dtype=dtype)) + (alpha0 - 1) * elog_pi.sum()  # 10.73
        e_log_q = ((post.alpha - 1) * elog_pi).sum() + log_dirichlet_norm(post.alpha)  # 10.76
        return e_log_p - e_log_q
    a, b = post.alpha, post.stick_b
    e_log_v, e_log_1mv = stick_expectations(a, b)
    e_log_p = k * math.log(alpha0) + (alpha0 - 1) * e_log_1mv.sum()  # Beta(1, alpha0): 1 / B(1, alpha0) = alpha0
    e_log_q = ((a - 1) * e_log_v + (b - 1) * e_log_1mv).sum() + log_weight_norm(a, b)
    return e_log_p - e_log_q


# --- the bound (PRML 10.70–10.77) ------------------------------------------------------------------
def global_terms(post: VBPosterior, prior: NormalWishartPrior) -> torch.Tensor:
    """E[ln p(α)] + E[ln p(μ, Λ)] − E[ln q(α)] − E[ln q(μ, Λ)], PRML 10.73, 10.74, 10.76, 10.77 (the
    weights' part by :func:`weight_terms`), under the prior of the posterior's covariance type (:func:`vb_prior`)."""
    k, d = post.k, post.d
    prior = vb_prior(prior, post.covariance_type)
    m0, _, w0_inv = prior.cast(post.dtype)
    log_det_w = post.log_det_W()
    elog_det = expected_log_det(log_det_w, post.nu, d)  # ln Λ̃_k, 10.65
    dm = post.m - m0
    mahal = torch.einsum("kd,kde,ke->k", dm, post.W, dm)
    trace = torch.einsum("de,ked->k", w0_inv, post.W)  # Tr(W0⁻¹ W_k)
    log_b0 = prior.log_wishart_norm0(post.dtype)
    e_log_p_mu_lambda = (
        0.5
        * (
            d * math.log(prior.beta0 / (2 * math.pi))
            + elog_det
            - d * prior.beta0 / post.beta
            - prior.beta0 * post.nu * mahal
        ).sum()
        + k * log_b0
        + 0.5 * (prior.nu0 - d - 1) * elog_det.sum()
        - 0.5 * (post.nu * trace).sum()
    )  # 10.74
    entropy_lambda = (
        -log_wishart_norm(log_det_w, post.nu, d) - 0.5 * (post.nu - d - 1) * elog_det + 0.5 * post.nu * d
    )  # H[q(Λ_k)], B.82
    e_log_q_mu_lambda = (
        0.5 * elog_det + 0.5 * d * torch.log(post.beta / (2 * math.pi)) - 0.5 * d - entropy_lambda
    ).sum()  # 10.77
    return weight_terms(post, prior.alpha0) + e_log_p_mu_lambda - e_log_q_mu_lambda  # 10.73 − 10.76 + 10.74 − 10.77


def lower_bound(x: ArrayLike, gamma: ArrayLike, posterior: VBPosterior, prior: NormalWishartPrior) -> torch.Tensor:
    """The full variational lower bound L(q) of PRML 10.70, term by term (10.71–10.77), for any
    q(Z) = Π_i Cat(gamma_i) and any ``posterior`` q(α) q(μ, Λ), with every constant:

        L = Σ_ik r_ik ln ρ_ik − Σ_ik r_ik ln r_ik                   (10.71 + 10.72 − 10.75)
            + E[ln p(α)] − E[ln q(α)] + E[ln p(μ, Λ)] − E[ln q(μ, Λ)]   (10.73 − 10.76 + 10.74 − 10.77)

    (Σ_k r_ik ln ρ_ik is 10.71 + 10.72 per point, by 10.46 and 10.64.)  0·ln 0 = 0.  ``gamma`` is
    checked as in ``core.gmm.elbo`` (``check_gamma``: finite, non-negative, rows on the simplex).
    """
    x = posterior._x(x)
    prior.check_data(x)
    gamma = check_gamma(gamma, x.shape[0], posterior.k, posterior.dtype)  # the rule of eq. 18's γ
    data_terms = elbo_from_log_weights(gamma, posterior.log_rho(x))  # 10.71 + 10.72 − 10.75
    return data_terms + global_terms(posterior, prior)


def bound_after_m_step(
    entropy: torch.Tensor,
    log_norm_q_weights: torch.Tensor,
    beta: torch.Tensor,
    nu: torch.Tensor,
    log_det_w: torch.Tensor,
    const: torch.Tensor,
    n: float,
    d: int,
) -> torch.Tensor:
    """10.70–10.77 when q(α) q(μ, Λ) is the M-step optimum for the same r: the ln π̃ and ln Λ̃
    terms cancel, the trace terms sum to −½ nu_k D, leaving (scikit-learn's ``lower_bound_`` plus
    constants)

        L = H[r] − (N D / 2) ln 2π + ln C(alpha0) − ln C(alpha) + (K D / 2) ln beta0 − (D/2) Σ ln beta_k
            + K ln B(W0, nu0) − Σ_k ln B(W_k, nu_k).

    ``const`` holds the prior's normalisers (ln C(alpha0) or K ln alpha0 for the sticks, (K D / 2) ln beta0,
    K ln B(W0, nu0)) and ``log_norm_q_weights`` is :func:`log_weight_norm` of q (ln C(alpha), or
    −Σ ln B(a_k, b_k) for the sticks, whose E ln v terms cancel the same way).  Every covariance type:
    the restricted optima (module docstring) keep the trace identity (tr(M_k W_k) = D for diag and
    spherical, Σ_k tr(M_k W) = K D for tied).
    """
    return (
        entropy
        - 0.5 * n * d * LOG_2PI
        + const
        - log_norm_q_weights
        - 0.5 * d * torch.log(beta).sum()
        - log_wishart_norm(log_det_w, nu, d).sum()
    )
