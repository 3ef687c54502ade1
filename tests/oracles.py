"""Test oracles: independent implementations and reference tools that the tests (and benchmarks)
hold the library against. Nothing here is imported by the package.

- :func:`random_params`, :func:`random_gamma` — random (not optimal) Θ and γ for identity tests;
- :func:`scipy_log_weights`, :func:`scipy_objectives` — eq. 15's bracket, eq. 20, eq. 26 and eq. 18
  from ``scipy.stats`` / ``scipy.special``, independently of ppl_gmm;
- :func:`reference_fit` — the plain CAVI/EM loop over the public closed-form functions;
- :func:`map_estimate` — L-BFGS on Pyro's log joint, the independent check of ``fit_map``;
- :func:`map_m_step` — the MAP M-step written out from the conjugate update;
- :func:`sklearn_bgm` — scikit-learn's ``BayesianGaussianMixture`` set up as ``fit_vb``'s oracle.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import logsumexp, xlogy
from scipy.stats import multivariate_normal

import ppl_gmm as pg


def random_params(k, d, seed, dtype=torch.float64):
    """Random (not optimal) Θ for identity tests."""
    rng = np.random.default_rng(seed)
    alpha = rng.dirichlet(np.ones(k))
    mu = rng.normal(scale=3.0, size=(k, d))
    a = rng.normal(size=(k, d, d))
    cov = a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(d)
    return pg.GMMParams(torch.tensor(alpha, dtype=dtype), torch.tensor(mu, dtype=dtype), torch.tensor(cov, dtype=dtype))


def random_gamma(n, k, seed, dtype=torch.float64):
    """Random responsibilities (N, K), rows from a flat Dirichlet."""
    rng = np.random.default_rng(seed)
    return torch.tensor(rng.dirichlet(np.ones(k), size=n), dtype=dtype)


def scipy_log_weights(x, params):
    """ℓ_ik = log α_k + log N(x_i | μ_k, Σ_k) (N, K), numpy, from ``scipy.stats.multivariate_normal``."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    a, mu, cov = (t.double().numpy() for t in (params.alpha, params.mu, params.cov))
    with np.errstate(divide="ignore"):  # α_k = 0 gives ℓ_ik = −∞
        log_a = np.log(a)
    return np.stack([log_a[j] + multivariate_normal(mu[j], cov[j]).logpdf(x).reshape(-1) for j in range(len(a))], 1)


def scipy_objectives(x, params, gamma=None):
    """By scipy: ``gamma`` = eq. 20 (a float64 tensor (N, K)), ``log_likelihood`` = eq. 26, and with a
    given ``gamma`` also ``elbo`` = eq. 18 at (gamma, Θ) (0 · log 0 = 0)."""
    wlp = scipy_log_weights(x, params)
    lse = logsumexp(wlp, axis=1, keepdims=True)
    out = {"gamma": torch.from_numpy(np.exp(wlp - lse)), "log_likelihood": float(lse.sum())}
    if gamma is not None:
        g = np.asarray(gamma, dtype=np.float64)
        out["elbo"] = float(np.where(g > 0, g * wlp, 0.0).sum() - xlogy(g, g).sum())
    return out


def reference_fit(x, params, *, covariance_type="full", max_iter=100, tol=0.0, reg_covar=0.0):
    """The plain CAVI/EM loop over the public closed-form functions (slow; the executable definition
    ``fit_cavi`` is tested against). Same semantics as ``fit_cavi(init=params)``: per iteration an
    E-step (eq. 20) then an M-step (eq. 21/28); traced eq. 18 at (γ_{t−1}, Θ_t) and eq. 26 at Θ_t;
    a closing E-step; |ΔELBO| / N < tol to stop. Returns a dict with params, gamma, elbo,
    log_likelihood (lists of floats), n_iter and converged."""
    x = torch.as_tensor(np.asarray(x), dtype=params.dtype)
    if x.ndim == 1:
        x = x[:, None]
    n = x.shape[0]
    prev = float(pg.log_likelihood(x, params))  # eq. 26 at Θ₀ = eq. 18 right after the first E-step
    elbos, lls = [], []
    converged, n_iter = False, 0
    for it in range(1, max_iter + 1):
        gamma = pg.e_step(x, params)  # eq. 20
        params = pg.m_step(x, gamma, covariance_type, reg_covar)  # eq. 21 / 28
        value = float(pg.elbo(x, gamma, params))  # eq. 18 at (γ_{t−1}, Θ_t)
        elbos.append(value)
        lls.append(float(pg.log_likelihood(x, params)))  # eq. 26 at Θ_t
        n_iter = it
        converged = abs(value - prev) / n < tol
        prev = value
        if converged:
            break
    gamma = pg.e_step(x, params)  # closing E-step: KL gap 0
    elbos.append(float(pg.elbo(x, gamma, params)))
    lls.append(float(pg.log_likelihood(x, params)))
    return {
        "params": params,
        "gamma": gamma,
        "elbo": elbos,
        "log_likelihood": lls,
        "n_iter": n_iter,
        "converged": converged,
    }


def map_m_step(x, gamma, prior, reg_covar=0.0):
    """The MAP M-step written out: the conjugate update (PRML 10.51, 10.58–10.63, with the scatter
    about the data means x̄_k as PRML writes 10.62) and the joint mode in (α, μ, Λ):
    α_k ∝ max(N_k + alpha0 − 1, 0), μ_k = m_k, Σ_k = W_k⁻¹ / (nu_k − D)."""
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64).reshape(len(x), -1)
    gamma = torch.as_tensor(gamma, dtype=torch.float64)
    d = x.shape[1]
    m0, w0_inv = prior.m0.double(), prior.W0_inv.double()
    n_k = gamma.sum(0)
    xbar = (gamma.T @ x) / n_k[:, None]
    beta = prior.beta0 + n_k
    m = (prior.beta0 * m0 + n_k[:, None] * xbar) / beta[:, None]
    nu = prior.nu0 + n_k
    cov = []
    for j in range(gamma.shape[1]):
        diff = x - xbar[j]
        s_j = (gamma[:, j : j + 1] * diff).T @ diff  # N_k S_k
        dx = (xbar[j] - m0)[:, None]
        w_inv = w0_inv + s_j + prior.beta0 * n_k[j] / (prior.beta0 + n_k[j]) * (dx @ dx.T)  # PRML 10.62
        cov.append(w_inv / (nu[j] - d) + reg_covar * torch.eye(d, dtype=torch.float64))
    weight = torch.clamp(n_k + prior.alpha0 - 1, min=0.0)
    cov = torch.stack(cov)
    return pg.GMMParams(weight / weight.sum(), m, 0.5 * (cov + cov.transpose(-1, -2)))


def map_estimate(x, k, prior, init, *, max_iter=500, tol=1e-12):
    """Maximise the Pyro log joint over (α, μ, Λ) with L-BFGS from ``init`` (a GMMParams).

    The optimum is the posterior mode in the (α, μ, Λ) parameterisation (densities on the simplex
    coordinates and on Λ's distinct entries, no Jacobian), the quantity ``fit_map`` computes by
    MAP-EM. Returns ``(GMMParams, log_joint)``: an independent check of ``fit_map``."""
    from pyro.distributions import constraints
    from torch.distributions import biject_to

    from ppl_gmm.ppl.bayes import log_joint
    from ppl_gmm.ppl.transforms import TrilVecToPD

    x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    if x.ndim == 1:
        x = x[:, None]
    stick = biject_to(constraints.simplex)
    pd = TrilVecToPD()
    u_alpha = stick.inv(init.alpha.to(x.dtype)).detach().requires_grad_(True)
    u_mu = init.mu.to(x.dtype).clone().requires_grad_(True)
    u_lam = pd.inv(torch.linalg.inv(init.cov.to(x.dtype))).detach().requires_grad_(True)
    params = [u_mu, u_lam] + ([u_alpha] if k > 1 else [])
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=tol,
        tolerance_change=tol,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = -log_joint(x, k, prior, stick(u_alpha), u_mu, pd(u_lam))
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        alpha = stick(u_alpha) if k > 1 else torch.ones(1, dtype=x.dtype)
        lam = pd(u_lam)
        value = log_joint(x, k, prior, alpha, u_mu, lam)
        cov = torch.linalg.inv(lam)
    return pg.GMMParams(alpha, u_mu.detach().clone(), 0.5 * (cov + cov.transpose(-1, -2))), value


def sklearn_bgm(x, k, prior, resp0):
    """scikit-learn's BayesianGaussianMixture with the same prior (full covariance, reg_covar = 0),
    initialised from the responsibilities r₀ (its ``_initialize`` is the VB M-step from r₀;
    scikit-learn has no responsibility init): the oracle of ``fit_vb``, iteration for iteration."""
    from sklearn.mixture import BayesianGaussianMixture

    bgm = BayesianGaussianMixture(
        n_components=k,
        covariance_type="full",
        weight_concentration_prior_type="dirichlet_distribution",
        weight_concentration_prior=prior.alpha0,
        mean_precision_prior=prior.beta0,
        mean_prior=prior.m0.numpy(),
        degrees_of_freedom_prior=prior.nu0,
        covariance_prior=prior.W0_inv.numpy(),
        reg_covar=0.0,
    )
    bgm._check_parameters(x)
    bgm._initialize(x, resp0)
    return bgm
