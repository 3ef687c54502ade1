"""Every ArviZ call of the package lives here (ArviZ 0.2x ``InferenceData``), so a
move to ArviZ 1.x is one file's work.

Conventions of every ``InferenceData`` the package builds:

- posterior: ``alpha`` (chain, draw, component), ``mu`` (chain, draw, component, feature),
  ``cov`` (chain, draw, component, feature, feature_);
- observed_data: ``x`` (obs, feature); log_likelihood: ``x`` (chain, draw, obs) with
  ln p(x_i | θ_s) = ln Σ_k α_k N(x_i | μ_k, Σ_k) (eq. 26 per point); posterior_predictive:
  ``x`` (chain, draw, obs, feature), one replicate of the data per draw.

Other modules receive plain numpy / pandas / small result types from here, never ArviZ objects
except the ``InferenceData`` itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..core.gaussian import logsumexp_rows
from ..core.gmm import log_gaussian
from ..core.params import GMMParams
from ..core.rng import resolve_seed, spawn_seeds
from ..core.threads import limited_threads
from ..core.validation import ArrayLike, as_data
from ..core.vb_posterior import sample_posterior

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Sequence
    from typing import Protocol

    import xarray as xr
    from arviz import InferenceData as InferenceData  # the other modules annotate with it from here

    from ..core.vb_posterior import VBPosterior

    # GMMFit and VBFit import this module, so their types here are structural (no import cycle)
    class _PointFit(Protocol):
        """What :func:`fit_to_inference_data` reads of a ``GMMFit``."""

        @property
        def params(self) -> GMMParams: ...
        @property
        def method(self) -> str: ...
        @property
        def elbo(self) -> torch.Tensor: ...

    class _PosteriorFit(Protocol):
        """What :func:`vb_to_inference_data` reads of a ``VBFit``."""

        @property
        def posterior(self) -> VBPosterior: ...
        @property
        def method(self) -> str: ...
        @property
        def elbo(self) -> torch.Tensor: ...


__all__ = [
    "fit_to_inference_data",
    "vb_to_inference_data",
    "nuts_to_inference_data",
    "draws_to_inference_data",
    "summary",
    "diagnostics",
    "loo",
    "LooResult",
    "posterior_arrays",
    "posterior_mean_params",
    "save_inference_data",
    "load_inference_data",
]

_DIMS = {
    "alpha": ["component"],
    "mu": ["component", "feature"],
    "cov": ["component", "feature", "feature_"],
}


def _coords(k: int, d: int, n: int | None = None) -> dict:
    coords = {"component": np.arange(k), "feature": np.arange(d), "feature_": np.arange(d)}
    if n is not None:
        coords["obs"] = np.arange(n)
    return coords


def fit_to_inference_data(fit: _PointFit) -> InferenceData:
    """A point-estimate fit as a one-chain, one-draw posterior (alpha, mu, cov)."""
    import arviz as az

    p = fit.params
    posterior = {
        "alpha": p.alpha.numpy()[None, None],
        "mu": p.mu.numpy()[None, None],
        "cov": p.cov.numpy()[None, None],
    }
    return az.from_dict(
        posterior=posterior,
        coords=_coords(p.k, p.d),
        dims=_DIMS,
        attrs={"method": fit.method, "point_estimate": 1, "elbo": float(fit.elbo[-1])},
    )


# --- builders -------------------------------------------------------------------------------------
def pointwise_log_likelihood(x: np.ndarray, alpha: np.ndarray, mu: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """(M, N) matrix ln Σ_k α_k N(x_i | μ_k, Σ_k) for M draws (eq. 26 per point), via
    ``core.gmm.log_gaussian`` (precision Cholesky factors, log space)."""
    xt = torch.as_tensor(x, dtype=torch.float64)
    out = np.empty((alpha.shape[0], x.shape[0]))
    with np.errstate(divide="ignore"):
        log_alpha = np.log(alpha)
    for m in range(alpha.shape[0]):
        lg = log_gaussian(xt, torch.from_numpy(mu[m]), torch.from_numpy(cov[m]))
        out[m] = logsumexp_rows(lg.add_(torch.from_numpy(log_alpha[m]))).numpy()  # eq. 26, per point
    return out


def posterior_predictive_draws(alpha: np.ndarray, mu: np.ndarray, cov: np.ndarray, n: int, seed: int) -> np.ndarray:
    """(M, n, D) replicate data, one set per draw: z ~ Cat(α), x ~ N(μ_z, Σ_z)
    (``numpy.random.default_rng(seed)``)."""
    rng = np.random.default_rng(seed)
    m, k, d = mu.shape
    u = rng.random((m, n))
    cum = np.cumsum(alpha, axis=1)
    z = np.minimum((u[:, :, None] > cum[:, None, :] * (1 - 1e-12)).sum(-1), k - 1)  # inverse-CDF draw of z
    chol = np.linalg.cholesky(cov)  # (M, K, D, D)
    rows = np.arange(m)[:, None]
    eps = rng.standard_normal((m, n, d))
    return mu[rows, z] + np.einsum("mnde,mne->mnd", chol[rows, z], eps)


def draws_to_inference_data(
    posterior: dict,
    *,
    x: ArrayLike | None = None,
    sample_stats: dict | None = None,
    attrs: dict | None = None,
    seed: int | None = None,
    predictive: bool = True,
) -> InferenceData:
    """Build an ``InferenceData`` from draws ``alpha`` (C, S, K), ``mu`` (C, S, K, D), ``cov``
    (C, S, K, D, D).  With data ``x`` (N, D): observed_data, log_likelihood and (``predictive``)
    posterior_predictive (seeded by ``seed``)."""
    import arviz as az

    alpha, mu, cov = (np.asarray(posterior[v], dtype=np.float64) for v in ("alpha", "mu", "cov"))
    c, s, k, d = mu.shape
    groups: dict[str, Any] = {}
    dims = dict(_DIMS)
    n = None
    if x is not None:
        x = np.asarray(x, dtype=np.float64).reshape(-1, d)
        n = x.shape[0]
        flat = lambda a: a.reshape((c * s,) + a.shape[2:])
        ll = pointwise_log_likelihood(x, flat(alpha), flat(mu), flat(cov))
        groups["log_likelihood"] = {"x": ll.reshape(c, s, n)}
        groups["observed_data"] = {"x": x}
        dims["x"] = ["obs", "feature"]
        if predictive:
            rep = posterior_predictive_draws(flat(alpha), flat(mu), flat(cov), n, resolve_seed(seed))
            groups["posterior_predictive"] = {"x": rep.reshape(c, s, n, d)}
    with _quiet():
        idata = az.from_dict(
            posterior={"alpha": alpha, "mu": mu, "cov": cov},
            sample_stats=sample_stats,
            coords=_coords(k, d, n),
            dims=dims,
            attrs=_storable(attrs or {}),
            **groups,
        )
    if x is not None:  # from_dict gives log_likelihood / posterior_predictive the dims of "x" minus chain/draw
        _fix_dims(idata)
    return idata


def _storable(attrs: dict) -> dict:
    """Attributes netCDF can hold: an integer past int64 (a seed may be any size) becomes its decimal
    string, so ``to_netcdf`` never fails after a long fit."""
    big = lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool) and not -(2**63) <= v < 2**63
    return {key: str(int(v)) if big(v) else v for key, v in attrs.items()}


def _fix_dims(idata) -> None:
    """log_likelihood x: (chain, draw, obs); posterior_predictive x: (chain, draw, obs, feature)."""
    ll = idata.log_likelihood["x"]
    if ll.dims[-1] != "obs":
        idata.log_likelihood["x"] = ll.rename({ll.dims[-1]: "obs"})
    idata.log_likelihood = idata.log_likelihood.drop_vars(
        [v for v in idata.log_likelihood.coords if v not in ("chain", "draw", "obs")]
    )


class _quiet:
    """Silence ArviZ's informational warnings while building (e.g. about dims)."""

    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", UserWarning)

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def nuts_to_inference_data(
    posterior: dict, sample_stats: dict, x: ArrayLike, *, attrs: dict | None = None, seed: int | None = None
) -> InferenceData:
    """The ``InferenceData`` of ``fit_nuts`` (all five groups), with R-hat / ESS summaries in attrs."""
    idata = draws_to_inference_data(posterior, x=x, sample_stats=sample_stats, attrs=attrs, seed=seed)
    idata.attrs.update(diagnostics(idata))
    return idata


def vb_to_inference_data(
    vbfit: _PosteriorFit, num_samples: int = 1000, seed: int | None = None, x: ArrayLike | None = None
) -> InferenceData:
    """``num_samples`` independent draws from a ``VBFit``'s q(α) q(μ, Λ) (``core.vb_posterior.sample_posterior``)
    as a one-chain ``InferenceData``; with data ``x`` also observed_data, log_likelihood and
    posterior_predictive."""
    seed = resolve_seed(seed)
    draw_seed, ppc_seed = spawn_seeds(seed, 2)
    d = sample_posterior(vbfit.posterior, num_samples, draw_seed)
    posterior = {name: d[name][None] for name in ("alpha", "mu", "cov")}
    attrs = {
        "method": vbfit.method,
        "seed": seed,
        "elbo": float(vbfit.elbo[-1]),
        "draws": "independent draws from q (no Markov chain)",
    }
    if x is not None:
        x = as_data(x).double().numpy()
    with limited_threads():
        return draws_to_inference_data(posterior, x=x, attrs=attrs, seed=ppc_seed)


# --- diagnostics ----------------------------------------------------------------------------------
def summary(idata: InferenceData, var_names: Sequence[str] | None = None, **kwargs: Any) -> Any:
    """``az.summary`` (a pandas DataFrame: mean, sd, HDI, MCSE, ess_bulk, ess_tail, r_hat) of the
    posterior; ``var_names`` defaults to alpha, mu, cov."""
    import arviz as az

    with _quiet():
        return az.summary(idata, var_names=list(var_names or ("alpha", "mu", "cov")), **kwargs)


def diagnostics(idata: InferenceData, var_names: Sequence[str] = ("alpha", "mu", "cov")) -> dict[str, float]:
    """Worst-case convergence numbers over ``var_names``: ``r_hat_max`` (rank-normalised split
    R-hat; NaN with fewer than 2 chains × 4 draws), ``ess_bulk_min`` and ``ess_tail_min``."""
    import arviz as az

    posterior = idata.posterior  # type: ignore[attr-defined]  # InferenceData sets its groups dynamically
    post = posterior[list(var_names)]
    several = posterior.sizes["chain"] > 1 and posterior.sizes["draw"] >= 4
    with _quiet(), np.errstate(invalid="ignore", divide="ignore"):
        ess_bulk = az.ess(post, method="bulk")
        ess_tail = az.ess(post, method="tail")
        r_hat = az.rhat(post) if several else None

    def worst(ds: xr.Dataset, f: Callable[..., Any]) -> float:
        return float(f([f(ds[v].values) for v in ds.data_vars]))

    return {
        "ess_bulk_min": worst(ess_bulk, np.nanmin),
        "ess_tail_min": worst(ess_tail, np.nanmin),
        "r_hat_max": worst(r_hat, np.nanmax) if r_hat is not None else float("nan"),  # r_hat is None iff not several
    }


def ess_bulk_min(idata: InferenceData, var_names: Sequence[str] = ("alpha", "mu", "cov")) -> float:
    """The smallest bulk ESS over every scalar of ``var_names`` (the benchmark's numerator)."""
    return diagnostics(idata, var_names)["ess_bulk_min"]


class LooResult(tuple):
    """(elpd_loo, se) with the extra attributes ``p_loo``, ``pareto_k`` (N,), ``n_high_k``
    (Pareto k > 0.7: PSIS unreliable for those points) and ``warning`` (ArviZ's flag)."""

    elpd_loo: float
    se: float
    p_loo: float
    pareto_k: np.ndarray
    n_high_k: int
    warning: bool

    def __new__(cls, elpd_loo, se, p_loo, pareto_k, warning):
        self = super().__new__(cls, (float(elpd_loo), float(se)))
        self.elpd_loo, self.se, self.p_loo = float(elpd_loo), float(se), float(p_loo)
        self.pareto_k = np.asarray(pareto_k, dtype=np.float64)
        self.n_high_k = int((self.pareto_k > 0.7).sum())
        self.warning = bool(warning)
        return self

    def __repr__(self):
        return (
            f"LooResult(elpd_loo={self.elpd_loo:.4f}, se={self.se:.4f}, p_loo={self.p_loo:.3f}, "
            f"n_high_k={self.n_high_k})"
        )


def loo(idata: InferenceData) -> LooResult:
    """PSIS-LOO (``az.loo`` with pointwise Pareto k) from the ``log_likelihood`` group."""
    import arviz as az

    with _quiet():
        res = az.loo(idata, pointwise=True)
    return LooResult(res["elpd_loo"], res["se"], res["p_loo"], res["pareto_k"].values, res["warning"])


# --- plain arrays for other modules ---------------------------------------------------------------
def posterior_arrays(idata: InferenceData, var: str, group: str = "posterior") -> np.ndarray:
    """``var``'s draws as a numpy array (chain, draw, *shape)."""
    return np.asarray(getattr(idata, group)[var].values)


def posterior_mean_params(idata: InferenceData) -> GMMParams:
    """The posterior means E[α], E[μ], E[Σ] over all chains and draws as a ``GMMParams``."""
    alpha = posterior_arrays(idata, "alpha").mean((0, 1))
    cov = posterior_arrays(idata, "cov").mean((0, 1))
    return GMMParams(
        alpha / alpha.sum(), posterior_arrays(idata, "mu").mean((0, 1)), 0.5 * (cov + np.swapaxes(cov, -1, -2))
    )


def save_inference_data(idata: InferenceData, path: str | os.PathLike[str]) -> None:
    """Write to netCDF (``InferenceData.to_netcdf``, h5netcdf engine)."""
    idata.to_netcdf(str(path))


def load_inference_data(path: str | os.PathLike[str]) -> InferenceData:
    import arviz as az

    return az.from_netcdf(str(path))
