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

from ..core.errors import DegenerateComponentError, MultimodalityWarning
from ..core.gaussian import log_gaussian_prec
from ..core.linalg import checked_cholesky, precision_cholesky
from ..core.params import GMMParams
from ..core.rng import resolve_seed, spawn_seeds
from ..core.threads import limited_threads
from ..core.validation import ArrayLike, as_data
from ..core.vb_posterior import sample_posterior
from .matching import relabel, switch_fraction

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
    "mcmc_to_inference_data",
    "draws_to_inference_data",
    "posterior_predictive",
    "relabel_chains",
    "diagnose_modes",
    "chain_separation",
    "LABEL_RULE",
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
    """(M, N) matrix ln Σ_k α_k N(x_i | μ_k, Σ_k) for M draws (eq. 26 per point): the draws' M·K
    components as one stack (``core.gaussian.log_gaussian_prec`` through precision Cholesky factors,
    log space), in blocks of draws that keep the (N, draws, K) temporary near 2²¹ numbers."""
    xt = torch.as_tensor(x, dtype=torch.float64)
    m_all, k, d = mu.shape
    n = x.shape[0]
    out = np.empty((m_all, n))
    with np.errstate(divide="ignore"):
        log_alpha = torch.from_numpy(np.log(alpha))
    step = max(1, (1 << 21) // max(1, n * k))
    for s in range(0, m_all, step):
        e = min(s + step, m_all)
        cov_b = torch.from_numpy(np.ascontiguousarray(cov[s:e])).reshape(-1, d, d)
        chol, bad = checked_cholesky(cov_b)
        if bad is not None:
            raise DegenerateComponentError(bad % k, f"in posterior draw {s + bad // k}")
        lg = log_gaussian_prec(
            xt, torch.from_numpy(np.ascontiguousarray(mu[s:e])).reshape(-1, d), precision_cholesky(chol=chol)
        )
        wlp = lg.view(n, e - s, k).add_(log_alpha[s:e])  # ln α_k + ln N(x_i | μ_k, Σ_k)
        out[s:e] = torch.logsumexp(wlp, dim=2).T.numpy()  # eq. 26, per point
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


# --- MCMC: one common labelling for all chains, and chains in different modes ----------------------
LABEL_RULE = (
    "post-hoc relabelling of all chains to one common reference: every draw permuted by Hungarian matching of "
    "its means to the reference (Mahalanobis distance under the reference's pooled covariance); reference = the "
    "sampler's start (fit_nuts: chain 0's MAP) or else the draw with the highest log-likelihood, ordered by the "
    "first coordinate of mu, then the posterior mean of the relabelled draws of all chains (ordered the same "
    "way), matching repeated once"
)


def mcmc_to_inference_data(
    posterior: dict,
    sample_stats: dict,
    x: ArrayLike,
    *,
    attrs: dict | None = None,
    seed: int | None = None,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
    relabel: bool = True,
    mode_threshold: float = 3.0,
    stacklevel: int = 2,
) -> InferenceData:
    """The ``InferenceData`` of an MCMC sampler from its raw (not relabelled) draws ``alpha`` (C, S, K),
    ``mu`` (C, S, K, D), ``cov`` (C, S, K, D, D): all five groups (:func:`draws_to_inference_data`),
    every chain relabelled to one common reference and the modes checked (:func:`relabel_chains`),
    then R-hat and ESS of the relabelled draws in ``attrs`` (:func:`diagnostics`).  ``reference``:
    (mu (K, D), cov (K, D, D)) to start the matching from (``None``: the best draw).  ``relabel=False``
    keeps the draws' labels (a sampler whose labels are fixed by construction, e.g. ordered means)
    and only records the diagnostics.  ``stacklevel``: of the warning, as in ``warnings.warn``, counted
    from the caller of this function."""
    idata = draws_to_inference_data(posterior, x=x, sample_stats=sample_stats, attrs=attrs, seed=seed)
    _relabel(idata, reference, apply=relabel)
    diagnose_modes(idata, threshold=mode_threshold, stacklevel=stacklevel + 1)
    return idata


def relabel_chains(
    idata: InferenceData,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    mode_threshold: float = 3.0,
    warn: bool = True,
) -> InferenceData:
    """A copy of ``idata`` with every chain relabelled to one common reference (:data:`LABEL_RULE`,
    ``matching.relabel`` over the draws of all chains together), then :func:`diagnose_modes`.

    Records ``sample_stats.label_switch`` (chain, draw): the draw's stored labels were permuted;
    ``attrs``: ``label_switch_fraction_per_chain`` (its mean per chain: 1 for a chain that sat in a
    permuted labelling throughout, e.g. a sampler's own arbitrary order), ``label_switch_within_chain``
    (per chain, the fraction of draws whose permutation differs from the chain's most frequent one:
    the sampler switched labels during the run), ``label_switch_fraction`` (the same over all chains),
    ``r_hat_max_unrelabelled`` and the R-hat / ESS of the relabelled draws (:func:`diagnostics`).
    ``reference``: (mu (K, D), cov (K, D, D)) to start from; ``None``: the draw with the highest
    log-likelihood (or chain 0's last draw without a ``log_likelihood`` group).
    """
    out = idata.copy()
    _relabel(out, reference)
    diagnose_modes(out, threshold=mode_threshold, warn=warn, stacklevel=3)
    return out


def _relabel(idata: InferenceData, reference: tuple[np.ndarray, np.ndarray] | None, apply: bool = True) -> None:
    post = idata.posterior  # type: ignore[attr-defined]
    alpha, mu, cov = (np.asarray(post[v].values, dtype=np.float64) for v in ("alpha", "mu", "cov"))
    c, s, k = alpha.shape
    before = _r_hat_max(idata)
    perms = np.broadcast_to(np.arange(k), (c, s, k))
    if apply:
        if reference is None:  # the draw with the highest ln p(X | θ), eq. 26
            best: tuple = (0, s - 1)
            if "log_likelihood" in idata.groups():
                total = idata.log_likelihood["x"].values.sum(-1)  # type: ignore[attr-defined]
                best = np.unravel_index(np.argmax(total), total.shape)
            reference = (mu[best], cov[best])
        flat = lambda a: a.reshape((c * s,) + a.shape[2:])
        a_r, m_r, c_r, flat_perms = relabel(flat(alpha), flat(mu), flat(cov), *reference)
        for name, value in (("alpha", a_r), ("mu", m_r), ("cov", c_r)):
            post[name] = (post[name].dims, value.reshape(post[name].shape))
        perms = flat_perms.reshape(c, s, k)
    switched = (perms != np.arange(k)).any(-1)
    if "sample_stats" in idata.groups():
        idata.sample_stats["label_switch"] = (("chain", "draw"), switched)  # type: ignore[attr-defined]
    else:
        import arviz as az

        with _quiet():
            idata.add_groups(sample_stats=az.convert_to_dataset({"label_switch": switched}))
    idata.attrs.setdefault("label_rule", LABEL_RULE)
    idata.attrs.update(
        {
            "label_switch_fraction": switch_fraction(perms),
            "label_switch_fraction_per_chain": [float(f) for f in switched.mean(1)],
            "label_switch_within_chain": [switch_fraction(perms[i : i + 1]) for i in range(c)],
            "r_hat_max_unrelabelled": before,
        }
    )
    idata.attrs.update(diagnostics(idata))


def _r_hat_max(idata: InferenceData, var_names: Sequence[str] = ("alpha", "mu", "cov")) -> float:
    import arviz as az

    post = idata.posterior  # type: ignore[attr-defined]
    if post.sizes["chain"] < 2 or post.sizes["draw"] < 4:
        return float("nan")
    with _quiet(), np.errstate(invalid="ignore", divide="ignore"):
        r_hat = az.rhat(post[list(var_names)])
    return _worst([r_hat[v].values for v in r_hat.data_vars], np.nanmax)


def _worst(arrays: list, f: Callable[..., Any]) -> float:
    """``f`` (nanmin / nanmax) over every finite-or-infinite entry of ``arrays``; NaN when all are NaN
    (e.g. R-hat of alpha for K = 1, constant)."""
    values = np.concatenate([np.ravel(a) for a in arrays]) if arrays else np.empty(0)
    values = values[~np.isnan(values)]
    return float(f(values)) if values.size else float("nan")


def chain_separation(draws: np.ndarray) -> tuple[float, tuple[int, ...]]:
    """How far apart the chains of ``draws`` (C, S, *shape) sit: for every scalar, the spread of the
    per-chain means (max − min) in units of the pooled within-chain sd (√ of the mean of the chains'
    variances, R-hat's W); returns the largest over the scalars and its index in ``shape``.
    (0.0, ()) with fewer than 2 chains or 2 draws; a scalar constant within every chain counts 0 if
    its chain means agree and ∞ if not."""
    c, s = draws.shape[:2]
    if c < 2 or s < 2:
        return 0.0, ()
    flat = draws.reshape(c, s, -1)
    means = flat.mean(1)
    spread = means.max(0) - means.min(0)
    pooled = np.sqrt(flat.var(1, ddof=1).mean(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(spread == 0, 0.0, spread / pooled)
    j = int(np.argmax(z))
    return float(z[j]), tuple(int(i) for i in np.unravel_index(j, draws.shape[2:]))


def diagnose_modes(
    idata: InferenceData, *, threshold: float = 3.0, warn: bool = True, stacklevel: int = 2
) -> dict[str, Any]:
    """Whether the chains of ``idata`` (already relabelled to one reference) settled in different
    modes, recorded in ``idata.attrs`` and returned:

    - ``mode_separation_mu``: :func:`chain_separation` of mu (the largest spread of a component
      mean's chain means, in pooled posterior sds), ``mode_separation_mu_at`` its (component, feature);
    - ``mode_separation_loglik``: the same for the total log-likelihood Σ_i ln p(x_i | θ) per draw
      (label-invariant: it sees modes that relabelling could hide); ``chain_mean_log_likelihood``;
    - ``chains_disagree``: 1 when either exceeds ``threshold`` (default 3 sds: with ESS ≥ 10 per
      chain, chains in one mode differ by about 0.5 sd), else 0.

    With ``warn`` a :class:`~ppl_gmm.core.errors.MultimodalityWarning` says so: R-hat across such
    chains measures which mode each chain found, not convergence within one mode.
    """
    mu = np.asarray(idata.posterior["mu"].values)  # type: ignore[attr-defined]
    sep_mu, at = chain_separation(mu)
    result: dict[str, Any] = {"mode_separation_mu": sep_mu, "mode_separation_mu_at": list(at)}
    if "log_likelihood" in idata.groups():
        total = np.asarray(idata.log_likelihood["x"].values).sum(-1)  # type: ignore[attr-defined]
        result["mode_separation_loglik"] = chain_separation(total)[0]
        result["chain_mean_log_likelihood"] = [float(v) for v in total.mean(1)]
    sep_ll = result.get("mode_separation_loglik", 0.0)
    disagree = sep_mu > threshold or sep_ll > threshold
    result.update({"chains_disagree": int(disagree), "mode_threshold": float(threshold)})
    idata.attrs.update(result)
    if disagree and warn:
        import warnings

        lls = result.get("chain_mean_log_likelihood")
        warnings.warn(
            f"the {mu.shape[0]} chains settled in different posterior modes: with their labels matched "
            f"(attrs['label_rule']), the chain means of mu{list(at)} differ by {sep_mu:.1f} pooled posterior sds "
            f"and the mean log-likelihoods by {sep_ll:.1f} (threshold {threshold:g}"
            + (f"; chain mean log-likelihoods {np.round(lls, 1).tolist()}" if lls else "")
            + "). R-hat across these chains measures which mode each chain found, not convergence. Look at the "
            "chains separately (idata.posterior.sel(chain=c)), report the modes (and their log-likelihoods), "
            "or run more chains for longer.",
            MultimodalityWarning,
            stacklevel=stacklevel,
        )
    return result


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


def posterior_predictive(
    idata: InferenceData, n: int, seed: int | None = None, *, add_group: bool = False
) -> np.ndarray:
    """Posterior predictive replicates from the draws of ``idata`` (``fit_nuts``, ``fit_gibbs``,
    ``VBFit.to_arviz``, or any ``InferenceData`` with posterior alpha, mu, cov): for every
    (chain, draw) θ_s, n rows z ~ Cat(α_s), x ~ N(μ_{s,z}, Σ_{s,z}) (eq. 15,
    :func:`posterior_predictive_draws`). Returns x as float64 (chain, draw, n, D); the rows of all
    draws together are draws from p(x̂ | X) (PRML 10.81 for the exact posterior). Every draw
    flows from ``numpy.random.default_rng(seed)``: the same seed gives the same bits.

    With ``add_group`` the replicates also become ``idata``'s posterior_predictive group (var
    ``x``, dims chain, draw, obs, feature; it replaces one already there)."""
    import xarray as xr

    from ..core.validation import check_bool, check_int

    n = check_int(n, "n", 0)
    add_group = check_bool(add_group, "add_group")
    seed = resolve_seed(seed)
    alpha, mu, cov = (posterior_arrays(idata, v).astype(np.float64) for v in ("alpha", "mu", "cov"))
    c, s, k, d = mu.shape
    flat = lambda a: a.reshape((c * s,) + a.shape[2:])
    rep = posterior_predictive_draws(flat(alpha), flat(mu), flat(cov), n, seed).reshape(c, s, n, d)
    if add_group:
        coords = {"chain": np.arange(c), "draw": np.arange(s), "obs": np.arange(n), "feature": np.arange(d)}
        group = xr.Dataset({"x": (("chain", "draw", "obs", "feature"), rep)}, coords=coords)
        group.attrs.update({"seed": seed, "n": n})
        if "posterior_predictive" in idata.groups():
            del idata["posterior_predictive"]
        idata.add_groups(posterior_predictive=group)
    return rep


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
        return _worst([ds[v].values for v in ds.data_vars], f)

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
