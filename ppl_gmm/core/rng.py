"""Seeds: every random choice of a fit flows from one integer ``seed``.

- :func:`resolve_seed` turns the user's ``seed`` into an integer (``None`` draws one from OS
  entropy; the fit records it).
- :func:`spawn_seeds` derives independent child seeds (``numpy.random.SeedSequence.spawn``) for
  restarts, chains and sub-tasks.
- :func:`torch_generator` is a ``torch.Generator`` of its own seeded with a seed (torch draws that
  never touch the global generator).
- :func:`preserved_global_rng` gives the caller back torch's, numpy's and Python's global
  generator states after a block that seeds them (Pyro's ``set_rng_seed`` seeds all three).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["resolve_seed", "spawn_seeds", "torch_generator", "preserved_global_rng"]


def resolve_seed(seed: int | None) -> int:
    """An explicit non-negative integer seed; ``None`` draws one from OS entropy."""
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1, dtype=np.uint32)[0])
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    return int(seed)


def spawn_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent child seeds, a deterministic function of ``seed``."""
    return [int(s.generate_state(1, dtype=np.uint32)[0]) for s in np.random.SeedSequence(seed).spawn(n)]


def torch_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (pass it as ``generator=`` to every draw)."""
    return torch.Generator().manual_seed(int(seed))


@contextlib.contextmanager
def preserved_global_rng() -> Iterator[None]:
    """Run a block that seeds the global generators and restore their previous states after it."""
    torch_state = torch.random.get_rng_state()
    np_state = np.random.get_state()  # noqa: NPY002  (the legacy global generator is the state to keep)
    py_state = random.getstate()
    try:
        yield
    finally:
        torch.random.set_rng_state(torch_state)
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)
