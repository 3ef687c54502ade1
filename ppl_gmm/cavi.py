"""Closed-form CAVI = EM for the GMM (eq. 16–21, 28), hand-coded.

One iteration is the E-step (eq. 20: γ = the CAVI optimum eq. 17, which is the
posterior eq. 27) followed by the M-step (eq. 21 / 28: Θ maximising eq. 18 for
fixed γ), exactly as scikit-learn's ``GaussianMixture`` iterates.  Each
iteration can only raise eq. 18 (coordinate ascent), and because the E-step
closes the KL gap, it can only raise eq. 26 too (eq. 22–25).

The fit ends with a final E-step, so ``fit.gamma == e_step(x, fit.params)`` and
``fit.elbo[-1] == log_likelihood(x, fit.params)``.
"""
from __future__ import annotations

import time

import torch

from ._validation import as_data, check_covariance_type, check_int, check_k, check_positive
from .closed_form import e_step, elbo, m_step, weighted_log_prob
from .errors import DivergenceError
from .init import INITS, initial_params, resolve_seed, spawn_seeds
from .params import GMMParams
from .result import GMMFit

__all__ = ["fit_cavi", "check_fit_args"]


def check_fit_args(x, k, init, dtype=None):
    """Validate data, k and init before any work; returns (x, k)."""
    x = as_data(x, dtype=dtype)
    k = check_k(k, x.shape[0])
    if not isinstance(init, GMMParams) and init not in INITS:
        raise ValueError(f"unknown init {init!r}; use 'kmeans++', 'random' or a GMMParams")
    if isinstance(init, GMMParams) and (init.k != k or init.d != x.shape[1]):
        raise ValueError(
            f"init parameters have K = {init.k}, D = {init.d} but the fit asks for K = {k} on D = {x.shape[1]} data"
        )
    return x, k


def _progress(progress: bool, total: int, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


def _run(x, k, init, seed, covariance_type, max_iter, tol, reg_covar, progress) -> GMMFit:
    n = x.shape[0]
    start = time.perf_counter()
    params = initial_params(x, k, init, seed, covariance_type, reg_covar)
    elbos, lls, times = [], [], []
    bar = _progress(progress, max_iter, "CAVI")
    converged = False
    prev = None
    n_iter = 0
    for it in range(max_iter):
        wlp = weighted_log_prob(x, params)
        log_norm = torch.logsumexp(wlp, 1, keepdim=True)
        if prev is None:
            prev = float(log_norm.sum())  # eq. 26 at Θ₀ = eq. 18 right after the first E-step
        gamma = torch.exp(wlp - log_norm)  # eq. 20
        params = m_step(x, gamma, covariance_type, reg_covar)  # eq. 21 / 28
        value = elbo(x, gamma, params)  # eq. 18 at (γ_{t-1}, Θ_t)
        ll = torch.logsumexp(weighted_log_prob(x, params), 1).sum()  # eq. 26 at Θ_t
        n_iter = it + 1
        if not (torch.isfinite(value) and torch.isfinite(ll)):
            raise DivergenceError(n_iter, params)
        elbos.append(value)
        lls.append(ll)
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
    gamma = e_step(x, params)  # closing E-step: KL gap = 0
    final = elbo(x, gamma, params)
    elbos.append(final)
    lls.append(torch.logsumexp(weighted_log_prob(x, params), 1).sum())  # eq. 26
    times.append(time.perf_counter() - start)
    return GMMFit(
        params=params,
        gamma=gamma,
        elbo=torch.stack(elbos),
        log_likelihood=torch.stack(lls),
        method="cavi",
        n_iter=n_iter,
        converged=converged,
        seed=seed,
        covariance_type=covariance_type,
        reg_covar=reg_covar,
        times=torch.tensor(times, dtype=torch.float64),
    )


def fit_cavi(
    x,
    k,
    *,
    init="kmeans++",
    covariance_type="full",
    max_iter=1000,
    tol=1e-8,
    reg_covar=1e-6,
    n_init=1,
    seed=None,
    progress=False,
    dtype=None,
) -> GMMFit:
    """Fit a K-component GMM by closed-form CAVI/EM (eq. 20 then eq. 21/28, repeated).

    Stops when |ΔELBO| / N < ``tol`` (``tol=0``: exactly ``max_iter`` iterations).
    ``n_init`` restarts draw their seeds deterministically from ``seed`` and the fit
    with the best final ELBO is returned.  ``reg_covar`` is added to the diagonal of
    every covariance (scikit-learn's convention).  See :class:`GMMFit` for the traces.
    """
    x, k = check_fit_args(x, k, init, dtype)
    check_covariance_type(covariance_type)
    max_iter = check_int(max_iter, "max_iter", 0)
    n_init = check_int(n_init, "n_init", 1)
    tol = check_positive(tol, "tol", allow_zero=True)
    reg_covar = check_positive(reg_covar, "reg_covar", allow_zero=True)
    seed = resolve_seed(seed)
    seeds = [seed] if n_init == 1 else spawn_seeds(seed, n_init)
    best = None
    for s in seeds:
        fit = _run(x, k, init, s, covariance_type, max_iter, tol, reg_covar, progress)
        if best is None or float(fit.elbo[-1]) > float(best.elbo[-1]):
            best = fit
    if n_init > 1:
        best = GMMFit(**{**best.__dict__, "seed": seed, "info": {**best.info, "restart_seed": best.seed}})
    return best
