"""Streaming VB (``fit_streaming_vb``) against closed-form VB (``fit_vb``): the bound per row after
a few passes, and the time (issue 10, item 4).

    python benchmarks/bench_streaming_vb.py             # N = 1e6, D = 2, K = 5, batches of 1e4, 5 passes
    python benchmarks/bench_streaming_vb.py --quick     # N = 1e5, batches of 2000
    python benchmarks/bench_streaming_vb.py --npy       # also from a memory-mapped .npy file (block order)

Method
------
* Data: N rows drawn once (seed 0) from a K-component, well-separated 2-D mixture.
* Both fits use the default prior of the data (``default_prior(x, K)``), the same seed and init
  ("kmeans++"; fit_vb on all rows, streaming VB on its start sample of ≤ 2**16 rows).
* fit_vb runs to its default tolerance (1e-8 per row); its final bound is the reference.
* Streaming VB runs ``--passes`` passes of ``--batch`` rows (shuffled rows; with ``--npy``
  consecutive blocks in a seeded order) with τ = 1, κ = 0.7; its bound is fit_vb's full bound
  (PRML 10.70–10.77) of the final q over all N rows (``StreamingVB.bound``). The target: the bound
  per row within 1e-3 of fit_vb's after at most 5 passes.
* Times are wall-clock, one run each, on the thread settings the package chooses (print the load
  average: other processes on the machine only add time).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

import ppl_gmm as pg
from ppl_gmm.core.priors import default_prior
from ppl_gmm.inference.streaming_vb import fit_streaming_vb


def mixture(n: int, k: int, seed: int = 0) -> torch.Tensor:
    angles = 2 * np.pi * np.arange(k) / k
    mu = torch.tensor(np.c_[6 * np.cos(angles), 6 * np.sin(angles)])
    cov = torch.tensor([[1.0, 0.3], [0.3, 0.8]]).expand(k, 2, 2).clone()
    params = pg.GMMParams(torch.full((k,), 1.0 / k, dtype=torch.float64), mu, cov.double())
    return pg.datasets.make_mixture(n, params, seed=seed)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--npy", action="store_true", help="also stream from a memory-mapped .npy file")
    args = ap.parse_args()
    if args.quick:
        args.n, args.batch = 100_000, 2000
    print(f"load average {os.getloadavg()}; torch threads {torch.get_num_threads()}")
    x = mixture(args.n, args.k)
    prior = default_prior(x, args.k)
    t0 = time.perf_counter()
    vb = pg.fit_vb(x, args.k, prior, seed=0)
    t_vb = time.perf_counter() - t0
    ref = float(vb.elbo[-1]) / args.n
    print(f"fit_vb: N = {args.n}, K = {args.k}: {vb.n_iter} iterations, {t_vb:.2f} s, bound/row {ref:.8f}")
    sources = [("memory", x)]
    tmp = None
    if args.npy:
        tmp = tempfile.TemporaryDirectory()
        path = os.path.join(tmp.name, "x.npy")
        np.save(path, x.numpy())
        sources.append(("npy", path))
    for name, data in sources:
        for passes in range(1, args.passes + 1):
            t0 = time.perf_counter()
            fit = fit_streaming_vb(data, args.k, prior, batch_size=args.batch, n_passes=passes, seed=0)
            t = time.perf_counter() - t0
            gap = ref - float(fit.elbo[0]) / args.n
            print(
                f"streaming VB ({name}), {passes} pass(es) of {args.batch}-row batches: {fit.n_iter} steps, "
                f"{t:.2f} s (incl. the bound's pass), bound/row gap to fit_vb {gap:+.2e}"
                + ("  [target 1e-3 met]" if abs(gap) < 1e-3 else "")
            )
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
