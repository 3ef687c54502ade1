"""Paired timing of this checkout against another git revision: is a change a slowdown?

    python benchmarks/compare_revisions.py --base a602731            # every case, 5 rounds
    python benchmarks/compare_revisions.py --base HEAD~1 --quick     # small sizes
    python benchmarks/compare_revisions.py --base a602731 --load 2   # under 2 competing busy processes

The base revision is checked out into a temporary ``git worktree``; both trees run with this
virtual environment's Python. Every measurement is a fresh subprocess that imports one tree,
builds the case's data from a fixed seed, warms up, and times one call of the public API
(``pg.fit_cavi`` … as a user calls it). Rounds alternate base and current (ABAB…), so both see the
same machine; the script prints the median seconds of each, their ratio current / base, the
largest relative difference of the results between the trees, and the load average before and
after. ``--load N`` starts N busy-looping processes for the whole run (the contention that makes
spinning OpenMP threads collapse on a shared 2-core machine) and stops them at the end.
Speed is never asserted: read the ratio against the spread of the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (setup code defining `run()` which returns a float to compare, quick-size override)
CASES = {
    "fit_cavi (1e6, 2, 8), 10 it": ("mix(1_000_000, 2, 8)", "pg.fit_cavi(x, 8, seed=0, max_iter=10, tol=0).elbo[-1]"),
    "fit_cavi (2e5, 10, 8), 10 it": ("mix(200_000, 10, 8)", "pg.fit_cavi(x, 8, seed=0, max_iter=10, tol=0).elbo[-1]"),
    "fit_cavi diag (1e6, 2, 8), 10 it": (
        "mix(1_000_000, 2, 8)",
        "pg.fit_cavi(x, 8, seed=0, max_iter=10, tol=0, covariance_type='diag').elbo[-1]",
    ),
    "e_step (1e6, 2, 8)": ("mix(1_000_000, 2, 8)", "pg.e_step(x, P)[:, 0].sum()"),
    "predict_proba (1e6, 2, 8)": ("mix(1_000_000, 2, 8)", "F.predict_proba(x)[:, 0].sum()"),
    "fit_map (1e5, 2, 8), 20 it": ("mix(100_000, 2, 8)", "pg.fit_map(x, 8, seed=0, max_iter=20, tol=0).elbo[-1]"),
    "fit_vb (1e5, 2, 8), 20 it": ("mix(100_000, 2, 8)", "pg.fit_vb(x, 8, seed=0, max_iter=20, tol=0).elbo[-1]"),
    "fit_svi natural, faithful, 200 steps": (
        "faithful()",
        "pg.fit_svi(x, 2, seed=0, num_steps=200, local_updates='natural', tol=0).elbo[-1]",
    ),
    "fit_svi_bayes, galaxies K=3, 100 steps": ("galaxies()", "pg.fit_svi_bayes(x, 3, num_steps=100, seed=0).elbo[-1]"),
    "fit_nuts, galaxies K=3, 200+200": (
        "galaxies()",
        "pg.fit_nuts(x, 3, num_samples=200, warmup_steps=200, seed=0).posterior['mu'].values.mean()",
    ),
}

WORKER = textwrap.dedent(
    """
    import json, pathlib, sys, time, warnings
    warnings.simplefilter("ignore")
    import numpy as np, torch
    import ppl_gmm as pg

    def mix(n, d, k):
        if QUICK:
            n = max(n // 50, 2000)
        rng = np.random.default_rng(0)
        centres = rng.normal(scale=4.0, size=(k, d))
        z = rng.integers(k, size=n)
        return torch.as_tensor(centres[z] + rng.normal(size=(n, d)))

    def faithful():
        return pg.datasets.load_old_faithful()

    def galaxies():
        return pg.datasets.load_galaxies()

    QUICK = {quick}
    x = {data}
    P = pg.fit_cavi(x, 8, seed=0, max_iter=2, tol=0).params if x.ndim == 2 and x.shape[0] > 1000 else None
    F = pg.fit_cavi(x, 8, seed=0, max_iter=2, tol=0) if P is not None else None
    run = lambda: float({call})
    run()  # warm-up: first-call costs (allocation, JIT of kernels, imports) are not the change's
    t0 = time.perf_counter()
    value = run()
    seconds = time.perf_counter() - t0
    package = str(pathlib.Path(pg.__file__).parent)
    print(json.dumps({{"seconds": seconds, "value": value, "package": package}}))
    """
)


def _measure(tree: Path, data: str, call: str, quick: bool) -> dict:
    code = WORKER.format(quick=quick, data=data, call=call)
    env = {**os.environ, "PYTHONPATH": str(tree), "MPLBACKEND": "Agg"}
    # cwd = the tree: `python -c` puts the working directory first on sys.path
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tree, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{tree}: {call}\n{out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if Path(result["package"]).resolve() != (tree / "ppl_gmm").resolve():
        raise RuntimeError(f"imported ppl_gmm from {result['package']}, not from {tree}")
    return result


def _busy(n: int) -> list:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the git revision to compare with (e.g. a602731, HEAD~1)")
    parser.add_argument("--rounds", type=int, default=5, help="measurements per tree and case (default 5)")
    parser.add_argument("--quick", action="store_true", help="data 50x smaller")
    parser.add_argument("--load", type=int, default=0, help="busy-looping competing processes (default 0)")
    parser.add_argument("--only", nargs="*", help="substrings of case names to run")
    args = parser.parse_args(argv)
    cases = {k: v for k, v in CASES.items() if not args.only or any(s in k for s in args.only)}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.base],
            check=True,
            capture_output=True,
        )
        load = _busy(args.load)
        try:
            print(
                f"base {args.base} vs current checkout; {args.rounds} rounds ABAB; load average before: "
                f"{os.getloadavg()[0]:.2f}; competing busy processes: {args.load}; quick: {args.quick}"
            )
            head = ("case", "base s", "current s", "current/base", "spread", "max rel diff")
            print(f"{head[0]:<40} {head[1]:>9} {head[2]:>10} {head[3]:>13} {head[4]:>8} {head[5]:>13}")
            for name, (data, call) in cases.items():
                times = {"base": [], "current": []}
                values = {}
                for _ in range(args.rounds):
                    for label, tree in (("base", base), ("current", ROOT)):
                        r = _measure(tree, data, call, args.quick)
                        times[label].append(r["seconds"])
                        values[label] = r["value"]
                b, c = statistics.median(times["base"]), statistics.median(times["current"])
                spread = (max(times["current"]) - min(times["current"])) / c
                diff = abs(values["current"] - values["base"]) / max(abs(values["base"]), 1e-300)
                print(f"{name:<40} {b:>9.4f} {c:>10.4f} {c / b:>12.2f}x {spread:>7.0%} {diff:>13.1e}", flush=True)
            print(f"load average after: {os.getloadavg()[0]:.2f}")
        finally:
            for p in load:
                p.kill()
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False, capture_output=True
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
