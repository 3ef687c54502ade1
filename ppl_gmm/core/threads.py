"""How many torch threads a fit runs on.

Small fits gain nothing from threads, and on a loaded machine OpenMP's spin-waiting makes their
many tiny operations an order of magnitude slower (measured: galaxies, 2 threads vs 1; the Pyro
models' K × D × D tensors make each small Cholesky factorisation thousands of times slower).

Large work does not use torch's intra-op threads either: ``fit_cavi``'s passes run whole row blocks
on the package's own worker threads, each on one torch thread (``inference._passes``), while the
fit itself holds :func:`limited_threads`; measured at N = 2e6, D = 2, K = 5, 10 iterations with two
competing busy processes: 137–197 s with torch's OpenMP threads (0.3.0), 3–17 s with the pool.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["limited_threads", "PARALLEL_WORK"]

PARALLEL_WORK = 1 << 17  # N·K·D from which a closed-form fit uses several threads (fit_cavi: its pool)


@contextmanager
def limited_threads(work: int | None = None) -> Iterator[None]:
    """Run the block on one torch thread, restoring the previous count afterwards.

    ``work`` (N·K·D of a fit): at or above ``PARALLEL_WORK`` the thread count is left alone.
    ``None`` (the samplers and SVI, whose tensors are always tiny): always one thread."""
    if work is not None and work >= PARALLEL_WORK:
        yield
        return
    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
