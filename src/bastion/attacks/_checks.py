"""Validation of attack settings, shared by the attack constructors.

Every check raises :class:`ConfigError` naming ``<attack>.<field>``, what was expected and what
was given, e.g. ``cw.steps: expected an integer >= 1, got 0``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real

from bastion.errors import ConfigError


def int_at_least(attack: str, field: str, value: object, low: int) -> int:
    """``value`` as an int, which must be an integer (not a bool) ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or int(value) < low:
        raise ConfigError(f"{attack}.{field}: expected an integer >= {low}, got {value!r}")
    return int(value)


def _real(attack: str, field: str, value: object, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ConfigError(f"{attack}.{field}: expected {expected}, got {value!r}")
    return float(value)


def positive(attack: str, field: str, value: object) -> float:
    """A finite number ``> 0``."""
    v = _real(attack, field, value, "a finite number > 0")
    if not v > 0:
        raise ConfigError(f"{attack}.{field}: expected a finite number > 0, got {value!r}")
    return v


def non_negative(attack: str, field: str, value: object) -> float:
    """A finite number ``>= 0``."""
    v = _real(attack, field, value, "a finite number >= 0")
    if v < 0:
        raise ConfigError(f"{attack}.{field}: expected a finite number >= 0, got {value!r}")
    return v


def in_range(
    attack: str, field: str, value: object, lo: float, hi: float, *, lo_open: bool, hi_open: bool
) -> float:
    """A number in the interval from ``lo`` to ``hi`` (each end open or closed as given)."""
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    v = _real(attack, field, value, f"a number in {interval}")
    below = v <= lo if lo_open else v < lo
    above = v >= hi if hi_open else v > hi
    if below or above:
        raise ConfigError(f"{attack}.{field}: expected a number in {interval}, got {value!r}")
    return v


def flag(attack: str, field: str, value: object) -> bool:
    """A bool (not a truthy string or number)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{attack}.{field}: expected true or false, got {value!r}")
    return value


def choice(attack: str, field: str, value: object, options: Sequence[str]) -> str:
    """One of ``options``."""
    if not isinstance(value, str) or value not in options:
        raise ConfigError(f"{attack}.{field}: expected one of {', '.join(options)}, got {value!r}")
    return value
