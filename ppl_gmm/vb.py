"""Closed-form variational Bayes for the GMM (Bishop, PRML §10.2): CAVI over q(Z) q(α) q(μ, Λ).

Model: the generative process of SPEC.md (eq. 15) under the conjugate prior
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

M-step: the conjugate update of ``priors.conjugate_update`` (10.58, 10.60–10.63).

``.elbo`` is the full bound L = E[ln p(X, Z, α, μ, Λ)] − E[ln q] with every constant
(10.70–10.77), so for K = 1 it equals the exact log evidence ln p(X) once converged.
Iterations and traces follow ``fit_cavi``: Θ₀ from ``init.initial_params`` (fit_cavi's
default Θ₀, reg_covar = 1e-6), r₀ = e_step(x, Θ₀), one VB M-step; then iteration t is an
E-step followed by an M-step and ``elbo[t−1]`` is the bound after it; a closing E-step
adds the last entry, so ``len(elbo) == n_iter + 1`` and ``gamma``/``elbo[-1]`` belong to
the returned posterior.  Each update is a coordinate ascent step, so the trace is
non-decreasing.

Speed: in coordinates centred at the data mean, ln ρ_ik is linear in the features
φ(x_i) = [x_i,d x_i,e (d ≤ e), x_i, 1], so an iteration is one blocked pass over the rows
with two GEMMs (ln ρ = A φ for the E-step, T = r φᵀ for the M-step's N_k, Σ r x, Σ r x xᵀ);
when a component lies so far from the data mean that this expansion could cost digits
(see ``_G_EXPANSION_MAX``) the iteration falls back to difference-first, two-pass kernels.
Small fits run on one torch thread (``_threads.limited_threads``).  The posterior type, its
expectations and the bound live in ``vb_posterior`` (re-exported here).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ._fitting import AscentTrace, progress_bar
from ._threads import limited_threads
from ._validation import check_int, check_positive
from .cavi import check_fit_args
from .closed_form import e_step
from .errors import DivergenceError
from .init import initial_params, resolve_seed
from .params import GMMParams
from .priors import ConjugateStats, NormalWishartPrior, conjugate_update, default_prior, expected_log_det
from .vb_posterior import (  # noqa: F401  (re-exported: the public names and the kernels' helpers)
    _LOG_2PI,
    DegeneratePosteriorError,
    VBPosterior,
    _bound_after_m_step,
    _chol,
    _chol_checked,
    _global_terms,
    _log_det_from_chol,
    _prior_constant,
    _quad_t,
    _whitener,
    lower_bound,
    sample_posterior,
)

__all__ = ["VBPosterior", "VBFit", "fit_vb", "sample_posterior", "lower_bound", "DegeneratePosteriorError",
           "initial_responsibilities", "resolve_prior", "INIT_REG_COVAR"]

INIT_REG_COVAR = 1e-6  # fit_cavi's default: Θ₀ of fit_vb / fit_map is fit_cavi's default Θ₀


# --- the fit ---------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class VBFit:
    """Result of ``fit_vb`` (method "vb") or ``fit_svi_bayes`` (method "svi_bayes").

    posterior   VBPosterior q(α) q(μ, Λ)
    gamma       (N, K) q(Z) of the training data (PRML 10.49)
    elbo        (T,) the full bound (10.70–10.77) per iteration/step; for "vb" non-decreasing,
                entry t after iteration t's M-step, the last after the closing E-step
    method      "vb" or "svi_bayes"
    n_iter, converged, seed, prior, times (seconds per trace entry), info (free-form)
    """

    posterior: VBPosterior
    gamma: torch.Tensor
    elbo: torch.Tensor
    method: str = "vb"
    n_iter: int = 0
    converged: bool = False
    seed: int | None = None
    prior: NormalWishartPrior | None = None
    times: torch.Tensor | None = None
    info: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return self.posterior.k

    @property
    def d(self) -> int:
        return self.posterior.d

    @property
    def weights(self) -> torch.Tensor:
        """E[π_k] under q(α)."""
        return self.posterior.expected_weights()

    def n_effective(self, threshold: float = 1e-2) -> int:
        """Components with E[π_k] > threshold (the ones not switched off, PRML fig. 10.6)."""
        return int((self.weights > threshold).sum())

    def mean_params(self, cov: str = "inverse_expected_precision") -> GMMParams:
        return self.posterior.mean_params(cov)

    def predictive_log_density(self, x) -> torch.Tensor:
        """ln p(x̂ | X) per row, the Student-t mixture of PRML 10.81."""
        return self.posterior.predictive_log_density(x)

    def score_samples(self, x) -> torch.Tensor:
        """ln p(x̂ | X) per row (N,) under the posterior predictive (PRML 10.81)."""
        return self.posterior.predictive_log_density(x)

    def score(self, x) -> float:
        return float(self.score_samples(x).mean())

    def predict_proba(self, x) -> torch.Tensor:
        """q(z = k) for new rows: the VB E-step, PRML 10.46–10.49 (as scikit-learn's predict_proba)."""
        return self.posterior.responsibilities(x)

    def predict(self, x) -> torch.Tensor:
        return torch.argmax(self.posterior.log_rho(x), dim=1)

    def sample_posterior(self, num_samples: int = 1000, seed=None) -> dict:
        return sample_posterior(self.posterior, num_samples, seed)

    def to_arviz(self, num_samples: int = 1000, seed=None):
        """``num_samples`` draws from q as an ``InferenceData`` (dims ``component``, ``feature``)."""
        from .arviz_io import vb_to_inference_data

        return vb_to_inference_data(self, num_samples, seed)

    def __repr__(self) -> str:
        last = float(self.elbo[-1]) if self.elbo.numel() else float("nan")
        return (f"VBFit(method={self.method!r}, K={self.k}, D={self.d}, n_iter={self.n_iter}, "
                f"converged={self.converged}, elbo={last:.6f}, n_effective={self.n_effective()}, seed={self.seed})")


def resolve_prior(x: torch.Tensor, k: int, prior) -> NormalWishartPrior:
    """``prior`` checked against the data; ``None`` means ``default_prior(x, k)``."""
    if prior is None:
        return default_prior(x, k)
    if not isinstance(prior, NormalWishartPrior):
        raise TypeError(f"prior must be a NormalWishartPrior (or None for default_prior), got {type(prior).__name__}")
    prior.check_data(x)
    return prior


def initial_responsibilities(x, k, init="kmeans++", seed=0) -> torch.Tensor:
    """r₀ (N, K) of fit_vb (and the γ start fit_svi_bayes can share): e_step(x, Θ₀) with fit_cavi's
    default Θ₀ (``init.initial_params``, reg_covar = 1e-6), or the VB E-step of a given VBPosterior.
    ``x`` must be validated (N, D) data (``cavi.check_fit_args``)."""
    if isinstance(init, VBPosterior):
        return init.responsibilities(x)
    return e_step(x, initial_params(x, k, init, seed, "full", INIT_REG_COVAR))


# --- the blocked kernel of one iteration ------------------------------------------------------------
# In centred coordinates x_c = x − x̄ the E-step exponent is a linear function of the features
# φ(x_c) = [x_c,d x_c,e (d ≤ e), x_c, 1] (P = D(D+1)/2 + D + 1):
#     ln ρ_ik = c_k − ½ (x_c − m_k)ᵀ ν_k W_k (x_c − m_k) = a_kᵀ φ(x_i)                    (10.46, 10.64)
# and the M-step needs only T = r φ (K, P): N_k, Σ_i r_ik x_c,i and Σ_i r_ik x_c,i x_c,iᵀ.  One GEMM
# each way.  The expansion loses about ε·G relative digits, G = max_k ν_k m_kᵀ W_k m_k the squared
# Mahalanobis distance of a component from the data mean; when G > _G_EXPANSION_MAX (1e-10 relative
# at worst) the iteration uses the exact kernels instead: differences x_i − m_k formed first
# (E-step) and two-pass scatter centred at the new m_k (M-step, priors.scatter_about).
_G_EXPANSION_MAX = 1e6
_FEATURE_CACHE_MAX = 1 << 23  # cache φ (P, N) when it holds at most this many numbers (64 MB)
_SCAN_ROWS = 1 << 15  # rows per block of the one-pass kernel


def _features_t(xc: torch.Tensor, iu: torch.Tensor) -> torch.Tensor:
    """φ(x_c)ᵀ (P, b): pairwise products (d ≤ e), the coordinates, and a row of ones."""
    ones = torch.ones(1, xc.shape[0], dtype=xc.dtype)
    return torch.cat([(xc[:, iu[0]] * xc[:, iu[1]]).T, xc.T, ones], 0)


def _design_t(mc, wt, c, iu) -> torch.Tensor:
    """a_k (K, P) with a_kᵀ φ(x) = c_k − ½ (x − m_k)ᵀ Wt_k (x − m_k), Wt_k = ν_k W_k."""
    pair = wt[:, iu[0], iu[1]] * torch.where(iu[0] == iu[1], -0.5, -1.0).to(wt.dtype)
    lin = torch.einsum("kde,ke->kd", wt, mc)
    const = c - 0.5 * (lin * mc).sum(1)
    return torch.cat([pair, lin, const[:, None]], 1)


def _scan(xc, k, *, design=None, feats_t=None, iu=None, exact=None, want_stats=True, block_rows=None):
    """One pass over the rows: ln ρ (10.46), r (10.49), H[r] = −Σ r ln r, Σ_i ln Σ_k ρ_ik, and
    T = r φ (K, P) when ``design`` is used.  ``exact=(m_c, √ν U, c)`` selects the exact E-step.
    ``block_rows`` defaults to ``_SCAN_ROWS``, read at call time.
    Returns (list of r-blocks (K, b), T or None, H, Σ lse)."""
    n = xc.shape[0]
    block_rows = _SCAN_ROWS if block_rows is None else block_rows
    blocks = []
    entropy = torch.zeros((), dtype=xc.dtype)
    lse = torch.zeros((), dtype=xc.dtype)
    stats = torch.zeros(k, design.shape[1], dtype=xc.dtype) if (want_stats and exact is None) else None
    for s in range(0, n, block_rows):
        if exact is None:
            ph = feats_t[:, s : s + block_rows] if feats_t is not None else _features_t(xc[s : s + block_rows], iu)
            z = design @ ph  # ln ρ, 10.46 with 10.64–10.66
        else:
            mc, u, c = exact
            z = _quad_t(xc[s : s + block_rows], mc, u, block_rows).mul_(-0.5).add_(c[:, None])
        mx = z.amax(0)
        z.sub_(mx)
        r = torch.exp(z)
        total = r.sum(0)
        r.div_(total)  # 10.49
        log_total = torch.log(total)
        entropy += log_total.sum() - torch.dot(r.view(-1), z.view(-1))
        lse += (mx + log_total).sum()
        if stats is not None:
            stats.addmm_(r, ph.T)
        blocks.append(r)
    return blocks, stats, entropy, lse


def _m_step_from_stats(t, prior, m0c, w0_inv, iu, d):
    """The conjugate update (10.58, 10.60–10.63) from T = r φ, centred coordinates."""
    npair = iu.shape[1]
    n_k = t[:, -1]  # 10.51
    s = t[:, npair : npair + d]  # Σ_i r_ik x_c,i
    q = torch.zeros(t.shape[0], d, d, dtype=t.dtype)
    q[:, iu[0], iu[1]] = t[:, :npair]
    q[:, iu[1], iu[0]] = t[:, :npair]  # Σ_i r_ik x_c,i x_c,iᵀ
    beta = prior.beta0 + n_k  # 10.60
    m = (prior.beta0 * m0c + s) / beta[:, None]  # 10.61
    sm = s[:, :, None] * m[:, None, :]
    scatter = q - sm - sm.transpose(1, 2) + n_k[:, None, None] * m[:, :, None] * m[:, None, :]
    dm = m - m0c
    w_inv = w0_inv + scatter + prior.beta0 * dm[:, :, None] * dm[:, None, :]  # 10.62
    return ConjugateStats(n_k, prior.alpha0 + n_k, beta, m, prior.nu0 + n_k, 0.5 * (w_inv + w_inv.transpose(1, 2)))


def _e_terms(st, chol, d):
    """c_k = E[ln π_k] + ½ E[ln|Λ_k|] − (D/2) ln 2π − D/(2β_k) and the whitener √ν_k U_k."""
    log_det_w = _log_det_from_chol(chol)
    elog_pi = torch.digamma(st.alpha) - torch.digamma(st.alpha.sum())  # 10.66
    elog_det = expected_log_det(log_det_w, st.nu, d)  # 10.65
    c = elog_pi + 0.5 * elog_det - 0.5 * d * _LOG_2PI - 0.5 * d / st.beta  # 10.46, 10.64
    u = _whitener(chol) * torch.sqrt(st.nu)[:, None, None]  # ν_k W_k = (√ν_k U_k)(√ν_k U_k)ᵀ
    return c, u, log_det_w


def _spread(st, u) -> float:
    """G = max_k ν_k m_kᵀ W_k m_k (centred m): the expansion's loss of digits is about ε·G."""
    return float(torch.einsum("kd,kde->ke", st.m, u).square().sum(1).max())


def fit_vb(x, k, prior=None, *, init="kmeans++", max_iter=1000, tol=1e-8, seed=None, progress=False,
           dtype=None) -> VBFit:
    """Closed-form variational Bayes (CAVI over q(Z) q(α) q(μ, Λ), PRML §10.2; see the module doc).

    ``prior``: a NormalWishartPrior (None: ``default_prior(x, k)``).  ``init``: "kmeans++",
    "random", a GMMParams (Θ₀; r₀ = e_step(x, Θ₀)) or a VBPosterior (r₀ = its E-step).
    Converged when the change of the bound divided by N falls below ``tol``; ``tol=0`` runs
    exactly ``max_iter`` iterations.  ``progress=True`` shows a tqdm bar.
    """
    x, k = check_fit_args(x, k, "kmeans++" if isinstance(init, VBPosterior) else init, dtype)
    if isinstance(init, VBPosterior) and (init.k != k or init.d != x.shape[1]):
        raise ValueError(f"init posterior has K = {init.k}, D = {init.d}; the fit asks for K = {k}, D = {x.shape[1]}")
    max_iter = check_int(max_iter, "max_iter", 0)
    tol = check_positive(tol, "tol", allow_zero=True)
    prior = resolve_prior(x, k, prior)
    seed = resolve_seed(seed)
    with limited_threads(x.shape[0] * k * x.shape[1]):
        return _fit(x, k, prior, init, max_iter, tol, seed, progress)


def _fit(x, k, prior, init, max_iter, tol, seed, progress) -> VBFit:
    n, d = x.shape
    start = time.perf_counter()
    centre = x.mean(0)
    xc = x - centre  # centred coordinates throughout; m_k is shifted back at the end
    m0, _, w0_inv = prior.cast(x.dtype)
    m0c = m0 - centre
    const = _prior_constant(prior, k, x.dtype)
    iu = torch.triu_indices(d, d)
    p = iu.shape[1] + d + 1
    feats_t = _features_t(xc, iu) if n * p <= _FEATURE_CACHE_MAX else None

    def exact_m_step(resp_t):
        st = conjugate_update(xc, resp_t, prior, w0_inv, m0c)  # 10.58, 10.60–10.63, two-pass
        return st, _chol(st.w_inv)

    def e_step_scan(st, chol, want_stats):
        c, u, _ = _e_terms(st, chol, d)
        if _spread(st, u) <= _G_EXPANSION_MAX:
            design = _design_t(st.m, u @ u.transpose(1, 2), c, iu)
            return _scan(xc, k, design=design, feats_t=feats_t, iu=iu, want_stats=want_stats)
        return _scan(xc, k, exact=(st.m, u, c), want_stats=False)

    resp_t = initial_responsibilities(x, k, init, seed).T.contiguous()
    st, chol = exact_m_step(resp_t)
    prev = float(_bound_after_m_step(-torch.special.xlogy(resp_t, resp_t).sum(), st.alpha, st.beta, st.nu,
                                     _log_det_from_chol(chol), const, n, d))
    trace = AscentTrace(n, tol, prev, start, progress_bar(progress, max_iter, "VB"))
    converged, n_iter = False, 0
    for it in range(max_iter):
        blocks, t_stats, entropy, _ = e_step_scan(st, chol, True)  # E-step, 10.46–10.49
        new = None
        if t_stats is not None:
            new = _m_step_from_stats(t_stats, prior, m0c, w0_inv, iu, d)  # M-step from r φ
            new_chol, bad = _chol_checked(new.w_inv)
            if bad is not None or _spread(new, _whitener(new_chol) * torch.sqrt(new.nu)[:, None, None]) \
                    > _G_EXPANSION_MAX:
                new = None
        if new is None:  # exact two-pass M-step
            st, chol = exact_m_step(torch.cat(blocks, 1))
        else:
            st, chol = new, new_chol
        value = _bound_after_m_step(entropy, st.alpha, st.beta, st.nu, _log_det_from_chol(chol), const, n, d)
        n_iter = it + 1
        if not bool(torch.isfinite(value)):
            raise DivergenceError(n_iter, st, "the variational bound became NaN/inf at iteration "
                                  f"{n_iter}; standardise the data or use default_prior(x, k)")
        if trace.record(value):
            converged = True
            break
    trace.close_bar()
    posterior = VBPosterior._from_update(st.alpha, st.beta, st.m + centre, st.nu, chol)
    blocks, _, _, lse = e_step_scan(st, chol, False)  # closing E-step
    trace.finish(lse + _global_terms(posterior, prior))  # 10.70 with r = softmax(ln ρ)
    return VBFit(
        posterior=posterior,
        gamma=torch.cat(blocks, 1).T.contiguous(),
        **trace.fields(),
        method="vb",
        n_iter=n_iter,
        converged=converged,
        seed=seed,
        prior=prior,
    )
