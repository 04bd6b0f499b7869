"""Number and label formatting shared by the HTML and Markdown renderers.

Every function returns plain text (never markup); callers escape it for their output format.
Missing or non-finite values render as an em dash.
"""

from __future__ import annotations

import math

MISSING = "\u2014"  # em dash

_NORM_LABELS = {"linf": "L\u221e", "l2": "L2", "l1": "L1", "l0": "L0"}


def finite(value: object) -> float | None:
    """``value`` as a float when it is a finite number (not a bool), else None: for reading
    numbers out of a scorecard channel that may be malformed."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def percent(fraction: float | None) -> str:
    """A fraction in [0, 1] as a percentage with one decimal: ``0.9712 -> "97.1%"``."""
    if fraction is None or not math.isfinite(fraction):
        return MISSING
    return f"{100.0 * fraction:.1f}%"


def seconds(value: float | None) -> str:
    """A duration: ``12.5 -> "12.5 s"``, ``95 -> "1 min 35 s"``, ``3725 -> "1 h 02 min"``."""
    if value is None or not math.isfinite(value):
        return MISSING
    if value < 60.0:
        return f"{value:.1f} s"
    total = round(value)
    if total < 3600:
        minutes, secs = divmod(total, 60)
        return f"{minutes} min {secs:02d} s"
    hours, rest = divmod(total, 3600)
    return f"{hours} h {rest // 60:02d} min"


def count(value: object) -> str:
    """An integer count with thousands separators (``1150 -> "1,150"``); other values as text."""
    if value is None:
        return MISSING
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, float) and value.is_integer():
        return f"{int(value):,}"
    return str(value)


def number(value: float | None) -> str:
    """A plain number in its shortest general form (``0.2 -> "0.2"``, ``19.0 -> "19"``)."""
    if value is None or not math.isfinite(value):
        return MISSING
    return format(value, "g")


def norm_label(norm: str | None) -> str:
    """Human name of a norm: ``"linf" -> "L∞"``; unknown norms are returned unchanged."""
    if norm is None:
        return MISSING
    return _NORM_LABELS.get(norm.lower(), norm)


def key_label(key: str) -> str:
    """A field name as a label: ``"total_seconds" -> "total"``, ``"n_train" -> "n train"``."""
    label = key.removesuffix("_seconds")
    return label.replace("_", " ")


def shape(value: object) -> str:
    """An input shape such as ``[1, 8, 8]`` joined by multiplication signs."""
    if isinstance(value, list | tuple) and value:
        return " \u00d7 ".join(str(v) for v in value)
    return MISSING if value is None else str(value)
