"""Every text rendering of the package: fits, posteriors, draws, K-selection tables and the demo's
comparison (used by ``GMMFit.summary``, ``SelectionTable.__str__``, the command line and the demo)."""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Protocol

    import torch

    from ..core.params import GMMParams
    from .arviz_io import InferenceData
    from .vb_fit import VBFit

    # GMMFit and SelectionTable import this module, and the demo's Comparison lives in ``app``, so
    # their types here are structural (no import cycle, no upward import)
    class _FitLike(Protocol):
        """What the renderings read of a ``GMMFit``."""

        @property
        def params(self) -> GMMParams: ...
        @property
        def gamma(self) -> torch.Tensor | None: ...
        @property
        def elbo(self) -> torch.Tensor: ...
        @property
        def log_likelihood(self) -> torch.Tensor: ...
        @property
        def method(self) -> str: ...
        @property
        def covariance_type(self) -> str: ...
        @property
        def n_iter(self) -> int: ...
        @property
        def converged(self) -> bool: ...
        @property
        def seed(self) -> int | None: ...

    class _TableLike(Protocol):
        """What :func:`format_selection` reads of a ``SelectionTable``."""

        @property
        def method(self) -> str: ...
        @property
        def criterion(self) -> str: ...
        @property
        def higher_is_better(self) -> bool: ...
        @property
        def rows(self) -> tuple: ...
        @property
        def columns(self) -> list: ...
        @property
        def best(self) -> int: ...

    class _ComparisonLike(Protocol):
        """What :func:`format_comparison` reads of the demo's ``Comparison``."""

        @property
        def data(self) -> str: ...
        @property
        def reference(self) -> _FitLike: ...
        def rows(self) -> list[dict]: ...


__all__ = [
    "format_fit",
    "format_params",
    "format_vb",
    "format_draws",
    "format_result",
    "format_selection",
    "format_comparison",
]


def _fmt(v: object) -> str:
    return np.array2string(np.asarray(v), precision=4, suppress_small=True, max_line_width=100)


def format_params(params: GMMParams, names: Sequence[str] | None = None) -> str:
    names = names or [f"x{j}" for j in range(params.d)]
    lines = [f"{'k':>3}  {'weight':>8}  " + "  ".join(f"{'mean ' + n:>14}" for n in names)]
    for j in range(params.k):
        means = "  ".join(f"{float(m):>14.6g}" for m in params.mu[j])
        lines.append(f"{j:>3}  {float(params.alpha[j]):>8.4f}  {means}")
    lines.append("covariances:")
    for j in range(params.k):
        mat = _fmt(params.cov[j].numpy()).replace("\n", "\n        ")
        lines.append(f"  k={j}: {mat}")
    return "\n".join(lines)


def format_fit(fit: _FitLike, names: Sequence[str] | None = None) -> str:
    head = (
        f"method: {fit.method}   K = {fit.params.k}   D = {fit.params.d}   covariance: {fit.covariance_type}\n"
        f"iterations: {fit.n_iter}   converged: {fit.converged}   seed: {fit.seed}\n"
        f"ELBO (eq. 18): {float(fit.elbo[-1]):.10g}   log-likelihood (eq. 26): {float(fit.log_likelihood[-1]):.10g}"
    )
    return head + "\n" + format_params(fit.params, names)


def format_vb(fit: VBFit, names: Sequence[str] | None = None) -> str:
    """Variational Bayes posterior: E[π_k], m_k, E[Λ_k]⁻¹ = (ν_k W_k)⁻¹, the bound."""
    p = fit.posterior
    names = names or [f"x{j}" for j in range(p.m.shape[1])]
    concentration = "" if fit.prior is None else f", concentration alpha0 = {float(fit.prior.alpha0):.6g}"
    if p.stick_b is None:  # q(α) = Dir(alpha_k), PRML 10.57
        weights = f"weight prior: Dirichlet{concentration}"
        q_weights = f"Dirichlet alpha_k: {_fmt(p.alpha)}   "
    else:  # the Dirichlet process truncated at K sticks, q(v_k) = Beta(a_k, b_k)
        weights = f"weight prior: Dirichlet process (K sticks){concentration}"
        q_weights = f"sticks Beta(a_k, b_k): a_k {_fmt(p.alpha)}   b_k {_fmt(p.stick_b)}\n"
    head = (
        f"method: vb (closed-form variational Bayes)   K = {len(p.alpha)}   D = {len(names)}   "
        f"covariance: {p.covariance_type}\n"
        f"{weights}\n"
        f"iterations: {fit.n_iter}   converged: {fit.converged}\n"
        f"ELBO (full VB bound, PRML 10.70-10.77): {float(fit.elbo[-1]):.10g}\n"
        f"{q_weights}nu_k: {_fmt(p.nu)}\n"
        "posterior means E[π_k], m_k and covariances E[Λ_k]⁻¹:"
    )
    return head + "\n" + format_params(fit.mean_params(), names)


def format_draws(idata: InferenceData, names: Sequence[str] | None = None) -> str:
    """MCMC posterior: mean, sd and the 3%–97% interval of α_k and μ_kd (xarray access)."""
    post = idata.posterior  # type: ignore[attr-defined]  # InferenceData sets its groups dynamically
    names = names or [f"x{j}" for j in range(post["mu"].shape[-1])]
    chains, draws = post["alpha"].values.shape[:2]
    lines = [
        f"method: nuts   chains: {chains}   draws per chain: {draws}",
        f"{'parameter':<22} {'mean':>12} {'sd':>10} {'3%':>12} {'97%':>12}",
    ]
    alpha, mu = post["alpha"].values, post["mu"].values
    rows = [(f"alpha[{j}]", alpha[..., j]) for j in range(alpha.shape[-1])]
    rows += [(f"mu[{j}, {names[d]}]", mu[..., j, d]) for j in range(mu.shape[-2]) for d in range(mu.shape[-1])]
    for name, v in rows:
        q = np.quantile(v, [0.03, 0.97])
        lines.append(f"{name:<22} {v.mean():>12.6g} {v.std(ddof=1):>10.4g} {q[0]:>12.6g} {q[1]:>12.6g}")
    from .arviz_io import diagnostics

    diag = diagnostics(idata)
    divergences = (
        int(np.asarray(idata.sample_stats["diverging"].values).sum())  # type: ignore[attr-defined]
        if "sample_stats" in idata.groups()
        else 0
    )
    lines.append(
        f"divergences: {divergences}   worst R-hat: {diag['r_hat_max']:.4f}   "
        f"smallest bulk ESS: {diag['ess_bulk_min']:.0f}   (ppl_gmm.arviz_io.summary for the full table)"
    )
    return "\n".join(lines)


def format_result(result: _FitLike | VBFit | InferenceData, names: Sequence[str] | None = None) -> str:
    """A readable summary of any fit: a GMMFit, a VBFit or an InferenceData of draws."""
    # duck-typed dispatch, which mypy does not narrow a union by
    if hasattr(result, "params") and hasattr(result, "log_likelihood"):
        return format_fit(result, names)  # type: ignore[arg-type]
    if hasattr(result, "posterior") and hasattr(result.posterior, "W"):
        return format_vb(result, names)  # type: ignore[arg-type]
    return format_draws(result, names)  # type: ignore[arg-type]


def format_selection(table: _TableLike) -> str:
    """A SelectionTable as text: one row per K, the chosen K marked with *."""

    def fmt(v: object) -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, numbers.Integral):
            return str(v)
        if isinstance(v, numbers.Real):
            return f"{v:.4f}"
        return str(v)

    cols = table.columns
    cells = [[fmt(row[c]) for c in cols] for row in table.rows]
    widths = [max(len(c), *(len(r[j]) for r in cells)) for j, c in enumerate(cols)]
    best = table.best
    arrow = "higher" if table.higher_is_better else "lower"
    lines = [
        f"select_k(method={table.method!r}): {table.criterion}, {arrow} is better; best k = {best}",
        "  " + "  ".join(c.rjust(w) for c, w in zip(cols, widths)),
    ]
    for row, cell in zip(table.rows, cells):
        mark = "*" if row["k"] == best else " "
        lines.append(mark + " " + "  ".join(v.rjust(w) for v, w in zip(cell, widths)))
    return "\n".join(lines)


def format_comparison(cmp: _ComparisonLike, seconds: bool = True) -> str:
    """The comparison as a fixed-width text table (``seconds=False``: without the timing column,
    so that the text is the same on every run)."""
    ref = cmp.reference
    n, d = ("?" if ref.gamma is None else ref.gamma.shape[0]), ref.params.d
    head = (
        f"{cmp.data}: N = {n}, D = {d}, K = {ref.params.k}, seed = {ref.seed}; every fit starts from the "
        f"same Θ₀ and γ₀ = e_step(x, Θ₀)\n"
    )
    cols = [
        ("method", "{:<26}", 26),
        ("ELBO (eq. 18)", "{:>15.6f}", 15),
        ("rel. diff", "{:>9.1e}", 9),
        ("max|Δα|", "{:>8.1e}", 8),
        ("max|Δμ|", "{:>8.1e}", 8),
        ("max|ΔΣ|", "{:>8.1e}", 8),
        ("iters/steps", "{:>11d}", 11),
        ("conv.", "{!s:>5}", 5),
        ("seconds", "{:>8.2f}", 8),
    ]
    keys = ["method", "elbo", "rel_diff", "d_alpha", "d_mu", "d_cov", "n_iter", "converged", "seconds"]
    if not seconds:
        cols, keys = cols[:-1], keys[:-1]
    lines = [head + "  ".join(f"{name:>{w}}" if i else f"{name:<{w}}" for i, (name, _, w) in enumerate(cols))]
    lines.append("-" * len(lines[0].splitlines()[-1]))
    for row in cmp.rows():
        lines.append("  ".join(fmt.format(row[key]) for (_, fmt, _), key in zip(cols, keys)))
    lines.append(
        "rel. diff = |ELBO − ELBO_CAVI| / |ELBO_CAVI|; Δ = parameters minus CAVI's after align() "
        "(data units); the final ELBO of each fit is eq. 18 at its returned (Θ, γ)."
    )
    return "\n".join(lines)
