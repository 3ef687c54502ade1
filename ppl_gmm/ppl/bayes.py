"""The Bayesian GMM in Pyro: the Dirichlet × Normal-Wishart prior as sample sites.

The model is the generative process of ``docs/maths.md`` (α → Z → X, eq. 15) with the
conjugate prior of Bishop, PRML eq. 10.39–10.40 (``core.priors.NormalWishartPrior``)::

    α            ~ Dir(alpha0 · 1_K)                       site "alpha"   (10.39)
    Λ_k          ~ Wishart(W0, nu0),        k = 1..K        site "Lambda"  (10.40)
    μ_k | Λ_k    ~ N(m0, (beta0 Λ_k)⁻¹)                     site "mu"      (10.40)
    z_i | α      ~ Categorical(α),          i = 1..N        site "z" (enumerated)
    x_i | z_i    ~ N(μ_{z_i}, Λ_{z_i}⁻¹)                    site "x" (observed, eq. 15)

``Σ_k = Λ_k⁻¹`` is recorded as the deterministic site ``"cov"``.  The density the
model implements is exactly

    log p(X, α, μ, Λ) = log Dir(α | alpha0) + Σ_k [log W(Λ_k | W0, nu0)
                        + log N(μ_k | m0, (beta0 Λ_k)⁻¹)] + Σ_i log Σ_k α_k N(x_i | μ_k, Λ_k⁻¹)

(Z summed out, eq. 26), with the Dirichlet density on the first K − 1
coordinates of the simplex and the Wishart density on the D(D + 1)/2 distinct
entries of Λ_k — the same densities as ``scipy.stats.dirichlet`` / ``wishart``
(the tests check this).  With K = 1, α ≡ 1 is a constant and there is no
``"alpha"`` site.

Λ_k is sampled from ``ppl.transforms.Wishart``, whose support maps to an unconstrained vector
(``ppl.transforms.TrilVecToPD``), so NUTS, ``init_to_uniform`` and ``AutoDelta`` work on it.

The mean-field guide (PRML §10.2, the family of ``fit_vb``)::

    q(α) = Dir(α | alpha_k)      q(Λ_k) = W(Λ_k | W_k, nu_k)     q(μ_k | Λ_k) = N(m_k, (beta_k Λ_k)⁻¹)
    q(z_i) = Categorical(γ_i), enumerated in parallel (``TraceEnum_ELBO`` sums it exactly)

so ``fit_svi_bayes`` optimises the same ELBO over the same family as ``fit_vb``.  Its parameters
live in (mean, spread) coordinates: E_q[α] and Σ alpha_k, E_q[Λ_k] = nu_k W_k and nu_k (see
:func:`bayes_meanfield_guide`).  ``stl=True`` scores the global draws with detached parameters
("sticking the landing"; see :func:`_site`).

Minibatches: ``subsample_size`` (model and guide) runs the "data" plate on a random subset B of
|B| rows (``pyro.plate(..., subsample_size=)``; the model replays the guide's indices), whose terms
Pyro scales by N / |B|, and the guide evaluates q(z_i) for i in B only: the ELBO estimate is then
unbiased for the full-data bound (tests/ppl/test_bayes.py checks it).

Also here: :func:`log_joint`, the log density above evaluated by Pyro.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints

from ..core.init import initial_responsibilities
from ..core.linalg import inverse_from_cholesky
from ..core.priors import NormalWishartPrior, conjugate_update_from_data, resolve_prior
from ..core.validation import ArrayLike, as_data, check_int, check_k
from .transforms import Wishart

__all__ = [
    "bayes_gmm_model",
    "bayes_meanfield_guide",
    "guide_init",
    "log_joint",
    "GUIDE_PARAMS",
    "guide_constraints",
    "guide_values",
    "guide_factors",
    "check_subsample_size",
]

GUIDE_PARAMS = ("q_pi", "q_alpha_sum", "q_m", "q_beta", "q_nu", "q_Lambda_tril", "gamma")


# --- the prior as tensors ---------------------------------------------------------------------
def _setup(x, k, prior):
    x = as_data(x)
    k = check_k(k, x.shape[0])
    prior = resolve_prior(x, k, prior)
    dt = x.dtype
    w0 = prior.W0.to(dt)
    return (
        x,
        k,
        {
            "alpha0": torch.full((k,), prior.alpha0, dtype=dt),
            "m0": prior.m0.to(dt),
            "beta0": torch.tensor(prior.beta0, dtype=dt),
            "nu0": torch.tensor(prior.nu0, dtype=dt),
            "W0_tril": torch.linalg.cholesky(w0),
        },
        prior,
    )


def check_subsample_size(subsample_size: int | None, n: int) -> int | None:
    """None (every row), or the minibatch size 1 ≤ |B| ≤ N of the "data" plate."""
    if subsample_size is None:
        return None
    subsample_size = check_int(subsample_size, "subsample_size", 1)
    if subsample_size > n:
        raise ValueError(f"subsample_size must be <= N = {n} (the number of rows), got {subsample_size}")
    return subsample_size


def _cov_from_precision(lam):
    return inverse_from_cholesky(torch.linalg.cholesky(lam))


# --- model and guide --------------------------------------------------------------------------
def bayes_gmm_model(x: ArrayLike, k: int, prior: NormalWishartPrior | None, subsample_size: int | None = None) -> None:
    """The Bayesian GMM (module docstring): sites "alpha", "Lambda", "mu", "cov" (deterministic),
    "z" (enumerated in parallel) and observed "x"; plates "components" (K) and "data" (N).

    ``subsample_size``: the "data" plate draws that many rows (``pyro.plate(..., subsample_size=)``,
    indices from torch's global generator, or replayed from the guide's plate) and scales their
    log densities by N / |B|, so the ELBO estimate is unbiased for the full-data one."""
    x, k, c, _ = _setup(x, k, prior)
    n = x.shape[0]
    subsample_size = check_subsample_size(subsample_size, n)
    if k > 1:
        alpha = pyro.sample("alpha", dist.Dirichlet(c["alpha0"]))  # PRML 10.39
    else:
        alpha = torch.ones(1, dtype=x.dtype)
    with pyro.plate("components", k):
        lam = pyro.sample("Lambda", Wishart(df=c["nu0"], scale_tril=c["W0_tril"]))  # PRML 10.40
        prec = c["beta0"] * lam
        mu = pyro.sample("mu", dist.MultivariateNormal(c["m0"], precision_matrix=prec))  # PRML 10.40
    pyro.deterministic("cov", _cov_from_precision(lam), event_dim=3)
    with pyro.plate("data", n, subsample_size=subsample_size) as idx:
        xb = x if subsample_size is None else x[idx]  # the minibatch B (its terms scaled by N / |B|)
        z = pyro.sample("z", dist.Categorical(alpha), infer={"enumerate": "parallel"})
        pyro.sample("x", dist.MultivariateNormal(mu[z], precision_matrix=lam[z]), obs=xb)  # eq. 15


def guide_constraints(d: int) -> dict[str, constraints.Constraint]:
    """The constraint of each guide parameter (see :func:`bayes_meanfield_guide`)."""
    return {
        "q_pi": constraints.simplex,
        "q_alpha_sum": constraints.positive,
        "q_m": constraints.real,
        "q_beta": constraints.positive,
        "q_nu": constraints.greater_than(d - 1.0),
        "q_Lambda_tril": constraints.lower_cholesky,
        "gamma": constraints.simplex,
    }


def guide_values(
    alpha: torch.Tensor, m: torch.Tensor, beta: torch.Tensor, nu: torch.Tensor, W: torch.Tensor, gamma: ArrayLike
) -> dict[str, torch.Tensor]:
    """Guide parameters for the factors Dir(alpha), N(m, (beta Λ)⁻¹) W(W, nu) and Cat(γ):
    q_pi = alpha / Σ alpha, q_alpha_sum = Σ alpha, q_Lambda_tril = chol(nu_k W_k) = chol(E[Λ_k])."""
    floor = torch.as_tensor(gamma).clamp_min(1e-12)  # the simplex transform needs every γ_ik > 0
    lam_mean = nu[:, None, None] * W
    return {
        "q_pi": alpha / alpha.sum(),
        "q_alpha_sum": alpha.sum(),
        "q_m": m,
        "q_beta": beta,
        "q_nu": nu,
        "q_Lambda_tril": torch.linalg.cholesky(0.5 * (lam_mean + lam_mean.transpose(-1, -2))),
        "gamma": floor / floor.sum(1, keepdim=True),
    }


def guide_factors(values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`guide_values`: alpha, m, beta, nu, W (and gamma) of the factors."""
    tril = values["q_Lambda_tril"]
    nu = values["q_nu"]
    return {
        "alpha": values["q_alpha_sum"] * values["q_pi"],
        "m": values["q_m"],
        "beta": values["q_beta"],
        "nu": nu,
        "W": tril @ tril.transpose(-1, -2) / nu[:, None, None],
        "gamma": values["gamma"],
    }


def guide_init(x: ArrayLike, gamma: ArrayLike, prior: NormalWishartPrior) -> dict[str, torch.Tensor]:
    """The guide's parameters after one closed-form VB M-step from responsibilities γ (N, K)
    (``core.priors.conjugate_update``, PRML 10.58, 10.60–10.63), with ``gamma`` itself for q(Z)."""
    x = as_data(x)
    gamma = torch.as_tensor(gamma, dtype=x.dtype)
    st = conjugate_update_from_data(x, gamma, prior)  # PRML 10.58, 10.60-10.63
    w = inverse_from_cholesky(torch.linalg.cholesky(st.w_inv))
    return guide_values(st.alpha, st.m, st.beta, st.nu, w, gamma)


def _default_guide_init(x, k, prior):
    return guide_init(x, initial_responsibilities(x, k, "kmeans++", 0), prior)


def _site(name, fn, stl: bool, detached=None):
    """``pyro.sample(name, fn)``, or with ``stl`` its reparameterised draw scored by ``detached`` (the
    same density with its parameters detached): the "sticking the landing" gradient (Roeder et al.
    2017) drops the score term ∂/∂φ ln q_φ(θ), whose expectation is zero.  Same ELBO value, same
    expected gradient; at VB's optimum ln p − ln q is constant in θ, so that gradient is exactly 0."""
    if not stl:
        return pyro.sample(name, fn)
    value = fn.rsample()
    return pyro.sample(name, dist.Delta(value, log_density=detached(value), event_dim=fn.event_dim))


def bayes_meanfield_guide(
    x: ArrayLike, k: int, prior: NormalWishartPrior | None, stl: bool = False, subsample_size: int | None = None
) -> None:
    """Mean-field guide q(α) Π_k q(μ_k, Λ_k) Π_i q(z_i) in the family of ``fit_vb`` (module docstring).

    Parameters (``pyro.param``): ``q_pi`` (K,) = E_q[α] on the simplex and ``q_alpha_sum`` > 0
    (alpha_k = q_alpha_sum · q_pi_k), ``q_m`` (K, D), ``q_beta`` (K,) > 0, ``q_nu`` (K,) > D − 1,
    ``q_Lambda_tril`` (K, D, D) the Cholesky factor of E_q[Λ_k] = nu_k W_k, ``gamma`` (N, K) on the
    simplex.  The (mean, spread) coordinates decouple the nearly flat ridges of the ELBO along
    (nu_k, W_k) with nu_k W_k fixed and along Σ alpha_k with alpha / Σ alpha fixed, on which Adam
    crawls in the (alpha, W) coordinates.  Unset parameters start from one VB M-step after
    k-means++ (seed 0); ``fit_svi_bayes`` sets them from its own seed first.  ``stl=True`` scores
    the global draws with detached parameters (see ``_site``); the sites are then Delta sites
    carrying ln q as their density.  ``subsample_size``: the "data" plate draws a minibatch B (the
    model replays it) and q(z_i) is evaluated for i in B only (``gamma[B]``).
    """
    x, k, _, prior = _setup(x, k, prior)  # None resolves to default_prior(x, k), as in the model
    n, d = x.shape
    subsample_size = check_subsample_size(subsample_size, n)
    cache: dict[str, torch.Tensor] = {}

    def init(name: str) -> Callable[[], torch.Tensor]:
        def value() -> torch.Tensor:
            if not cache:
                cache.update(_default_guide_init(x, k, prior))
            return cache[name]

        return value

    cons = guide_constraints(d)
    q = {name: pyro.param(name, init(name), constraint=cons[name]) for name in GUIDE_PARAMS}
    q_alpha = q["q_alpha_sum"] * q["q_pi"]  # Dirichlet concentrations alpha_k
    q_m, q_beta, q_nu = q["q_m"], q["q_beta"], q["q_nu"]
    q_w_tril = q["q_Lambda_tril"] / torch.sqrt(q_nu)[:, None, None]  # chol(W_k), W_k = E[Λ_k] / nu_k
    gamma = q["gamma"]
    if k > 1:
        _site(
            "alpha",
            dist.Dirichlet(q_alpha),
            stl,  # q(α), PRML 10.57
            lambda v: dist.Dirichlet(q_alpha.detach()).log_prob(v),
        )
    with pyro.plate("components", k):
        lam = _site(
            "Lambda",
            Wishart(df=q_nu, scale_tril=q_w_tril),
            stl,  # q(Λ_k), PRML 10.59
            lambda v: Wishart(df=q_nu.detach(), scale_tril=q_w_tril.detach()).log_prob(v),
        )
        _site(
            "mu",
            dist.MultivariateNormal(q_m, precision_matrix=q_beta[:, None, None] * lam),
            stl,  # q(μ_k|Λ_k)
            lambda v: dist.MultivariateNormal(
                q_m.detach(), precision_matrix=q_beta.detach()[:, None, None] * lam
            ).log_prob(v),
        )
    with pyro.plate("data", n, subsample_size=subsample_size) as idx:
        gamma_b = gamma if subsample_size is None else gamma[idx]  # the local factors of the minibatch
        pyro.sample("z", dist.Categorical(gamma_b), infer={"enumerate": "parallel"})  # q(z_i), eq. 17


# --- the log joint and its maximum --------------------------------------------------------------
def _empty_guide(*args, **kwargs):
    pass


def log_joint(
    x: ArrayLike,
    k: int,
    prior: NormalWishartPrior | None,
    alpha: torch.Tensor,
    mu: torch.Tensor,
    Lambda: torch.Tensor,
) -> torch.Tensor:
    """log p(X, α, μ, Λ) with Z summed out, evaluated by Pyro (``TraceEnum_ELBO`` on the model
    conditioned on the globals: an exact einsum over the enumerated z).  Differentiable."""
    detach = not any(isinstance(t, torch.Tensor) and t.requires_grad for t in (alpha, mu, Lambda))
    if detach:  # TraceEnum_ELBO refuses a loss that nothing can be differentiated against
        mu = torch.as_tensor(mu).detach().clone().requires_grad_(True)
    data = {"mu": mu, "Lambda": Lambda}
    if int(k) > 1:
        data["alpha"] = alpha
    cond = poutine.condition(bayes_gmm_model, data=data)
    with torch.enable_grad():
        value = -pyro.infer.TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(cond, _empty_guide, x, k, prior)
    return value.detach() if detach else value
