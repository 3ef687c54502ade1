"""The one driver of every closed-form coordinate ascent: CAVI/EM, MAP-EM and variational Bayes.

The estimators supply only their maths, as an :class:`AscentProblem` (the pattern of dynamax's
``fit_em``): an E-step and an M-step on a state of their own choosing. :func:`fit_ascent` supplies
everything else, once:

- the order of the steps, and the trace semantics shared by every closed-form fit: entry t
  (t = 1..n_iter) is the objective after iteration t's M-step, L(q_{t−1}, Θ_t), with eq. 26 at
  Θ_t beside it; the last entry follows the *closing E-step* (for EM, where eq. 18 = eq. 26), so
  ``len(elbo) == n_iter + 1``;
- the stopping rule |Δ objective| / N < ``tol`` (the first change measured from the objective
  at the start; ``tol = 0`` runs exactly ``max_iter`` iterations);
- non-finite objectives, raised as ``DivergenceError`` with the last finite state attached;
- the progress bar (iteration and convergence measure; no ETA, since fits stop early);
- restarts (:func:`best_of_restarts`) with seeds spawned from ``seed``.

Each iteration is ``m_step`` then ``e_step``. The problem's ``start`` has done the first E-step,
so the E-step that ends an iteration is the next iteration's; the driver tells it when it is the
closing one (``final=True``), so that, e.g., the fused CAVI pass writes γ instead of statistics.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import torch

from ..core.errors import DivergenceError
from ..core.rng import spawn_seeds

if TYPE_CHECKING:
    from tqdm.auto import tqdm

__all__ = ["AscentProblem", "AscentRun", "fit_ascent", "best_of_restarts", "progress_bar"]

S = TypeVar("S")
F = TypeVar("F")


class AscentProblem(Protocol[S]):
    """The maths of one closed-form ascent (see the module docstring).

    ``n`` is the number of rows (the stopping rule divides changes by it) and ``name`` the
    objective's name in messages and the progress bar."""

    n: int
    name: str

    def start(self, final: bool) -> tuple[S, float]:
        """The state after the first E-step at Θ₀, and the objective the first change is measured
        from. ``final``: no iteration follows (``max_iter == 0``), so this E-step is the closing one."""
        ...

    def m_step(self, state: S) -> tuple[S, torch.Tensor]:
        """Θ_t from the statistics of the last E-step, and the objective at (q_{t−1}, Θ_t)."""
        ...

    def e_step(self, state: S, final: bool) -> tuple[S, torch.Tensor | None]:
        """The E-step at Θ_t, and eq. 26 at Θ_t (``None`` when the fit does not trace it)."""
        ...

    def finish(self, state: S) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The closing trace entry: the objective (and eq. 26) after the closing E-step."""
        ...

    def last_finite(self, state: S) -> Any:
        """What ``DivergenceError.last_finite`` carries for this state."""
        ...


@dataclasses.dataclass
class AscentRun(Generic[S]):
    """What :func:`fit_ascent` returns: the final state and the traces (float64 tensors)."""

    state: S
    elbo: torch.Tensor
    log_likelihood: torch.Tensor | None
    times: torch.Tensor
    n_iter: int
    converged: bool

    def trace_fields(self, dtype: torch.dtype) -> dict:
        """``elbo``, ``log_likelihood`` (when traced) and ``times`` as the result types store them."""
        out = {"elbo": self.elbo.to(dtype), "times": self.times}
        if self.log_likelihood is not None:
            out["log_likelihood"] = self.log_likelihood.to(dtype)
        return out


def progress_bar(progress: bool, desc: str) -> tqdm | None:
    """A tqdm bar that counts iterations (no total: fits stop when they converge), or None."""
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(desc=desc, unit="it", leave=False)


def _not_finite(it: int, name: str) -> str:
    return (
        f"{name} became NaN/inf at iteration {it} (the last finite state is attached as `.last_finite`); "
        "increase reg_covar, standardise the data, or use a prior (fit_map / fit_vb)"
    )


def fit_ascent(
    problem: AscentProblem[S], *, max_iter: int, tol: float, progress: bool = False, desc: str = "EM"
) -> AscentRun[S]:
    """Run ``problem`` to convergence or ``max_iter`` iterations (module docstring)."""
    start = time.perf_counter()
    state, prev = problem.start(final=max_iter == 0)
    if not math.isfinite(prev):
        raise DivergenceError(0, problem.last_finite(state), f"{problem.name} at the initial parameters is not finite")
    values: list[torch.Tensor] = []
    lls: list[torch.Tensor | None] = []
    times: list[float] = []
    bar = progress_bar(progress, desc)
    converged, n_iter = False, 0
    try:
        for it in range(1, max_iter + 1):
            new_state, value = problem.m_step(state)
            n_iter = it
            current = float(value)
            if not math.isfinite(current):
                raise DivergenceError(it, problem.last_finite(state), _not_finite(it, problem.name))
            state = new_state
            change = abs(current - prev) / problem.n
            prev = current
            converged = change < tol
            final = converged or it == max_iter
            state, ll = problem.e_step(state, final)  # the next E-step, or the closing one
            if ll is not None and not math.isfinite(float(ll)):
                raise DivergenceError(it, problem.last_finite(state), _not_finite(it, "eq. 26"))
            values.append(value)
            lls.append(ll)
            times.append(time.perf_counter() - start)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({problem.name: f"{current:.8g}", "|Δ|/N": f"{change:.2e}"}, refresh=False)
            if final:
                break
    finally:
        if bar is not None:
            bar.close()
    value, ll = problem.finish(state)  # after the closing E-step
    values.append(value)
    lls.append(ll)
    times.append(time.perf_counter() - start)
    traced = [v for v in lls if v is not None]
    return AscentRun(
        state=state,
        elbo=torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in values]),
        log_likelihood=torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in traced]) if traced else None,
        times=torch.tensor(times, dtype=torch.float64),
        n_iter=n_iter,
        converged=converged,
    )


def best_of_restarts(run: Callable[[int], F], seed: int, n_init: int) -> F:
    """The best of ``run(s)`` over the restart seeds s: ``[seed]`` for one run, else ``n_init``
    child seeds of ``seed``; best = highest ``fit.elbo[-1]`` (the first on ties). With restarts the
    returned fit records ``seed`` (which fixes them all) and ``info["restart_seed"]``, the winner's."""
    seeds = [seed] if n_init == 1 else spawn_seeds(seed, n_init)
    best: Any = None
    for s in seeds:
        fit: Any = run(s)
        if best is None or float(fit.elbo[-1]) > float(best.elbo[-1]):
            best = fit
    if n_init > 1:
        best = dataclasses.replace(best, seed=seed, info={**best.info, "restart_seed": best.seed})
    return best
