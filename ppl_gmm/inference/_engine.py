"""The fused CAVI/EM kernel behind ``fit_cavi``: one pass over the data per iteration.

It must agree with ``core``: the pass is ``core.gmm.e_step`` (eq. 20, through
``core.gaussian.normalise_log``) and ``core.gmm.log_likelihood`` (eq. 26) at Θ, the update is
``core.gmm.m_step`` (eq. 21 / 28) and the objective ``core.gmm.elbo`` (eq. 18), evaluated as
``core.gmm.expected_log_joint_from_stats`` + the entropy below. ``tests/inference/test_engine.py``
checks each against those functions. The loop around it is ``inference.ascent.fit_ascent``
(driven by ``inference.cavi``).

Centring.  The data are centred once, x̃ = x − x̄ (x̄ the column means); the fit runs in
centred coordinates and μ is shifted back at the end (eq. 18, 20, 21, 26 are
translation-equivariant), so data offset by 1e6 lose no digits.

One pass at Θ = (α, μ, Σ), block by block of rows (no (N, K, D) array is formed):

- whitened residuals  y_ik = (x̃_i − μ_k) U_k  with Σ_k⁻¹ = U_k U_kᵀ (one GEMM, as scikit-learn)
- log weights         ℓ_ik = c_k − ½ ‖y_ik‖²,  c_k = log α_k + Σ_d log U_k,dd − ½ D log 2π
                      (the bracket of eq. 15)
- E-step              γ_ik = exp(ℓ_ik − lse_i),  lse_i = log Σ_k exp ℓ_ik               (eq. 20)
                      (γ_ik is set to exactly 0 where ℓ_ik − max_k ℓ_ik < log(tiny): such
                      values are below the smallest normal number, ~1e-308)
- accumulated         Σ_i lse_i = eq. 26 at Θ,  N_k = Σ_i γ_ik,  A_k = Σ_i γ_ik ‖y_ik‖²
  and the moments of the M-step, either *shifted* (around c_k = the current μ_k:
  t_k = Σ_i γ_ik y_ik, G_k = Σ_i γ_ik y_ikᵀ y_ik — two-pass quality) or *raw*
  (M1_k = Σ_i γ_ik x̃_i, M2_k = Σ_i γ_ik x̃_iᵀ x̃_i by one GEMM; used only for components
  whose offset f_k = μ_kᵀ Σ_k⁻¹ μ_k ≤ ``RAW_OFFSET_LIMIT``, so at most ~3 digits are lost
  to cancellation; the others get the shifted moments).

From these statistics alone:

- M-step (eq. 21/28): α_k = N_k/N; shifted: μ_k' = c_k + (t_k/N_k) U_k⁻¹ and
  S_k = U_k⁻ᵀ (G_k − t_kᵀ t_k / N_k) U_k⁻¹ = Σ_i γ_ik (x̃_i − μ_k')ᵀ(x̃_i − μ_k');
  raw: μ_k' = M1_k/N_k, S_k = M2_k − M1_kᵀ M1_k / N_k.  Then Σ_k' = S_k/N_k (+ reg_covar·I),
  or its diagonal / mean variance / the pooled Σ_k S_k / N.
- eq. 18 at (γ, Θ'):  Σ_k [N_k log α_k' − ½ N_k log|2πΣ_k'| − ½ tr(Σ_k'⁻¹ S_k)] + H(γ), with the
  entropy H(γ) = −Σ_ik γ_ik (ℓ_ik − lse_i) = Σ_i lse_i − Σ_k (N_k c_k − ½ A_k)  (Θ of the pass).

eq. 26 at Θ' is the Σ lse of the *next* pass, so each iteration costs one pass; the
closing E-step is one more, and it writes γ (N, K) instead of accumulating statistics.

Weights (frequencies, issue 10): with w_i every statistic above becomes Σ_i w_i (…) — Σ_i w_i lse_i,
N_k = Σ_i w_i γ_ik, A_k, t_k, G_k and the raw moments with w_i γ_ik — and so do the M-step and
eq. 18 (the entropy is Σ_i w_i H(γ_i)); γ itself is unweighted. A zero weight removes the row.

Sources and tasks: every statistic is a sum over rows, so a pass is split into *tasks* of
``TASK_BLOCKS`` blocks (a fixed split of the rows), run by the package's worker threads
(``_passes.map_in_order``) and added in task order (``Stats.add_``); for a Dask array, one task per
chunk, run where the chunk lives (``_passes.dask_map_in_order``). In memory, the first task is the
plain sequential loop, so fits of N ≤ TASK_BLOCKS · block rows are bit-identical to it; larger
ones differ from it by round-off only, and are the same bits for every thread count. Blocks read
from a source are scaled, centred and transposed into the worker's own buffer. Every buffer
follows the data's device and dtype; the statistics are moved to the CPU (O(K·D²) numbers) for
the M-step.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..core.errors import DegenerateComponentError
from ..core.gmm import check_nonempty, expected_log_joint_from_stats
from ..core.linalg import checked_cholesky, precision_cholesky
from ..core.threads import limited_threads
from ._passes import dask_map_in_order, map_in_order

if TYPE_CHECKING:
    from ..core.sources import Source

__all__ = ["Engine", "Theta", "Stats", "m_step_from_stats", "elbo_from_stats", "RAW_OFFSET_LIMIT", "SHIFTED_MAX_D"]

RAW_OFFSET_LIMIT = 1e3  # components with μ_kᵀ Σ_k⁻¹ μ_k above this get shifted moments
SHIFTED_MAX_D = 4  # up to this D every component uses shifted moments (cheap there)
_BLOCK_ELEMENTS = 1 << 17  # target size of the (K·D, rows) residual block (1 MiB in float64)
TASK_BLOCKS = 16  # blocks per task of the worker pool: the fixed split of the rows (``Engine``)
_F64 = torch.float64


def _collapse_tolerance(dtype) -> float:
    """Relative size below which a conditional variance counts as round-off (collapsed)."""
    return 32 * torch.finfo(dtype).eps if dtype == _F64 else 8 * torch.finfo(dtype).eps


def block_rows(n: int, k: int, d: int) -> int:
    """Rows per block: 8192 at D = 2 and 4096 at D = 10 measured best (K = 8); large K·D or
    D(D+1)/2 shrink it so that no buffer exceeds ~16 MiB."""
    rows = max(4096, min(8192, _BLOCK_ELEMENTS // (k * d)))
    cap = max(256, (1 << 21) // max(k * d, d * (d + 1) // 2))
    return min(n, rows, cap)


# --------------------------------------------------------------------------------------------
# Θ in the engine's coordinates
# --------------------------------------------------------------------------------------------
class Theta:
    """Θ in centred coordinates (float64) and what the E-step needs, in the work dtype.

    ``scale`` (K, D): the size of the second moments the covariances were computed from,
    which sets their round-off level (see :func:`_cholesky`); default diag(Σ_k).
    """

    def __init__(
        self,
        alpha: torch.Tensor,
        mu: torch.Tensor,
        cov: torch.Tensor,
        data_scale: torch.Tensor,
        dtype: torch.dtype,
        scale: torch.Tensor | None = None,
    ) -> None:
        self.alpha, self.mu, self.cov = alpha, mu, cov
        k, d = mu.shape
        self.chol = _cholesky(cov, mu, scale, data_scale, dtype)  # Σ_k = L_k L_kᵀ
        self.prec_chol = precision_cholesky(chol=self.chol)  # U_k
        self.half_logdet_prec = torch.log(torch.diagonal(self.prec_chol, dim1=-2, dim2=-1)).sum(-1)  # −½ log|Σ_k|
        # ℓ_ik = const_k − ½ ‖x̃_i U_k − μ_k U_k‖²  (eq. 15 bracket, D-dim)
        self.const = torch.log(alpha) + self.half_logdet_prec - 0.5 * d * math.log(2 * math.pi)
        offset = torch.einsum("kd,kde->ke", mu, self.prec_chol)  # μ_k U_k
        self.offset2 = (offset * offset).sum(-1)  # f_k = μ_kᵀ Σ_k⁻¹ μ_k
        # [U_kᵀ | −U_kᵀ μ_k] stacked over k: rows (k, d), columns (features, 1)
        w_aug = torch.cat([self.prec_chol.transpose(-1, -2), -offset[:, :, None]], dim=2)
        self.w_aug = w_aug.reshape(k * d, d + 1).to(dtype).contiguous()
        self.const_w = self.const.reshape(k, 1).to(dtype)


@functools.lru_cache(maxsize=8)
def _eye(d):
    return torch.eye(d, dtype=_F64)


def _cholesky(cov, mu, scale, data_scale, dtype):
    """Cholesky factors, or a DegenerateComponentError naming the collapsed component.

    Component k has collapsed when Σ_k is not positive definite, or when a conditional
    variance L_k,dd² is at round-off level: at most ``_collapse_tolerance`` times ``scale``
    (the second moment Σ_k was computed from: Σ_k,dd plus the squared distance of the new μ_k
    from the reference point of the moments, plus reg_covar; a point mass leaves only
    round-off of that size), or below the resolution of the data values there,
    (16 ε (|μ_k,d| + data_scale_d))².  A ``reg_covar`` above these levels keeps every
    component regular (scikit-learn's recovery).
    """
    chol, bad = checked_cholesky(cov)
    if bad is not None:
        raise DegenerateComponentError(bad, "its Cholesky factorisation failed")
    cond_var = torch.diagonal(chol, dim1=-2, dim2=-1) ** 2  # conditional variances L_k,dd²
    if scale is None:
        scale = torch.diagonal(cov, dim1=-2, dim2=-1)
    eps = torch.finfo(dtype).eps
    floor = (16 * eps * (mu.abs() + data_scale)) ** 2
    tiny = (cond_var <= _collapse_tolerance(dtype) * scale) | (cond_var <= floor)
    if bool(tiny.any()):
        j, f = (int(v) for v in torch.nonzero(tiny)[0])
        raise DegenerateComponentError(
            j,
            f"its variance along feature {f} fell to {float(cond_var[j, f]):.3g}, the round-off level of "
            f"the moments ({float(scale[j, f]):.3g}) it was computed from",
        )
    return chol


# --------------------------------------------------------------------------------------------
# One fused pass: E-step at Θ and the sufficient statistics of the M-step
# --------------------------------------------------------------------------------------------
class _Workspace:
    """Per-block buffers as views into flat storage sized for the largest block, so a
    shorter last block reuses the same memory (each view is contiguous)."""

    def __init__(self, store: dict[str, torch.Tensor], n: int, k: int, d: int) -> None:
        def view(name: str, *shape: int) -> torch.Tensor:
            return store[name][: math.prod(shape)].view(*shape)

        self.y = view("y", k * d, n)  # whitened residuals, row k·D + d
        self.y3 = self.y.view(k, d, n)
        self.y_rows = [self.y3[:, j] for j in range(d)]  # (K, rows) views, one per feature
        if "yw" in store:
            self.yw3 = view("yw", k * d, n).view(k, d, n)  # γ-weighted residuals (shifted moments)
        self.logw = view("logw", k, n)  # ℓ, then γ (K, rows)
        self.q = view("q", k, n)  # ‖y_ik‖²
        self.m = view("m", n)
        self.s = view("s", n)
        if "xt" in store:
            self.xt = view("xt", d + 1, n)  # a block read from a chunked source: [x̃ᵀ ; 1]
        if "feat" in store:
            self.feat = view("feat", d + d * (d + 1) // 2, n)  # [x̃_j ; x̃_j x̃_e (j ≤ e)], raw moments
            bounds = [d]
            for j in range(d):
                bounds.append(bounds[-1] + d - j)
            self.feat_x = self.feat[:d]
            self.feat_rows = [self.feat[bounds[j] : bounds[j + 1]] for j in range(d)]


class _Buffers:
    """One worker's buffers (flat storage and the block-size views into it)."""

    def __init__(self, store: dict[str, torch.Tensor], k: int, d: int) -> None:
        self.store, self.k, self.d = store, k, d
        self._ws: dict[int, _Workspace] = {}

    def __call__(self, n: int) -> _Workspace:
        ws = self._ws.get(n)
        if ws is None:
            ws = self._ws[n] = _Workspace(self.store, n, self.k, self.d)
        return ws


class Stats:
    """Accumulated (float64) statistics of one pass; with weights every term is Σ_i w_i (…)."""

    def __init__(self, k: int, d: int, raw: bool, device: torch.device | None = None) -> None:
        z = functools.partial(torch.zeros, dtype=_F64, device=device)
        self.lse = z(())  # Σ_i w_i lse_i = eq. 26
        self.n_k = z(k)  # N_k = Σ_i w_i γ_ik
        self.a_k = z(k)  # Σ_i w_i γ_ik ‖y_ik‖²
        self.t = z(k, d)  # shifted: Σ_i w_i γ_ik y_ik
        self.g = z(k, d, d)  # shifted: Σ_i w_i γ_ik y_ikᵀ y_ik
        # raw: [Σ_i w_i γ_ik x̃_i | Σ_i w_i γ_ik x̃_id x̃_ie (d ≤ e)]
        self.raw = z(k, d + d * (d + 1) // 2) if raw else None
        self.shifted: torch.Tensor | None = None  # LongTensor of the components with shifted moments

    def add_(self, other: Stats) -> Stats:
        """Add the statistics of the next rows (the sums are additive over rows)."""
        for name in ("lse", "n_k", "a_k", "t", "g", "raw"):
            mine = getattr(self, name)
            if mine is not None:
                mine += getattr(other, name).to(mine.device)
        return self

    def cpu(self) -> Stats:
        """The statistics on the CPU, where the M-step runs (O(K·D²) numbers)."""
        for name in ("lse", "n_k", "a_k", "t", "g", "raw"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.cpu())
        return self


def _acc(acc, value):
    acc += value if value.dtype == _F64 else value.to(_F64)


class _Plan:
    """What every block of one pass needs of Θ (small and picklable: Dask ships it to its workers)."""

    def __init__(self, th: Theta, kernel: _Kernel, stats: bool) -> None:
        k = kernel.k
        if not stats:
            shifted = []
        elif kernel.raw_mode:  # shifted moments only where raw ones would lose > 3 digits
            shifted = torch.nonzero(th.offset2 > RAW_OFFSET_LIMIT).flatten().tolist()
        else:
            shifted = list(range(k))
        self.stats, self.shifted = stats, shifted
        self.batched = stats and not kernel.raw_mode  # every component shifted, in one batched product
        self.raw = stats and len(shifted) < k
        self.w_aug = th.w_aug.to(kernel.device)
        self.const_w = th.const_w.to(kernel.device)

    def new_stats(self, kernel: _Kernel) -> Stats:
        st = Stats(kernel.k, kernel.d, raw=self.raw, device=kernel.device)
        st.shifted = torch.tensor(self.shifted, dtype=torch.long)
        return st


class _Kernel:
    """The fused E-step and statistics of one block of rows (module docstring), and the sizes
    of its buffers. Picklable, so that Dask workers run the same code on their chunks."""

    def __init__(self, k: int, d: int, dtype: torch.dtype, device: torch.device, block: int) -> None:
        self.k, self.d, self.dtype, self.device, self.block = k, d, dtype, device, block
        self.raw_mode = d > SHIFTED_MAX_D
        self.floor = float(math.ceil(math.log(torch.finfo(dtype).tiny)))  # exp stays normal above this
        self.floor_exp = float(torch.exp(torch.tensor(self.floor, dtype=dtype))) * (1 + 1e-6)

    def buffers(self, chunked: bool) -> _Buffers:
        """A worker's buffers; ``chunked``: also one for the centred block read from a source."""
        k, d, b = self.k, self.d, self.block
        sizes = {"y": k * d * b, "logw": k * b, "q": k * b, "m": b, "s": b}
        if self.raw_mode:
            sizes["feat"] = (d + d * (d + 1) // 2) * b
        else:
            sizes["yw"] = k * d * b
        if chunked:
            sizes["xt"] = (d + 1) * b
        store = {name: torch.empty(size, dtype=self.dtype, device=self.device) for name, size in sizes.items()}
        return _Buffers(store, k, d)

    def centre(self, x: torch.Tensor, shift: torch.Tensor, inv_scale: float, ws: _Workspace) -> torch.Tensor:
        """[x̃ᵀ ; 1] (D + 1, rows) of a block read from a source, x̃ = x / s − x̄ (as the in-memory copy)."""
        x = x.to(device=self.device, dtype=self.dtype)
        if inv_scale != 1.0:
            x = x * inv_scale  # x' = x / s (exact: s is a power of 2)
        torch.sub(x.T, shift[:, None], out=ws.xt[: self.d])  # x̃ = x' − x̄
        ws.xt[self.d] = 1.0
        return ws.xt

    def run(
        self,
        plan: _Plan,
        xb: torch.Tensor,
        wb: torch.Tensor | None,
        w: _Workspace,
        st: Stats,
        gamma_out: torch.Tensor | None = None,
    ) -> None:
        """Add the statistics of the block ``xb`` = [x̃ᵀ ; 1] (D + 1, rows) with weights ``wb`` to ``st``."""
        d = self.d
        y3, q, lw, rows = w.y3, w.q, w.logw, w.y_rows
        torch.mm(plan.w_aug, xb, out=w.y)  # y_ik = x̃_i U_k − μ_k U_k
        torch.mul(rows[0], rows[0], out=q)
        for j in range(1, d):
            q.addcmul_(rows[j], rows[j])  # ‖y_ik‖²
        torch.add(plan.const_w, q, alpha=-0.5, out=lw)  # ℓ_ik = log α_k + log N(x_i | μ_k, Σ_k)
        torch.amax(lw, 0, out=w.m)
        # γ_ik = exp(ℓ_ik − max_j ℓ_ij) / Σ_k (…)   (eq. 20).  Exponents below log(tiny) would give
        # subnormals (slow, and < 1e-307 anyway): they are clamped, then set to exactly 0.
        lw.sub_(w.m).clamp_(min=self.floor).exp_()
        torch.nn.functional.threshold_(lw, self.floor_exp, 0.0)  # type: ignore[attr-defined]
        torch.sum(lw, 0, out=w.s)
        lw.mul_(w.s.reciprocal_())
        if wb is None:
            st.lse += w.m.sum(dtype=_F64) - w.s.log_().sum(dtype=_F64)  # Σ_i lse_i, eq. 26
        else:
            torch.sub(w.m, w.s.log_(), out=w.m)  # lse_i = max_k ℓ_ik + log Σ_k exp(ℓ_ik − max)
            st.lse += torch.dot(w.m.to(_F64), wb)  # Σ_i w_i lse_i, eq. 26 with frequency weights
        if gamma_out is not None:
            gamma_out.copy_(lw.T)
        if not plan.stats:
            return
        if wb is not None:
            lw.mul_(wb if wb.dtype == self.dtype else wb.to(self.dtype))  # w_i γ_ik: every sum below weighted
        st.n_k += lw.sum(1, dtype=_F64)  # N_k
        if plan.batched:
            torch.mul(y3, lw.unsqueeze(1), out=w.yw3)
            st.t += w.yw3.sum(2, dtype=_F64)
            if self.dtype == _F64:
                st.g.baddbmm_(w.yw3, y3.transpose(1, 2))
            else:
                _acc(st.g, torch.bmm(w.yw3, y3.transpose(1, 2)))
            return
        for j in plan.shifted:
            ywj = torch.mul(y3[j], lw[j])
            st.t[j] += ywj.sum(1, dtype=_F64)
            _acc(st.g[j], ywj @ y3[j].T)
        if st.raw is not None:
            w.feat_x.copy_(xb[:d])
            for j in range(d):
                torch.mul(xb[j : j + 1], xb[j:d], out=w.feat_rows[j])  # x̃_j x̃_e, e ≥ j
            if self.dtype == _F64:
                st.raw.addmm_(lw, w.feat.T)
            else:
                _acc(st.raw, lw @ w.feat.T)
        q.mul_(lw)
        st.a_k += q.sum(1, dtype=_F64)  # Σ_i w_i γ_ik ‖y_ik‖²


def _dask_chunk(shared: tuple, x: Any, w: Any) -> Stats:
    """The statistics of one Dask chunk (rows × D, and its weights or None), computed where it lives:
    its blocks through the same kernel, on one torch thread, returned on the CPU."""
    kernel, plan, shift, inv_scale = shared
    with limited_threads():
        xc = torch.as_tensor(np.asarray(x)).to(device=kernel.device, dtype=kernel.dtype)
        wc = None if w is None else torch.as_tensor(np.asarray(w), dtype=_F64).to(kernel.device)
        bufs = kernel.buffers(chunked=True)
        st = plan.new_stats(kernel)
        for a in range(0, xc.shape[0], kernel.block):
            xb = xc[a : a + kernel.block]
            ws = bufs(xb.shape[0])
            kernel.run(
                plan, kernel.centre(xb, shift, inv_scale, ws), None if wc is None else wc[a : a + xb.shape[0]], ws, st
            )
        return st.cpu()


class Engine:
    """The data of a fit and its passes (one pass = E-step at Θ + statistics, module docstring).

    ``data`` is a tensor (N, D) or a ``core.sources.Source``:

    - in memory (a tensor, or kind "memory"): x̃ᵀ = (x / s − x̄)ᵀ augmented with a row of ones,
      (D + 1, N), is made once, so that y = [U_kᵀ | −U_kᵀμ_k] x̃_augᵀ is one GEMM per block;
    - kinds "npy" and "sliced": each block is read, scaled, centred and transposed into the
      worker's own (D + 1, rows) buffer, then the same kernel runs (peak memory O(rows·D) per worker);
    - kind "dask": each chunk's statistics are computed where the chunk lives (``_passes``).

    Rows are split into tasks of ``TASK_BLOCKS`` blocks, run by ``threads`` worker threads
    (``_passes.map_in_order``) and added in task order: the same bits for every thread count,
    and, when N fits in one task, the bits of the plain sequential loop. ``shift`` is x̄ (in
    x / s units, the work dtype); ``inv_scale`` = 1 / s is applied to the rows of a ``Source``
    (a tensor ``data`` is in x / s units already)."""

    def __init__(
        self,
        data: torch.Tensor | Source,
        shift: torch.Tensor,
        k: int,
        block: int | None = None,
        *,
        threads: int = 1,
        inv_scale: float = 1.0,
    ) -> None:
        self.source: Source | None = None if isinstance(data, torch.Tensor) else data
        x = data if isinstance(data, torch.Tensor) else data.tensor()
        self.weights = None if isinstance(data, torch.Tensor) else data.weights_tensor()
        if x is not None:
            self.n, self.d = x.shape
            self.dtype, device = x.dtype, x.device
        else:
            assert self.source is not None
            self.n, self.d, self.dtype, device = self.source.n, self.source.d, self.source.dtype, self.source.device
        self.k, self.threads = k, threads
        self.inv_scale = inv_scale
        self.shift = shift.to(device)
        self.block = block or block_rows(self.n, k, self.d)
        self.kernel = _Kernel(k, self.d, self.dtype, device, self.block)
        self.raw_mode = self.kernel.raw_mode
        self.xt: torch.Tensor | None = None
        if x is not None:
            if inv_scale != 1.0:
                x = x * inv_scale  # x' = x / s
            self.xt = torch.empty(self.d + 1, self.n, dtype=self.dtype, device=device)
            torch.sub(x.T, self.shift[:, None], out=self.xt[: self.d])  # x̃ = x − x̄ (centred once)
            self.xt[self.d] = 1.0
        task = self.block * TASK_BLOCKS
        self.tasks = [(a, min(a + task, self.n)) for a in range(0, self.n, task)]
        self._buffers: list[_Buffers] = []

    @property
    def device(self) -> torch.device:
        return self.kernel.device

    def _make_buffers(self) -> _Buffers:
        return self.kernel.buffers(chunked=self.xt is None)

    def _task(self, plan: _Plan, gamma_out: torch.Tensor | None, rows: tuple[int, int], bufs: _Buffers) -> Stats:
        """The statistics of the rows [a, b) of one task, block by block in order."""
        kernel, st = self.kernel, plan.new_stats(self.kernel)
        a, b = rows
        for start in range(a, b, self.block):
            stop = min(start + self.block, b)
            w = bufs(stop - start)
            if self.xt is not None:
                xb = self.xt[:, start:stop]  # (D + 1, rows)
                wb = None if self.weights is None else self.weights[start:stop]
            else:
                assert self.source is not None
                blk = self.source.read(start, stop)
                xb = kernel.centre(blk.x, self.shift, self.inv_scale, w)
                wb = None if blk.w is None else blk.w.to(self.device)
            kernel.run(plan, xb, wb, w, st, None if gamma_out is None else gamma_out[start:stop])
        return st

    def run_pass(self, th: Theta, stats: bool = True, gamma_out: torch.Tensor | None = None) -> Stats:
        """E-step at Θ over all rows (eq. 20), Σ lse (eq. 26) and, if ``stats``, the M-step's
        sufficient statistics (on the CPU).  ``gamma_out`` (N, K), if given, receives γ."""
        plan = _Plan(th, self.kernel, stats)
        if self.source is not None and self.source.kind == "dask":
            assert gamma_out is None, "γ of a Dask source is not materialised"
            parts = _dask_parts(self.source)
            shared = (self.kernel, plan, self.shift, self.inv_scale)
            results = dask_map_in_order(_dask_chunk, shared, parts)
        else:
            while len(self._buffers) < min(self.threads, len(self.tasks)):
                self._buffers.append(self._make_buffers())
            spare = list(self._buffers)
            results = map_in_order(functools.partial(self._task, plan, gamma_out), self.tasks, self.threads, spare.pop)
        st = results[0]
        for other in results[1:]:
            st.add_(other)  # in task order: independent of the scheduling
        if plan.batched:
            st.a_k = torch.diagonal(st.g, dim1=-2, dim2=-1).sum(-1)  # Σ_i w_i γ_ik ‖y_ik‖² = tr G_k
        return st.cpu()


def _dask_parts(source: Source) -> list[tuple[Any, Any]]:
    """(data chunk, weight chunk or None) per row chunk of a Dask source, as delayed objects."""
    x = source.dask_array
    xs = x.to_delayed().ravel()  # chunks along rows only (``as_source`` refuses column chunks)
    if source.dask_weights is None:
        return [(c, None) for c in xs]
    ws = source.dask_weights.rechunk((x.chunks[0],)).to_delayed().ravel()
    return list(zip(xs, ws))


# --------------------------------------------------------------------------------------------
# M-step and ELBO from the statistics
# --------------------------------------------------------------------------------------------
def m_step_from_stats(
    st: Stats, th: Theta, covariance_type: str, reg_covar: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(α', μ', Σ', S, m) from one pass's statistics (eq. 21 / 28), all float64, centred.

    S_k = Σ_i γ_ik (x̃_i − μ_k')ᵀ(x̃_i − μ_k'); m (K, D) is the per-feature second moment
    about the moments' reference point (+ reg_covar), which sets Σ's round-off level."""
    n_k = st.n_k
    check_nonempty(n_k, dtype)
    k, d = th.mu.shape
    alpha = n_k / n_k.sum()  # eq. 21
    mu = torch.empty(k, d, dtype=_F64)
    scatter = torch.empty(k, d, d, dtype=_F64)
    if st.raw is not None:
        m1 = st.raw[:, :d]
        m2 = torch.zeros(k, d, d, dtype=_F64)
        iu = torch.triu_indices(d, d)
        m2[:, iu[0], iu[1]] = st.raw[:, d:]
        m2[:, iu[1], iu[0]] = st.raw[:, d:]
        mu[:] = m1 / n_k[:, None]  # eq. 21: μ_k = Σ_i γ_ik x_i / N_k
        scatter[:] = m2 - m1[:, :, None] * m1[:, None, :] / n_k[:, None, None]
        moment = torch.diagonal(m2, dim1=-2, dim2=-1) / n_k[:, None]  # about the origin (the data mean)
    else:
        moment = torch.empty(k, d, dtype=_F64)
    idx = st.shifted
    if idx is not None and idx.numel():
        v = th.chol[idx].transpose(-1, -2)  # U_k⁻¹ = L_kᵀ
        nk = n_k[idx]
        dy = st.t[idx] / nk[:, None]  # mean offset in whitened units
        mu[idx] = th.mu[idx] + torch.einsum("kd,kde->ke", dy, v)  # eq. 21, shifted back
        g_c = st.g[idx] - nk[:, None, None] * dy[:, :, None] * dy[:, None, :]  # centred at the new μ_k
        scatter[idx] = v.transpose(-1, -2) @ g_c @ v  # Σ_i γ_ik (x_i − μ_k)(x_i − μ_k)ᵀ
        moment[idx] = torch.diagonal(v.transpose(-1, -2) @ st.g[idx] @ v, dim1=-2, dim2=-1) / nk[:, None]  # about c_k
    scatter = 0.5 * (scatter + scatter.transpose(-1, -2))
    eye = _eye(d)
    if covariance_type == "full":
        cov = scatter / n_k[:, None, None]  # eq. 28
    elif covariance_type == "tied":
        cov = (scatter.sum(0) / n_k.sum()).expand(k, d, d)
        moment = (alpha[:, None] * moment).sum(0).expand(k, d)
    else:
        var = torch.diagonal(scatter, dim1=-2, dim2=-1) / n_k[:, None]
        if covariance_type == "spherical":
            var = var.mean(1, keepdim=True).expand(k, d)
            moment = moment.mean(1, keepdim=True).expand(k, d)
        cov = torch.diag_embed(var)
    cov = (cov + reg_covar * eye).contiguous()
    return alpha, mu, cov, scatter, moment + reg_covar


def entropy_from_stats(st: Stats, th: Theta) -> torch.Tensor:
    """H(γ) = −Σ_ik γ_ik log γ_ik with log γ_ik = ℓ_ik − lse_i (second term of eq. 18)."""
    return st.lse - (st.n_k * th.const).sum() + 0.5 * st.a_k.sum()


def elbo_from_stats(st: Stats, scatter: torch.Tensor, th: Theta, new: Theta) -> torch.Tensor:
    """eq. 18 at (γ of the pass at Θ = ``th``, Θ' = ``new``) from the statistics of that pass."""
    return expected_log_joint_from_stats(st.n_k, scatter, new.alpha, new.prec_chol) + entropy_from_stats(st, th)
