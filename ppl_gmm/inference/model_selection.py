"""Choosing K: a table of a criterion over candidate numbers of components.

method="bic"   BIC of the maximum-likelihood fit (``fit_cavi`` with ``n_init`` restarts, the best
               eq. 26 kept): BIC = −2 ln p(X | Θ̂) + p ln N, p = (K − 1) + K D + K D(D + 1)/2
               (scikit-learn's count).  Lower is better.
method="vb"    the variational bound of ``fit_vb`` (PRML 10.70, all constants; best of ``n_init``
               restarts) plus ln K!:  ln p(X | K) ≈ L(q) + ln K!.  The posterior has K! equivalent
               modes (relabellings) and q sits on one of them, so L bounds the log evidence of one
               mode's share; adding ln K! counts all of them (PRML §10.2.4, the remark before
               fig. 10.7).  The correction assumes the K! modes do not overlap; with switched-off or
               coincident components they do and L + ln K! overstates the evidence.  Higher is better.
method="loo"   PSIS-LOO expected log predictive density from NUTS (``inference.nuts.loo_elpd``; ArviZ's
               ``loo``), with its standard error.  Higher is better.

The prior for "vb" and "loo" is ``default_prior(x, k)`` unless ``prior`` is given (a
NormalWishartPrior for every K, or a callable k -> prior).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

from ..core.priors import NormalWishartPrior, default_prior
from ..core.rng import resolve_seed, spawn_seeds
from ..core.threads import limited_threads
from ..core.validation import ArrayLike, as_data, check_bool, check_int
from ..results.selection import SelectionTable
from .ascent import best_of_restarts
from .cavi import fit_cavi
from .vb import fit_vb

__all__ = ["select_k", "METHODS"]

METHODS = ("bic", "vb", "loo")
_CRITERION = {"bic": ("bic", False), "vb": ("log_evidence", True), "loo": ("elpd_loo", True)}


def _check_ks(ks, n: int) -> list:
    if isinstance(ks, numbers.Integral) and not isinstance(ks, bool):
        ks = [ks]
    try:
        ks = list(ks)
    except TypeError:
        raise TypeError(f"ks must be an iterable of integers (e.g. range(1, 7)), got {ks!r}") from None
    if not ks:
        raise ValueError("ks is empty: give at least one number of components")
    out = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise TypeError(f"every k in ks must be an integer, got {k!r}")
        if not 1 <= int(k) <= n:
            raise ValueError(f"k = {k} is outside 1..N = 1..{n}: the data support at most {n} components")
        out.append(int(k))
    if len(set(out)) != len(out):
        raise ValueError(f"ks has repeated values: {out}")
    return out


def _prior_for(x, k, prior):
    if prior is None:
        return default_prior(x, k)
    p = prior(k) if callable(prior) and not isinstance(prior, NormalWishartPrior) else prior
    if not isinstance(p, NormalWishartPrior):
        raise TypeError(
            f"prior must be a NormalWishartPrior or a callable k -> NormalWishartPrior, got {type(p).__name__}"
        )
    p.check_data(x)
    return p


def _row_bic(x, k, seed, n_init, progress, kwargs) -> dict:
    fit = fit_cavi(x, k, n_init=n_init, seed=seed, progress=progress, **kwargs)
    ll = float(fit.log_likelihood[-1])
    return {
        "k": k,
        "bic": fit.bic(x),
        "log_likelihood": ll,
        "n_params": fit.n_parameters(),
        "converged": bool(fit.converged),
    }


def _row_vb(x, k, seed, n_init, progress, prior, kwargs) -> dict:
    p = _prior_for(x, k, prior)
    best = best_of_restarts(lambda s: fit_vb(x, k, p, seed=s, progress=progress, **kwargs), seed, n_init)
    bound = float(best.elbo[-1])
    log_k_factorial = math.lgamma(k + 1)
    return {
        "k": k,
        "log_evidence": bound + log_k_factorial,
        "elbo": bound,
        "ln_k_factorial": log_k_factorial,
        "n_effective": best.n_effective(),
        "converged": bool(best.converged),
    }


def _row_loo(x, k, seed, progress, prior, kwargs) -> dict:
    from .nuts import loo_elpd  # Pyro and ArviZ are loaded only when LOO is asked for

    result = loo_elpd(x, k, _prior_for(x, k, prior), seed, progress=progress, **kwargs)
    return {"k": k, "elpd_loo": result.elpd_loo, "se": result.se, "p_loo": result.p_loo, "n_high_k": result.n_high_k}


def select_k(
    x: ArrayLike,
    ks: int | Iterable[int],
    *,
    method: str = "bic",
    seed: int | None = None,
    n_init: int = 3,
    prior: NormalWishartPrior | Callable[[int], NormalWishartPrior] | None = None,
    progress: bool = False,
    **fit_kwargs: Any,
) -> SelectionTable:
    """Fit every K in ``ks`` and tabulate the criterion of ``method`` (module docstring).

    ``seed`` fixes everything: K number j uses the j-th child seed of ``seed``.  ``n_init``
    restarts per K ("bic", "vb"); ``fit_kwargs`` go to ``fit_cavi`` / ``fit_vb`` / ``nuts.loo_elpd``.
    Returns a :class:`SelectionTable`; ``print(table)`` shows it, ``table.best`` is the chosen K.
    """
    x = as_data(x)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    ks = _check_ks(ks, x.shape[0])
    n_init = check_int(n_init, "n_init", 1)
    if method != "bic":
        for k in ks:  # priors are checked before any fitting starts
            _prior_for(x, k, prior)
    seed = resolve_seed(seed)
    progress = check_bool(progress, "progress")
    seeds = spawn_seeds(seed, len(ks))
    rows = []
    with limited_threads(x.shape[0] * max(ks) * x.shape[1]):
        for k, s in zip(ks, seeds):
            if method == "bic":
                rows.append(_row_bic(x, k, s, n_init, progress, fit_kwargs))
            elif method == "vb":
                rows.append(_row_vb(x, k, s, n_init, progress, prior, fit_kwargs))
            else:
                rows.append(_row_loo(x, k, s, progress, prior, fit_kwargs))
    criterion, higher = _CRITERION[method]
    return SelectionTable(method=method, criterion=criterion, higher_is_better=higher, rows=tuple(rows))
