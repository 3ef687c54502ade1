"""The blocked kernel of one variational-Bayes iteration (``fit_vb``): a pass over the rows.

It must agree with ``core``: its E-step is ``core.vb_posterior.VBPosterior.log_rho`` /
``responsibilities`` (PRML 10.46–10.49, normalised by ``core.gaussian.normalise_log``) and its
M-step ``core.priors.conjugate_update`` (10.58, 10.60–10.63), which it calls with the scatter
computed from raw moments. ``tests/inference/test_vb_kernel.py`` checks both against ``core``.

In centred coordinates x_c = x − x̄ the E-step exponent is a linear function of the features
φ(x_c) = [x_c,d x_c,e (d ≤ e), x_c, 1] (P = D(D+1)/2 + D + 1)::

    ln ρ_ik = c_k − ½ (x_c − m_k)ᵀ ν_k W_k (x_c − m_k) = a_kᵀ φ(x_i)                    (10.46, 10.64)

and the M-step needs only T = r φ (K, P): N_k, Σ_i r_ik x_c,i and Σ_i r_ik x_c,i x_c,iᵀ. One GEMM
each way. The expansion loses about ε·G relative digits, G = max_k ν_k m_kᵀ W_k m_k the squared
Mahalanobis distance of a component from the data mean; when G > ``G_EXPANSION_MAX`` (1e-10
relative at worst) the iteration uses the exact forms instead: differences x_i − m_k formed first
(``core.gaussian.mahalanobis_sq``) and the two-pass scatter (``core.priors.conjugate_update_from_data``).

Data sources (issue 10): for kinds "npy", "sliced" and "dask" no r is kept. :func:`source_pass`
maps fixed row ranges (or Dask chunks, where they live) to :func:`chunk_stats` — the scan's
(T, H, Σ lse), or for the exact M-step two passes that recompute r by the :class:`Recipe` of the
E-step that made it: (N_k, Σ r x_c, H) then, once m_k is known, the scatter about m_k — and adds
them in a fixed order (``_passes``: worker threads or Dask).

Devices (issue 10, item 7): every tensor a pass makes follows its rows' device and dtype; the
:class:`Recipe` and the centre travel to that device (:meth:`Recipe.to`) and each chunk's
statistics come back to the CPU (O(K·D²) numbers), where ``fit_vb`` updates q(α) q(μ, Λ).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from ..core.gaussian import log_gaussian_prec, mahalanobis_sq, normalise_log
from ..core.gmm import entropy as weighted_entropy
from ..core.gmm import weighted_scatter
from ..core.linalg import log_det_from_cholesky, precision_cholesky
from ..core.priors import ConjugateStats, NormalWishartPrior, conjugate_update
from ..core.threads import limited_threads
from ..core.vb_posterior import log_rho_const
from ._engine import _dask_parts
from ._passes import dask_map_in_order, map_in_order

if TYPE_CHECKING:
    from ..core.params import GMMParams
    from ..core.sources import Source
    from ..core.vb_posterior import VBPosterior

__all__ = [
    "G_EXPANSION_MAX",
    "features_t",
    "scan",
    "exact_log_rho_t",
    "m_step_from_stats",
    "e_terms",
    "spread",
    "Recipe",
    "responsibilities_t",
    "source_pass",
]

G_EXPANSION_MAX = 1e6
FEATURE_CACHE_MAX = 1 << 23  # cache φ (P, N) when it holds at most this many numbers (64 MB)
SCAN_ROWS = 1 << 15  # rows per block of the one-pass kernel


def features_t(xc: torch.Tensor, iu: torch.Tensor) -> torch.Tensor:
    """φ(x_c)ᵀ (P, b): pairwise products (d ≤ e), the coordinates, and a row of ones."""
    ones = torch.ones(1, xc.shape[0], dtype=xc.dtype, device=xc.device)
    return torch.cat([(xc[:, iu[0]] * xc[:, iu[1]]).T, xc.T, ones], 0)


def design_t(mc: torch.Tensor, wt: torch.Tensor, c: torch.Tensor, iu: torch.Tensor) -> torch.Tensor:
    """a_k (K, P) with a_kᵀ φ(x) = c_k − ½ (x − m_k)ᵀ Wt_k (x − m_k), Wt_k = ν_k W_k."""
    pair = wt[:, iu[0], iu[1]] * torch.where(iu[0] == iu[1], -0.5, -1.0).to(wt.dtype)
    lin = torch.einsum("kde,ke->kd", wt, mc)
    const = c - 0.5 * (lin * mc).sum(1)
    return torch.cat([pair, lin, const[:, None]], 1)


def scan(
    xc: torch.Tensor,
    k: int,
    *,
    design: torch.Tensor | None = None,
    feats_t: torch.Tensor | None = None,
    iu: torch.Tensor | None = None,
    exact: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    want_stats: bool = True,
    block_rows: int | None = None,
    w: torch.Tensor | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """One pass over the rows: ln ρ (10.46), r (10.49), H[r] = −Σ r ln r, Σ_i ln Σ_k ρ_ik, and
    T = r φ (K, P) when ``design`` is used. ``exact=(m_c, √ν U, c)`` selects the exact E-step.
    ``block_rows`` defaults to ``SCAN_ROWS``. With frequency weights ``w`` (N,) every sum over rows
    is Σ_i w_i (...): H = Σ_i w_i H[r_i], Σ_i w_i lse_i, T = (r w) φ; r itself is unweighted.
    Returns (list of r-blocks (K, b), T or None, H, Σ lse)."""
    n = xc.shape[0]
    block_rows = SCAN_ROWS if block_rows is None else block_rows
    blocks = []
    zeros = functools.partial(torch.zeros, dtype=xc.dtype, device=xc.device)
    entropy, lse = zeros(()), zeros(())
    # the ignores below: without ``exact`` the caller gives ``design`` and ``iu`` (or ``feats_t``)
    stats = zeros(k, design.shape[1]) if (want_stats and exact is None) else None  # type: ignore[union-attr]
    for s in range(0, n, block_rows):
        if exact is None:
            ph = feats_t[:, s : s + block_rows] if feats_t is not None else features_t(xc[s : s + block_rows], iu)  # type: ignore[arg-type]
            z = design @ ph  # type: ignore[operator]  # ln ρ, 10.46 with 10.64–10.66
        else:
            z = exact_log_rho_t(xc[s : s + block_rows], *exact)
        if w is None:
            r, lse_block, h = normalise_log(z, dim=0, entropy=True)  # 10.49
        else:
            wb = w[s : s + block_rows]
            r, lse_block = normalise_log(z, dim=0)  # 10.49
            h, lse_block = weighted_entropy(r.T, wb), lse_block * wb  # Σ_i w_i H[r_i], w_i lse_i
        entropy += h
        lse += lse_block.sum()
        if stats is not None:
            stats.addmm_(r if w is None else r * wb, ph.T)
        blocks.append(r)
    return blocks, stats, entropy, lse


def exact_log_rho_t(xc: torch.Tensor, mc: torch.Tensor, u: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """ln ρ (K, b) difference-first: c_k − ½ ‖(x_c − m_k) √ν_k U_k‖² (10.46 with 10.64)."""
    return mahalanobis_sq(xc, mc, u).T.mul_(-0.5).add_(c[:, None])


def m_step_from_stats(
    t: torch.Tensor, prior: NormalWishartPrior, m0c: torch.Tensor, w0_inv: torch.Tensor, iu: torch.Tensor, d: int
) -> ConjugateStats:
    """The conjugate update (10.58, 10.60–10.63) from T = r φ, centred coordinates; the scatter
    about m_k from the raw moments: Q − s mᵀ − m sᵀ + N_k m mᵀ."""
    npair = iu.shape[1]
    n_k = t[:, -1]  # 10.51
    s = t[:, npair : npair + d]  # Σ_i r_ik x_c,i
    q = torch.zeros(t.shape[0], d, d, dtype=t.dtype, device=t.device)
    q[:, iu[0], iu[1]] = t[:, :npair]
    q[:, iu[1], iu[0]] = t[:, :npair]  # Σ_i r_ik x_c,i x_c,iᵀ

    def scatter(m: torch.Tensor) -> torch.Tensor:
        sm = s[:, :, None] * m[:, None, :]
        return q - sm - sm.transpose(1, 2) + n_k[:, None, None] * m[:, :, None] * m[:, None, :]

    return conjugate_update(prior, n_k, s, scatter, m0c, w0_inv)


def e_terms(
    st: ConjugateStats, chol: torch.Tensor, d: int, elog_pi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_k, √ν_k U_k, ln |W_k|): the constant of ln ρ (``log_rho_const``, with E[ln π_k] ``elog_pi``)
    and the whitener of ν_k W_k = (√ν_k U_k)(√ν_k U_k)ᵀ, from the Cholesky factors of W_k⁻¹."""
    log_det_w = -log_det_from_cholesky(chol)  # ln |W_k| = −ln |W_k⁻¹|
    c = log_rho_const(elog_pi, st.beta, st.nu, log_det_w, d)
    u = precision_cholesky(chol=chol) * torch.sqrt(st.nu)[:, None, None]
    return c, u, log_det_w


def spread(st: ConjugateStats, u: torch.Tensor) -> float:
    """G = max_k ν_k m_kᵀ W_k m_k (centred m): the expansion's loss of digits is about ε·G."""
    return float(torch.einsum("kd,kde->ke", st.m, u).square().sum(1).max())


# --------------------------------------------------------------------------------------------
# Passes over a data source (kinds "npy", "sliced", "dask"): rows → statistics, reduced in order
# --------------------------------------------------------------------------------------------
TASK_ROWS = 4 * SCAN_ROWS  # rows per task of the worker threads (a fixed split: the same bits for any count)


class Recipe(NamedTuple):
    """How a block's r (K, b) is computed, so that a later pass can recompute it (no r is kept).
    Its args are tensors only (:meth:`to` moves them to the rows' device):

    - "design" (a (K, P), iu): ln ρ = a φ(x_c), the one-GEMM E-step (10.46, 10.64–10.66);
    - "exact" (m_c, √ν U, c): ln ρ difference-first (:func:`exact_log_rho_t`);
    - "gmm" (μ, U, ln α) of Θ₀: eq. 20 at Θ₀ (x' units, uncentred), the start (:meth:`from_params`);
    - "posterior" (m, U, ν, c) of q: q's E-step (x' units, uncentred), the start from a
      ``VBPosterior`` (:meth:`from_posterior`).
    """

    kind: str
    args: tuple

    @classmethod
    def from_params(cls, params: GMMParams) -> Recipe:
        """Θ₀'s E-step, eq. 20: the terms of ``core.gmm.weighted_log_prob``."""
        return cls("gmm", (params.mu, params.precision_cholesky, torch.log(params.alpha)))

    @classmethod
    def from_posterior(cls, q: VBPosterior) -> Recipe:
        """q's E-step, PRML 10.46–10.49: the terms of ``VBPosterior.log_rho`` (W_k = U_k U_kᵀ)."""
        u = precision_cholesky(chol=q.W_inv_cholesky)
        const = log_rho_const(q.expected_log_weights(), q.beta, q.nu, q.log_det_W(), q.d)  # 10.64–10.66
        return cls("posterior", (q.m, u, q.nu, const))

    def to(self, device: torch.device) -> Recipe:
        """The recipe with its tensors on ``device`` (itself when they are there already)."""
        if all(a.device == device for a in self.args):
            return self
        return Recipe(self.kind, tuple(a.to(device) for a in self.args))


def responsibilities_t(xs: torch.Tensor, xc: torch.Tensor | None, recipe: Recipe) -> torch.Tensor:
    """r (K, b) of a block by ``recipe`` (10.49) on the block's device: ``xs`` the block in x'
    units, ``xc`` it centred (needed by "design" and "exact" only)."""
    if recipe.kind == "gmm":
        mu, u, log_alpha = recipe.args
        return normalise_log(log_gaussian_prec(xs, mu, u).add_(log_alpha))[0].T  # eq. 20, as core.gmm.e_step
    if recipe.kind == "posterior":
        m, u, nu, const = recipe.args
        return normalise_log(const - 0.5 * nu * mahalanobis_sq(xs, m, u))[0].T  # 10.46 with 10.64, 10.49
    assert xc is not None
    if recipe.kind == "design":
        design, iu = recipe.args
        z = design @ features_t(xc, iu)  # ln ρ, 10.46
    else:
        z = exact_log_rho_t(xc, *recipe.args)
    return normalise_log(z, dim=0)[0]  # 10.49


def chunk_stats(shared: tuple, x: torch.Tensor, w: torch.Tensor | None) -> tuple:
    """The statistics of one chunk of rows ``x`` (b, D, the data's units) with weights ``w``,
    computed on the device of ``centre`` (where ``recipe`` and ``arg`` are too) and returned on the CPU.

    ``shared`` = (op, recipe, centre, inv_scale, k, arg); x' = x · inv_scale, x_c = x' − centre:

    - "scan" (arg = want_stats): :func:`scan` → (T = (r w) φ or None, Σ_i w_i H[r_i], Σ_i w_i lse_i);
    - "moments": (N_k = Σ_i w_i r_ik (10.51), Σ_i w_i r_ik x_c,i, Σ_i w_i H[r_i]) with r by the recipe;
    - "scatter" (arg = m_c (K, D)): (Σ_i w_i r_ik (x_c,i − m_k)(x_c,i − m_k)ᵀ,), difference first."""
    op, recipe, centre, inv_scale, k, arg = shared
    x = x.to(centre.device)
    xs = x * inv_scale if inv_scale != 1.0 else x  # x' = x / s (exact: s is a power of 2)
    xc = xs - centre
    w = None if w is None else w.to(device=xc.device, dtype=xc.dtype)
    if op == "scan":
        if recipe.kind == "design":
            design, iu = recipe.args
            out = scan(xc, k, design=design, iu=iu, want_stats=arg, w=w)
        else:
            out = scan(xc, k, exact=recipe.args, want_stats=False, w=w)
        return tuple(None if t is None else t.cpu() for t in out[1:])
    d = xc.shape[1]
    zeros = functools.partial(torch.zeros, dtype=xc.dtype, device=xc.device)
    acc = [zeros(k, d, d)] if op == "scatter" else [zeros(k), zeros(k, d), zeros(())]
    for s in range(0, xc.shape[0], SCAN_ROWS):
        xcb, wb = xc[s : s + SCAN_ROWS], None if w is None else w[s : s + SCAN_ROWS]
        r = responsibilities_t(xs[s : s + SCAN_ROWS], xcb, recipe)
        rw = r if wb is None else r * wb  # w_i r_ik
        if op == "scatter":
            acc[0] += weighted_scatter(xcb, rw.T, arg)  # two-pass scatter about m_k (10.62)
        else:
            acc[0] += rw.sum(1)  # N_k, 10.51
            acc[1] += rw @ xcb  # Σ_i w_i r_ik x_c,i (10.52 × N_k)
            acc[2] += weighted_entropy(r) if wb is None else weighted_entropy(r.T, wb)  # H[r] (symmetric in r, rᵀ)
    return tuple(a.cpu() for a in acc)


def _dask_chunk(shared: tuple, x: Any, w: Any) -> tuple:
    """:func:`chunk_stats` of one Dask chunk where it lives (moved to the fit's device), on one
    torch thread (CPU results)."""
    dtype = shared[2].dtype
    with limited_threads():
        xt = torch.as_tensor(np.asarray(x)).to(dtype)
        wt = None if w is None else torch.as_tensor(np.asarray(w), dtype=torch.float64)
        return chunk_stats(shared, xt.reshape(xt.shape[0], -1), wt)


def source_pass(source: Source, shared: tuple, threads: int) -> list:
    """:func:`chunk_stats` over every row of ``source``, added in a fixed order: tasks of
    ``TASK_ROWS`` rows on ``threads`` worker threads (``_passes.map_in_order``; each task reads its
    block, peak memory O(rows · D)), or one task per chunk where a Dask chunk lives
    (``_passes.dask_map_in_order``). Entries that are None stay None."""
    if source.kind == "dask":
        results = dask_map_in_order(_dask_chunk, shared, _dask_parts(source))
    else:

        def task(rows: tuple[int, int], _: None) -> tuple:
            blk = source.read(*rows)
            return chunk_stats(shared, blk.x, blk.w)

        tasks = [(a, min(a + TASK_ROWS, source.n)) for a in range(0, source.n, TASK_ROWS)]
        results = map_in_order(task, tasks, threads, lambda: None)
    total = list(results[0])
    for part in results[1:]:  # in task order: independent of the scheduling
        total = [None if a is None else a + b for a, b in zip(total, part)]
    return total
