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
"""

from __future__ import annotations

import torch

from ..core.gaussian import mahalanobis_sq, normalise_log
from ..core.linalg import log_det_from_cholesky, precision_cholesky
from ..core.priors import ConjugateStats, NormalWishartPrior, conjugate_update
from ..core.vb_posterior import log_rho_const

__all__ = ["G_EXPANSION_MAX", "features_t", "scan", "m_step_from_stats", "e_terms", "spread"]

G_EXPANSION_MAX = 1e6
FEATURE_CACHE_MAX = 1 << 23  # cache φ (P, N) when it holds at most this many numbers (64 MB)
SCAN_ROWS = 1 << 15  # rows per block of the one-pass kernel


def features_t(xc: torch.Tensor, iu: torch.Tensor) -> torch.Tensor:
    """φ(x_c)ᵀ (P, b): pairwise products (d ≤ e), the coordinates, and a row of ones."""
    ones = torch.ones(1, xc.shape[0], dtype=xc.dtype)
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
) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """One pass over the rows: ln ρ (10.46), r (10.49), H[r] = −Σ r ln r, Σ_i ln Σ_k ρ_ik, and
    T = r φ (K, P) when ``design`` is used. ``exact=(m_c, √ν U, c)`` selects the exact E-step.
    ``block_rows`` defaults to ``SCAN_ROWS``. Returns (list of r-blocks (K, b), T or None, H, Σ lse)."""
    n = xc.shape[0]
    block_rows = SCAN_ROWS if block_rows is None else block_rows
    blocks = []
    entropy = torch.zeros((), dtype=xc.dtype)
    lse = torch.zeros((), dtype=xc.dtype)
    # the ignores below: without ``exact`` the caller gives ``design`` and ``iu`` (or ``feats_t``)
    stats = torch.zeros(k, design.shape[1], dtype=xc.dtype) if (want_stats and exact is None) else None  # type: ignore[union-attr]
    for s in range(0, n, block_rows):
        if exact is None:
            ph = feats_t[:, s : s + block_rows] if feats_t is not None else features_t(xc[s : s + block_rows], iu)  # type: ignore[arg-type]
            z = design @ ph  # type: ignore[operator]  # ln ρ, 10.46 with 10.64–10.66
        else:
            mc, u, c = exact
            z = mahalanobis_sq(xc[s : s + block_rows], mc, u).T.mul_(-0.5).add_(c[:, None])
        r, lse_block, h = normalise_log(z, dim=0, entropy=True)  # 10.49
        entropy += h
        lse += lse_block.sum()
        if stats is not None:
            stats.addmm_(r, ph.T)
        blocks.append(r)
    return blocks, stats, entropy, lse


def m_step_from_stats(
    t: torch.Tensor, prior: NormalWishartPrior, m0c: torch.Tensor, w0_inv: torch.Tensor, iu: torch.Tensor, d: int
) -> ConjugateStats:
    """The conjugate update (10.58, 10.60–10.63) from T = r φ, centred coordinates; the scatter
    about m_k from the raw moments: Q − s mᵀ − m sᵀ + N_k m mᵀ."""
    npair = iu.shape[1]
    n_k = t[:, -1]  # 10.51
    s = t[:, npair : npair + d]  # Σ_i r_ik x_c,i
    q = torch.zeros(t.shape[0], d, d, dtype=t.dtype)
    q[:, iu[0], iu[1]] = t[:, :npair]
    q[:, iu[1], iu[0]] = t[:, :npair]  # Σ_i r_ik x_c,i x_c,iᵀ

    def scatter(m: torch.Tensor) -> torch.Tensor:
        sm = s[:, :, None] * m[:, None, :]
        return q - sm - sm.transpose(1, 2) + n_k[:, None, None] * m[:, :, None] * m[:, None, :]

    return conjugate_update(prior, n_k, s, scatter, m0c, w0_inv)


def e_terms(st: ConjugateStats, chol: torch.Tensor, d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_k, √ν_k U_k, ln |W_k|): the constant of ln ρ (``log_rho_const``) and the whitener of
    ν_k W_k = (√ν_k U_k)(√ν_k U_k)ᵀ, from the Cholesky factors of W_k⁻¹."""
    log_det_w = -log_det_from_cholesky(chol)  # ln |W_k| = −ln |W_k⁻¹|
    c = log_rho_const(st.alpha, st.beta, st.nu, log_det_w, d)
    u = precision_cholesky(chol=chol) * torch.sqrt(st.nu)[:, None, None]
    return c, u, log_det_w


def spread(st: ConjugateStats, u: torch.Tensor) -> float:
    """G = max_k ν_k m_kᵀ W_k m_k (centred m): the expansion's loss of digits is about ε·G."""
    return float(torch.einsum("kd,kde->ke", st.m, u).square().sum(1).max())
