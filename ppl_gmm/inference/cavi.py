"""Closed-form CAVI = EM for the GMM (eq. 16–21, 28): ``fit_cavi``.

One iteration is the E-step (eq. 20: γ = the CAVI optimum eq. 17, which is the posterior eq. 27)
followed by the M-step (eq. 21 / 28: Θ maximising eq. 18 for fixed γ), exactly as scikit-learn's
``GaussianMixture`` iterates. Each iteration can only raise eq. 18 (coordinate ascent), and because
the E-step closes the KL gap, it can only raise eq. 26 too (eq. 22–25).

The loop is ``ascent.fit_ascent``; the maths of each step is the fused kernel ``_engine`` (one
pass over the data per iteration, in centred coordinates), whose closing pass writes γ. The fit
runs in x' = x / s (``core.validation.data_scale``; s = 1 at ordinary scales) with reg_covar / s²,
and returns μ = s μ', Σ = s² Σ' and traces with −N·D·ln s added (``ascent``, "Scale"). So
``fit.gamma`` equals ``e_step(x, fit.params)`` and ``fit.elbo[-1]`` equals
``log_likelihood(x, fit.params)`` to round-off (1e-12 relative in float64; tested).

Data sources and weights (issue 10). ``x`` is anything ``core.sources.as_source`` takes: in
memory, a ``.npy`` file or memmap, an h5py/zarr-like dataset, or a Dask array. The start is
``core.init.initial_params_source`` (the same for every source); each pass reads the data block
by block (Dask: chunk by chunk, where the chunks live). With ``sample_weight`` (frequencies) every
sum over rows is Σ_i w_i (…) and N is Σ_i w_i, in the stopping rule and the traces' scale offset.
For data in memory ``fit.gamma`` is γ (N, K); for the other sources it is ``None`` (an (N, K)
array is what out-of-core data avoid): ``fit.responsibilities(x)`` computes it.

Threads. The fit runs on one torch thread; a large pass (N·K·D ≥ ``core.threads.PARALLEL_WORK``)
is split into fixed tasks run by ``threads`` worker threads (``_passes``), whose statistics are
added in task order: the same seed gives the same bits for any ``threads``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.init import initial_params_source
from ..core.params import GMMParams
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
)
from ..results.gmm_fit import GMMFit
from ._em import CAVIProblem
from ._passes import resolve_threads
from .ascent import best_of_restarts, fit_ascent, scale_offsets

__all__ = ["fit_cavi", "CAVIProblem"]


def _run(source, k, init, seed, covariance_type, max_iter, tol, reg_covar, progress, scale, threads) -> GMMFit:
    """One fit on x' = x / s (``reg_covar`` and ``init`` in x's units)."""
    params0 = scale.params_down(initial_params_source(source, k, init, seed, covariance_type, reg_covar))
    problem = CAVIProblem(source, params0, covariance_type, scale.reg_down(reg_covar), scale=scale, threads=threads)
    run = fit_ascent(problem, max_iter=max_iter, tol=tol, progress=progress, desc="CAVI")
    offset = scale_offsets(scale, 1, source.d)[0] * source.total_weight  # eq. 18, 26 lose Σ_i w_i·D·ln s in x'
    return GMMFit(
        params=problem.params(run.state),
        gamma=problem.gamma,
        **run.trace_fields(source.dtype, offset, offset),
        method="cavi",
        n_iter=run.n_iter,
        converged=run.converged,
        seed=seed,
        covariance_type=covariance_type,
        reg_covar=reg_covar,
    )


def fit_cavi(
    x: ArrayLike | Source | Any,
    k: int,
    *,
    init: str | GMMParams = "kmeans++",
    covariance_type: str = "full",
    max_iter: int = 1000,
    tol: float = 1e-8,
    reg_covar: float = 1e-6,
    n_init: int = 1,
    seed: int | None = None,
    progress: bool = False,
    dtype: torch.dtype | None = None,
    sample_weight: Any = None,
    device: torch.device | str | None = None,
    threads: int | None = None,
) -> GMMFit:
    """Fit a K-component GMM by closed-form CAVI/EM (eq. 20 then eq. 21/28, repeated).

    Parameters
    ----------
    x : array_like (N,) or (N, D), a ``.npy`` path or ``numpy.memmap``, an h5py/zarr-like dataset,
        a ``dask.array.Array``, or a ``Source`` (``core.sources.as_source``)
        Data (numpy, torch, or anything ``np.asarray`` takes, in memory); the other kinds are read
        block by block and never loaded whole (Dask: chunk by chunk, where the chunks live).
    k : int
        Number of components, 1 <= k <= N.
    init : {"kmeans++", "kmeans", "random"} or GMMParams
        "kmeans++": seeded k-means++ centres, then one M-step from the hard assignments;
        "kmeans": Lloyd's k-means from those k-means++ seeds (scikit-learn's default
        ``init_params="kmeans"``), then one M-step from its hard assignments;
        "random": Dirichlet responsibilities, then one M-step; or Θ₀ itself. Above
        ``core.init.INIT_SAMPLE`` rows these run on a seeded sample of that many rows, the same
        for every kind of source (``core.init.initial_params_source``).
    covariance_type : {"full", "diag", "spherical", "tied"}
    max_iter, tol : int, float
        At most ``max_iter`` iterations; stop when |ΔELBO| / N < ``tol`` (``tol=0``: exactly
        ``max_iter``; with weights N = Σ_i w_i). The first change is measured from eq. 26 at Θ₀. In
        float32 the round-off of the E-step is ~1e-7 per point: use tol >= 1e-6 there.
    reg_covar : float
        Added to the diagonal of every covariance (scikit-learn's convention).
    n_init : int
        Restarts: the first uses ``seed`` itself (it is the fit of ``n_init=1``), the others the
        child seeds of ``seed`` (``inference.ascent.restart_seeds``); the fit with the best final
        ELBO is returned (the first on ties), with ``info["restart_seed"]`` the winner's.
    seed : int or None
        None draws one from OS entropy; it is recorded on the fit.
    progress : bool
        Show a progress bar (iteration and convergence measure).
    dtype : torch.float64 (default) or torch.float32
        float32 data give a float32 fit.
    sample_weight : array_like (N,), optional
        Frequency weights (finite, >= 0, positive total): row i counts as w_i copies of itself, so
        integer weights give the fit of the data with rows repeated, and a zero weight removes the
        row. Every statistic is Σ_i w_i (…); N in the stopping rule is Σ_i w_i.
    device : torch.device or str, optional
        Where the passes run (each block is moved there; default: the data's, CPU for arrays).
    threads : int, optional
        Worker threads of a large pass (default ``torch.get_num_threads()``); each runs whole row
        blocks on one torch thread, and the fit leaves torch's thread count as it found it. Small
        fits (N·K·D < ``core.threads.PARALLEL_WORK``) run on one thread. The answer is the same
        for every ``threads``. For a Dask array the scheduler's workers run the chunks instead
        (the threaded scheduler, or the active ``distributed.Client``), each on one torch thread.

    Returns
    -------
    GMMFit
        Trace entry t (t = 1..n_iter) holds eq. 18 at (γ_{t−1}, Θ_t) and eq. 26 at Θ_t; the last
        entry follows the closing E-step (γ = e_step(x, Θ)), where eq. 18 equals eq. 26, so
        ``len(fit.elbo) == fit.n_iter + 1``. ``fit.gamma`` is γ (N, K) for data in memory and
        ``None`` for the other sources (``fit.responsibilities(x)`` computes it).

    Raises
    ------
    ValueError, TypeError
        Bad input, before any work; also data whose covariances float64 cannot hold (a largest
        half-range of a column beyond 2^510 or below 2^-500: ``core.validation.data_scale``).
        A chunked source with NaN/inf names the global row, before the fit starts.
    EmptyComponentError, DegenerateComponentError
        During the fit, naming the component that emptied or collapsed, with remedies.
    """
    progress = check_bool(progress, "progress")  # the cheap checks first: a chunked source's
    check_covariance_type(covariance_type)  # validation pass reads all the data
    max_iter = check_int(max_iter, "max_iter", 0)
    n_init = check_int(n_init, "n_init", 1)
    tol = check_positive(tol, "tol", allow_zero=True)
    reg_covar = check_positive(reg_covar, "reg_covar", allow_zero=True)
    threads = resolve_threads(threads)
    device = check_device(device)
    source = as_source(x, sample_weight, dtype=dtype, device=device)
    k = check_k(k, source.n)
    init = check_init(init, k, source.d)
    scale = source.summary.scale(reg_covar)  # refuses data whose covariances float64 cannot hold
    seed = resolve_seed(seed)
    if source.n * k * source.d < PARALLEL_WORK:
        threads = 1  # small fits: one thread is fastest and not slowed by a busy core
    with limited_threads():  # the fit's small operations on one torch thread; passes on the pool
        return best_of_restarts(
            lambda s: _run(source, k, init, s, covariance_type, max_iter, tol, reg_covar, progress, scale, threads),
            seed,
            n_init,
        )
