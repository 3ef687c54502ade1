"""eq. 19 on the boundary of its domain, and the one rule for γ.

``elbo_gradients`` is checked against torch autograd of an independently written eq. 18 at
interior points, and on the boundary (γ_ik = 0, α_k = 0) against the one-sided limits: autograd
at α_k = ε → 0 and one-sided finite differences of eq. 18 in γ_ik. It never returns NaN. Every
closed-form function that takes γ (``elbo``, ``elbo_gradients``, ``m_step``, ``lower_bound``)
refuses the same bad γ with the same message.
"""

import math

import numpy as np
import pytest
import torch

import ppl_gmm as pg
from ppl_gmm.core.gmm import weighted_log_prob
from ppl_gmm.core.vb_posterior import lower_bound

from oracles import random_gamma


def independent_elbo(x, gamma, alpha, mu, cov):
    """eq. 18 from scratch on a general Σ (logdet, solve), 0·log 0 = 0 and 0·log α = 0 at α = 0."""
    d = x.shape[1]
    diff = x[:, None, :] - mu[None]
    sol = torch.linalg.solve(cov[None].expand(x.shape[0], -1, -1, -1), diff.unsqueeze(-1)).squeeze(-1)
    log_n = -0.5 * d * math.log(2 * math.pi) - 0.5 * torch.logdet(cov)[None] - 0.5 * (diff * sol).sum(-1)
    joint = torch.where(gamma > 0, gamma * (torch.log(alpha) + log_n), torch.zeros_like(log_n))
    return joint.sum() - torch.special.xlogy(gamma, gamma).sum()


def problem(seed=0, n=12, d=2):
    """x (n, d), γ with column 2 empty (all 0) and rows on the simplex, and Θ with α_2 = 0."""
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.normal(scale=2.0, size=(n, d)))
    gamma = random_gamma(n, 3, seed)
    gamma[:, 2] = 0.0
    gamma[0] = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)  # an exact 0 in a live column
    gamma = gamma / gamma.sum(1, keepdim=True)
    a = rng.normal(size=(3, d, d))
    cov = torch.tensor(a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(d))
    alpha = torch.tensor([0.6, 0.4, 0.0], dtype=torch.float64)
    params = pg.GMMParams(alpha, torch.tensor(rng.normal(size=(3, d))), cov)
    return x, gamma, params


def autograd(x, gamma, alpha, mu, cov):
    leaves = [t.clone().requires_grad_(True) for t in (gamma, alpha, mu, cov)]
    independent_elbo(x, *leaves).backward()
    return dict(zip(("gamma", "alpha", "mu", "cov"), (t.grad for t in leaves)))


def test_alpha_gradient_of_an_empty_zero_weight_component_is_its_limit_zero():
    """N_k = 0: eq. 18 does not depend on α_k, so ∂L/∂α_k = lim_{α_k→0} N_k/α_k = 0 (not 0/0)."""
    x, gamma, params = problem()
    g = pg.elbo_gradients(x, gamma, params)
    for name, value in g.items():
        assert not bool(torch.isnan(value).any()), f"NaN in ∂L/∂{name}"
    assert float(g["alpha"][2]) == 0.0
    for eps in (1e-3, 1e-8, 1e-14, 1e-300):  # autograd at α_2 = ε → 0 (α off the simplex: eq. 19 is unconstrained)
        alpha = params.alpha.clone()
        alpha[2] = eps
        ref = autograd(x, gamma, alpha, params.mu, params.cov)
        assert float(ref["alpha"][2]) == 0.0
        torch.testing.assert_close(g["alpha"][:2], ref["alpha"][:2], rtol=1e-12, atol=0)  # interior, unchanged by ε
    ref = autograd(x, gamma, params.alpha.clamp_min(1e-300), params.mu, params.cov)
    torch.testing.assert_close(g["mu"], ref["mu"], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(g["cov"], ref["cov"], rtol=1e-9, atol=1e-12)
    # one-sided finite difference in α_2 at 0: eq. 18 is flat there
    base = independent_elbo(x, gamma, params.alpha, params.mu, params.cov)
    bumped = params.alpha.clone()
    bumped[2] = 1e-6
    assert float(independent_elbo(x, gamma, bumped, params.mu, params.cov) - base) == 0.0


def test_gamma_gradient_is_the_one_sided_limit_on_the_boundary():
    """γ_ik > 0: autograd. γ_ik = 0 < α_k: +inf (−γ log γ has slope +∞ at 0). α_k = 0: −inf
    (any mass on a zero-weight component makes eq. 18 −∞), never −∞ + ∞ = NaN."""
    x, gamma, params = problem(seed=1)
    g = pg.elbo_gradients(x, gamma, params)["gamma"]
    assert not bool(torch.isnan(g).any())
    interior = gamma > 0
    ref = autograd(x, gamma, params.alpha, params.mu, params.cov)["gamma"]
    torch.testing.assert_close(g[interior], ref[interior], rtol=1e-11, atol=1e-12)
    assert float(g[0, 1]) == math.inf and bool((g[:, 2] == -math.inf).all())

    def one_sided(i, k, h):
        """(L(γ + h e_ik) − L(γ)) / h, off the simplex (eq. 19 is the unconstrained partial). eq. 18 is
        a sum over (i, k), so the difference is that of the one term γ_ik: evaluated alone (on the
        row x_i with γ = h e_ik, minus 0 at γ_ik = 0), it keeps its digits for h down to 1e-256."""
        bumped = torch.zeros(1, gamma.shape[1], dtype=gamma.dtype)
        bumped[0, k] = h
        return float(independent_elbo(x[i : i + 1], bumped, params.alpha, params.mu, params.cov)) / h

    slopes = [one_sided(0, 1, h) for h in (1e-2, 1e-4, 1e-8, 1e-16, 1e-64, 1e-256)]
    assert all(b > a for a, b in zip(slopes, slopes[1:])) and slopes[-1] > 500  # grows like −log h → +∞
    assert all(one_sided(i, 2, h) == -math.inf for i in (0, 5) for h in (1e-2, 1e-12))


def test_gamma_gradient_where_e_step_underflows_is_plus_inf_not_nan(separated_2d):
    x, _, params = separated_2d
    far = torch.cat([x[:5], torch.tensor([[1e4, -1e4]], dtype=torch.float64)])
    live = pg.GMMParams(torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64), params.mu, params.cov)
    gamma = pg.e_step(far, live)  # underflowed entries and the α_2 = 0 column are exact zeros
    assert bool((gamma[:, :2] == 0).any())
    g = pg.elbo_gradients(far, gamma, live)
    assert not any(bool(torch.isnan(v).any()) for v in g.values())
    lse = torch.logsumexp(weighted_log_prob(far, live), 1, keepdim=True).expand_as(gamma)  # at γ = e_step: lse_i − 1
    torch.testing.assert_close(g["gamma"][gamma > 0], lse[gamma > 0] - 1.0, rtol=1e-12, atol=1e-12)
    assert bool((g["gamma"][:, :2][gamma[:, :2] == 0] == math.inf).all())
    assert bool((g["gamma"][:, 2] == -math.inf).all()) and float(g["alpha"][2]) == 0.0


def test_mass_on_a_zero_weight_component_is_refused():
    """α_k = 0 < N_k: eq. 18 is −∞ and ∂L/∂α_k = N_k/α_k → +∞ as α_k → 0 — refused, by name."""
    x, gamma, params = problem(seed=2)
    gamma[3] = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    assert float(pg.elbo(x, gamma, params)) == -math.inf
    for eps in (1e-4, 1e-8):  # the limit the refusal stands for
        alpha = params.alpha.clone()
        alpha[2] = eps
        assert float(autograd(x, gamma, alpha, params.mu, params.cov)["alpha"][2]) == pytest.approx(0.5 / eps)
    with pytest.raises(ValueError, match=r"component 2 has alpha_2 = 0 but gamma puts mass N_2 = 0.5 on it"):
        pg.elbo_gradients(x, gamma, params)


# --- one rule for γ ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def setting():
    x = torch.tensor(np.random.default_rng(3).normal(size=(10, 2)))
    params = pg.fit_cavi(x, 2, seed=0, max_iter=3).params
    prior = pg.default_prior(x, 2)
    post = pg.fit_vb(x, 2, prior, seed=0, max_iter=3).posterior
    gamma = random_gamma(10, 2, seed=3)
    calls = {
        "elbo": lambda g: pg.elbo(x, g, params),
        "elbo_gradients": lambda g: pg.elbo_gradients(x, g, params),
        "m_step": lambda g: pg.m_step(x, g),
        "lower_bound": lambda g: lower_bound(x, g, post, prior),
    }
    return gamma, calls


def _bad(gamma, kind):
    g = gamma.clone()
    if kind == "row sums to 1.5":
        g[4] *= 1.5
    elif kind == "row sums to 1 + 3e-6":
        g[4, 0] += 3e-6  # outside K · 1e-6 = 2e-6
    elif kind == "negative entry":
        g[4] = torch.tensor([1.2, -0.2], dtype=torch.float64)
    elif kind == "NaN entry":
        g[4, 1] = math.nan
    else:  # wrong shape
        g = g[:7]
    return g


MESSAGES = {
    "row sums to 1.5": r"gamma row 4 sums to 1\.5, not 1: each row of γ must be a point on the simplex",
    "row sums to 1 + 3e-6": r"gamma row 4 sums to 1, not 1: each row of γ must be a point on the simplex",
    "negative entry": r"gamma must be finite and non-negative",
    "NaN entry": r"gamma must be finite and non-negative",
    "wrong shape": r"gamma must have shape \(N, K\) = \(10, ",
}


@pytest.mark.parametrize("kind", sorted(MESSAGES))
def test_every_closed_form_function_taking_gamma_applies_one_rule(setting, kind):
    gamma, calls = setting
    for call in calls.values():
        with pytest.raises(ValueError, match=MESSAGES[kind]):
            call(_bad(gamma, kind))
        call(gamma)  # the good γ is accepted by all
        within = gamma.clone()
        within[4, 0] += 1e-6  # inside the tolerance K · 1e-6: accepted by all
        call(within)
