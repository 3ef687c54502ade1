"""Closed-form CAVI = EM for the GMM (eq. 16–21, 28), hand-coded.

One iteration is the E-step (eq. 20: γ = the CAVI optimum eq. 17, which is the
posterior eq. 27) followed by the M-step (eq. 21 / 28: Θ maximising eq. 18 for
fixed γ), exactly as scikit-learn's ``GaussianMixture`` iterates.  Each
iteration can only raise eq. 18 (coordinate ascent), and because the E-step
closes the KL gap, it can only raise eq. 26 too (eq. 22–25).

The fit ends with a final E-step, so ``fit.gamma == e_step(x, fit.params)`` and
``fit.elbo[-1] == log_likelihood(x, fit.params)``.

The work is done by ``_engine.fit_em``: one fused pass over the data per
iteration (E-step, eq. 26 and the M-step's sufficient statistics together), in
centred coordinates.  :func:`reference_fit` is the plain loop over the public
closed-form functions, kept as the executable definition the engine is tested
against.
"""
from __future__ import annotations

import time

import torch

from ._engine import fit_em
from ._fitting import AscentTrace, best_of_restarts, progress_bar
from ._validation import as_data, check_covariance_type, check_int, check_k, check_positive
from .closed_form import e_step, elbo, log_likelihood, m_step, normalise_log, weighted_log_prob
from .errors import DivergenceError
from .init import INITS, initial_params, resolve_seed
from .params import GMMParams
from .result import GMMFit

__all__ = ["fit_cavi", "check_fit_args", "reference_fit"]


def check_init(init):
    """``init`` is "kmeans++", "random" or a GMMParams."""
    if isinstance(init, GMMParams):
        return init
    if isinstance(init, str) and init in INITS:
        return init
    raise ValueError(f"unknown init {init!r}; use 'kmeans++', 'random' or a GMMParams")


def check_fit_args(x, k, init, dtype=None):
    """Validate data, k and init before any work; returns (x, k)."""
    x = as_data(x, dtype=dtype)
    k = check_k(k, x.shape[0])
    init = check_init(init)
    if isinstance(init, GMMParams) and (init.k != k or init.d != x.shape[1]):
        raise ValueError(
            f"init parameters have K = {init.k}, D = {init.d} but the fit asks for K = {k} on D = {x.shape[1]} data"
        )
    return x, k


def _run(x, k, init, seed, covariance_type, max_iter, tol, reg_covar, progress) -> GMMFit:
    params = initial_params(x, k, init, seed, covariance_type, reg_covar)
    bar = progress_bar(progress, max_iter, "CAVI")

    def on_iter(it, value):
        bar.update(1)
        bar.set_postfix(elbo=f"{value:.6g}", refresh=False)

    try:
        out = fit_em(
            x,
            params.alpha,
            params.mu,
            params.cov,
            covariance_type=covariance_type,
            reg_covar=reg_covar,
            max_iter=max_iter,
            tol=tol,
            on_iter=None if bar is None else on_iter,
            want_gamma=False,
        )
    finally:
        if bar is not None:
            bar.close()
    dtype = x.dtype
    params = GMMParams(out["alpha"].to(dtype), out["mu"].to(dtype), out["cov"].to(dtype))
    # The closing E-step through the public closed form, so that fit.gamma == e_step(x, fit.params)
    # and fit.elbo[-1] == log_likelihood(x, fit.params) hold bit for bit (the engine's own closing
    # pass, in centred coordinates, agrees to ~1e-16).
    gamma, lse = normalise_log(weighted_log_prob(x, params))  # eq. 20, exactly as e_step
    final = lse.sum()  # eq. 26 = eq. 18 at (γ, Θ): KL gap 0
    elbos, lls = out["elbo"].to(dtype).clone(), out["log_likelihood"].to(dtype).clone()
    elbos[-1] = final
    lls[-1] = final
    return GMMFit(
        params=params,
        gamma=gamma,
        elbo=elbos,
        log_likelihood=lls,
        method="cavi",
        n_iter=out["n_iter"],
        converged=out["converged"],
        seed=seed,
        covariance_type=covariance_type,
        reg_covar=reg_covar,
        times=out["times"],
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

    Parameters
    ----------
    x : (N,) or (N, D) numbers (numpy, torch, or anything ``np.asarray`` takes)
    k : number of components, 1 <= k <= N
    init : "kmeans++" (seeded k-means++ centres, then one M-step from the hard assignments),
        "random" (Dirichlet responsibilities, then one M-step) or a ``GMMParams``
    covariance_type : "full", "diag", "spherical" or "tied"
    max_iter, tol : at most ``max_iter`` iterations; stop when |ΔELBO| / N < ``tol``
        (``tol=0``: exactly ``max_iter``).  The first change is measured from eq. 26 at Θ₀.
        In float32 the round-off of the E-step is ~1e-7 per point: use tol >= 1e-6 there.
    reg_covar : added to the diagonal of every covariance (scikit-learn's convention)
    n_init : restarts; their seeds are drawn deterministically from ``seed`` and the fit
        with the best final ELBO is returned
    seed : int or None (None draws one from OS entropy; it is recorded on the fit)
    progress : show a tqdm bar over the iterations
    dtype : torch.float64 (default) or torch.float32; float32 data give a float32 fit

    Returns a :class:`GMMFit`.  Trace entry t (t = 1..n_iter) holds eq. 18 at (γ_{t−1}, Θ_t)
    and eq. 26 at Θ_t; the last entry follows the closing E-step (γ = e_step(x, Θ)), where
    eq. 18 equals eq. 26, so ``len(fit.elbo) == fit.n_iter + 1``.

    Raises (before any work) ``ValueError``/``TypeError`` for bad input, and during the fit
    ``EmptyComponentError`` / ``DegenerateComponentError`` naming the component that
    emptied or collapsed, with remedies.  The ELBO trace is always finite.
    """
    x, k = check_fit_args(x, k, init, dtype)
    check_covariance_type(covariance_type)
    max_iter = check_int(max_iter, "max_iter", 0)
    n_init = check_int(n_init, "n_init", 1)
    tol = check_positive(tol, "tol", allow_zero=True)
    reg_covar = check_positive(reg_covar, "reg_covar", allow_zero=True)
    seed = resolve_seed(seed)
    return best_of_restarts(
        lambda s: _run(x, k, init, s, covariance_type, max_iter, tol, reg_covar, progress), seed, n_init)


def reference_fit(x, params: GMMParams, *, covariance_type="full", max_iter=100, tol=0.0, reg_covar=0.0) -> GMMFit:
    """The plain CAVI/EM loop over the public closed-form functions (slow; for tests).

    Same semantics as :func:`fit_cavi` from ``init=params``: one E-step (eq. 20) then one
    M-step (eq. 21/28) per iteration, eq. 18 at (γ_{t−1}, Θ_t) and eq. 26 at Θ_t traced,
    a closing E-step, |ΔELBO| / N < tol to stop.
    """
    x = as_data(x, dtype=params.dtype)
    trace = AscentTrace(x.shape[0], tol, None, time.perf_counter())
    converged = False
    n_iter = 0
    for it in range(max_iter):
        gamma, lse = normalise_log(weighted_log_prob(x, params))  # eq. 20
        if trace.prev is None:
            trace.prev = float(lse.sum())  # eq. 26 at Θ₀ = eq. 18 right after the first E-step
        params = m_step(x, gamma, covariance_type, reg_covar)  # eq. 21 / 28
        value = elbo(x, gamma, params)  # eq. 18 at (γ_{t-1}, Θ_t)
        ll = log_likelihood(x, params)  # eq. 26 at Θ_t
        n_iter = it + 1
        if not (torch.isfinite(value) and torch.isfinite(ll)):
            raise DivergenceError(n_iter, params)
        if trace.record(value, ll):
            converged = True
            break
    gamma = e_step(x, params)  # closing E-step: KL gap = 0
    trace.finish(elbo(x, gamma, params), log_likelihood(x, params))  # eq. 18 = eq. 26
    return GMMFit(
        params=params,
        gamma=gamma,
        **trace.fields(),
        method="cavi",
        n_iter=n_iter,
        converged=converged,
        seed=None,
        covariance_type=covariance_type,
        reg_covar=reg_covar,
    )
