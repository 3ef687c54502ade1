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
- restarts (:func:`best_of_restarts`): the first start uses ``seed`` itself, the others child
  seeds of it (:func:`restart_seeds`), so more restarts never return a worse optimum;
- a :class:`~ppl_gmm.core.errors.ConvergenceWarning` when ``max_iter`` stops the ascent before
  ``tol`` is met (not for ``max_iter = 0`` nor ``tol = 0``, which ask for exactly ``max_iter``
  iterations; with restarts only when the returned fit did not converge, as scikit-learn).

Each iteration is ``m_step`` then ``e_step``. The problem's ``start`` has done the first E-step,
so the E-step that ends an iteration is the next iteration's; the driver tells it when it is the
closing one (``final=True``), so that, e.g., the fused CAVI pass writes γ instead of statistics.

Scale. Every closed-form fit computes in x' = x / s, s = 2^j from ``core.validation.data_scale``
(s = 1 for data at ordinary scales: nothing changes), with reg_covar' = reg_covar / s², Θ₀' =
(α, μ / s, Σ / s²) and the prior mapped by :func:`scale_prior`; the answer is mapped back exactly
(μ = s μ', Σ = s² Σ', W = W' / s², γ unchanged) and the traces by :func:`scale_offsets`.
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import torch

from ..core.errors import ConvergenceWarning, DivergenceError
from ..core.priors import NormalWishartPrior
from ..core.rng import spawn_seeds
from ..core.validation import DataScale
from ..core.vb_posterior import VBPosterior

if TYPE_CHECKING:
    from tqdm.auto import tqdm

__all__ = [
    "AscentProblem",
    "AscentRun",
    "fit_ascent",
    "best_of_restarts",
    "restart_seeds",
    "progress_bar",
    "scale_offsets",
    "scale_prior",
    "scale_posterior",
]

S = TypeVar("S")
F = TypeVar("F")


class AscentProblem(Protocol[S]):
    """The maths of one closed-form ascent (see the module docstring).

    ``n`` is the number of rows, or Σ_i w_i for weighted data (the stopping rule divides changes
    by it), and ``name`` the objective's name in messages and the progress bar."""

    @property
    def n(self) -> float: ...

    @property
    def name(self) -> str: ...

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

    def trace_fields(self, dtype: torch.dtype, elbo_offset: float = 0.0, ll_offset: float = 0.0) -> dict:
        """``elbo``, ``log_likelihood`` (when traced) and ``times`` as the result types store them,
        the offsets (a fit run in scaled coordinates: :func:`scale_offsets`) added in float64."""
        elbo = self.elbo + elbo_offset if elbo_offset else self.elbo
        out = {"elbo": elbo.to(dtype), "times": self.times}
        if self.log_likelihood is not None:
            ll = self.log_likelihood + ll_offset if ll_offset else self.log_likelihood
            out["log_likelihood"] = ll.to(dtype)
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


#: Inside :func:`best_of_restarts`: the ConvergenceWarning messages of the current restart are
#: collected here (not shown), and only the returned fit's is shown. A context variable, so
#: fits in other threads are not affected.
_DEFERRED: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("_DEFERRED", default=None)

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _warn_convergence(message: str) -> None:
    """Defer the message (inside :func:`best_of_restarts`) or show it as a ConvergenceWarning at
    the first frame outside the package (the user's call)."""
    deferred = _DEFERRED.get()
    if deferred is not None:
        deferred.append(message)
        return
    frame, level = sys._getframe(0), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, ConvergenceWarning, stacklevel=level)


def _not_converged(desc: str, name: str, max_iter: int, tol: float, change: float) -> str:
    return (
        f"the {desc} fit stopped at max_iter = {max_iter} iterations before converging: the last change of "
        f"{name} per data point was {change:.3g}, not below tol = {tol:g}. Raise max_iter, loosen tol, "
        "or standardise the data (fit.converged is False)."
    )


def fit_ascent(
    problem: AscentProblem[S], *, max_iter: int, tol: float, progress: bool = False, desc: str = "EM"
) -> AscentRun[S]:
    """Run ``problem`` to convergence or ``max_iter`` iterations (module docstring).

    Warns (:class:`~ppl_gmm.core.errors.ConvergenceWarning`) when ``max_iter`` > 0 iterations ran
    with ``tol`` > 0 and the stopping rule was not met; inside :func:`best_of_restarts` the warning
    is deferred to the returned fit."""
    start = time.perf_counter()
    state, prev = problem.start(final=max_iter == 0)
    if not math.isfinite(prev):
        raise DivergenceError(0, problem.last_finite(state), f"{problem.name} at the initial parameters is not finite")
    values: list[torch.Tensor] = []
    lls: list[torch.Tensor | None] = []
    times: list[float] = []
    bar = progress_bar(progress, desc)
    converged, n_iter, change = False, 0, math.inf
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
    if not converged and max_iter > 0 and tol > 0:
        _warn_convergence(_not_converged(desc, problem.name, max_iter, tol, change))
    return AscentRun(
        state=state,
        elbo=torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in values]),
        log_likelihood=torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in traced]) if traced else None,
        times=torch.tensor(times, dtype=torch.float64),
        n_iter=n_iter,
        converged=converged,
    )


def restart_seeds(seed: int, n_init: int) -> list[int]:
    """The seeds of ``n_init`` restarts: ``seed`` itself, then the first ``n_init − 1`` child seeds
    of ``seed`` (:func:`~ppl_gmm.core.rng.spawn_seeds`; child j is the same whatever their number).
    So the restarts of ``n_init`` are those of ``n_init − 1`` plus one, and the first is the fit
    with ``n_init = 1``: more restarts never return a worse optimum."""
    return [seed, *spawn_seeds(seed, n_init - 1)] if n_init > 1 else [seed]


def best_of_restarts(run: Callable[[int], F], seed: int, n_init: int) -> F:
    """The best of ``run(s)`` over the seeds s of :func:`restart_seeds`; best = highest
    ``fit.elbo[-1]`` (the first on ties, so a restart must be strictly better to replace the fit of
    ``seed``). With restarts the returned fit records ``seed`` (which fixes them all) and
    ``info["restart_seed"]``, the winner's. A :class:`~ppl_gmm.core.errors.ConvergenceWarning` of
    :func:`fit_ascent` is shown once, and only if the returned fit did not converge (scikit-learn's
    rule for ``n_init``)."""
    best: Any = None
    best_messages: list[str] = []
    for s in restart_seeds(seed, n_init):
        messages: list[str] = []
        token = _DEFERRED.set(messages)
        try:
            fit: Any = run(s)
        finally:
            _DEFERRED.reset(token)
        if best is None or float(fit.elbo[-1]) > float(best.elbo[-1]):
            best, best_messages = fit, messages
    if n_init > 1:
        best = dataclasses.replace(best, seed=seed, info={**best.info, "restart_seed": best.seed})
    if best_messages:
        prefix = f"the best of {n_init} restarts did not converge: " if n_init > 1 else ""
        _warn_convergence(prefix + best_messages[-1])
    return best


# --- scaled coordinates (module docstring, "Scale") ---------------------------------------------
def scale_offsets(scale: DataScale, n: int, d: int, k: int = 0) -> tuple[float, float, float]:
    """What x → x' = x / s does to the traced objectives: (eq. 26 / eq. 18 / the VB bound, ln p(Θ), their sum).

    log N(x | μ, Σ) = log N(x' | μ', Σ') − D ln s, so eq. 26, eq. 18 and the VB bound (PRML 10.70:
    the Jacobians of p(θ) and q(θ) cancel) lose N·D·ln s. The MAP prior ln p(Θ) is a density in
    (α, μ, Λ): μ_k = s μ'_k gives −D ln s and Λ_k = Λ'_k / s² (D(D+1)/2 entries) gives
    +D(D+1) ln s per component, so ln p(Θ) = ln p'(Θ') + K D² ln s (pass ``k``; 0 otherwise)."""
    if scale.is_identity:
        return 0.0, 0.0, 0.0
    data = -n * d * scale.log_s
    prior = k * d * d * scale.log_s
    return data, prior, data + prior


def scale_prior(prior: NormalWishartPrior | None, scale: DataScale, up: bool = False) -> NormalWishartPrior | None:
    """The Dir × Normal-Wishart prior (PRML 10.39–10.40) in x' = x / s units (``up``: back from them):
    m0' = m0 / s, W0' = s² W0 (E[Λ'] = s² E[Λ]); alpha0, beta0, nu0 unchanged. Anything that is not a
    prior (None, or a wrong type for ``resolve_prior`` to name) passes through."""
    if scale.is_identity or not isinstance(prior, NormalWishartPrior):
        return prior
    e = scale.exponent if up else -scale.exponent
    m0, w0 = prior.m0 * math.ldexp(1.0, e), prior.W0 * math.ldexp(1.0, -2 * e)
    return NormalWishartPrior(alpha0=prior.alpha0, m0=m0, beta0=prior.beta0, nu0=prior.nu0, W0=w0)


def scale_posterior(post: VBPosterior, scale: DataScale, up: bool = False) -> VBPosterior:
    """q(α) q(μ, Λ) (PRML 10.57, 10.59) in x' = x / s units (``up``: back from them): m' = m / s,
    W' = s² W; alpha, beta, nu, the covariance type and the sticks (``stick_b``, ``stick_order``) unchanged."""
    if scale.is_identity:
        return post
    e = scale.exponent if up else -scale.exponent
    return dataclasses.replace(post, m=post.m * math.ldexp(1.0, e), W=post.W * math.ldexp(1.0, -2 * e))
