"""fit_vb per iteration against scikit-learn's BayesianGaussianMixture, in the same run.

Same data, same prior (default_prior(x, k) passed to both), same start (scikit-learn's
``_initialize`` = the VB M-step from fit_vb's r₀), same number of iterations, full covariance,
float64, reg_covar = 0.  One scikit-learn iteration is what its ``fit`` loop does: ``_e_step``,
``_m_step``, ``_compute_lower_bound``; one fit_vb iteration is E-step, M-step and the bound.
The posteriors must agree (relative 1e-8) or the script exits with status 1.

    python benchmarks/bench_vb.py            # (N, D, K) = (1e5, 2, 8) and (2e4, 10, 8)
    python benchmarks/bench_vb.py --quick    # small sizes, a few seconds
    python benchmarks/bench_vb.py --threads 1

OMP_WAIT_POLICY defaults to PASSIVE here (set before torch loads; override it in the
environment): with the default spin-waiting, a machine whose cores are busy with other
processes makes every OpenMP region of torch wait for a descheduled thread, and fit_vb's
per-iteration time goes up ~20x while numpy's (mostly single-threaded) code barely moves.
The load average is printed so that a reader can judge the figures.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ppl_gmm.core.init import initial_responsibilities
from ppl_gmm.core.priors import default_prior
from ppl_gmm.inference.vb import fit_vb

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from oracles import sklearn_bgm

TARGET = 5.0


def make_data(n, d, k, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(k, d))
    z = rng.integers(k, size=n)
    a = rng.normal(size=(k, d, d)) / np.sqrt(d)
    chol = np.linalg.cholesky(a @ np.swapaxes(a, 1, 2) + 0.3 * np.eye(d))
    return centres[z] + np.einsum("nde,ne->nd", chol[z], rng.normal(size=(n, d)))


def time_sklearn(x, k, prior, resp0, iters):
    bgm = sklearn_bgm(x, k, prior, resp0)
    start = time.perf_counter()
    for _ in range(iters):
        log_prob_norm, log_resp = bgm._e_step(x)
        bgm._m_step(x, log_resp)
        bgm._compute_lower_bound(log_resp, log_prob_norm)
    return (time.perf_counter() - start) / iters, bgm


def time_ours(x, k, prior, iters, repeats):
    """Per-iteration seconds from the fit's own clock (trace entries 1 .. iters), best of repeats."""
    best, fit = float("inf"), None
    for _ in range(repeats):
        fit = fit_vb(x, k, prior, seed=0, max_iter=iters, tol=0)
        best = min(best, float(fit.times[iters - 1] - fit.times[0]) / (iters - 1))
    return best, fit


def max_rel_diff(post, bgm) -> float:
    cov = (torch.linalg.inv(post.W) / post.nu[:, None, None]).numpy()
    pairs = [
        (post.alpha.numpy(), bgm.weight_concentration_),
        (post.beta.numpy(), bgm.mean_precision_),
        (post.nu.numpy(), bgm.degrees_of_freedom_),
        (post.m.numpy(), bgm.means_),
        (cov, bgm.covariances_),
    ]
    return max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in pairs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--iters", type=int, default=None, help="iterations timed (default 20, quick 10)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = [(20_000, 2, 8), (5_000, 10, 8)] if args.quick else [(100_000, 2, 8), (20_000, 10, 8)]
    iters = args.iters or (10 if args.quick else 20)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY')}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
        f"{iters} iterations; float64, full covariance"
    )
    head = ("N", "D", "K", "sklearn ms/it", "fit_vb ms/it", "ratio", "max rel diff")
    print("{:>8} {:>3} {:>3}  {:>13}  {:>12}  {:>6}  {:>12}".format(*head))
    ok = True
    for n, d, k in cases:
        x = make_data(n, d, k)
        prior = default_prior(x, k)
        resp0 = initial_responsibilities(torch.as_tensor(x), k, "kmeans++", 0).numpy()
        ours, fit = time_ours(x, k, prior, iters, repeats=3)
        theirs, bgm = time_sklearn(x, k, prior, resp0, iters)
        diff = max_rel_diff(fit.posterior, bgm)
        ratio = theirs / ours
        ok &= diff < 1e-8
        print(f"{n:>8} {d:>3} {k:>3}  {theirs * 1e3:>13.2f}  {ours * 1e3:>12.2f}  {ratio:>5.1f}x  {diff:>12.2e}")
        if ratio < TARGET:
            print(f"  below the {TARGET:g}x target")
    if not ok:
        print("FAILED: the posteriors differ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
