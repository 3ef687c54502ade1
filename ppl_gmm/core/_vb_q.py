"""``VBPosterior``: the variational posterior of the Bayesian GMM (Bishop, PRML §10.2) for every
covariance type and both weight priors, with its expectations, the VB E-step and draws.

    q(α) q(μ, Λ) = Dir(α | alpha_k) Π_k N(μ_k | m_k, (beta_k Λ_k)⁻¹) W(Λ_k | W_k, nu_k)   (10.57, 10.59)

``core.vb_posterior`` is its public home and describes the model; the weight priors are in
``core._vb_weights``, the covariance types in ``core._vb_covariance``, the bound in ``core._vb_bound``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import torch

from ._distributions import expected_log_det, normal_wishart_from_noise
from ._vb_covariance import _check_structure
from ._vb_weights import _exclusive_cumsum, _in_stick_order, expected_log_weights
from .errors import DegeneratePosteriorError
from .gaussian import LOG_2PI, mahalanobis_sq, normalise_log
from .linalg import checked_cholesky, inverse_from_cholesky, log_det_from_cholesky, precision_cholesky
from .params import GMMParams
from .rng import resolve_seed
from .validation import ArrayLike, as_data, check_covariance_type, check_int

__all__ = ["VBPosterior", "sample_posterior", "log_rho_const", "posterior_cholesky", "degenerate_posterior"]


def degenerate_posterior(component: int) -> DegeneratePosteriorError:
    """The error for a posterior scale matrix W_k⁻¹ that lost positive definiteness to round-off."""
    return DegeneratePosteriorError(
        f"component {component}: the posterior scale matrix W_k⁻¹ = W0⁻¹ + scatter (PRML 10.62) is not "
        "numerically positive definite (a numerically degenerate posterior). W0⁻¹ is negligible next to the "
        "data's scatter or the data span a lower-dimensional subspace: standardise the data, drop "
        "collinear columns, or use a prior with a larger W0⁻¹ (e.g. default_prior(x, k)).",
        component,
    )


@overload
def posterior_cholesky(w_inv: torch.Tensor, check_only: Literal[False] = False) -> torch.Tensor: ...


@overload
def posterior_cholesky(w_inv: torch.Tensor, check_only: Literal[True]) -> tuple[torch.Tensor, int | None]: ...


def posterior_cholesky(w_inv: torch.Tensor, check_only: bool = False) -> torch.Tensor | tuple[torch.Tensor, int | None]:
    """Lower Cholesky factors of W_k⁻¹ (K, D, D), or a DegeneratePosteriorError naming the component.

    Singular means a failed factorisation or a pivot L_jj² / (W_k⁻¹)_jj below 10 D ε: coordinate j
    is a linear function of the earlier ones to machine precision (the check is scale-free).
    ``check_only=True`` returns ``(chol, index of the first singular component or None)`` instead
    of raising."""
    d = w_inv.shape[-1]
    chol, bad = checked_cholesky(w_inv, pivot_tol=10 * d * torch.finfo(w_inv.dtype).eps)
    if check_only:
        return chol, bad
    if bad is not None:
        raise degenerate_posterior(bad)
    return chol


def log_rho_const(
    elog_pi: torch.Tensor, beta: torch.Tensor, nu: torch.Tensor, log_det_w: torch.Tensor, d: int
) -> torch.Tensor:
    """The part of ln ρ_ik (PRML 10.46) that does not depend on x_i (K,), from E[ln π_k]
    (:func:`expected_log_weights`):

        E[ln π_k] + ½ E[ln |Λ_k|] − (D/2) ln 2π − D / (2 beta_k)          (10.64–10.66)

    so that ln ρ_ik = const_k − ½ nu_k (x_i − m_k)ᵀ W_k (x_i − m_k)."""
    elog_det = expected_log_det(log_det_w, nu, d)  # 10.65
    return elog_pi + 0.5 * elog_det - 0.5 * d * LOG_2PI - 0.5 * d / beta  # 10.46, 10.64


# --- the posterior ---------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class VBPosterior:
    """q(α) q(μ, Λ) = Dir(α | alpha) Π_k N(μ_k | m_k, (beta_k Λ_k)⁻¹) W(Λ_k | W_k, nu_k), PRML 10.57/10.59.

    alpha : (K,) > 0       Dirichlet concentrations (10.58); with ``stick_b``, the sticks' a_k
    m     : (K, D)         means of μ_k (10.61)
    beta  : (K,) > 0       precision scalings of μ_k (10.60)
    nu    : (K,) > D − 1   Wishart degrees of freedom (10.63); equal for "tied"
    W     : (K, D, D)      Wishart scale matrices, positive definite (10.62); E[Λ_k] = nu_k W_k.
                           Every type stores (K, D, D): diagonal for "diag", w_k I for "spherical",
                           K equal copies for "tied" (module docstring)
    covariance_type        "full", "diag", "spherical" or "tied": the family of q(Λ)
    stick_b : (K,) > 0     None for q(α) = Dir(alpha); else the Dirichlet-process sticks
                           q(v_k) = Beta(alpha_k, stick_b_k)
    stick_order : (K,)     the component of stick 0, 1, ... (None: 0..K−1); ``permute`` updates it
    """

    alpha: torch.Tensor
    m: torch.Tensor
    beta: torch.Tensor
    nu: torch.Tensor
    W: torch.Tensor
    covariance_type: str = "full"
    stick_b: torch.Tensor | None = None
    stick_order: torch.Tensor | None = None

    def __post_init__(self):
        check_covariance_type(self.covariance_type)
        alpha = torch.as_tensor(self.alpha).detach()
        dtype = alpha.dtype if alpha.is_floating_point() else torch.float64
        names = ("alpha", "m", "beta", "nu", "W") + (("stick_b",) if self.stick_b is not None else ())
        t = {name: torch.as_tensor(getattr(self, name)).detach().to(device="cpu", dtype=dtype) for name in names}
        if t["alpha"].ndim != 1:
            raise ValueError(f"alpha must have shape (K,), got {tuple(t['alpha'].shape)}")
        k = t["alpha"].shape[0]
        if t["m"].ndim == 1:
            t["m"] = t["m"].reshape(k, -1)
        d = t["m"].shape[-1]
        shapes = {"m": (k, d), "beta": (k,), "nu": (k,), "W": (k, d, d), "stick_b": (k,)}
        for name, shape in ((n, shapes[n]) for n in t if n in shapes):
            if tuple(t[name].shape) != shape:
                raise ValueError(f"{name} must have shape {shape} (K = {k}, D = {d}), got {tuple(t[name].shape)}")
        for name, v in t.items():
            if not bool(torch.isfinite(v).all()):
                raise ValueError(f"{name} has NaN or infinite entries")
        if bool((t["alpha"] <= 0).any()) or bool((t["beta"] <= 0).any()):
            raise ValueError("alpha and beta must be > 0")
        if "stick_b" in t and bool((t["stick_b"] <= 0).any()):
            raise ValueError("stick_b must be > 0")
        if bool((t["nu"] <= d - 1).any()):
            raise ValueError(f"nu must be > D − 1 = {d - 1}")
        w = _check_structure(0.5 * (t["W"] + t["W"].transpose(-1, -2)), t["nu"], self.covariance_type)
        if checked_cholesky(w)[1] is not None:
            raise ValueError("W must be positive definite")
        t["W"] = w
        for name, v in t.items():
            object.__setattr__(self, name, v.contiguous())
        if self.stick_order is not None:
            order = torch.as_tensor(self.stick_order).detach().to(device="cpu", dtype=torch.long)
            if self.stick_b is None or sorted(order.tolist()) != list(range(k)):
                raise ValueError(f"stick_order must be a permutation of 0..{k - 1}, and only with stick_b")
            object.__setattr__(self, "stick_order", order)

    @classmethod
    def from_update(
        cls,
        alpha: torch.Tensor,
        beta: torch.Tensor,
        m: torch.Tensor,
        nu: torch.Tensor,
        w_inv_chol: torch.Tensor,
        covariance_type: str = "full",
        stick_b: torch.Tensor | None = None,
    ) -> VBPosterior:
        """The posterior of a conjugate update, W_k from the Cholesky factors of W_k⁻¹."""
        return cls(alpha, m, beta, nu, inverse_from_cholesky(w_inv_chol), covariance_type, stick_b)

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

    @property
    def weight_prior(self) -> str:
        """ "dirichlet" or "dirichlet_process" (the sticks, ``stick_b``)."""
        return "dirichlet" if self.stick_b is None else "dirichlet_process"

    # --- expectations (PRML 10.64–10.66, B.80) -----------------------------------------------------
    @property
    def W_inv_cholesky(self) -> torch.Tensor:
        """Lower Cholesky factors of W_k⁻¹ (the scale of q(Σ_k), an inverse Wishart)."""
        return posterior_cholesky(inverse_from_cholesky(torch.linalg.cholesky(self.W)))

    def log_det_W(self) -> torch.Tensor:
        """ln |W_k| (K,)."""
        return log_det_from_cholesky(torch.linalg.cholesky(self.W))

    def expected_log_weights(self) -> torch.Tensor:
        """E[ln π_k] = ψ(alpha_k) − ψ(Σ_j alpha_j), PRML 10.66, or from the sticks (:func:`expected_log_weights`)."""
        return expected_log_weights(self.alpha, self.stick_b, self.stick_order)  # 10.66

    def expected_log_det_precision(self) -> torch.Tensor:
        """E[ln |Λ_k|], PRML 10.65."""
        return expected_log_det(self.log_det_W(), self.nu, self.d)  # 10.65

    def expected_weights(self) -> torch.Tensor:
        """E[π_k] = alpha_k / Σ_j alpha_j (PRML B.17); for the sticks E[v_k] Π_{j<k} E[1 − v_j]
        = a_k / (a_k + b_k) Π_{j<k} b_j / (a_j + b_j), renormalised over the K components
        (scikit-learn's ``weights_``)."""
        if self.stick_b is None:
            return self.alpha / self.alpha.sum()  # B.17
        order = _in_stick_order(self.stick_order, self.k)
        a, b = self.alpha[order], self.stick_b[order]
        w = a / (a + b) * torch.exp(_exclusive_cumsum(torch.log(b / (a + b))))
        out = torch.empty_like(w)
        out[order] = w / w.sum()
        return out

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
    def _x(self, x: ArrayLike) -> torch.Tensor:
        x = as_data(x, dtype=self.dtype)
        if x.shape[1] != self.d:
            raise ValueError(f"x has D = {x.shape[1]} columns but the posterior is {self.d}-dimensional")
        return x

    def log_rho(self, x: ArrayLike) -> torch.Tensor:
        """(N, K) matrix ln ρ_ik of PRML 10.46 (with 10.64–10.66)."""
        x = self._x(x)
        u = precision_cholesky(chol=self.W_inv_cholesky)  # W_k = U_k U_kᵀ
        quad = mahalanobis_sq(x, self.m, u)  # (x − m_k)ᵀ W_k (x − m_k)
        const = log_rho_const(self.expected_log_weights(), self.beta, self.nu, self.log_det_W(), self.d)
        return const - 0.5 * self.nu * quad  # 10.46 with 10.64

    def responsibilities(self, x: ArrayLike) -> torch.Tensor:
        """r_ik of PRML 10.49 for (new) data: the VB E-step."""
        return normalise_log(self.log_rho(x))[0]  # 10.49

    def predictive_log_density(self, x: ArrayLike) -> torch.Tensor:
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
        quad = c[:, None] * mahalanobis_sq(x, self.m, precision_cholesky(chol=self.W_inv_cholesky)).T  # (K, N)
        log_st = (
            torch.lgamma(0.5 * (dof + d))
            - torch.lgamma(0.5 * dof)
            + 0.5 * (d * torch.log(c) + self.log_det_W())
            - 0.5 * d * torch.log(dof * math.pi)
        )[:, None] - 0.5 * (dof + d)[:, None] * torch.log1p(quad / dof[:, None])  # B.68
        return torch.logsumexp(torch.log(self.expected_weights())[:, None] + log_st, 0)  # 10.81

    # --- draws -------------------------------------------------------------------------------------
    def sample(self, num_samples: int = 1000, seed: int | None = None) -> dict[str, np.ndarray]:
        """Draws from q; see :func:`sample_posterior`."""
        return sample_posterior(self, num_samples, seed)

    def permute(self, perm: ArrayLike) -> VBPosterior:
        perm = torch.as_tensor(perm, dtype=torch.long)
        if sorted(perm.tolist()) != list(range(self.k)):
            raise ValueError(f"perm must be a permutation of 0..{self.k - 1}, got {perm.tolist()}")
        stick_b, order = self.stick_b, self.stick_order
        if stick_b is not None:  # the sticks stay with their components: new j = old perm[j]
            stick_b = stick_b[perm]
            order = torch.argsort(perm)[_in_stick_order(order, self.k)]
        return VBPosterior(
            self.alpha[perm],
            self.m[perm],
            self.beta[perm],
            self.nu[perm],
            self.W[perm],
            self.covariance_type,
            stick_b,
            order,
        )

    def __repr__(self) -> str:
        fmt = lambda t: np.array2string(t.numpy(), precision=4, suppress_small=True, separator=", ")
        sticks = "" if self.stick_b is None else f",\n  stick_b={fmt(self.stick_b)}"
        return (
            f"VBPosterior(K={self.k}, D={self.d}, covariance_type={self.covariance_type!r}, "
            f"weight_prior={self.weight_prior!r},\n  alpha={fmt(self.alpha)}{sticks},\n  m={fmt(self.m)},\n"
            f"  beta={fmt(self.beta)},\n  nu={fmt(self.nu)})"
        )


def sample_posterior(posterior: VBPosterior, num_samples: int = 1000, seed: int | None = None) -> dict[str, np.ndarray]:
    """Independent draws from q(α) q(μ, Λ) as numpy float64 arrays:
    ``alpha`` (S, K), ``mu`` (S, K, D), ``cov`` (S, K, D, D) with cov = Λ⁻¹.

    α ~ Dir(alpha) (or from the sticks, renormalised over the K components); Λ_k ~ W(W_k, nu_k) by the
    Bartlett decomposition Λ = B Bᵀ, B = chol(W_k) A,
    A lower triangular with A_dd = sqrt(χ²(nu_k − d + 1)) and A_de ~ N(0, 1) below the diagonal;
    μ_k = m_k + beta_k^{−½} B⁻ᵀ ε, ε ~ N(0, I), so Cov[μ_k | Λ_k] = (beta_k Λ_k)⁻¹
    (``priors.normal_wishart_from_noise``, shared with ``inference.gibbs``).  Every draw flows from
    ``numpy.random.default_rng(seed)``: the same seed gives the same bits.
    """
    num_samples = check_int(num_samples, "num_samples", 1)
    rng = np.random.default_rng(resolve_seed(seed))
    s, k, d = num_samples, posterior.k, posterior.d
    if posterior.stick_b is None:
        alpha = rng.dirichlet(posterior.alpha.double().numpy(), size=s)
    else:  # v_k ~ Beta(a_k, b_k), π_k = v_k Π_{j<k} (1 − v_j) in stick order, renormalised over the K components
        order = _in_stick_order(posterior.stick_order, k).numpy()
        v = rng.beta(posterior.alpha.double().numpy()[order], posterior.stick_b.double().numpy()[order], size=(s, k))
        pi = v * np.concatenate([np.ones((s, 1)), np.cumprod(1 - v, 1)[:, :-1]], 1)
        alpha = np.empty_like(pi)
        alpha[:, order] = pi / pi.sum(1, keepdims=True)
    nu = posterior.nu.double().numpy()
    dfs = nu[None, :, None] - np.arange(d)[None, None, :]  # nu_k − d + 1 for d = 1..D
    a = np.tril(rng.standard_normal((s, k, d, d)), -1)
    a[..., np.arange(d), np.arange(d)] = np.sqrt(rng.chisquare(np.broadcast_to(dfs, (s, k, d))))
    eps = rng.standard_normal((s, k, d))
    chol_w = torch.linalg.cholesky(posterior.W.double())  # (K, D, D)
    _, mu, cov = normal_wishart_from_noise(
        posterior.m.double()[None],
        posterior.beta.double()[None],
        chol_w[None],
        torch.from_numpy(a),
        torch.from_numpy(eps),
    )
    return {"alpha": alpha, "mu": mu.numpy(), "cov": cov.numpy()}
