"""Closed-form CAVI = EM for the GMM (eq. 16–21, 28): ``fit_cavi``.

One iteration is the E-step (eq. 20: γ = the CAVI optimum eq. 17, which is the posterior eq. 27)
followed by the M-step (eq. 21 / 28: Θ maximising eq. 18 for fixed γ), exactly as scikit-learn's
``GaussianMixture`` iterates. Each iteration can only raise eq. 18 (coordinate ascent), and because
the E-step closes the KL gap, it can only raise eq. 26 too (eq. 22–25).

The loop is ``ascent.fit_ascent``; the maths of each step is the fused kernel ``_engine`` (one
pass over the data per iteration, in centred coordinates), whose closing pass writes γ. The fit
runs in x' = x / s (``core.validation.data_scale``; s = 1 at ordinary scales) with reg_covar / s²,
and returns μ = s μ', Σ = s² Σ' and traces with −N·D·ln s added (``ascent``, "Scale"). So
``fit.gamma`` equals ``e_step(x, fit.params)`` and ``fit.elbo[-1]`` equals
``log_likelihood(x, fit.params)`` to round-off (1e-12 relative in float64; tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.init import initial_params
from ..core.params import GMMParams
from ..core.rng import resolve_seed
from ..core.validation import (
    UNSCALED,
    ArrayLike,
    DataScale,
    check_bool,
    check_covariance_type,
    check_fit_args,
    check_int,
    check_positive,
    data_scale,
)
from ..results.gmm_fit import GMMFit
from ._engine import Engine, Stats, Theta, elbo_from_stats, m_step_from_stats
from .ascent import best_of_restarts, fit_ascent, scale_offsets

__all__ = ["fit_cavi", "CAVIProblem"]

_F64 = torch.float64


@dataclass
class _State:
    theta: Theta
    stats: Stats | None  # statistics of the last pass (None after the closing pass)
    lse: torch.Tensor  # Σ_i lse_i of the last pass: eq. 26 at theta


class CAVIProblem:
    """CAVI/EM as an ``ascent.AscentProblem`` on the fused kernel (see ``_engine``)."""

    name = "eq. 18"

    def __init__(
        self,
        x: torch.Tensor,
        params0: GMMParams,
        covariance_type: str,
        reg_covar: float,
        block: int | None = None,
        scale: DataScale = UNSCALED,
    ) -> None:
        """``x``, ``params0`` and ``reg_covar`` in the coordinates x' = x / s of ``scale``;
        ``params`` and ``last_finite`` map Θ back to x's units."""
        self.n, d = x.shape
        self.scale = scale
        self.k = params0.k
        self.dtype = x.dtype
        self.covariance_type, self.reg_covar = covariance_type, reg_covar
        shift = x.mean(0, dtype=_F64).to(x.dtype)  # the exact shift applied (representable in dtype)
        self.engine = Engine(x, shift, self.k, block)
        self.shift = shift.to(_F64)
        self.data_scale = torch.linalg.vector_norm(self.engine.xt[:d], dim=1, dtype=_F64) / math.sqrt(self.n)
        self.params0 = params0
        self.gamma = torch.empty(self.n, self.k, dtype=x.dtype)

    def _pass(self, theta: Theta, final: bool) -> tuple[_State, torch.Tensor]:
        stats = self.engine.run_pass(theta, stats=not final, gamma_out=self.gamma if final else None)
        return _State(theta, None if final else stats, stats.lse), stats.lse  # Σ_i lse_i = eq. 26 at Θ

    def start(self, final: bool) -> tuple[_State, float]:
        p = self.params0
        theta = Theta(p.alpha.to(_F64), p.mu.to(_F64) - self.shift, p.cov.to(_F64), self.data_scale, self.dtype)
        state, lse = self._pass(theta, final)
        return state, float(lse)  # eq. 26 at Θ₀ = eq. 18 right after the first E-step

    def m_step(self, state: _State) -> tuple[_State, torch.Tensor]:
        st, th = state.stats, state.theta
        assert st is not None, "m_step after the closing E-step"
        alpha, mu, cov, scatter, moment = m_step_from_stats(st, th, self.covariance_type, self.reg_covar, self.dtype)
        new = Theta(alpha, mu, cov, self.data_scale, self.dtype, scale=moment)  # eq. 21 / 28
        return _State(new, st, state.lse), elbo_from_stats(st, scatter, th, new)  # eq. 18 at (γ_{t−1}, Θ_t)

    def e_step(self, state: _State, final: bool) -> tuple[_State, torch.Tensor]:
        return self._pass(state.theta, final)  # eq. 20 at Θ_t; Σ lse = eq. 26 at Θ_t

    def finish(self, state: _State) -> tuple[torch.Tensor, torch.Tensor]:
        return state.lse, state.lse  # after the closing E-step eq. 18 = eq. 26 (KL gap 0)

    def params(self, state: _State) -> GMMParams:
        th = state.theta
        params = GMMParams(th.alpha.to(self.dtype), (th.mu + self.shift).to(self.dtype), th.cov.to(self.dtype))
        return self.scale.params_up(params)

    def last_finite(self, state: _State) -> dict:
        th = state.theta
        s = self.scale.s
        return {"alpha": th.alpha, "mu": (th.mu + self.shift) * s, "cov": th.cov * (s * s)}


def _run(x, k, init, seed, covariance_type, max_iter, tol, reg_covar, progress, scale) -> GMMFit:
    """One fit on x' = x / s (``x`` already scaled; ``reg_covar`` and ``init`` in x's units)."""
    reg = scale.reg_down(reg_covar)
    init = scale.params_down(init) if isinstance(init, GMMParams) else init
    params0 = initial_params(x, k, init, seed, covariance_type, reg)
    problem = CAVIProblem(x, params0, covariance_type, reg, scale=scale)
    run = fit_ascent(problem, max_iter=max_iter, tol=tol, progress=progress, desc="CAVI")
    offset = scale_offsets(scale, x.shape[0], x.shape[1])[0]  # eq. 18 and eq. 26 lose N·D·ln s in x'
    return GMMFit(
        params=problem.params(run.state),
        gamma=problem.gamma,
        **run.trace_fields(x.dtype, offset, offset),
        method="cavi",
        n_iter=run.n_iter,
        converged=run.converged,
        seed=seed,
        covariance_type=covariance_type,
        reg_covar=reg_covar,
    )


def fit_cavi(
    x: ArrayLike,
    k: int,
    *,
    init: str | GMMParams = "kmeans++",
    covariance_type: str = "full",
    max_iter: int = 1000,
    tol: float = 1e-8,
    reg_covar: float = 1e-6,
    n_init: int = 1,
    seed: int | None = None,
    progress: bool = False,
    dtype: torch.dtype | None = None,
) -> GMMFit:
    """Fit a K-component GMM by closed-form CAVI/EM (eq. 20 then eq. 21/28, repeated).

    Parameters
    ----------
    x : array_like, shape (N,) or (N, D)
        Data (numpy, torch, or anything ``np.asarray`` takes).
    k : int
        Number of components, 1 <= k <= N.
    init : {"kmeans++", "random"} or GMMParams
        "kmeans++": seeded k-means++ centres, then one M-step from the hard assignments;
        "random": Dirichlet responsibilities, then one M-step; or Θ₀ itself.
    covariance_type : {"full", "diag", "spherical", "tied"}
    max_iter, tol : int, float
        At most ``max_iter`` iterations; stop when |ΔELBO| / N < ``tol`` (``tol=0``: exactly
        ``max_iter``). The first change is measured from eq. 26 at Θ₀. In float32 the round-off
        of the E-step is ~1e-7 per point: use tol >= 1e-6 there.
    reg_covar : float
        Added to the diagonal of every covariance (scikit-learn's convention).
    n_init : int
        Restarts; their seeds are drawn deterministically from ``seed`` and the fit with the best
        final ELBO is returned.
    seed : int or None
        None draws one from OS entropy; it is recorded on the fit.
    progress : bool
        Show a progress bar (iteration and convergence measure).
    dtype : torch.float64 (default) or torch.float32
        float32 data give a float32 fit.

    Returns
    -------
    GMMFit
        Trace entry t (t = 1..n_iter) holds eq. 18 at (γ_{t−1}, Θ_t) and eq. 26 at Θ_t; the last
        entry follows the closing E-step (γ = e_step(x, Θ)), where eq. 18 equals eq. 26, so
        ``len(fit.elbo) == fit.n_iter + 1``.

    Raises
    ------
    ValueError, TypeError
        Bad input, before any work; also data whose covariances float64 cannot hold (a largest
        half-range of a column beyond 2^510 or below 2^-500: ``core.validation.data_scale``).
    EmptyComponentError, DegenerateComponentError
        During the fit, naming the component that emptied or collapsed, with remedies.
    """
    x, k, init = check_fit_args(x, k, init, dtype)
    progress = check_bool(progress, "progress")
    check_covariance_type(covariance_type)
    max_iter = check_int(max_iter, "max_iter", 0)
    n_init = check_int(n_init, "n_init", 1)
    tol = check_positive(tol, "tol", allow_zero=True)
    reg_covar = check_positive(reg_covar, "reg_covar", allow_zero=True)
    scale = data_scale(x, reg_covar)  # refuses data whose covariances float64 cannot hold
    seed = resolve_seed(seed)
    xs = scale.down(x)  # the fit runs in x' = x / s (s = 1 at ordinary scales)
    return best_of_restarts(
        lambda s: _run(xs, k, init, s, covariance_type, max_iter, tol, reg_covar, progress, scale), seed, n_init
    )
