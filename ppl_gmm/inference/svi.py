"""SVI on the Pyro GMM: the loss is exactly −eq. 18, and a fast natural-gradient local step.

``fit_svi`` runs Pyro's ``SVI`` on :func:`~ppl_gmm.ppl.model.gmm_model` and
:func:`~ppl_gmm.ppl.model.meanfield_guide` with ``TraceEnum_ELBO`` (``JitTraceEnum_ELBO`` when
``jit=True``).  The guide's ``"z"`` is enumerated, so each step's loss is *exactly* −L(γ, Θ),
eq. 18 — no Monte Carlo noise — and the trace ``.elbo`` is that number (mapped to data units).

Two ways to move the local variational parameters γ (``local_updates``):

* ``"gradient"`` (plain SVI): γ is a ``pyro.param`` on the simplex and moves by Adam steps on
  the same loss as Θ.  Slow: thousands of steps to reach the CAVI optimum.
* ``"natural"`` (Hoffman et al. 2013, stochastic variational inference): before every gradient
  step γ is set to its closed-form optimum given Θ — the natural-gradient step of size 1 on
  the local parameters, which is the E-step eq. 20 = the CAVI update eq. 17 — and Θ then
  moves by one Pyro/Adam gradient step on the same ``TraceEnum_ELBO`` loss.  Because
  ∂L/∂γ = 0 there, ∇_Θ L(γ*(Θ), Θ) = ∇_Θ log p(X | Θ) (eq. 26): Θ climbs the marginal
  likelihood directly, and after each local step ELBO = log-likelihood (KL gap 0).

The optimiser is Adam with an exponentially decaying learning rate,
lr_t = lr · lr_decay^(t / num_steps) (``pyro.optim.ExponentialLR``), so the steps shrink to
``lr · lr_decay`` and the iterates settle instead of oscillating.  Data are standardised
inside the fit by default (each feature centred and divided by its standard deviation s_d)
so that one learning rate suits every feature; results are mapped back to the data's units
and the reported ELBO includes the Jacobian term, L_data = L_std − N Σ_d log s_d, exactly.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass

import pyro
import torch
from pyro.infer import SVI, JitTraceEnum_ELBO, TraceEnum_ELBO
from torch.distributions import constraints

from ..core.errors import DivergenceError
from ..core.gaussian import log_gaussian_prec, logsumexp_rows
from ..core.gmm import e_step, elbo, elbo_from_log_weights, log_likelihood
from ..core.init import initial_params
from ..core.linalg import precision_cholesky
from ..core.params import GMMParams
from ..core.rng import generator_seed, resolve_seed
from ..core.validation import ArrayLike, check_bool, check_fit_args, check_int, check_positive, data_scale
from ..ppl.model import guide_body, model_body
from ..results.gmm_fit import GMMFit
from .svi_driver import StepOut, pyro_session, run_svi

__all__ = ["fit_svi", "LOCAL_UPDATES"]

_ADVICE = "Lower the learning rate (lr), standardise the data, or start from fit_cavi's parameters (init=fit.params)."

LOCAL_UPDATES = ("gradient", "natural")


@dataclass(frozen=True)
class _Options:
    num_steps: int
    lr: float
    lr_decay: float
    tol: float
    window: int
    jit: bool
    subsample_size: int | None
    local_updates: str
    standardize: bool
    eval_every: int
    init_reg_covar: float

    @property
    def natural(self) -> bool:
        return self.local_updates == "natural"


# --- the model and guide as SVI sees them (tensor arguments only, so that JIT can trace) -----
def _svi_model(x, *args, k, subsample, natural):
    model_body(x, k, idx=args[0] if subsample else None)


def _svi_guide(x, *args, k, subsample, natural):
    guide_body(x, k, idx=args[0] if subsample else None, log_gamma=args[-1] if natural else None)


# --- standardisation ---------------------------------------------------------------------------
class _Scaling:
    """x_s = (x − m) / s per feature; Θ maps as μ_s = (μ − m)/s, L_s = diag(1/s) L."""

    def __init__(self, x: torch.Tensor, standardize: bool) -> None:
        d = x.shape[1]
        if standardize:
            self.m = x.mean(0)
            s = (x - self.m).pow(2).mean(0).sqrt()
            self.s = torch.where(s > 0, s, torch.ones_like(s))
        else:
            self.m = torch.zeros(d, dtype=x.dtype)
            self.s = torch.ones(d, dtype=x.dtype)
        self.log_jacobian_per_point = -float(torch.log(self.s).sum())  # log N(x) = log N(x_s) − Σ log s_d

    def data(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.m) / self.s

    def to_std(self, params: GMMParams) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return params.alpha, (params.mu - self.m) / self.s, params.scale_tril / self.s[:, None]

    def to_data(self, alpha: torch.Tensor, mu_s: torch.Tensor, scale_tril_s: torch.Tensor) -> GMMParams:
        scale_tril = scale_tril_s * self.s[:, None]
        cov = scale_tril @ scale_tril.transpose(-1, -2)
        return GMMParams(alpha, self.m + mu_s * self.s, 0.5 * (cov + cov.transpose(-1, -2)))


def _weighted_log_prob(x, alpha, mu, scale_tril):
    """(B, K) log α_k + log N(x_i | μ_k, L_k L_kᵀ), the bracket of eq. 15, from Cholesky factors
    (``core.gaussian.log_gaussian_prec`` with the precision factors U_k = L_k⁻ᵀ)."""
    return log_gaussian_prec(x, mu, precision_cholesky(chol=scale_tril)).add_(torch.log(alpha))


def _store_values():
    """Copies of the constrained (α, μ, L) in the param store (μ would alias Adam's buffer)."""
    store = pyro.get_param_store()
    return tuple(store[name].detach().clone() for name in ("alpha", "mu", "scale_tril"))


def _batches(n, size, generator):
    """Endless minibatches: a fresh permutation of the rows every epoch (seeded)."""
    while True:
        perm = torch.randperm(n, generator=generator)
        for s in range(0, n - size + 1, size):
            yield perm[s : s + size]


def _run(x, k, params0, gamma0, seed, opt: _Options, progress, start):
    """The SVI program of one fit; returns (params, gamma, elbos, lls, times, steps, n_iter, converged)."""
    n = x.shape[0]
    if opt.num_steps == 0:
        return (
            params0,
            gamma0,
            [elbo(x, gamma0, params0)],
            [log_likelihood(x, params0)],
            [time.perf_counter() - start],
            [0],
            0,
            False,
        )
    natural, subsample = opt.natural, opt.subsample_size is not None
    scaling = _Scaling(x, opt.standardize)
    xs = scaling.data(x)
    jacobian = n * scaling.log_jacobian_per_point  # L_data = L_std + N · (−Σ_d log s_d)
    alpha0, mu0, scale_tril0 = scaling.to_std(params0)
    pyro.param("alpha", alpha0.clone(), constraint=constraints.simplex)
    pyro.param("mu", mu0.clone())
    pyro.param("scale_tril", scale_tril0.clone(), constraint=constraints.lower_cholesky)
    if not natural:
        tiny = torch.finfo(x.dtype).tiny  # the store keeps log γ: an underflowed γ_ik = 0 would be −inf
        pyro.param("gamma", gamma0.clamp_min(tiny), constraint=constraints.simplex)
    optim = pyro.optim.ExponentialLR(  # type: ignore[attr-defined]
        {"optimizer": torch.optim.Adam, "optim_args": {"lr": opt.lr}, "gamma": opt.lr_decay ** (1.0 / opt.num_steps)}
    )
    elbo_cls = JitTraceEnum_ELBO if opt.jit else TraceEnum_ELBO
    svi = SVI(_svi_model, _svi_guide, optim, elbo_cls(max_plate_nesting=1, ignore_jit_warnings=True))
    kwargs = {"k": k, "subsample": subsample, "natural": natural}
    batches = (
        _batches(n, opt.subsample_size, torch.Generator().manual_seed(generator_seed(seed, 64))) if subsample else None
    )

    def step(t: int) -> StepOut:
        idx = next(batches) if batches is not None else None
        record = not subsample or t % opt.eval_every == 0
        args = (xs,) if idx is None else (xs, idx)
        with torch.no_grad():
            alpha, mu, scale_tril = _store_values()
            if natural:
                wlp = _weighted_log_prob(xs if idx is None else xs[idx], alpha, mu, scale_tril)
                args = args + (wlp,)  # eq. 20: γ ∝ exp(ℓ), the local step (the guide's Categorical normalises)
            if record:
                full = _full_objectives(xs, alpha, mu, scale_tril, natural, subsample, wlp if natural else None)
        loss = svi.step(*args, **kwargs)  # −eq. 18 at (γ_t, Θ_t), then one Adam step on Θ (and γ)
        optim.step()
        if not record:
            return StepOut(check=(loss,), state=(alpha, mu, scale_tril))
        value = -loss if not subsample else full[0]  # eq. 18 (standardised units)
        entry = (torch.tensor(value + jacobian, dtype=x.dtype), torch.tensor(full[1] + jacobian, dtype=x.dtype))
        return StepOut(check=(loss, value, full[1]), record=entry, state=(alpha, mu, scale_tril))

    run = run_svi(
        step,
        num_steps=opt.num_steps,
        n=n,
        initial_state=_store_values(),
        tol=opt.tol,
        window=opt.window,
        progress=progress,
        desc=f"SVI ({'natural' if natural else 'gradient'} local steps)",
        advice=_ADVICE,
        describe_state=lambda last: _last_finite(scaling, last),
    )
    try:
        params = scaling.to_data(*_store_values())
    except ValueError as err:  # non-finite entries after the last step
        raise DivergenceError(run.n_iter, _last_finite(scaling, run.last_finite)) from err
    gamma = e_step(x, params) if natural else pyro.param("gamma").detach().clone()
    elbos = [r[0] for r in run.records] + [elbo(x, gamma, params)]  # eq. 18 at the returned (Θ, γ), data units
    lls = [r[1] for r in run.records] + [log_likelihood(x, params)]  # eq. 26
    if not (torch.isfinite(elbos[-1]) and torch.isfinite(lls[-1])):
        raise DivergenceError(run.n_iter, params)
    times = run.times + [time.perf_counter() - start]
    return params, gamma, elbos, lls, times, run.steps + [run.n_iter], run.n_iter, run.converged


def _full_objectives(xs, alpha, mu, scale_tril, natural, subsample, wlp):
    """(eq. 18, eq. 26) on all rows at the current state, in standardised units (floats).

    Full batch + natural: both from the E-step just computed (eq. 18 = eq. 26 after it).
    Otherwise one extra pass over the data; eq. 18 then uses the γ parameter of the store.
    """
    if wlp is None or subsample:
        wlp = _weighted_log_prob(xs, alpha, mu, scale_tril)
    ll = float(logsumexp_rows(wlp).sum())  # eq. 26
    if natural:
        return ll, ll  # γ = e_step(Θ): KL gap 0, eq. 18 = eq. 26
    if not subsample:
        return None, ll  # eq. 18 is −loss of the SVI step itself
    gamma = pyro.param("gamma").detach()
    return float(elbo_from_log_weights(gamma, wlp)), ll  # eq. 18


def _last_finite(scaling, last):
    try:
        return scaling.to_data(*last)
    except ValueError:
        return None


def _check_svi_args(
    n, num_steps, lr, lr_decay, tol, window, jit, subsample_size, local_updates, standardize, eval_every, reg_covar
) -> _Options:
    """Validate every option before any work starts."""
    lr_decay = check_positive(lr_decay, "lr_decay")
    if lr_decay > 1:
        raise ValueError(f"lr_decay is the final/initial learning-rate ratio and must be in (0, 1], got {lr_decay}")
    if subsample_size is not None:
        subsample_size = check_int(subsample_size, "subsample_size", 1)
        if subsample_size > n:
            raise ValueError(f"subsample_size = {subsample_size} is larger than N = {n}")
        if subsample_size == n:
            subsample_size = None
    if local_updates not in LOCAL_UPDATES:
        raise ValueError(f"unknown local_updates {local_updates!r}; use one of {', '.join(LOCAL_UPDATES)}")
    return _Options(
        num_steps=check_int(num_steps, "num_steps", 0),
        lr=check_positive(lr, "lr"),
        lr_decay=lr_decay,
        tol=check_positive(tol, "tol", allow_zero=True),
        window=check_int(window, "window", 1),
        jit=bool(jit),
        subsample_size=subsample_size,
        local_updates=local_updates,
        standardize=bool(standardize),
        eval_every=check_int(eval_every, "eval_every", 1),
        init_reg_covar=check_positive(reg_covar, "reg_covar", allow_zero=True),
    )


def fit_svi(
    x: ArrayLike,
    k: int,
    *,
    init: str | GMMParams = "kmeans++",
    num_steps: int = 2000,
    lr: float = 0.05,
    seed: int | None = None,
    jit: bool = False,
    subsample_size: int | None = None,
    progress: bool = False,
    local_updates: str = "gradient",
    lr_decay: float = 0.1,
    tol: float = 1e-8,
    window: int = 10,
    standardize: bool = True,
    eval_every: int = 1,
    reg_covar: float = 1e-6,
    dtype: torch.dtype | None = None,
) -> GMMFit:
    """Fit a K-component, full-covariance GMM by Pyro SVI whose loss is exactly −eq. 18.

    Start: Θ₀ = ``initial_params(x, k, init, seed, "full", reg_covar)`` — the same Θ₀ as
    ``fit_cavi`` with the same ``init``, ``seed`` and ``reg_covar`` — and γ₀ = e_step(x, Θ₀)
    (eq. 20), so the first trace entry is L(γ₀, Θ₀) = log p(X | Θ₀).  ``num_steps=0`` returns
    exactly that starting point.  ``init``: "kmeans++", "kmeans" (Lloyd's k-means from the
    k-means++ seeds, scikit-learn's default), "random" or a GMMParams, as ``fit_cavi``.

    Parameters beyond ``fit_cavi``'s:
    num_steps      gradient steps (an upper bound when ``tol > 0``).
    lr, lr_decay   Adam's learning rate, decayed exponentially to ``lr * lr_decay`` at the
                   last step (``pyro.optim.ExponentialLR``).
    local_updates  "gradient" (plain SVI: γ moves by Adam steps) or "natural" (γ set to the
                   E-step eq. 20 before each step on Θ: the natural-gradient local step of SVI,
                   Hoffman et al. 2013; reaches the CAVI optimum in tens of steps).
    jit            use ``JitTraceEnum_ELBO`` (compiled once, then faster per step).
    subsample_size minibatch SVI: the plate ``"data"`` is subsampled (seeded permutation per
                   epoch), log densities are scaled by N / subsample_size, and only the
                   minibatch rows of γ enter each step.  ``.elbo`` is then the exact
                   *full-data* eq. 18 evaluated every ``eval_every`` steps (not the noisy
                   minibatch loss); ``info["trace_steps"]`` lists the step of each entry.
    tol, window    converged when the last ``window`` per-step changes of ``.elbo``, divided
                   by N, are all below ``tol``; the fit then stops (as ``fit_cavi``'s rule, over
                   a window because Adam's steps are not monotone).  ``tol=0`` runs exactly
                   ``num_steps`` steps.
    standardize    fit standardised features (results always in data units, see module doc).

    Trace: ``.elbo[t]`` is eq. 18 after t steps (full batch: −loss of step t+1 plus the
    standardisation Jacobian), ``.elbo[-1]`` is eq. 18 at the returned ``.params`` and
    ``.gamma``; ``.log_likelihood[t]`` is eq. 26 at the same Θ.  A NaN/inf objective raises
    :class:`~ppl_gmm.errors.DivergenceError` naming the step, with the last finite Θ attached.

    The global Pyro param store and validation flags, torch's global RNG and default dtype
    (set to the data's dtype while a JIT-compiled fit runs, because ``torch.jit.trace`` stores
    Python scalars as default-dtype constants) are restored on exit; every random choice
    flows from ``seed``.
    """
    x, k, init = check_fit_args(x, k, init, dtype)
    progress, jit = check_bool(progress, "progress"), check_bool(jit, "jit")
    data_scale(x)  # refuses data whose covariances float64 cannot hold (SVI works in the data's units)
    opt = _check_svi_args(
        x.shape[0],
        num_steps,
        lr,
        lr_decay,
        tol,
        window,
        jit,
        subsample_size,
        local_updates,
        standardize,
        eval_every,
        reg_covar,
    )
    seed = resolve_seed(seed)
    start = time.perf_counter()
    params0 = initial_params(x, k, init, seed, "full", reg_covar)
    gamma0 = e_step(x, params0)  # eq. 20 at Θ₀
    with pyro_session(seed), warnings.catch_warnings():  # holds the global-state lock: dtype changes inside
        warnings.filterwarnings("ignore", message=".*torch.jit.trace. is deprecated")
        default_dtype = torch.get_default_dtype()
        if jit:  # torch.jit.trace stores Python scalars as default-dtype constants: keep them exact
            torch.set_default_dtype(x.dtype)
        try:
            state = _run(x, k, params0, gamma0, seed, opt, progress, start)
        finally:
            torch.set_default_dtype(default_dtype)
    params, gamma, elbos, lls, times, steps, n_iter, converged = state
    info = asdict(opt)
    if opt.subsample_size is not None:
        info["trace_steps"] = steps
    else:
        info["eval_every"] = 1
    return GMMFit(
        params=params,
        gamma=gamma,
        elbo=torch.stack(elbos),
        log_likelihood=torch.stack(lls),
        method="svi",
        n_iter=n_iter,
        converged=converged,
        seed=seed,
        covariance_type="full",
        reg_covar=opt.init_reg_covar,
        times=torch.tensor(times, dtype=torch.float64),
        info=info,
    )
