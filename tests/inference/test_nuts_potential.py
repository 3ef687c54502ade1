"""The hand-written NUTS potential (``ppl.potential``) against Pyro's potential of ``bayes_gmm_model``,
the two backends and the ordered option of ``fit_nuts`` against each other, parallel chains against
sequential ones, and the input checks.

Oracles: Pyro's own potential energy (``pyro.infer.mcmc.util.initialize_model`` on the model: the
effect handlers, ``biject_to`` of each site and their Jacobians, Z enumerated), Pyro's
``OrderedTransform`` for the ordered means, torch's ``StickBreakingTransform``, and torch autograd.
Posterior agreement: |mean_a − mean_b| ≤ 4 √(MCSE_a² + MCSE_b²) per scalar (ArviZ's MCSE).
"""

import os
import warnings

import numpy as np
import pytest
import torch
from pyro.distributions.transforms import OrderedTransform
from pyro.infer.mcmc.util import initialize_model
from pyro.ops.integrator import potential_grad
from torch.distributions.transforms import StickBreakingTransform

import ppl_gmm as pg
from ppl_gmm.core.priors import NormalWishartPrior, default_prior
from ppl_gmm.inference import nuts
from ppl_gmm.ppl import transforms
from ppl_gmm.ppl.bayes import bayes_gmm_model
from ppl_gmm.ppl.potential import SITE, BayesGMMPotential
from ppl_gmm.results import arviz_io

pytestmark = pytest.mark.usefixtures("quiet_one_thread")

CASES = {  # name -> (data, K)
    "galaxies K=3": (lambda: pg.datasets.load_galaxies(), 3),
    "galaxies K=1": (lambda: pg.datasets.load_galaxies(), 1),
    "faithful K=2": (lambda: pg.datasets.load_old_faithful()[::4], 2),
    "faithful K=4": (lambda: pg.datasets.load_old_faithful()[::4], 4),
}


def _points(pot: BayesGMMPotential, n: int, seed: int) -> list[torch.Tensor]:
    """Random θ near the data: u ~ N(0, 1), μ = m0 + 2 sd · N(0, 1), Λ's factor around the prior's."""
    g = torch.Generator().manual_seed(seed)
    sd = pot.x.std(0)
    out = []
    for _ in range(n):
        u = torch.randn(pot.k - 1, generator=g, dtype=torch.float64)
        mu = pot.m0 + 2 * sd * torch.randn(pot.k, pot.d, generator=g, dtype=torch.float64)
        if pot.ordered:
            mu[:, 0] = torch.sort(mu[:, 0]).values
            w = transforms.ordered_first_coordinate_inverse(mu)
        else:
            w = mu
        v = transforms.TrilVecToPD().inv(pot.prior.W0 * pot.prior.nu0).expand(pot.k, pot.t)
        v = v + 0.7 * torch.randn(pot.k, pot.t, generator=g, dtype=torch.float64)
        out.append(torch.cat([u, w.reshape(-1), v.reshape(-1)]))
    return out


def _pyro_potential(x, k, prior):
    """Pyro's potential energy of the model, as a function of our flat θ (value and autograd gradient)."""
    _, fn, _, _ = initialize_model(bayes_gmm_model, (torch.as_tensor(x).double(), k, prior), max_plate_nesting=1)

    def value_and_grad(pot: BayesGMMPotential, theta: torch.Tensor, ordered: bool = False):
        theta = theta.clone().requires_grad_(True)
        u, w, v = pot._split(theta)
        log_jac = 0.0
        if ordered:  # Pyro's OrderedTransform on the first coordinate of the means
            t = OrderedTransform()
            first = t(w[:, 0])
            log_jac = t.log_abs_det_jacobian(w[:, 0], first)
            w = torch.cat([first[:, None], w[:, 1:]], 1)
        z = {"mu": w, "Lambda": v}
        if k > 1:
            z["alpha"] = u
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = fn(z) - log_jac
        (grad,) = torch.autograd.grad(value, theta)
        return value.detach(), grad

    return value_and_grad


def _assert_close(value, grad, ref_value, ref_grad, label):
    assert abs(float(value) - float(ref_value)) <= 1e-10 * abs(float(ref_value)), (label, value, ref_value)
    scale = float(ref_grad.abs().max())
    np.testing.assert_allclose(grad.numpy(), ref_grad.numpy(), rtol=1e-10, atol=1e-10 * scale, err_msg=label)


@pytest.mark.parametrize("ordered", [False, True], ids=["unordered", "ordered"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_potential_and_gradient_equal_pyros(case, ordered):
    """U and ∇U — the reference (core functions + autograd), the hand-written gradient and its trace —
    equal Pyro's potential energy of bayes_gmm_model (with OrderedTransform's Jacobian) to 1e-10."""
    data, k = CASES[case]
    arr = np.asarray(data(), dtype=np.float64)
    x = torch.as_tensor(arr.reshape(len(arr), -1))
    if ordered and k == 1:
        pytest.skip("one component: nothing to order")
    prior = default_prior(x, k)
    pot = BayesGMMPotential(x, k, prior, ordered=ordered)
    ref = _pyro_potential(x, k, prior)
    compiled = pot.compiled(jit=True)
    fn = pot.potential_fn(jit=True)
    for i, theta in enumerate(_points(pot, 4, seed=k)):
        ref_value, ref_grad = ref(pot, theta, ordered)
        t = theta.clone().requires_grad_(True)
        value = pot(t)
        (grad,) = torch.autograd.grad(value, t)
        _assert_close(value.detach(), grad, ref_value, ref_grad, f"{case} reference {i}")
        _assert_close(*pot.value_and_grad(theta), ref_value, ref_grad, f"{case} hand-written {i}")
        _assert_close(*compiled(theta), ref_value, ref_grad, f"{case} traced {i}")
        grads, value = potential_grad(fn, {SITE: theta.clone()})  # what Pyro's integrator calls
        _assert_close(value, grads[SITE], ref_value, ref_grad, f"{case} potential_fn {i}")


def test_transforms_against_torch_and_round_trips():
    g = torch.Generator().manual_seed(0)
    u = 3 * torch.randn(5, 4, generator=g, dtype=torch.float64)
    sb = StickBreakingTransform()
    log_alpha, log_jac = transforms.stick_breaking_log(u)
    alpha = sb(u)
    np.testing.assert_allclose(log_alpha.exp().numpy(), alpha.numpy(), rtol=1e-13)
    np.testing.assert_allclose(log_jac.numpy(), sb.log_abs_det_jacobian(u, alpha).numpy(), rtol=1e-12)
    np.testing.assert_allclose(transforms.stick_breaking_inverse(alpha).numpy(), u.numpy(), rtol=1e-10)
    w = torch.randn(4, 2, generator=g, dtype=torch.float64)
    mu, log_jac = transforms.ordered_first_coordinate(w)
    assert bool((mu[1:, 0] > mu[:-1, 0]).all()) and torch.equal(mu[:, 1], w[:, 1])
    np.testing.assert_allclose(transforms.ordered_first_coordinate_inverse(mu).numpy(), w.numpy(), rtol=1e-12)
    assert float(log_jac) == pytest.approx(float(OrderedTransform().log_abs_det_jacobian(w[:, 0], mu[:, 0])))
    with pytest.raises(ValueError, match="strictly increasing"):
        transforms.ordered_first_coordinate_inverse(mu.flip(0))
    # θ round trip through the potential's coordinates
    x = torch.as_tensor(pg.datasets.load_old_faithful()[::8])
    for ordered in (False, True):
        pot = BayesGMMPotential(x, 3, ordered=ordered)
        theta = _points(pot, 1, seed=1)[0]
        c = pot.constrain(theta)
        np.testing.assert_allclose(pot.to_unconstrained(c["alpha"], c["mu"], c["Lambda"]).numpy(), theta.numpy(), 1e-10)
        batch = pot.constrain(torch.stack([theta, theta]))
        assert batch["mu"].shape == (2, 3, 2) and torch.allclose(batch["Lambda"][1], c["Lambda"])


def _small(sep1d):
    return sep1d[::5]  # 30 points, two well-separated groups


@pytest.mark.filterwarnings("ignore:NUTS. post-warmup transitions diverged")
def test_parallel_chains_equal_sequential_bits(sep1d, monkeypatch):
    """chain_method="parallel" (chain 1 in a spawned process) gives the same bits as the chains one by
    one; the chains differ from each other (own seeds); chain 0 is the one-chain run."""
    x = _small(sep1d)
    kw = {"num_samples": 25, "warmup_steps": 25, "seed": 3}
    pids = []
    run_chains = nuts._run_chains

    def recording(chains, parallel):
        results = run_chains(chains, parallel)
        pids.append([r["pid"] for r in results])
        return results

    monkeypatch.setattr(nuts, "_run_chains", recording)
    par = pg.fit_nuts(x, 2, num_chains=2, chain_method="parallel", **kw)
    if (os.cpu_count() or 1) > 1:
        assert pids[0][0] == os.getpid() != pids[0][1]  # chain 0 here, chain 1 in a worker process
    seq = pg.fit_nuts(x, 2, num_chains=2, chain_method="sequential", **kw)
    one = pg.fit_nuts(x, 2, num_chains=1, **kw)
    for var in ("alpha", "mu", "cov"):
        np.testing.assert_array_equal(par.posterior[var].values, seq.posterior[var].values)
    for name in nuts.sample_stat_names:
        np.testing.assert_array_equal(par.sample_stats[name].values, seq.sample_stats[name].values)
    assert par.attrs["chain_seeds"] == seq.attrs["chain_seeds"] and len(set(par.attrs["chain_seeds"])) == 2
    assert not np.array_equal(par.sample_stats["lp"].values[0], par.sample_stats["lp"].values[1])
    np.testing.assert_array_equal(one.sample_stats["lp"].values[0], seq.sample_stats["lp"].values[0])


def _agree(a, b, var_names, label):
    """|mean_a − mean_b| ≤ 4 √(MCSE_a² + MCSE_b²) per scalar."""
    sa, sb = arviz_io.summary(a, var_names=var_names), arviz_io.summary(b, var_names=var_names)
    tol = 4 * np.sqrt(sa["mcse_mean"] ** 2 + sb["mcse_mean"] ** 2)
    gap = (sa["mean"] - sb["mean"]).abs()
    assert (gap <= tol).all(), (label, gap[gap > tol], tol[gap > tol])


@pytest.mark.slow
def test_potential_and_model_backends_give_the_same_posterior(sep1d):
    x = _small(sep1d)
    kw = {"num_samples": 400, "warmup_steps": 200, "num_chains": 1, "seed": 8}
    fast, model = (pg.fit_nuts(x, 2, backend=b, **kw) for b in ("potential", "model"))
    assert fast.attrs["backend"] == "potential" and model.attrs["backend"] == "model"
    _agree(fast, model, ["alpha", "mu", "cov"], "backends")


def _sorted_by_mu(idata):
    """The draws relabelled by sorting each draw's components by μ (D = 1)."""
    post = idata.posterior
    order = np.argsort(post["mu"].values[..., 0], axis=-1)
    take = lambda a, extra: np.take_along_axis(a, order.reshape(order.shape + (1,) * extra), axis=2)
    return arviz_io.draws_to_inference_data(
        {"alpha": take(post["alpha"].values, 0), "mu": take(post["mu"].values, 1), "cov": take(post["cov"].values, 2)}
    )


@pytest.mark.slow
def test_ordered_means_on_galaxies_agree_with_sorted_unordered_draws(galaxies):
    kw = {"num_samples": 600, "warmup_steps": 300, "num_chains": 1, "seed": 1}
    ordered = pg.fit_nuts(galaxies, 3, ordered=True, **kw)
    free = pg.fit_nuts(galaxies, 3, **kw)
    mu = ordered.posterior["mu"].values[..., 0]
    assert bool((np.diff(mu, axis=-1) > 0).all())  # every draw sorted
    assert ordered.attrs["label_rule"] == nuts.LABEL_RULE_ORDERED and ordered.attrs["label_switch_fraction"] == 0
    assert ordered.attrs["ordered"] == 1
    _agree(ordered, _sorted_by_mu(free), ["alpha", "mu", "cov"], "ordered vs sorted")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:NUTS. post-warmup transitions diverged")
def test_ordered_means_where_components_overlap():
    """Two overlapping components (centres ±1.2, sd 0.7, 12 points each) and a prior that keeps them
    close: here the ordered transform's Jacobian matters (without it the means collapse together,
    8 tolerances away), and the ordered draws still agree with the sorted unordered ones."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-1.2, 0.7, 12), rng.normal(1.2, 0.7, 12)])
    prior = NormalWishartPrior(alpha0=1.0, m0=[0.0], beta0=1.0, nu0=4.0, W0=[[0.25]])
    kw = {"num_samples": 800, "warmup_steps": 300, "seed": 2}
    ordered = pg.fit_nuts(x, 2, prior, ordered=True, **kw)
    free = pg.fit_nuts(x, 2, prior, **kw)
    assert bool((np.diff(ordered.posterior["mu"].values[..., 0], axis=-1) > 0).all())
    _agree(ordered, _sorted_by_mu(free), ["alpha", "mu", "cov"], "ordered vs sorted, overlapping")


def test_bad_input_fails_before_any_sampling(sep1d, monkeypatch):
    def no_sampling(*args, **kwargs):
        raise AssertionError("sampling started")

    monkeypatch.setattr(nuts, "_run_chains", no_sampling)
    monkeypatch.setattr(nuts, "fit_map", no_sampling)
    prior = default_prior(sep1d, 2)
    for name in ("num_samples", "warmup_steps", "num_chains"):
        for bad in (0, -1):
            with pytest.raises(ValueError, match=f"{name} must be >= 1"):
                pg.fit_nuts(sep1d, 2, prior, **{name: bad})
        for bad in (1.5, 2.0, "2", None, True):
            with pytest.raises(TypeError, match=f"{name} must be an integer"):
                pg.fit_nuts(sep1d, 2, prior, **{name: bad})
    with pytest.raises(ValueError, match="1-dimensional .* D = 2"):
        pg.fit_nuts(np.c_[sep1d, sep1d], 2, prior)
    with pytest.raises(ValueError, match="2-dimensional .* D = 1"):
        pg.fit_nuts(sep1d, 2, NormalWishartPrior(1.0, [0.0, 0.0], 0.01, 4.0, np.eye(2)))
    repeated = np.repeat([0.0, 1.0, 2.0], 10)  # N = 30, but three distinct points
    with pytest.raises(ValueError, match="distinct data points .*3"):
        pg.fit_nuts(repeated, 4)
    with pytest.raises(ValueError, match="larger than the number of data points"):
        pg.fit_nuts(sep1d[:3], 4, default_prior(sep1d[:3], 3))
    with pytest.raises(ValueError, match="backend"):
        pg.fit_nuts(sep1d, 2, prior, backend="numpyro")
    with pytest.raises(ValueError, match="chain_method"):
        pg.fit_nuts(sep1d, 2, prior, chain_method="vectorized")
    with pytest.raises(TypeError, match="ordered"):
        pg.fit_nuts(sep1d, 2, prior, ordered=1)
    with pytest.raises(ValueError, match="ordered=True needs backend='potential'"):
        pg.fit_nuts(sep1d, 2, prior, ordered=True, backend="model")


def test_divergent_chains_are_named_and_kept(sep1d):
    x = _small(sep1d)
    with pytest.warns(RuntimeWarning, match="diverged") as record:
        idata = pg.fit_nuts(
            x,
            2,
            num_samples=30,
            warmup_steps=10,
            num_chains=2,
            chain_method="sequential",
            seed=3,
            target_accept_prob=0.01,
            max_tree_depth=3,
        )
    per_chain = idata.attrs["divergences_per_chain"]
    np.testing.assert_array_equal(per_chain, idata.sample_stats["diverging"].values.sum(1))
    assert idata.posterior.sizes["chain"] == 2 and idata.posterior.sizes["draw"] == 30  # no chain dropped
    assert sum(per_chain) == idata.attrs["num_divergences"] > 0
    message = next(str(w.message) for w in record if issubclass(w.category, RuntimeWarning))  # not the modes' warning
    for c, n in enumerate(per_chain):
        assert (f"chain {c}: {n}" in message) == (n > 0), message


def test_direct_leapfrog_gives_pyros_draws_bit_for_bit(sep1d):
    """The kernel fit_nuts uses (leapfrog calling value_and_grad directly) against Pyro's own NUTS on the
    same potential_fn (velocity_verlet → potential_grad → autograd): identical draws and statistics."""
    import pyro
    from pyro.infer import MCMC

    x = torch.as_tensor(_small(sep1d)).reshape(-1, 1)
    pot = BayesGMMPotential(x, 2)
    theta0 = _points(pot, 1, seed=5)[0]
    runs = []
    for direct in (True, False):
        pyro.set_rng_seed(4)
        kw = {"potential_fn": pot.potential_fn(jit=True), "max_tree_depth": 6}
        kernel = nuts._DirectNUTS(pot.compiled(jit=True), **kw) if direct else nuts._RecordingNUTS(**kw)
        mcmc = MCMC(kernel, num_samples=20, warmup_steps=20, initial_params={SITE: theta0}, disable_progbar=True)
        mcmc.run()
        runs.append((mcmc.get_samples()[SITE], kernel.record, kernel.leapfrog_total))
    (direct_draws, direct_record, direct_steps), (pyro_draws, pyro_record, pyro_steps) = runs
    assert torch.equal(direct_draws, pyro_draws) and direct_steps == pyro_steps > 40
    assert direct_record == pyro_record


def test_errors_cross_process_boundaries_intact():
    """A chain that fails in a worker process re-raises in the caller with its type, message and fields."""
    import pickle

    from ppl_gmm.core.errors import (
        DegenerateComponentError,
        DegeneratePosteriorError,
        DivergenceError,
        EmptyComponentError,
    )

    for err in (
        DegenerateComponentError(2, "in chain 1"),
        DegeneratePosteriorError("NUTS chain 1 could not evaluate the posterior density", 0),
        EmptyComponentError(1, 0.0),
        DivergenceError(3, {"mu": 1.0}),
    ):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err) and back.__dict__ == err.__dict__
