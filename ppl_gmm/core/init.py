"""Initial parameters Θ₀ (and the initial responsibilities γ₀ = e_step(x, Θ₀)).

``init="kmeans++"``: seeded k-means++ centres (Arthur & Vassilvitskii 2007, the
greedy variant scikit-learn uses), every point assigned to its nearest centre,
then one M-step (eq. 21/28) from those hard responsibilities.
``init="kmeans"``: Lloyd's k-means from those k-means++ centres (:func:`kmeans_lloyd`, as
scikit-learn's ``KMeans(init=centres, n_init=1, algorithm="lloyd")``: max_iter 300, tol 1e-4 of
the mean column variance), then the hard assignments → one M-step — scikit-learn's default
``init_params="kmeans"`` for its mixtures.
``init="random"``: responsibilities drawn row-wise from a flat Dirichlet, then
one M-step.  ``init=GMMParams(...)``: used as given (shapes checked).

Both run in the coordinates x' = x / s of ``validation.data_scale`` (s = 1, nothing changes, for
data at ordinary scales), so squared distances and moments neither overflow nor underflow for data
at 1e±150; data whose covariances float64 cannot hold are refused there, before any work.

The start for every data source (``core.sources``), :func:`initial_params_source`: with N ≤
``INIT_SAMPLE`` = 2**16 rows, exactly :func:`initial_params` on all rows (bit-identical for data in
memory); above, the same on a uniform sample of ``INIT_SAMPLE`` rows (sorted indices drawn with
``numpy.random.default_rng(seed)``), the same rows whatever the kind of source. Frequency weights
travel with the rows: k-means++ draws ∝ w_i D(x_i)² (scikit-learn's ``sample_weight``), Lloyd's
centres are weighted means and the M-step is weighted (eq. 21/28 with w_i γ_ik).
"""

from __future__ import annotations

import math
from typing import Any, NoReturn

import numpy as np
import torch

from .gmm import e_step, m_step
from .params import GMMParams
from .sources import Source
from .validation import INITS, data_scale

__all__ = [
    "kmeans_plusplus",
    "kmeans_lloyd",
    "nearest_centre",
    "initial_params",
    "initial_responsibilities",
    "INIT_REG_COVAR",
    "INITS",
    "INIT_SAMPLE",
    "init_sample_indices",
    "initial_params_source",
]

INIT_REG_COVAR = 1e-6  # fit_cavi's default: Θ₀ of fit_vb / fit_map / fit_svi_bayes is fit_cavi's default Θ₀


def kmeans_plusplus(
    x: torch.Tensor, k: int, seed: int, sample_weight: torch.Tensor | None = None, *, rng: Any = None
) -> torch.Tensor:
    """Greedy k-means++ centres (K, D) drawn with ``numpy.random.default_rng(seed)`` (or ``rng``, any
    object with numpy's ``integers``/``choice``/``uniform``).

    With frequency weights w (N,), scikit-learn's ``kmeans_plusplus(..., sample_weight=w)``: the first
    centre drawn with probability ∝ w_i, each candidate with probability ∝ w_i D(x_i)², and the best
    candidate minimises the potential Σ_i w_i D(x_i)² (integer weights act as repeated rows)."""
    rng = np.random.default_rng(seed) if rng is None else rng
    xn = x.double().numpy()
    n = xn.shape[0]
    w = None if sample_weight is None else sample_weight.double().cpu().numpy()
    xn = xn - xn.mean(0)  # centred distances: no cancellation for data far from the origin
    sq_norms = (xn * xn).sum(1)
    n_trials = 2 + int(math.log(k))
    centres = np.empty((k, xn.shape[1]))
    first = rng.integers(n) if w is None else rng.choice(n, p=w / w.sum())  # ∝ w_i
    centres[0] = xn[first]
    closest = np.maximum(sq_norms - 2 * xn @ xn[first] + sq_norms[first], 0.0)
    for c in range(1, k):
        pot = closest.sum() if w is None else closest @ w  # Σ_i w_i D(x_i)²
        if not 0 < pot < math.inf:  # 0, or NaN / inf from squared distances that overflowed
            _no_centre(x if w is None else x[torch.as_tensor(w > 0)], k, c, float(pot))
        cum = np.cumsum(closest) if w is None else np.cumsum(w * closest)  # candidates ∝ w_i D(x_i)²
        cand = np.searchsorted(cum, rng.uniform(size=n_trials) * pot)
        cand = np.minimum(cand, n - 1)
        d_cand = np.maximum(sq_norms[cand, None] - 2 * xn[cand] @ xn.T + sq_norms[None], 0.0)
        d_cand = np.minimum(closest[None], d_cand)
        best = int(np.argmin(d_cand.sum(1) if w is None else d_cand @ w))
        closest = d_cand[best]
        centres[c] = xn[cand[best]]
    return torch.as_tensor(centres + x.double().numpy().mean(0), dtype=x.dtype)


def _no_centre(x: torch.Tensor, k: int, c: int, pot: float) -> NoReturn:
    """Why k-means++ found no point for centre ``c``: fewer distinct points than k, or (the points
    being distinct) squared distances that float64 cannot resolve at the data's scale."""
    distinct = len(np.unique(x.double().numpy(), axis=0))  # the data as given, not centred
    if distinct < k:
        raise ValueError(f"k = {k} is larger than the number of distinct data points ({distinct}); use k <= {distinct}")
    raise ValueError(
        f"k-means++ found no point for centre {c + 1} of {k} although the data have {distinct} distinct points: "
        f"their squared distances to the chosen centres are {'not finite' if not np.isfinite(pot) else 'all 0'} "
        "in floating point (distinct points closer than round-off, or data whose squares overflow or underflow); "
        "rescale the data, or use init='random'"
    )


def kmeans_lloyd(
    x: torch.Tensor,
    centres: torch.Tensor,
    max_iter: int = 300,
    tol: float = 1e-4,
    sample_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Lloyd's k-means from ``centres`` (K, D), as scikit-learn's ``_kmeans_single_lloyd``.

    Each iteration assigns every row to its nearest centre (argmin_k ‖c_k‖² − 2 x·c_k, in
    coordinates centred at the column means; ties to the lowest k) and moves each centre to the
    (``sample_weight``-weighted) mean of its rows; a centre left with no rows is moved to the rows
    farthest from their centres (scikit-learn's ``_relocate_empty_clusters_dense``). It stops when
    the labels repeat, or when Σ_k ‖Δc_k‖² <= tol · mean_d Var(x_d) (``tol`` relative, as
    scikit-learn's ``_tolerance``), or after ``max_iter`` iterations; unless the labels repeated,
    the rows are then assigned to the final centres. Returns (labels (N,) LongTensor, centres
    (K, D) in x's dtype, iterations run).
    """
    xn = x.double().numpy()
    mean = xn.mean(0)
    xc = xn - mean  # centred, as scikit-learn's KMeans.fit
    c = centres.double().numpy() - mean
    n, k = xn.shape[0], c.shape[0]
    w = np.ones(n) if sample_weight is None else sample_weight.double().numpy()
    tol_abs = float(np.mean(np.var(xc, axis=0)) * tol) if tol > 0 else 0.0
    labels_old = np.full(n, -1)
    strict, it = False, 0

    def assign(c: np.ndarray) -> np.ndarray:
        return np.argmin((c * c).sum(1)[None, :] - 2 * xc @ c.T, axis=1)  # ‖x − c‖² − ‖x‖²

    while it < max_iter:
        it += 1
        labels = assign(c)
        sums = np.zeros_like(c)
        np.add.at(sums, labels, xc * w[:, None])
        weight = np.bincount(labels, weights=w, minlength=k).astype(np.float64)
        _relocate_empty(xc, w, c, sums, weight, labels)
        new = np.divide(sums, weight[:, None], out=sums, where=weight[:, None] > 0)  # the centres' means
        shift = float(((new - c) ** 2).sum())
        c = new
        if np.array_equal(labels, labels_old):
            strict = True
            break
        if shift <= tol_abs:
            break
        labels_old = labels
    labels = labels_old if strict else assign(c)
    return torch.as_tensor(labels, dtype=torch.long), torch.as_tensor(c + mean, dtype=x.dtype), it


def _relocate_empty(
    xc: np.ndarray, w: np.ndarray, c_old: np.ndarray, sums: np.ndarray, weight: np.ndarray, labels: np.ndarray
) -> None:
    """Give each centre without rows the row farthest from its centre (in place, on the weighted
    sums and weights), as scikit-learn's ``_relocate_empty_clusters_dense``."""
    empty = np.flatnonzero(weight == 0)
    if empty.size == 0:
        return
    dist = ((xc - c_old[labels]) ** 2).sum(1)
    if dist.max() == 0:  # fewer distinct rows than centres: nothing to move
        return
    far = np.argpartition(dist, -empty.size)[: -empty.size - 1 : -1]
    for new_id, i in zip(empty, far):
        old_id = labels[i]
        sums[old_id] -= xc[i] * w[i]
        sums[new_id] = xc[i] * w[i]
        weight[new_id] = w[i]
        weight[old_id] -= w[i]


def nearest_centre(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index (N,) of the nearest of ``centres`` (K, D) for every row of ``x`` (distances after centring)."""
    xc = x - x.mean(0)
    cc = centres - x.mean(0)
    d2 = (xc * xc).sum(1, keepdim=True) - 2 * xc @ cc.T + (cc * cc).sum(1)
    return torch.argmin(d2, dim=1)


def initial_params(
    x: torch.Tensor,
    k: int,
    init: str | GMMParams,
    seed: int,
    covariance_type: str = "full",
    reg_covar: float = 0.0,
    *,
    sample_weight: torch.Tensor | None = None,
) -> GMMParams:
    """Θ₀ for a fit; ``x`` is validated (N, D) data, ``reg_covar`` in its units; ``sample_weight``
    (N,) checked frequency weights (weighted k-means++ / Lloyd, the weighted M-step).

    k-means++ and the M-step run in x' = x / s (``validation.data_scale``, which refuses data whose
    covariances are not representable) and Θ₀ is mapped back: μ = s μ', Σ = s² Σ' (exact)."""
    n, d = x.shape
    if isinstance(init, GMMParams):
        if init.k != k or init.d != d:
            raise ValueError(
                f"init parameters have K = {init.k}, D = {init.d} but the fit asks for K = {k} on D = {d} data"
            )
        return init.to(x.dtype)
    scale = data_scale(x, reg_covar)
    if not scale.is_identity:
        xs, reg = scale.down(x), scale.reg_down(reg_covar)
        return scale.params_up(initial_params(xs, k, init, seed, covariance_type, reg, sample_weight=sample_weight))
    if init == "kmeans++":
        labels = nearest_centre(x, kmeans_plusplus(x, k, seed, sample_weight))
        gamma = torch.nn.functional.one_hot(labels, k).to(x.dtype)
    elif init == "kmeans":
        labels = kmeans_lloyd(x, kmeans_plusplus(x, k, seed, sample_weight), sample_weight=sample_weight)[0]
        gamma = torch.nn.functional.one_hot(labels, k).to(x.dtype)
    elif init == "random":
        rng = np.random.default_rng(seed)
        gamma = torch.as_tensor(rng.dirichlet(np.ones(k), size=n), dtype=x.dtype)
    else:
        raise ValueError(f"unknown init {init!r}; use 'kmeans++', 'kmeans', 'random' or a GMMParams")
    return m_step(x, gamma, covariance_type=covariance_type, reg_covar=reg_covar, sample_weight=sample_weight)


def initial_responsibilities(
    x: torch.Tensor, k: int, init: str | GMMParams = "kmeans++", seed: int = 0
) -> torch.Tensor:
    """γ₀ = e_step(x, Θ₀) (N, K) with fit_cavi's default Θ₀ (reg_covar = ``INIT_REG_COVAR``): the
    start of ``fit_vb`` and ``fit_svi_bayes``. ``x`` is validated (N, D) data."""
    return e_step(x, initial_params(x, k, init, seed, "full", INIT_REG_COVAR))


# --- the start for every data source (issue 10) ----------------------------------------------------
#: At most this many rows enter the start: above it, a seeded uniform sample of that many rows.
INIT_SAMPLE = 1 << 16


def init_sample_indices(n: int, seed: int) -> np.ndarray | None:
    """The rows the start uses: None (all rows) when N ≤ ``INIT_SAMPLE``, otherwise ``INIT_SAMPLE``
    sorted indices drawn without replacement with ``numpy.random.default_rng(seed)`` — the same
    rows for every kind of source (in-memory included)."""
    if n <= INIT_SAMPLE:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, INIT_SAMPLE, replace=False))


def initial_params_source(
    source: Source,
    k: int,
    init: str | GMMParams,
    seed: int,
    covariance_type: str = "full",
    reg_covar: float = 0.0,
) -> GMMParams:
    """Θ₀ for a fit on any data source (``core.sources``), the same for every kind of source.

    If N ≤ ``INIT_SAMPLE`` (2**16 rows) the start runs on all rows exactly as :func:`initial_params`
    (bit-identical for in-memory data); otherwise on the seeded uniform sample of
    :func:`init_sample_indices` (read with ``source.take``). With frequency weights the sample keeps
    them: k-means++ draws with probability ∝ w_i D(x_i)² and the M-step (eq. 21/28) is weighted."""
    if isinstance(init, GMMParams):
        return initial_params(torch.empty(0, source.d, dtype=source.dtype), k, init, seed)  # shapes checked
    idx = init_sample_indices(source.n, seed)
    blk = source.read(0, source.n) if idx is None else source.take(idx)
    x = blk.x.cpu()
    w = None if blk.w is None else blk.w.cpu()
    if w is not None and not float(w.sum()) > 0:
        raise ValueError(
            f"every row of the seeded start sample ({len(x)} of N = {source.n} rows) has weight 0; "
            "give more rows a positive weight or pass init=GMMParams(...)"
        )
    return initial_params(x, k, init, seed, covariance_type, reg_covar, sample_weight=w)
