"""Shipped real data and draws from the generative process.

- Old Faithful (272 × 2: eruption length and waiting time, minutes); Azzalini &
  Bowman (1990), *Applied Statistics* 39:357-365; R's ``datasets::faithful``.
- Galaxies (82 velocities, returned in 1000 km/s); Roeder (1990), *JASA*
  85:617-624; R's ``MASS::galaxies``.

Provenance: ``data/PROVENANCE.md`` beside this file.
"""

from __future__ import annotations

import csv
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from ..core.params import GMMParams

__all__ = ["load_old_faithful", "load_galaxies", "make_mixture", "read_csv"]


def _read(name: str) -> tuple[list[str], np.ndarray]:
    with resources.files(__package__).joinpath("data", name).open("r", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return rows[0], np.array([[float(v) for v in r] for r in rows[1:]], dtype=np.float64)


def read_csv(name: str) -> tuple[list[str], np.ndarray]:
    """Column names and values of a shipped CSV."""
    return _read(name)


def load_old_faithful() -> np.ndarray:
    """(272, 2) float64: eruption length (min), waiting time to the next eruption (min)."""
    return _read("old_faithful.csv")[1]


def load_galaxies() -> np.ndarray:
    """(82,) float64: galaxy velocities in 1000 km/s (the usual scaling)."""
    return _read("galaxies.csv")[1][:, 0] / 1000.0


def make_mixture(n: int, params: GMMParams, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw (x, z) from the generative process α → Z → X (eq. 15): ``params.sample(n, seed)``.

    z_i ~ Categorical(α), x_i | z_i = k ~ N(μ_k, Σ_k).  Returns x (n, D) float
    tensor (dtype of ``params``) and z (n,) LongTensor.  All randomness flows
    from ``seed`` (any non-negative integer, or None) through a ``torch.Generator``.
    """
    from ..core.params import GMMParams

    if not isinstance(params, GMMParams):
        raise TypeError("params must be a GMMParams")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return params.sample(int(n), seed)
