"""Argument checks that need nothing of the package (so every core module, ``params`` included,
can use them); ``core.validation`` re-exports them beside the checks of data and Θ."""

from __future__ import annotations

import numbers

__all__ = ["check_int"]


def check_int(value: int, name: str, minimum: int = 0) -> int:
    """An integer >= ``minimum`` (a Python or numpy integer; bools and floats such as 2.0 are
    refused): a TypeError or ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)
