"""Closed-form variational Bayes for the GMM (Bishop, PRML §10.2): CAVI over q(Z) q(α) q(μ, Λ).

Model: the generative process of SPEC.md (eq. 15) under the conjugate prior
``NormalWishartPrior`` (PRML 10.39–10.40).  The mean-field family and its optimum
(eq. 16 applied factor by factor) are

    q(Z) = Π_i Categorical(r_i)                       (10.48; eq. 17 with Θ integrated out)
    q(α) = Dir(α | alpha_k)                           (10.57)
    q(μ_k, Λ_k) = N(μ_k | m_k, (beta_k Λ_k)⁻¹) W(Λ_k | W_k, nu_k)     (10.59)

E-step (the expectation of eq. 15 under q(α) q(μ, Λ); eq. 20 with Θ integrated out):

    ln ρ_ik = E[ln π_k] + ½ E[ln |Λ_k|] − (D/2) ln 2π − ½ E[(x_i − μ_k)ᵀ Λ_k (x_i − μ_k)]   (10.46)
    E[ln π_k]   = ψ(alpha_k) − ψ(Σ_j alpha_j)                                             (10.66)
    E[ln |Λ_k|] = Σ_{d=1..D} ψ((nu_k + 1 − d)/2) + D ln 2 + ln |W_k|                       (10.65)
    E[quad]     = D / beta_k + nu_k (x_i − m_k)ᵀ W_k (x_i − m_k)                          (10.64)
    r_ik = ρ_ik / Σ_j ρ_ij   (log space)                                                  (10.49)

M-step: the conjugate update of ``priors.conjugate_update`` (10.58, 10.60–10.63).

``.elbo`` is the full bound L = E[ln p(X, Z, α, μ, Λ)] − E[ln q] with every constant
(10.70–10.77), so for K = 1 it equals the exact log evidence ln p(X) once converged.
Iterations and traces follow ``fit_cavi``: Θ₀ from ``init.initial_params`` (fit_cavi's
default Θ₀, reg_covar = 1e-6), r₀ = e_step(x, Θ₀), one VB M-step; then iteration t is an
E-step followed by an M-step and ``elbo[t−1]`` is the bound after it; a closing E-step
adds the last entry, so ``len(elbo) == n_iter + 1`` and ``gamma``/``elbo[-1]`` belong to
the returned posterior.  Each update is a coordinate ascent step, so the trace is
non-decreasing.

Speed: in coordinates centred at the data mean, ln ρ_ik is linear in the features
φ(x_i) = [x_i,d x_i,e (d ≤ e), x_i, 1], so an iteration is one blocked pass over the rows
with two GEMMs (ln ρ = A φ for the E-step, T = r φᵀ for the M-step's N_k, Σ r x, Σ r x xᵀ);
when a component lies so far from the data mean that this expansion could cost digits
(see ``_G_EXPANSION_MAX``) the iteration falls back to difference-first, two-pass kernels.
Small fits run on one torch thread (``threads_for``).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ._validation import as_data, check_int, check_positive
from .cavi import check_fit_args
from .closed_form import e_step
from .errors import DegenerateComponentError, DivergenceError
from .init import initial_params, resolve_seed
from .params import GMMParams
from .priors import (
    BLOCK_ROWS,
    ConjugateStats,
    NormalWishartPrior,
    conjugate_update,
    default_prior,
    expected_log_det,
    log_dirichlet_norm,
    log_wishart_norm,
)

__all__ = ["VBPosterior", "VBFit", "fit_vb", "sample_posterior", "lower_bound", "DegeneratePosteriorError",
           "initial_responsibilities", "resolve_prior", "threads_for", "INIT_REG_COVAR"]

INIT_REG_COVAR = 1e-6  # fit_cavi's default: Θ₀ of fit_vb / fit_map is fit_cavi's default Θ₀
_LOG_2PI = math.log(2 * math.pi)


class DegeneratePosteriorError(DegenerateComponentError):
    """A posterior scale matrix W_k⁻¹ lost positive definiteness to round-off."""

    def __init__(self, component: int):
        self.component = component
        ValueError.__init__(
            self,
            f"component {component}: the posterior scale matrix W_k⁻¹ = W0⁻¹ + scatter (PRML 10.62) is not "
            "numerically positive definite (a numerically degenerate posterior). W0⁻¹ is negligible next to the "
            "data's scatter or the data span a lower-dimensional subspace: standardise the data, drop "
            "collinear columns, or use a prior with a larger W0⁻¹ (e.g. default_prior(x, k)).",
        )


def _chol_checked(w_inv: torch.Tensor):
    """(lower Cholesky factors of W_k⁻¹, index of the first numerically singular component or None).

    Singular means a failed factorisation or a pivot L_jj² / (W_k⁻¹)_jj below 10 D ε: coordinate j
    is a linear function of the earlier ones to machine precision (the check is scale-free)."""
    chol, info = torch.linalg.cholesky_ex(w_inv)
    d = w_inv.shape[-1]
    bad = info != 0
    if not bool(bad.any()):
        pivots = torch.diagonal(chol, dim1=-2, dim2=-1).square() / torch.diagonal(w_inv, dim1=-2, dim2=-1)
        bad = (pivots < 10 * d * torch.finfo(w_inv.dtype).eps).any(-1)
    return chol, (int(torch.nonzero(bad).flatten()[0]) if bool(bad.any()) else None)


def _chol(w_inv: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factors of W_k⁻¹, or a DegeneratePosteriorError naming the component."""
    chol, bad = _chol_checked(w_inv)
    if bad is not None:
        raise DegeneratePosteriorError(bad)
    return chol


def _log_det_from_chol(chol: torch.Tensor) -> torch.Tensor:
    """ln |W_k| = −ln |W_k⁻¹| = −2 Σ ln diag(chol(W_k⁻¹))."""
    return -2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)


def _whitener(chol: torch.Tensor) -> torch.Tensor:
    """U_k = L_k⁻ᵀ for W_k⁻¹ = L_k L_kᵀ, so W_k = U_k U_kᵀ and dᵀ W_k d = ‖dᵀ U_k‖²."""
    eye = torch.eye(chol.shape[-1], dtype=chol.dtype).expand_as(chol)
    return torch.linalg.solve_triangular(chol, eye, upper=False).transpose(-1, -2)


def _quad_t(x: torch.Tensor, m: torch.Tensor, u: torch.Tensor, block_rows: int = BLOCK_ROWS) -> torch.Tensor:
    """(K, N) matrix ‖(x_i − m_k)ᵀ U_k‖², the difference formed first (exact for data far from the
    origin), in row blocks, one component at a time."""
    out = torch.empty(m.shape[0], x.shape[0], dtype=x.dtype)
    for s in range(0, x.shape[0], block_rows):
        xb = x[s : s + block_rows]
        for j in range(m.shape[0]):
            out[j, s : s + block_rows] = ((xb - m[j]) @ u[j]).square_().sum(1)
    return out


# --- the posterior ---------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class VBPosterior:
    """q(α) q(μ, Λ) = Dir(α | alpha) Π_k N(μ_k | m_k, (beta_k Λ_k)⁻¹) W(Λ_k | W_k, nu_k), PRML 10.57/10.59.

    alpha : (K,) > 0       Dirichlet concentrations (10.58)
    m     : (K, D)         means of μ_k (10.61)
    beta  : (K,) > 0       precision scalings of μ_k (10.60)
    nu    : (K,) > D − 1   Wishart degrees of freedom (10.63)
    W     : (K, D, D)      Wishart scale matrices, positive definite (10.62); E[Λ_k] = nu_k W_k
    """

    alpha: torch.Tensor
    m: torch.Tensor
    beta: torch.Tensor
    nu: torch.Tensor
    W: torch.Tensor

    def __post_init__(self):
        alpha = torch.as_tensor(self.alpha).detach()
        dtype = alpha.dtype if alpha.is_floating_point() else torch.float64
        t = {name: torch.as_tensor(getattr(self, name)).detach().to(device="cpu", dtype=dtype)
             for name in ("alpha", "m", "beta", "nu", "W")}
        if t["alpha"].ndim != 1:
            raise ValueError(f"alpha must have shape (K,), got {tuple(t['alpha'].shape)}")
        k = t["alpha"].shape[0]
        if t["m"].ndim == 1:
            t["m"] = t["m"].reshape(k, -1)
        d = t["m"].shape[-1]
        shapes = {"m": (k, d), "beta": (k,), "nu": (k,), "W": (k, d, d)}
        for name, shape in shapes.items():
            if tuple(t[name].shape) != shape:
                raise ValueError(f"{name} must have shape {shape} (K = {k}, D = {d}), got {tuple(t[name].shape)}")
        for name, v in t.items():
            if not bool(torch.isfinite(v).all()):
                raise ValueError(f"{name} has NaN or infinite entries")
        if bool((t["alpha"] <= 0).any()) or bool((t["beta"] <= 0).any()):
            raise ValueError("alpha and beta must be > 0")
        if bool((t["nu"] <= d - 1).any()):
            raise ValueError(f"nu must be > D − 1 = {d - 1}")
        w = 0.5 * (t["W"] + t["W"].transpose(-1, -2))
        if int(torch.linalg.cholesky_ex(w).info.abs().sum()) != 0:
            raise ValueError("W must be positive definite")
        t["W"] = w
        for name, v in t.items():
            object.__setattr__(self, name, v.contiguous())

    @classmethod
    def _from_update(cls, alpha, beta, m, nu, w_inv_chol):
        w = torch.cholesky_inverse(w_inv_chol)
        return cls(alpha, m, beta, nu, 0.5 * (w + w.transpose(-1, -2)))

    # --- shape -------------------------------------------------------------------------------------
    @property
    def k(self) -> int:
        return self.alpha.shape[0]

    @property
    def d(self) -> int:
        return self.m.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self.alpha.dtype

    # --- expectations (PRML 10.64–10.66, B.80) -----------------------------------------------------
    @property
    def W_inv_cholesky(self) -> torch.Tensor:
        """Lower Cholesky factors of W_k⁻¹ (the scale of q(Σ_k), an inverse Wishart)."""
        w_inv = torch.cholesky_inverse(torch.linalg.cholesky(self.W))
        return _chol(0.5 * (w_inv + w_inv.transpose(-1, -2)))

    def log_det_W(self) -> torch.Tensor:
        return 2.0 * torch.log(torch.diagonal(torch.linalg.cholesky(self.W), dim1=-2, dim2=-1)).sum(-1)

    def expected_log_weights(self) -> torch.Tensor:
        """E[ln π_k] = ψ(alpha_k) − ψ(Σ_j alpha_j), PRML 10.66."""
        return torch.digamma(self.alpha) - torch.digamma(self.alpha.sum())  # 10.66

    def expected_log_det_precision(self) -> torch.Tensor:
        """E[ln |Λ_k|], PRML 10.65."""
        return expected_log_det(self.log_det_W(), self.nu, self.d)  # 10.65

    def expected_weights(self) -> torch.Tensor:
        """E[π_k] = alpha_k / Σ_j alpha_j (PRML B.17)."""
        return self.alpha / self.alpha.sum()

    def expected_precision(self) -> torch.Tensor:
        """E[Λ_k] = nu_k W_k (PRML B.80)."""
        return self.nu[:, None, None] * self.W

    def expected_cov(self) -> torch.Tensor:
        """E[Σ_k] = W_k⁻¹ / (nu_k − D − 1), defined for nu_k > D + 1 (inverse Wishart mean)."""
        if bool((self.nu <= self.d + 1).any()):
            raise ValueError(f"E[Σ_k] exists only for nu_k > D + 1 = {self.d + 1}; nu = {self.nu.tolist()}")
        chol = self.W_inv_cholesky
        return (chol @ chol.transpose(-1, -2)) / (self.nu - self.d - 1)[:, None, None]

    def mean_params(self, cov: str = "inverse_expected_precision") -> GMMParams:
        """A point summary Θ̄ for plots and ``align``: weights E[π_k], means m_k = E[μ_k], and
        covariances (E[Λ_k])⁻¹ = W_k⁻¹ / nu_k (``cov="inverse_expected_precision"``, scikit-learn's
        ``covariances_``; always defined) or E[Σ_k] (``cov="expected"``; needs nu_k > D + 1)."""
        if cov == "inverse_expected_precision":
            chol = self.W_inv_cholesky
            sigma = (chol @ chol.transpose(-1, -2)) / self.nu[:, None, None]
        elif cov == "expected":
            sigma = self.expected_cov()
        else:
            raise ValueError(f"cov must be 'inverse_expected_precision' or 'expected', got {cov!r}")
        return GMMParams(self.expected_weights(), self.m, 0.5 * (sigma + sigma.transpose(-1, -2)))

    # --- densities of data -------------------------------------------------------------------------
    def _x(self, x) -> torch.Tensor:
        x = as_data(x, dtype=self.dtype)
        if x.shape[1] != self.d:
            raise ValueError(f"x has D = {x.shape[1]} columns but the posterior is {self.d}-dimensional")
        return x

    def log_rho(self, x) -> torch.Tensor:
        """(N, K) matrix ln ρ_ik of PRML 10.46 (with 10.64–10.66)."""
        x = self._x(x)
        chol = self.W_inv_cholesky
        quad = _quad_t(x, self.m, _whitener(chol)).T  # (x − m_k)ᵀ W_k (x − m_k)
        const = (self.expected_log_weights() + 0.5 * self.expected_log_det_precision()
                 - 0.5 * self.d * _LOG_2PI - 0.5 * self.d / self.beta)
        return const - 0.5 * self.nu * quad  # 10.46 with 10.64

    def responsibilities(self, x) -> torch.Tensor:
        """r_ik of PRML 10.49 for (new) data: the VB E-step."""
        lr = self.log_rho(x)
        return torch.exp(lr - torch.logsumexp(lr, 1, keepdim=True))  # 10.49

    def predictive_log_density(self, x) -> torch.Tensor:
        """ln p(x̂ | X) per row (N,): the mixture of Student-t distributions of PRML 10.81,

        p(x̂ | X) = Σ_k (alpha_k / Σ_j alpha_j) St(x̂ | m_k, L_k, nu_k + 1 − D),
        L_k = (nu_k + 1 − D) beta_k / (1 + beta_k) · W_k   (10.82),

        with ln St(x | m, L, ν) = ln Γ((ν + D)/2) − ln Γ(ν/2) + ½ ln|L| − (D/2) ln(νπ)
        − ((ν + D)/2) ln(1 + (x − m)ᵀ L (x − m)/ν)   (B.68).
        """
        x = self._x(x)
        d = self.d
        dof = self.nu + 1 - d
        c = dof * self.beta / (1 + self.beta)  # L_k = c_k W_k, 10.82
        quad = c[:, None] * _quad_t(x, self.m, _whitener(self.W_inv_cholesky))  # (K, N)
        log_st = (
            torch.lgamma(0.5 * (dof + d)) - torch.lgamma(0.5 * dof)
            + 0.5 * (d * torch.log(c) + self.log_det_W()) - 0.5 * d * torch.log(dof * math.pi)
        )[:, None] - 0.5 * (dof + d)[:, None] * torch.log1p(quad / dof[:, None])  # B.68
        return torch.logsumexp(torch.log(self.expected_weights())[:, None] + log_st, 0)  # 10.81

    # --- draws -------------------------------------------------------------------------------------
    def sample(self, num_samples: int = 1000, seed=None) -> dict:
        """Draws from q; see :func:`sample_posterior`."""
        return sample_posterior(self, num_samples, seed)

    def permute(self, perm) -> "VBPosterior":
        perm = torch.as_tensor(perm, dtype=torch.long)
        if sorted(perm.tolist()) != list(range(self.k)):
            raise ValueError(f"perm must be a permutation of 0..{self.k - 1}, got {perm.tolist()}")
        return VBPosterior(self.alpha[perm], self.m[perm], self.beta[perm], self.nu[perm], self.W[perm])

    def __repr__(self) -> str:
        fmt = lambda t: np.array2string(t.numpy(), precision=4, suppress_small=True, separator=", ")  # noqa: E731
        return (f"VBPosterior(K={self.k}, D={self.d},\n  alpha={fmt(self.alpha)},\n  m={fmt(self.m)},\n"
                f"  beta={fmt(self.beta)},\n  nu={fmt(self.nu)})")


def sample_posterior(posterior: VBPosterior, num_samples: int = 1000, seed=None) -> dict:
    """Independent draws from q(α) q(μ, Λ) as numpy float64 arrays:
    ``alpha`` (S, K), ``mu`` (S, K, D), ``cov`` (S, K, D, D) with cov = Λ⁻¹.

    α ~ Dir(alpha); Λ_k ~ W(W_k, nu_k) by the Bartlett decomposition Λ = B Bᵀ, B = chol(W_k) A,
    A lower triangular with A_dd = sqrt(χ²(nu_k − d + 1)) and A_de ~ N(0, 1) below the diagonal;
    μ_k = m_k + beta_k^{−½} B⁻ᵀ ε, ε ~ N(0, I), so Cov[μ_k | Λ_k] = (beta_k Λ_k)⁻¹.  Every draw
    flows from ``numpy.random.default_rng(seed)``: the same seed gives the same bits.
    """
    num_samples = check_int(num_samples, "num_samples", 1)
    rng = np.random.default_rng(resolve_seed(seed))
    s, k, d = num_samples, posterior.k, posterior.d
    alpha = rng.dirichlet(posterior.alpha.double().numpy(), size=s)
    nu = posterior.nu.double().numpy()
    dfs = nu[None, :, None] - np.arange(d)[None, None, :]  # nu_k − d + 1 for d = 1..D
    a = np.tril(rng.standard_normal((s, k, d, d)), -1)
    a[..., np.arange(d), np.arange(d)] = np.sqrt(rng.chisquare(np.broadcast_to(dfs, (s, k, d))))
    eps = rng.standard_normal((s, k, d))
    chol_w = torch.linalg.cholesky(posterior.W.double())  # (K, D, D)
    b = chol_w[None] @ torch.from_numpy(a)  # Λ = B Bᵀ, B lower triangular
    eye = torch.eye(d, dtype=torch.float64).expand(s, k, d, d)
    b_inv = torch.linalg.solve_triangular(b, eye, upper=False)  # B⁻¹
    cov = b_inv.transpose(-1, -2) @ b_inv  # Σ = Λ⁻¹ = B⁻ᵀ B⁻¹
    mu = posterior.m.double()[None] + (b_inv.transpose(-1, -2) @ torch.from_numpy(eps)[..., None])[..., 0] \
        / torch.sqrt(posterior.beta.double())[None, :, None]
    return {"alpha": alpha, "mu": mu.numpy(), "cov": (0.5 * (cov + cov.transpose(-1, -2))).numpy()}


# --- the bound (PRML 10.70–10.77) ------------------------------------------------------------------
def _prior_constant(prior: NormalWishartPrior, k: int, dtype) -> torch.Tensor:
    """ln C(alpha0 1_K) + K ln B(W0, nu0) + (K D / 2) ln beta0: the prior's normalisers."""
    d = prior.d
    log_det_w0 = 2.0 * torch.log(torch.diagonal(torch.linalg.cholesky(prior.W0))).sum()
    nu0 = torch.tensor([prior.nu0], dtype=torch.float64)
    value = (log_dirichlet_norm(torch.full((k,), prior.alpha0, dtype=torch.float64))
             + k * log_wishart_norm(log_det_w0, nu0, d)[0] + 0.5 * k * d * math.log(prior.beta0))
    return value.to(dtype)


def _global_terms(post: VBPosterior, prior: NormalWishartPrior) -> torch.Tensor:
    """E[ln p(α)] + E[ln p(μ, Λ)] − E[ln q(α)] − E[ln q(μ, Λ)], PRML 10.73, 10.74, 10.76, 10.77."""
    k, d = post.k, post.d
    m0, _, w0_inv = prior.cast(post.dtype)
    elog_pi = post.expected_log_weights()  # ln π̃_k, 10.66
    log_det_w = post.log_det_W()
    elog_det = expected_log_det(log_det_w, post.nu, d)  # ln Λ̃_k, 10.65
    dm = post.m - m0
    mahal = torch.einsum("kd,kde,ke->k", dm, post.W, dm)
    trace = torch.einsum("de,ked->k", w0_inv, post.W)  # Tr(W0⁻¹ W_k)
    e_log_p_pi = log_dirichlet_norm(torch.full((k,), prior.alpha0, dtype=post.dtype)) \
        + (prior.alpha0 - 1) * elog_pi.sum()  # 10.73
    log_det_w0 = 2.0 * torch.log(torch.diagonal(torch.linalg.cholesky(prior.W0.to(post.dtype)))).sum()
    log_b0 = log_wishart_norm(log_det_w0, torch.tensor([prior.nu0], dtype=post.dtype), d)[0]
    e_log_p_mu_lambda = (
        0.5 * (d * math.log(prior.beta0 / (2 * math.pi)) + elog_det - d * prior.beta0 / post.beta
               - prior.beta0 * post.nu * mahal).sum()
        + k * log_b0 + 0.5 * (prior.nu0 - d - 1) * elog_det.sum() - 0.5 * (post.nu * trace).sum()
    )  # 10.74
    e_log_q_pi = ((post.alpha - 1) * elog_pi).sum() + log_dirichlet_norm(post.alpha)  # 10.76
    entropy_lambda = (-log_wishart_norm(log_det_w, post.nu, d) - 0.5 * (post.nu - d - 1) * elog_det
                      + 0.5 * post.nu * d)  # H[q(Λ_k)], B.82
    e_log_q_mu_lambda = (0.5 * elog_det + 0.5 * d * torch.log(post.beta / (2 * math.pi)) - 0.5 * d
                         - entropy_lambda).sum()  # 10.77
    return e_log_p_pi + e_log_p_mu_lambda - e_log_q_pi - e_log_q_mu_lambda


def lower_bound(x, gamma, posterior: VBPosterior, prior: NormalWishartPrior) -> torch.Tensor:
    """The full variational lower bound L(q) of PRML 10.70, term by term (10.71–10.77), for any
    q(Z) = Π_i Cat(gamma_i) and any ``posterior`` q(α) q(μ, Λ), with every constant:

        L = Σ_ik r_ik ln ρ_ik − Σ_ik r_ik ln r_ik                   (10.71 + 10.72 − 10.75)
            + E[ln p(α)] − E[ln q(α)] + E[ln p(μ, Λ)] − E[ln q(μ, Λ)]   (10.73 − 10.76 + 10.74 − 10.77)

    (Σ_k r_ik ln ρ_ik is 10.71 + 10.72 per point, by 10.46 and 10.64.)  0·ln 0 = 0.
    """
    x = posterior._x(x)
    prior.check_data(x)
    gamma = torch.as_tensor(gamma, dtype=posterior.dtype)
    if gamma.shape != (x.shape[0], posterior.k):
        raise ValueError(f"gamma must have shape (N, K) = ({x.shape[0]}, {posterior.k}), got {tuple(gamma.shape)}")
    lr = posterior.log_rho(x)
    expected = torch.where(gamma > 0, gamma * lr, torch.zeros_like(lr)).sum()  # 10.71 + 10.72
    data_terms = expected - torch.special.xlogy(gamma, gamma).sum()  # − 10.75
    return data_terms + _global_terms(posterior, prior)


def _bound_after_m_step(entropy, alpha, beta, nu, log_det_w, const, n, d) -> torch.Tensor:
    """10.70–10.77 when q(α) q(μ, Λ) is the M-step optimum for the same r: the ln π̃ and ln Λ̃
    terms cancel, the trace terms sum to −½ nu_k D, leaving (scikit-learn's ``lower_bound_`` plus
    constants)

        L = H[r] − (N D / 2) ln 2π + ln C(alpha0) − ln C(alpha) + (K D / 2) ln beta0 − (D/2) Σ ln beta_k
            + K ln B(W0, nu0) − Σ_k ln B(W_k, nu_k).
    """
    return (entropy - 0.5 * n * d * _LOG_2PI + const - log_dirichlet_norm(alpha)
            - 0.5 * d * torch.log(beta).sum() - log_wishart_norm(log_det_w, nu, d).sum())


# --- the fit ---------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class VBFit:
    """Result of ``fit_vb`` (method "vb") or ``fit_svi_bayes`` (method "svi_bayes").

    posterior   VBPosterior q(α) q(μ, Λ)
    gamma       (N, K) q(Z) of the training data (PRML 10.49)
    elbo        (T,) the full bound (10.70–10.77) per iteration/step; for "vb" non-decreasing,
                entry t after iteration t's M-step, the last after the closing E-step
    method      "vb" or "svi_bayes"
    n_iter, converged, seed, prior, times (seconds per trace entry), info (free-form)
    """

    posterior: VBPosterior
    gamma: torch.Tensor
    elbo: torch.Tensor
    method: str = "vb"
    n_iter: int = 0
    converged: bool = False
    seed: int | None = None
    prior: NormalWishartPrior | None = None
    times: torch.Tensor | None = None
    info: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return self.posterior.k

    @property
    def d(self) -> int:
        return self.posterior.d

    @property
    def weights(self) -> torch.Tensor:
        """E[π_k] under q(α)."""
        return self.posterior.expected_weights()

    def n_effective(self, threshold: float = 1e-2) -> int:
        """Components with E[π_k] > threshold (the ones not switched off, PRML fig. 10.6)."""
        return int((self.weights > threshold).sum())

    def mean_params(self, cov: str = "inverse_expected_precision") -> GMMParams:
        return self.posterior.mean_params(cov)

    def predictive_log_density(self, x) -> torch.Tensor:
        """ln p(x̂ | X) per row, the Student-t mixture of PRML 10.81."""
        return self.posterior.predictive_log_density(x)

    def score_samples(self, x) -> torch.Tensor:
        """ln p(x̂ | X) per row (N,) under the posterior predictive (PRML 10.81)."""
        return self.posterior.predictive_log_density(x)

    def score(self, x) -> float:
        return float(self.score_samples(x).mean())

    def predict_proba(self, x) -> torch.Tensor:
        """q(z = k) for new rows: the VB E-step, PRML 10.46–10.49 (as scikit-learn's predict_proba)."""
        return self.posterior.responsibilities(x)

    def predict(self, x) -> torch.Tensor:
        return torch.argmax(self.posterior.log_rho(x), dim=1)

    def sample_posterior(self, num_samples: int = 1000, seed=None) -> dict:
        return sample_posterior(self.posterior, num_samples, seed)

    def to_arviz(self, num_samples: int = 1000, seed=None):
        """``num_samples`` draws from q as an ``InferenceData`` (dims ``component``, ``feature``)."""
        from .arviz_io import vb_to_inference_data

        return vb_to_inference_data(self, num_samples, seed)

    def __repr__(self) -> str:
        last = float(self.elbo[-1]) if self.elbo.numel() else float("nan")
        return (f"VBFit(method={self.method!r}, K={self.k}, D={self.d}, n_iter={self.n_iter}, "
                f"converged={self.converged}, elbo={last:.6f}, n_effective={self.n_effective()}, seed={self.seed})")


_PARALLEL_WORK = 1 << 17  # N·K·D below which a fit runs on one torch thread


@contextlib.contextmanager
def threads_for(work: int):
    """Run a fit of size ``work`` = N·K·D on one torch thread when it is small (restored after).

    Small fits gain nothing from threads, and on a loaded machine OpenMP's spin-waiting makes
    their many tiny operations an order of magnitude slower (measured: galaxies, 2 threads vs 1)."""
    before = torch.get_num_threads()
    if work >= _PARALLEL_WORK or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _progress(progress: bool, total: int, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


def resolve_prior(x: torch.Tensor, k: int, prior) -> NormalWishartPrior:
    """``prior`` checked against the data; ``None`` means ``default_prior(x, k)``."""
    if prior is None:
        return default_prior(x, k)
    if not isinstance(prior, NormalWishartPrior):
        raise TypeError(f"prior must be a NormalWishartPrior (or None for default_prior), got {type(prior).__name__}")
    prior.check_data(x)
    return prior


def initial_responsibilities(x, k, init="kmeans++", seed=0) -> torch.Tensor:
    """r₀ (N, K) of fit_vb (and the γ start fit_svi_bayes can share): e_step(x, Θ₀) with fit_cavi's
    default Θ₀ (``init.initial_params``, reg_covar = 1e-6), or the VB E-step of a given VBPosterior.
    ``x`` must be validated (N, D) data (``cavi.check_fit_args``)."""
    if isinstance(init, VBPosterior):
        return init.responsibilities(x)
    return e_step(x, initial_params(x, k, init, seed, "full", INIT_REG_COVAR))


# --- the blocked kernel of one iteration ------------------------------------------------------------
# In centred coordinates x_c = x − x̄ the E-step exponent is a linear function of the features
# φ(x_c) = [x_c,d x_c,e (d ≤ e), x_c, 1] (P = D(D+1)/2 + D + 1):
#     ln ρ_ik = c_k − ½ (x_c − m_k)ᵀ ν_k W_k (x_c − m_k) = a_kᵀ φ(x_i)                    (10.46, 10.64)
# and the M-step needs only T = r φ (K, P): N_k, Σ_i r_ik x_c,i and Σ_i r_ik x_c,i x_c,iᵀ.  One GEMM
# each way.  The expansion loses about ε·G relative digits, G = max_k ν_k m_kᵀ W_k m_k the squared
# Mahalanobis distance of a component from the data mean; when G > _G_EXPANSION_MAX (1e-10 relative
# at worst) the iteration uses the exact kernels instead: differences x_i − m_k formed first
# (E-step) and two-pass scatter centred at the new m_k (M-step, priors.scatter_about).
_G_EXPANSION_MAX = 1e6
_FEATURE_CACHE_MAX = 1 << 23  # cache φ (P, N) when it holds at most this many numbers (64 MB)
_SCAN_ROWS = 1 << 15  # rows per block of the one-pass kernel


def _features_t(xc: torch.Tensor, iu: torch.Tensor) -> torch.Tensor:
    """φ(x_c)ᵀ (P, b): pairwise products (d ≤ e), the coordinates, and a row of ones."""
    ones = torch.ones(1, xc.shape[0], dtype=xc.dtype)
    return torch.cat([(xc[:, iu[0]] * xc[:, iu[1]]).T, xc.T, ones], 0)


def _design_t(mc, wt, c, iu) -> torch.Tensor:
    """a_k (K, P) with a_kᵀ φ(x) = c_k − ½ (x − m_k)ᵀ Wt_k (x − m_k), Wt_k = ν_k W_k."""
    pair = wt[:, iu[0], iu[1]] * torch.where(iu[0] == iu[1], -0.5, -1.0).to(wt.dtype)
    lin = torch.einsum("kde,ke->kd", wt, mc)
    const = c - 0.5 * (lin * mc).sum(1)
    return torch.cat([pair, lin, const[:, None]], 1)


def _scan(xc, k, *, design=None, feats_t=None, iu=None, exact=None, want_stats=True, block_rows=_SCAN_ROWS):
    """One pass over the rows: ln ρ (10.46), r (10.49), H[r] = −Σ r ln r, Σ_i ln Σ_k ρ_ik, and
    T = r φ (K, P) when ``design`` is used.  ``exact=(m_c, √ν U, c)`` selects the exact E-step.
    Returns (list of r-blocks (K, b), T or None, H, Σ lse)."""
    n = xc.shape[0]
    blocks = []
    entropy = torch.zeros((), dtype=xc.dtype)
    lse = torch.zeros((), dtype=xc.dtype)
    stats = torch.zeros(k, design.shape[1], dtype=xc.dtype) if (want_stats and exact is None) else None
    for s in range(0, n, block_rows):
        if exact is None:
            ph = feats_t[:, s : s + block_rows] if feats_t is not None else _features_t(xc[s : s + block_rows], iu)
            z = design @ ph  # ln ρ, 10.46 with 10.64–10.66
        else:
            mc, u, c = exact
            z = _quad_t(xc[s : s + block_rows], mc, u, block_rows).mul_(-0.5).add_(c[:, None])
        mx = z.amax(0)
        z.sub_(mx)
        r = torch.exp(z)
        total = r.sum(0)
        r.div_(total)  # 10.49
        log_total = torch.log(total)
        entropy += log_total.sum() - torch.dot(r.view(-1), z.view(-1))
        lse += (mx + log_total).sum()
        if stats is not None:
            stats.addmm_(r, ph.T)
        blocks.append(r)
    return blocks, stats, entropy, lse


def _m_step_from_stats(t, prior, m0c, w0_inv, iu, d):
    """The conjugate update (10.58, 10.60–10.63) from T = r φ, centred coordinates."""
    npair = iu.shape[1]
    n_k = t[:, -1]  # 10.51
    s = t[:, npair : npair + d]  # Σ_i r_ik x_c,i
    q = torch.zeros(t.shape[0], d, d, dtype=t.dtype)
    q[:, iu[0], iu[1]] = t[:, :npair]
    q[:, iu[1], iu[0]] = t[:, :npair]  # Σ_i r_ik x_c,i x_c,iᵀ
    beta = prior.beta0 + n_k  # 10.60
    m = (prior.beta0 * m0c + s) / beta[:, None]  # 10.61
    sm = s[:, :, None] * m[:, None, :]
    scatter = q - sm - sm.transpose(1, 2) + n_k[:, None, None] * m[:, :, None] * m[:, None, :]
    dm = m - m0c
    w_inv = w0_inv + scatter + prior.beta0 * dm[:, :, None] * dm[:, None, :]  # 10.62
    return ConjugateStats(n_k, prior.alpha0 + n_k, beta, m, prior.nu0 + n_k, 0.5 * (w_inv + w_inv.transpose(1, 2)))


def _e_terms(st, chol, d):
    """c_k = E[ln π_k] + ½ E[ln|Λ_k|] − (D/2) ln 2π − D/(2β_k) and the whitener √ν_k U_k."""
    log_det_w = _log_det_from_chol(chol)
    elog_pi = torch.digamma(st.alpha) - torch.digamma(st.alpha.sum())  # 10.66
    elog_det = expected_log_det(log_det_w, st.nu, d)  # 10.65
    c = elog_pi + 0.5 * elog_det - 0.5 * d * _LOG_2PI - 0.5 * d / st.beta  # 10.46, 10.64
    u = _whitener(chol) * torch.sqrt(st.nu)[:, None, None]  # ν_k W_k = (√ν_k U_k)(√ν_k U_k)ᵀ
    return c, u, log_det_w


def _spread(st, u) -> float:
    """G = max_k ν_k m_kᵀ W_k m_k (centred m): the expansion's loss of digits is about ε·G."""
    return float(torch.einsum("kd,kde->ke", st.m, u).square().sum(1).max())


def fit_vb(x, k, prior=None, *, init="kmeans++", max_iter=1000, tol=1e-8, seed=None, progress=False,
           dtype=None) -> VBFit:
    """Closed-form variational Bayes (CAVI over q(Z) q(α) q(μ, Λ), PRML §10.2; see the module doc).

    ``prior``: a NormalWishartPrior (None: ``default_prior(x, k)``).  ``init``: "kmeans++",
    "random", a GMMParams (Θ₀; r₀ = e_step(x, Θ₀)) or a VBPosterior (r₀ = its E-step).
    Converged when the change of the bound divided by N falls below ``tol``; ``tol=0`` runs
    exactly ``max_iter`` iterations.  ``progress=True`` shows a tqdm bar.
    """
    x, k = check_fit_args(x, k, "kmeans++" if isinstance(init, VBPosterior) else init, dtype)
    if isinstance(init, VBPosterior) and (init.k != k or init.d != x.shape[1]):
        raise ValueError(f"init posterior has K = {init.k}, D = {init.d}; the fit asks for K = {k}, D = {x.shape[1]}")
    max_iter = check_int(max_iter, "max_iter", 0)
    tol = check_positive(tol, "tol", allow_zero=True)
    prior = resolve_prior(x, k, prior)
    seed = resolve_seed(seed)
    with threads_for(x.shape[0] * k * x.shape[1]):
        return _fit(x, k, prior, init, max_iter, tol, seed, progress)


def _fit(x, k, prior, init, max_iter, tol, seed, progress) -> VBFit:
    n, d = x.shape
    start = time.perf_counter()
    centre = x.mean(0)
    xc = x - centre  # centred coordinates throughout; m_k is shifted back at the end
    m0, _, w0_inv = prior.cast(x.dtype)
    m0c = m0 - centre
    const = _prior_constant(prior, k, x.dtype)
    iu = torch.triu_indices(d, d)
    p = iu.shape[1] + d + 1
    feats_t = _features_t(xc, iu) if n * p <= _FEATURE_CACHE_MAX else None

    def exact_m_step(resp_t):
        st = conjugate_update(xc, resp_t, prior, w0_inv, m0c)  # 10.58, 10.60–10.63, two-pass
        return st, _chol(st.w_inv)

    def e_step_scan(st, chol, want_stats):
        c, u, _ = _e_terms(st, chol, d)
        if _spread(st, u) <= _G_EXPANSION_MAX:
            design = _design_t(st.m, u @ u.transpose(1, 2), c, iu)
            return _scan(xc, k, design=design, feats_t=feats_t, iu=iu, want_stats=want_stats)
        return _scan(xc, k, exact=(st.m, u, c), want_stats=False)

    resp_t = initial_responsibilities(x, k, init, seed).T.contiguous()
    st, chol = exact_m_step(resp_t)
    prev = float(_bound_after_m_step(-torch.special.xlogy(resp_t, resp_t).sum(), st.alpha, st.beta, st.nu,
                                     _log_det_from_chol(chol), const, n, d))
    bounds, times = [], []
    bar = _progress(progress, max_iter, "VB")
    converged, n_iter = False, 0
    for it in range(max_iter):
        blocks, t_stats, entropy, _ = e_step_scan(st, chol, True)  # E-step, 10.46–10.49
        new = None
        if t_stats is not None:
            new = _m_step_from_stats(t_stats, prior, m0c, w0_inv, iu, d)  # M-step from r φ
            new_chol, bad = _chol_checked(new.w_inv)
            if bad is not None or _spread(new, _whitener(new_chol) * torch.sqrt(new.nu)[:, None, None]) \
                    > _G_EXPANSION_MAX:
                new = None
        if new is None:  # exact two-pass M-step
            st, chol = exact_m_step(torch.cat(blocks, 1))
        else:
            st, chol = new, new_chol
        value = _bound_after_m_step(entropy, st.alpha, st.beta, st.nu, _log_det_from_chol(chol), const, n, d)
        n_iter = it + 1
        if not bool(torch.isfinite(value)):
            raise DivergenceError(n_iter, st, "the variational bound became NaN/inf at iteration "
                                  f"{n_iter}; standardise the data or use default_prior(x, k)")
        bounds.append(value)
        times.append(time.perf_counter() - start)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(elbo=f"{float(value):.6g}")
        change = abs(float(value) - prev) / n
        prev = float(value)
        if change < tol:
            converged = True
            break
    if bar is not None:
        bar.close()
    posterior = VBPosterior._from_update(st.alpha, st.beta, st.m + centre, st.nu, chol)
    blocks, _, _, lse = e_step_scan(st, chol, False)  # closing E-step
    bounds.append(lse + _global_terms(posterior, prior))  # 10.70 with r = softmax(ln ρ)
    times.append(time.perf_counter() - start)
    return VBFit(
        posterior=posterior,
        gamma=torch.cat(blocks, 1).T.contiguous(),
        elbo=torch.stack(bounds),
        method="vb",
        n_iter=n_iter,
        converged=converged,
        seed=seed,
        prior=prior,
        times=torch.tensor(times, dtype=torch.float64),
    )
