"""The one SVI loop of ``fit_svi`` and ``fit_svi_bayes``, and the Pyro session they run in.

A fit supplies one function, ``step(t)``, that takes SVI step t and reports what to check, what
to trace and what to remember (:class:`StepOut`). :func:`run_svi` supplies the rest, once: the
loop, the divergence check (a NaN/inf loss or objective raises ``DivergenceError`` naming the
step, with the last finite state attached), the trace and its times, the convergence window
(|Δ objective| / N < ``tol`` over the last ``window`` changes: Adam's steps are not monotone) and
the progress bar.

:func:`pyro_session` isolates a fit from the caller's Pyro state: a private parameter store, the
caller's torch / numpy / ``random`` generator states restored afterwards, every draw seeded from
``seed``, and Pyro's validation off (non-finite values are reported as divergence instead).

Threads: Pyro keeps its parameter store, effect-handler stack (``pyro.poutine.runtime._PYRO_STACK``),
enumeration-dimension allocators and validation flags in module globals, and its draws come from
torch's global generator; none of these can be made per-thread without patching Pyro. So
:func:`pyro_session` holds ``core.rng.GLOBAL_STATE_LOCK`` (reentrant) for the whole fit: Pyro fits
called from several threads run one at a time and give the bits they give when called in sequence.
While one runs, code in other threads must not draw from torch's global generator (the fit
restores that generator when it ends).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyro
import torch

from ..core.errors import DivergenceError
from ..core.rng import GLOBAL_STATE_LOCK, preserved_global_rng, seed_global_rng
from ..core.threads import limited_threads

__all__ = ["StepOut", "SVIRun", "run_svi", "pyro_session"]


@dataclass
class StepOut:
    """What one SVI step reports to :func:`run_svi`.

    check   numbers that must be finite (the loss, and the objectives when recorded)
    record  the trace entry of this step (its first element the objective), or None
    state   what ``DivergenceError.last_finite`` carries if a later step diverges
    """

    check: Sequence[float | torch.Tensor]
    record: tuple | None = None
    state: Any = None


@dataclass
class SVIRun:
    """The trace of :func:`run_svi`: one record per recorded step, its time and its step index."""

    records: list = field(default_factory=list)
    times: list = field(default_factory=list)
    steps: list = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False
    last_finite: Any = None


def run_svi(
    step: Callable[[int], StepOut],
    *,
    num_steps: int,
    n: int,
    initial_state: Any = None,
    tol: float = 0.0,
    window: int = 10,
    progress: bool = False,
    desc: str = "SVI",
    catch: tuple = (),
    advice: str = "",
    describe_state: Callable[[Any], Any] = lambda s: s,
) -> SVIRun:
    """Run ``step(0)``, ``step(1)``, … (module docstring). Exceptions of the types in ``catch``
    raised by a step (a parameter left its domain) are reported as divergence too.
    ``describe_state`` turns a step's ``state`` into what ``DivergenceError.last_finite`` carries."""
    start = time.perf_counter()
    run = SVIRun(last_finite=initial_state)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        # with tol > 0 the run can stop early: num_steps is only a bound, so no ETA toward it
        fmt = "{desc}: {n_fmt} steps (at most {total_fmt}) [{elapsed}, {rate_fmt}{postfix}]" if tol > 0 else None
        bar = tqdm(total=num_steps, desc=desc, unit="step", leave=False, bar_format=fmt)
    try:
        for t in range(num_steps):
            run.n_iter = t + 1
            detail = "non-finite objective"
            try:
                out = step(t)
            except catch as err:
                out, detail = None, f"{type(err).__name__}: {err}"[:300]
            if out is None or not all(math.isfinite(float(v)) for v in out.check):
                raise DivergenceError(
                    t + 1,
                    describe_state(run.last_finite),
                    f"SVI diverged at step {t + 1} ({detail}); the last finite state is attached as `.last_finite`. "
                    + advice,
                )
            run.last_finite = out.state
            if out.record is not None:
                run.records.append(out.record)
                run.times.append(time.perf_counter() - start)
                run.steps.append(t)
            if bar is not None:
                bar.update(1)
                if out.record is not None:
                    shown = {"elbo": f"{float(out.record[0]):.8g}"}
                    if len(run.records) > 1:  # the change the stopping rule measures
                        shown["|Δ|/N"] = f"{abs(float(out.record[0]) - float(run.records[-2][0])) / n:.2e}"
                    bar.set_postfix(shown, refresh=False)
            if tol > 0 and out.record is not None and len(run.records) > window:
                recent = [float(r[0]) for r in run.records[-window - 1 :]]
                if max(abs(b - a) for a, b in zip(recent, recent[1:])) / n < tol:
                    run.converged = True
                    break
    finally:
        if bar is not None:
            bar.close()
    return run


@contextlib.contextmanager
def pyro_session(seed: int) -> Iterator[None]:
    """A private Pyro parameter store, seeded global generators (restored on exit) and Pyro's
    validation off, for the duration of one fit.

    The whole block runs under ``core.rng.GLOBAL_STATE_LOCK`` (module docstring): Pyro's state is
    process-global, so concurrent Pyro fits are serialised. The block runs on one torch thread
    (``core.threads.limited_threads``: the Pyro models' K × D × D tensors gain nothing from threads,
    and OpenMP's spin-waiting makes them 30× slower on a busy machine); the caller's count is
    restored on exit. Everything else a fit changes globally (torch's default dtype, warning
    filters) belongs inside the block too.
    ``seed`` may be any non-negative integer (``core.rng.seed_global_rng``)."""
    with (
        GLOBAL_STATE_LOCK,
        preserved_global_rng(),
        pyro.get_param_store().scope(),
        pyro.validation_enabled(False),
        warnings.catch_warnings(),
        limited_threads(),  # tiny tensors: one torch thread (issue 10, item 5), restored on exit
    ):
        warnings.filterwarnings("ignore", message="Encountered NaN")  # reported as DivergenceError
        seed_global_rng(seed)  # pyro.set_rng_seed's three calls, for seeds of any size
        yield
