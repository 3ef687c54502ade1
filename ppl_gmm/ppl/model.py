"""The GMM of the notes as a Pyro program, and guides whose SVI losses are eq. 18 and eq. 26.

The generative process α → Z → X (eq. 15) is drawn in :func:`gmm_model`'s docstring.

Guides (the variational families of the notes):

* :func:`meanfield_guide` — q(Z) = Π_i Categorical(γ_i) (eq. 17) with ``pyro.param("gamma")``
  (N, K) on the simplex and the site ``"z"`` enumerated in parallel, so ``TraceEnum_ELBO``
  takes the expectation over q(Z) *exactly*: its loss is −eq. 18, entropy term included::

      L(q, Θ) = Σ_i Σ_k γ_ik [log α_k + log N(x_i | μ_k, Σ_k)] − Σ_i Σ_k γ_ik log γ_ik

* :func:`marginal_guide` with :func:`marginal_model` — Θ only, Z enumerated (summed out) in the
  model, so the loss is −Σ_i log Σ_k α_k N(x_i | μ_k, Σ_k) = −eq. 26, EM's objective.
  The two differ by KL(q ‖ p(Z | X, Θ)) ≥ 0 (second note, eq. 3), which the E-step (eq. 20)
  sets to 0.

Use ``TraceEnum_ELBO(max_plate_nesting=1)``.  All tensors keep the data's dtype (float64 by
default); torch's global default dtype is never touched.  Initial values: the keyword ``init``
(a :class:`GMMParams`) is used the first time a parameter is created; without it Θ₀ is
``initial_params(x, k, "kmeans++", seed=0)`` and γ₀ = e_step(x, Θ₀).  Parameters already in
Pyro's param store win (clear it with ``pyro.clear_param_store()`` to start afresh).

With a ``prior`` both functions delegate to the Bayesian model and guide (``ppl.bayes``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from ..core.gmm import e_step
from ..core.init import initial_params
from ..core.params import GMMParams
from ..core.validation import ArrayLike, as_data, check_int, check_k
from .bayes import bayes_gmm_model, bayes_meanfield_guide

if TYPE_CHECKING:
    from pyro.params.param_store import ParamStoreDict

    from ..core.priors import NormalWishartPrior

__all__ = [
    "gmm_model",
    "meanfield_guide",
    "marginal_model",
    "marginal_guide",
    "param_values",
    "model_body",
    "guide_body",
]


class _LazyInit:
    """Θ₀ and γ₀ computed once, and only if Pyro asks for an initial value."""

    def __init__(self, x: torch.Tensor, k: int, init: GMMParams | None) -> None:
        self.x, self.k, self.init = x, k, init
        self._params: GMMParams | None = None

    @property
    def params(self) -> GMMParams:
        if self._params is None:
            init = self.init if self.init is not None else "kmeans++"
            self._params = initial_params(self.x, self.k, init, 0)
        return self._params

    def gamma(self) -> torch.Tensor:
        return e_step(self.x, self.params)


def _global_params(x, k, init):
    """The pyro.params Θ = (α, μ, L) of the point-estimate model."""
    lazy = _LazyInit(x, k, init)
    alpha = pyro.param("alpha", lambda: lazy.params.alpha, constraint=constraints.simplex)
    mu = pyro.param("mu", lambda: lazy.params.mu)
    scale_tril = pyro.param("scale_tril", lambda: lazy.params.scale_tril, constraint=constraints.lower_cholesky)
    return alpha, mu, scale_tril


def model_body(
    x: torch.Tensor,
    k: int,
    idx: torch.Tensor | None = None,
    init: GMMParams | None = None,
    enumerate_z: bool = False,
    subsample_size: int | None = None,
) -> None:
    """Body of the model on validated (N, D) data; ``idx`` is an optional minibatch of rows
    (or ``subsample_size`` lets the plate draw one).

    A subsampled plate rescales every log density by N / batch size, so the loss is an
    unbiased estimate of the full-data one.
    """
    n = x.shape[0]
    alpha, mu, scale_tril = _global_params(x, k, init)
    infer = {"enumerate": "parallel"} if enumerate_z else {}
    with pyro.plate("data", n, subsample_size=subsample_size, subsample=idx) as rows:
        # Z_i ~ Cat(α) (eq. 15); given as logits log α so that the plate's expansion to (N, K)
        # stays a view (probs would be clamped and logged row by row)
        z = pyro.sample("z", dist.Categorical(logits=torch.log(alpha)), infer=infer)  # type: ignore[arg-type]
        obs = x if idx is None and subsample_size is None else x[rows]
        # x_i | z_i ~ N(μ_{z_i}, Σ_{z_i}); with z enumerated z has shape (K, 1): all K terms at once
        pyro.sample("x", dist.MultivariateNormal(mu[z], scale_tril=scale_tril[z]), obs=obs)  # eq. 15


def guide_body(
    x: torch.Tensor,
    k: int,
    idx: torch.Tensor | None = None,
    init: GMMParams | None = None,
    log_gamma: torch.Tensor | None = None,
    subsample_size: int | None = None,
) -> None:
    """Body of the mean-field guide q(Z) = Π_i Cat(γ_i) (eq. 17).

    ``log_gamma`` (rows of the minibatch) fixes q to given log-responsibilities instead of the
    ``"gamma"`` parameter: fit_svi's natural-gradient local step (the E-step, eq. 20).
    """
    n = x.shape[0]
    if log_gamma is None:
        lazy = _LazyInit(x, k, init)
        gamma = pyro.param("gamma", lazy.gamma, constraint=constraints.simplex)
    with pyro.plate("data", n, subsample_size=subsample_size, subsample=idx) as rows:
        if log_gamma is None:
            q = dist.Categorical(gamma if idx is None and subsample_size is None else gamma[rows])
        else:
            q = dist.Categorical(logits=log_gamma)
        # enumerated in parallel: TraceEnum_ELBO sums Σ_k γ_ik (...) exactly, no sampling
        pyro.sample("z", q, infer={"enumerate": "parallel"})


def _prepare(x, k, init, subsample_size):
    x = as_data(x)
    k = check_k(k, x.shape[0])
    if init is not None and not isinstance(init, GMMParams):
        raise TypeError(f"init must be a GMMParams or None, got {type(init).__name__}")
    if init is not None and (init.k != k or init.d != x.shape[1]):
        raise ValueError(f"init has K = {init.k}, D = {init.d} but the model has K = {k} on D = {x.shape[1]} data")
    if subsample_size is not None:
        subsample_size = check_int(subsample_size, "subsample_size", 1)
        if subsample_size > x.shape[0]:
            raise ValueError(f"subsample_size = {subsample_size} is larger than N = {x.shape[0]}")
    return x, k, (init.to(x.dtype) if init is not None else None), subsample_size


def gmm_model(
    x: ArrayLike,
    k: int,
    prior: NormalWishartPrior | None = None,
    *,
    init: GMMParams | None = None,
    subsample_size: int | None = None,
) -> None:
    """The GMM's generative process as a Pyro model.

    α → Z → X (eq. 15) as a graphical model (Σ_k = L_k L_kᵀ)::

            α ("alpha", simplex)          μ_k, L_k ("mu", "scale_tril"), k = 1..K
            │                             │
        ┌───┼─────────────────────────────┼─────────────────────────┐
        │   ▼                             ▼                         │
        │  z_i ~ Cat(α) ─────────────►  x_i ~ N(μ_{z_i}, Σ_{z_i})   │
        │  site "z" (latent)            site "x" (observed)         │
        └───────────────────────────────── plate "data", i = 1..N ──┘

    so that log p(X, Z | Θ) = Σ_i Σ_k Z_ik [log α_k + log N(x_i | μ_k, Σ_k)]   (eq. 15).

    Sites: ``"z"`` ~ Categorical(α) and observed ``"x"`` ~ N(μ_z, L_z L_zᵀ) inside
    ``pyro.plate("data", N)``; Θ are the pyro.params ``"alpha"`` (simplex), ``"mu"`` and
    ``"scale_tril"`` (lower Cholesky).  1-D data use the same code path with D = 1.
    ``subsample_size`` subsamples the plate (the guide, run first, draws the indices and the
    model replays them).  With a ``prior`` this is the Bayesian model of ``ppl.bayes``:
    sample sites ``"alpha"`` (Dirichlet), ``"Lambda"`` (the precision Λ_k = Σ_k⁻¹, Wishart — the
    conjugate parametrisation of PRML 10.40) and ``"mu"``, with ``"cov"`` = Λ⁻¹ recorded as a
    deterministic site so that traces and ArviZ output carry covariances.
    """
    if prior is not None:
        return bayes_gmm_model(x, k, prior)
    x, k, init, subsample_size = _prepare(x, k, init, subsample_size)
    return model_body(x, k, init=init, subsample_size=subsample_size)


def meanfield_guide(
    x: ArrayLike,
    k: int,
    prior: NormalWishartPrior | None = None,
    *,
    init: GMMParams | None = None,
    subsample_size: int | None = None,
) -> None:
    """q(Z) = Π_i Categorical(γ_i) (eq. 17) with Θ as point estimates (they live in the model).

    ``pyro.param("gamma")`` (N, K) on the simplex (initially e_step(x, Θ₀), eq. 20); the site
    ``"z"`` is enumerated in parallel, so ``-TraceEnum_ELBO(max_plate_nesting=1).loss`` is
    exactly eq. 18.  With a ``prior``: the Bayesian mean-field guide of ``ppl.bayes``.
    """
    if prior is not None:
        return bayes_meanfield_guide(x, k, prior)
    x, k, init, subsample_size = _prepare(x, k, init, subsample_size)
    return guide_body(x, k, init=init, subsample_size=subsample_size)


def marginal_model(x: ArrayLike, k: int, *, init: GMMParams | None = None) -> None:
    """:func:`gmm_model` with ``"z"`` enumerated in the model: Z is summed out exactly, so with
    :func:`marginal_guide` the ``TraceEnum_ELBO`` loss is −log p(X | Θ) = −eq. 26."""
    x, k, init, _ = _prepare(x, k, init, None)
    return model_body(x, k, None, init, enumerate_z=True)


def marginal_guide(x: ArrayLike, k: int, *, init: GMMParams | None = None) -> None:
    """The empty guide of the marginal model: Θ are point estimates (pyro.params of the model)
    and Z is enumerated in the model, so there is nothing left to approximate (KL = 0)."""


def param_values(
    store: ParamStoreDict | Mapping[str, torch.Tensor] | None = None,
) -> tuple[GMMParams, torch.Tensor | None]:
    """(Θ, γ) currently in Pyro's param store (γ is None if there is no ``"gamma"``)."""
    store = pyro.get_param_store() if store is None else store
    with torch.no_grad():
        scale_tril = store["scale_tril"].detach()
        params = GMMParams(store["alpha"].detach(), store["mu"].detach(), scale_tril @ scale_tril.transpose(-1, -2))
        gamma = store["gamma"].detach() if "gamma" in store else None
    return params, gamma
