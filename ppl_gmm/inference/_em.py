"""The CAVI/EM ascent problem on the fused engine (``_engine``): :class:`CAVIProblem`.

Shared by ``fit_cavi`` (inference/cavi.py) and by fits with the same E-step (eq. 20) and another
M-step, such as MAP-EM (inference/map.py), which subclass it (see its docstring for the hooks).
It lives outside the estimators' modules, which take no helpers from each other
(tests/test_architecture.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.params import GMMParams
from ..core.sources import Source
from ..core.validation import UNSCALED, DataScale
from ._engine import Engine, Stats, Theta, elbo_from_stats, m_step_from_stats

__all__ = ["CAVIProblem"]

_F64 = torch.float64


@dataclass
class _State:
    theta: Theta
    stats: Stats | None  # statistics of the last pass (None after the closing pass)
    lse: torch.Tensor  # Σ_i w_i lse_i of the last pass: eq. 26 at theta


class CAVIProblem:
    """CAVI/EM as an ``ascent.AscentProblem`` on the fused kernel (see ``_engine``).

    Composable: a fit with the same E-step (eq. 20) and another M-step — MAP-EM, whose M-step
    needs only N_k, x̄_k and the scatter S_k — subclasses this and overrides :meth:`update` (Θ'
    from one pass's statistics, as ``_engine.m_step_from_stats`` returns it) and
    :meth:`objective` (the traced objective at (γ of that pass, Θ')); the passes, the data
    sources, the weights, the worker threads and Dask come with the engine unchanged.
    """

    name = "eq. 18"

    def __init__(
        self,
        x: torch.Tensor | Source,
        params0: GMMParams,
        covariance_type: str,
        reg_covar: float,
        block: int | None = None,
        scale: DataScale = UNSCALED,
        *,
        threads: int = 1,
    ) -> None:
        """``params0`` and ``reg_covar`` in the coordinates x' = x / s of ``scale``. A tensor ``x``
        (N, D) is in x' units already; a ``Source`` is in the data's units (the engine scales what
        it reads). ``params`` and ``last_finite`` map Θ back to x's units. ``threads``: worker
        threads of the passes (``_passes``)."""
        self.scale = scale
        self.k = params0.k
        self.covariance_type, self.reg_covar = covariance_type, reg_covar
        inv_s = 1.0 if isinstance(x, torch.Tensor) else 1.0 / scale.s
        xm = x if isinstance(x, torch.Tensor) else x.tensor()
        self.n: float = x.shape[0] if isinstance(x, torch.Tensor) else x.total_weight  # N, or Σ_i w_i
        if xm is not None:  # the exact shift applied (representable in dtype); (x / s)‾ = x̄ / s exactly
            shift = (xm.mean(0, dtype=_F64) * inv_s).to(xm.dtype)
        else:
            assert isinstance(x, Source)
            shift = (x.summary.mean * inv_s).to(x.dtype)  # the weighted x̄ of the validation pass
        self.engine = Engine(x, shift, self.k, block, threads=threads, inv_scale=inv_s)
        self.dtype = self.engine.dtype
        self.shift = shift.to(_F64).cpu()
        d, xt = self.engine.d, self.engine.xt
        if xt is not None:  # root mean square of x̃ per column
            self.data_scale = (torch.linalg.vector_norm(xt[:d], dim=1, dtype=_F64) / math.sqrt(self.engine.n)).cpu()
        else:  # the largest |x_id − x̄_d| per column, from the validation pass's column min/max
            assert isinstance(x, Source)
            mean, lo, hi = x.summary.mean, x.summary.lo.to(_F64).cpu(), x.summary.hi.to(_F64).cpu()
            self.data_scale = torch.maximum(hi - mean, mean - lo) * inv_s
        self.params0 = params0
        self.gamma: torch.Tensor | None = None  # γ (N, K), written by the closing pass (in memory only)
        if xt is not None:
            self.gamma = torch.empty(self.engine.n, self.k, dtype=self.dtype, device=self.engine.device)

    def _pass(self, theta: Theta, final: bool) -> tuple[_State, torch.Tensor]:
        stats = self.engine.run_pass(theta, stats=not final, gamma_out=self.gamma if final else None)
        return _State(theta, None if final else stats, stats.lse), stats.lse  # Σ_i w_i lse_i = eq. 26 at Θ

    def start(self, final: bool) -> tuple[_State, float]:
        p = self.params0
        theta = Theta(p.alpha.to(_F64), p.mu.to(_F64) - self.shift, p.cov.to(_F64), self.data_scale, self.dtype)
        state, lse = self._pass(theta, final)
        return state, float(lse)  # eq. 26 at Θ₀ = eq. 18 right after the first E-step

    def update(self, st: Stats, th: Theta) -> tuple[Theta, torch.Tensor]:
        """The M-step hook: Θ' from the statistics ``st`` of the pass at ``th`` (eq. 21 / 28), and
        the scatter S_k = Σ_i w_i γ_ik (x̃_i − μ_k')ᵀ(x̃_i − μ_k') (centred coordinates, float64)."""
        alpha, mu, cov, scatter, moment = m_step_from_stats(st, th, self.covariance_type, self.reg_covar, self.dtype)
        return Theta(alpha, mu, cov, self.data_scale, self.dtype, scale=moment), scatter

    def objective(self, st: Stats, scatter: torch.Tensor, th: Theta, new: Theta) -> torch.Tensor:
        """The objective hook: eq. 18 at (γ of the pass at ``th``, Θ' = ``new``)."""
        return elbo_from_stats(st, scatter, th, new)

    def m_step(self, state: _State) -> tuple[_State, torch.Tensor]:
        st, th = state.stats, state.theta
        assert st is not None, "m_step after the closing E-step"
        new, scatter = self.update(st, th)  # eq. 21 / 28
        return _State(new, st, state.lse), self.objective(st, scatter, th, new)  # eq. 18 at (γ_{t−1}, Θ_t)

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
