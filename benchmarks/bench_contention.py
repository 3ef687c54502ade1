"""Threads that survive a busy machine (issue 10, item 5): each fit's default run vs its best
thread setting, on an idle machine and with two busy processes competing for the cores.

    python benchmarks/bench_contention.py              # fit_cavi, N = 2e6, D = 2, K = 5, 10 iterations
    python benchmarks/bench_contention.py --quick      # N = 2e5: a quick look (seconds)
    python benchmarks/bench_contention.py --json out.json

Method
------
* Run it **without** ``OMP_WAIT_POLICY`` in the environment (the script warns otherwise): the
  point is the default behaviour.
* Data: N rows from a K-component mixture, drawn once; Θ₀ fixed (``init=GMMParams``),
  ``tol=0``, so every run does exactly ``--iters`` iterations (+ the closing E-step).
* Settings (``CASES``; more fits can be added there, each a function of the thread setting):
  ``default`` (``threads=None``: torch's thread count, here the machine's cores) and
  ``threads=1``, ``threads=2``... up to the core count.  The answers of all settings must be the
  same bits (``fit_cavi``'s passes add fixed tasks in order), else the script fails.
* Conditions: ``idle`` (nothing started by the script; the load average is printed, since other
  users of the machine are not under its control) and ``busy``: two ``python -c "while True:
  pass"`` processes started by the script, and stopped by it (by their pid) at the end.
* Each (condition, setting) runs ``--reps`` times interleaved; the median wall time is reported,
  with ``os.getloadavg()`` before each condition. Ratio = default / best setting (target ≤ 1.5 under
  contention) and the idle speed-up = threads=1 / best (target > 1.5 on two cores at N = 2e6).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

import ppl_gmm as pg


def make_data(n: int, d: int, k: int, seed: int = 0) -> tuple[np.ndarray, pg.GMMParams]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(k, d))
    z = rng.integers(k, size=n)
    x = centres[z] + rng.normal(size=(n, d))
    start = pg.GMMParams(
        torch.full((k,), 1.0 / k, dtype=torch.float64),
        torch.as_tensor(centres + rng.normal(scale=0.5, size=(k, d))),
        torch.eye(d, dtype=torch.float64).expand(k, d, d).clone(),
    )
    return x, start


def cavi_case(x: np.ndarray, start: pg.GMMParams, iters: int) -> Callable[[int | None], torch.Tensor]:
    def run(threads: int | None) -> torch.Tensor:
        fit = pg.fit_cavi(x, start.k, init=start, max_iter=iters, tol=0, threads=threads)
        return torch.cat([fit.params.mu.flatten(), fit.params.cov.flatten(), fit.elbo])

    return run


def busy_processes(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=10)


def measure(
    cases: dict[str, Callable[[int | None], torch.Tensor]], settings: list[int | None], reps: int
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, run in cases.items():
        times: dict[str, list[float]] = {str(s): [] for s in settings}
        answers: dict[str, torch.Tensor] = {}
        for _ in range(reps):
            for s in settings:
                t0 = time.perf_counter()
                answers[str(s)] = run(s)
                times[str(s)].append(time.perf_counter() - t0)
        first = next(iter(answers.values()))
        for s, a in answers.items():
            if not torch.equal(a, first):
                raise SystemExit(f"{name}: the answer with threads={s} differs from the others")
        out[name] = {s: statistics.median(v) for s, v in times.items()}
    return out


def report(label: str, load: tuple[float, float, float], res: dict[str, dict[str, float]]) -> None:
    print(f"\n[{label}] load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for name, by in res.items():
        best = min(v for s, v in by.items() if s != "None")
        cells = "  ".join(f"{'default' if s == 'None' else 'threads=' + s}: {v:6.2f} s" for s, v in by.items())
        print(f"  {name:10s} {cells}   default/best = {by['None'] / best:.2f}   threads=1/best = {by['1'] / best:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=float, default=2e6)
    ap.add_argument("--d", type=int, default=2)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--busy", type=int, default=2, help="competing busy processes in the 'busy' condition")
    ap.add_argument("--quick", action="store_true", help="N = 2e5")
    ap.add_argument("--json", help="write the medians here")
    args = ap.parse_args()
    if "OMP_WAIT_POLICY" in os.environ:
        print(f"warning: OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} is set: this does not measure the default")
    n = int(2e5 if args.quick else args.n)
    cores = os.cpu_count() or 1
    settings: list[int | None] = [None, *range(1, cores + 1)]
    x, start = make_data(n, args.d, args.k)
    cases = {"fit_cavi": cavi_case(x, start, args.iters)}
    print(
        f"N = {n}, D = {args.d}, K = {args.k}, {args.iters} iterations; {cores} cores; torch threads "
        f"{torch.get_num_threads()}; medians of {args.reps}"
    )
    cases["fit_cavi"](1)  # warm-up
    results = {}
    load = os.getloadavg()
    results["idle"] = {"load": load, "times": measure(cases, settings, args.reps)}
    report("idle", load, results["idle"]["times"])
    procs = busy_processes(args.busy)
    try:
        time.sleep(1.0)
        load = os.getloadavg()
        results["busy"] = {"load": load, "times": measure(cases, settings, args.reps)}
    finally:
        stop(procs)
    report(f"busy: {args.busy} competing processes", load, results["busy"]["times"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"n": n, "d": args.d, "k": args.k, "iters": args.iters, **results}, f, indent=1)


if __name__ == "__main__":
    main()
