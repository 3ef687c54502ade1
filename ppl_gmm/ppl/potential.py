"""The NUTS potential of ``bayes.bayes_gmm_model`` written directly in torch, with its gradient.

The target is the model's posterior with Z summed out (eq. 26) on an unconstrained vector
θ = (u, w, v) ∈ R^{(K−1) + K·D + K·D(D+1)/2}::

    α = stick-breaking(u)                  ``transforms.stick_breaking_log``        (K > 1; α ≡ 1 for K = 1)
    μ = w,  or ordered(w)                  ``transforms.ordered_first_coordinate``  (``ordered=True``)
    Λ_k = L_k L_kᵀ,  L_k = tril(v_k)       ``transforms.vec_to_tril`` / ``TrilVecToPD``

    ln π(θ) = ln Dir(α | alpha0)                                      (PRML B.16)
            + Σ_k [ln N(μ_k | m0, (beta0 Λ_k)⁻¹) + ln W(Λ_k | W0, nu0)]   (PRML 10.40, B.78)
            + Σ_i ln Σ_k α_k N(x_i | μ_k, Λ_k⁻¹)                      (eq. 26)
            + ln |J_α(u)| + ln |J_μ(w)| + ln |J_Λ(v)|

and the potential energy is U(θ) = −ln π(θ).  Without ``ordered`` these are exactly Pyro's
coordinates for the model (``biject_to`` of each site's support: stick-breaking for the simplex,
identity for μ, ``TrilVecToPD`` for Λ), so U equals the potential energy Pyro derives from
``bayes_gmm_model`` (``pyro.infer.mcmc.util.initialize_model``); the tests check value and
gradient to 1e-10.  With ``ordered=True`` the means satisfy μ_{1,1} < … < μ_{K,1} for every θ:
the posterior restricted to one labelling (it is the unordered posterior sorted by μ_{k,1}, the
mixture being exchangeable in its labels), so label switching cannot occur.

Two implementations of the same U, tested against each other:

- :meth:`BayesGMMPotential.log_density` — the reference: every term from the ``core`` function
  that owns the equation (``log_dirichlet_density``, ``log_normal_wishart_density``,
  ``log_gaussian_prec``, ``logsumexp_rows``) and the Jacobians from ``transforms``;
  differentiable by autograd.
- :meth:`BayesGMMPotential.value_and_grad` — the sampler's: U and ∇U in one pass without autograd
  (formulas in the method's docstring, derived from the same densities), about 65 tensor
  operations, traced once by ``torch.jit.trace`` (:meth:`BayesGMMPotential.compiled`).
  :meth:`BayesGMMPotential.potential_fn` hands it to Pyro's NUTS as ``potential_fn`` (one autograd
  node whose backward returns the precomputed gradient).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch

from ..core.gaussian import log_gaussian_prec, logsumexp_rows
from ..core.priors import (
    NormalWishartPrior,
    log_dirichlet_density,
    log_dirichlet_norm,
    log_normal_wishart_density,
    resolve_prior,
)
from ..core.validation import ArrayLike, as_data, check_k
from .transforms import (
    TrilVecToPD,
    ordered_first_coordinate,
    ordered_first_coordinate_inverse,
    stick_breaking_inverse,
    stick_breaking_log,
    tril_indices,
    vec_to_tril,
)

__all__ = ["BayesGMMPotential", "SITE"]

SITE = "theta"  # the name of the one flat site Pyro's NUTS sees

ValueAndGrad = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class _WithGradient(torch.autograd.Function):
    """U(θ) as one autograd node: forward evaluates (U, ∇U) together, backward returns ∇U."""

    @staticmethod
    def forward(ctx, theta, fn):
        value, grad = fn(theta)
        ctx.save_for_backward(grad)
        return value

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad_output * grad, None


class BayesGMMPotential:
    """U(θ) = −ln p(X, α, μ, Λ) − ln |J| of the Bayesian GMM on the unconstrained vector θ (module
    docstring).  ``x``, ``k``, ``prior`` as for ``bayes_gmm_model`` (``None``: ``default_prior``);
    computations in the data's dtype.

    Layout of θ: ``[u (K−1) | w (K, D) row-major | v (K, D(D+1)/2) row-major]``, v_k in
    ``torch.tril_indices`` order (``TrilVecToPD``).
    """

    def __init__(self, x: ArrayLike, k: int, prior: NormalWishartPrior | None = None, *, ordered: bool = False):
        x = as_data(x)
        n, d = x.shape
        k = check_k(k, n)
        self.prior = resolve_prior(x, k, prior)
        self.x, self.k, self.d, self.ordered = x, k, d, bool(ordered)
        self.t = d * (d + 1) // 2
        self.sizes = (k - 1, k * d, k * self.t)
        self.size = sum(self.sizes)
        dt = x.dtype
        self.m0, _, self.w0_inv = self.prior.cast(dt)
        self._x3 = x[None]  # (1, N, D)
        p = self.prior
        # --- constants of value_and_grad (see its docstring) ---
        rows, cols, diag = tril_indices(d)
        self._is_diag = rows == cols  # (T,) over the entries of v_k
        d_sel = self._is_diag.to(dt)  # v_k · d_sel = Σ_i ln L_k,ii = ½ ln|Λ_k|
        self._d_sel = d_sel
        scatter = torch.zeros(self.t, d * d, dtype=dt)  # L_k (flattened) = entries of v_k @ scatter
        scatter[torch.arange(self.t), rows * d + cols] = 1.0
        self._scatter, self._gather = scatter, scatter.T.contiguous()
        jac_coef = torch.zeros(self.t, dtype=dt)  # ln|J_Λ| = D ln 2 + Σ_i (D − i + 2) v_k,ii (TrilVecToPD)
        jac_coef[diag] = torch.arange(d + 1, 1, -1, dtype=dt)
        self._c_v = (p.nu0 - d) * d_sel + jac_coef  # ln π's linear terms in v_k: ((nu0 − D)/2) ln|Λ_k| and ln|J_Λ|
        self._c_v_flat = self._c_v.repeat(k)
        if k > 1:  # ℓ = (ln s, ln(1 − s)) = logsigmoid(Eᵀu + c), ln α = G ℓ
            eye = torch.eye(k - 1, dtype=dt)
            self._e = torch.cat([eye, -eye], 1)  # (K−1, 2K−2)
            self._e_t = self._e.T.contiguous()
            offset = torch.log(torch.arange(k - 1, 0, -1, dtype=dt))  # v_j = u_j − ln(K − j)
            self._e_offset = torch.cat([-offset, offset])
            g = torch.zeros(k, 2 * (k - 1), dtype=dt)
            g[: k - 1, : k - 1] = eye  # ln α_j ∋ ln s_j (j < K)
            g[:, k - 1 :] = torch.tril(torch.ones(k, k - 1, dtype=dt), diagonal=-1)  # ∋ ln(1 − s_i), i < j
            self._g, self._g_t = g, g.T.contiguous()
            # ℓ's coefficients in (alpha0 − 1) Σ_k ln α_k + ln|J_α|, ln|J_α| = Σ_{j<K} [ln(1 − s_j) + ln α_j]
            log_1ms = torch.cat([torch.zeros(k - 1, dtype=dt), torch.ones(k - 1, dtype=dt)])
            self._a = (p.alpha0 - 1) * g.sum(0) + g[: k - 1].sum(0) + log_1ms
        self._log_alpha_one = torch.zeros(1, dtype=dt)  # K = 1: α ≡ 1
        # every constant of ln π: Dirichlet and Wishart normalisers, (D/2) ln(beta0/2π) per μ_k,
        # −(N D / 2) ln 2π of the data, D ln 2 per Λ_k of the Jacobian
        const = k * float(p.log_wishart_norm0(dt)) + 0.5 * k * d * math.log(p.beta0 / (2 * math.pi))
        const += -0.5 * n * d * math.log(2 * math.pi) + k * d * math.log(2.0)
        if k > 1:
            const += float(log_dirichlet_norm(torch.full((k,), p.alpha0, dtype=dt)))
        self._const = const
        self._compiled: ValueAndGrad | None = None

    # --- coordinates ----------------------------------------------------------------------------
    def _split(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, m, _ = self.sizes
        u = theta[..., :a]
        w = theta[..., a : a + m].reshape(theta.shape[:-1] + (self.k, self.d))
        v = theta[..., a + m :].reshape(theta.shape[:-1] + (self.k, self.t))
        return u, w, v

    def to_unconstrained(self, alpha: torch.Tensor, mu: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
        """θ for weights α (K,) on the simplex (every α_k > 0), means μ (K, D) and precisions Λ (K, D, D).
        With ``ordered`` the μ_{k,1} must be strictly increasing."""
        dt = self.x.dtype
        u = stick_breaking_inverse(alpha.to(dt)) if self.k > 1 else torch.zeros(0, dtype=dt)
        w = ordered_first_coordinate_inverse(mu.to(dt)) if self.ordered else mu.to(dt)
        v = TrilVecToPD().inv(precision.to(dt))
        return torch.cat([u.reshape(-1), w.reshape(-1), v.reshape(-1)])

    def constrain(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"alpha" (..., K), "mu" (..., K, D), "Lambda" (..., K, D, D)} for θ (..., size)."""
        u, w, v = self._split(theta)
        if self.k > 1:
            alpha = torch.exp(stick_breaking_log(u)[0])
        else:
            alpha = torch.ones(theta.shape[:-1] + (1,), dtype=theta.dtype)
        mu = ordered_first_coordinate(w)[0] if self.ordered else w
        tril = vec_to_tril(v)
        return {"alpha": alpha, "mu": mu, "Lambda": tril @ tril.transpose(-1, -2)}

    # --- the reference: core functions and autograd ---------------------------------------------
    def log_density(self, theta: torch.Tensor) -> torch.Tensor:
        """ln π(θ) (module docstring) from the ``core`` densities and the ``transforms`` Jacobians."""
        u, w, v = self._split(theta)
        if self.k > 1:
            log_alpha, log_jac = stick_breaking_log(u)  # α = stick-breaking(u)
            log_p = log_dirichlet_density(log_alpha, self.prior.alpha0)  # PRML B.16
        else:
            log_alpha = torch.zeros(1, dtype=theta.dtype)
            log_jac = log_p = torch.zeros((), dtype=theta.dtype)
        if self.ordered:
            mu, log_jac_mu = ordered_first_coordinate(w)
            log_jac = log_jac + log_jac_mu
        else:
            mu = w
        tril = vec_to_tril(v)  # Λ_k = L_k L_kᵀ: L_k is a precision factor
        log_jac = log_jac + TrilVecToPD().log_abs_det_jacobian(v, None).sum()
        log_p = log_p + log_normal_wishart_density(mu, tril, self.prior, self.m0, self.w0_inv).sum()  # 10.40
        wlp = log_gaussian_prec(self.x, mu, tril) + log_alpha  # ln α_k + ln N(x_i | μ_k, Λ_k⁻¹)
        return log_p + logsumexp_rows(wlp).sum() + log_jac  # eq. 26

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        """U(θ) = −ln π(θ) by the reference path (differentiable)."""
        return -self.log_density(theta)

    # --- the sampler's: value and gradient in one pass ------------------------------------------
    def value_and_grad(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(U(θ), ∇U(θ)) without autograd, in about 60 tensor operations (the sampler's hot loop).

        With ℓ_ik = ln α_k + ln N(x_i | μ_k, Λ_k⁻¹), γ_ik = exp(ℓ_ik − lse_i) (eq. 20), N_k = Σ_i γ_ik,
        r_ik = x_i − μ_k, y_ik = L_kᵀ r_ik, δ_k = μ_k − m0, z_k = L_kᵀ δ_k and
        Q_k = (W0⁻¹ + beta0 δ_k δ_kᵀ) L_k, the gradient of ln π is::

            ∂/∂ ln α_k = N_k + alpha0 − 1 + [k < K]                         (eq. 26, Dirichlet, ln|J_α|)
            ∂/∂ μ_k    = L_k (Σ_i γ_ik y_ik − beta0 z_k)
            ∂/∂ L_k    = (N_k + nu0 − D) diag(1/L_k,ii) − Σ_i γ_ik r_ik y_ikᵀ − Q_k
            ∂/∂ v_k,ij = (∂/∂ L_k)_ij (i > j);   ∂/∂ v_k,ii = L_k,ii (∂/∂ L_k)_ii + (D − i + 2)

        Stick-breaking is linear in ℓ = (ln s, ln(1 − s)) = logsigmoid(Eᵀu + c), s_j = σ(u_j − ln(K − j)):
        ln α = G ℓ, so ∂/∂u = E [(Gᵀ ∂/∂ ln α + a) ⊙ (1 − e^ℓ)], with ``a`` the coefficients of ℓ in
        ln|J_α| and the Dirichlet term (``__init__``).  With ``ordered``,
        ∂/∂ w_{j,1} = (Σ_{k≥j} ∂/∂μ_{k,1}) · (1 if j = 1 else e^{w_{j,1}}) + [j > 1].
        """
        k, d, t = self.k, self.d, self.t
        p = self.prior
        u, w, v_flat = torch.split(theta, list(self.sizes))
        w = w.reshape(k, d)
        v = v_flat.reshape(k, t)
        if k > 1:
            ell = torch.nn.functional.logsigmoid(torch.addmv(self._e_offset, self._e_t, u))
            log_alpha = torch.mv(self._g, ell)
        else:
            log_alpha = self._log_alpha_one
        if self.ordered:
            gaps = torch.exp(w[1:, 0])
            mu = torch.cat([torch.cumsum(torch.cat([w[:1, 0], gaps]), 0)[:, None], w[:, 1:]], 1)
        else:
            mu = w
        ev = torch.exp(v)
        tril = torch.mm(torch.where(self._is_diag, ev, v), self._scatter).view(k, d, d)  # L_k
        # data, eq. 26 (−(N D/2) ln 2π in the constant)
        r = self._x3 - mu.unsqueeze(1)  # (K, N, D)
        y = torch.bmm(r, tril)  # y_ik = L_kᵀ r_ik
        wlp = torch.sub(torch.addmv(log_alpha, v, self._d_sel).unsqueeze(1), (y * y).sum(-1), alpha=0.5)  # ℓ_ik (K, N)
        lse = torch.logsumexp(wlp, 0)
        gamma = torch.exp(wlp - lse)  # eq. 20
        n_k = gamma.sum(1)
        # prior, PRML 10.40, B.78 (normalisers in the constant; the ln|Λ_k| terms are linear in v)
        delta = mu - self.m0
        z = torch.bmm(delta.unsqueeze(1), tril)  # (K, 1, D): z_kᵀ
        q = torch.baddbmm(self.w0_inv @ tril, delta.unsqueeze(2), z, alpha=p.beta0)  # Q_k
        log_pi = lse.sum() + torch.dot(self._c_v_flat, v_flat) - 0.5 * (q * tril).sum() + self._const
        # gradient of ln π
        minus_g_l = torch.bmm((gamma.unsqueeze(2) * r).transpose(1, 2), y) + q  # −∂/∂L_k, but its diagonal term
        g_v = torch.addcmul(
            torch.outer(n_k, self._d_sel) + self._c_v,
            torch.mm(minus_g_l.reshape(k, d * d), self._gather),
            torch.where(self._is_diag, ev, 1.0),
            value=-1.0,
        )
        g_mu = torch.bmm(torch.sub(torch.bmm(gamma.unsqueeze(1), y), z, alpha=p.beta0), tril.transpose(1, 2))
        g_mu = g_mu.reshape(k, d)
        if self.ordered:
            log_pi = log_pi + w[1:, 0].sum()
            tail_mu = torch.flip(torch.cumsum(torch.flip(g_mu[:, 0], (0,)), 0), (0,))  # Σ_{k≥j} ∂/∂μ_{k,1}
            g_first = torch.cat([tail_mu[:1], tail_mu[1:] * gaps + 1])
            g_mu = torch.cat([g_first[:, None], g_mu[:, 1:]], 1)
        if k > 1:
            log_pi = log_pi + torch.dot(self._a, ell)
            g_u = torch.mv(self._e, torch.addmv(self._a, self._g_t, n_k) * -torch.expm1(ell))
            grad = torch.cat([g_u, g_mu.reshape(-1), g_v.reshape(-1)])
        else:
            grad = torch.cat([g_mu.reshape(-1), g_v.reshape(-1)])
        return -log_pi, -grad

    def compiled(self, jit: bool = True) -> ValueAndGrad:
        """:meth:`value_and_grad`, traced once with ``torch.jit.trace`` (``jit=False``: the method itself)."""
        if not jit:
            return self.value_and_grad
        if self._compiled is None:
            example = torch.zeros(self.size, dtype=self.x.dtype)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TorchScript's deprecation and tracer notices
                self._compiled = torch.jit.trace(self.value_and_grad, example, check_trace=False)
        return self._compiled

    def potential_fn(self, jit: bool = True) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
        """Pyro's ``potential_fn``: {``SITE``: θ} ↦ U(θ), differentiable, the gradient precomputed."""
        fn = self.compiled(jit)
        return lambda params: _WithGradient.apply(params[SITE], fn)
