"""ppl_gmm.viz.plot: every function returns its ax and draws what it claims, checked numerically
(ellipse outlines against numpy's Mahalanobis distance, densities against scipy)."""

import ast
import inspect

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.image import AxesImage
from matplotlib.patches import Ellipse
from scipy import stats

import ppl_gmm as pg
from ppl_gmm.viz import plot

from oracles import random_params


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny problems: one torch thread (two processes of ``pytest -n 2`` share two cores)."""
    from ppl_gmm.core.threads import limited_threads

    with limited_threads():
        yield


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


@pytest.fixture(scope="module")
def faithful_fit():
    x = pg.datasets.load_old_faithful()
    return x, pg.fit_cavi(x, 3, seed=0)


def test_module_never_shows_or_fits():
    calls = [node.func for node in ast.walk(ast.parse(inspect.getsource(plot))) if isinstance(node, ast.Call)]
    names = {getattr(f, "attr", getattr(f, "id", None)) for f in calls}
    assert "show" not in names
    assert not {n for n in names if n and n.startswith("fit_")}
    assert "savefig" not in names


def test_density_1d_matches_scipy(ax):
    params = random_params(3, 1, seed=4)
    x, _ = pg.datasets.make_mixture(200, params, seed=1)
    grid = np.linspace(-10, 10, 301)
    out = plot.density_1d(x, params, ax=ax, bins=17, grid=grid)
    assert out is ax
    assert len(ax.patches) == 17  # histogram bars
    lines = ax.get_lines()
    assert len(lines) == 3 + 1  # K components + the mixture
    a, m, c = params.alpha.numpy(), params.mu.numpy()[:, 0], params.cov.numpy()[:, 0, 0]
    comps = [a[k] * stats.norm(m[k], np.sqrt(c[k])).pdf(grid) for k in range(3)]
    for line, ref in zip(lines[:3], comps):
        np.testing.assert_allclose(line.get_ydata(), ref, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(lines[3].get_ydata(), sum(comps), rtol=1e-10)


def test_density_1d_predictive_and_refuses_2d(ax, faithful_fit):
    x, fit = faithful_fit
    with pytest.raises(ValueError, match="1-D"):
        plot.density_1d(x, fit, ax=ax)
    g = pg.datasets.load_galaxies()
    plot.density_1d(g, None, ax=ax, hist=False, predictive=lambda t: np.ones_like(t))
    assert len(ax.get_lines()) == 1 and np.all(ax.get_lines()[0].get_ydata() == 1)


def test_density_1d_uses_current_axes():
    fig = plt.figure()
    try:
        g = pg.datasets.load_galaxies()
        out = plot.density_1d(g, pg.fit_cavi(g, 2, seed=0))
        assert out is plt.gca()
    finally:
        plt.close(fig)


def _outline(e: Ellipse) -> np.ndarray:
    """Points on the drawn outline: the on-curve vertices of the cubic Bézier unit circle."""
    path = e.get_path()
    on_curve = path.vertices[:-1:3]  # MOVETO, then every third vertex ends a CURVE4 segment
    return e.get_patch_transform().transform(on_curve)


def test_ellipses_are_mahalanobis_contours(ax, faithful_fit):
    x, fit = faithful_fit
    out = plot.ellipses(x, fit, gamma=fit.gamma, ax=ax)
    assert out is ax
    ellipses = [p for p in ax.patches if isinstance(p, Ellipse)]
    assert len(ellipses) == 2 * fit.k  # 1σ and 2σ per component
    p = fit.params
    for j in range(fit.k):
        prec = np.linalg.inv(p.cov[j].numpy())
        for s, e in zip((1.0, 2.0), ellipses[2 * j : 2 * j + 2]):
            d = _outline(e) - p.mu[j].numpy()
            np.testing.assert_allclose(np.einsum("nd,de,ne->n", d, prec, d), s**2, rtol=1e-8)


def test_ellipses_colour_points_by_responsibility(ax):
    x = np.array([[0.0, 0.0], [5.0, 5.0], [2.5, 2.5]])
    params = pg.GMMParams([0.5, 0.5], [[0.0, 0.0], [5.0, 5.0]], np.stack([np.eye(2)] * 2))
    gamma = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    plot.ellipses(x, params, gamma=gamma, ax=ax, means=False)
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(points) == 1
    colours = points[0].get_facecolors()[:, :3]
    ref = plot.component_colors(2)[:, :3]
    np.testing.assert_allclose(colours[0], ref[0])
    np.testing.assert_allclose(colours[1], ref[1])
    np.testing.assert_allclose(colours[2], 0.5 * (ref[0] + ref[1]))
    with pytest.raises(ValueError, match="gamma must have shape"):
        plot.ellipses(x, params, gamma=gamma[:2], ax=ax)


def test_ellipses_hide_switched_off_components(ax, faithful_fit):
    x, fit = faithful_fit
    alpha = torch.tensor([0.5, 0.5 - 1e-4, 1e-4], dtype=torch.float64)
    params = pg.GMMParams(alpha, fit.params.mu, fit.params.cov)
    plot.ellipses(x, params, ax=ax, min_weight=1e-3, levels=(1.0,))
    assert len(ax.patches) == 2


def test_responsibilities_heat_map(ax, faithful_fit):
    _, fit = faithful_fit
    out = plot.responsibilities(fit.gamma, ax=ax)
    assert out is ax
    images = [c for c in ax.get_children() if isinstance(c, AxesImage)]
    assert len(images) == 1
    shown = np.asarray(images[0].get_array())
    assert shown.shape == (fit.k, fit.gamma.shape[0])
    # sorted into blocks: the argmax along the points never decreases
    assert np.all(np.diff(shown.argmax(0)) >= 0)
    np.testing.assert_allclose(np.sort(shown, axis=1), np.sort(fit.gamma.numpy().T, axis=1))
    assert len(ax.figure.axes) == 2  # the colour bar


def _svi_like(fit, n=4):
    """A GMMFit with the SVI trace convention (entry 0 = start), built without running Pyro."""
    return pg.GMMFit(
        **{
            **fit.__dict__,
            "method": "svi",
            "n_iter": n - 1,
            "elbo": fit.elbo[:n],
            "log_likelihood": fit.log_likelihood[:n],
            "times": fit.times[:n],
        }
    )


def test_traces_positions_and_reference(ax):
    x = pg.datasets.load_old_faithful()
    cavi = pg.fit_cavi(x, 2, seed=0)
    svi = _svi_like(cavi)
    out = plot.traces({"cavi": cavi, "svi": svi}, ax=ax, reference=float(cavi.elbo[-1]) + 1.0)
    assert out is ax
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["cavi", "svi"]
    np.testing.assert_array_equal(lines[0].get_xdata(), [*range(1, cavi.n_iter + 1), cavi.n_iter])
    np.testing.assert_array_equal(lines[1].get_xdata(), [0, 1, 2, 3])
    np.testing.assert_allclose(lines[0].get_ydata(), float(cavi.elbo[-1]) + 1.0 - cavi.elbo.numpy())
    assert ax.get_yscale() == "log"


def test_traces_seconds_kl_gap_and_errors(ax):
    x = pg.datasets.load_old_faithful()
    cavi = pg.fit_cavi(x, 2, seed=0)
    closed = pg.GMMFit(**{**cavi.__dict__, "log_likelihood": cavi.elbo.clone()})
    plot.traces([cavi, closed], ax=ax, quantity="kl_gap", against="seconds", labels=["a", "b"])
    a, b = ax.get_lines()
    np.testing.assert_array_equal(a.get_xdata(), cavi.times.numpy())
    gap = cavi.kl_gap.numpy()
    assert np.all(gap[:-1] > 0)
    np.testing.assert_allclose(a.get_ydata()[:-1], gap[:-1])
    assert np.isnan(a.get_ydata()[-1])  # closed by the final E-step
    assert b.get_label() == "b (≡ 0)"
    with pytest.raises(ValueError, match="quantity"):
        plot.traces([cavi], ax=ax, quantity="loss")
    with pytest.raises(ValueError, match="against"):
        plot.traces([cavi], ax=ax, against="wallclock")
    with pytest.raises(ValueError, match="no .times"):
        plot.traces([pg.GMMFit(**{**cavi.__dict__, "times": None})], ax=ax, against="seconds")


def test_free_energy_steps(ax):
    ll = np.array([-10.0, -5.0, -5.0, -4.0])
    lb = np.array([-10.0, -6.0, -5.0, -4.5])
    out = plot.free_energy(ll, lb, ax=ax, reference=-3.0)
    assert out is ax
    l1, l2 = ax.get_lines()
    np.testing.assert_allclose(l1.get_ydata(), -3.0 - ll)
    np.testing.assert_allclose(l2.get_ydata(), -3.0 - lb)
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 1
    with pytest.raises(ValueError, match="equal length"):
        plot.free_energy(ll, lb[:2], ax=ax)


def test_draws_and_posterior_marginals(ax):
    x = pg.datasets.load_old_faithful()
    fit = pg.fit_cavi(x, 2, seed=0)
    idata = fit.to_arviz()
    np.testing.assert_array_equal(plot.draws(idata, "mu", 1, 0), [float(fit.params.mu[1, 0])])
    rng = np.random.default_rng(0)
    out = plot.posterior_marginals(
        {"A": rng.normal(size=500), "B": rng.normal(1, 1, size=500), "point": plot.draws(idata, "alpha", 0)},
        ax=ax,
        bins=20,
        reference=0.0,
    )
    assert out is ax
    assert len(ax.patches) == 2  # two step histograms
    assert len(ax.get_lines()) == 2  # the point estimate and the reference
    heights = [p.get_path().vertices[:, 1].max() for p in ax.patches]
    assert all(0.2 < h < 0.8 for h in heights)  # normalised densities of N(·, 1)


def test_mixing_weights_and_roundoff(ax):
    plot.mixing_weights({"a": [0.5, 0.5, 0.0], "b": np.array([0.2, 0.3, 0.5])}, ax=ax, threshold=0.01)
    assert len(ax.patches) == 6
    fig, ax2 = plt.subplots()
    try:
        out = plot.roundoff({"x": [1e-17, 0.0, 3e-16], "y": [2e-16]}, ax=ax2)
        assert out is ax2
        assert len(ax2.collections) == 4  # per label: the non-zero points and the exact zeros
        offsets = [c.get_offsets() for c in ax2.collections]
        np.testing.assert_allclose(np.sort(offsets[0][:, 1]), [1e-17, 3e-16])
        assert offsets[1].shape[0] == 1 and offsets[3].shape[0] == 0  # one exact zero, drawn apart
        assert ax2.get_yscale() == "log"
        assert any(np.allclose(ln.get_ydata(), np.finfo(np.float64).eps) for ln in ax2.get_lines())
        with pytest.raises(ValueError, match="non-negative"):
            plot.roundoff({"x": [-1.0]}, ax=ax2)
    finally:
        plt.close(fig)


def test_selection_marks_the_best_k(ax):
    from ppl_gmm.results.selection import SelectionTable

    rows = tuple({"k": k, "bic": b, "log_likelihood": -b / 2} for k, b in zip((1, 2, 3, 4), (30.0, 10.0, 20.0, 25.0)))
    table = SelectionTable(method="bic", criterion="bic", higher_is_better=False, rows=rows)
    out = plot.selection(table, ax=ax)
    assert out is ax
    line, star = ax.get_lines()
    np.testing.assert_array_equal(line.get_ydata(), [30.0, 10.0, 20.0, 25.0])
    assert list(star.get_xdata()) == [2.0] and list(star.get_ydata()) == [10.0]
    fig, ax2 = plt.subplots()
    try:
        plot.selection({"k": [1, 2, 3], "elbo": [-5.0, -1.0, -3.0], "bic": [3.0, 2.0, 1.0]}, ax=ax2)
        stars = [ln for ln in ax2.get_lines() if ln.get_marker() == "*"]
        assert [float(s.get_xdata()[0]) for s in stars] == [2.0, 3.0]  # max ELBO, min BIC
    finally:
        plt.close(fig)


def test_selection_table_cells(ax):
    out = plot.selection_table([{"k": 1, "bic": 1.5}, {"k": 2, "bic": None}], ax=ax)
    assert out is ax
    (table,) = ax.tables
    texts = {key: cell.get_text().get_text() for key, cell in table.get_celld().items()}
    assert texts[(0, 0)] == "k" and texts[(1, 1)] == "1.5" and texts[(2, 1)] == "—"
    with pytest.raises(TypeError, match="cannot read"):
        plot.table_columns(42)


def test_params_from_vb_fit(faithful):
    fit = pg.fit_vb(faithful, 2, pg.default_prior(faithful, 2), seed=0)
    p = plot._params(fit)
    post = fit.posterior
    np.testing.assert_allclose(p.alpha.numpy(), (post.alpha / post.alpha.sum()).numpy())
    np.testing.assert_allclose(
        p.cov.numpy(), np.linalg.inv(post.nu.numpy()[:, None, None] * post.W.numpy()), rtol=1e-10
    )
    with pytest.raises(TypeError, match="GMMParams"):
        plot._params(object())
