"""Blocked Gibbs against NUTS: effective samples per second on the galaxies data (K = 3, default_prior).

    python benchmarks/bench_gibbs.py             # 3 paired rounds, then 1 round under 2 busy-looping processes
    python benchmarks/bench_gibbs.py --quick     # 1 short round, no loaded round
    python benchmarks/bench_gibbs.py --rounds 5 --load 2

Method
------
* After one tiny untimed call of each (imports), each round runs ``fit_gibbs`` (4 chains,
  vectorised) and ``fit_nuts`` (2 chains, its default chain method), both 500 warm-up + 1000 draws
  per chain, on the same data and prior, in this process, alternately (Gibbs, NUTS, Gibbs, ...).
  Round r uses seed ``--seed + r`` for both.
* ESS = the smallest rank-normalised bulk ESS (ArviZ) over every scalar of alpha, mu and cov, after
  the package's relabelling; wall = the whole public call (what a user waits for: sampling, the
  InferenceData with log-likelihood and predictive, diagnostics), and ``sampling`` = the sampler
  alone (``attrs["sampling_time"]``). ESS/s = ESS / wall. Medians over the rounds.
* Before any ratio is printed the two posteriors are checked against each other: every posterior
  mean within 4·√(MCSE₁² + MCSE₂²) + 0.1·sd (the test suite's tolerance), after Hungarian matching.
* The loaded round starts ``--load`` busy-looping Python processes (``while True: pass``) for its
  duration and kills them afterwards; the load average is printed before and after every block.
* Gibbs's ESS varies from seed to seed more than NUTS's: its chains sometimes visit the posterior's
  minor mode (the three outliers near 33 absorbed into the main component, ln p(X | Θ) ≈ −214
  against −208), which costs ESS; NUTS chains have not been seen to leave the main mode.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def _run(method: str, num_samples: int, warmup: int, chains: int, seed: int) -> dict:
    import ppl_gmm as pg
    from ppl_gmm.results import arviz_io

    x = pg.datasets.load_galaxies()
    prior = pg.default_prior(x, 3)
    fit = pg.fit_gibbs if method == "gibbs" else pg.fit_nuts
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        idata = fit(x, 3, prior, num_samples=num_samples, warmup_steps=warmup, num_chains=chains, seed=seed)
        wall = time.perf_counter() - start
    ess = arviz_io.ess_bulk_min(idata)
    return {
        "method": method,
        "chains": chains,
        "wall": wall,
        "sampling": float(idata.attrs["sampling_time"]),
        "ess": ess,
        "ess_per_s": ess / wall,
        "r_hat": float(idata.attrs["r_hat_max"]),
        "modes": int(idata.attrs.get("chains_disagree", 0)),
        "warnings": sorted({type(w.message).__name__ for w in caught}),
        "idata": idata,
    }


def _agreement(a, b) -> float:
    """max over scalars of |mean_a − mean_b| / (4·√(MCSE_a² + MCSE_b²) + 0.1·sd_b), components matched."""
    import ppl_gmm as pg
    from ppl_gmm.results import arviz_io

    pa, pb = (arviz_io.posterior_mean_params(r["idata"]) for r in (a, b))
    perm = pg.align(pb, pa).tolist()
    sa, sb = (arviz_io.summary(r["idata"], round_to="none") for r in (a, b))
    worst = 0.0
    for name in sb.index:
        var, idx = name.split("[")
        idx = [int(i) for i in idx.rstrip("]").split(", ")]
        idx[0] = perm[idx[0]]
        ra, rb = sa.loc[f"{var}[{', '.join(map(str, idx))}]"], sb.loc[name]
        tol = 4 * np.hypot(ra["mcse_mean"], rb["mcse_mean"]) + 0.1 * rb["sd"]
        worst = max(worst, abs(ra["mean"] - rb["mean"]) / tol)
    return worst


def _row(r: dict) -> str:
    return (
        f"{r['method']:>6} {r['chains']:>6} {r['wall']:>8.2f} {r['sampling']:>9.2f} {r['ess']:>8.0f} "
        f"{r['ess_per_s']:>8.1f} {r['r_hat']:>6.3f} {r['modes']:>6} {','.join(r['warnings']) or '-'}"
    )


def _block(label: str, rounds: int, sizes: tuple[int, int], chains: dict, seed: int) -> dict:
    print(f"\n{label}: load average before {os.getloadavg()[0]:.2f}")
    head = ("method", "chains", "wall s", "sampl. s", "min ESS", "ESS/s", "R-hat", "modes")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (6, 6, 8, 9, 8, 8, 6, 6))))
    res: dict[str, list] = {"gibbs": [], "nuts": []}
    for r in range(rounds):
        pair = {m: _run(m, sizes[0], sizes[1], chains[m], seed + r) for m in ("gibbs", "nuts")}
        for m in ("gibbs", "nuts"):
            print(_row(pair[m]), flush=True)
            res[m].append(pair[m])
        agree = _agreement(pair["gibbs"], pair["nuts"])
        print(f"  round {r}: seed {seed + r}; posterior means agree to {agree:.2f} of the tolerance", flush=True)
        if agree > 1:
            print("  (disagreement: this round's ratio is not meaningful)")
    med = {m: statistics.median(x["ess_per_s"] for x in v) for m, v in res.items()}
    print(
        f"median ESS/s: Gibbs {med['gibbs']:.1f}, NUTS {med['nuts']:.1f}; "
        f"Gibbs / NUTS = {med['gibbs'] / med['nuts']:.0f}x "
        f"(median sampling-only ESS/s: Gibbs "
        f"{statistics.median(x['ess'] / x['sampling'] for x in res['gibbs']):.1f}, NUTS "
        f"{statistics.median(x['ess'] / x['sampling'] for x in res['nuts']):.1f}); "
        f"load average after {os.getloadavg()[0]:.2f}"
    )
    return med


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 round of 200 + 150 draws per chain, no loaded round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--load", type=int, default=2, help="busy-looping processes for the loaded round (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # both fits run on one thread anyway (core.threads.limited_threads)
    chains = {"gibbs": 4, "nuts": 2}
    sizes = (200, 150) if args.quick else (1000, 500)
    rounds = 1 if args.quick else args.rounds
    print(
        f"galaxies (N = 82), K = 3, default_prior; {sizes[1]} warm-up + {sizes[0]} draws per chain; "
        f"{os.cpu_count()} cores; Gibbs {chains['gibbs']} chains (vectorised), NUTS {chains['nuts']} chains (JIT)"
    )
    t0 = time.perf_counter()
    for m in ("gibbs", "nuts"):  # imports (ArviZ, Pyro) outside the timings
        _run(m, 5, 5, 1, args.seed)
    _block(f"{rounds} paired round(s), no added load", rounds, sizes, chains, args.seed)
    if not args.quick and args.load > 0:
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
        try:
            time.sleep(5)  # let the load average notice
            _block(f"1 paired round under {args.load} busy-looping processes", 1, sizes, chains, args.seed + 100)
        finally:
            for p in busy:
                p.kill()
                p.wait()
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
