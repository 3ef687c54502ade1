"""The closed-form quantities of the notes, as pure functions.

Model (eq. 15), for i = 1..N and k = 1..K::

    log p(X, Z | Θ) = Σ_i Σ_k Z_ik [ log α_k + log N(x_i | μ_k, Σ_k) ]

with the D-dimensional normal log density
``log N(x | μ, Σ) = −½ D log 2π − ½ log|Σ| − ½ (x − μ)ᵀ Σ⁻¹ (x − μ)``
(for D = 1 this is eq. 15's ``−½ log(2πσ²) − (x − μ)²/(2σ²)``).

Everything is computed in log space through Cholesky factors; data are handled
in row blocks so that memory stays O(block · K · D) beyond the (N, K) outputs.
"""
from __future__ import annotations

import math

import torch

from ._validation import as_data, check_covariance_type, check_positive
from .errors import EmptyComponentError
from .params import GMMParams, precision_cholesky

__all__ = [
    "log_gaussian",
    "weighted_log_prob",
    "e_step",
    "m_step",
    "elbo",
    "log_likelihood",
    "elbo_gradients",
    "entropy",
    "row_logsumexp",
    "normalise_log",
    "BLOCK_ROWS",
]

BLOCK_ROWS = 1 << 12  # rows per block: temporaries stay a few MB whatever N is


def _coerce(x, params: GMMParams):
    if not isinstance(params, GMMParams):
        raise TypeError(f"params must be a GMMParams(alpha, mu, cov), got {type(params).__name__}")
    x = as_data(x, dtype=params.dtype)
    if x.shape[1] != params.d:
        raise ValueError(f"x has D = {x.shape[1]} columns but the parameters are {params.d}-dimensional")
    return x


def _check_gamma(gamma, n: int, k: int, dtype) -> torch.Tensor:
    gamma = torch.as_tensor(gamma, dtype=dtype)
    if gamma.shape != (n, k):
        raise ValueError(f"gamma must have shape (N, K) = ({n}, {k}), got {tuple(gamma.shape)}")
    if not bool(torch.isfinite(gamma).all()) or bool((gamma < 0).any()):
        raise ValueError("gamma must be finite and non-negative (each row a point on the simplex)")
    return gamma


def _check_simplex_rows(gamma: torch.Tensor) -> None:
    """q(Z_i) = Categorical(γ_i) needs Σ_k γ_ik = 1 (eq. 17)."""
    off = (gamma.sum(1, dtype=torch.float64) - 1.0).abs()
    tol = 1e-6 if gamma.dtype == torch.float64 else 1e-4
    if gamma.shape[0] and float(off.max()) > tol * gamma.shape[1]:
        i = int(torch.argmax(off))
        raise ValueError(
            f"gamma row {i} sums to {float(gamma[i].sum()):.6g}, not 1: each row of γ must be a point on the "
            "simplex (normalise the rows, e.g. gamma / gamma.sum(1, keepdim=True))"
        )


def log_gaussian(x: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """(N, K) matrix of log N(x_i | μ_k, Σ_k), via precision Cholesky factors.

    The difference x_i − μ_k is formed before the triangular product, so data far
    from the origin (a mean of 1e6) lose no digits to cancellation.
    """
    n, d = x.shape
    u = precision_cholesky(cov)  # (K, D, D), Σ_k⁻¹ = U_k U_kᵀ
    log_det_u = torch.log(torch.diagonal(u, dim1=-2, dim2=-1)).sum(-1)  # = −½ log|Σ_k|
    out = torch.empty(n, mu.shape[0], dtype=x.dtype)
    for s in range(0, n, BLOCK_ROWS):
        diff = x[s : s + BLOCK_ROWS, None, :] - mu[None]  # (b, K, D)
        y = torch.einsum("bkd,kde->bke", diff, u)
        out[s : s + BLOCK_ROWS] = -0.5 * (y * y).sum(-1)
    return out.add_(log_det_u - 0.5 * d * math.log(2 * math.pi))  # in place: one (N, K) array


def row_logsumexp(wlp: torch.Tensor) -> torch.Tensor:
    """log Σ_k exp(wlp_ik) per row (N,), in row blocks (no (N, K) temporary)."""
    out = torch.empty(wlp.shape[0], dtype=wlp.dtype)
    for s in range(0, wlp.shape[0], BLOCK_ROWS):
        torch.logsumexp(wlp[s : s + BLOCK_ROWS], dim=1, out=out[s : s + BLOCK_ROWS])
    return out


def normalise_log(wlp: torch.Tensor):
    """(γ, lse) from the (N, K) weighted log-probabilities, in place: γ_ik = exp(wlp_ik − lse_i)
    (eq. 20) with lse_i = log Σ_k exp(wlp_ik) (the terms of eq. 26).

    Far from every component lse_i is large (|lse_i| ~ 1e7), and its rounding (ε·|lse_i|) would
    leave the row sums off 1 by ~1e-9; one more division puts every row on the simplex to ~1e-16.
    """
    lse = row_logsumexp(wlp)
    gamma = wlp.sub_(lse[:, None]).exp_()
    return gamma.div_(gamma.sum(1, keepdim=True)), lse


def weighted_log_prob(x, params: GMMParams) -> torch.Tensor:
    """(N, K) matrix of log α_k + log N(x_i | μ_k, Σ_k), the bracket of eq. 15."""
    x = _coerce(x, params)
    return log_gaussian(x, params.mu, params.cov).add_(torch.log(params.alpha))


def e_step(x, params: GMMParams) -> torch.Tensor:
    """Responsibilities γ (N, K), eq. 20 (= the CAVI optimum eq. 17 = the posterior eq. 27).

    γ_ik = α_k N(x_i | μ_k, Σ_k) / Σ_j α_j N(x_i | μ_j, Σ_j), normalised with
    logsumexp so that a point far from every component still gets a finite,
    normalised row.
    """
    return normalise_log(weighted_log_prob(x, params))[0]  # eq. 20


def log_likelihood(x, params: GMMParams) -> torch.Tensor:
    """Σ_i log Σ_k α_k N(x_i | μ_k, Σ_k): the marginal log-likelihood, eq. 26."""
    return row_logsumexp(weighted_log_prob(x, params)).sum()  # eq. 26


def entropy(gamma: torch.Tensor) -> torch.Tensor:
    """H(q) = −Σ_i Σ_k γ_ik log γ_ik with 0·log 0 = 0 (second term of eq. 18)."""
    return -torch.special.xlogy(gamma, gamma).sum()


def elbo(x, gamma, params: GMMParams) -> torch.Tensor:
    """The fully expanded ELBO, eq. 18, with every constant::

        L(q, Θ) = Σ_i Σ_k γ_ik [log α_k + log N(x_i | μ_k, Σ_k)] − Σ_i Σ_k γ_ik log γ_ik

    The first term is E_q[log p(X, Z | Θ)] (eq. 15 under q), the second the
    entropy of q = Π_i Categorical(γ_i) (eq. 17).  0·log 0 = 0, and a term with
    γ_ik = 0 contributes 0 even where α_k = 0.
    """
    x = _coerce(x, params)
    gamma = _check_gamma(gamma, x.shape[0], params.k, params.dtype)
    _check_simplex_rows(gamma)
    wlp = weighted_log_prob(x, params)
    expected_log_joint = torch.where(gamma > 0, gamma * wlp, torch.zeros_like(wlp)).sum()
    return expected_log_joint + entropy(gamma)  # eq. 18


def elbo_gradients(x, gamma, params: GMMParams) -> dict:
    """The analytic gradients of eq. 18 (eq. 19, generalised to D dimensions).

    All are taken before any constraint (simplex, positive definiteness) is applied:

    - ``alpha`` (K,):      ∂L/∂α_k = Σ_i γ_ik / α_k
    - ``mu`` (K, D):       ∂L/∂μ_k = Σ_k⁻¹ Σ_i γ_ik (x_i − μ_k)
    - ``cov`` (K, D, D):   ∂L/∂Σ_k = ½ Σ_i γ_ik (P d dᵀ P − P), P = Σ_k⁻¹, d = x_i − μ_k
                           (D = 1: 1/(2σ⁴) Σ_i γ_ik [(x_i − μ_k)² − σ²])
    - ``gamma`` (N, K):    ∂L/∂γ_ik = log α_k + log N(x_i | μ_k, Σ_k) − log γ_ik − 1
    """
    x = _coerce(x, params)
    gamma = _check_gamma(gamma, x.shape[0], params.k, params.dtype)
    _check_simplex_rows(gamma)
    n_k = gamma.sum(0)
    prec = torch.linalg.inv(params.cov)
    prec = 0.5 * (prec + prec.transpose(-1, -2))
    g_alpha = n_k / params.alpha  # eq. 19, ∂L/∂α_k
    weighted_diff_sum = gamma.T @ x - n_k[:, None] * params.mu  # Σ_i γ_ik (x_i − μ_k)
    g_mu = torch.einsum("kde,ke->kd", prec, weighted_diff_sum)  # eq. 19, ∂L/∂μ_k
    scatter = torch.stack(
        [((x - params.mu[j]) * gamma[:, j : j + 1]).T @ (x - params.mu[j]) for j in range(params.k)]
    )  # S_k = Σ_i γ_ik d dᵀ
    g_cov = 0.5 * (prec @ scatter @ prec - n_k[:, None, None] * prec)  # eq. 19, ∂L/∂Σ_k
    g_gamma = weighted_log_prob(x, params) - torch.log(gamma) - 1.0  # eq. 19, ∂L/∂γ_ik
    return {"alpha": g_alpha, "mu": g_mu, "cov": g_cov, "gamma": g_gamma}


def sufficient_statistics(x: torch.Tensor, gamma: torch.Tensor):
    """N_k = Σ_i γ_ik and the means Σ_i γ_ik x_i / N_k (first pass of eq. 21)."""
    n_k = gamma.sum(0)
    return n_k, (gamma.T @ x) / n_k[:, None]


def check_nonempty(n_k: torch.Tensor, dtype: torch.dtype | None = None) -> None:
    """Raise EmptyComponentError for the first N_k below 10 ε (ε of ``dtype``, default N_k's)."""
    tiny = 10 * torch.finfo(dtype or n_k.dtype).eps
    small = torch.nonzero(n_k < tiny).flatten()
    if small.numel():
        j = int(small[0])
        raise EmptyComponentError(j, float(n_k[j]))


def m_step(x, gamma, covariance_type: str = "full", reg_covar: float = 0.0) -> GMMParams:
    """Maximise eq. 18 over Θ for fixed γ: eq. 21 (1-D) and eq. 28 (D-dim).

    N_k = Σ_i γ_ik,  α_k = N_k / N,  μ_k = Σ_i γ_ik x_i / N_k,
    Σ_k = Σ_i γ_ik (x_i − μ_k)(x_i − μ_k)ᵀ / N_k + reg_covar·I     (full)

    ``diag`` keeps the diagonal of Σ_k, ``spherical`` its mean variance times I,
    ``tied`` pools one Σ = Σ_k Σ_i γ_ik d dᵀ / N for all components.  The moments
    are two-pass (centred at the new μ_k), so shifting the data by 1e6 shifts μ
    and leaves Σ unchanged to round-off.
    """
    check_covariance_type(covariance_type)
    reg_covar = check_positive(reg_covar, "reg_covar", allow_zero=True)
    x = as_data(x, dtype=gamma.dtype if isinstance(gamma, torch.Tensor) else None)
    gamma = torch.as_tensor(gamma, dtype=x.dtype)
    n, d = x.shape
    if gamma.ndim != 2 or gamma.shape[0] != n:
        raise ValueError(f"gamma must have shape (N, K) with N = {n}, got {tuple(gamma.shape)}")
    gamma = _check_gamma(gamma, n, gamma.shape[1], x.dtype)
    n_k, mu = sufficient_statistics(x, gamma)  # eq. 21: N_k and μ_k
    check_nonempty(n_k)
    alpha = n_k / n_k.sum()  # eq. 21: α_k = N_k / N
    k = gamma.shape[1]
    eye = torch.eye(d, dtype=x.dtype)
    if covariance_type == "full" or covariance_type == "tied":
        scatter = torch.empty(k, d, d, dtype=x.dtype)
        for j in range(k):
            diff = x - mu[j]  # two-pass: centred at the new μ_k
            scatter[j] = (diff * gamma[:, j : j + 1]).T @ diff
        if covariance_type == "full":
            cov = scatter / n_k[:, None, None]  # eq. 28
        else:
            cov = (scatter.sum(0) / n_k.sum()).expand(k, d, d)
    else:
        var = torch.stack([(gamma[:, j : j + 1] * (x - mu[j]) ** 2).sum(0) for j in range(k)]) / n_k[:, None]
        if covariance_type == "spherical":
            var = var.mean(1, keepdim=True).expand(k, d)
        cov = torch.diag_embed(var)
    cov = 0.5 * (cov + cov.transpose(-1, -2)) + reg_covar * eye
    return GMMParams(alpha, mu, cov)
