"""The blocked Gibbs sampler of the conjugate Bayesian GMM (Diebolt & Robert 1994), C chains at once.

The target is the posterior of ``fit_nuts`` (PRML 10.39–10.40, eq. 15), with the labels z kept::

    α ~ Dir(alpha0),  Λ_k ~ W(W0, nu0),  μ_k | Λ_k ~ N(m0, (beta0 Λ_k)⁻¹),  z_i ~ Cat(α),  x_i ~ N(μ_{z_i}, Λ_{z_i}⁻¹)

One sweep draws the two blocks from their exact full conditionals:

- **Θ | z**: α ~ Dir(alpha0 + N_k) and, independently per component, (μ_k, Λ_k) ~ NW(m_k, beta_k,
  W_k, nu_k): the conjugate update (PRML 10.58, 10.60–10.63) with the hard responsibilities
  γ = one-hot(z) (``core.priors.conjugate_update_from_data``), then a Dirichlet draw
  (``core.priors.sample_dirichlet``) and a Bartlett draw (``core.priors.normal_wishart_from_noise``,
  the transform ``vb_posterior.sample_posterior`` uses). An empty component (N_k = 0) is drawn
  from the prior.
- **z | Θ**: z_i ~ Cat(γ_i), γ_i the E-step's responsibilities at Θ (eq. 20:
  ``core.gaussian.normalise_log`` of ln α_k + ln N(x_i | μ_k, Λ_k⁻¹), with the Bartlett factor B_k,
  Λ_k = B_k B_kᵀ, as the precision factor), by inverse CDF.

Draw t is Θ_t (after the Θ | z half of sweep t); ``sample_stats.loglik`` is ln p(X | Θ_t) (eq. 26)
and ``sample_stats.num_empty`` the number of components with N_k = 0 in the z that Θ_t was drawn from.

**Chains, seeds, bits.** Every tensor operation runs on all chains at once: the C chains' K
components are one stack of C·K (responsibilities (N, C, K)). Chain c draws every random number
from its own ``torch.Generator`` (``core.rng.torch_generator``) seeded with the c-th child seed of
``seed`` (``core.rng.spawn_seeds``, as ``fit_nuts``); the global generators are neither used nor
changed. Each chain's numbers and arithmetic do not depend on the other chains, so chain c of a
C-chain run equals, bit for bit, the one-chain run with that chain's seed (``sample_chains``).
Chain c starts from z = the nearest of k-means++ centres drawn with its seed (``core.init``):
data-driven starts that differ between chains, so chains can find different modes.

**Label switching and modes.** Every chain is relabelled to one common reference before R-hat and
ESS are computed, the label-switch fraction is reported per chain, and a ``MultimodalityWarning``
is raised when chains settle in different modes (``results.arviz_io.mcmc_to_inference_data``).

**Not shipped: the collapsed sampler** (α, μ, Λ integrated out; z_i | z_−i from Student-t
predictives). Its update of z_i depends on every other z_j, so a sweep is N sequential steps that
cannot be vectorised over points (only over chains): in torch that is N Python-level steps per
sweep against the blocked sampler's one batched pass, while its mixing gain matters only when
components overlap strongly.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from ..core.errors import DegeneratePosteriorError
from ..core.gaussian import log_gaussian_prec, normalise_log
from ..core.init import kmeans_plusplus, nearest_centre
from ..core.linalg import checked_cholesky, inverse_from_cholesky
from ..core.priors import (
    NormalWishartPrior,
    conjugate_update_from_data,
    normal_wishart_from_noise,
    normal_wishart_noise,
    resolve_prior,
    sample_dirichlet,
)
from ..core.rng import resolve_seed, spawn_seeds, torch_generator
from ..core.threads import limited_threads
from ..core.validation import ArrayLike, as_data, check_int, check_k
from ..results import arviz_io

__all__ = ["fit_gibbs", "sample_chains", "SAMPLER", "sample_stat_names"]

SAMPLER = "blocked Gibbs (Diebolt & Robert 1994): z | alpha, mu, Lambda by eq. 20; alpha, (mu, Lambda) | z conjugate"
sample_stat_names = ("loglik", "num_empty")


def _check_args(x, k, prior, num_samples, warmup_steps, num_chains):
    x = as_data(x)
    k = check_k(k, x.shape[0])
    num_samples = check_int(num_samples, "num_samples", 1)
    warmup_steps = check_int(warmup_steps, "warmup_steps", 1)
    num_chains = check_int(num_chains, "num_chains", 1)
    distinct = int(torch.unique(x, dim=0).shape[0])
    if k > distinct:  # the k-means++ start needs k distinct points
        raise ValueError(f"k = {k} is larger than the number of distinct data points ({distinct}); use k <= {distinct}")
    return x, k, resolve_prior(x, k, prior), num_samples, warmup_steps, num_chains


def fit_gibbs(
    x: ArrayLike,
    k: int,
    prior: NormalWishartPrior | None = None,
    *,
    num_samples: int = 1000,
    warmup_steps: int = 500,
    num_chains: int = 4,
    seed: int | None = None,
) -> arviz_io.InferenceData:
    """Blocked Gibbs sampling of (α, μ, Λ, z); returns an ``arviz.InferenceData`` like ``fit_nuts``.

    Parameters
    ----------
    x : array_like, shape (N,) or (N, D)
    k : int
        Number of components, at most the number of distinct data points.
    prior : NormalWishartPrior, optional
        ``None``: ``default_prior(x, k)``.
    num_samples, warmup_steps, num_chains : int
        Draws kept per chain (≥ 1), sweeps discarded first (burn-in, ≥ 1), chains (≥ 1; all run
        at once, vectorised).
    seed : int, optional
        Every random draw flows from it: the same seed gives the same bits.

    Returns
    -------
    InferenceData
        ``posterior``: alpha (chain, draw, component), mu (…, component, feature), cov (…,
        component, feature, feature_), every chain relabelled to one common reference;
        ``sample_stats``: loglik (ln p(X | Θ), eq. 26), num_empty, label_switch;
        ``log_likelihood``: x (chain, draw, obs); ``posterior_predictive``: x; ``observed_data``: x.
        ``attrs``: method, seed, chain_seeds, num_warmup, sampler, label_rule, the label-switch
        fractions (label_switch_fraction, label_switch_fraction_per_chain, label_switch_within_chain:
        see ``results.arviz_io.relabel_chains``), r_hat_max (after relabelling) and
        r_hat_max_unrelabelled, ess_bulk_min, ess_tail_min, the mode diagnostics and sampling_time.

    Warns
    -----
    MultimodalityWarning
        When the chains settle in different modes (``results.arviz_io.diagnose_modes``).
    """
    x, k, prior, num_samples, warmup_steps, num_chains = _check_args(x, k, prior, num_samples, warmup_steps, num_chains)
    seed = resolve_seed(seed)
    chain_root, ppc_seed = spawn_seeds(seed, 2)
    chain_seeds = spawn_seeds(chain_root, num_chains)
    with limited_threads():  # tiny tensors: threads only add spin-wait overhead
        start = time.perf_counter()
        draws = sample_chains(x, k, prior, chain_seeds, num_samples, warmup_steps)
        wall = time.perf_counter() - start
        attrs = {
            "method": "gibbs",
            "sampler": SAMPLER,
            "seed": seed,
            "chain_seeds": list(chain_seeds),
            "num_warmup": warmup_steps,
            "sampling_time": wall,
            "prior": repr(prior),
        }
        posterior = {name: draws[name] for name in ("alpha", "mu", "cov")}
        stats = {name: draws[name] for name in sample_stat_names}
        return arviz_io.mcmc_to_inference_data(
            posterior, stats, x.double().numpy(), attrs=attrs, seed=ppc_seed, stacklevel=3
        )


def sample_chains(
    x: torch.Tensor,
    k: int,
    prior: NormalWishartPrior,
    chain_seeds: Sequence[int],
    num_samples: int,
    warmup_steps: int,
) -> dict[str, np.ndarray]:
    """The raw (not relabelled) draws of ``len(chain_seeds)`` chains, chain c seeded by
    ``chain_seeds[c]``, on validated data ``x`` (N, D): float64 arrays alpha (C, S, K), mu (C, S, K, D),
    cov (C, S, K, D, D), loglik (C, S), and num_empty (C, S) integers."""
    n, d = x.shape
    c, s = len(chain_seeds), num_samples
    gens = [torch_generator(cs) for cs in chain_seeds]
    m0, _, w0_inv = prior.cast(x.dtype)
    z = torch.stack([nearest_centre(x, kmeans_plusplus(x, k, cs)) for cs in chain_seeds], 1)  # (N, C)
    out = {
        "alpha": np.empty((c, s, k)),
        "mu": np.empty((c, s, k, d)),
        "cov": np.empty((c, s, k, d, d)),
        "loglik": np.empty((c, s)),
        "num_empty": np.empty((c, s), dtype=np.int64),
    }
    for t in range(warmup_steps + num_samples):
        alpha, mu, cov, prec, n_k = _draw_globals(x, z, k, prior, m0, w0_inv, gens)
        z, loglik = _draw_labels(x, alpha, mu, prec, gens)
        if t >= warmup_steps:
            i = t - warmup_steps
            out["alpha"][:, i] = alpha.numpy()
            out["mu"][:, i] = mu.view(c, k, d).numpy()
            out["cov"][:, i] = cov.view(c, k, d, d).numpy()
            out["loglik"][:, i] = loglik.numpy()
            out["num_empty"][:, i] = (n_k.view(c, k) == 0).sum(1).numpy()
    return out


def _draw_globals(x, z, k, prior, m0, w0_inv, gens):
    """Θ | z for every chain: α (C, K) and, flattened over the C·K components, μ (C·K, D),
    Σ (C·K, D, D), the precision factors B (Λ = B Bᵀ) and N_k (C·K,)."""
    n, c, d = x.shape[0], len(gens), x.shape[1]
    gamma = torch.nn.functional.one_hot(z, k).to(x.dtype).view(n, c * k)  # hard responsibilities
    st = conjugate_update_from_data(x, gamma, prior, m0, w0_inv)  # PRML 10.58, 10.60–10.63, every chain
    alpha = torch.stack([sample_dirichlet(a, g) for a, g in zip(st.alpha.view(c, k), gens)])  # Dir(alpha0 + N_k)
    noise = [normal_wishart_noise(nu, d, g) for nu, g in zip(st.nu.view(c, k), gens)]
    chol_w_inv, bad = checked_cholesky(st.w_inv)
    if bad is not None:
        raise DegeneratePosteriorError(
            f"Gibbs chain {bad // k}: the conditional scale matrix W_k⁻¹ of component {bad % k} (PRML 10.62) is not "
            "numerically positive definite. Standardise the data or use a prior with a larger W0⁻¹ "
            "(e.g. default_prior(x, k))",
            bad % k,
        )
    chol_w = torch.linalg.cholesky(inverse_from_cholesky(chol_w_inv))  # chol(W_k)
    prec, mu, cov = normal_wishart_from_noise(
        st.m, st.beta, chol_w, torch.cat([a for a, _ in noise]), torch.cat([e for _, e in noise])
    )
    return alpha, mu, cov, prec, st.n_k


def _draw_labels(x, alpha, mu, prec, gens):
    """z | Θ: z_i ~ Cat(γ_i) with γ the E-step's responsibilities (eq. 20), (N, C); and
    ln p(X | Θ) (eq. 26) per chain (C,)."""
    n, (c, k) = x.shape[0], alpha.shape
    wlp = log_gaussian_prec(x, mu, prec).view(n, c, k).add_(torch.log(alpha))  # ln α_k + ln N(x_i | μ_k, Σ_k)
    gamma, lse = normalise_log(wlp, dim=2)  # eq. 20; lse: eq. 26 per point
    u = torch.stack([torch.rand(n, dtype=x.dtype, generator=g) for g in gens], 1)  # (N, C)
    z = (gamma.cumsum(2) < u[..., None]).sum(2).clamp_max_(k - 1)  # inverse-CDF draw from Cat(γ_i)
    return z, lse.T.contiguous().sum(1)  # each chain's sum in one order, whatever C is
