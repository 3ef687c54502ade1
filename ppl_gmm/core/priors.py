"""The conjugate Dirichlet × Normal-Wishart prior (Bishop, PRML eq. 10.39–10.40), and the
Normal-Wishart algebra that MAP-EM (``inference.map``), variational Bayes (``inference.vb``),
the Bayesian Pyro guide (``ppl.bayes``) and the bound (``core.vb_posterior``) share.

    α ~ Dir(alpha0 · 1_K)                                  (10.39)
    Λ_k ~ W(Λ_k | W0, nu0)          E[Λ_k] = nu0 · W0      (10.40)
    μ_k | Λ_k ~ N(m0, (beta0 Λ_k)⁻¹)

``W0`` is the Wishart *scale* (a precision-scale matrix), so the prior mean of
the covariance is E[Σ_k] = W0⁻¹ / (nu0 − D − 1) for nu0 > D + 1.  Densities are
taken in the (α, μ, Λ) parametrisation: Dirichlet on the first K − 1 simplex
coordinates, Wishart on the D(D + 1)/2 distinct entries of Λ (PRML B.16, B.78).

The conjugate update of responsibilities γ (PRML 10.51, 10.58, 10.60–10.63; ``core._conjugate``)
serves the VB M-step and the MAP M-step (the mode of the same Dir × Normal-Wishart,
:func:`posterior_mode`).

Where each part lives (every name below is importable from here; ``pg.priors`` is this module):

    core._normal_wishart   NormalWishartPrior (the checked parameters)
    core._distributions    ln B(W, ν), ln C(α), E[ln |Λ|], ln Dir, ln Gamma; Bartlett and Dirichlet draws
    core._conjugate        ConjugateStats, conjugate_update(_from_data); ln N(μ | m0, ·) W(Λ | W0, nu0)
    core._map_modes        posterior_mode, log_prior, the MAP priors per covariance type
    core.priors           default_prior, prior_from_moments, default_prior_source, resolve_prior
"""

from __future__ import annotations

import torch

from ._conjugate import (
    ConjugateStats,
    conjugate_update,
    conjugate_update_from_data,
    log_normal_wishart_density,
    log_wishart_density,
)
from ._distributions import (
    expected_log_det,
    log_dirichlet_density,
    log_dirichlet_norm,
    log_gamma_density,
    log_wishart_norm,
    normal_wishart_from_noise,
    normal_wishart_noise,
    sample_dirichlet,
)
from ._map_modes import (
    check_cov_structure,
    check_map_prior,
    gamma_precision_prior,
    log_prior,
    log_typed_prior,
    posterior_mode,
)
from ._normal_wishart import NormalWishartPrior
from .linalg import checked_cholesky, inverse_from_cholesky
from .sources import Source
from .validation import ArrayLike, as_data, check_k

__all__ = [
    "NormalWishartPrior",
    "default_prior",
    "prior_from_moments",
    "default_prior_source",
    "resolve_prior",
    "ConjugateStats",
    "conjugate_update",
    "conjugate_update_from_data",
    "posterior_mode",
    "log_prior",
    "check_map_prior",
    "check_cov_structure",
    "gamma_precision_prior",
    "log_gamma_density",
    "log_typed_prior",
    "log_wishart_density",
    "log_dirichlet_density",
    "log_normal_wishart_density",
    "log_wishart_norm",
    "log_dirichlet_norm",
    "expected_log_det",
    "normal_wishart_from_noise",
    "normal_wishart_noise",
    "sample_dirichlet",
]


def default_prior(x: ArrayLike, k: int) -> NormalWishartPrior:
    """Weakly informative prior from the data (Fraley & Raftery 2007, §2.2):

    alpha0 = 1, m0 = mean(x), beta0 = 0.01, nu0 = D + 2, W0⁻¹ = cov(x) / k^(2/D).

    With nu0 = D + 2 the prior mean of each covariance is E[Σ_k] = W0⁻¹ = cov(x)/k^(2/D):
    the data's spread shared among k components of equal volume.  beta0 = 0.01 lets
    a component mean lie ten data standard deviations from the centre.  The covariance
    is the two-pass sample covariance (divisor N − 1); N = 1 uses the identity.
    """
    x = as_data(x).double()
    n, d = x.shape
    k = check_k(k, n)
    m0 = x.mean(0)
    xc = x - m0
    cov = xc.T @ xc / (n - 1) if n > 1 else torch.eye(d, dtype=torch.float64)
    return prior_from_moments(m0, cov, k)


def prior_from_moments(m0: torch.Tensor, cov: torch.Tensor, k: int) -> NormalWishartPrior:
    """:func:`default_prior` from the data's mean m0 (D,) and covariance (D, D), float64."""
    d = m0.shape[0]
    if checked_cholesky(cov)[1] is not None:
        raise ValueError(
            "the data's sample covariance is singular (a constant column or collinear columns), "
            "so no default prior exists; drop the redundant columns or pass a NormalWishartPrior"
        )
    w0_inv = cov / k ** (2.0 / d)
    w0 = inverse_from_cholesky(torch.linalg.cholesky(w0_inv))
    return NormalWishartPrior(alpha0=1.0, m0=m0, beta0=0.01, nu0=d + 2.0, W0=w0)


def resolve_prior(x: torch.Tensor, k: int, prior: NormalWishartPrior | None) -> NormalWishartPrior:
    """``prior`` checked against validated data (N, D); ``None`` means ``default_prior(x, k)``."""
    if prior is None:
        return default_prior(x, k)
    if not isinstance(prior, NormalWishartPrior):
        raise TypeError(f"prior must be a NormalWishartPrior (or None for default_prior), got {type(prior).__name__}")
    prior.check_data(x)
    return prior


def default_prior_source(source: Source, k: int, inv_scale: float = 1.0) -> NormalWishartPrior:
    """:func:`default_prior` of x' = x · ``inv_scale`` (a power of two: ``DataScale``) for any data
    source (``core.sources``), with frequency weights as repeated rows: the weighted mean (the
    validation pass's) and the two-pass covariance Σ_i w_i (x_i − x̄)(x_i − x̄)ᵀ / (Σ_i w_i − 1)
    (the identity when Σ_i w_i ≤ 1), one pass over the blocks. Unweighted data in memory:
    ``default_prior`` itself."""
    x = source.tensor()
    if x is not None and not source.weighted:
        return default_prior(x * inv_scale if inv_scale != 1.0 else x, k)
    d, total = source.d, source.total_weight
    m0 = source.summary.mean.to(torch.float64) * inv_scale
    cov = torch.zeros(d, d, dtype=torch.float64)
    for blk in source.blocks(1 << 16):
        xc = blk.x.to(device="cpu", dtype=torch.float64) * inv_scale - m0
        w = torch.ones(len(xc), dtype=torch.float64) if blk.w is None else blk.w.cpu()
        cov += (xc * w[:, None]).T @ xc  # Σ_i w_i (x_i − x̄)(x_i − x̄)ᵀ
    cov = 0.5 * (cov + cov.T) / (total - 1) if total > 1 else torch.eye(d, dtype=torch.float64)
    return prior_from_moments(m0, cov, k)
