"""Test oracles: independent implementations and reference tools that the tests (and benchmarks)
hold the library against. Nothing here is imported by the package.

- :func:`random_params`, :func:`random_gamma` — random (not optimal) Θ and γ for identity tests;
- :func:`scipy_log_weights`, :func:`scipy_objectives` — eq. 15's bracket, eq. 20, eq. 26 and eq. 18
  from ``scipy.stats`` / ``scipy.special``, independently of ppl_gmm;
- :func:`reference_fit` — the plain CAVI/EM loop over the public closed-form functions;
- :func:`map_estimate` — L-BFGS on Pyro's log joint, the independent check of ``fit_map``;
- :func:`map_m_step` — the MAP M-step written out from the conjugate update;
- :func:`sklearn_bgm` — scikit-learn's ``BayesianGaussianMixture`` set up as ``fit_vb``'s oracle.
- :class:`Rows` — a minimal h5py/zarr-like dataset (shape, dtype, row slicing) for the sliced sources.
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


def map_m_step(x, gamma, prior, reg_covar=0.0, covariance_type="full", sample_weight=None):
    """The MAP M-step written out: the conjugate update (PRML 10.51, 10.58–10.63, with the scatter
    about the data means x̄_k as PRML writes 10.62) and the joint mode in (α, μ, precision):
    α_k ∝ max(N_k + alpha0 − 1, 0), μ_k = m_k, and full Σ_k = W_k⁻¹ / (nu_k − D); diag
    σ²_kd = (W_k⁻¹)_dd / (nu_k − 1); spherical σ²_k = tr(W_k⁻¹) / (D (nu_k + 1) − 2); tied
    Σ = (W0⁻¹ + Σ_k (W_k⁻¹ − W0⁻¹)) / (nu0 + N + K − D − 1). ``sample_weight``: γ_ik → w_i γ_ik."""
    x = torch.as_tensor(np.asarray(x), dtype=torch.float64).reshape(len(x), -1)
    gamma = torch.as_tensor(gamma, dtype=torch.float64)
    if sample_weight is not None:
        gamma = gamma * torch.as_tensor(np.asarray(sample_weight), dtype=torch.float64)[:, None]
    k, d = gamma.shape[1], x.shape[1]
    m0, w0_inv = prior.m0.double(), prior.W0_inv.double()
    n_k = gamma.sum(0)
    xbar = torch.where(n_k[:, None] > 0, (gamma.T @ x) / n_k[:, None], m0)  # an empty component: any x̄_k
    beta = prior.beta0 + n_k
    m = (prior.beta0 * m0 + n_k[:, None] * xbar) / beta[:, None]
    nu = prior.nu0 + n_k
    eye = torch.eye(d, dtype=torch.float64)
    r = []  # W_k⁻¹ − W0⁻¹ = N_k S_k + beta0 N_k / (beta0 + N_k) (x̄_k − m0)(x̄_k − m0)ᵀ
    for j in range(k):
        diff = x - xbar[j]
        s_j = (gamma[:, j : j + 1] * diff).T @ diff  # N_k S_k
        dx = (xbar[j] - m0)[:, None]
        r.append(s_j + prior.beta0 * n_k[j] / (prior.beta0 + n_k[j]) * (dx @ dx.T))  # PRML 10.62
    cov = []
    for j in range(k):
        w_inv = w0_inv + r[j]
        if covariance_type == "full":
            c = w_inv / (nu[j] - d)
        elif covariance_type == "diag":
            c = torch.diag(torch.diagonal(w_inv) / (nu[j] - 1))
        elif covariance_type == "spherical":
            c = eye * torch.trace(w_inv) / (d * (nu[j] + 1) - 2)
        else:
            c = (w0_inv + sum(r)) / (prior.nu0 + n_k.sum() + k - d - 1)
        cov.append(c + reg_covar * eye)
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


# --- MAP in every covariance type: an independent log posterior (torch.distributions) -------------
def map_log_prior_td(alpha, mu, prec, prior, covariance_type):
    """ln p(Θ) from torch.distributions, densities in (α, μ, precision): Dirichlet(alpha0) ×
    full: Π_k N(μ_k | m0, (beta0 Λ_k)⁻¹) Wishart(Λ_k | W0, nu0), ``prec`` (K, D, D);
    diag: Π_kd N(μ_kd | m0_d, (beta0 λ_kd)⁻¹) Gamma(λ_kd | nu0/2, rate (W0⁻¹)_dd/2), ``prec`` (K, D);
    spherical: Π_k N(μ_k | m0, (beta0 λ_k)⁻¹ I) Gamma(λ_k | D nu0/2, rate tr(W0⁻¹)/2), ``prec`` (K,);
    tied: Π_k N(μ_k | m0, (beta0 Λ)⁻¹) · Wishart(Λ | W0, nu0), ``prec`` (D, D)."""
    import torch.distributions as td

    k, d = mu.shape
    dt = mu.dtype
    m0, w0, w0_inv = prior.m0.to(dt), prior.W0.to(dt), prior.W0_inv.to(dt)
    lp = td.Dirichlet(torch.full((k,), prior.alpha0, dtype=dt)).log_prob(alpha) if k > 1 else torch.zeros((), dtype=dt)
    nu0 = torch.tensor(prior.nu0, dtype=dt)
    if covariance_type in ("full", "tied"):
        lam = prec if covariance_type == "full" else prec.expand(k, d, d)
        lp = lp + td.MultivariateNormal(m0.expand(k, d), precision_matrix=prior.beta0 * lam).log_prob(mu).sum()
        wishart = td.Wishart(df=nu0, covariance_matrix=w0)
        return lp + (wishart.log_prob(prec).sum() if covariance_type == "full" else wishart.log_prob(prec))
    lam = prec if covariance_type == "diag" else prec[:, None].expand(k, d)
    lp = lp + td.Normal(m0.expand(k, d), 1.0 / torch.sqrt(prior.beta0 * lam)).log_prob(mu).sum()
    if covariance_type == "diag":
        gamma_prior = td.Gamma(nu0 / 2, torch.diagonal(w0_inv) / 2)
    else:
        gamma_prior = td.Gamma(d * nu0 / 2, torch.trace(w0_inv) / 2)
    return lp + gamma_prior.log_prob(prec).sum()


def map_unpack(u, k, d, covariance_type):
    """Unconstrained u -> (α, μ, precision, Λ (K, D, D)): softmax logits (K − 1), free means, and a
    log-diagonal Cholesky factor (full: K, tied: 1) or log precisions (diag: K·D, spherical: K)."""
    logits = torch.cat([u[: k - 1], torch.zeros(1, dtype=u.dtype)])
    mu = u[k - 1 : k - 1 + k * d].reshape(k, d)
    rest = u[k - 1 + k * d :]
    if covariance_type in ("full", "tied"):
        raw = rest.reshape(-1, d, d)
        chol = torch.tril(raw, -1) + torch.diag_embed(torch.exp(torch.diagonal(raw, dim1=-2, dim2=-1)))
        lam = chol @ chol.transpose(-1, -2)
        prec = lam if covariance_type == "full" else lam[0]
        lam = lam.expand(k, d, d)
    else:
        prec = torch.exp(rest.reshape(k, d) if covariance_type == "diag" else rest)
        lam = torch.diag_embed(prec if covariance_type == "diag" else prec[:, None].expand(k, d))
    return torch.softmax(logits, 0), mu, prec, lam


def map_pack(params, covariance_type):
    """GMMParams -> the u of :func:`map_unpack`."""
    k = params.k
    logits = torch.log(params.alpha) - torch.log(params.alpha[-1])
    if covariance_type in ("full", "tied"):
        lam = torch.linalg.inv(params.cov if covariance_type == "full" else params.cov[:1])
        chol = torch.linalg.cholesky(0.5 * (lam + lam.transpose(-1, -2)))
        rest = torch.tril(chol, -1) + torch.diag_embed(torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)))
    else:
        var = torch.diagonal(params.cov, dim1=-2, dim2=-1)
        rest = -torch.log(var if covariance_type == "diag" else var[:, 0])
    return torch.cat([logits[: k - 1], params.mu.reshape(-1), rest.reshape(-1)]).clone()


def map_objective_td(u, x, prior, k, covariance_type, gamma=None, sample_weight=None):
    """With ``gamma``: the MAP M-step objective Σ_ik w_i γ_ik [ln α_k + ln N(x_i | μ_k, Σ_k)] + ln p(Θ);
    without: the log posterior Σ_i w_i ln Σ_k α_k N(x_i | μ_k, Σ_k) + ln p(Θ) (eq. 26 + ln p(Θ)).
    Component densities from torch.distributions.MultivariateNormal; differentiable in ``u``."""
    import torch.distributions as td

    d = x.shape[1]
    alpha, mu, prec, lam = map_unpack(u, k, d, covariance_type)
    comp = torch.log(alpha) + td.MultivariateNormal(mu, precision_matrix=lam).log_prob(x[:, None, :])
    w = torch.ones(len(x), dtype=x.dtype) if sample_weight is None else torch.as_tensor(sample_weight, dtype=x.dtype)
    data = (w[:, None] * gamma * comp).sum() if gamma is not None else (w * torch.logsumexp(comp, 1)).sum()
    return data + map_log_prior_td(alpha, mu, prec, prior, covariance_type)


def lbfgs_max(f, u0, rounds=2):
    """argmax_u f(u) by torch's L-BFGS (strong Wolfe) from ``u0``."""
    u = u0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [u], max_iter=500, tolerance_grad=1e-11, tolerance_change=1e-14, history_size=50, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = -f(u)
        loss.backward()
        return loss

    for _ in range(rounds):
        opt.step(closure)
    return u.detach()


def sklearn_bgm_typed(x, k, prior, resp0, covariance_type="full", weight_prior="dirichlet"):
    """:func:`sklearn_bgm` for any covariance type and weight prior: ``covariance_prior`` is the type's
    view of W0⁻¹ (full/tied: W0⁻¹, diag: its diagonal, spherical: the mean of its diagonal), computed
    here with numpy; weight_prior "dirichlet_process" is scikit-learn's stick-breaking prior."""
    from sklearn.mixture import BayesianGaussianMixture

    w0_inv = np.linalg.inv(prior.W0.numpy())
    cov_prior = {
        "full": w0_inv,
        "tied": w0_inv,
        "diag": np.diag(w0_inv).copy(),
        "spherical": float(np.diag(w0_inv).mean()),
    }[covariance_type]
    bgm = BayesianGaussianMixture(
        n_components=k,
        covariance_type=covariance_type,
        weight_concentration_prior_type={"dirichlet": "dirichlet_distribution"}.get(weight_prior, weight_prior),
        weight_concentration_prior=prior.alpha0,
        mean_precision_prior=prior.beta0,
        mean_prior=prior.m0.numpy(),
        degrees_of_freedom_prior=prior.nu0,
        covariance_prior=cov_prior,
        reg_covar=0.0,
    )
    bgm._check_parameters(x)
    bgm._initialize(x, resp0)
    view = {"diag": np.diag(np.diag(w0_inv)), "spherical": cov_prior * np.eye(x.shape[1])}.get(covariance_type, w0_inv)
    return bgm, view  # view: W0⁻¹ of the type as a (D, D) matrix


def scipy_objectives_weighted(x, params, sample_weight, gamma=None):
    """:func:`scipy_objectives` with frequency weights w_i (numpy/scipy only): eq. 26 as
    Σ_i w_i lse_i and, with ``gamma``, eq. 18 as Σ_i w_i (Σ_k γ_ik ℓ_ik − Σ_k γ_ik log γ_ik)."""
    w = np.asarray(sample_weight, dtype=np.float64)
    wlp = scipy_log_weights(x, params)
    lse = logsumexp(wlp, axis=1)
    out = {"log_likelihood": float(w @ lse)}
    if gamma is not None:
        g = np.asarray(gamma, dtype=np.float64)
        per_row = np.where(g > 0, g * wlp, 0.0).sum(1) - xlogy(g, g).sum(1)
        out["elbo"] = float(w @ per_row)
    return out


def numpy_weighted_m_step(x, gamma, sample_weight, covariance_type="full", reg_covar=0.0):
    """eq. 21 / 28 with γ_ik replaced by w_i γ_ik, by numpy (``np.cov`` with ``aweights``, bias=True):
    returns (alpha, mu, cov) as float64 arrays."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    g = np.asarray(gamma, dtype=np.float64) * np.asarray(sample_weight, dtype=np.float64)[:, None]
    n_k = g.sum(0)
    k, d = g.shape[1], x.shape[1]
    mu = np.stack([np.average(x, axis=0, weights=g[:, j]) for j in range(k)])
    covs = np.stack([np.cov(x.T, aweights=g[:, j], bias=True).reshape(d, d) for j in range(k)])
    if covariance_type == "tied":
        covs = np.broadcast_to((covs * n_k[:, None, None]).sum(0) / n_k.sum(), (k, d, d))
    elif covariance_type == "diag":
        covs = np.stack([np.diag(np.diag(c)) for c in covs])
    elif covariance_type == "spherical":
        covs = np.stack([np.eye(d) * np.diag(c).mean() for c in covs])
    return n_k / n_k.sum(), mu, covs + reg_covar * np.eye(d)


def normal_wishart_evidence(x, m0, beta0, nu0, s0):
    """(S_N = W_N⁻¹, ln p(X)) of one Normal-Wishart Gaussian with W0⁻¹ = s0 (Murphy 2007, eq. 266)."""
    from scipy.special import multigammaln

    n, d = x.shape
    xbar = x.mean(0)
    beta_n, nu_n = beta0 + n, nu0 + n
    s_n = s0 + (x - xbar).T @ (x - xbar) + beta0 * n / beta_n * np.outer(xbar - m0, xbar - m0)
    log_ev = (
        -0.5 * n * d * np.log(np.pi)
        + multigammaln(0.5 * nu_n, d)
        - multigammaln(0.5 * nu0, d)
        + 0.5 * nu0 * np.linalg.slogdet(s0)[1]
        - 0.5 * nu_n * np.linalg.slogdet(s_n)[1]
        + 0.5 * d * np.log(beta0 / beta_n)
    )
    return s_n, log_ev


def assert_rel_close(a, b, rtol=1e-10):
    """max |a − b| <= rtol · max |b| (float64; scale-aware for μ far from 0 and γ in [0, 1])."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    err = float((a - b).abs().max())
    assert err <= rtol * float(b.abs().max()), f"max |Δ| = {err:.3g} vs max |ref| = {float(b.abs().max()):.3g}"


def assert_same_fit(fit, ref, rtol=1e-10):
    """Two GMMFits agree: Θ, both traces (``assert_rel_close``) and the iteration count."""
    for name in ("alpha", "mu", "cov"):
        assert_rel_close(getattr(fit.params, name), getattr(ref.params, name), rtol)
    assert_rel_close(fit.elbo, ref.elbo, rtol)
    assert_rel_close(fit.log_likelihood, ref.log_likelihood, rtol)
    assert fit.n_iter == ref.n_iter


class Rows:
    """A minimal h5py/zarr-like dataset: ``shape``, ``dtype`` and row slicing (``reads`` counts them)."""

    def __init__(self, a):
        self.a, self.shape, self.dtype, self.reads = a, a.shape, a.dtype, 0

    def __getitem__(self, idx):
        self.reads += 1
        return self.a[idx]
