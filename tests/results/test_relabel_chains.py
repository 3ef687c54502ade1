"""Several chains, one labelling: ``arviz_io.relabel_chains`` / ``mcmc_to_inference_data`` relabel every
chain to one common reference before R-hat and ESS, report the label-switch fraction per chain, and
``diagnose_modes`` warns when chains sit in different modes. Checked on synthetic chains whose truth is
known by construction: a chain stored with swapped labels, and two chains in different modes.
Mutation check: skipping the mode check's log-likelihood criterion, or counting a chain's switches
against its own first draw instead of the reference, each fail a test here."""

import warnings

import numpy as np
import pytest

from ppl_gmm.core.errors import MultimodalityWarning
from ppl_gmm.results import arviz_io
from ppl_gmm.results.matching import relabel

RNG_SEED = 0


def _chains(mu_per_chain, s=400, seed=RNG_SEED):
    """Raw draws of len(mu_per_chain) chains of a 1-D two-component mixture: chain c's mu draws
    scatter (sd 0.1) around mu_per_chain[c] (in that chain's label order); alpha and cov follow the labels."""
    rng = np.random.default_rng(seed)
    c, k = len(mu_per_chain), len(mu_per_chain[0])
    centre = np.asarray(mu_per_chain, dtype=float)  # (C, K)
    mu = centre[:, None, :, None] + 0.1 * rng.standard_normal((c, s, k, 1))
    weight = np.where(centre < 0, 0.3, 0.7)[:, None, :]  # the component at -3 has weight 0.3
    alpha = weight + 0.02 * rng.standard_normal((c, s, k))
    alpha = alpha / alpha.sum(-1, keepdims=True)
    sd = np.where(centre < 0, 1.0, 0.6)[:, None, :, None, None]
    cov = (sd * (1 + 0.05 * rng.standard_normal((c, s, k, 1, 1)))) ** 2
    return {"alpha": alpha, "mu": mu, "cov": cov}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    return np.concatenate([rng.normal(-3, 1.0, 30), rng.normal(3, 0.6, 70)])[:, None]


def _build(draws, x):
    return arviz_io.draws_to_inference_data(draws, x=x, seed=2)


def test_a_chain_with_swapped_labels_is_relabelled(data):
    draws = _chains([[-3.0, 3.0], [3.0, -3.0]])  # chain 1 stores the same mode with the labels swapped
    raw = _build(draws, data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MultimodalityWarning)  # one mode: no warning
        out = arviz_io.relabel_chains(raw)
    assert out.attrs["label_switch_fraction_per_chain"] == [0.0, 1.0]
    np.testing.assert_array_equal(out.sample_stats["label_switch"].values, [[False] * 400, [True] * 400])
    assert out.attrs["label_switch_fraction"] == 0.0  # no chain switches labels within itself
    assert out.attrs["label_switch_within_chain"] == [0.0, 0.0]
    # the label clash, measured as non-convergence (rank-normalised R-hat of two disjoint chains is ~1.8)
    assert out.attrs["r_hat_max_unrelabelled"] > 1.5
    assert out.attrs["r_hat_max"] < 1.01
    assert out.attrs["chains_disagree"] == 0 and out.attrs["mode_separation_mu"] < 1
    mu = out.posterior["mu"].values
    np.testing.assert_array_equal(mu[1], draws["mu"][1][:, ::-1])  # chain 1 permuted back, bit for bit
    np.testing.assert_array_equal(mu[0], draws["mu"][0])
    np.testing.assert_array_equal(out.posterior["cov"].values[1], draws["cov"][1][:, ::-1])
    # the label-invariant groups are unchanged, and the input was not modified
    np.testing.assert_array_equal(out.log_likelihood["x"].values, raw.log_likelihood["x"].values)
    np.testing.assert_array_equal(out.posterior_predictive["x"].values, raw.posterior_predictive["x"].values)
    np.testing.assert_array_equal(raw.posterior["mu"].values, draws["mu"])
    assert arviz_io.diagnostics(raw)["r_hat_max"] > 1.5


def test_switching_within_a_chain_is_counted(data):
    draws = _chains([[-3.0, 3.0], [-3.0, 3.0]])
    for name in ("alpha", "mu", "cov"):
        draws[name][1, 300:] = draws[name][1, 300:, ::-1]  # chain 1 switches labels for its last 100 draws
    out = arviz_io.relabel_chains(_build(draws, data))
    assert out.attrs["label_switch_fraction_per_chain"] == [0.0, 0.25]
    assert out.attrs["label_switch_within_chain"] == [0.0, 0.25]
    # pooled over chains: the draws whose labels differ from their chain's usual ones
    assert out.attrs["label_switch_fraction"] == pytest.approx(100 / 800)
    assert out.attrs["r_hat_max"] < 1.01


def test_chains_in_different_modes_warn(data):
    draws = _chains([[-3.0, 3.0], [-3.0, 5.0]])  # chain 1 found another mode, not a permutation
    with pytest.warns(MultimodalityWarning, match="different posterior modes") as record:
        out = arviz_io.relabel_chains(_build(draws, data))
    assert out.attrs["chains_disagree"] == 1
    assert out.attrs["mode_separation_mu"] > 15 and out.attrs["mode_separation_mu_at"] == [1, 0]
    assert out.attrs["mode_separation_loglik"] > 3  # the label-invariant check sees it too
    assert record[0].filename == __file__  # points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = arviz_io.relabel_chains(_build(draws, data), warn=False)
    assert quiet.attrs["chains_disagree"] == 1


def test_a_mode_seen_only_by_the_log_likelihood_warns(data):
    """Chains whose mu agree but whose likelihoods do not (the sds differ): the label-invariant check."""
    draws = _chains([[-3.0, 3.0], [-3.0, 3.0]])
    draws["cov"][1] *= 4.0
    with pytest.warns(MultimodalityWarning):
        out = arviz_io.relabel_chains(_build(draws, data))
    assert out.attrs["mode_separation_mu"] < 1 and out.attrs["mode_separation_loglik"] > 3


def test_chain_separation_by_hand():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((3, 500, 2))
    a[2, :, 1] += 10.0
    a[1, :, 1] *= 2.0
    sep, at = arviz_io.chain_separation(a)
    means = a.mean(1)
    pooled = np.sqrt(np.mean([np.var(a[c, :, 1], ddof=1) for c in range(3)]))
    assert at == (1,) and sep == pytest.approx((means[:, 1].max() - means[:, 1].min()) / pooled, rel=1e-12)
    assert arviz_io.chain_separation(a[:1]) == (0.0, ())  # one chain: nothing to compare
    const = np.ones((2, 10, 1))
    assert arviz_io.chain_separation(const)[0] == 0.0
    const[1] = 2.0
    assert arviz_io.chain_separation(const)[0] == np.inf


def test_one_chain_and_no_sample_stats(data):
    draws = {name: v[:1] for name, v in _chains([[3.0, -3.0]]).items()}
    raw = arviz_io.draws_to_inference_data(draws, x=data, seed=2)
    assert "sample_stats" not in raw.groups()
    out = arviz_io.relabel_chains(raw)
    assert out.attrs["label_switch_fraction_per_chain"] == [1.0]
    assert bool(out.sample_stats["label_switch"].values.all())
    assert np.isnan(out.attrs["r_hat_max"]) and out.attrs["chains_disagree"] == 0


def test_mcmc_builder_with_a_reference_is_the_nuts_relabelling(data):
    """``mcmc_to_inference_data(raw, ..., reference=(mu, cov))`` gives exactly the posterior that
    ``fit_nuts`` builds today (``matching.relabel`` of all chains from chain 0's start): the NUTS
    wiring changes no draw."""
    draws = _chains([[-3.0, 3.0], [3.0, -3.0], [-3.0, 3.0]], s=50)
    ref_mu, ref_cov = np.array([[3.1], [-2.9]]), np.array([[[0.4]], [[1.0]]])
    flat = lambda a: a.reshape((-1,) + a.shape[2:])
    a_r, m_r, c_r, _ = relabel(flat(draws["alpha"]), flat(draws["mu"]), flat(draws["cov"]), ref_mu, ref_cov)
    stats = {"lp": np.zeros((3, 50))}
    idata = arviz_io.mcmc_to_inference_data(
        draws, stats, data, attrs={"label_rule": "nuts"}, seed=2, reference=(ref_mu, ref_cov)
    )
    np.testing.assert_array_equal(idata.posterior["mu"].values, m_r.reshape(draws["mu"].shape))
    np.testing.assert_array_equal(idata.posterior["alpha"].values, a_r.reshape(draws["alpha"].shape))
    np.testing.assert_array_equal(idata.posterior["cov"].values, c_r.reshape(draws["cov"].shape))
    assert idata.attrs["label_rule"] == "nuts"  # a sampler's own statement of the rule is kept
    assert idata.attrs["label_switch_fraction_per_chain"] == [0.0, 1.0, 0.0]
    assert {"lp", "label_switch"} <= set(idata.sample_stats.data_vars)
    assert idata.attrs["r_hat_max"] < 1.05 < idata.attrs["r_hat_max_unrelabelled"]


def test_relabel_false_keeps_the_labels_and_still_checks_modes(data):
    """A sampler whose labels are fixed by construction (NUTS with ordered means) keeps its draws."""
    draws = _chains([[-3.0, 3.0], [3.0, -3.0]], s=50)
    with pytest.warns(MultimodalityWarning):  # kept labels that differ between chains look like two modes
        idata = arviz_io.mcmc_to_inference_data(
            draws, {"lp": np.zeros((2, 50))}, data, attrs={"label_rule": "ordered"}, seed=2, relabel=False
        )
    np.testing.assert_array_equal(idata.posterior["mu"].values, draws["mu"])
    assert idata.attrs["label_switch_fraction_per_chain"] == [0.0, 0.0] and idata.attrs["label_rule"] == "ordered"
    assert not bool(idata.sample_stats["label_switch"].values.any())
    assert idata.attrs["r_hat_max"] == idata.attrs["r_hat_max_unrelabelled"] > 1.5
