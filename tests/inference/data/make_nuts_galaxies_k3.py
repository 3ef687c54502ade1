"""Regenerates ``nuts_galaxies_k3.json``: the posterior summary (mean, sd, MCSE of the mean per
scalar of alpha, mu, cov) of a NUTS run on galaxies, K = 3, ``default_prior``, against which
``tests/inference/test_gibbs.py`` checks ``fit_gibbs`` (running NUTS in the test would take about
a minute).  Run from the repository root::

    python tests/inference/data/make_nuts_galaxies_k3.py
"""

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import ppl_gmm as pg
from ppl_gmm.results import arviz_io

CONFIG = {"k": 3, "num_samples": 1000, "warmup_steps": 500, "num_chains": 4, "seed": 20261201}


def main() -> None:
    x = pg.datasets.load_galaxies()
    start = time.perf_counter()
    idata = pg.fit_nuts(
        x,
        CONFIG["k"],
        pg.default_prior(x, CONFIG["k"]),
        num_samples=CONFIG["num_samples"],
        warmup_steps=CONFIG["warmup_steps"],
        num_chains=CONFIG["num_chains"],
        seed=CONFIG["seed"],
    )
    summ = arviz_io.summary(idata, var_names=["alpha", "mu", "cov"], round_to="none")
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    out = {
        "what": "fit_nuts(galaxies, 3, default_prior(galaxies, 3), **config): az.summary of the relabelled draws",
        "config": CONFIG,
        "revision": rev.stdout.strip(),
        "seconds": round(time.perf_counter() - start, 1),
        "num_divergences": int(idata.attrs["num_divergences"]),
        "r_hat_max": float(idata.attrs["r_hat_max"]),
        "ess_bulk_min": float(idata.attrs["ess_bulk_min"]),
        "label_switch_fraction": float(idata.attrs["label_switch_fraction"]),
        "summary": {
            name: {col: float(summ.loc[name, col]) for col in ("mean", "sd", "mcse_mean", "ess_bulk", "r_hat")}
            for name in summ.index
        },
    }
    path = Path(__file__).with_name("nuts_galaxies_k3.json")
    path.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path} ({out['seconds']} s, R-hat {out['r_hat_max']:.3f}, min ESS {out['ess_bulk_min']:.0f})")


if __name__ == "__main__":
    main()
