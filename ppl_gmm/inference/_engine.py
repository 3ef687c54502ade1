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
"""

from __future__ import annotations

import functools
import math

import torch

from ..core.errors import DegenerateComponentError
from ..core.gmm import check_nonempty, expected_log_joint_from_stats
from ..core.linalg import checked_cholesky, precision_cholesky

__all__ = ["Engine", "Theta", "Stats", "m_step_from_stats", "elbo_from_stats", "RAW_OFFSET_LIMIT", "SHIFTED_MAX_D"]

RAW_OFFSET_LIMIT = 1e3  # components with μ_kᵀ Σ_k⁻¹ μ_k above this get shifted moments
SHIFTED_MAX_D = 4  # up to this D every component uses shifted moments (cheap there)
_BLOCK_ELEMENTS = 1 << 17  # target size of the (K·D, rows) residual block (1 MiB in float64)
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
        if "feat" in store:
            self.feat = view("feat", d + d * (d + 1) // 2, n)  # [x̃_j ; x̃_j x̃_e (j ≤ e)], raw moments
            bounds = [d]
            for j in range(d):
                bounds.append(bounds[-1] + d - j)
            self.feat_x = self.feat[:d]
            self.feat_rows = [self.feat[bounds[j] : bounds[j + 1]] for j in range(d)]


class Stats:
    """Accumulated (float64) statistics of one pass."""

    def __init__(self, k: int, d: int, raw: bool) -> None:
        self.lse = torch.zeros((), dtype=_F64)  # Σ_i lse_i = eq. 26
        self.n_k = torch.zeros(k, dtype=_F64)
        self.a_k = torch.zeros(k, dtype=_F64)  # Σ_i γ_ik ‖y_ik‖²
        self.t = torch.zeros(k, d, dtype=_F64)  # shifted: Σ_i γ_ik y_ik
        self.g = torch.zeros(k, d, d, dtype=_F64)  # shifted: Σ_i γ_ik y_ikᵀ y_ik
        # raw: [Σ_i γ_ik x̃_i | Σ_i γ_ik x̃_id x̃_ie (d ≤ e)]
        self.raw = torch.zeros(k, d + d * (d + 1) // 2, dtype=_F64) if raw else None
        self.shifted: torch.Tensor | None = None  # LongTensor of the components with shifted moments


def _acc(acc, value):
    acc += value if value.dtype == _F64 else value.to(_F64)


class Engine:
    """Holds the centred data, transposed and augmented with a row of ones: x̃ᵀ (D + 1, N),
    so that y = [U_kᵀ | −U_kᵀμ_k] x̃_augᵀ is one GEMM per block, and the per-block buffers."""

    def __init__(self, x: torch.Tensor, shift: torch.Tensor, k: int, block: int | None = None) -> None:
        self.n, self.d = x.shape
        self.k = k
        self.dtype = x.dtype
        self.xt = torch.empty(self.d + 1, self.n, dtype=self.dtype)
        torch.sub(x.T, shift[:, None], out=self.xt[: self.d])  # x̃ = x − x̄ (centred once)
        self.xt[self.d] = 1.0
        self.block = block or block_rows(self.n, k, self.d)
        self.raw_mode = self.d > SHIFTED_MAX_D
        self.floor = float(math.ceil(math.log(torch.finfo(self.dtype).tiny)))  # exp stays normal above this
        self.floor_exp = float(torch.exp(torch.tensor(self.floor, dtype=self.dtype))) * (1 + 1e-6)
        k, d, b = k, self.d, self.block
        sizes = {"y": k * d * b, "logw": k * b, "q": k * b, "m": b, "s": b}
        if self.raw_mode:
            sizes["feat"] = (d + d * (d + 1) // 2) * b
        else:
            sizes["yw"] = k * d * b
        self._store = {name: torch.empty(size, dtype=self.dtype) for name, size in sizes.items()}
        self._ws: dict[int, _Workspace] = {}

    def _workspace(self, n):
        ws = self._ws.get(n)
        if ws is None:
            ws = self._ws[n] = _Workspace(self._store, n, self.k, self.d)
        return ws

    def run_pass(self, th: Theta, stats: bool = True, gamma_out: torch.Tensor | None = None) -> Stats:
        """E-step at Θ over all rows (eq. 20), Σ lse (eq. 26) and, if ``stats``, the M-step's
        sufficient statistics.  ``gamma_out`` (N, K), if given, receives γ."""
        k, d = self.k, self.d
        if not stats:
            shifted = []
        elif self.raw_mode:  # shifted moments only where raw ones would lose > 3 digits
            shifted = torch.nonzero(th.offset2 > RAW_OFFSET_LIMIT).flatten().tolist()
        else:
            shifted = list(range(k))
        batched = stats and not self.raw_mode  # every component shifted, in one batched product
        raw = stats and len(shifted) < k
        st = Stats(k, d, raw=raw)
        st.shifted = torch.tensor(shifted, dtype=torch.long)
        f64 = self.dtype == _F64
        for a in range(0, self.n, self.block):
            xb = self.xt[:, a : a + self.block]  # (D + 1, rows)
            n = xb.shape[1]
            w = self._workspace(n)
            y3, q, lw, rows = w.y3, w.q, w.logw, w.y_rows
            torch.mm(th.w_aug, xb, out=w.y)  # y_ik = x̃_i U_k − μ_k U_k
            torch.mul(rows[0], rows[0], out=q)
            for j in range(1, d):
                q.addcmul_(rows[j], rows[j])  # ‖y_ik‖²
            torch.add(th.const_w, q, alpha=-0.5, out=lw)  # ℓ_ik = log α_k + log N(x_i | μ_k, Σ_k)
            torch.amax(lw, 0, out=w.m)
            # γ_ik = exp(ℓ_ik − max_j ℓ_ij) / Σ_k (…)   (eq. 20).  Exponents below log(tiny) would give
            # subnormals (slow, and < 1e-307 anyway): they are clamped, then set to exactly 0.
            lw.sub_(w.m).clamp_(min=self.floor).exp_()
            torch.nn.functional.threshold_(lw, self.floor_exp, 0.0)  # type: ignore[attr-defined]
            torch.sum(lw, 0, out=w.s)
            lw.mul_(w.s.reciprocal_())
            st.lse += w.m.sum(dtype=_F64) - w.s.log_().sum(dtype=_F64)  # Σ_i lse_i, eq. 26
            if gamma_out is not None:
                gamma_out[a : a + n].copy_(lw.T)
            if not stats:
                continue
            st.n_k += lw.sum(1, dtype=_F64)  # N_k
            if batched:
                torch.mul(y3, lw.unsqueeze(1), out=w.yw3)
                st.t += w.yw3.sum(2, dtype=_F64)
                if f64:
                    st.g.baddbmm_(w.yw3, y3.transpose(1, 2))
                else:
                    _acc(st.g, torch.bmm(w.yw3, y3.transpose(1, 2)))
                continue
            for j in shifted:
                ywj = torch.mul(y3[j], lw[j])
                st.t[j] += ywj.sum(1, dtype=_F64)
                _acc(st.g[j], ywj @ y3[j].T)
            if st.raw is not None:
                w.feat_x.copy_(xb[:d])
                for j in range(d):
                    torch.mul(xb[j : j + 1], xb[j:d], out=w.feat_rows[j])  # x̃_j x̃_e, e ≥ j
                if f64:
                    st.raw.addmm_(lw, w.feat.T)
                else:
                    _acc(st.raw, lw @ w.feat.T)
            q.mul_(lw)
            st.a_k += q.sum(1, dtype=_F64)  # Σ_i γ_ik ‖y_ik‖²
        if batched:
            st.a_k = torch.diagonal(st.g, dim1=-2, dim2=-1).sum(-1)  # Σ_i γ_ik ‖y_ik‖² = tr G_k
        return st


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
