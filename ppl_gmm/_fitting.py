"""Bookkeeping shared by the fitting loops: restarts, the progress bar and the ascent trace.

``best_of_restarts``: ``n_init`` runs from child seeds of ``seed`` (``init.spawn_seeds``), the one
with the highest final objective kept (the first on ties), as ``fit_cavi`` documents.

``AscentTrace``: the trace of a coordinate-ascent loop (CAVI/EM, MAP-EM, VB): the objective (and
eq. 26 where the fit records it) per iteration, the seconds since the start of the fit, a tqdm bar,
and ``fit_cavi``'s stopping rule |Δ objective| / N < tol.
"""
from __future__ import annotations

import dataclasses
import time

import torch

from .init import spawn_seeds

__all__ = ["best_of_restarts", "progress_bar", "AscentTrace"]


def progress_bar(progress: bool, total: int, desc: str):
    """A tqdm bar over ``total`` steps, or None when ``progress`` is False."""
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


def best_of_restarts(run, seed: int, n_init: int):
    """The best of ``run(s)`` over the restart seeds s: ``[seed]`` for one run, else ``n_init``
    child seeds of ``seed``; best = highest ``fit.elbo[-1]``.  With restarts the returned fit
    records ``seed`` (which fixes them all) and ``info["restart_seed"]``, the winner's own seed."""
    seeds = [seed] if n_init == 1 else spawn_seeds(seed, n_init)
    best = None
    for s in seeds:
        fit = run(s)
        if best is None or float(fit.elbo[-1]) > float(best.elbo[-1]):
            best = fit
    if n_init > 1:
        best = dataclasses.replace(best, seed=seed, info={**best.info, "restart_seed": best.seed})
    return best


class AscentTrace:
    """Trace entries of an ascent loop and its stopping rule.

    ``prev`` is the objective the first change is measured from (None: set ``.prev`` before the
    first :meth:`record`); ``start`` the ``time.perf_counter()`` of the start of the fit; ``bar``
    a :func:`progress_bar` (or None), its postfix labelled ``label``.
    """

    def __init__(self, n: int, tol: float, prev, start: float, bar=None, label: str = "elbo"):
        self.n, self.tol, self.prev, self.start, self.bar, self.label = n, tol, prev, start, bar, label
        self.values, self.log_likelihood, self.times = [], [], []

    def record(self, value, log_likelihood=None) -> bool:
        """Append one iteration's entry; True when |value − previous| / N < tol (converged)."""
        self.values.append(value)
        if log_likelihood is not None:
            self.log_likelihood.append(log_likelihood)
        self.times.append(time.perf_counter() - self.start)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix({self.label: f"{float(value):.6g}"})
        change = abs(float(value) - self.prev) / self.n
        self.prev = float(value)
        return change < self.tol

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def finish(self, value, log_likelihood=None) -> None:
        """Append the closing entry (after the final E-step)."""
        self.values.append(value)
        if log_likelihood is not None:
            self.log_likelihood.append(log_likelihood)
        self.times.append(time.perf_counter() - self.start)

    def fields(self) -> dict:
        """``elbo``, ``log_likelihood`` (when recorded) and ``times`` as the result types store them."""
        out = {"elbo": torch.stack(self.values), "times": torch.tensor(self.times, dtype=torch.float64)}
        if self.log_likelihood:
            out["log_likelihood"] = torch.stack(self.log_likelihood)
        return out
