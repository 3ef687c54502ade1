"""Readable text summaries of fits (used by ``GMMFit.summary`` and the command line)."""
from __future__ import annotations

import numpy as np

__all__ = ["format_fit", "format_params"]


def _fmt(v) -> str:
    return np.array2string(np.asarray(v), precision=4, suppress_small=True, max_line_width=100)


def format_params(params, names=None) -> str:
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


def format_fit(fit, names=None) -> str:
    head = (
        f"method: {fit.method}   K = {fit.params.k}   D = {fit.params.d}   covariance: {fit.covariance_type}\n"
        f"iterations: {fit.n_iter}   converged: {fit.converged}   seed: {fit.seed}\n"
        f"ELBO (eq. 18): {float(fit.elbo[-1]):.10g}   log-likelihood (eq. 26): {float(fit.log_likelihood[-1]):.10g}"
    )
    return head + "\n" + format_params(fit.params, names)
