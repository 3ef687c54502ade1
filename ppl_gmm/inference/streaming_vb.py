"""Streaming variational Bayes: stochastic variational inference on q(α) q(μ, Λ) (Hoffman, Blei,
Wang & Paisley 2013, JMLR 14, "Stochastic Variational Inference", Algorithm 1).

The model, the family and the bound are those of ``fit_vb`` (PRML §10.2): q(Z) q(α) q(μ, Λ) with
q(α) = Dir(alpha), q(μ_k, Λ_k) = N(m_k, (beta_k Λ_k)⁻¹) W(W_k, nu_k).  The global factors are
conjugate-exponential, with natural parameters (affine functions of)

    λ = (alpha,  beta,  beta m,  W⁻¹ + beta m mᵀ,  nu)          (Dir × Normal-Wishart, per k)

and the natural gradient of the bound with respect to λ is λ̂ − λ (Hoffman et al. 2013, §2–3),
where λ̂ is the CAVI update (PRML 10.58, 10.60–10.63) computed from the whole data.  One step
on a minibatch B (``StreamingVB.update``):

1. local step: r_ik from the current q, fit_vb's E-step (PRML 10.46–10.49);
2. λ̂ = the CAVI update as if B were repeated c = N / |B| times (with frequency weights w,
   c = Σ_all w / Σ_B w): N_k = c Σ_B w_i r_ik, Σ_B c w_i r_ik x_i, c Σ_B w_i r_ik (x_i − m_k)(x_i − m_k)ᵀ
   fed to ``core.priors.conjugate_update`` (fit_vb's M-step);
3. λ ← (1 − ρ_t) λ + ρ_t λ̂, with the Robbins–Monro step ρ_t = (t + τ)^(−κ), t = 1, 2, … the
   update count; κ ∈ (0.5, 1] and τ ≥ 0 make Σ ρ_t = ∞, Σ ρ_t² < ∞.

Step 3 interpolates the natural parameters, not (m, W): alpha, beta and nu directly, and

    beta m  ← (1 − ρ) beta m + ρ β̂ m̂,                     so m = that / beta
    W⁻¹ + beta m mᵀ ← (1 − ρ)(W⁻¹ + beta m mᵀ) + ρ (Ŵ⁻¹ + β̂ m̂ m̂ᵀ),

evaluated in the equivalent parallel-axis form W⁻¹_new = (1 − ρ) W⁻¹ + ρ Ŵ⁻¹
+ (1 − ρ) beta (m − m_new)(m − m_new)ᵀ + ρ β̂ (m̂ − m_new)(m̂ − m_new)ᵀ (no cancellation), in
coordinates centred at the start sample's mean (the interpolation commutes with the shift: the
natural parameters of x − c are linear in those of x).  With ρ = 1 (τ = 0, first update) and B the
whole data, a step is exactly one fit_vb iteration.

Start: as fit_vb, Θ₀ = fit_cavi's default Θ₀ on the start sample (the first batch, or for
``fit_streaming_vb`` the start sample of every fit, ``core.init.init_sample_indices``: at most 2**16
seeded rows), r₀ = e_step(sample, Θ₀) and the CAVI update from r₀, scaled to the whole data as in
step 2.  Every random choice flows from ``seed``: Θ₀ as fit_vb, the minibatch order from a child seed.

``bound(x)`` is fit_vb's full bound (PRML 10.70–10.77, every constant) at the current q after an
optimal local step over all of x: Σ_i w_i ln Σ_k ρ_ik + E[ln p(α, μ, Λ)] − E[ln q(α, μ, Λ)],
computed block by block (at fit_vb's posterior it is fit_vb's ``elbo[-1]``).

Only covariance_type="full" (the Normal-Wishart family). No rescaling of extreme data (fit_vb's
``DataScale``): the fit runs in the data's units, centred.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..core.gaussian import normalise_log
from ..core.gmm import e_step
from ..core.init import INIT_REG_COVAR, init_sample_indices, initial_params
from ..core.params import GMMParams
from ..core.priors import ConjugateStats, NormalWishartPrior, conjugate_update_from_data, default_prior, resolve_prior
from ..core.rng import resolve_seed, spawn_seeds
from ..core.sources import Source, as_source
from ..core.threads import limited_threads
from ..core.validation import (
    ArrayLike,
    check_bool,
    check_covariance_type,
    check_init,
    check_int,
    check_k,
    check_positive,
    resolve_dtype,
)
from ..core.vb_posterior import VBPosterior, global_terms, posterior_cholesky
from ..results.vb_fit import VBFit
from .ascent import progress_bar

__all__ = ["StreamingVB", "fit_streaming_vb", "step_size"]

BOUND_ROWS = 1 << 15  # rows per block of the bound's pass


def step_size(t: int, tau: float, kappa: float) -> float:
    """The Robbins–Monro step ρ_t = (t + τ)^(−κ) of update t = 1, 2, … (Hoffman et al. 2013, Alg. 1)."""
    return (t + tau) ** (-kappa)


def _check_kappa(kappa: float) -> float:
    kappa = check_positive(kappa, "kappa")
    if not 0.5 < kappa <= 1.0:
        raise ValueError(f"kappa must lie in (0.5, 1] (Robbins–Monro: Σ ρ_t = ∞, Σ ρ_t² < ∞), got {kappa!r}")
    return kappa


@dataclass(frozen=True)
class _Q:
    """q(α) q(μ, Λ) in coordinates centred at ``centre``; ``chol`` the Cholesky factors of W_k⁻¹."""

    st: ConjugateStats
    chol: torch.Tensor
    centre: torch.Tensor
    centred: VBPosterior  # the same q in the centred coordinates (its E-step)


def _posterior(q: _Q) -> VBPosterior:
    """q in the data's coordinates (m_k shifted back by the centre)."""
    st = q.st
    return VBPosterior.from_update(st.alpha, st.beta, st.m + q.centre, st.nu, q.chol)


class StreamingVB:
    """Streaming (stochastic) variational Bayes for the GMM, one minibatch at a time (module docstring).

    Parameters
    ----------
    k : int
        Number of components.
    prior : NormalWishartPrior
        The Dir × Normal-Wishart prior (PRML 10.39–10.40); it fixes D.
    n_total : float
        N, the number of rows of the whole data (Σ_i w_i with frequency weights): each minibatch
        stands for N / |B| copies of itself.
    covariance_type : {"full"}
        Only the Normal-Wishart family is implemented.
    tau, kappa : float
        ρ_t = (t + tau)^(−kappa); tau ≥ 0, kappa ∈ (0.5, 1] (defaults 1 and 0.7).
    init : {"kmeans++", "kmeans", "random"}, GMMParams or VBPosterior
        Θ₀ on the start sample (fit_vb's start; "kmeans": Lloyd's k-means from the k-means++ seeds,
        scikit-learn's default), or q₀ itself.
    seed : int or None
        Seeds Θ₀ (as fit_vb).
    dtype : torch.dtype or None
        float64 by default.

    Attributes
    ----------
    posterior : VBPosterior   the current q(α) q(μ, Λ) (None before the first batch)
    n_updates : int           minibatch steps taken
    rho : float               the last step size
    """

    def __init__(
        self,
        k: int,
        prior: NormalWishartPrior,
        *,
        n_total: float,
        covariance_type: str = "full",
        tau: float = 1.0,
        kappa: float = 0.7,
        init: str | GMMParams | VBPosterior = "kmeans++",
        seed: int | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.k = check_k(k)
        if not isinstance(prior, NormalWishartPrior):
            raise TypeError(f"prior must be a NormalWishartPrior, got {type(prior).__name__}")
        self.prior = prior
        self.d = prior.d
        self.n_total = check_positive(n_total, "n_total")
        if check_covariance_type(covariance_type) != "full":
            raise ValueError(
                f"covariance_type {covariance_type!r} is not supported by streaming VB: only 'full' "
                "(the Normal-Wishart family of fit_vb)"
            )
        self.covariance_type = covariance_type
        self.tau = check_positive(tau, "tau", allow_zero=True)
        self.kappa = _check_kappa(kappa)
        self.init = check_init(init, self.k, self.d, (VBPosterior,))
        if isinstance(self.init, VBPosterior) and (
            self.init.covariance_type != "full" or self.init.weight_prior != "dirichlet"
        ):  # q₀ is rebuilt from (alpha, m, beta, nu, W): another family would be read as this one
            raise ValueError(
                f"init is a VBPosterior with covariance_type {self.init.covariance_type!r} and weight prior "
                f"{self.init.weight_prior!r}; streaming VB starts only from a 'full', 'dirichlet' posterior"
            )
        self.seed = resolve_seed(seed)
        self.dtype = torch.float64 if dtype is None else resolve_dtype(torch.zeros(0), dtype)
        self.n_updates = 0
        self.rho = float("nan")
        self._q: _Q | None = None

    # --- input ---------------------------------------------------------------------------------
    def _source(self, x: ArrayLike | Source, sample_weight: ArrayLike | None, name: str) -> Source:
        src = as_source(x, sample_weight, dtype=self.dtype, name=name)  # validated before any work
        if src.d != self.d:
            raise ValueError(f"{name} has D = {src.d} columns but the prior is {self.d}-dimensional")
        return src

    def _batch(
        self, x: ArrayLike | Source, sample_weight: ArrayLike | None, name: str = "batch"
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        src = self._source(x, sample_weight, name)
        blk = src.read(0, src.n)
        return blk.x, None if blk.w is None else blk.w.to(self.dtype)

    @property
    def started(self) -> bool:
        """True once q has been set (by ``start`` or the first ``update``)."""
        return self._q is not None

    def _current(self) -> _Q:
        if self._q is None:
            raise ValueError("StreamingVB has no q yet: call update(batch) (or start(x)) first")
        return self._q

    # --- the global step -----------------------------------------------------------------------
    def _cavi_update(
        self, xc: torch.Tensor, r: torch.Tensor, w: torch.Tensor | None, centre: torch.Tensor
    ) -> ConjugateStats:
        """λ̂: fit_vb's M-step (PRML 10.58, 10.60–10.63) from r (K, b), every row counted c w_i times
        (c = N / Σ_B w, module docstring), in coordinates centred at ``centre``."""
        total = float(w.sum()) if w is not None else float(xc.shape[0])
        c = self.n_total / total
        gamma = r if (w is None and c == 1.0) else r * ((w if w is not None else 1.0) * c)
        m0, _, w0_inv = self.prior.cast(self.dtype)
        return conjugate_update_from_data(xc, gamma.T, self.prior, m0 - centre, w0_inv)

    def _set(self, st: ConjugateStats, centre: torch.Tensor) -> None:
        """Store q (centred coordinates) with its effective statistics N_k = nu_k − nu0 and scatter
        W_k⁻¹ − W0⁻¹ − beta0 (m_k − m0)(m_k − m0)ᵀ (PRML 10.62 solved for it)."""
        chol = posterior_cholesky(st.w_inv)  # raises DegeneratePosteriorError naming the component
        m0, _, w0_inv = self.prior.cast(self.dtype)
        dm = st.m - (m0 - centre)
        scatter = st.w_inv - w0_inv - self.prior.beta0 * dm[:, :, None] * dm[:, None, :]
        centred = VBPosterior.from_update(st.alpha, st.beta, st.m, st.nu, chol)
        self._q = _Q(st._replace(n_k=st.nu - self.prior.nu0, scatter=scatter), chol, centre, centred)

    def start(self, x: ArrayLike | Source, sample_weight: ArrayLike | None = None) -> StreamingVB:
        """Set q₀ from a start sample (module docstring, "Start"); ``update`` calls it on its first batch."""
        xt, w = self._batch(x, sample_weight, "x")
        with limited_threads():
            self._start(xt, w)
        return self

    def _start(self, x: torch.Tensor, w: torch.Tensor | None) -> None:
        centre = x.mean(0) if w is None else (w[:, None] * x).sum(0) / w.sum()
        if isinstance(self.init, VBPosterior):  # q₀ given
            q = VBPosterior(*(getattr(self.init, f).to(self.dtype) for f in ("alpha", "m", "beta", "nu", "W")))
            chol = q.W_inv_cholesky
            w_inv = chol @ chol.transpose(-1, -2)
            st = ConjugateStats(q.nu, q.alpha, q.beta, q.m - centre, q.nu, w_inv, w_inv)  # N_k, scatter: _set
            self._set(st, centre)
            return
        theta0 = initial_params(x, self.k, self.init, self.seed, "full", INIT_REG_COVAR, sample_weight=w)
        resp0 = e_step(x, theta0)  # fit_cavi's default Θ₀ (weighted k-means++ with weights), γ₀ = eq. 20
        self._set(self._cavi_update(x - centre, resp0.T, w, centre), centre)

    def _e_step(self, xc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fit_vb's E-step (``VBPosterior.log_rho``, normalised) on centred rows: r (K, b) and
        lse_i = ln Σ_k ρ_ik (b,), PRML 10.46–10.49."""
        z = self._current().centred.log_rho(xc).T  # ln ρ (K, b), 10.46 with 10.64–10.66
        r, lse = normalise_log(z, dim=0)  # 10.49
        return r, lse

    def update(self, batch: ArrayLike | Source, sample_weight: ArrayLike | None = None) -> StreamingVB:
        """One SVI step on a minibatch: local step, then λ ← (1 − ρ_t) λ + ρ_t λ̂ (module docstring).

        The first batch also serves as the start sample when ``start`` was not called. A batch of
        zero total weight is refused (it carries no information)."""
        x, w = self._batch(batch, sample_weight)
        with limited_threads():
            if self._q is None:
                self._start(x, w)
            self._step(x, w)
        return self

    def _step(self, x: torch.Tensor, w: torch.Tensor | None) -> None:
        q = self._current()
        st = q.st
        xc = x - q.centre
        r, _ = self._e_step(xc)  # local step, 10.46–10.49
        hat = self._cavi_update(xc, r, w, q.centre)  # λ̂ (10.58, 10.60–10.63, statistics × N/|B|)
        t = self.n_updates + 1
        rho = step_size(t, self.tau, self.kappa)
        a, b = (1.0 - rho) * st.beta, rho * hat.beta  # weights of the two Normal parts
        beta = a + b  # beta interpolated (10.60)
        m = (a[:, None] * st.m + b[:, None] * hat.m) / beta[:, None]  # beta m interpolated (10.61)
        d_old, d_hat = st.m - m, hat.m - m
        w_inv = (
            (1.0 - rho) * st.w_inv
            + rho * hat.w_inv
            + a[:, None, None] * d_old[:, :, None] * d_old[:, None, :]
            + b[:, None, None] * d_hat[:, :, None] * d_hat[:, None, :]
        )  # W⁻¹ + beta m mᵀ interpolated (10.62; parallel-axis form, module docstring)
        new = st._replace(
            alpha=(1.0 - rho) * st.alpha + rho * hat.alpha,  # alpha interpolated (10.58)
            beta=beta,
            m=m,
            nu=(1.0 - rho) * st.nu + rho * hat.nu,  # nu interpolated (10.63)
            w_inv=0.5 * (w_inv + w_inv.transpose(-1, -2)),
        )
        self._set(new, q.centre)
        self.n_updates, self.rho = t, rho

    # --- results -------------------------------------------------------------------------------
    @property
    def posterior(self) -> VBPosterior | None:
        """The current q(α) q(μ, Λ) in the data's coordinates (None before the first batch)."""
        return None if self._q is None else _posterior(self._q)

    def _blocks(
        self, x: ArrayLike | Source, sample_weight: ArrayLike | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """(centred block, weights) over any data source, ``BOUND_ROWS`` rows at a time."""
        centre = self._current().centre
        for blk in self._source(x, sample_weight, "x").blocks(BOUND_ROWS):
            yield blk.x - centre, None if blk.w is None else blk.w.to(self.dtype)

    def bound(self, x: ArrayLike | Source, sample_weight: ArrayLike | None = None) -> float:
        """fit_vb's full bound L (PRML 10.70–10.77) of the current q on x after the optimal local
        step: Σ_i w_i ln Σ_k ρ_ik + the global terms (10.73, 10.74, 10.76, 10.77), block by block."""
        post = _posterior(self._current())
        total = torch.zeros((), dtype=self.dtype)
        with limited_threads():
            for xc, w in self._blocks(x, sample_weight):
                _, lse = self._e_step(xc)
                total += lse.sum() if w is None else (w * lse).sum()  # Σ_i w_i lse_i (10.70 at r = softmax)
            return float(total + global_terms(post, self.prior))

    def responsibilities(self, x: ArrayLike | Source) -> torch.Tensor:
        """r (N, K) of the current q on x (PRML 10.49)."""
        with limited_threads():
            return torch.cat([self._e_step(xc)[0] for xc, _ in self._blocks(x, None)], 1).T.contiguous()

    def to_fit(self, x: ArrayLike | Source, sample_weight: ArrayLike | None = None) -> VBFit:
        """A ``VBFit`` (method "streaming_vb"): the current q, ``elbo = [bound(x)]`` and γ on x
        (in-memory data; None for other sources, whose N×K responsibilities are not materialised)."""
        src = self._source(x, sample_weight, "x")
        bound = self.bound(src)
        return VBFit(
            posterior=self.posterior,  # type: ignore[arg-type]
            gamma=self.responsibilities(src) if src.kind == "memory" else None,
            elbo=torch.tensor([bound], dtype=self.dtype),
            method="streaming_vb",
            n_iter=self.n_updates,
            converged=False,
            seed=self.seed,
            prior=self.prior,
            info=self.info(),
        )

    def info(self) -> dict:
        """The settings and the last step size, for ``VBFit.info``."""
        return {"tau": self.tau, "kappa": self.kappa, "n_total": self.n_total, "rho_final": self.rho}


def fit_streaming_vb(
    x: ArrayLike | Source,
    k: int,
    prior: NormalWishartPrior | None = None,
    *,
    batch_size: int = 10_000,
    n_passes: int = 5,
    tau: float = 1.0,
    kappa: float = 0.7,
    init: str | GMMParams | VBPosterior = "kmeans++",
    sample_weight: ArrayLike | None = None,
    seed: int | None = None,
    progress: bool = False,
    dtype: torch.dtype | None = None,
) -> VBFit:
    """Streaming variational Bayes over any data source in shuffled minibatches (``StreamingVB``).

    Parameters
    ----------
    x : array_like, tensor, ``.npy`` path, numpy.memmap, h5py/zarr dataset, dask.array or Source
        The data (``core.sources.as_source``), validated before any work.
    k, init, seed, dtype
        As ``fit_vb``.
    prior : NormalWishartPrior or None
        None: ``default_prior`` of the data (in memory), or of the start sample (other sources).
    batch_size : int
        Rows per minibatch (the last batch of a pass may be smaller).
    n_passes : int
        Passes over the data. In-memory data: each pass visits the rows in an order drawn from
        ``seed``; other sources: the consecutive blocks of ``batch_size`` rows in an order drawn from
        ``seed`` (block reads, not random rows).
    tau, kappa
        The step size ρ_t = (t + tau)^(−kappa) (``StreamingVB``).
    sample_weight : (N,) or None
        Frequency weights (a row of weight 3 counts as three rows); batches of zero weight are skipped.
    progress : bool
        A progress bar over the minibatches.

    Returns
    -------
    VBFit
        method "streaming_vb"; ``elbo = [fit_vb's bound of the final q on x]`` (one more pass);
        ``gamma`` the responsibilities (in-memory data; None for other sources); ``n_iter`` the
        number of minibatch steps; ``info`` with tau, kappa, n_total, batch_size, n_passes.

    Notes
    -----
    Start: the start sample of every fit (``core.init.init_sample_indices``: every row when
    N ≤ 2**16, else 2**16 sorted row indices drawn with ``numpy.random.default_rng(seed)``); q₀ is
    fit_vb's start on it (with weights: weighted k-means++ and a weighted update).
    """
    src = as_source(x, sample_weight, dtype=dtype)
    n, d = src.n, src.d
    k = check_k(k, n)
    init = check_init(init, k, d, (VBPosterior,))
    batch_size = check_int(batch_size, "batch_size", 1)
    n_passes = check_int(n_passes, "n_passes", 1)
    progress = check_bool(progress, "progress")
    _check_kappa(kappa)
    check_positive(tau, "tau", allow_zero=True)
    if prior is not None:
        resolve_prior(src.read(0, 1).x, k, prior)  # type and D
    seed = resolve_seed(seed)
    with limited_threads():
        idx0 = init_sample_indices(n, seed)  # the start sample of every fit (core.init)
        sample = src.read(0, n) if idx0 is None else src.take(idx0)
        if prior is None:
            x_all = src.tensor()
            prior = default_prior(x_all if x_all is not None else sample.x, k)
        svb = StreamingVB(
            k, prior, n_total=src.total_weight, tau=tau, kappa=kappa, init=init, seed=seed, dtype=src.dtype
        )
        svb._start(sample.x, None if sample.w is None else sample.w.to(src.dtype))  # q₀ (fit_vb's start)
        rng = np.random.default_rng(spawn_seeds(seed, 1)[0])  # the minibatch order: its own stream
        bar = progress_bar(progress, "streaming VB")
        xt, wt = src.tensor(), src.weights_tensor()
        for _ in range(n_passes):
            if xt is not None:  # in memory: shuffled rows
                perm = torch.from_numpy(rng.permutation(n))
                batches = ((xt[i], None if wt is None else wt[i]) for i in perm.split(batch_size))
            else:  # out of core: consecutive blocks in shuffled order
                starts = rng.permutation(range(0, n, batch_size))
                batches = ((b.x, b.w) for b in (src.read(int(a), int(a) + batch_size) for a in starts))
            for xb, wb in batches:
                if wb is None or float(wb.sum()) > 0:  # a batch of zero weight carries no information
                    svb._step(xb, None if wb is None else wb.to(src.dtype))
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
    fit = svb.to_fit(src)  # the bound of the final q on x (one more pass) and γ (in memory)
    return replace(fit, info={**fit.info, "batch_size": batch_size, "n_passes": n_passes})
