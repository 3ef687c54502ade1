"""The paper's figures, regenerated from fixed seeds: ``python -m ppl_gmm figures [--out DIR] [--quick]``.

One function per figure; each makes its fits (fixed seeds), draws with
:mod:`ppl_gmm.plot` on a fresh ``matplotlib.figure.Figure`` (no pyplot state) and
returns it; :func:`make_figures` writes the PNGs.  Running it twice gives
byte-identical files: the default matplotlib style is pinned, PNG metadata carries
no software version or time stamp, the SVG hash salt is fixed, rendering is Agg,
and every random choice flows from the seeds below.

``quick=True`` (``--quick``) uses fewer steps and draws (for CI); the committed
figures come from the full run.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..core.gmm import elbo, elbo_gradients
from ..core.params import GMMParams
from ..core.priors import NormalWishartPrior, default_prior
from ..core.threads import limited_threads
from ..datasets import load_galaxies, load_old_faithful
from ..inference.cavi import fit_cavi
from ..inference.model_selection import select_k
from ..inference.nuts import fit_nuts
from ..inference.svi import fit_svi
from ..inference.vb import fit_vb
from ..results.arviz_io import posterior_mean_params
from ..results.matching import align
from . import plot
from .identities import pyro_elbo_and_grads, tangent

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Iterable
    from typing import TextIO, TypeVar

    from matplotlib.figure import Figure

    _FigureFn = TypeVar("_FigureFn", bound=Callable[..., Figure])

__all__ = ["FIGURES", "make_figures", "save_figure", "STYLE"]

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 110,
    "font.size": 9,
    "axes.titlesize": 10,
    "svg.hashsalt": "ppl_gmm",
    "path.simplify": True,
}
METADATA = {
    "png": {"Software": None},
    "svg": {"Date": None, "Creator": None},
    "pdf": {"CreationDate": None, "Creator": None, "Producer": None},
}

SEED = 0  # every figure's fits start from this seed (or a fixed offset of it)

# name -> (function, file name); filled by @_figure in the order the figures are defined
FIGURES: dict = {}


def _figure(filename: str) -> Callable[[_FigureFn], _FigureFn]:
    def register(fn: _FigureFn) -> _FigureFn:
        FIGURES[fn.__name__.removeprefix("fig_")] = (fn, filename)
        return fn

    return register


def _new(ncols, nrows=1, width=4.0, height=3.4):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` reproducibly (no version or time stamp in the file)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    fig.savefig(path, metadata=METADATA.get(fmt))
    return path


# --- CAVI vs SVI -------------------------------------------------------------------------------
def _svi_fits(x, k, quick):
    """{label: fit} of the SVI variants, all from the same seed and initial Θ₀ as CAVI."""
    return {
        "SVI (Adam on Θ, γ)": fit_svi(x, k, seed=SEED, num_steps=300 if quick else 3000),
        "SVI (natural-gradient γ)": fit_svi(x, k, seed=SEED, num_steps=100 if quick else 200, local_updates="natural"),
    }


def _half_steps(x, k, n_iter):
    """log p(X) and ELBO after each E- and M-step of CAVI from fit_cavi's Θ₀ (eq. 20, 21/28), read off
    ``fit_cavi``'s trace: after the E-step at Θ_t both equal eq. 26 at Θ_t; after the M-step that
    follows, the ELBO is L(γ_t, Θ_{t+1}) = ``elbo[t]`` and log p(X) is ``log_likelihood[t]``."""
    start = fit_cavi(x, k, seed=SEED, max_iter=0)  # eq. 26 at Θ₀
    fit = fit_cavi(x, k, seed=SEED, max_iter=n_iter, tol=0.0)
    ll_e = [float(start.log_likelihood[0])] + [float(v) for v in fit.log_likelihood[: n_iter - 1]]
    lls, lbs = [], []
    for t in range(n_iter):
        lls += [ll_e[t], float(fit.log_likelihood[t])]  # E-step closes the gap; the M-step raises both
        lbs += [ll_e[t], float(fit.elbo[t])]
    return np.array(lls), np.array(lbs)


@_figure("svi_vs_cavi_elbo.png")
def fig_svi_vs_cavi(quick: bool = False) -> Figure:
    """Old Faithful, K = 2: CAVI vs SVI ELBO traces, distance to the optimum, the KL gap."""
    x = load_old_faithful()
    cavi = fit_cavi(x, 2, seed=SEED, tol=1e-12, max_iter=200)
    fits = {"CAVI (closed form)": cavi, **_svi_fits(x, 2, quick)}
    best = max(float(f.elbo[-1]) for f in fits.values())
    fig, ax = _new(2, 2, width=4.6, height=3.3)
    plot.traces(fits, ax=ax[0, 0], logx=True)
    ax[0, 0].set_ylim(best - 18, best + 2)
    ax[0, 0].set_title("ELBO per iteration / step")
    plot.traces(fits, ax=ax[0, 1], reference=best, logx=True)
    ax[0, 1].set_title("distance to the optimum")
    plot.traces(fits, ax=ax[1, 0], quantity="kl_gap", logx=True)
    ax[1, 0].set_title("free-energy gap KL(q ‖ p(z | x))")
    ll, lb = _half_steps(x, 2, 8)
    plot.free_energy(ll, lb, ax=ax[1, 1], reference=best)
    ax[1, 1].set_title("CAVI half-steps: E closes the gap")
    fig.suptitle(f"Old Faithful, K = 2, seed {SEED}: SVI reaches the CAVI optimum L* = {best:.4f}")
    return fig


@_figure("faithful_mixture.png")
def fig_faithful_mixture(quick: bool = False) -> Figure:
    """Old Faithful: the fitted mixture (K = 2 and K = 3) with 1σ/2σ ellipses, γ as a heat map."""
    x = load_old_faithful()
    fig, ax = _new(3, width=3.9)
    for j, k in enumerate((2, 3)):
        fit = fit_cavi(x, k, seed=SEED, n_init=4)
        plot.ellipses(x, fit, gamma=fit.gamma, ax=ax[0, j])
        ax[0, j].set(
            xlabel="eruption (min)",
            ylabel="waiting (min)",
            title=f"CAVI, K = {k}: log p(X) = {float(fit.log_likelihood[-1]):.2f}",
        )
    assert fit.gamma is not None  # in-memory data: the fit keeps γ
    plot.responsibilities(fit.gamma, ax=ax[0, 2])
    ax[0, 2].set_title("responsibilities γ (K = 3)")
    return fig


@_figure("galaxies_density.png")
def fig_galaxies_density(quick: bool = False) -> Figure:
    """Galaxies (1000 km/s): maximum-likelihood mixture densities for K = 2..5."""
    x = load_galaxies()
    fig, ax = _new(2, 2, width=4.8, height=3.0)
    for a, k in zip(ax.flat, (2, 3, 4, 5)):
        fit = fit_cavi(x, k, seed=SEED, n_init=4 if quick else 10, reg_covar=1e-3)
        plot.density_1d(x, fit, ax=a, bins=30)
        sigma_min = float(fit.params.cov[:, 0, 0].sqrt().min())
        a.set(
            title=f"K = {k}: log p(X) = {float(fit.log_likelihood[-1]):.2f}, BIC {fit.bic(x):.1f}, "
            f"min σ_k {sigma_min:.2f}",
            xlabel="velocity (1000 km/s)",
        )
    fig.suptitle("Galaxies, maximum likelihood (CAVI, reg_covar = 1e-3): a tiny σ_k sits on a couple of points")
    return fig


# --- priors and Bayesian fits ------------------------------------------------------------------
@_figure("vb_pruning.png")
def fig_vb_pruning(quick: bool = False) -> Figure:
    """Old Faithful (standardised), K = 6 (PRML fig. 10.6): VB with alpha0 = 1e-3 switches off surplus components."""
    x = load_old_faithful()
    xs = (x - x.mean(0)) / x.std(0)  # standardised, as in PRML fig. 10.6
    # PRML's set-up: m0 = 0, beta0 = 1, W0 = I, nu0 = D; only the Dirichlet concentration alpha0 varies
    prior = NormalWishartPrior(1e-3, torch.zeros(2, dtype=torch.float64), 1.0, 2.0, torch.eye(2, dtype=torch.float64))
    final = fit_vb(xs, 6, prior, seed=SEED, max_iter=1000, tol=1e-10)
    stages = [1, 5, 20] if final.n_iter > 20 else [1, 5]
    fig, ax = _new(len(stages) + 2, width=3.2, height=3.1)
    for a, t in zip(ax[0], stages + [None]):
        fit = final if t is None else fit_vb(xs, 6, prior, seed=SEED, max_iter=t, tol=0.0)
        plot.ellipses(xs, fit, gamma=fit.gamma, ax=a, min_weight=1e-3, weight_alpha=True, levels=(1.0, 2.0))
        a.set(
            xlim=(-2.3, 2.3),
            ylim=(-2.6, 2.6),
            xlabel="eruption (standardised)",
            title=f"{'converged, ' if t is None else ''}iteration {fit.n_iter}: {fit.n_effective(1e-3)} components",
        )
    ax[0, 0].set_ylabel("waiting (standardised)")
    flat = fit_vb(xs, 6, dataclasses.replace(prior, alpha0=1.0), seed=SEED, max_iter=1000, tol=1e-10)
    plot.mixing_weights({"alpha0 = 0.001": final.weights, "alpha0 = 1": flat.weights}, ax=ax[0, -1])
    ax[0, -1].set_yscale("log")
    ax[0, -1].legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    ax[0, -1].set_title("E[π_k] after convergence")
    fig.suptitle("Variational Bayes, K = 6, Old Faithful: components whose E[π_k] falls below 1e-3 are not drawn")
    return fig


@_figure("nuts_vs_vb.png")
def fig_nuts_vs_vb(quick: bool = False) -> Figure:
    """Galaxies, K = 3: posterior marginals of NUTS (Z enumerated out) vs closed-form variational Bayes."""
    x = load_galaxies()
    prior = default_prior(x, 3)
    n, warmup, chains = (100, 100, 1) if quick else (600, 300, 2)
    nuts = fit_nuts(x, 3, prior, num_samples=n, warmup_steps=warmup, num_chains=chains, seed=SEED)
    vb = fit_vb(x, 3, prior, seed=SEED)
    perm = align(posterior_mean_params(nuts), vb).tolist()  # NUTS component j ↔ VB component perm[j]
    vb_idata = vb.to_arviz(num_samples=4000, seed=SEED)
    fig, ax = _new(3, 2, width=3.5, height=2.6)
    for j in range(3):
        for row, (var, idx, name) in enumerate(
            (("alpha", (j,), f"α_{j + 1}"), ("mu", (j, 0), f"μ_{j + 1} (1000 km/s)"))
        ):
            vb_idx = (perm[j], *idx[1:])
            plot.posterior_marginals(
                {"NUTS": plot.draws(nuts, var, *idx), "VB": plot.draws(vb_idata, var, *vb_idx)},
                ax=ax[row, j],
                xlabel=name,
            )
    ax[0, 0].legend(frameon=False)
    fig.suptitle(
        f"Galaxies, K = 3, default prior: NUTS ({n} draws × {chains} chains) vs variational Bayes (4000 draws of q)"
    )
    return fig


@_figure("galaxies_select_k.png")
def fig_select_k(quick: bool = False) -> Figure:
    """Galaxies: choosing K by BIC (MLE) and by the VB bound + ln K! (PSIS-LOO: notebook 02)."""
    x = load_galaxies()
    ks = list(range(1, 5 if quick else 8))
    tables = {m: select_k(x, ks, method=m, seed=SEED) for m in ("bic", "vb")}
    fig, ax = _new(len(tables), width=4.2)
    for a, (method, table) in zip(ax.flat, tables.items()):
        plot.selection(table, ax=a)
        a.set_title(f"select_k(method={method!r}): K = {table.best}")
    fig.suptitle("Galaxies (82 velocities): how many components?")
    return fig


# --- the derivation's identities ---------------------------------------------------------------
def _identity_differences(quick):
    """Relative differences, over random (Θ, γ) not at an optimum: Pyro's −TraceEnum_ELBO loss vs eq. 18,
    and autograd of Pyro's loss vs the analytic gradients of eq. 19."""
    rng = np.random.default_rng(SEED)
    diffs: dict[str, list[float]] = {
        "eq. 18 (loss)": [],
        "eq. 19 ∂α": [],
        "eq. 19 ∂μ": [],
        "eq. 19 ∂Σ": [],
        "eq. 19 ∂γ": [],
    }
    for trial in range(4 if quick else 20):
        d = 1 + trial % 2
        x, gamma, params = _random_problem(rng, n=40, k=3, d=d)
        value, grads = pyro_elbo_and_grads(x, gamma, params)
        ref = float(elbo(x, gamma, params))
        diffs["eq. 18 (loss)"].append(abs(float(value) - ref) / abs(ref))
        analytic = elbo_gradients(x, gamma, params)
        for key, name in (("alpha", "∂α"), ("mu", "∂μ"), ("cov", "∂Σ"), ("gamma", "∂γ")):
            a, b = grads[key], analytic[key]
            if key in ("alpha", "gamma"):  # Pyro's Categorical normalises: compare on the simplex
                a, b = tangent(a), tangent(b)
            diffs[f"eq. 19 {name}"].append(float((a - b).abs().max() / b.abs().max()))
    return diffs


def _random_problem(rng, n, k, d):
    alpha = rng.dirichlet(np.ones(k))
    mu = rng.normal(scale=3.0, size=(k, d))
    a = rng.normal(size=(k, d, d))
    cov = a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(d)
    x = torch.as_tensor(rng.normal(scale=3.0, size=(n, d)))
    gamma = torch.as_tensor(rng.dirichlet(np.ones(k), size=n))
    return x, gamma, GMMParams(torch.as_tensor(alpha), torch.as_tensor(mu), torch.as_tensor(cov))


@_figure("eq18_eq19_agreement.png")
def fig_identities(quick: bool = False) -> Figure:
    """Pyro's TraceEnum_ELBO loss vs eq. 18 and its autograd gradients vs eq. 19, at round-off scale."""
    diffs = _identity_differences(quick)
    fig, ax = _new(1, width=7.0, height=3.8)
    plot.roundoff(diffs, ax=ax[0, 0])
    n = len(next(iter(diffs.values())))
    ax[0, 0].set_title(f"Pyro's TraceEnum_ELBO vs the closed form: {n} random (Θ, γ), N = 40, K = 3, D = 1, 2")
    return fig


# --- driver ------------------------------------------------------------------------------------
def make_figures(
    out: str | os.PathLike[str] = "figures",
    *,
    quick: bool = False,
    only: Iterable[str] | None = None,
    stream: TextIO | None = None,
) -> dict[str, Path | Exception]:
    """Write every figure (or those named in ``only``) into ``out``; one progress line per figure.

    Returns {name: path or the exception that stopped that figure}.  A figure that fails
    does not stop the others.
    """
    stream = sys.stdout if stream is None else stream
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(FIGURES) if not only else list(only)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise ValueError(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    results = {}
    with limited_threads():  # tiny data: one thread is fastest, and reductions keep one order
        for i, name in enumerate(names, 1):
            results[name] = _make_one(name, out, quick, f"[{i}/{len(names)}]", stream)
    return results


def _make_one(name, out, quick, counter, stream):
    from matplotlib import style

    fn, filename = FIGURES[name]
    start = time.perf_counter()
    try:
        with style.context(["default", STYLE]):
            result = save_figure(fn(quick=quick), out / filename)
        status = "ok"
    except Exception as err:  # report it and go on with the other figures
        result = err
        status = f"FAILED: {type(err).__name__}: {err}".splitlines()[0]
    print(f"{counter} {filename:<26} {time.perf_counter() - start:6.1f} s  {status}", file=stream, flush=True)
    return result
