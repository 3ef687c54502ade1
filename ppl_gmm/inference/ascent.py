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

Scale. Every closed-form fit computes in x' = x / s, s = 2^j from ``core.validation.data_scale``
(s = 1 for data at ordinary scales: nothing changes), with reg_covar' = reg_covar / s², Θ₀' =
(α, μ / s, Σ / s²) and the prior mapped by :func:`scale_prior`; the answer is mapped back exactly
(μ = s μ', Σ = s² Σ', W = W' / s², γ unchanged) and the traces by :func:`scale_offsets`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import torch

from ..core.errors import DivergenceError
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
    "progress_bar",
    "scale_offsets",
    "scale_prior",
    "scale_posterior",
]

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
    W' = s² W; alpha, beta, nu unchanged."""
    if scale.is_identity:
        return post
    e = scale.exponent if up else -scale.exponent
    return VBPosterior(post.alpha, post.m * math.ldexp(1.0, e), post.beta, post.nu, post.W * math.ldexp(1.0, -2 * e))
