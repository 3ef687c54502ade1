"""The main job: SVI vs closed-form CAVI on the shipped Old Faithful data (``ppl-gmm demo``).

Both start from the same Θ₀ (same ``init`` and ``seed``) and γ₀ = e_step(x, Θ₀) (eq. 20).
CAVI iterates eq. 20 and eq. 21/28 in closed form; SVI takes gradient steps on Pyro's
``TraceEnum_ELBO`` loss, which is exactly −eq. 18, either moving γ by Adam like Θ (plain
SVI) or setting γ to its closed-form optimum before each step on Θ (natural-gradient local
step, Hoffman et al. 2013).  All reach the same optimum; the table shows how closely
(ELBO, relative difference, aligned parameters) and at what cost (steps, seconds).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..results.text import format_comparison

if TYPE_CHECKING:
    from typing import TextIO

    from ..core.validation import ArrayLike
    from ..results.gmm_fit import GMMFit

__all__ = ["Comparison", "compare_svi_cavi", "format_comparison", "run_demo"]


@dataclass(frozen=True)
class Comparison:
    """Fits of one data set, the first being the closed-form reference.

    fits     dict label → GMMFit (insertion order; the first is the reference)
    seconds  dict label → wall-clock seconds of the fit call
    data     a name for the data set
    """

    fits: dict
    seconds: dict
    data: str

    @property
    def reference(self) -> GMMFit:
        return next(iter(self.fits.values()))

    def rows(self) -> list[dict]:
        """One dict per fit: ELBO, relative ELBO difference to the reference, and the largest
        absolute differences of the aligned parameters (components matched by ``align``)."""
        from ..results.matching import align

        ref = self.reference
        ref_elbo = float(ref.elbo[-1])
        out = []
        for label, fit in self.fits.items():
            p = fit.params.permute(align(ref, fit))
            out.append(
                {
                    "method": label,
                    "elbo": float(fit.elbo[-1]),
                    "log_likelihood": float(fit.log_likelihood[-1]),
                    "rel_diff": abs(float(fit.elbo[-1]) - ref_elbo) / abs(ref_elbo),
                    "d_alpha": float((p.alpha - ref.params.alpha).abs().max()),
                    "d_mu": float((p.mu - ref.params.mu).abs().max()),
                    "d_cov": float((p.cov - ref.params.cov).abs().max()),
                    "n_iter": int(fit.n_iter),
                    "converged": bool(fit.converged),
                    "seconds": float(self.seconds[label]),
                }
            )
        return out


def compare_svi_cavi(
    x: ArrayLike | None = None,
    k: int = 2,
    *,
    seed: int | None = 0,
    num_steps: int = 3000,
    natural_steps: int = 200,
    jit: bool = False,
    progress: bool = False,
    data: str = "Old Faithful",
) -> Comparison:
    """Fit ``x`` (default: Old Faithful) by CAVI, plain SVI and SVI with natural-gradient local
    steps, all from the same ``seed`` (hence the same Θ₀).  ``natural_steps=0`` skips the latter."""
    from ..core.threads import limited_threads
    from ..datasets import load_old_faithful
    from ..inference.cavi import fit_cavi
    from ..inference.svi import fit_svi

    x = load_old_faithful() if x is None else x
    runs = {
        "CAVI (closed form)": lambda: fit_cavi(x, k, seed=seed, tol=1e-10, max_iter=1000, progress=progress),
        "SVI (Adam on Θ and γ)": lambda: fit_svi(x, k, seed=seed, num_steps=num_steps, jit=jit, progress=progress),
    }
    if natural_steps:
        runs["SVI (natural-gradient γ)"] = lambda: fit_svi(
            x, k, seed=seed, num_steps=natural_steps, local_updates="natural", jit=jit, progress=progress
        )
    fits, seconds = {}, {}
    with limited_threads():  # tiny data: one thread is fastest and not slowed by a busy core
        for label, run in runs.items():
            start = time.perf_counter()
            fits[label] = run()
            seconds[label] = time.perf_counter() - start
    return Comparison(fits, seconds, data)


def run_demo(
    *,
    seed: int | None = 0,
    num_steps: int = 3000,
    natural_steps: int = 200,
    progress: bool = True,
    stream: TextIO | None = None,
) -> Comparison:
    """Run the comparison on Old Faithful (K = 2) and print the table and CAVI's fit."""
    import sys

    stream = sys.stdout if stream is None else stream
    cmp = compare_svi_cavi(seed=seed, num_steps=num_steps, natural_steps=natural_steps, progress=progress)
    print(format_comparison(cmp), file=stream)
    print("\nCAVI's fit (the reference):", file=stream)
    from ..datasets import read_csv
    from ..results.text import format_fit

    print(format_fit(cmp.reference, read_csv("old_faithful.csv")[0]), file=stream)
    return cmp
