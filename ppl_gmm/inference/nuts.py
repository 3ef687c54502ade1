"""NUTS over the globals (α, μ, Λ) of the Bayesian GMM, with Z summed out.

The target is the posterior of ``bayes_model.bayes_gmm_model``::

    p(α, μ, Λ | X) ∝ Dir(α | alpha0) Π_k W(Λ_k | W0, nu0) N(μ_k | m0, (beta0 Λ_k)⁻¹)
                     Π_i Σ_k α_k N(x_i | μ_k, Λ_k⁻¹)                       (PRML 10.39–10.40, eq. 26)

Pyro's ``NUTS`` kernel (step-size and mass-matrix adaptation, tree building, diagnostics) runs on
the unconstrained coordinates (stick-breaking for α, identity for μ, ``ppl.transforms.TrilVecToPD``
for Λ).  Two ways to give it the potential energy −ln p(X, α, μ, Λ) − ln |J|, the same function:

- ``backend="potential"`` (default): ``ppl.potential.BayesGMMPotential`` — the density written
  directly in torch with a hand-derived gradient, traced once by ``torch.jit.trace`` (``jit``),
  handed to NUTS as ``potential_fn``.  About 10× cheaper per gradient than the model.
- ``backend="model"``: Pyro derives the potential from ``bayes_gmm_model`` through its
  effect handlers (``max_plate_nesting=1``; the site "z" enumerated in parallel); ``jit`` is Pyro's
  ``jit_compile``.  The reference the potential is tested against.

``ordered=True`` (potential backend only) samples μ_{1,1} < μ_{2,1} < … < μ_{K,1} (the first
coordinate of the means; for D = 1 the means) through an ordered transform with its Jacobian: the
posterior restricted to one labelling, so label switching cannot occur and no relabelling is done.

Chains: chain c uses the c-th child seed of ``seed`` (``core.rng.spawn_seeds``) for
``pyro.set_rng_seed`` and starts at the MAP estimate ``fit_map(x, k, prior, seed=that child
seed)`` (different k-means++ starts).  With ``chain_method="parallel"`` (the default) this process
runs chain 0 while ``os.cpu_count() − 1`` worker processes (``spawn``; one torch thread each) run
the others, and this process takes back any chain no worker has started when it is free;
``"sequential"`` runs them one after another here.  A chain's draws depend only on its seed: both
give the same bits.

Threads: Pyro's effect-handler stack and torch's global generator are process-global, so the whole
fit runs under ``core.rng.GLOBAL_STATE_LOCK``, the lock of ``svi_driver.pyro_session``: NUTS fits
called from several threads run one at a time and give the bits of sequential calls.

Label switching — the stated rule (also in ``idata.attrs["label_rule"]``): post-hoc relabelling.
(1) The reference is chain 0's starting point (the MAP) with its components ordered by the first
coordinate of μ.  (2) Every draw of every chain is permuted to the reference by Hungarian matching
(``scipy.optimize.linear_sum_assignment``) of the draw's means to the reference means, distances
measured in the reference's pooled covariance (Mahalanobis).  (3) The reference becomes the
posterior mean of the relabelled draws, reordered by the first coordinate of μ, and step (2) is
repeated once.  The label-invariant quantities (log-likelihood, predictive) are unaffected.  With
``ordered=True`` the draws keep their (ordered) labels.

Divergent transitions are counted per chain (``sample_stats.diverging``, ``attrs["num_divergences"]``,
``attrs["divergences_per_chain"]``) and reported with a ``RuntimeWarning`` that names the chains;
they are never hidden.  ``results.arviz_io.summary(idata)`` gives ArviZ's R-hat and ESS; ``attrs``
holds the worst of them.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pyro.distributions.util import scalar_like
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide.initialization import init_to_value
from pyro.infer.mcmc.nuts import _TreeInfo
from pyro.util import torch_isnan

from ..core.errors import DegeneratePosteriorError
from ..core.linalg import checked_cholesky, inverse_from_cholesky
from ..core.priors import NormalWishartPrior, resolve_prior
from ..core.rng import GLOBAL_STATE_LOCK, preserved_global_rng, resolve_seed, seed_global_rng, spawn_seeds
from ..core.threads import limited_threads
from ..core.validation import ArrayLike, as_data, check_bool, check_int, check_k, check_positive, data_scale
from ..ppl.bayes import bayes_gmm_model
from ..ppl.potential import SITE, BayesGMMPotential
from ..results import arviz_io
from .map import fit_map

__all__ = ["fit_nuts", "loo_elpd", "LABEL_RULE", "LABEL_RULE_ORDERED", "BACKENDS", "CHAIN_METHODS", "sample_stat_names"]

LABEL_RULE = arviz_io.LABEL_RULE  # one common labelling for all chains (results.arviz_io.relabel_chains)

LABEL_RULE_ORDERED = (
    "ordered means: mu[0, 0] < mu[1, 0] < ... < mu[K-1, 0] in every draw by construction (ordered transform on the "
    "first coordinate of mu, its Jacobian in the potential); no relabelling"
)

BACKENDS = ("potential", "model")
CHAIN_METHODS = ("parallel", "sequential")

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


class _DirectNUTS(_RecordingNUTS):
    """``_RecordingNUTS`` for the hand-written potential: each leapfrog step calls the potential's
    ``value_and_grad`` directly instead of Pyro's ``velocity_verlet`` → ``potential_grad`` (dicts,
    ``requires_grad`` toggling and an autograd pass per step, about a third of the time per step).
    ``_build_basetree`` is Pyro's (1.9) with that one call written out: the same arithmetic, so the
    same draws bit for bit as ``_RecordingNUTS(potential_fn=...)`` (tested).  Everything else —
    adaptation, step-size search, tree building, the turning and divergence criteria — is Pyro's."""

    def __init__(self, value_and_grad: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._value_and_grad = value_and_grad

    def _build_basetree(self, z, r, z_grads, log_slice, direction, energy_current):
        self._n_steps += 1
        self.leapfrog_total += 1
        step_size = self.step_size if direction == 1 else -self.step_size
        # velocity Verlet, one step (pyro.ops.integrator._single_step_verlet)
        r_half = r[SITE] + 0.5 * step_size * (-z_grads[SITE])  # r(n+1/2)
        z_next = z[SITE] + step_size * self.mass_matrix_adapter.kinetic_grad({SITE: r_half})[SITE]  # z(n+1)
        potential_energy, grad = self._value_and_grad(z_next)
        r_next = r_half + 0.5 * step_size * (-grad)  # r(n+1)
        z_new, r_new, z_grads = {SITE: z_next}, {SITE: r_next}, {SITE: grad}
        # the rest as pyro.infer.mcmc.nuts.NUTS._build_basetree
        r_new_unscaled = self.mass_matrix_adapter.unscale(r_new)
        energy_new = potential_energy + self._kinetic_energy(r_new_unscaled)
        energy_new = scalar_like(energy_new, float("inf")) if torch_isnan(energy_new) else energy_new
        sliced_energy = energy_new + log_slice
        diverging = sliced_energy > self._max_sliced_energy
        delta_energy = energy_new - energy_current
        accept_prob = (-delta_energy).exp().clamp(max=1.0)
        if self.use_multinomial_sampling:
            tree_weight = -sliced_energy
        else:
            tree_weight = scalar_like(sliced_energy, 1.0 if sliced_energy <= 0 else 0.0)
        return _TreeInfo(
            z_new,
            r_new,
            r_new_unscaled,
            z_grads,
            z_new,
            r_new,
            r_new_unscaled,
            z_grads,
            z_new,
            potential_energy,
            z_grads,
            r_new_unscaled,
            tree_weight,
            False,
            diverging,
            accept_prob,
            1,
        )


# --- the sampler --------------------------------------------------------------------------------
def _check_args(
    x,
    k,
    prior,
    num_samples,
    warmup_steps,
    num_chains,
    target_accept_prob,
    max_tree_depth,
    backend,
    ordered,
    chain_method,
):
    x = as_data(x)
    k = check_k(k, x.shape[0])
    data_scale(x, scatter=True)  # refuses data whose W_k⁻¹ float64 cannot hold (NUTS works in the data's units)
    prior = resolve_prior(x, k, prior)
    num_samples = check_int(num_samples, "num_samples", 1)
    warmup_steps = check_int(warmup_steps, "warmup_steps", 1)
    num_chains = check_int(num_chains, "num_chains", 1)
    max_tree_depth = check_int(max_tree_depth, "max_tree_depth", 1)
    target_accept_prob = check_positive(target_accept_prob, "target_accept_prob")
    if not target_accept_prob < 1:
        raise ValueError(f"target_accept_prob must be in (0, 1), got {target_accept_prob}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(map(repr, BACKENDS))}")
    if chain_method not in CHAIN_METHODS:
        raise ValueError(f"unknown chain_method {chain_method!r}; use one of {', '.join(map(repr, CHAIN_METHODS))}")
    ordered = check_bool(ordered, "ordered")
    if ordered and backend != "potential":
        raise ValueError("ordered=True needs backend='potential' (the ordered transform lives in the potential)")
    if prior.nu0 <= x.shape[1]:
        raise ValueError(
            f"fit_nuts starts each chain at fit_map's estimate, which needs nu0 > D = {x.shape[1]}; "
            f"got nu0 = {prior.nu0}"
        )
    distinct = int(torch.unique(x, dim=0).shape[0])
    if k > distinct:
        raise ValueError(
            f"k = {k} is larger than the number of distinct data points ({distinct} among N = {x.shape[0]}): "
            "the extra components could only sit on repeated points (the MAP start and the posterior degenerate); "
            f"use k <= {distinct}"
        )
    return x, k, prior, num_samples, warmup_steps, num_chains, target_accept_prob, max_tree_depth


@dataclass(frozen=True)
class _Chain:
    """Everything one chain needs: picklable, so a chain runs the same in this process or another."""

    x: torch.Tensor
    k: int
    prior: NormalWishartPrior
    seed: int
    index: int
    num_samples: int
    warmup_steps: int
    target_accept_prob: float
    max_tree_depth: int
    jit: bool
    backend: str
    ordered: bool
    progress: bool


def _start(x, k, prior, seed, ordered=False):
    """A chain's starting point: the MAP estimate from the chain's seed, as (α, μ, Λ) (components
    sorted by μ_{k,1} with ``ordered``), and the MAP parameters."""
    p = fit_map(x, k, prior, seed=seed, max_iter=200).params
    alpha = p.alpha.clamp_min(1e-8)
    alpha, mu, lam = alpha / alpha.sum(), p.mu, inverse_from_cholesky(p.scale_tril)
    if ordered:
        order = torch.argsort(mu[:, 0])
        alpha, mu, lam = alpha[order], mu[order].clone(), lam[order]
        gap = 1e-9 * (1.0 + float(mu[:, 0].abs().max()))
        for j in range(1, k):  # ties: strictly increasing first coordinates
            mu[j, 0] = torch.maximum(mu[j, 0], mu[j - 1, 0] + gap)
    return alpha, mu, lam, p


def _kernel_and_init(chain: _Chain, alpha, mu, lam):
    common = {"target_accept_prob": chain.target_accept_prob, "max_tree_depth": chain.max_tree_depth}
    if chain.backend == "model":
        values = {"mu": mu, "Lambda": lam}
        if chain.k > 1:
            values["alpha"] = alpha
        kernel = _RecordingNUTS(
            bayes_gmm_model,
            max_plate_nesting=1,
            jit_compile=chain.jit,
            ignore_jit_warnings=True,
            init_strategy=init_to_value(values=values),
            **common,
        )
        return kernel, None, None
    potential = BayesGMMPotential(chain.x, chain.k, chain.prior, ordered=chain.ordered)
    kernel = _DirectNUTS(potential.compiled(chain.jit), potential_fn=potential.potential_fn(chain.jit), **common)
    return kernel, potential, {SITE: potential.to_unconstrained(alpha, mu, lam)}


def _run_chain(chain: _Chain) -> dict[str, Any]:
    """One chain from its MAP start: draws (alpha, mu, Lambda as numpy), the kernel's record, the
    start's parameters and timings."""
    t0 = time.perf_counter()
    alpha, mu, lam, start_params = _start(chain.x, chain.k, chain.prior, chain.seed, chain.ordered)
    t1 = time.perf_counter()
    seed_global_rng(chain.seed)  # pyro.set_rng_seed, for seeds of any size
    kernel, potential, init = _kernel_and_init(chain, alpha, mu, lam)
    mcmc = MCMC(
        kernel,
        num_samples=chain.num_samples,
        warmup_steps=chain.warmup_steps,
        initial_params=init,
        disable_progbar=not chain.progress,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Singular sample detected.*")
        try:
            mcmc.run(chain.x, chain.k, chain.prior) if potential is None else mcmc.run()
        except (ValueError, RuntimeError) as err:
            if "valid initial" in str(err) or "cholesky" in str(err).lower():
                raise DegeneratePosteriorError(
                    f"NUTS chain {chain.index} could not evaluate the posterior density ({err}): the posterior is "
                    "numerically degenerate. Standardise the data, use fewer components, or a prior with a "
                    "larger W0⁻¹ (e.g. default_prior(x, k))"
                ) from None
            raise
    t2 = time.perf_counter()
    raw = mcmc.get_samples()
    if potential is not None:
        raw = potential.constrain(raw[SITE].to(chain.x.dtype))
    samples = {name: v.detach().double().numpy() for name, v in raw.items() if name in ("alpha", "mu", "Lambda")}
    if chain.k == 1:
        samples["alpha"] = np.ones((chain.num_samples, 1))
    return {
        "samples": samples,
        "record": {**kernel.record, "leapfrog_total": kernel.leapfrog_total},
        "start": start_params,
        "start_time": t1 - t0,
        "run_time": t2 - t1,  # tracing / model set-up, warm-up and sampling
        "pid": os.getpid(),
    }


def _worker_init() -> None:
    torch.set_num_threads(1)  # one thread per chain process (tiny tensors; the cores are the chains')
    warnings.filterwarnings("ignore", message=".*Singular sample detected.*")


def _run_chains(chains: list[_Chain], parallel: bool) -> list[dict[str, Any]]:
    """Run every chain; in parallel, this process runs chain 0 (and any chain no worker has started
    when it is free) while up to ``os.cpu_count() − 1`` spawned worker processes run the others."""
    workers = min(len(chains), os.cpu_count() or 1) - 1
    if not parallel or workers < 1:
        return [_run_chain(c) for c in chains]
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch / OpenMP state
    results: list[dict[str, Any] | None] = [None] * len(chains)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init)
    try:
        futures = {c: pool.submit(_run_chain, chains[c]) for c in range(1, len(chains))}
        results[0] = _run_chain(chains[0])
        for c in sorted(futures, reverse=True):  # take back chains still queued
            if futures[c].cancel():
                results[c] = _run_chain(chains[c])
        for c, future in futures.items():
            if results[c] is None:
                results[c] = future.result()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # report the failure now, not after the other chains
        raise
    pool.shutdown()
    return [r for r in results if r is not None]


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
    backend: str = "potential",
    ordered: bool = False,
    chain_method: str = "parallel",
) -> arviz_io.InferenceData:
    """NUTS over (α, μ, Λ) with Z enumerated out; returns an ``arviz.InferenceData``.

    Groups: ``posterior`` — alpha (chain, draw, component), mu (…, component, feature),
    cov (…, component, feature, feature_), relabelled by the module's label rule;
    ``sample_stats`` — diverging, energy, tree_depth, n_steps, acceptance_rate, step_size, lp;
    ``log_likelihood`` — x (chain, draw, obs): ln Σ_k α_k N(x_i | μ_k, Σ_k) per draw (eq. 26 per
    point), so ``results.arviz_io.loo`` works; ``posterior_predictive`` — x (chain, draw, obs, feature), one
    replicate data set per draw; ``observed_data`` — x (obs, feature).  ``attrs``: method, backend, ordered,
    seed, chain seeds, label_rule, num_divergences, divergences_per_chain, r_hat_max, ess_bulk_min,
    label_switch_fraction, sampling_time (wall), chain_run_times, num_leapfrog_total.

    ``prior``: NormalWishartPrior (None: ``default_prior(x, k)``).  Chain c is seeded by the c-th child
    of ``seed`` and starts at fit_map's estimate from that seed.  ``backend``: ``"potential"`` (the
    hand-written potential, ``ppl.potential``) or ``"model"`` (Pyro's potential of
    ``bayes_gmm_model``, the slower reference); ``jit`` traces either.  ``ordered=True``
    (potential backend): μ_{1,1} < … < μ_{K,1} in every draw, no label switching.
    ``chain_method``: ``"parallel"`` (chain 0 here, the others in spawned processes, at most
    ``os.cpu_count()`` chains at a time) or
    ``"sequential"``; same draws either way (a script that runs parallel chains at import time needs
    the usual ``if __name__ == "__main__":`` guard of ``multiprocessing``'s spawn).  ``progress`` bars
    are shown by sequential chains only.
    Divergences give a RuntimeWarning naming the chains and are counted in attrs.  The data's dtype
    is kept (float64 by default).
    """
    x, k, prior, num_samples, warmup_steps, num_chains, target_accept_prob, max_tree_depth = _check_args(
        x,
        k,
        prior,
        num_samples,
        warmup_steps,
        num_chains,
        target_accept_prob,
        max_tree_depth,
        backend,
        ordered,
        chain_method,
    )
    seed = resolve_seed(seed)
    progress, jit = check_bool(progress, "progress"), check_bool(jit, "jit")
    parallel = chain_method == "parallel" and num_chains > 1
    chain_root, ppc_seed = spawn_seeds(seed, 2)
    chains = [
        _Chain(
            x,
            k,
            prior,
            s,
            c,
            num_samples,
            warmup_steps,
            target_accept_prob,
            max_tree_depth,
            bool(jit),
            backend,
            ordered,
            bool(progress) and not parallel,
        )
        for c, s in enumerate(spawn_seeds(chain_root, num_chains))
    ]
    # the global-state lock first (Pyro's state, the generators and the thread count are process-global);
    # tiny tensors: threads only add spin-wait overhead
    with GLOBAL_STATE_LOCK, limited_threads(), preserved_global_rng():
        start = time.perf_counter()
        results = _run_chains(chains, parallel)
        wall = time.perf_counter() - start
        idata = _assemble(x, k, prior, chains, results, wall, seed, ppc_seed, backend, ordered)
    per_chain = idata.attrs["divergences_per_chain"]
    if any(per_chain):
        which = ", ".join(f"chain {c}: {n}" for c, n in enumerate(per_chain) if n)
        warnings.warn(
            f"NUTS: post-warmup transitions diverged ({which}; of {num_samples} per chain; see "
            "idata.sample_stats.diverging); the draws near those regions may be biased. Raise target_accept_prob "
            "(e.g. 0.95), use more warmup, or a more informative prior.",
            RuntimeWarning,
            stacklevel=2,
        )
    return idata


def _assemble(x, k, prior, chains, results, wall, seed, ppc_seed, backend, ordered):
    draws = [r["samples"] for r in results]
    stats = [r["record"] for r in results]
    reference = results[0]["start"]
    alpha = np.stack([d["alpha"] for d in draws])
    mu = np.stack([d["mu"] for d in draws])
    cov = _covariances(np.stack([d["Lambda"] for d in draws]))
    posterior = {"alpha": alpha, "mu": mu, "cov": cov}  # raw labels: relabelled by arviz_io
    sample_stats = {name: np.array([st[name] for st in stats]) for name in sample_stat_names}
    per_chain = [int(v) for v in sample_stats["diverging"].sum(1)]
    attrs = {
        "method": "nuts",
        "backend": backend,
        "ordered": int(ordered),
        "seed": seed,
        "chain_seeds": [ch.seed for ch in chains],
        "num_warmup": chains[0].warmup_steps,
        "label_rule": LABEL_RULE_ORDERED if ordered else LABEL_RULE,
        "num_divergences": int(sum(per_chain)),
        "divergences_per_chain": per_chain,
        "sampling_time": wall,
        "chain_run_times": [float(r["run_time"]) for r in results],
        "chain_start_times": [float(r["start_time"]) for r in results],
        "num_leapfrog_total": int(sum(st["leapfrog_total"] for st in stats)),
        "leapfrog_per_chain": [int(st["leapfrog_total"]) for st in stats],
        "prior": repr(prior),
    }
    # every chain relabelled to one common reference (chain 0's MAP start) before R-hat / ESS, the label-switch
    # fraction per chain recorded, and a MultimodalityWarning if chains settled in different modes
    return arviz_io.mcmc_to_inference_data(
        posterior,
        sample_stats,
        x.double().numpy(),
        attrs=attrs,
        seed=ppc_seed,
        reference=(reference.mu.double().numpy(), reference.cov.double().numpy()),
        relabel=not ordered,
        stacklevel=4,
    )


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
