"""The closed-form quantities of the notes (eq. 15–21, 26, 28) as pure functions.

Model (eq. 15), for :math:`i = 1..N` and :math:`k = 1..K`::

    log p(X, Z | Θ) = Σ_i Σ_k Z_ik [ log α_k + log N(x_i | μ_k, Σ_k) ]

with the D-dimensional normal log density of ``core.gaussian`` (for D = 1 this is eq. 15's
``−½ log(2πσ²) − (x − μ)²/(2σ²)``). Everything is computed in log space through precision
Cholesky factors (``core.linalg``); the maths is summarised in ``docs/maths.md``.

``sample_weight`` (``log_likelihood``, ``elbo``, ``m_step``) are frequency weights w_i ≥ 0 (checked by
``core.sources.check_sample_weight``): row i counts w_i times, so every sum over i becomes Σ_i w_i (...)
and N becomes Σ_i w_i. Integer weights give the answer on the data with each row repeated w_i times; a
zero weight removes the row. ``None`` is the unweighted computation, unchanged bit for bit.
"""

from __future__ import annotations

import math

import torch

from .errors import EmptyComponentError
from .gaussian import LOG_2PI, log_gaussian_prec, logsumexp_rows, normalise_log
from .linalg import precision_cholesky
from .params import GMMParams
from .sources import check_sample_weight
from .validation import ArrayLike, as_data, check_covariance_type, check_positive

__all__ = [
    "log_gaussian",
    "weighted_log_prob",
    "e_step",
    "m_step",
    "elbo",
    "elbo_from_log_weights",
    "log_likelihood",
    "elbo_gradients",
    "entropy",
    "weighted_sum",
    "expected_log_joint_from_stats",
    "weighted_scatter",
    "check_nonempty",
    "check_gamma",
    "check_simplex_rows",
]


def _coerce(x, params: GMMParams) -> torch.Tensor:
    if not isinstance(params, GMMParams):
        raise TypeError(f"params must be a GMMParams(alpha, mu, cov), got {type(params).__name__}")
    x = as_data(x, dtype=params.dtype)
    if x.shape[1] != params.d:
        raise ValueError(f"x has D = {x.shape[1]} columns but the parameters are {params.d}-dimensional")
    return x


def check_gamma(gamma: ArrayLike, n: int, k: int | None, dtype: torch.dtype) -> torch.Tensor:
    """γ as an (N, K) tensor of ``dtype``, or a ValueError: the one rule for every closed-form
    function that takes responsibilities (``elbo``, ``elbo_gradients``, ``m_step``,
    ``vb_posterior.lower_bound``).

    q(Z_i) = Categorical(γ_i) (eq. 17): every entry finite and non-negative, and every row on the
    simplex, Σ_k γ_ik = 1 to within K · 1e-6 (float32: K · 1e-4; :func:`check_simplex_rows`).
    ``k=None`` accepts any K >= 1 (``m_step``, where γ defines K)."""
    gamma = torch.as_tensor(gamma, dtype=dtype)
    if gamma.ndim != 2 or gamma.shape[0] != n or (gamma.shape[1] != k if k is not None else gamma.shape[1] < 1):
        want = f"({n}, {k})" if k is not None else f"({n}, K) with K >= 1"
        raise ValueError(f"gamma must have shape (N, K) = {want}, got {tuple(gamma.shape)}")
    if not bool(torch.isfinite(gamma).all()) or bool((gamma < 0).any()):
        raise ValueError("gamma must be finite and non-negative (each row a point on the simplex)")
    check_simplex_rows(gamma)
    return gamma


def check_simplex_rows(gamma: torch.Tensor) -> None:
    """q(Z_i) = Categorical(γ_i) needs Σ_k γ_ik = 1 (eq. 17); part of :func:`check_gamma`."""
    off = (gamma.sum(1, dtype=torch.float64) - 1.0).abs()
    tol = 1e-6 if gamma.dtype == torch.float64 else 1e-4
    if gamma.shape[0] and float(off.max()) > tol * gamma.shape[1]:
        i = int(torch.argmax(off))
        raise ValueError(
            f"gamma row {i} sums to {float(gamma[i].sum()):.6g}, not 1: each row of γ must be a point on the "
            "simplex (normalise the rows, e.g. gamma / gamma.sum(1, keepdim=True))"
        )


def log_gaussian(x: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """(N, K) matrix of log N(x_i | μ_k, Σ_k) from covariances (``gaussian.log_gaussian_prec``)."""
    return log_gaussian_prec(x, mu, precision_cholesky(cov))


def weighted_log_prob(x: ArrayLike, params: GMMParams) -> torch.Tensor:
    """(N, K) matrix of log α_k + log N(x_i | μ_k, Σ_k), the bracket of eq. 15."""
    x = _coerce(x, params)
    return log_gaussian_prec(x, params.mu, params.precision_cholesky).add_(torch.log(params.alpha))


def e_step(x: ArrayLike, params: GMMParams) -> torch.Tensor:
    """The E-step, eq. 20 (= the CAVI optimum eq. 17 = the posterior eq. 27).

    γ_ik = α_k N(x_i | μ_k, Σ_k) / Σ_j α_j N(x_i | μ_j, Σ_j), normalised in log space
    (``gaussian.normalise_log``), so a point far from every component still gets a finite row on
    the simplex.

    Parameters
    ----------
    x : array_like, shape (N,) or (N, D)
    params : GMMParams

    Returns
    -------
    gamma : Tensor, shape (N, K)
        Responsibilities, rows on the simplex to round-off.
    """
    return normalise_log(weighted_log_prob(x, params))[0]  # eq. 20


def log_likelihood(x: ArrayLike, params: GMMParams, sample_weight: ArrayLike | None = None) -> torch.Tensor:
    """The marginal log-likelihood, eq. 26: Σ_i log Σ_k α_k N(x_i | μ_k, Σ_k) (weighted: Σ_i w_i log ...).

    Parameters
    ----------
    x : array_like, shape (N,) or (N, D)
    params : GMMParams
    sample_weight : array_like, shape (N,), optional
        Frequency weights w_i (module docstring).

    Returns
    -------
    Tensor
        A scalar.
    """
    if sample_weight is None:
        return logsumexp_rows(weighted_log_prob(x, params)).sum()  # eq. 26
    x = _coerce(x, params)
    w = check_sample_weight(sample_weight, x.shape[0]).to(x)
    lse = logsumexp_rows(weighted_log_prob(x, params))
    return weighted_sum(lse, w)  # eq. 26 weighted: Σ_i w_i lse_i


def weighted_sum(f: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Σ w ⊙ f over every entry, with 0 · f = 0 where w = 0 even for f = −∞ (a row of frequency weight
    0, or γ_ik = 0 where α_k = 0): ``w`` broadcasts against ``f``."""
    return torch.where(w > 0, w * f, torch.zeros_like(f)).sum()


def entropy(gamma: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """H(q) = −Σ_i Σ_k γ_ik log γ_ik with 0·log 0 = 0 (second term of eq. 18); with frequency
    weights w (N,), −Σ_i w_i Σ_k γ_ik log γ_ik."""
    if w is None:
        return -torch.special.xlogy(gamma, gamma).sum()
    return -(torch.special.xlogy(gamma, gamma).sum(1) * w).sum()  # Σ_i w_i H(γ_i)


def elbo(x: ArrayLike, gamma: ArrayLike, params: GMMParams, sample_weight: ArrayLike | None = None) -> torch.Tensor:
    """The fully expanded ELBO, eq. 18, with every constant::

        L(q, Θ) = Σ_i Σ_k γ_ik [log α_k + log N(x_i | μ_k, Σ_k)] − Σ_i Σ_k γ_ik log γ_ik

    (with frequency weights w_i, each row's two terms times w_i).

    The first term is E_q[log p(X, Z | Θ)] (eq. 15 under q), the second the
    entropy of q = Π_i Categorical(γ_i) (eq. 17).  0·log 0 = 0, and a term with
    γ_ik = 0 contributes 0 even where α_k = 0.

    Parameters
    ----------
    x : array_like, shape (N,) or (N, D)
    gamma : array_like, shape (N, K)
        Rows on the simplex (checked).
    params : GMMParams
    sample_weight : array_like, shape (N,), optional
        Frequency weights w_i (module docstring).

    Returns
    -------
    Tensor
        A scalar.
    """
    x = _coerce(x, params)
    gamma = check_gamma(gamma, x.shape[0], params.k, params.dtype)
    w = None if sample_weight is None else check_sample_weight(sample_weight, x.shape[0]).to(x)
    return elbo_from_log_weights(gamma, weighted_log_prob(x, params), w)  # eq. 18


def elbo_from_log_weights(gamma: torch.Tensor, wlp: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """eq. 18 from γ and the log weights ℓ_ik = log α_k + log N(x_i | μ_k, Σ_k) (N, K):
    Σ_ik γ_ik ℓ_ik − Σ_ik γ_ik log γ_ik, with 0·log 0 = 0 and 0·ℓ = 0 even where ℓ = −∞ (α_k = 0).
    With frequency weights w (N,): Σ_i w_i (Σ_k γ_ik ℓ_ik − Σ_k γ_ik log γ_ik).

    The same form is PRML 10.70's data term with ℓ = ln ρ (``core.vb_posterior.lower_bound``)."""
    gw = gamma if w is None else gamma * w[:, None]  # w_i γ_ik
    expected_log_joint = weighted_sum(wlp, gw)
    return expected_log_joint + entropy(gamma, w)


def elbo_gradients(x: ArrayLike, gamma: ArrayLike, params: GMMParams) -> dict[str, torch.Tensor]:
    """The analytic gradients of eq. 18 (eq. 19, generalised to D dimensions).

    All are taken before any constraint (simplex, positive definiteness) is applied:

    - ``alpha`` (K,):      ∂L/∂α_k = Σ_i γ_ik / α_k = N_k / α_k
    - ``mu`` (K, D):       ∂L/∂μ_k = Σ_k⁻¹ Σ_i γ_ik (x_i − μ_k)
    - ``cov`` (K, D, D):   ∂L/∂Σ_k = ½ Σ_i γ_ik (P d dᵀ P − P), P = Σ_k⁻¹, d = x_i − μ_k
                           (D = 1: 1/(2σ⁴) Σ_i γ_ik [(x_i − μ_k)² − σ²])
    - ``gamma`` (N, K):    ∂L/∂γ_ik = log α_k + log N(x_i | μ_k, Σ_k) − log γ_ik − 1

    On the boundary (γ_ik = 0 or α_k = 0, with 0 · log 0 = 0 in eq. 18) eq. 19 is read as the
    exact one-sided limit, never NaN:

    - N_k = 0 (γ_ik = 0 for every i): eq. 18 does not depend on α_k, so ∂L/∂α_k = 0, also at
      α_k = 0 (the limit of N_k / α_k = 0 as α_k → 0).
    - γ_ik = 0 < α_k: ∂L/∂γ_ik = +∞, the slope of the entropy −γ log γ at 0 (eq. 18 rises
      steeply as mass moves onto k; this is why eq. 20's optimum is interior). A γ_ik that
      underflowed to 0 in ``e_step`` lands here.
    - α_k = 0 and N_k = 0: ∂L/∂γ_ik = −∞ for every i (any mass on k makes eq. 18 −∞).
    - α_k = 0 < N_k is refused (ValueError naming the component): eq. 18 is −∞ there, a point
      outside the ELBO's domain (γ puts mass on a component of zero weight), where no gradient
      of eq. 19 is finite or meaningful (∂L/∂α_k → +∞). γ = e_step(x, params) never does this.

    Parameters
    ----------
    x : array_like, shape (N,) or (N, D)
    gamma : array_like, shape (N, K)
        Rows on the simplex (checked: ``check_gamma``).
    params : GMMParams

    Returns
    -------
    dict of Tensor
        Keys ``alpha``, ``mu``, ``cov``, ``gamma`` as above.

    Raises
    ------
    ValueError
        Bad γ, or γ with mass on a component whose α_k = 0.
    """
    x = _coerce(x, params)
    gamma = check_gamma(gamma, x.shape[0], params.k, params.dtype)
    n_k = gamma.sum(0)
    alpha = params.alpha
    off = torch.nonzero((alpha == 0) & (n_k > 0)).flatten()
    if off.numel():
        j = int(off[0])
        raise ValueError(
            f"component {j} has alpha_{j} = 0 but gamma puts mass N_{j} = {float(n_k[j]):.3g} on it: eq. 18 is −inf "
            "there and eq. 19 has no finite gradient (∂L/∂α_k = N_k/α_k → +inf); use gamma = e_step(x, params) "
            "or give the component a positive weight"
        )
    u = params.precision_cholesky
    prec = u @ u.transpose(-1, -2)  # P_k = Σ_k⁻¹ = U_k U_kᵀ
    g_alpha = torch.where(n_k > 0, n_k / alpha, torch.zeros_like(n_k))  # eq. 19, ∂L/∂α_k (0 where N_k = 0)
    weighted_diff_sum = gamma.T @ x - n_k[:, None] * params.mu  # Σ_i γ_ik (x_i − μ_k)
    g_mu = torch.einsum("kde,ke->kd", prec, weighted_diff_sum)  # eq. 19, ∂L/∂μ_k
    scatter = weighted_scatter(x, gamma, params.mu)  # S_k = Σ_i γ_ik d dᵀ
    g_cov = 0.5 * (prec @ scatter @ prec - n_k[:, None, None] * prec)  # eq. 19, ∂L/∂Σ_k
    g_gamma = weighted_log_prob(x, params) - torch.log(gamma) - 1.0  # eq. 19, ∂L/∂γ_ik (+inf where γ_ik = 0)
    g_gamma = torch.where(alpha == 0, -math.inf, g_gamma)  # α_k = 0 (so N_k = 0): the limit −∞, not −∞ + ∞
    return {"alpha": g_alpha, "mu": g_mu, "cov": g_cov, "gamma": g_gamma}


def weighted_scatter(
    x: torch.Tensor, gamma: torch.Tensor, centres: torch.Tensor, block_rows: int = 1 << 13
) -> torch.Tensor:
    """S_k = Σ_i γ_ik (x_i − c_k)(x_i − c_k)ᵀ (K, D, D), the difference formed first (two-pass
    moments: no cancellation for data far from the origin), in row blocks.

    ``gamma`` (N, K) may be a transposed view of a (K, N) array."""
    k, d = centres.shape
    out = torch.zeros(k, d, d, dtype=x.dtype, device=x.device)
    for s in range(0, x.shape[0], block_rows):
        diff = x[None, s : s + block_rows, :] - centres[:, None, :]  # (K, b, D)
        out += torch.bmm((diff * gamma[s : s + block_rows].T[:, :, None]).transpose(1, 2), diff)
    return 0.5 * (out + out.transpose(1, 2))


def expected_log_joint_from_stats(
    n_k: torch.Tensor, scatter: torch.Tensor, alpha: torch.Tensor, prec_chol: torch.Tensor
) -> torch.Tensor:
    """E_q[log p(X, Z | Θ)], the first term of eq. 18, from sufficient statistics:

        Σ_k N_k (log α_k − ½ D log 2π − ½ log|Σ_k|) − ½ Σ_k tr(Σ_k⁻¹ S_k)

    with N_k = Σ_i γ_ik and S_k = Σ_i γ_ik (x_i − μ_k)(x_i − μ_k)ᵀ about Θ's own μ_k, and Θ given by
    α (K,) and the precision factors U_k (K, D, D) of Σ_k⁻¹ = U_k U_kᵀ. A component with N_k = 0
    contributes 0 even where α_k = 0; one with N_k > 0 and α_k = 0 gives −∞.
    """
    u = prec_chol
    d = u.shape[-1]
    half_log_det_prec = torch.log(torch.diagonal(u, dim1=-2, dim2=-1)).sum(-1)  # −½ log|Σ_k|
    per_point = torch.log(alpha) + half_log_det_prec - 0.5 * d * LOG_2PI
    weighted = torch.where(n_k > 0, n_k * per_point, torch.zeros_like(per_point))
    trace = ((u @ u.transpose(-1, -2)) * scatter).sum((-1, -2))  # tr(Σ_k⁻¹ S_k)
    return weighted.sum() - 0.5 * trace.sum()


def check_nonempty(n_k: torch.Tensor, dtype: torch.dtype | None = None) -> None:
    """Raise EmptyComponentError for the first N_k below 10 ε (ε of ``dtype``, default N_k's)."""
    tiny = 10 * torch.finfo(dtype or n_k.dtype).eps
    small = torch.nonzero(n_k < tiny).flatten()
    if small.numel():
        j = int(small[0])
        raise EmptyComponentError(j, float(n_k[j]))


def m_step(
    x: ArrayLike,
    gamma: ArrayLike,
    covariance_type: str = "full",
    reg_covar: float = 0.0,
    sample_weight: ArrayLike | None = None,
) -> GMMParams:
    """Maximise eq. 18 over Θ for fixed γ: eq. 21 (1-D) and eq. 28 (D-dim).

    N_k = Σ_i γ_ik,  α_k = N_k / N,  μ_k = Σ_i γ_ik x_i / N_k,
    Σ_k = Σ_i γ_ik (x_i − μ_k)(x_i − μ_k)ᵀ / N_k + reg_covar·I     (full)

    ``diag`` keeps the diagonal of Σ_k, ``spherical`` its mean variance times I,
    ``tied`` pools one Σ = Σ_k Σ_i γ_ik d dᵀ / N for all components.  The moments
    are two-pass (centred at the new μ_k), so shifting the data by 1e6 shifts μ
    and leaves Σ unchanged to round-off.

    Parameters
    ----------
    x : array_like, shape (N,) or (N, D)
    gamma : array_like, shape (N, K)
        Responsibilities, rows on the simplex (checked: ``check_gamma``).
    covariance_type : {"full", "diag", "spherical", "tied"}
    reg_covar : float
        Added to the diagonal of every covariance.
    sample_weight : array_like, shape (N,), optional
        Frequency weights w_i: every γ_ik above becomes w_i γ_ik (module docstring).

    Returns
    -------
    GMMParams

    Raises
    ------
    EmptyComponentError
        When some N_k is 0 (its μ_k and Σ_k are undefined).
    """
    check_covariance_type(covariance_type)
    reg_covar = check_positive(reg_covar, "reg_covar", allow_zero=True)
    x = as_data(x, dtype=gamma.dtype if isinstance(gamma, torch.Tensor) else None)
    n, d = x.shape
    gamma = check_gamma(gamma, n, None, x.dtype)  # rows on the simplex, as elbo and elbo_gradients
    if sample_weight is not None:
        gamma = gamma * check_sample_weight(sample_weight, n).to(x)[:, None]  # w_i γ_ik: row i counted w_i times
    n_k = gamma.sum(0)  # eq. 21: N_k
    check_nonempty(n_k)
    mu = (gamma.T @ x) / n_k[:, None]  # eq. 21: μ_k
    alpha = n_k / n_k.sum()  # eq. 21: α_k = N_k / N
    k = gamma.shape[1]
    scatter = weighted_scatter(x, gamma, mu)  # two-pass: centred at the new μ_k
    if covariance_type == "full":
        cov = scatter / n_k[:, None, None]  # eq. 28
    elif covariance_type == "tied":
        cov = (scatter.sum(0) / n_k.sum()).expand(k, d, d)
    else:
        var = torch.diagonal(scatter, dim1=-2, dim2=-1) / n_k[:, None]
        if covariance_type == "spherical":
            var = var.mean(1, keepdim=True).expand(k, d)
        cov = torch.diag_embed(var)
    cov = cov + reg_covar * torch.eye(d, dtype=x.dtype)
    return GMMParams(alpha, mu, cov)
