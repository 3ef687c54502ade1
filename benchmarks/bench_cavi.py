"""fit_cavi vs scikit-learn's GaussianMixture: time per EM iteration and the memory a fit adds.

    python benchmarks/bench_cavi.py            # (N, D, K) = (1e6, 2, 8) and (2e5, 10, 8), full, float64
    python benchmarks/bench_cavi.py --quick    # small sizes, a few seconds
    python benchmarks/bench_cavi.py --threads 1   # both libraries on one thread (CPU-for-CPU)

Method
------
* Same run, same data, same start: the data are drawn once from a K-component mixture;
  Θ₀ is a perturbed truth (uniform weights, shifted means, isotropic covariances) and is
  handed to both libraries (``init=GMMParams`` / ``weights_init, means_init,
  precisions_init``), with ``reg_covar=0`` and ``tol=0`` so both run exactly the requested
  number of iterations.  One iteration is an E-step and an M-step in both.
* Time per iteration = (min t(n_hi) − min t(n_lo)) / (n_hi − n_lo) for whole fits of n_hi and
  n_lo iterations, so fixed costs (validation, centring, the closing E-step that writes γ)
  cancel.  The whole n_hi-iteration fit (min over repeats, fixed costs included) is printed too.
  The libraries alternate, ``--repeats`` times; minima are used because other
  processes on the machine only ever add time.  On a machine whose cores other processes
  keep busy, multi-threaded runs stall in OpenMP/MKL barriers and the wall-clock figures
  become meaningless: check the load average printed, or use ``--threads 1``.  ``--threads``
  sets torch's and the BLAS thread count for the whole run (default: leave both libraries at their defaults).
* Agreement: after n_hi iterations the parameters must agree to 1e-10 relative (largest
  entry) and the responsibilities to 1e-10 absolute, else the script fails.
* Memory: tracemalloc does not see torch's allocations, so each library fits once in a
  fresh subprocess (Linux) that imports both libraries, loads the saved data, warms up on a
  2000-row slice, reads its resident set size (VmRSS in /proc/self/status), resets the
  high-water mark (``echo 5 > /proc/self/clear_refs``), fits, and reads the high-water mark
  VmHWM: peak extra = VmHWM − VmRSS-before.  The target: ≤ 3 × (N·K responsibilities +
  N·D data) × 8 bytes.
* OpenBLAS: this machine may set OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE, which select an older
  (Haswell) numpy kernel.  The script prints the kernel threadpoolctl reports; run it as
  ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_cavi.py`` (or pass
  ``--unset-openblas-env``) to time scikit-learn with numpy's native kernel too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

CASES = [(1_000_000, 2, 8), (200_000, 10, 8)]
QUICK = [(20_000, 2, 8), (5_000, 10, 8)]


def make_case(n, d, k, seed=0):
    """Data from a well-mixed K-component mixture, and the shared start Θ₀."""
    import ppl_gmm as pg

    rng = np.random.default_rng(seed)
    a = rng.normal(size=(k, d, d))
    cov = a @ np.swapaxes(a, 1, 2) / d + 0.5 * np.eye(d)
    truth = pg.GMMParams(rng.dirichlet(5 * np.ones(k)), rng.normal(scale=3.0, size=(k, d)), cov)
    x, _ = pg.datasets.make_mixture(n, truth, seed=seed + 1)
    start = pg.GMMParams(
        np.ones(k) / k, truth.mu.numpy() + rng.normal(scale=0.5, size=(k, d)), np.tile(2.0 * np.eye(d), (k, 1, 1))
    )
    return np.ascontiguousarray(x.numpy()), start


def sklearn_fit(x, start, n_iter):
    from sklearn.mixture import GaussianMixture

    g = GaussianMixture(
        start.k,
        covariance_type="full",
        tol=0,
        max_iter=n_iter,
        reg_covar=0,
        weights_init=start.alpha.numpy(),
        means_init=start.mu.numpy(),
        precisions_init=np.linalg.inv(start.cov.numpy()),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return g.fit(x)


def ours_fit(x, start, n_iter):
    import ppl_gmm as pg

    return pg.fit_cavi(x, start.k, init=start, max_iter=n_iter, tol=0, reg_covar=0)


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def per_iteration(x, start, lo, hi, repeats):
    t_lo = {"ours": float("inf"), "sklearn": float("inf")}
    t_hi = dict(t_lo)
    fits = {}
    for _ in range(repeats):
        for name, fn in (("ours", ours_fit), ("sklearn", sklearn_fit)):
            t_lo[name] = min(t_lo[name], timed(fn, x, start, lo)[0])
            t, fits[name] = timed(fn, x, start, hi)
            t_hi[name] = min(t_hi[name], t)
    return {name: (t_hi[name] - t_lo[name]) / (hi - lo) for name in t_lo}, t_hi, fits


def check_agreement(x, ours, sk):
    rel = lambda a, b: float(np.abs(a - b).max() / np.abs(b).max())
    p = ours.params
    errs = {
        "alpha": rel(p.alpha.numpy(), sk.weights_),
        "mu": rel(p.mu.numpy(), sk.means_),
        "cov": rel(p.cov.numpy(), sk.covariances_),
        "gamma": float(np.abs(ours.gamma.numpy() - sk.predict_proba(x)).max()),
    }
    worst = max(errs.values())
    if worst > 1e-10:
        raise SystemExit(f"results disagree: {errs}")
    return worst


def child_memory(lib, path, n_iter, threads):
    """Runs in a fresh process: the peak memory one fit adds (bytes)."""
    import scipy.linalg  # noqa: F401
    import sklearn.mixture  # noqa: F401

    import ppl_gmm as pg  # imported before the baseline: the package is not the fit's memory

    if threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(threads)
        threadpool_limits(threads)

    with np.load(path) as f:
        x = f["x"].copy()
        start = pg.GMMParams(f["alpha"], f["mu"], f["cov"])
    fit = ours_fit if lib == "ours" else sklearn_fit
    fit(x[:2000], start, 2)  # warm-up: lazy initialisation of the libraries is not the fit's memory
    rss_before = _status("VmRSS")
    try:  # reset the high-water mark to the current RSS (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    fit(x, start, n_iter)
    peak = _status("VmHWM")
    print(json.dumps({"extra": peak - rss_before}))


def _status(field):
    """A memory figure of this process (bytes) from /proc/self/status.  (``ru_maxrss`` is no use
    here: Linux carries the parent's high-water mark into a forked-and-exec'd child.)"""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory(lib, x, start, n_iter, threads):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "case.npz")
        np.savez(path, x=x, alpha=start.alpha.numpy(), mu=start.mu.numpy(), cov=start.cov.numpy())
        cmd = [sys.executable, __file__, "--child-memory", lib, path, str(n_iter), str(threads or 0)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["extra"]


def blas_info():
    from threadpoolctl import threadpool_info

    return ", ".join(
        f"{i['internal_api']}{'/' + i['architecture'] if i.get('architecture') else ''} x{i['num_threads']}"
        for i in threadpool_info()
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--threads", type=int, default=0, help="torch and BLAS threads (default: library defaults)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--iters", type=int, nargs=2, default=(2, 7), metavar=("LO", "HI"))
    ap.add_argument("--unset-openblas-env", action="store_true", help="re-run without OPENBLAS_CORETYPE/L2_SIZE")
    ap.add_argument("--child-memory", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_memory:
        lib, path, n_iter, threads = args.child_memory
        child_memory(lib, path, int(n_iter), int(threads))
        return
    if args.unset_openblas_env and any(v in os.environ for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")):
        env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    import scipy.linalg  # noqa: F401  (load every BLAS before limiting threads)
    import sklearn
    import sklearn.mixture

    import ppl_gmm as pg

    if args.threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)

    lo, hi = args.iters
    print(
        f"ppl_gmm {pg.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"scikit-learn {sklearn.__version__}; BLAS: {blas_info()}"
    )
    print(
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}  "
        f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE', '(unset)')}; load average {os.getloadavg()[0]:.2f}"
    )
    header = (
        f"{'N':>9} {'D':>3} {'K':>3} | {'ours ms/it':>10} {'sklearn ms/it':>13} {'speed-up':>8} | "
        f"{'whole fit: ours s':>17} {'sklearn s':>9} {'speed-up':>8} | "
        f"{'ours +MB':>8} {'sklearn +MB':>11} {'target MB':>9} | agree"
    )
    print(header)
    print("-" * len(header))
    for n, d, k in QUICK if args.quick else CASES:
        x, start = make_case(n, d, k)
        best, whole, fits = per_iteration(x, start, lo, hi, args.repeats)
        worst = check_agreement(x, fits["ours"], fits["sklearn"])
        mem = {lib: memory(lib, x, start, hi, args.threads) for lib in ("ours", "sklearn")}
        target = 3 * (n * k + n * d) * 8
        print(
            f"{n:>9} {d:>3} {k:>3} | {1e3 * best['ours']:>10.1f} {1e3 * best['sklearn']:>13.1f} "
            f"{best['sklearn'] / best['ours']:>7.1f}x | {whole['ours']:>17.3f} {whole['sklearn']:>9.3f} "
            f"{whole['sklearn'] / whole['ours']:>7.1f}x | {mem['ours'] / 2**20:>8.1f} {mem['sklearn'] / 2**20:>11.1f} "
            f"{target / 2**20:>9.1f} | {worst:.1e}"
        )
        if mem["ours"] > target:
            print(f"   memory over target: {mem['ours'] / 2**20:.1f} MB > {target / 2**20:.1f} MB")


if __name__ == "__main__":
    main()
