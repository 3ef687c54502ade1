"""fit_vb in every covariance type and with the Dirichlet-process prior, against scikit-learn's
BayesianGaussianMixture (iteration for iteration, the bound + the constants it drops), the exact
Normal-Wishart evidence (K = 1; for diag/spherical minus the closed-form Wishart KL of the restricted
family), scipy's Student-t and Beta densities (quadrature), and Monte Carlo over q."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from scipy.special import betaln, gammaln, multigammaln

import ppl_gmm as pg
from ppl_gmm.core.init import initial_responsibilities
from ppl_gmm.core.priors import NormalWishartPrior
from ppl_gmm.core.vb_posterior import VBPosterior, lower_bound, weight_terms

from oracles import normal_wishart_evidence, sklearn_bgm_typed

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TYPES = ("full", "diag", "spherical", "tied")


def _data(n=60, seed=11):
    rng = np.random.default_rng(seed)
    a = np.array([[1.0, 0.6, 0.0], [0.0, 0.8, 0.3], [0.0, 0.0, 0.5]])  # correlated: the types differ
    centres = ([0, 0, 0], [4, 0, 1], [0, 5, -2])
    return np.concatenate([rng.normal(size=(n, 3)) @ a + c for c in centres])


PRIOR3 = NormalWishartPrior(0.3, [0.5, 0.5, 0.0], 2.0, 4.5, [[0.5, 0.1, 0.0], [0.1, 1.0, 0.2], [0.0, 0.2, 2.0]])


def _sklearn_constant(w0_inv_view, prior, n, k, weight_prior):
    """L − scikit-learn's lower_bound_: the constants it drops (its _log_wishart_norm drops ln π)."""
    d = prior.d
    log_b0 = (0.5 * prior.nu0 * np.linalg.slogdet(w0_inv_view)[1] - 0.5 * prior.nu0 * d * math.log(2)) - multigammaln(
        0.5 * prior.nu0, d
    )  # ln B(W0, nu0), W0 = view⁻¹
    if weight_prior == "dirichlet":
        weights = gammaln(k * prior.alpha0) - k * gammaln(prior.alpha0)  # ln C(alpha0 1_K)
    else:
        weights = k * math.log(prior.alpha0)  # Σ_k −ln B(1, alpha0)
    return (
        -0.5 * n * d * math.log(2 * math.pi)
        + weights
        + 0.5 * k * d * math.log(prior.beta0)
        + k * log_b0
        + k * d * (d - 1) / 4 * math.log(math.pi)
    )


def _assert_equals_sklearn(post, bgm, covariance_type, weight_prior, rtol=1e-8):
    if weight_prior == "dirichlet":
        np.testing.assert_allclose(post.alpha.numpy(), bgm.weight_concentration_, rtol=rtol)
    else:
        np.testing.assert_allclose(post.alpha.numpy(), bgm.weight_concentration_[0], rtol=rtol)
        np.testing.assert_allclose(post.stick_b.numpy(), bgm.weight_concentration_[1], rtol=rtol)
    np.testing.assert_allclose(post.expected_weights().numpy(), bgm.weights_, rtol=rtol)
    np.testing.assert_allclose(post.beta.numpy(), bgm.mean_precision_, rtol=rtol)
    np.testing.assert_allclose(post.nu.numpy(), np.broadcast_to(bgm.degrees_of_freedom_, (post.k,)), rtol=rtol)
    np.testing.assert_allclose(post.m.numpy(), bgm.means_, rtol=rtol, atol=rtol * np.abs(bgm.means_).max())
    cov = post.mean_params().cov.numpy()  # W_k⁻¹ / nu_k
    cov = {
        "full": cov,
        "tied": cov[0],
        "diag": np.diagonal(cov, axis1=1, axis2=2),
        "spherical": cov[:, 0, 0],
    }[covariance_type]
    np.testing.assert_allclose(cov, bgm.covariances_, rtol=rtol, atol=rtol * np.abs(bgm.covariances_).max())


@pytest.mark.parametrize("weight_prior", ["dirichlet", "dirichlet_process"])
@pytest.mark.parametrize("covariance_type", TYPES)
def test_iteration_for_iteration_equal_to_sklearn(covariance_type, weight_prior):
    x, k = _data(), 3
    resp0 = initial_responsibilities(torch.as_tensor(x), k, "kmeans++", 0).numpy()
    bgm, view = sklearn_bgm_typed(x, k, PRIOR3, resp0, covariance_type, weight_prior)
    kw = {"covariance_type": covariance_type, "weight_prior": weight_prior, "seed": 0, "tol": 0}
    fits = {t: pg.fit_vb(x, k, PRIOR3, max_iter=t, **kw) for t in (1, 12)}
    const = _sklearn_constant(view, PRIOR3, len(x), k, weight_prior)
    for it in range(1, 13):
        log_prob_norm, log_resp = bgm._e_step(x)
        bgm._m_step(x, log_resp)
        if it in fits:
            bgm._set_parameters(bgm._get_parameters())  # weights_
            post = fits[it].posterior
            assert post.covariance_type == covariance_type and post.weight_prior == weight_prior
            _assert_equals_sklearn(post, bgm, covariance_type, weight_prior)
            lb = bgm._compute_lower_bound(log_resp, log_prob_norm)
            assert float(fits[it].elbo[-2]) == pytest.approx(lb + const, rel=1e-10, abs=1e-8)
    _, log_resp = bgm._e_step(x)  # the closing E-step
    np.testing.assert_allclose(fits[12].gamma.numpy(), np.exp(log_resp), atol=1e-8)
    np.testing.assert_allclose(fits[12].predict_proba(x[:7]).numpy(), bgm.predict_proba(x[:7]), atol=1e-8)


@pytest.mark.parametrize("weight_prior", ["dirichlet", "dirichlet_process"])
@pytest.mark.parametrize("covariance_type", TYPES)
def test_bound_is_monotone_and_the_general_bound(covariance_type, weight_prior):
    x, k = _data(n=40, seed=3), 5
    kw = {"covariance_type": covariance_type, "weight_prior": weight_prior, "init": "random", "seed": 1, "tol": 0}
    fit = pg.fit_vb(x, k, PRIOR3, max_iter=25, **kw)
    assert bool((torch.diff(fit.elbo) >= -1e-10 * fit.elbo.abs()[1:]).all())
    # the last entry is the general bound (10.70–10.77) at (gamma, posterior); entry −2 (the M-step form) too
    assert float(lower_bound(x, fit.gamma, fit.posterior, PRIOR3)) == pytest.approx(float(fit.elbo[-1]), abs=1e-9)
    before = pg.fit_vb(x, k, PRIOR3, max_iter=24, **kw)
    assert float(lower_bound(x, before.gamma, fit.posterior, PRIOR3)) == pytest.approx(float(fit.elbo[-2]), abs=1e-9)


# --- K = 1: the exact evidence of the Normal-Wishart model (oracles.normal_wishart_evidence) ----------------
@pytest.mark.parametrize("covariance_type", TYPES)
def test_k1_bound_is_evidence_minus_the_wishart_kl(covariance_type):
    """K = 1: tied = full = the exact posterior, so L = ln p(X). diag/spherical restrict q(Λ) to a
    diagonal / isotropic scale W_q with the exact nu: L = ln p(X) − KL(W(W_q, ν) ‖ W(M⁻¹, ν)),
    KL = (ν/2) [tr(M W_q) − D − ln |M W_q|] (same ν: the digamma terms cancel)."""
    x = _data(n=30, seed=5)[:50]
    prior = PRIOR3
    s0 = np.linalg.inv(prior.W0.numpy())
    s0 = {"diag": np.diag(np.diag(s0)), "spherical": np.eye(3) * np.diag(s0).mean()}.get(covariance_type, s0)
    m_n, log_ev = normal_wishart_evidence(x, prior.m0.numpy(), prior.beta0, prior.nu0, s0)
    nu, d = prior.nu0 + len(x), 3
    if covariance_type == "diag":
        w_q = np.diag(1 / np.diag(m_n))
    elif covariance_type == "spherical":
        w_q = np.eye(d) * d / np.trace(m_n)
    else:
        w_q = np.linalg.inv(m_n)
    kl = 0.5 * nu * (np.trace(m_n @ w_q) - d - np.linalg.slogdet(m_n @ w_q)[1])
    fit = pg.fit_vb(x, 1, prior, covariance_type=covariance_type, seed=0)
    assert fit.converged and float(fit.elbo[-1]) == pytest.approx(log_ev - kl, abs=1e-9)
    assert (kl > 0.5) == (covariance_type in ("diag", "spherical"))  # the data are correlated
    np.testing.assert_allclose(fit.posterior.W[0].numpy(), w_q, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_k1_bound_is_the_exact_evidence_when_the_family_holds_the_posterior(covariance_type):
    """Points ±a e_d about m0 (a diagonal scatter; the same a for every d: isotropic) and a W0⁻¹ of
    the type: the posterior's scale is diagonal / isotropic, so L = ln p(X) exactly."""
    scales = [1.0, 2.0, 0.5] if covariance_type == "diag" else [1.5, 1.5, 1.5]
    m0 = np.array([0.3, -0.2, 1.0])
    x = np.vstack([m0 + s * e for s, e in zip(scales, np.eye(3))] + [m0 - s * e for s, e in zip(scales, np.eye(3))])
    x = np.repeat(x, 3, axis=0)
    w0 = np.diag([0.7, 1.3, 0.4]) if covariance_type == "diag" else np.eye(3) * 0.8
    prior = NormalWishartPrior(1.0, m0, 0.5, 3.5, w0)
    _, log_ev = normal_wishart_evidence(x, m0, 0.5, 3.5, np.linalg.inv(w0))
    fit = pg.fit_vb(x, 1, prior, covariance_type=covariance_type, seed=0)
    assert float(fit.elbo[-1]) == pytest.approx(log_ev, abs=1e-9)


# --- the Dirichlet process ---------------------------------------------------------------------------
def test_stick_terms_equal_quadrature():
    """E[ln p(v)] − E[ln q(v)] of the sticks = −Σ_k KL(Beta(a_k, b_k) ‖ Beta(1, alpha0)), by quadrature
    with scipy's Beta densities, for a non-optimal q; E[ln π_k] by quadrature too."""
    a, b, alpha0 = np.array([2.5, 0.7, 4.0]), np.array([3.0, 1.6, 0.9]), 0.8
    post = VBPosterior(a, np.zeros((3, 1)), [1.0] * 3, [2.0] * 3, np.ones((3, 1, 1)), stick_b=b)

    def log_beta_pdf(v, ak, bk):  # ln Beta(v | a, b), written out (scipy's betaln normaliser)
        return (ak - 1) * np.log(v) + (bk - 1) * np.log1p(-v) - betaln(ak, bk)

    def e(f, ak, bk):  # E_Beta(a, b)[f(v)] by quadrature
        return integrate.quad(lambda v: math.exp(log_beta_pdf(v, ak, bk)) * f(v), 0, 1, limit=200)[0]

    kl = sum(
        e(lambda v, ak=ak, bk=bk: log_beta_pdf(v, ak, bk) - log_beta_pdf(v, 1.0, alpha0), ak, bk)
        for ak, bk in zip(a, b)
    )
    assert stats.beta(2.5, 3.0).logpdf(0.3) == pytest.approx(log_beta_pdf(0.3, 2.5, 3.0), rel=1e-12)
    assert float(weight_terms(post, alpha0)) == pytest.approx(-kl, abs=1e-7)
    e_log_v = [e(math.log, ak, bk) for ak, bk in zip(a, b)]
    e_log_1mv = [e(lambda v: math.log1p(-v), ak, bk) for ak, bk in zip(a, b)]
    want = [e_log_v[0], e_log_v[1] + e_log_1mv[0], e_log_v[2] + e_log_1mv[0] + e_log_1mv[1]]
    np.testing.assert_allclose(post.expected_log_weights().numpy(), want, atol=1e-7)
    # a permutation keeps each stick with its component
    perm = [2, 0, 1]
    moved = post.permute(perm)
    np.testing.assert_allclose(moved.expected_log_weights().numpy(), np.array(want)[perm], atol=1e-7)
    np.testing.assert_allclose(moved.expected_weights().numpy(), post.expected_weights().numpy()[perm], rtol=1e-12)
    assert float(weight_terms(moved, alpha0)) == pytest.approx(float(weight_terms(post, alpha0)), rel=1e-14)
    # draws: v_k ~ Beta(a_k, b_k), reproducible; with sharp sticks the mean is the expected weights
    sharp = VBPosterior(a * 400, np.zeros((3, 1)), [1.0] * 3, [2.0] * 3, np.ones((3, 1, 1)), stick_b=b * 400)
    draws = sharp.sample(4000, seed=2)["alpha"]
    np.testing.assert_allclose(draws.mean(0), sharp.expected_weights().numpy(), atol=3e-3)
    np.testing.assert_allclose(draws.sum(1), 1.0, rtol=1e-12)
    assert np.array_equal(draws, sharp.sample(4000, seed=2)["alpha"])
    # the expected weights: E[v_k] Π_{j<k} E[1 − v_j], renormalised
    raw = a / (a + b) * np.concatenate([[1.0], np.cumprod(b / (a + b))[:-1]])
    np.testing.assert_allclose(post.expected_weights().numpy(), raw / raw.sum(), rtol=1e-12)
    assert betaln(1, alpha0) == pytest.approx(-math.log(alpha0))  # the prior normaliser the bound uses


@pytest.mark.slow  # arviz import and a K = 6 fit to convergence (~6 s)
def test_dirichlet_process_switches_components_off(faithful):
    x = (faithful - faithful.mean(0)) / faithful.std(0)
    prior = NormalWishartPrior(1e-2, [0.0, 0.0], 1.0, 2.0, np.eye(2))
    dp = pg.fit_vb(x, 6, prior, weight_prior="dirichlet_process", seed=0)
    assert dp.converged and dp.n_effective(1e-2) == 2 and dp.posterior.weight_prior == "dirichlet_process"
    np.testing.assert_allclose(np.sort(dp.weights.numpy())[::-1][:2], [0.644, 0.356], atol=0.01)
    idata = dp.to_arviz(num_samples=30, seed=0)
    assert idata.posterior["alpha"].shape[-1] == 6
    np.testing.assert_allclose(idata.posterior["alpha"].values.sum(-1), 1.0, rtol=1e-12)


# --- downstream of the posterior, every type -----------------------------------------------------------
@pytest.mark.parametrize("covariance_type", TYPES)
def test_predictive_and_permute_every_type(covariance_type):
    x = _data(n=30, seed=7)
    fit = pg.fit_vb(x, 3, PRIOR3, covariance_type=covariance_type, seed=0)
    p = fit.posterior
    grid = x[::13]
    ref = np.zeros(len(grid))
    for j in range(3):
        dof = float(p.nu[j]) + 1 - 3
        shape = np.linalg.inv(p.W[j].numpy()) * (1 + float(p.beta[j])) / (dof * float(p.beta[j]))  # 10.82
        ref += float(p.expected_weights()[j]) * stats.multivariate_t(p.m[j].numpy(), shape, df=dof).pdf(grid)
    np.testing.assert_allclose(fit.score_samples(grid).numpy(), np.log(ref), rtol=1e-10)
    q = p.permute([2, 0, 1])
    assert q.covariance_type == covariance_type
    torch.testing.assert_close(q.responsibilities(grid), p.responsibilities(grid)[:, [2, 0, 1]])
    assert float(lower_bound(x, fit.gamma[:, [2, 0, 1]], q, PRIOR3)) == pytest.approx(float(fit.elbo[-1]), abs=1e-9)
    draws = p.sample(20, seed=0)
    assert draws["cov"].shape == (20, 3, 3, 3) and np.array_equal(draws["mu"], p.sample(20, seed=0)["mu"])


# --- bad input ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"covariance_type": "banded"}, ValueError, "covariance_type"),
        ({"covariance_type": None}, ValueError, "covariance_type"),
        ({"weight_prior": "pitman_yor"}, ValueError, "weight_prior"),
        ({"weight_prior": 1}, ValueError, "weight_prior"),
    ],
)
def test_bad_arguments_refused_before_work(kwargs, error, match, monkeypatch):
    from ppl_gmm.inference import vb

    monkeypatch.setattr(vb, "VBProblem", None)  # any work would fail differently
    with pytest.raises(error, match=match):
        pg.fit_vb(_data(n=10), 2, PRIOR3, **kwargs)


def test_dp_concentration_must_be_positive():
    with pytest.raises(ValueError, match="alpha0 must be > 0"):
        NormalWishartPrior(0.0, [0.0], 1.0, 2.0, 1.0)


@pytest.mark.parametrize(
    "covariance_type, w, nu, match",
    [
        ("diag", [[[1.0, 0.2], [0.2, 1.0]]] * 2, [3.0, 3.0], "diagonal"),
        ("spherical", [np.diag([1.0, 2.0])] * 2, [3.0, 3.0], "multiple of the identity"),
        ("tied", [np.eye(2), 2 * np.eye(2)], [3.0, 3.0], "same for every component"),
        ("tied", [np.eye(2)] * 2, [3.0, 4.0], "same for every component"),
        ("blocky", [np.eye(2)] * 2, [3.0, 3.0], "covariance_type"),
    ],
)
def test_posterior_structure_is_checked(covariance_type, w, nu, match):
    with pytest.raises(ValueError, match=match):
        VBPosterior([1.0, 1.0], np.zeros((2, 2)), [1.0, 1.0], nu, np.array(w), covariance_type)
    with pytest.raises(ValueError, match="stick_b must be > 0"):
        VBPosterior([1.0, 1.0], np.zeros((2, 2)), [1.0, 1.0], [3.0, 3.0], np.stack([np.eye(2)] * 2), stick_b=[1.0, 0.0])
