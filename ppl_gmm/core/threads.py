"""How many torch threads a fit runs on.

Small fits gain nothing from threads, and on a loaded machine OpenMP's spin-waiting makes their
many tiny operations an order of magnitude slower (measured: galaxies, 2 threads vs 1; the Pyro
models' K × D × D tensors make each small Cholesky factorisation thousands of times slower).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["limited_threads", "PARALLEL_WORK"]

PARALLEL_WORK = 1 << 17  # N·K·D from which a closed-form fit keeps torch's threads


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
