"""Closed-form variational Bayes for the GMM (Bishop, PRML §10.2): CAVI over q(Z) q(α) q(μ, Λ).

Model: the generative process of ``docs/maths.md`` (eq. 15) under the conjugate prior
``NormalWishartPrior`` (PRML 10.39–10.40).  The mean-field family and its optimum
(eq. 16 applied factor by factor) are

    q(Z) = Π_i Categorical(r_i)                       (10.48; eq. 17 with Θ integrated out)
    q(α) = Dir(α | alpha_k)                           (10.57)
    q(μ_k, Λ_k) = N(μ_k | m_k, (beta_k Λ_k)⁻¹) W(Λ_k | W_k, nu_k)     (10.59)

E-step (the expectation of eq. 15 under q(α) q(μ, Λ); eq. 20 with Θ integrated out):

    ln ρ_ik = E[ln π_k] + ½ E[ln |Λ_k|] − (D/2) ln 2π − ½ E[(x_i − μ_k)ᵀ Λ_k (x_i − μ_k)]   (10.46)
    E[ln π_k]   = ψ(alpha_k) − ψ(Σ_j alpha_j)                                             (10.66)
    E[ln |Λ_k|] = Σ_{d=1..D} ψ((nu_k + 1 − d)/2) + D ln 2 + ln |W_k|                       (10.65)
    E[quad]     = D / beta_k + nu_k (x_i − m_k)ᵀ W_k (x_i − m_k)                          (10.64)
    r_ik = ρ_ik / Σ_j ρ_ij   (log space)                                                  (10.49)

M-step: the conjugate update ``core.priors.conjugate_update`` (10.58, 10.60–10.63), then the
optimum of the covariance type's family for q(Λ) (``core.vb_posterior.restrict_update``: diag,
spherical, tied — exactly scikit-learn's ``BayesianGaussianMixture``) and, for
``weight_prior="dirichlet_process"``, the stick-breaking q(v_k) = Beta(1 + N_k, alpha0 + Σ_{j>k} N_j)
(Blei & Jordan 2006) in place of q(α); the model, the families and the bound are in ``core.vb_posterior``.

``.elbo`` is the full bound L = E[ln p(X, Z, α, μ, Λ)] − E[ln q] with every constant
(10.70–10.77), so for K = 1 it equals the exact log evidence ln p(X) once converged.
Iterations and traces follow ``fit_cavi`` (one driver, ``ascent.fit_ascent``): Θ₀ from
``core.init.initial_params_source`` (fit_cavi's default Θ₀, reg_covar = 1e-6), r₀ = e_step(x, Θ₀),
one VB M-step; then iteration t is an
E-step followed by an M-step and ``elbo[t−1]`` is the bound after it; a closing E-step
adds the last entry, so ``len(elbo) == n_iter + 1`` and ``gamma``/``elbo[-1]`` belong to
the returned posterior.  Each update is a coordinate ascent step, so the trace is
non-decreasing.

Speed: in coordinates centred at the data mean, ln ρ_ik is linear in the features
φ(x_i) = [x_i,d x_i,e (d ≤ e), x_i, 1], so an iteration is one blocked pass over the rows
with two GEMMs (ln ρ = A φ for the E-step, T = r φᵀ for the M-step's N_k, Σ r x, Σ r x xᵀ);
when a component lies so far from the data mean that this expansion could cost digits
(see ``_vb_kernel``) the iteration falls back to difference-first, two-pass kernels.
Scale: the fit runs in x' = x / s (``ascent``, "Scale"; s = 1 at ordinary scales) under the prior
mapped to x' units (m0 / s, s² W0), from fit_cavi's default Θ₀ of x'; the posterior maps back as
m = s m', W = W' / s² and the bound as L = L' − N D ln s.
Data sources (issue 10): ``x`` is anything ``core.sources.as_source`` takes. In memory the fit is
the one above, r kept as (K, b) blocks (``fit.gamma``). For a ``.npy`` file or memmap, an h5py/zarr
dataset or a Dask array no r is kept (``fit.gamma`` is None; ``fit.responsibilities(x)`` recomputes
it): each pass maps fixed row ranges — or the Dask chunks, where they live — to the statistics
(T = r φ, H[r], Σ lse) and adds them in a fixed order (``_vb_kernel.source_pass`` on ``_passes``:
the package's worker threads, or Dask), and the exact M-step is two more passes that recompute r
from the E-step that made it. Every source starts from ``core.init.initial_params_source`` (all
rows up to 2**16, else a seeded sample of 2**16 rows, the same for every kind) under the default
prior ``core.priors.default_prior_source`` (weighted x̄ and covariance), in coordinates centred at
the validation pass's weighted mean; so a source gives the in-memory answer up to the order of
the sums (1e-10 relative; tests/inference/test_vb_sources.py).
Devices: every tensor of a pass follows the data's device and dtype (``device=`` moves each block
there, ``core.sources.as_source``); q(α) q(μ, Λ), its M-step and the bound stay on the CPU, and
each pass brings back only its statistics (T, H[r], Σ lse: O(K·D²) numbers). ``fit.gamma`` is on
the data's device.
The fit runs on one torch thread (``core.threads.limited_threads``; the caller's count is restored):
OpenMP's spin-waiting threads collapse when other processes hold the cores. Passes over chunked
sources run on the package's worker threads (``_passes``).  The posterior type, its
expectations and the bound live in ``core.vb_posterior``; the result type in ``results.vb_fit``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..core.gmm import entropy
from ..core.init import INIT_REG_COVAR, initial_params_source
from ..core.linalg import log_det_from_cholesky
from ..core.params import GMMParams
from ..core.priors import (
    ConjugateStats,
    NormalWishartPrior,
    conjugate_update,
    conjugate_update_from_data,
    default_prior_source,
)
from ..core.rng import resolve_seed
from ..core.sources import Source, as_source
from ..core.threads import PARALLEL_WORK, limited_threads
from ..core.validation import (
    ArrayLike,
    check_bool,
    check_covariance_type,
    check_device,
    check_init,
    check_int,
    check_k,
    check_positive,
    data_scale,
)
from ..core.vb_posterior import (
    VBPosterior,
    bound_after_m_step,
    check_weight_prior,
    expected_log_weights,
    global_terms,
    log_weight_norm,
    posterior_cholesky,
    prior_constant,
    restrict_update,
    stick_update,
    vb_prior,
)
from ..results.vb_fit import VBFit
from . import _vb_kernel as kernel
from ._passes import resolve_threads
from .ascent import fit_ascent, scale_offsets, scale_posterior, scale_prior

__all__ = ["fit_vb", "VBProblem"]


@dataclass
class _State:
    st: ConjugateStats  # q(α) q(μ, Λ) in centred coordinates
    chol: torch.Tensor  # Cholesky factors of W_k⁻¹
    blocks: list | kernel.Recipe  # r of the last E-step, (K, b) blocks; for a source, how to recompute it
    t_stats: torch.Tensor | None  # T = r φ of the last E-step (None: use the exact M-step)
    entropy: torch.Tensor  # H[r] of the last E-step
    lse: torch.Tensor  # Σ_i ln Σ_k ρ_ik of the last E-step
    terms: tuple | None = None  # kernel.e_terms(st, chol) when the M-step already computed them
    stick_b: torch.Tensor | None = None  # b_k of the sticks q(v_k) = Beta(st.alpha_k, b_k) (DP prior)


class VBProblem:
    """Variational Bayes as an ``ascent.AscentProblem`` on the blocked kernel ``_vb_kernel``."""

    name = "the VB bound"

    def __init__(
        self,
        x: torch.Tensor | Source,
        k: int,
        prior: NormalWishartPrior,
        resp0_t: torch.Tensor | kernel.Recipe,
        covariance_type: str = "full",
        weight_prior: str = "dirichlet",
        w: torch.Tensor | None = None,
        *,
        inv_scale: float = 1.0,
        threads: int = 1,
    ) -> None:
        """``x`` (N, D) in x' units with weights ``w``, and r₀ (K, N); or a ``Source`` (data's units,
        read as x' = x · ``inv_scale``; weights its own) and the ``Recipe`` of r₀, its passes on
        ``threads`` worker threads or Dask (``_vb_kernel.source_pass``)."""
        self.n: float
        self.source = None if isinstance(x, torch.Tensor) else x
        self.inv_scale, self.threads = inv_scale, threads
        self.k, self.covariance_type, self.weight_prior = k, covariance_type, weight_prior
        self.prior = prior = vb_prior(prior, covariance_type)  # W0⁻¹ as the type reads it
        self.xc: torch.Tensor | None = None
        self.feats_t: torch.Tensor | None = None
        self.rows, self.d = tuple(x.shape) if isinstance(x, torch.Tensor) else (x.n, x.d)
        self.device = x.device  # where the passes run; q and its updates stay on the CPU
        self.iu = torch.triu_indices(self.d, self.d)
        self.iu_rows = self.iu.to(self.device)  # the same indices where the rows are
        if isinstance(x, torch.Tensor):
            self.w = w  # frequency weights (N,) or None
            self.n = self.rows if w is None else float(w.sum())  # N = Σ_i w_i in the bound and |Δ| / N
            centre = x.mean(0)
            self.xc = x - centre  # centred coordinates throughout; m_k is shifted back at the end
            self.centre = centre.cpu()
            p = self.iu.shape[1] + self.d + 1
            if self.rows * p <= kernel.FEATURE_CACHE_MAX:
                self.feats_t = kernel.features_t(self.xc, self.iu_rows)
        else:
            self.w, self.n = None, x.total_weight  # the source's own weights; N = Σ_i w_i
            self.centre = (x.summary.mean * inv_scale).to(x.dtype)  # the weighted x̄' of the validation pass
        self.centre_rows = self.centre.to(self.device)
        m0, _, self.w0_inv = prior.cast(self.centre.dtype)
        self.m0c = m0 - self.centre
        self.const = prior_constant(prior, k, covariance_type, weight_prior, self.centre.dtype)
        self.resp0_t = resp0_t

    def _pass(self, op: str, recipe: kernel.Recipe, arg: object = None) -> list:
        """One pass of ``_vb_kernel.chunk_stats`` over the source, reduced in a fixed order (on the
        rows' device; the statistics come back on the CPU)."""
        assert self.source is not None
        if isinstance(arg, torch.Tensor):
            arg = arg.to(self.device)
        shared = (op, recipe.to(self.device), self.centre_rows, self.inv_scale, self.k, arg)
        return kernel.source_pass(self.source, shared, self.threads)

    def _restrict(self, st: ConjugateStats) -> tuple[ConjugateStats, torch.Tensor | None]:
        """The full conjugate update → the optimum of the type's family and of the weight prior."""
        st = restrict_update(st, self.covariance_type)  # diag / spherical / tied (core.vb_posterior)
        if self.weight_prior == "dirichlet":
            return st, None  # alpha_k = alpha0 + N_k, 10.58
        a, b = stick_update(st.n_k, self.prior.alpha0)  # Blei & Jordan 2006
        return st._replace(alpha=a), b

    def _exact_m_step(
        self, resp_t: torch.Tensor | kernel.Recipe
    ) -> tuple[ConjugateStats, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The two-pass conjugate update (10.58, 10.60–10.63) from r (K, N) — or, for a source, from
        two passes that recompute r by its recipe: (N_k, Σ r x_c, H[r]), then the scatter about m_k.
        Also returns H[r] (sources; None in memory)."""
        if isinstance(resp_t, kernel.Recipe):
            n_k, sum_x, h = self._pass("moments", resp_t)
            scatter = lambda m: self._pass("scatter", resp_t, m)[0]  # Σ_i w_i r_ik (x_c,i − m_k)(…)ᵀ
            st = conjugate_update(self.prior, n_k, sum_x, scatter, self.m0c, self.w0_inv)  # 10.58–10.63
        else:
            h = None
            assert self.xc is not None
            resp_w = resp_t if self.w is None else resp_t * self.w  # w_i r_ik: every statistic weighted
            st = conjugate_update_from_data(self.xc, resp_w.T, self.prior, self.m0c, self.w0_inv)  # two-pass
        st, stick_b = self._restrict(st)
        return st, posterior_cholesky(st.w_inv), stick_b, h

    def _e_terms(self, st: ConjugateStats, chol: torch.Tensor, stick_b: torch.Tensor | None) -> tuple:
        return kernel.e_terms(st, chol, self.d, expected_log_weights(st.alpha, stick_b))

    def _bound(self, entropy, st: ConjugateStats, chol: torch.Tensor, stick_b: torch.Tensor | None) -> torch.Tensor:
        log_det_w = -log_det_from_cholesky(chol)  # ln |W_k|
        log_norm_q = log_weight_norm(st.alpha, stick_b)
        return bound_after_m_step(entropy, log_norm_q, st.beta, st.nu, log_det_w, self.const, self.n, self.d)

    def _scan(
        self,
        st: ConjugateStats,
        chol: torch.Tensor,
        stick_b: torch.Tensor | None,
        want_stats: bool,
        terms: tuple | None = None,
    ) -> _State:
        c, u, _ = self._e_terms(st, chol, stick_b) if terms is None else terms
        if kernel.spread(st, u) <= kernel.G_EXPANSION_MAX:
            design = kernel.design_t(st.m, u @ u.transpose(1, 2), c, self.iu)
            recipe = kernel.Recipe("design", (design, self.iu))
        else:
            recipe, want_stats = kernel.Recipe("exact", (st.m, u, c)), False
        if self.source is not None:  # block by block over the source; r is recomputed when needed
            t_stats, h, lse = self._pass("scan", recipe, want_stats)
            return _State(st, chol, recipe, t_stats, h, lse, stick_b=stick_b)
        assert self.xc is not None
        args = recipe.to(self.device).args
        if recipe.kind == "design":
            out = kernel.scan(
                self.xc,
                self.k,
                design=args[0],
                feats_t=self.feats_t,
                iu=self.iu_rows,
                want_stats=want_stats,
                w=self.w,
            )
        else:
            out = kernel.scan(self.xc, self.k, exact=args, want_stats=False, w=self.w)
        blocks, t_stats, h, lse = out  # r stays on the rows' device; the statistics go to the CPU
        return _State(st, chol, blocks, None if t_stats is None else t_stats.cpu(), h.cpu(), lse.cpu(), stick_b=stick_b)

    def start(self, final: bool) -> tuple[_State, float]:
        st, chol, stick_b, h0 = self._exact_m_step(self.resp0_t)
        if h0 is None:
            assert isinstance(self.resp0_t, torch.Tensor)
            h0 = entropy(self.resp0_t) if self.w is None else entropy(self.resp0_t.T, self.w)  # H[r₀] (symmetric)
            h0 = h0.cpu()
        prev = float(self._bound(h0, st, chol, stick_b))
        return self._scan(st, chol, stick_b, not final), prev

    def m_step(self, state: _State) -> tuple[_State, torch.Tensor]:
        new, terms, stick_b = None, None, None
        if state.t_stats is not None:  # the M-step from r φ, unless it would cost digits
            full = kernel.m_step_from_stats(state.t_stats, self.prior, self.m0c, self.w0_inv, self.iu, self.d)
            new, stick_b = self._restrict(full)
            new_chol, bad = posterior_cholesky(new.w_inv, check_only=True)
            if bad is None:
                terms = self._e_terms(new, new_chol, stick_b)  # reused by the next E-step
            if terms is None or kernel.spread(new, terms[1]) > kernel.G_EXPANSION_MAX:
                new, terms = None, None
        if new is None:
            resp = state.blocks if isinstance(state.blocks, kernel.Recipe) else torch.cat(state.blocks, 1)
            st, chol, stick_b, _ = self._exact_m_step(resp)
        else:
            st, chol = new, new_chol
        value = self._bound(state.entropy, st, chol, stick_b)
        return _State(st, chol, state.blocks, None, state.entropy, state.lse, terms, stick_b), value

    def e_step(self, state: _State, final: bool) -> tuple[_State, None]:
        return self._scan(state.st, state.chol, state.stick_b, not final, state.terms), None  # 10.46–10.49

    def posterior(self, state: _State) -> VBPosterior:
        st = state.st
        return VBPosterior.from_update(
            st.alpha, st.beta, st.m + self.centre, st.nu, state.chol, self.covariance_type, state.stick_b
        )

    def finish(self, state: _State) -> tuple[torch.Tensor, None]:
        return state.lse + global_terms(self.posterior(state), self.prior), None  # 10.70, r = softmax(ln ρ)

    def last_finite(self, state: _State) -> ConjugateStats:
        return state.st


def fit_vb(
    x: ArrayLike | Source | Any,
    k: int,
    prior: NormalWishartPrior | None = None,
    *,
    init: str | GMMParams | VBPosterior = "kmeans++",
    max_iter: int = 1000,
    tol: float = 1e-8,
    seed: int | None = None,
    progress: bool = False,
    dtype: torch.dtype | None = None,
    covariance_type: str = "full",
    weight_prior: str = "dirichlet",
    sample_weight: ArrayLike | None = None,
    device: torch.device | str | None = None,
    threads: int | None = None,
) -> VBFit:
    """Closed-form variational Bayes: CAVI over q(Z) q(α) q(μ, Λ), PRML §10.2 (module docstring).

    Parameters
    ----------
    x, k, max_iter, tol, seed, progress, dtype, threads
        As ``fit_cavi``; converged when the change of the bound divided by N falls below ``tol``.
        ``x``: in-memory data, a ``.npy`` path or memmap, an h5py/zarr-like dataset or a Dask array
        (read block by block; Dask chunk by chunk where the chunks live); ``threads`` the worker
        threads of those passes (default: torch's thread count; small fits use one).
    prior : NormalWishartPrior or None
        None means ``default_prior(x, k)``.
    init : {"kmeans++", "kmeans", "random"}, GMMParams or VBPosterior
        Θ₀ (r₀ = e_step(x, Θ₀)) from fit_cavi's start of that name ("kmeans": Lloyd's k-means from
        the k-means++ seeds, scikit-learn's default), or a posterior (r₀ = its E-step). The default Θ₀ is fit_cavi's
        default Θ₀ of the data in the fit's coordinates x / s (x itself at ordinary scales).
    covariance_type : {"full", "diag", "spherical", "tied"}
        The family of q(Λ), exactly scikit-learn's ``BayesianGaussianMixture`` of that type, with
        its ``covariance_prior`` = W0⁻¹ (diag: its diagonal; spherical: the mean of the diagonal;
        tied: W0⁻¹); see ``core.vb_posterior`` for the model and the bound.
    weight_prior : {"dirichlet", "dirichlet_process"}
        Dir(alpha0 1_K) on the weights, or the Dirichlet process truncated at K sticks (Blei &
        Jordan 2006) with concentration ``prior.alpha0`` (scikit-learn's
        ``weight_concentration_prior``; small values switch components off faster).
    sample_weight : array_like (N,), optional
        Frequency weights (finite, ≥ 0, positive total): row i counts w_i times in every statistic
        (N_k = Σ_i w_i r_ik, x̄_k, S_k, the entropy and the data term; N = Σ_i w_i in the bound and
        the stopping rule), in Θ₀ (weighted k-means++ and M-step) and in the default prior
        (weighted mean and covariance). Integer weights give the fit of the repeated rows.
    device : torch.device or str, optional
        Where the passes run, as in ``fit_cavi``: each block is moved there (default: the data's,
        CPU for arrays). q(α) q(μ, Λ), its M-step and the bound are computed on the CPU from the
        statistics each pass brings back (O(K·D²) numbers); ``gamma`` stays on the device.

    Returns
    -------
    VBFit
        ``.elbo`` the full bound (PRML 10.70–10.77), non-decreasing; the last entry after the
        closing E-step, so ``gamma`` and ``elbo[-1]`` belong to the returned posterior. ``gamma``
        is None unless ``x`` was in memory (``fit.responsibilities(x)`` recomputes it).

    Raises
    ------
    ValueError
        Bad input, before any work (an unknown ``covariance_type`` or ``weight_prior``, weights of
        the wrong length, negative, NaN/inf or all zero; a NaN/inf row of a chunked source, named
        by its global index; a DP concentration alpha0 ≤ 0 is refused by
        ``NormalWishartPrior`` itself); also data whose covariances, or whose posterior scale
        matrices W_k⁻¹ ~ N r² (PRML 10.62), float64 cannot hold (``core.validation.data_scale``).
    TypeError
        Weights that are not real numbers.
    """
    covariance_type = check_covariance_type(covariance_type)  # the cheap checks first: a chunked
    weight_prior = check_weight_prior(weight_prior)  # source's validation pass reads all the data
    progress = check_bool(progress, "progress")
    max_iter = check_int(max_iter, "max_iter", 0)
    tol = check_positive(tol, "tol", allow_zero=True)
    threads = resolve_threads(threads)
    device = check_device(device)
    if prior is not None and not isinstance(prior, NormalWishartPrior):
        raise TypeError(f"prior must be a NormalWishartPrior (or None for default_prior), got {type(prior).__name__}")
    source = as_source(x, sample_weight, dtype=dtype, device=device)
    k = check_k(k, source.n)
    init = check_init(init, k, source.d, (VBPosterior,))
    if prior is not None:
        prior.check_data(torch.empty(0, source.d))
    xm = source.tensor()  # in memory: the whole (N, D) tensor, and the fit keeps r
    if xm is not None:
        scale = data_scale(xm, scatter=True)  # refuses data whose covariances or W_k⁻¹ float64 cannot hold
        xs = scale.down(xm)  # the fit runs in x' = x / s (s = 1 at ordinary scales; ``ascent``, "Scale")
        wm = source.weights_tensor()
        w = None if wm is None else wm.to(xm.dtype)
    else:
        scale = source.summary.scale(scatter=True)  # the same rule from the validation pass's ranges
    inv_s = 1.0 / scale.s
    prior_s = default_prior_source(source, k, inv_s) if prior is None else scale_prior(prior, scale)  # in x' units
    assert prior_s is not None
    prior = prior if prior is not None else scale_prior(prior_s, scale, up=True)
    seed = resolve_seed(seed)
    work = source.n * k * source.d
    # one torch thread throughout: OpenMP's spinning threads collapse on a busy machine (in memory at
    # N = 1e6, K = 8, with two busy processes: 6.4 s on two torch threads, 2.8 s on one; idle 1.7 s
    # against 1.9 s); chunked sources get their parallelism from the worker pool
    with limited_threads():
        resp0: torch.Tensor | kernel.Recipe
        if isinstance(init, VBPosterior):  # r₀ = its E-step
            resp0 = kernel.Recipe.from_posterior(scale_posterior(init, scale))
        else:  # fit_cavi's default Θ₀ of x' on every source (weighted k-means++ and M-step with weights)
            init_reg = math.ldexp(INIT_REG_COVAR, 2 * scale.exponent)  # 1e-6 in x' units
            resp0 = kernel.Recipe.from_params(
                scale.params_down(initial_params_source(source, k, init, seed, "full", init_reg))
            )
        if xm is not None:  # r₀ (K, N) on the data's device; a source recomputes it by the recipe
            resp0 = kernel.responsibilities_t(xs, None, resp0.to(xs.device)).contiguous()
            problem = VBProblem(xs, k, prior_s, resp0, covariance_type, weight_prior, w)
        else:
            threads = 1 if work < PARALLEL_WORK else threads  # small fits: one thread is fastest
            problem = VBProblem(
                source, k, prior_s, resp0, covariance_type, weight_prior, inv_scale=inv_s, threads=threads
            )
        run = fit_ascent(problem, max_iter=max_iter, tol=tol, progress=progress, desc="VB")
        if source.weighted:
            offset = scale_offsets(scale, 1, source.d)[0] * problem.n  # N = Σ_i w_i
        else:
            offset = scale_offsets(scale, source.n, source.d)[0]  # the bound loses N·D·ln s in x'
        blocks = run.state.blocks  # r (K, b) blocks in memory; none is kept for a source
        return VBFit(
            posterior=scale_posterior(problem.posterior(run.state), scale, up=True),
            gamma=None if isinstance(blocks, kernel.Recipe) else torch.cat(blocks, 1).T.contiguous(),
            **run.trace_fields(source.dtype, offset),
            method="vb",
            n_iter=run.n_iter,
            converged=run.converged,
            seed=seed,
            prior=prior,
        )
