"""Matplotlib views of GMM fits.

Every function takes an ``ax`` (keyword, or ``None`` for the current axes),
draws on it and returns it: no ``plt.show()``, no fitting — the fits are made
by the caller and passed in.  Parameters may be given as a :class:`GMMParams`,
any fit with a ``.params`` attribute, or a ``VBFit`` (its ``mean_params()``).

- :func:`density_1d`         histogram of 1-D data, the mixture density Σ_k α_k N(x | μ_k, σ_k²)
                             (eq. 26's summand) and its K weighted components
- :func:`ellipses`           2-D scatter coloured by responsibility γ (eq. 20) with the
                             1σ and 2σ covariance ellipses of each component
- :func:`responsibilities`   γ (N, K) as a heat map
- :func:`traces`             ELBO (eq. 18) / log-likelihood (eq. 26) / KL gap of several fits
                             per iteration or per second, or their distance to a reference optimum
- :func:`free_energy`        log p(X) and the ELBO over E/M half-steps, the KL gap shaded
- :func:`posterior_marginals` marginal posterior densities of one scalar from several methods
- :func:`draws`              the draws of one scalar from an ``InferenceData`` (xarray access only)
- :func:`mixing_weights`     grouped bars of mixing weights (pruning of surplus components)
- :func:`roundoff`           relative differences of two computations against machine epsilon
- :func:`selection`, :func:`selection_table`   model-selection criteria over K
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..core.rng import resolve_seed

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap
    from matplotlib.typing import ColorType

    from ..core.params import GMMParams
    from ..core.validation import ArrayLike
    from ..results.arviz_io import InferenceData
    from ..results.gmm_fit import GMMFit
    from ..results.vb_fit import VBFit

__all__ = [
    "component_colors",
    "density_1d",
    "ellipses",
    "responsibilities",
    "traces",
    "trace_positions",
    "free_energy",
    "draws",
    "posterior_marginals",
    "mixing_weights",
    "roundoff",
    "selection",
    "selection_table",
    "table_columns",
]

_QUANTITIES = {
    "elbo": "ELBO (eq. 18)",
    "log_likelihood": "log-likelihood (eq. 26)",
    "kl_gap": "KL gap: log p(X) − ELBO",
}


# --- helpers -----------------------------------------------------------------------------------
def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.gca()
    return ax


def _params(obj):
    """GMMParams from a GMMParams or a fit with ``.params``."""
    from ..core.params import GMMParams

    if isinstance(obj, GMMParams):
        return obj
    params = getattr(obj, "params", None)
    if isinstance(params, GMMParams):
        return params
    if callable(getattr(obj, "mean_params", None)):
        # variational Bayes: E[π_k], the means m_k and (E[Λ_k])⁻¹ (VBFit.mean_params)
        return obj.mean_params()
    raise TypeError(f"expected GMMParams, a fit with .params or a VBFit, got {type(obj).__name__}")


def _numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def _data(x) -> np.ndarray:
    x = _numpy(x)
    return x[:, None] if x.ndim == 1 else x


def component_colors(k: int) -> np.ndarray:
    """(K, 4) RGBA colours, one per component (tab10, then tab20 for K > 10)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return np.array([cmap(j % cmap.N) for j in range(k)])


# --- densities and scatter ---------------------------------------------------------------------
def density_1d(
    x: ArrayLike,
    params: GMMParams | GMMFit | VBFit | None,
    *,
    ax: Axes | None = None,
    bins: int | Sequence[float] | str = 30,
    grid: ArrayLike | None = None,
    components: bool = True,
    hist: bool = True,
    label: str = "mixture",
    color: ColorType = "k",
    predictive: Callable[[np.ndarray], ArrayLike] | None = None,
) -> Axes:
    """Histogram of 1-D data with the mixture density and its weighted components.

    Draws ``p(x) = Σ_k α_k N(x | μ_k, σ_k²)`` as a solid line and each
    ``α_k N(x | μ_k, σ_k²)`` as a dashed line in the component's colour.
    ``params``: GMMParams or a fit (``None`` to draw only ``predictive``).
    ``predictive``: optional callable ``grid (G,) -> density (G,)`` (for example
    a Bayesian posterior predictive), drawn as a dotted line.
    """
    from ..core.gmm import weighted_log_prob

    ax = _axes(ax)
    xs = _data(x)
    if xs.shape[1] != 1:
        raise ValueError(f"density_1d needs 1-D data, got D = {xs.shape[1]}")
    xs = xs[:, 0]
    if grid is None:
        lo, hi = xs.min(), xs.max()
        pad = 0.1 * (hi - lo if hi > lo else 1.0)
        grid = np.linspace(lo - pad, hi + pad, 400)
    grid = np.asarray(grid, dtype=np.float64)
    if hist:
        ax.hist(xs, bins=bins, density=True, color="0.85", edgecolor="0.6", linewidth=0.5, label="data")
    if params is not None:
        p = _params(params).to(torch.float64)
        wlp = weighted_log_prob(torch.from_numpy(grid[:, None]), p).numpy()  # log α_k N(x | μ_k, σ_k²)
        if components:
            for j, c in enumerate(component_colors(p.k)):
                ax.plot(grid, np.exp(wlp[:, j]), "--", color=c, linewidth=1.0)
        ax.plot(grid, np.exp(np.logaddexp.reduce(wlp, axis=1)), color=color, linewidth=1.6, label=label)
    if predictive is not None:
        ax.plot(grid, _numpy(predictive(grid)), ":", color="C3", linewidth=1.6, label="posterior predictive")
    ax.set_ylabel("density")
    return ax


def _ellipse_geometry(cov2: np.ndarray):
    """(half-axes (2,), angle in degrees) of the unit-Mahalanobis ellipse of a 2×2 covariance."""
    vals, vecs = np.linalg.eigh(cov2)
    vals = np.clip(vals, 0.0, None)
    angle = math.degrees(math.atan2(vecs[1, 1], vecs[0, 1]))  # direction of the major axis
    return np.sqrt(vals[::-1]), angle


def ellipses(
    x: ArrayLike,
    params: GMMParams | GMMFit | VBFit,
    *,
    ax: Axes | None = None,
    gamma: ArrayLike | None = None,
    levels: Sequence[float] = (1.0, 2.0),
    features: Sequence[int] = (0, 1),
    scatter: bool = True,
    min_weight: float = 0.0,
    weight_alpha: bool = False,
    point_size: float = 8.0,
    means: bool = True,
) -> Axes:
    """Scatter of 2-D data (two chosen ``features``) with the covariance ellipses of each component.

    Points are coloured by their responsibilities: point i gets Σ_k γ_ik · colour_k,
    so hard assignments show pure colours and uncertain points blend (``gamma=None``:
    grey points).  For each component with α_k > ``min_weight`` and each level s in
    ``levels`` the ellipse {y : (y − μ_k)ᵀ Σ_k⁻¹ (y − μ_k) = s²} is drawn (1σ and 2σ
    by default, so 2K ellipses).  ``weight_alpha=True`` fades ellipses by α_k.
    """
    from matplotlib.patches import Ellipse

    ax = _axes(ax)
    p = _params(params).to(torch.float64)
    f0, f1 = features
    colors = component_colors(p.k)
    if scatter:
        xs = _data(x)
        if gamma is None:
            c = "0.5"
        else:
            g = _numpy(gamma)
            if g.shape != (xs.shape[0], p.k):
                raise ValueError(f"gamma must have shape (N, K) = ({xs.shape[0]}, {p.k}), got {g.shape}")
            c = np.clip(g @ colors[:, :3], 0.0, 1.0)
        ax.scatter(xs[:, f0], xs[:, f1], s=point_size, c=c, linewidths=0)
    alpha = p.alpha.numpy()
    mu = p.mu.numpy()[:, [f0, f1]]
    cov = p.cov.numpy()[:, [f0, f1]][:, :, [f0, f1]]
    shown = [j for j in range(p.k) if alpha[j] > min_weight]
    for j in shown:
        half, angle = _ellipse_geometry(cov[j])
        fade = min(1.0, 0.25 + alpha[j] / max(alpha.max(), 1e-300)) if weight_alpha else 1.0
        for s in levels:
            ax.add_patch(
                Ellipse(
                    mu[j],
                    2 * s * half[0],
                    2 * s * half[1],
                    angle=angle,
                    fill=False,
                    edgecolor=colors[j],
                    linewidth=1.5 if s == levels[0] else 1.0,
                    linestyle="-" if s == levels[0] else "--",
                    alpha=fade,
                )
            )
    if means and shown:
        ax.scatter(mu[shown, 0], mu[shown, 1], marker="x", s=40, c=colors[shown], linewidths=1.5)
    ax.autoscale_view()
    return ax


def responsibilities(
    gamma: ArrayLike,
    *,
    ax: Axes | None = None,
    order: str | ArrayLike | None = "cluster",
    cmap: str | Colormap = "viridis",
    colorbar: bool = True,
) -> Axes:
    """γ (N, K) as a heat map: components on the vertical axis, data points along the horizontal.

    ``order``: "cluster" sorts the points by their most responsible component and then
    by decreasing max γ (blocks appear); ``None`` keeps the data order; or an index array.
    """
    ax = _axes(ax)
    g = _numpy(gamma)
    if g.ndim != 2:
        raise ValueError(f"gamma must be (N, K), got shape {g.shape}")
    if isinstance(order, str):
        if order != "cluster":
            raise ValueError(f"order must be 'cluster', None or an index array, got {order!r}")
        idx = np.lexsort((-g.max(1), g.argmax(1)))
    elif order is None:
        idx = np.arange(g.shape[0])
    else:
        idx = np.asarray(order)
    im = ax.imshow(g[idx].T, aspect="auto", interpolation="nearest", cmap=cmap, vmin=0.0, vmax=1.0)
    ax.set_yticks(range(g.shape[1]))
    ax.set_ylabel("component k")
    ax.set_xlabel("data point i (sorted)" if order is not None else "data point i")
    if colorbar:
        ax.figure.colorbar(im, ax=ax, label=r"$\gamma_{ik}$")
    return ax


# --- traces ------------------------------------------------------------------------------------
def _labelled(fits, labels):
    if isinstance(fits, dict):
        return list(fits.keys()), list(fits.values())
    fits = list(fits)
    if labels is None:
        labels = [getattr(f, "method", f"fit {i}") for i, f in enumerate(fits)]
        if len(set(labels)) < len(labels):
            labels = [f"{lab} #{i}" for i, lab in enumerate(labels)]
    if len(labels) != len(fits):
        raise ValueError(f"{len(labels)} labels for {len(fits)} fits")
    return list(labels), fits


def trace_positions(fit: GMMFit | VBFit) -> np.ndarray:
    """The iteration (or step) count of each trace entry of a fit.

    CAVI/MAP/VB: entry t is the state after iteration t + 1, and the last entry (after the
    closing E-step) sits at ``n_iter``.  SVI: entry t is the state after t steps (t = 0 is
    Θ₀ with γ₀ = e_step(x, Θ₀)), the last at ``n_iter``.  ``info["trace_steps"]`` wins if
    the fit records it (minibatch SVI).
    """
    info = getattr(fit, "info", None) or {}
    if info.get("trace_steps") is not None:
        return np.asarray(info["trace_steps"], dtype=np.float64)
    t = len(fit.elbo)
    first = 0 if getattr(fit, "method", None) == "svi" else 1
    return np.r_[np.arange(first, first + t - 1), getattr(fit, "n_iter", t - 1 + first)].astype(np.float64)


def traces(
    fits: Mapping[str, GMMFit | VBFit] | Iterable[GMMFit | VBFit],
    *,
    ax: Axes | None = None,
    quantity: str = "elbo",
    against: str = "iteration",
    labels: Sequence[str] | None = None,
    reference: float | str | None = None,
    logx: bool = False,
    colors: Sequence[ColorType] | None = None,
    **line_kw: Any,
) -> Axes:
    """Traces of several fits on one axis.

    ``fits``: a sequence of GMMFit (labels default to ``.method``) or a dict label → fit.
    ``quantity``: "elbo" (eq. 18), "log_likelihood" (eq. 26) or "kl_gap"
    (log p(X | Θ) − ELBO = KL(q ‖ p(Z | X, Θ)) ≥ 0, on a log scale; exact zeros,
    which follow every E-step, are not drawn; gaps within 1e-12 relative of round-off count as
    zero, and a fit whose gap is zero throughout gets "(≡ 0)" in its label).
    ``against``: "iteration" (see :func:`trace_positions`; ``logx`` then uses a symlog axis
    so that step 0 shows) or "seconds" (``fit.times``).
    ``reference``: a number L*, or "best" for the largest final value among the fits:
    then L* − value is drawn on a log scale (the distance to the optimum).
    """
    if quantity not in _QUANTITIES:
        raise ValueError(f"quantity must be one of {', '.join(_QUANTITIES)}, got {quantity!r}")
    if against not in ("iteration", "seconds"):
        raise ValueError(f"against must be 'iteration' or 'seconds', got {against!r}")
    ax = _axes(ax)
    labels, fits = _labelled(fits, labels)
    ys = [_numpy(getattr(f, quantity)) for f in fits]
    if isinstance(reference, str):
        if reference != "best":
            raise ValueError(f"reference must be a number or 'best', got {reference!r}")
        reference = max(float(y[-1]) for y in ys)
    log = reference is not None or quantity == "kl_gap"
    if quantity == "kl_gap":  # round-off of two separately computed sums is a closed gap
        ys = [
            np.where(np.abs(y) <= 1e-12 * np.maximum(1.0, np.abs(_numpy(f.log_likelihood))), 0.0, y)
            for f, y in zip(fits, ys)
        ]
    for i, (lab, f, y) in enumerate(zip(labels, fits, ys)):
        if against == "seconds":
            if getattr(f, "times", None) is None:
                raise ValueError(f"fit {lab!r} has no .times; plot against='iteration'")
            t = _numpy(f.times)
        else:
            t = trace_positions(f)
        if reference is not None:
            y = reference - y
        kw = dict(line_kw)
        if colors is not None:
            kw.setdefault("color", colors[i])
        if log:
            if not (y > 0).any():
                lab = f"{lab} (≡ 0)"
            y = np.where(y > 0, y, np.nan)  # exact optimum / closed gap: nothing to draw on a log axis
        ax.plot(t, y, label=lab, **kw)
    if log:
        ax.set_yscale("log")
    if logx:
        if against == "iteration":
            ax.set_xscale("symlog", linthresh=1.0)  # step 0 (SVI's start) stays on the axis
            ax.set_xlim(left=0.0)
        else:
            ax.set_xscale("log")
    ax.set_xlabel("iteration / step" if against == "iteration" else "seconds")
    name = _QUANTITIES[quantity]
    ax.set_ylabel(f"L* − {name}" if reference is not None else name)
    ax.legend(frameon=False)
    return ax


def free_energy(
    log_likelihood: ArrayLike,
    elbo: ArrayLike,
    *,
    ax: Axes | None = None,
    reference: float | None = None,
    labels: Sequence[str] = ("E-step", "M-step"),
) -> Axes:
    """The free-energy picture of EM (second note) over half-steps E, M, E, M, ...

    ``log_likelihood`` and ``elbo`` are equal-length sequences recorded after each
    half-step (eq. 26 and eq. 18).  Both are drawn as distances L* − value to
    ``reference`` (default: the largest value) on a log scale, with the gap
    KL(q ‖ p(Z | X, Θ)) shaded between them: every E-step closes it (the ELBO
    meets log p(X)), every M-step raises both and reopens it.
    """
    ax = _axes(ax)
    ll = _numpy(log_likelihood)
    lb = _numpy(elbo)
    if ll.shape != lb.shape or ll.ndim != 1:
        raise ValueError(f"log_likelihood and elbo must be 1-D of equal length, got {ll.shape} and {lb.shape}")
    ref = float(max(ll.max(), lb.max())) if reference is None else float(reference)
    t = np.arange(ll.shape[0])
    d_ll = np.where(ref - ll > 0, ref - ll, np.nan)
    d_lb = np.where(ref - lb > 0, ref - lb, np.nan)
    ax.step(t, d_ll, where="post", color="C0", label="log p(X | Θ) (eq. 26)")
    ax.step(t, d_lb, where="post", color="C1", linestyle="--", label="ELBO (eq. 18)")
    ax.fill_between(t, d_ll, d_lb, step="post", color="C1", alpha=0.2, label="KL gap")
    ax.set_yscale("log")
    ax.set_xlabel(f"half-step ({labels[0]}, {labels[1]}, ...)")
    ax.set_ylabel("L* − value")
    ax.legend(frameon=False)
    return ax


# --- Bayesian posteriors -----------------------------------------------------------------------
def draws(idata: InferenceData, var: str, *index: int, group: str = "posterior") -> np.ndarray:
    """The draws (chains × draws flattened) of one scalar ``var[index]`` of an ``InferenceData``.

    Plain xarray access (``idata.posterior[var].values``), no ArviZ call.
    """
    data = getattr(idata, group)[var].values  # (chain, draw, *shape)
    return np.asarray(data[(slice(None), slice(None), *index)], dtype=np.float64).reshape(-1)


def posterior_marginals(
    samples: Mapping[str, ArrayLike],
    *,
    ax: Axes | None = None,
    bins: int = 40,
    reference: float | None = None,
    colors: Sequence[ColorType] | None = None,
    xlabel: str | None = None,
) -> Axes:
    """Marginal densities of one scalar under several methods (step histograms).

    ``samples``: dict label → 1-D array of draws (use :func:`draws` for an
    ``InferenceData``); a label whose array has a single value (a point estimate)
    is drawn as a vertical line.  ``reference``: a vertical dotted line (e.g. the MLE).
    """
    ax = _axes(ax)
    arrays = {lab: _numpy(v).reshape(-1) for lab, v in samples.items()}
    spread = np.concatenate([a for a in arrays.values() if a.size > 1] or [np.zeros(1)])
    lo, hi = float(spread.min()), float(spread.max())
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    for i, (lab, a) in enumerate(arrays.items()):
        color = colors[i] if colors is not None else f"C{i}"
        if a.size == 1:
            ax.axvline(float(a[0]), color=color, linewidth=1.5, label=lab)
        else:
            ax.hist(a, bins=edges, density=True, histtype="step", color=color, linewidth=1.4, label=lab)
    if reference is not None:
        ax.axvline(float(reference), color="k", linestyle=":", linewidth=1.0, label="reference")
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_yticks([])
    return ax


def mixing_weights(
    weights: Mapping[str, ArrayLike],
    *,
    ax: Axes | None = None,
    threshold: float | None = None,
    colors: Sequence[ColorType] | None = None,
) -> Axes:
    """Grouped bars of mixing weights: ``weights`` is a dict label → (K,) weights.

    Used to show Dirichlet pruning: with a small concentration alpha0 the surplus
    components of variational Bayes get weights near 0.  ``threshold``: a dashed
    horizontal line (for example 1/N).
    """
    ax = _axes(ax)
    arrays = {lab: _numpy(w).reshape(-1) for lab, w in weights.items()}
    k = max(a.size for a in arrays.values())
    width = 0.8 / len(arrays)
    for i, (lab, a) in enumerate(arrays.items()):
        color = colors[i] if colors is not None else f"C{i}"
        ax.bar(np.arange(a.size) + (i - (len(arrays) - 1) / 2) * width, a, width=width, color=color, label=lab)
    if threshold is not None:
        ax.axhline(threshold, color="k", linestyle="--", linewidth=0.8)
    ax.set_xticks(range(k))
    ax.set_xlabel("component k")
    ax.set_ylabel("mixing weight")
    ax.legend(frameon=False)
    return ax


def roundoff(
    differences: Mapping[str, ArrayLike],
    *,
    ax: Axes | None = None,
    dtype: torch.dtype = torch.float64,
    jitter: float = 0.25,
    seed: int | None = 0,
) -> Axes:
    """Strip plot of |a − b| / |b| for several identities against machine epsilon.

    ``differences``: dict label → array of non-negative relative differences (one
    point per random trial).  Exact zeros are drawn at the bottom of the axis.
    A dashed line marks the unit round-off of ``dtype`` (eps = 2.2e-16 for float64).
    """
    ax = _axes(ax)
    eps = torch.finfo(dtype).eps
    rng = np.random.default_rng(resolve_seed(seed) if seed is not None else None)  # jitter only
    floor = eps * 1e-3
    any_zero = False
    for i, (lab, d) in enumerate(differences.items()):
        d = _numpy(d).reshape(-1)
        if (d < 0).any() or not np.isfinite(d).all():
            raise ValueError(f"differences for {lab!r} must be finite and non-negative")
        xs = i + rng.uniform(-jitter, jitter, size=d.size)
        zero = d == 0
        any_zero |= bool(zero.any())
        ax.scatter(xs[~zero], d[~zero], s=14, color=f"C{i}", zorder=3)
        ax.scatter(xs[zero], np.full(int(zero.sum()), floor), s=18, marker="v", color=f"C{i}", zorder=3)
    ax.axhline(eps, color="k", linestyle="--", linewidth=0.8)
    ax.text(-0.45, eps, f"eps = {eps:.1e}", va="bottom", ha="left", fontsize=8)
    if any_zero:
        ax.axhline(floor, color="0.6", linestyle=":", linewidth=0.8)
        ax.text(-0.45, floor, "exactly 0", va="bottom", ha="left", fontsize=8, color="0.4")
    ax.set_yscale("log")
    ax.set_xticks(range(len(differences)))
    ax.set_xticklabels(list(differences), rotation=20, ha="right")
    ax.set_ylabel("relative difference")
    ax.set_xlim(-0.5, len(differences) - 0.5)
    return ax


# --- model selection ---------------------------------------------------------------------------
def table_columns(table: Any) -> dict[str, list]:
    """A model-selection table as a dict column → list: accepts a dict of columns, a list of
    row dicts, a pandas DataFrame, or an object with ``.rows`` (row dicts) or ``.columns``."""
    if hasattr(table, "to_dict") and hasattr(table, "columns") and hasattr(table, "index"):  # DataFrame
        frame = table.reset_index() if table.index.name else table
        return {str(c): list(frame[c]) for c in frame.columns}
    if isinstance(table, dict):
        return {str(c): list(v) for c, v in table.items()}
    if isinstance(getattr(table, "columns", None), dict):
        return {str(c): list(v) for c, v in table.columns.items()}
    try:
        rows = list(getattr(table, "rows", table))
    except TypeError:
        raise TypeError(f"cannot read a model-selection table from {type(table).__name__}") from None
    if rows and isinstance(rows[0], dict):
        return {str(c): [r.get(c) for r in rows] for c in rows[0]}
    if rows and hasattr(rows[0], "_asdict"):
        return {str(c): [r._asdict()[c] for r in rows] for c in rows[0]._asdict()}
    raise TypeError(f"cannot read a model-selection table from {type(table).__name__}")


def _k_column(cols: dict) -> str:
    for name in ("k", "K", "n_components"):
        if name in cols:
            return name
    raise ValueError(f"the table has no column 'k' (columns: {', '.join(cols)})")


def selection(
    table: Any,
    *,
    ax: Axes | None = None,
    criteria: Sequence[str] | None = None,
    lower_is_better: Mapping[str, bool] | None = None,
) -> Axes:
    """Model-selection criteria against K with the best K starred.

    ``table``: a ``SelectionTable`` (``select_k``) or any table :func:`table_columns` reads.
    ``criteria``: columns to draw (default: the table's ``criterion`` if it names one, else
    every numeric column except K).  One criterion is drawn in its own units (with ±se
    error bars if the table has an ``se`` column); several are rescaled to [0, 1] each.
    ``lower_is_better``: dict criterion → bool (default: the table's ``higher_is_better``
    for its criterion; else True for names containing "bic" or "aic").
    """
    ax = _axes(ax)
    cols = table_columns(table)
    kname = _k_column(cols)
    ks = np.asarray(cols[kname], dtype=np.float64)
    own = getattr(table, "criterion", None)
    if criteria is None:
        criteria = [own] if own in cols else [c for c, v in cols.items() if c != kname and _is_numeric(v)]
    single = len(criteria) == 1
    for i, c in enumerate(criteria):
        v = np.asarray([np.nan if a is None else a for a in cols[c]], dtype=np.float64)
        if lower_is_better and c in lower_is_better:
            low = lower_is_better[c]
        elif c == own and hasattr(table, "higher_is_better"):
            low = not table.higher_is_better
        else:
            low = any(s in c.lower() for s in ("bic", "aic"))
        if not np.isfinite(v).any():
            continue
        if single:
            y = v
            if "se" in cols:
                ax.errorbar(ks, y, yerr=np.asarray(cols["se"], dtype=np.float64), fmt="none", ecolor=f"C{i}", capsize=3)
        else:
            lo, hi = np.nanmin(v), np.nanmax(v)
            y = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
        ax.plot(ks, y, "o-", color=f"C{i}", label=f"{c} ({'lower' if low else 'higher'} is better)")
        best = int(np.nanargmin(v) if low else np.nanargmax(v))
        ax.plot(ks[best], y[best], "*", color=f"C{i}", markersize=15)
    ax.set_xlabel("K")
    ax.set_ylabel(criteria[0] if single else "criterion (rescaled to [0, 1])")
    ax.set_xticks(ks)
    ax.legend(frameon=False)
    return ax


def _is_numeric(values) -> bool:
    try:
        np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
        return True
    except (TypeError, ValueError):
        return False


def selection_table(table: Any, *, ax: Axes | None = None, fmt: str = "{:.6g}") -> Axes:
    """The model-selection table drawn as a matplotlib table (axis frame hidden)."""
    ax = _axes(ax)
    cols = table_columns(table)
    names = list(cols)
    n = len(next(iter(cols.values()))) if cols else 0
    cells = [[_cell(cols[c][r], fmt) for c in names] for r in range(n)]
    ax.axis("off")
    ax.table(cellText=cells, colLabels=names, loc="center", cellLoc="right")
    return ax


def _cell(v, fmt):
    if v is None:
        return "—"
    if isinstance(v, (float, np.floating)) or (isinstance(v, torch.Tensor) and v.is_floating_point()):
        return fmt.format(float(v))
    return str(v)
