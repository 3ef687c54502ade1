"""The variational posterior of the Bayesian GMM (Bishop, PRML §10.2) and its full bound, for every
covariance type and both weight priors.

    q(α) q(μ, Λ) = Dir(α | alpha_k) Π_k N(μ_k | m_k, (beta_k Λ_k)⁻¹) W(Λ_k | W_k, nu_k)   (10.57, 10.59)

``VBPosterior`` holds it with its expectations (E[ln π_k] 10.66, E[ln |Λ_k|] 10.65, E[π_k] B.17,
E[Λ_k] B.80), the VB E-step for any data (ln ρ 10.46 with 10.64, r 10.49), and the posterior
predictive Student-t mixture (10.81–10.82, B.68).  ``sample_posterior`` draws from q (Bartlett
decomposition).  ``lower_bound`` is the full bound L(q) of 10.70, term by term (10.71–10.77, every
constant); ``bound_after_m_step`` is the same bound at the M-step optimum, which the VB loop of
``vb.fit_vb`` evaluates each iteration.

Where each part lives (every name below is importable from here; ``pg.vb_posterior`` is this module):

    core._vb_q            VBPosterior, sample_posterior, log_rho_const, posterior_cholesky,
                          degenerate_posterior
    core._vb_weights      WEIGHT_PRIORS, the Dirichlet and stick-breaking q(α) (section "Weight priors")
    core._vb_covariance   vb_prior, restrict_update, prior_constant (section "Covariance types")
    core._vb_bound        lower_bound, global_terms, weight_terms, bound_after_m_step

Covariance types (scikit-learn's ``BayesianGaussianMixture``, exactly)
-----------------------------------------------------------------------
Reading scikit-learn's ``_estimate_wishart_*``, ``_estimate_log_prob`` and ``_compute_lower_bound``
shows that its four types are one model — the Normal-Wishart mixture above, with the prior
W(Λ_k | W0_t, nu0) where W0_t⁻¹ is the type's view of W0⁻¹ (:func:`vb_prior`) — and four
variational families for q(Λ): a Wishart with

    full       any scale W_k                             (PRML 10.62: W_k⁻¹ = M_k)
    diag       a diagonal scale W_k                      W_k⁻¹ = diag(M_k)
    spherical  an isotropic scale W_k = w_k I            w_k⁻¹ = tr(M_k) / D
    tied       one (W, nu) shared by every component     W⁻¹ = (1/K) Σ_k M_k,  nu = nu0 + N / K

with M_k = W0_t⁻¹ + Σ_i r_ik (x_i − m_k)(x_i − m_k)ᵀ + beta0 (m_k − m0)(m_k − m0)ᵀ (the full
update) and nu_k = nu0 + N_k.  Each is the exact maximiser of the bound over its family (the
bound's Λ part is −KL(W(W, ν) ‖ W(M_k⁻¹, nu0 + N_k)); over a diagonal / isotropic / shared scale
its stationary point is the line above), so every type is a true coordinate ascent of the same
full bound (10.70–10.77 with these W_k): monotone, with every constant, and computed by the one
code path of the full type — W is stored as (K, D, D) for every type (diagonal matrices for
"diag", w_k I for "spherical", K equal copies for "tied").  Its E[ln |Λ_k|] is the Wishart's
Σ_d ψ((nu_k + 1 − d)/2) + D ln 2 + ln |W_k| (10.65) for every type, as in scikit-learn; so "diag"
is *not* a product of independent Gamma posteriors (their E[ln |Λ|] would be D ψ(nu_k/2) + ...),
and for K = 1 the bound of "diag"/"spherical" is ln p(X) − KL(q(Λ) ‖ p(Λ | X)): the exact evidence
only when the posterior's scale M⁻¹ itself is diagonal / isotropic.

Weight priors
-------------
"dirichlet": α ~ Dir(alpha0 1_K), q(α) = Dir(alpha) (10.57), alpha_k = alpha0 + N_k (10.58).
"dirichlet_process": truncated stick-breaking (Blei & Jordan 2006), concentration alpha0:
π_k = v_k Π_{j<k} (1 − v_j), v_k ~ Beta(1, alpha0), q(v_k) = Beta(a_k, b_k) with
a_k = 1 + N_k, b_k = alpha0 + Σ_{j>k} N_j (their eq. 18–19).  ``VBPosterior.alpha`` holds a_k and
``stick_b`` holds b_k; ``stick_order`` the component of each stick (a permutation keeps the sticks
with their components).  The K sticks leave the mass Π_k (1 − v_k) to the components beyond the
truncation, which q(Z) never uses (their q equals the prior: they add nothing to the bound), so
the bound is that of the infinite mixture, as scikit-learn's; ``expected_weights`` and the
draws of ``sample_posterior`` are renormalised over the K components (scikit-learn's ``weights_``).
"""

from __future__ import annotations

from ._vb_bound import bound_after_m_step, global_terms, lower_bound, weight_terms
from ._vb_covariance import prior_constant, restrict_update, vb_prior
from ._vb_q import VBPosterior, degenerate_posterior, log_rho_const, posterior_cholesky, sample_posterior
from ._vb_weights import (
    WEIGHT_PRIORS,
    check_weight_prior,
    expected_log_weights,
    log_weight_norm,
    stick_expectations,
    stick_update,
)

__all__ = [
    "VBPosterior",
    "WEIGHT_PRIORS",
    "check_weight_prior",
    "expected_log_weights",
    "stick_update",
    "stick_expectations",
    "log_weight_norm",
    "weight_terms",
    "vb_prior",
    "restrict_update",
    "prior_constant",
    "log_rho_const",
    "sample_posterior",
    "lower_bound",
    "bound_after_m_step",
    "global_terms",
    "posterior_cholesky",
    "degenerate_posterior",
]
