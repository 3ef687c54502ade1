"""NUTS on the galaxies data (K = 3, default_prior, Z summed out): ``fit_nuts`` against NumPyro.

    python benchmarks/bench_nuts.py                 # 3 paired rounds, then 1 round under 2 busy processes
    python benchmarks/bench_nuts.py --rounds 5 --load 2 --model --chains
    python benchmarks/bench_nuts.py --quick         # 1 round of 150 warm-up + 200 draws, no load round

Method
------
* Every measurement is a fresh subprocess (one torch thread; XLA on one thread, float64), so "cold"
  includes everything a first call pays: ``fit_nuts``' MAP start, tracing the potential, warm-up,
  sampling and building the ``InferenceData`` (log-likelihood, predictive, relabelling, ESS);
  NumPyro's ``mcmc.run`` with its XLA compilation.  Imports (ours: ppl_gmm, arviz, scipy.optimize;
  NumPyro: jax, numpyro) are not timed (printed apart).
  "warm" is a second identical call in the same process (``fit_nuts`` re-traces; NumPyro reuses
  its compiled sampler).
* Rounds alternate the two samplers (ABAB…, then BABA…), so both see the same machine; the table
  gives medians over rounds and the load average (1 min) before and after.  ``--load N`` adds a
  round under N busy-looping processes the script starts and stops itself.
* Same problem for both: one chain, 500 warm-up + 1000 draws, started at the same MAP estimate
  (``fit_map`` with ``fit_nuts``' chain-0 seed), float64, diagonal mass matrix, target acceptance
  0.8, max tree depth 10.  NumPyro's model is ``bayes_gmm_model`` written in NumPyro (Dirichlet,
  Wishart, MVN sites; the marginal over z by ``logsumexp`` as a factor).
* ms per gradient (ours) = the chain's MCMC time (tracing, warm-up and sampling) / all leapfrog
  steps, warm-up included.  ESS = the smallest bulk ESS over alpha, mu, cov after relabelling.
* NumPyro is optional (``pip install numpyro``); without it the script says so and times ours alone.
  Speed is never asserted: read the medians against the spread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OURS = textwrap.dedent(
    """
    import json, os, sys, time, warnings
    t0 = time.perf_counter()
    import torch
    torch.set_num_threads(1)
    import ppl_gmm as pg
    from ppl_gmm.results import arviz_io
    import arviz, scipy.optimize  # fit_nuts imports them on first use: imports are not timed, as for NumPyro
    t_import = time.perf_counter() - t0
    x = pg.datasets.load_galaxies()
    out = {{"import_s": t_import, "load_before": os.getloadavg()[0]}}
    for name in ("cold", "warm"):
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            idata = pg.fit_nuts(x, 3, num_samples={draws}, warmup_steps={warmup}, num_chains={chains},
                                seed={seed}, backend="{backend}", chain_method="{chain_method}")
        wall = time.perf_counter() - t
        a = idata.attrs
        out[name] = {{
            "wall_s": wall,
            "mcmc_s": max(a["chain_run_times"]),
            "start_s": max(a["chain_start_times"]),
            "ms_per_grad": 1e3 * sum(a["chain_run_times"]) / a["num_leapfrog_total"],
            "leapfrog": a["num_leapfrog_total"],
            "leapfrog_sampling": int(idata.sample_stats["n_steps"].values.sum()),
            "ess_bulk_min": arviz_io.ess_bulk_min(idata),
            "divergences": a["num_divergences"],
        }}
    out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out))
    """
)

NUMPYRO = textwrap.dedent(
    """
    import json, os, sys, time
    os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    t0 = time.perf_counter()
    import jax, jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    import numpyro, numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS, init_to_value
    from jax.scipy.special import logsumexp
    t_import = time.perf_counter() - t0
    import numpy as np, torch
    torch.set_num_threads(1)
    import ppl_gmm as pg
    from ppl_gmm.core.linalg import inverse_from_cholesky
    from ppl_gmm.core.priors import default_prior
    from ppl_gmm.core.rng import spawn_seeds

    x = np.asarray(pg.datasets.load_galaxies(), dtype=np.float64).reshape(-1, 1)
    K = 3
    prior = default_prior(x, K)
    chain_seed = spawn_seeds(spawn_seeds({seed}, 2)[0], 1)[0]  # fit_nuts' chain-0 seed and MAP start
    p = pg.fit_map(x, K, prior, seed=chain_seed, max_iter=200).params
    alpha = p.alpha.clamp_min(1e-8)
    init = {{"alpha": jnp.asarray((alpha / alpha.sum()).numpy()), "mu": jnp.asarray(p.mu.numpy()),
             "Lambda": jnp.asarray(inverse_from_cholesky(p.scale_tril).numpy())}}
    w0_tril = jnp.linalg.cholesky(jnp.asarray(prior.W0.numpy()))
    m0 = jnp.asarray(prior.m0.numpy())

    def model(x):
        alpha = numpyro.sample("alpha", dist.Dirichlet(jnp.full(K, prior.alpha0)))
        with numpyro.plate("components", K):
            lam = numpyro.sample("Lambda", dist.Wishart(prior.nu0, scale_tril=w0_tril))
            mu = numpyro.sample("mu", dist.MultivariateNormal(m0, precision_matrix=prior.beta0 * lam))
        lp = dist.MultivariateNormal(mu, precision_matrix=lam).log_prob(x[:, None, :])
        numpyro.factor("x", logsumexp(jnp.log(alpha) + lp, -1).sum())

    out = {{"import_s": t_import, "load_before": os.getloadavg()[0]}}
    mcmc = MCMC(NUTS(model, init_strategy=init_to_value(values=init)), num_warmup={warmup},
                num_samples={draws}, progress_bar=False)
    for name, key in (("cold", 0), ("warm", 1)):
        t = time.perf_counter()
        mcmc.run(jax.random.PRNGKey(key), x, extra_fields=("num_steps", "diverging"))
        jax.block_until_ready(mcmc.get_samples())
        wall = time.perf_counter() - t
        extra = mcmc.get_extra_fields()
        out[name] = {{"wall_s": wall, "leapfrog_sampling": int(extra["num_steps"].sum()),
                      "divergences": int(extra["diverging"].sum())}}
    out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out))
    """
)


POTENTIAL = {"backend": "potential", "chain_method": "sequential"}


def _have_numpyro() -> bool:
    code = "import numpyro, jax"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, check=False).returncode == 0


def _measure(template: str, **fields) -> dict:
    code = template.format(**fields)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _busy(n: int) -> list:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _rounds(n_rounds, numpyro, draws, warmup, seed):
    results: dict[str, list] = {"ours": [], "numpyro": []}
    for r in range(n_rounds):
        order = ["ours", "numpyro"] if r % 2 == 0 else ["numpyro", "ours"]
        for name in order:
            if name == "numpyro" and not numpyro:
                continue
            if name == "ours":
                res = _measure(
                    OURS,
                    draws=draws,
                    warmup=warmup,
                    chains=1,
                    seed=seed,
                    backend="potential",
                    chain_method="sequential",
                )
            else:
                res = _measure(NUMPYRO, draws=draws, warmup=warmup, seed=seed)
            results[name].append(res)
            print(
                f"  round {r + 1} {name:>8}: cold {res['cold']['wall_s']:6.2f} s, warm {res['warm']['wall_s']:6.2f} s",
                flush=True,
            )
    return results


def _med(rows, *path):
    vals = []
    for row in rows:
        v = row
        for p in path:
            v = v[p]
        vals.append(v)
    return statistics.median(vals), min(vals), max(vals)


def _report(title, results):
    print(title)
    ours, npy = results["ours"], results["numpyro"]
    loads = [r["load_before"] for r in ours + npy] + [r["load_after"] for r in ours + npy]
    print(f"  load average (1 min) over the runs: {min(loads):.2f}–{max(loads):.2f}")
    head = f"  {'':<28} {'median':>8} {'min':>8} {'max':>8}"
    print(head)
    rows = [
        ("fit_nuts cold, whole call s", ours, ("cold", "wall_s")),
        ("  of which MCMC s", ours, ("cold", "mcmc_s")),
        ("fit_nuts warm s", ours, ("warm", "wall_s")),
        ("ms per gradient (cold)", ours, ("cold", "ms_per_grad")),
        ("ms per gradient (warm)", ours, ("warm", "ms_per_grad")),
        ("leapfrog steps (cold)", ours, ("cold", "leapfrog")),
        ("  of which sampling", ours, ("cold", "leapfrog_sampling")),
        ("min bulk ESS (cold)", ours, ("cold", "ess_bulk_min")),
        ("import ppl_gmm s", ours, ("import_s",)),
    ]
    if npy:
        rows += [
            ("NumPyro cold s", npy, ("cold", "wall_s")),
            ("NumPyro warm s", npy, ("warm", "wall_s")),
            ("NumPyro sampling steps", npy, ("cold", "leapfrog_sampling")),
            ("import jax+numpyro s", npy, ("import_s",)),
        ]
    for label, rs, path in rows:
        m, lo, hi = _med(rs, *path)
        print(f"  {label:<28} {m:>8.2f} {lo:>8.2f} {hi:>8.2f}")
    if npy:
        ratio = [o["cold"]["wall_s"] / n["cold"]["wall_s"] for o, n in zip(ours, npy)]
        print(f"  fit_nuts cold / NumPyro cold, paired per round: median {statistics.median(ratio):.2f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="paired rounds without extra load (default 3)")
    ap.add_argument("--load", type=int, default=2, help="busy processes in the loaded round (0: no such round)")
    ap.add_argument("--model", action="store_true", help="also time backend='model' (Pyro's effect handlers) once")
    ap.add_argument("--chains", action="store_true", help="also time 2 chains, parallel against sequential (paired)")
    ap.add_argument("--quick", action="store_true", help="1 round of 150 warm-up + 200 draws, no loaded round")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    draws, warmup = (200, 150) if args.quick else (1000, 500)
    rounds, load = (1, 0) if args.quick else (args.rounds, args.load)
    numpyro = _have_numpyro()
    t0 = time.perf_counter()
    print(
        f"NUTS on galaxies (N = 82, K = 3, default_prior), Z summed out; 1 chain, {warmup} warm-up + {draws} draws; "
        f"{os.cpu_count()} cores; load average now {os.getloadavg()[0]:.2f}"
    )
    if not numpyro:
        print("NumPyro is not installed (pip install numpyro): timing fit_nuts alone")
    _report(f"{rounds} paired rounds:", _rounds(rounds, numpyro, draws, warmup, args.seed))
    if load:
        procs = _busy(load)
        try:
            time.sleep(5)  # let the load average see them
            _report(f"1 round under {load} busy processes:", _rounds(1, numpyro, draws, warmup, args.seed))
        finally:
            for p in procs:
                p.kill()
    if args.model:
        res = _measure(
            OURS, draws=draws, warmup=warmup, chains=1, seed=args.seed, backend="model", chain_method="sequential"
        )
        c = res["cold"]
        print(
            f"backend='model' (Pyro's effect handlers, JIT): cold {c['wall_s']:.1f} s, {c['ms_per_grad']:.2f} ms per "
            f"gradient, {c['leapfrog']} steps, min bulk ESS {c['ess_bulk_min']:.0f} (load {res['load_before']:.2f})"
        )
    if args.chains:
        times: dict[str, list] = {"sequential": [], "parallel": []}
        for r in range(rounds):
            order = ["sequential", "parallel"] if r % 2 == 0 else ["parallel", "sequential"]
            for method in order:
                res = _measure(
                    OURS, draws=draws, warmup=warmup, chains=2, seed=args.seed, backend="potential", chain_method=method
                )
                times[method].append((res["cold"]["wall_s"], res["warm"]["wall_s"], res["load_before"]))
        for method, rows in times.items():
            cold, warm, loads = zip(*rows)
            print(
                f"2 chains {method:>10}: whole call cold median {statistics.median(cold):.1f} s "
                f"({min(cold):.1f}–{max(cold):.1f}), warm {statistics.median(warm):.1f} s; "
                f"load {min(loads):.2f}–{max(loads):.2f}"
            )
    print(f"(total {time.perf_counter() - t0:.0f} s; load average at the end {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
