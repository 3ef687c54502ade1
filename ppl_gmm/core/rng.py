"""Seeds: every random choice of a fit flows from one integer ``seed``.

The seed rule (every public function with a ``seed``): any non-negative integer — a Python
``int`` of any size or a numpy integer — or ``None``; bools, negatives, floats and strings are
refused by :func:`resolve_seed`, with one message (:data:`SEED_RULE`).

- :func:`resolve_seed` turns the user's ``seed`` into an integer (``None`` draws one from OS
  entropy; the fit records it).
- :func:`generator_seed` is the one place where a seed meets a generator that takes fewer bits
  (``torch.manual_seed``: 64, ``numpy.random.seed``: 32). A seed that fits is passed unchanged (so
  small seeds give exactly the draws they always gave); a larger one is hashed to the generator's
  width by ``numpy.random.SeedSequence``, deterministically, and distinct seeds give distinct
  streams (up to a 2^-bits chance of collision).
- :func:`spawn_seeds` derives independent child seeds (``numpy.random.SeedSequence.spawn``) for
  restarts, chains and sub-tasks.
- :func:`torch_generator` is a ``torch.Generator`` of its own seeded with a seed (torch draws that
  never touch the global generator).
- :func:`preserved_global_rng` gives the caller back torch's, numpy's and Python's global
  generator states after a block that seeds them (:func:`seed_global_rng`, Pyro's
  ``set_rng_seed`` for any seed size). It holds :data:`GLOBAL_STATE_LOCK` for the whole block.

Threads: the global generators, Pyro's parameter store and effect-handler stack, torch's default
dtype and thread count are process-global. :data:`GLOBAL_STATE_LOCK` (reentrant) serialises every
block of the package that seeds or restores them (the Pyro fits hold it from start to end), so
fits called from several threads give the bits they give when called one after another. The
closed-form fits draw only from their own ``numpy.random.Generator`` and do not take it.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Iterator

import numpy as np
import torch

__all__ = [
    "SEED_RULE",
    "GLOBAL_STATE_LOCK",
    "resolve_seed",
    "generator_seed",
    "seed_global_rng",
    "spawn_seeds",
    "torch_generator",
    "preserved_global_rng",
]

SEED_RULE = "seed must be a non-negative integer (any size) or None"

GLOBAL_STATE_LOCK = threading.RLock()
"""Held while a block reads or writes process-global state (module docstring): the Pyro fits
(``inference.svi_driver.pyro_session``, ``inference.nuts``) hold it from start to end."""


def resolve_seed(seed: int | None) -> int:
    """An explicit non-negative integer seed; ``None`` draws one from OS entropy.

    Raises ``ValueError`` (message :data:`SEED_RULE`) for bools, negatives, floats, strings and
    anything else that is not an integer."""
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1, dtype=np.uint32)[0])
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{SEED_RULE}, got {seed!r}")
    return int(seed)


def generator_seed(seed: int, bits: int) -> int:
    """The seed to hand to a generator that takes seeds in [0, 2^bits) (``bits`` 32 or 64).

    ``seed < 2**bits`` is returned unchanged; a larger seed is mapped to
    ``SeedSequence(seed).generate_state(1, uint{bits})``: deterministic, and different for
    different seeds except with probability 2^-bits."""
    if bits not in (32, 64):
        raise ValueError(f"bits must be 32 or 64, got {bits!r}")
    seed = resolve_seed(seed)
    if seed < 1 << bits:
        return seed
    dtype = np.uint32 if bits == 32 else np.uint64
    return int(np.random.SeedSequence(seed).generate_state(1, dtype=dtype)[0])


def seed_global_rng(seed: int) -> None:
    """Seed torch's, Python's and numpy's global generators from ``seed``, as
    ``pyro.set_rng_seed`` does (same calls, same order: the same draws for seeds < 2^32), for a seed
    of any size (:func:`generator_seed`). Call it inside :func:`preserved_global_rng`."""
    torch.manual_seed(generator_seed(seed, 64))  # also seeds CUDA's generators, as Pyro's call does
    random.seed(resolve_seed(seed))  # Python's generator takes any integer, bit for bit
    np.random.seed(generator_seed(seed, 32))  # noqa: NPY002  (the legacy global generator Pyro seeds)


def spawn_seeds(seed: int, n: int) -> list[int]:
    """``n`` independent child seeds, a deterministic function of ``seed``."""
    return [int(s.generate_state(1, dtype=np.uint32)[0]) for s in np.random.SeedSequence(seed).spawn(n)]


def torch_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (pass it as ``generator=`` to every draw)."""
    return torch.Generator().manual_seed(generator_seed(seed, 64))  # any seed size (``generator_seed``)


@contextlib.contextmanager
def preserved_global_rng() -> Iterator[None]:
    """Run a block that seeds the global generators and restore their previous states after it.

    The block runs under :data:`GLOBAL_STATE_LOCK` (reentrant), so the save, the block's draws and
    the restore are not interleaved with another thread's."""
    with GLOBAL_STATE_LOCK:
        torch_state = torch.random.get_rng_state()
        np_state = np.random.get_state()  # noqa: NPY002  (the legacy global generator is the state to keep)
        py_state = random.getstate()
        try:
            yield
        finally:
            torch.random.set_rng_state(torch_state)
            np.random.set_state(np_state)  # noqa: NPY002
            random.setstate(py_state)
