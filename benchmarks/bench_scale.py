"""Data larger than memory and more than one process (issue 10, item 8): ``fit_cavi`` on in-memory,
memory-mapped ``.npy`` and Dask ``LocalCluster`` (2 workers) inputs, and the contention ratio of item 5.

    python benchmarks/bench_scale.py                 # N = 1e6 and 1e7 (D = 2, K = 8, 10 iterations)
    python benchmarks/bench_scale.py --quick         # N = 1e5, small contention runs: a smoke run
    python benchmarks/bench_scale.py --n-max 1e6     # only the sizes up to 1e6
    python benchmarks/bench_scale.py --huge          # also N = 1e8 as a 1.6 GB .npy (written, then deleted)
    python benchmarks/bench_scale.py --no-contention # only the scale table

Method
------
* Data: N rows from a K = 8, D = 2 mixture (seeded), written once per N to a ``.npy`` in a
  temporary directory, block by block (the parent never holds the whole array); the directory is
  deleted at the end. Θ₀ is fixed (``init=GMMParams``, the same for every input), ``tol=0``, so
  every fit does exactly 10 iterations and all inputs must give the same answer.
* Each (input, N) runs in a **fresh subprocess** (``--child``), so its peak RSS is its own:
  ``memory`` loads the ``.npy`` whole (``np.load``) then fits the array; ``npy`` passes the path
  (``as_source`` memory-maps it); ``dask`` starts ``LocalCluster(n_workers=2, processes=True,
  threads_per_worker=1)`` and fits the file as a Dask array chunked by rows, each chunk read by the
  worker from the path (``ppl_gmm.app.npy_input.npy_dask_array``, as ``ppl-gmm fit --dask``).
* RSS: the peak resident set of the child (``VmHWM`` in ``/proc/self/status``, which starts afresh
  at ``exec``; ``ru_maxrss`` would include the forking parent's peak), read just before the fit
  and after it; "added" is the difference (for ``memory`` the loaded data are
  in the "before"). For a memory-mapped file the file's pages that the process touched count in
  its RSS (they are resident, if reclaimable), so the number is an upper bound of what the fit
  needs. "peak" is the whole process's peak (the ``--huge`` target: ≤ 1 GB). For ``dask`` the
  driver's numbers are shown, and the largest worker's peak in "workers".
* Time: the median over iterations 2..10 of one iteration (the fit's ``times`` trace), as rows
  per second; "wall" is the whole call (validation pass, Θ₀, the iterations, the closing E-step;
  Dask: without starting the cluster). Ratios are against the in-memory run of the same N in
  the same script run (time per row: >1 is slower).
* Agreement: the largest relative difference of μ, Σ, α and the ELBO trace from the in-memory fit.
* Contention (item 5): ``benchmarks/bench_contention.py``'s ``measure`` on ``fit_cavi`` (N = 2e6)
  and on ``fit_svi(local_updates="natural", num_steps=200)`` (Old Faithful, K = 2): the default
  vs every thread setting, idle and with two busy processes that the script starts (and stops);
  medians of ``--reps``, with ``os.getloadavg()``. ``fit_svi`` runs on one torch thread by
  default (``svi_driver.pyro_session``); its "threads=T" settings replace that by T threads, the
  behaviour before issue 10.

Run it without ``OMP_WAIT_POLICY`` set (the defaults are what is measured).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
D, K, ITERS = 2, 8, 10
KINDS = ("memory", "npy", "dask")
WRITE_ROWS = 1 << 20  # rows generated and written per block


# --- data ----------------------------------------------------------------------------------------
def centres(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=5.0, size=(K, D))


def write_npy(path: Path, n: int, seed: int = 0) -> None:
    """N rows of the mixture, generated and written block by block (O(WRITE_ROWS) memory)."""
    mu = centres(seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(n, D))
    for i, a in enumerate(range(0, n, WRITE_ROWS)):
        b = min(a + WRITE_ROWS, n)
        rng = np.random.default_rng([seed, i])
        out[a:b] = mu[rng.integers(K, size=b - a)] + rng.normal(size=(b - a, D))
    out.flush()
    del out


def start_params():
    import ppl_gmm as pg

    mu = centres() + np.random.default_rng(1).normal(scale=1.0, size=(K, D))
    return pg.GMMParams(
        torch.full((K,), 1.0 / K, dtype=torch.float64),
        torch.as_tensor(mu),
        torch.eye(D, dtype=torch.float64).expand(K, D, D).clone(),
    )


# --- one configuration, in a fresh process ---------------------------------------------------------
def _maxrss_mb() -> float:
    """The process's peak resident set (MB): ``VmHWM`` of ``/proc/self/status`` on Linux, which
    starts afresh at ``exec``; ``ru_maxrss`` elsewhere (which Linux carries over from the forking
    parent — here the parent that wrote the file)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(kind: str, path: str, out: str) -> None:
    import ppl_gmm as pg

    start = start_params()
    extra: dict = {}
    with contextlib.ExitStack() as stack:
        if kind == "memory":
            x = np.load(path)
        elif kind == "npy":
            x = path
        else:
            import distributed

            from ppl_gmm.app.npy_input import npy_dask_array

            cluster = stack.enter_context(
                distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None)
            )
            client = stack.enter_context(distributed.Client(cluster))
            x = npy_dask_array(path, workers=2)
        before = _maxrss_mb()
        t0 = time.perf_counter()
        fit = pg.fit_cavi(x, K, init=start, max_iter=ITERS, tol=0)
        wall = time.perf_counter() - t0
        after = _maxrss_mb()
        if kind == "dask":
            peaks = client.run(_maxrss_mb)
            extra["workers_peak_mb"] = max(peaks.values())
            extra["chunks"] = len(x.chunks[0])
    times = fit.times.numpy()
    per_iter = float(np.median(np.diff(times[:ITERS])))  # iterations 2..ITERS
    p = fit.params
    np.savez(out, alpha=p.alpha.numpy(), mu=p.mu.numpy(), cov=p.cov.numpy(), elbo=fit.elbo.numpy())
    info = {"wall": wall, "per_iter": per_iter, "rss_before_mb": before, "rss_after_mb": after, **extra}
    Path(out).with_suffix(".json").write_text(json.dumps(info))


def run_child(kind: str, path: Path, workdir: Path, n: int) -> dict:
    out = workdir / f"{kind}_{n}.npz"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(path), str(out)], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"{kind}, N = {n}: the child failed:\n{proc.stderr[-3000:]}")
    info = json.loads(out.with_suffix(".json").read_text())
    with np.load(out) as f:
        info["answer"] = {name: f[name] for name in f.files}
    return info


def max_rel_diff(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k] - b[k]) / np.maximum(np.abs(b[k]), 1e-300))) for k in b)


def scale_table(sizes: list[int], workdir: Path) -> list[dict]:
    rows = []
    print(f"\nfit_cavi, D = {D}, K = {K}, {ITERS} iterations, tol = 0, the same Θ₀; one fresh process per row")
    head = (
        f"{'input':<8} {'N':>11} {'rows/s/iter':>12} {'s/iter':>8} {'wall s':>8} {'x time/row':>10} "
        f"{'RSS added MB':>12} {'peak MB':>8} {'max rel diff':>12}  notes"
    )
    print(head)
    print("-" * len(head))
    for n in sizes:
        path = workdir / f"data_{n}.npy"
        write_npy(path, n)
        ref = None
        for kind in KINDS:
            info = run_child(kind, path, workdir, n)
            if kind == "memory":
                ref = info
            assert ref is not None
            diff = max_rel_diff(info["answer"], ref["answer"])
            ratio = info["per_iter"] / ref["per_iter"]
            notes = ""
            if kind == "dask":
                notes = f"{info['chunks']} chunks; workers' peak {info['workers_peak_mb']:.0f} MB"
            row = {
                "input": kind,
                "n": n,
                "rows_per_s": n / info["per_iter"],
                "per_iter": info["per_iter"],
                "wall": info["wall"],
                "ratio": ratio,
                "rss_added_mb": info["rss_after_mb"] - info["rss_before_mb"],
                "peak_mb": info["rss_after_mb"],
                "max_rel_diff": diff,
                "notes": notes,
            }
            rows.append(row)
            print(
                f"{kind:<8} {n:>11.0e} {row['rows_per_s']:>12.3g} {row['per_iter']:>8.3f} {row['wall']:>8.2f} "
                f"{ratio:>10.2f} {row['rss_added_mb']:>12.0f} {row['peak_mb']:>8.0f} {diff:>12.1e}  {notes}",
                flush=True,
            )
        path.unlink()
    return rows


def huge(workdir: Path, reference: dict | None) -> dict:
    """N = 1e8 (1.6 GB .npy): whole-process peak RSS ≤ 1 GB; time per row vs the in-memory 1e7."""
    n = 10**8
    need = n * D * 8
    free = shutil.disk_usage(workdir).free
    if free < 2 * need:
        raise SystemExit(f"--huge needs {2 * need / 1e9:.1f} GB free in {workdir}, there are {free / 1e9:.1f} GB")
    path = workdir / "data_huge.npy"
    t0 = time.perf_counter()
    write_npy(path, n)
    print(f"\n--huge: wrote {need / 1e9:.1f} GB to {path} in {time.perf_counter() - t0:.0f} s")
    try:
        info = run_child("npy", path, workdir, n)
    finally:
        path.unlink()
    out = {"n": n, "per_iter": info["per_iter"], "peak_mb": info["rss_after_mb"], "wall": info["wall"]}
    rate = n / info["per_iter"]
    print(f"  npy  N = 1e8: {rate:.3g} rows/s/iter, {info['per_iter']:.2f} s/iter, wall {info['wall']:.0f} s")
    print(f"  whole-process peak RSS {info['rss_after_mb']:.0f} MB (target <= 1000 MB)")
    if reference is not None:
        ratio = (info["per_iter"] / n) / (reference["per_iter"] / reference["n"])
        out["ratio_vs_memory"] = ratio
        print(f"  time per row / in-memory at N = {reference['n']:.0e}: {ratio:.2f} (target <= 1.3)")
    return out


# --- contention (item 5) ---------------------------------------------------------------------------
def svi_case(x, steps: int):
    """fit_svi(natural) as a function of the thread setting: None = the default (one torch thread,
    ``pyro_session``); T = T torch threads for the fit (the behaviour before issue 10)."""
    import ppl_gmm as pg
    from ppl_gmm.inference import svi_driver

    answers: dict = {}

    @contextlib.contextmanager
    def threads_for_the_fit(t: int):
        before = torch.get_num_threads()
        torch.set_num_threads(t)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def run(threads: int | None) -> torch.Tensor:
        patched = svi_driver.limited_threads
        if threads is not None:
            svi_driver.limited_threads = lambda: threads_for_the_fit(threads)  # type: ignore[assignment]
        try:
            fit = pg.fit_svi(x, 2, num_steps=steps, local_updates="natural", seed=0)
        finally:
            svi_driver.limited_threads = patched
        answers[threads] = fit.elbo[-1].item()
        return torch.zeros(1)  # thread counts may change the last bits; agreement checked below

    return run, answers


def contention(quick: bool, reps: int) -> dict:
    sys.path.insert(0, str(HERE))
    import bench_contention as bc  # E2's: the cases' runner, the busy processes

    import ppl_gmm as pg

    n = int(2e5 if quick else 2e6)
    steps = 50 if quick else 200
    x, start = bc.make_data(n, 2, 5)
    svi_run, svi_answers = svi_case(pg.datasets.load_old_faithful(), steps)
    cases = {"fit_cavi": bc.cavi_case(x, start, ITERS), "fit_svi": svi_run}
    cores = os.cpu_count() or 1
    settings: list[int | None] = [None, *range(1, cores + 1)]
    print(
        f"\ncontention: fit_cavi N = {n}, D = 2, K = 5, {ITERS} iterations; fit_svi natural, {steps} steps, "
        f"Old Faithful, K = 2; {cores} cores; medians of {reps}"
    )
    for run in cases.values():
        run(None)  # warm-up
    results = {}
    load = os.getloadavg()
    results["idle"] = {"load": load, "times": bc.measure(cases, settings, reps)}
    bc.report("idle", load, results["idle"]["times"])
    procs = bc.busy_processes(2)
    try:
        time.sleep(1.0)
        load = os.getloadavg()
        results["busy"] = {"load": load, "times": bc.measure(cases, settings, reps)}
    finally:
        bc.stop(procs)
    bc.report("busy: 2 competing processes", load, results["busy"]["times"])
    spread = max(svi_answers.values()) - min(svi_answers.values())
    print(f"  fit_svi final ELBO over the thread settings: spread {spread:.2e} (of {min(svi_answers.values()):.6g})")
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="N = 1e5 and small contention runs (a smoke run)")
    ap.add_argument("--n-max", type=float, default=1e7, help="the largest N of the table (default 1e7)")
    ap.add_argument("--huge", action="store_true", help="also N = 1e8 from a 1.6 GB .npy (written, then deleted)")
    ap.add_argument("--no-contention", action="store_true", help="skip the contention runs")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each contention setting (median)")
    ap.add_argument("--dir", help="where to write the data (default: a new temporary directory)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--child", nargs=3, metavar=("KIND", "PATH", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    if "OMP_WAIT_POLICY" in os.environ:
        print(f"note: OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} is removed for the children")
    sizes = [10**5] if args.quick else [n for n in (10**6, 10**7) if n <= args.n_max]
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"{os.cpu_count()} cores; torch {torch.__version__}, {torch.get_num_threads()} threads; load {load}")
    workdir = Path(tempfile.mkdtemp(prefix="bench_scale_", dir=args.dir))
    results: dict = {}
    try:
        results["scale"] = scale_table(sizes, workdir)
        if args.huge:
            memory = [r for r in results["scale"] if r["input"] == "memory"]
            results["huge"] = huge(workdir, max(memory, key=lambda r: r["n"]) if memory else None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if not args.no_contention:
        results["contention"] = contention(args.quick, 1 if args.quick else args.reps)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
