"""NUTS over the globals (α, μ, Λ) of the Bayesian GMM, with Z summed out by enumeration.

The target is the posterior of ``bayes_model.bayes_gmm_model``::

    p(α, μ, Λ | X) ∝ Dir(α | alpha0) Π_k W(Λ_k | W0, nu0) N(μ_k | m0, (beta0 Λ_k)⁻¹)
                     Π_i Σ_k α_k N(x_i | μ_k, Λ_k⁻¹)                       (PRML 10.39–10.40, eq. 26)

Pyro's ``NUTS`` (``max_plate_nesting=1``; the site "z" is enumerated in parallel, so the
potential energy is −ln p(X, α, μ, Λ) with z summed out exactly) runs on the unconstrained
coordinates: stick-breaking for α, identity for μ, ``bayes_model.TrilVecToPD`` for Λ.

Chains run one after another in this process (reproducible; no multiprocessing): chain c uses
the c-th child seed of ``seed`` (``core.rng.spawn_seeds``) to seed the global generators
(``core.rng.seed_global_rng``, what ``pyro.set_rng_seed`` does) and starts at the MAP estimate
``fit_map(x, k, prior, seed=that child seed)`` (different k-means++ starts).

Threads: Pyro's effect-handler stack and torch's global generator are process-global, so the whole
fit runs under ``core.rng.GLOBAL_STATE_LOCK``, the lock of ``svi_driver.pyro_session``: NUTS fits
called from several threads run one at a time and give the bits of sequential calls.

Label switching — the stated rule (also in ``idata.attrs["label_rule"]``): post-hoc relabelling.
(1) The reference is chain 0's starting point (the MAP) with its components ordered by the first
coordinate of μ.  (2) Every draw of every chain is permuted to the reference by Hungarian
matching (``scipy.optimize.linear_sum_assignment``) of the draw's means to the reference means,
distances measured in the reference's pooled covariance (Mahalanobis).  (3) The reference becomes
the posterior mean of the relabelled draws, reordered by the first coordinate of μ, and step (2)
is repeated once.  The label-invariant quantities (log-likelihood, predictive) are unaffected.

Divergent transitions are counted (``attrs["num_divergences"]``, ``sample_stats.diverging``) and
reported with a ``RuntimeWarning``; they are never hidden.  ``results.arviz_io.summary(idata)`` gives
ArviZ's R-hat and ESS; ``attrs`` holds the worst of them.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide.initialization import init_to_value

from ..core.errors import DegeneratePosteriorError
from ..core.linalg import checked_cholesky, inverse_from_cholesky
from ..core.priors import NormalWishartPrior, resolve_prior
from ..core.rng import GLOBAL_STATE_LOCK, preserved_global_rng, resolve_seed, seed_global_rng, spawn_seeds
from ..core.threads import limited_threads
from ..core.validation import ArrayLike, as_data, check_bool, check_int, check_k, check_positive, data_scale
from ..ppl.bayes import bayes_gmm_model
from ..results import arviz_io
from ..results.matching import relabel, switch_fraction
from .map import fit_map

__all__ = ["fit_nuts", "loo_elpd", "LABEL_RULE", "sample_stat_names"]

LABEL_RULE = (
    "post-hoc relabelling: every draw permuted by Hungarian matching of its means to a reference "
    "(Mahalanobis distance under the reference's pooled covariance); reference = chain 0's MAP start "
    "ordered by the first coordinate of mu, then the posterior mean of the relabelled draws (ordered "
    "the same way), matching repeated once"
)

sample_stat_names = ("diverging", "energy", "tree_depth", "n_steps", "acceptance_rate", "step_size", "lp")


class _RecordingNUTS(NUTS):
    """Pyro's NUTS, recording per post-warmup draw: diverging, energy (the Hamiltonian at the start
    of the transition), tree_depth (doublings attempted, Stan's treedepth), n_steps (leapfrog steps),
    acceptance_rate (the mean acceptance statistic of the trajectory, as Pyro adapts on), step_size
    and lp (−potential energy: the log density on the unconstrained space, Jacobian included)."""

    _energy: float
    _n_steps: int
    _doublings: int
    _diverging: bool
    _sum_accept: float
    _num_proposals: int

    def setup(self, warmup_steps: int, *args: Any, **kwargs: Any) -> None:
        self.record: dict[str, list] = {
            name: [] for name in sample_stat_names
        }  # MCMC's cleanup() resets the kernel, not this
        self._depth = 0
        self.leapfrog_total = 0  # warmup included
        return super().setup(warmup_steps, *args, **kwargs)

    def _sample_r(self, name):
        r, r_unscaled = super()._sample_r(name)
        self._energy = float(self._kinetic_energy(r_unscaled) + self._potential_energy_last)
        return r, r_unscaled

    def _build_basetree(self, *args, **kwargs):
        self._n_steps += 1
        self.leapfrog_total += 1
        return super()._build_basetree(*args, **kwargs)

    def _build_tree(self, *args, **kwargs):
        top = self._depth == 0
        self._depth += 1
        try:
            tree = super()._build_tree(*args, **kwargs)
        finally:
            self._depth -= 1
        if top:
            self._doublings += 1
            self._diverging = self._diverging or bool(tree.diverging)
            self._sum_accept = self._sum_accept + float(tree.sum_accept_probs)
            self._num_proposals += int(tree.num_proposals)
        return tree

    def sample(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self._energy, self._n_steps, self._doublings = float("nan"), 0, 0
        self._diverging, self._sum_accept, self._num_proposals = False, 0.0, 0
        z = super().sample(params)
        if self._t > self._warmup_steps:  # type: ignore[operator]  # a post-warmup draw
            rec = self.record
            rec["diverging"].append(self._diverging)
            rec["energy"].append(self._energy)
            rec["tree_depth"].append(self._doublings)
            rec["n_steps"].append(self._n_steps)
            rec["acceptance_rate"].append(self._sum_accept / max(self._num_proposals, 1))
            rec["step_size"].append(float(self.step_size))
            rec["lp"].append(-float(self._potential_energy_last))  # type: ignore[arg-type]
        return z


# --- the sampler --------------------------------------------------------------------------------
def _check_args(x, k, prior, num_samples, warmup_steps, num_chains, target_accept_prob, max_tree_depth):
    x = as_data(x)
    k = check_k(k, x.shape[0])
    data_scale(x, scatter=True)  # refuses data whose W_k⁻¹ float64 cannot hold (NUTS works in the data's units)
    prior = resolve_prior(x, k, prior)
    num_samples = check_int(num_samples, "num_samples", 1)
    warmup_steps = check_int(warmup_steps, "warmup_steps", 0)
    num_chains = check_int(num_chains, "num_chains", 1)
    max_tree_depth = check_int(max_tree_depth, "max_tree_depth", 1)
    target_accept_prob = check_positive(target_accept_prob, "target_accept_prob")
    if not target_accept_prob < 1:
        raise ValueError(f"target_accept_prob must be in (0, 1), got {target_accept_prob}")
    if prior.nu0 <= x.shape[1]:
        raise ValueError(
            f"fit_nuts starts each chain at fit_map's estimate, which needs nu0 > D = {x.shape[1]}; "
            f"got nu0 = {prior.nu0}"
        )
    return x, k, prior, num_samples, warmup_steps, num_chains, target_accept_prob, max_tree_depth


def _start(x, k, prior, seed):
    """A chain's starting point: the MAP estimate from the chain's seed, as model site values."""
    p = fit_map(x, k, prior, seed=seed, max_iter=200).params
    values = {"mu": p.mu, "Lambda": inverse_from_cholesky(p.scale_tril)}
    if k > 1:
        alpha = p.alpha.clamp_min(1e-8)
        values["alpha"] = alpha / alpha.sum()
    return values, p


def _run_chain(
    x, k, prior, values, seed, num_samples, warmup_steps, target_accept_prob, max_tree_depth, jit, progress, chain
):
    seed_global_rng(seed)  # pyro.set_rng_seed, for seeds of any size
    kernel = _RecordingNUTS(
        bayes_gmm_model,
        max_plate_nesting=1,
        target_accept_prob=target_accept_prob,
        max_tree_depth=max_tree_depth,
        jit_compile=jit,
        ignore_jit_warnings=True,
        init_strategy=init_to_value(values=values),
    )
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps, disable_progbar=not progress)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Singular sample detected.*")
        try:
            mcmc.run(x, k, prior)
        except (ValueError, RuntimeError) as err:
            if "valid initial" in str(err) or "cholesky" in str(err).lower():
                raise DegeneratePosteriorError(
                    f"NUTS chain {chain} could not evaluate the posterior density ({err}): the posterior is "
                    "numerically degenerate. Standardise the data, use fewer components, or a prior with a "
                    "larger W0⁻¹ (e.g. default_prior(x, k))"
                ) from None
            raise
    samples = {name: v.detach().double().numpy() for name, v in mcmc.get_samples().items()}
    return samples, {**kernel.record, "leapfrog_total": kernel.leapfrog_total}


def fit_nuts(
    x: ArrayLike,
    k: int,
    prior: NormalWishartPrior | None = None,
    *,
    num_samples: int = 1000,
    warmup_steps: int = 500,
    num_chains: int = 1,
    seed: int | None = None,
    progress: bool = False,
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    jit: bool = True,
) -> arviz_io.InferenceData:
    """NUTS over (α, μ, Λ) with Z enumerated out; returns an ``arviz.InferenceData``.

    Groups: ``posterior`` — alpha (chain, draw, component), mu (…, component, feature),
    cov (…, component, feature, feature_), relabelled by the module's label rule;
    ``sample_stats`` — diverging, energy, tree_depth, n_steps, acceptance_rate, step_size, lp;
    ``log_likelihood`` — x (chain, draw, obs): ln Σ_k α_k N(x_i | μ_k, Σ_k) per draw (eq. 26 per
    point), so ``results.arviz_io.loo`` works; ``posterior_predictive`` — x (chain, draw, obs, feature), one
    replicate data set per draw; ``observed_data`` — x (obs, feature).  ``attrs``: method, seed, chain
    seeds, label_rule, num_divergences, r_hat_max, ess_bulk_min, label_switch_fraction.

    ``prior``: NormalWishartPrior (None: ``default_prior(x, k)``).  Chains run sequentially; chain c
    is seeded by the c-th child of ``seed`` and starts at fit_map's estimate from that seed.
    ``jit=True`` compiles the potential energy (same draws, about 2–3× faster).  Divergences give a
    RuntimeWarning and are counted in attrs.  The data's dtype is kept (float64 by default).
    """
    x, k, prior, num_samples, warmup_steps, num_chains, target_accept_prob, max_tree_depth = _check_args(
        x, k, prior, num_samples, warmup_steps, num_chains, target_accept_prob, max_tree_depth
    )
    seed = resolve_seed(seed)
    progress, jit = check_bool(progress, "progress"), check_bool(jit, "jit")
    # the global-state lock first (Pyro's state, the generators and the thread count are process-global);
    # tiny tensors: threads only add spin-wait overhead
    with GLOBAL_STATE_LOCK, preserved_global_rng(), limited_threads():
        idata = _fit(
            x, k, prior, num_samples, warmup_steps, num_chains, seed, progress, target_accept_prob, max_tree_depth, jit
        )
    num_div = idata.attrs["num_divergences"]
    if num_div:
        warnings.warn(
            f"NUTS: {num_div} of {num_chains * num_samples} post-warmup transitions diverged (see "
            "idata.sample_stats.diverging); the draws near those regions may be biased. Raise target_accept_prob "
            "(e.g. 0.95), use more warmup, or a more informative prior.",
            RuntimeWarning,
            stacklevel=2,
        )
    return idata


def _fit(x, k, prior, num_samples, warmup_steps, num_chains, seed, progress, target_accept_prob, max_tree_depth, jit):
    chain_root, ppc_seed = spawn_seeds(seed, 2)
    chain_seeds = spawn_seeds(chain_root, num_chains)
    start = time.perf_counter()
    draws, stats, reference = [], [], None
    for c, s in enumerate(chain_seeds):
        values, start_params = _start(x, k, prior, s)
        if reference is None:
            reference = start_params
        samples, record = _run_chain(
            x, k, prior, values, s, num_samples, warmup_steps, target_accept_prob, max_tree_depth, jit, progress, c
        )
        draws.append(samples)
        stats.append(record)
    wall = time.perf_counter() - start
    alpha = np.stack([d["alpha"] for d in draws]) if k > 1 else np.ones((num_chains, num_samples, 1))
    mu = np.stack([d["mu"] for d in draws])
    cov = _covariances(np.stack([d["Lambda"] for d in draws]))
    c, s = num_chains, num_samples
    flat = lambda a: a.reshape((c * s,) + a.shape[2:])
    assert reference is not None  # num_chains >= 1
    a_r, m_r, c_r, perms = relabel(
        flat(alpha), flat(mu), flat(cov), reference.mu.double().numpy(), reference.cov.double().numpy()
    )
    posterior = {"alpha": a_r.reshape(alpha.shape), "mu": m_r.reshape(mu.shape), "cov": c_r.reshape(cov.shape)}
    sample_stats = {name: np.array([st[name] for st in stats]) for name in sample_stat_names}
    attrs = {
        "method": "nuts",
        "seed": seed,
        "chain_seeds": list(chain_seeds),
        "num_warmup": warmup_steps,
        "label_rule": LABEL_RULE,
        "label_switch_fraction": switch_fraction(perms.reshape(c, s, k)),
        "num_divergences": int(sample_stats["diverging"].sum()),
        "sampling_time": wall,
        "num_leapfrog_total": int(sum(st["leapfrog_total"] for st in stats)),
        "prior": repr(prior),
    }
    return arviz_io.nuts_to_inference_data(posterior, sample_stats, x.double().numpy(), attrs=attrs, seed=ppc_seed)


def _covariances(lam: np.ndarray) -> np.ndarray:
    """Σ = Λ⁻¹ for every draw, via Cholesky; a clear error if a draw is not positive definite."""
    t = torch.from_numpy(lam)
    chol, bad = checked_cholesky(t)
    if bad is not None:
        comp = bad % lam.shape[-3]
        raise DegeneratePosteriorError(
            f"a NUTS draw of component {comp}'s precision matrix is not positive definite (or not finite): the "
            "posterior is numerically degenerate. Standardise the data, use fewer components, or a prior with a "
            "larger W0⁻¹ (e.g. default_prior(x, k))",
            comp,
        )
    return inverse_from_cholesky(chol).numpy()


def loo_elpd(
    x: ArrayLike,
    k: int,
    prior: NormalWishartPrior | None = None,
    seed: int | None = None,
    *,
    num_samples: int = 1000,
    warmup_steps: int = 500,
    num_chains: int = 1,
    progress: bool = False,
    **nuts_kwargs: Any,
) -> arviz_io.LooResult:
    """PSIS-LOO expected log predictive density of the K-component Bayesian GMM: ``fit_nuts`` then
    ``results.arviz_io.loo``.  Returns a tuple (elpd_loo, se) with ``.p_loo``, ``.pareto_k``, ``.n_high_k``."""
    idata = fit_nuts(
        x,
        k,
        prior,
        num_samples=num_samples,
        warmup_steps=warmup_steps,
        num_chains=num_chains,
        seed=seed,
        progress=progress,
        **nuts_kwargs,
    )
    return arviz_io.loo(idata)
