"""Side-by-side comparison of two recorded runs: config, data, code and every metric.

Every number of the scorecard's ``models`` section (and of ``guard``, ``tabular`` and ``text``
when present) is compared; a metric that got worse is marked ``REGRESSED``. Whether higher or
lower is better is read from the metric's name (:func:`metric_direction`): accuracies and shares
of attacks stopped should rise; calibration errors (ECE, MCE, NLL, Brier), mCE and losses should
fall. Wall-clock figures (seconds, milliseconds, throughput) are shown but never marked: they
depend on the machine and on what else ran on it. Per-epoch histories and reliability bins are
left out (they are curves, not metrics).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bastion.registry.store import RunInfo

__all__ = [
    "DiffRow",
    "RunDiff",
    "diff_runs",
    "flatten",
    "metric_direction",
    "render_diff",
    "scorecard_metrics",
]

Direction = Literal["higher", "lower"] | None

_SKIP = {"history", "bins", "sanity_checks", "escalation", "sanity_warnings", "headline"}
_HIGHER = ("accuracy", "stopped", "auc", "certified", "coverage", "precision", "recall", "f1")
_LOWER = ("ece", "mce", "nll", "brier", "loss", "error", "success_rate", "fnr")
_TIMING = ("seconds", "_ms", "per_second", "warmup")


def metric_direction(path: str) -> Direction:
    """``"higher"`` or ``"lower"`` is better for the metric at ``path``; ``None`` when the name
    does not say, or for wall-clock figures."""
    parts = [p for p in path.split(".") if not _is_number(p)]
    name = parts[-1].lower() if parts else ""
    if any(t in name for t in _TIMING) or "latency" in parts or "timings" in parts:
        return None
    if name == "mce" or any(name == w or name.endswith("_" + w) for w in _LOWER):
        return "lower"
    if any(w in name for w in _HIGHER):
        return "higher"
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def flatten(doc: Any, prefix: str = "", *, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The leaves of a JSON-like document by dotted path (lists indexed by position)."""
    out: dict[str, Any] = {}
    if isinstance(doc, Mapping):
        for k, v in doc.items():
            if str(k) in skip:
                continue
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k), skip=skip))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.update(flatten(v, f"{prefix}.{i}" if prefix else str(i), skip=skip))
    else:
        out[prefix] = doc
    return out


@dataclass(frozen=True)
class DiffRow:
    """One compared value: ``a`` in the first run, ``b`` in the second."""

    section: str
    key: str
    a: Any
    b: Any
    direction: Direction = None

    @property
    def changed(self) -> bool:
        """The two values differ (a missing value differs from any present one)."""
        if _num(self.a) is not None and _num(self.b) is not None:
            return abs(float(self.a) - float(self.b)) > 1e-12
        return bool(self.a != self.b)

    @property
    def delta(self) -> float | None:
        """``b - a`` for two numbers, else ``None``."""
        a, b = _num(self.a), _num(self.b)
        return None if a is None or b is None else b - a

    @property
    def regressed(self) -> bool:
        """The metric got worse from ``a`` to ``b`` (or vanished, or became NaN/null)."""
        if self.direction is None:
            return False
        a, b = _num(self.a), _num(self.b)
        if a is None:
            return False
        if b is None:
            return True
        return b < a - 1e-12 if self.direction == "higher" else b > a + 1e-12

    @property
    def improved(self) -> bool:
        """The metric got better from ``a`` to ``b``."""
        a, b = _num(self.a), _num(self.b)
        if self.direction is None or a is None or b is None:
            return False
        return b > a + 1e-12 if self.direction == "higher" else b < a - 1e-12


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return None if math.isnan(float(v)) else float(v)


@dataclass(frozen=True)
class RunDiff:
    """Two runs compared, section by section (``config``, ``data``, ``code``, ``metrics``)."""

    a: RunInfo
    b: RunInfo
    rows: list[DiffRow]

    @property
    def regressions(self) -> list[DiffRow]:
        """The metrics that got worse."""
        return [r for r in self.rows if r.regressed]


def _rows(section: str, a: Mapping[str, Any], b: Mapping[str, Any], metrics: bool) -> list[DiffRow]:
    rows = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if metrics and _num(va) is None and _num(vb) is None:
            continue
        rows.append(DiffRow(section, key, va, vb, metric_direction(key) if metrics else None))
    return rows


def _code(r: RunInfo) -> dict[str, Any]:
    return {
        "bastion_version": r.bastion_version,
        "git_commit": r.git_commit,
        "git_dirty": r.git_dirty,
        "attack_library": r.attack_library,
        "config_hash": r.config_hash,
        **{f"seeds.{k}": v for k, v in flatten(r.seeds).items()},
    }


def scorecard_metrics(r: RunInfo) -> dict[str, Any]:
    """The metrics of a run's scorecard by dotted path (what `runs diff` compares and `runs
    export` logs): every leaf under `models`, `guard`, `tabular`, `text`, without per-epoch
    histories, reliability bins and other lists of diagnostics."""
    sc = r.scorecard or {}
    doc = {k: sc[k] for k in ("models", "guard", "tabular", "text") if k in sc}
    return flatten(doc, skip=frozenset(_SKIP))


def diff_runs(a: RunInfo, b: RunInfo) -> RunDiff:
    """Compare two runs: every config field, data fingerprint, code version and metric."""
    rows = _rows("config", flatten(a.config or {}), flatten(b.config or {}), False)
    rows += _rows("data", flatten(a.data), flatten(b.data), False)
    rows += _rows("code", _code(a), _code(b), False)
    rows += _rows("metrics", scorecard_metrics(a), scorecard_metrics(b), True)
    return RunDiff(a, b, rows)


def _show(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return v[:12] + "..."
    if isinstance(v, dict | list):
        return json.dumps(v, sort_keys=True)
    return str(v)


def render_diff(d: RunDiff, *, changed_only: bool = False) -> str:
    """The comparison as aligned plain text: one line per value, ``REGRESSED`` or ``improved``
    at the end of a metric line that moved, and a closing count of regressions."""
    lines = [
        f"A: {d.a.run_id} {d.a.name} ({d.a.created_at})",
        f"B: {d.b.run_id} {d.b.name} ({d.b.created_at})",
    ]
    for section in ("config", "data", "code", "metrics"):
        rows = [r for r in d.rows if r.section == section and (r.changed or not changed_only)]
        if not rows:
            continue
        table = [("key", "A", "B", "delta", "")]
        for r in rows:
            delta = r.delta
            mark = (
                "REGRESSED"
                if r.regressed
                else "improved"
                if r.improved
                else ("changed" if r.changed and section != "metrics" else "")
            )
            table.append(
                (
                    r.key,
                    _show(r.a),
                    _show(r.b),
                    f"{delta:+.4g}" if delta and r.changed else "",
                    mark,
                )
            )
        widths = [max(len(row[i]) for row in table) for i in range(4)]
        lines += ["", f"[{section}]"]
        for row in table:
            cells = [row[i].ljust(widths[i]) for i in range(4)]
            lines.append("  ".join([*cells, row[4]]).rstrip())
    n = len(d.regressions)
    lines += [
        "",
        f"{n} regression{'s' * (n != 1)}"
        + (": " + ", ".join(r.key for r in d.regressions[:10]) if n else ""),
    ]
    return "\n".join(lines)
