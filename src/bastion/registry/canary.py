"""Automatic demotion of a canary: rules over a sliding window of the canary's answers.

A canary stage (see :mod:`bastion.registry.serving`) answers a share of the live inputs. Each
rule of the canary stage's ``demote_when`` list watches one figure of the canary over its
last ``window`` inputs (optionally only those of the last ``window_s`` seconds) and fires
when, with at least ``min_samples`` inputs in the window, the figure is above ``max``::

    stages:
      canary:
        demote_when:
          - {metric: abstention_rate, max: 0.3, window: 100, min_samples: 40}
          - {metric: p99_latency_s, max: 0.5, window: 200, min_samples: 50, window_s: 60}

Figures (every one is computed over the canary's inputs in the window):

- ``abstention_rate``, ``flag_rate``, ``reject_rate``: share of inputs whose verdict was
  ``abstain``, ``flag`` or ``reject``;
- ``disagreement_rate``: share whose label differs from the production run's label for the
  same input (the primary decides every input, so each canary answer has a reference);
- ``error_rate``: share of inputs whose canary batch raised (those inputs were answered by the
  primary instead, so a broken canary never fails a request);
- ``p50_latency_s``, ``p99_latency_s``: nearest-rank quantile of the seconds the canary's guard
  took for the batch each input was in.

This is the phased-rollout practice of canary analysis (a candidate is judged on live traffic
against the version it would replace, and pulled back automatically when a health figure
leaves its bound); the rules themselves are plain thresholds, chosen for being explainable.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bastion.guard.decision import Decision
from bastion.registry.db import RegistryError

__all__ = ["RATE_METRICS", "RULE_METRICS", "Breach", "CanaryRule", "RuleWatch", "parse_rules"]

RATE_METRICS = (
    "abstention_rate",
    "flag_rate",
    "reject_rate",
    "disagreement_rate",
    "error_rate",
)
LATENCY_METRICS = ("p50_latency_s", "p99_latency_s")
RULE_METRICS = (*RATE_METRICS, *LATENCY_METRICS)
MAX_WINDOW = 10_000
_KEYS = ("metric", "max", "window", "window_s", "min_samples")


@dataclass(frozen=True)
class CanaryRule:
    """Demote the canary when ``metric`` over its last ``window`` inputs (and, with
    ``window_s``, only those of the last ``window_s`` seconds) is above ``max``, once the
    window holds at least ``min_samples`` inputs."""

    metric: str
    max: float
    window: int = 100
    min_samples: int = 20
    window_s: float | None = None

    def describe(self) -> str:
        """``abstention_rate > 0.3 over the last 100 canary inputs``."""
        span = f" within {self.window_s:g} s" if self.window_s is not None else ""
        return f"{self.metric} > {self.max:g} over the last {self.window} canary inputs{span}"


def _number(value: Any, field: str, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RegistryError(f"{field}: expected {expected}, got {value!r}")
    return float(value)


def _count(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RegistryError(f"{field}: expected an integer in [{low}, {high}], got {value!r}")
    return value


def parse_rules(raw: Any, where: str) -> tuple[CanaryRule, ...]:
    """The rules of a ``demote_when`` list; ``where`` names it in errors
    (``stages.yaml: stages.canary.demote_when``).

    Raises:
        RegistryError: a rule that is not a mapping, an unknown key or metric, a bound out of
            range (rates in [0, 1], latencies > 0), a window or minimum sample count that is
            not an integer in range (``1 <= min_samples <= window <= 10000``).
    """
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise RegistryError(f"{where}: expected a list of rules, got {type(raw).__name__}")
    rules = []
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(item, Mapping):
            raise RegistryError(f"{at}: expected a mapping with {', '.join(_KEYS)}")
        unknown = sorted(str(k) for k in item if k not in _KEYS)
        if unknown:
            raise RegistryError(
                f"{at}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(_KEYS)}"
            )
        metric = item.get("metric")
        if metric not in RULE_METRICS:
            raise RegistryError(
                f"{at}.metric: expected one of {', '.join(RULE_METRICS)}, got {metric!r}"
            )
        if "max" not in item:
            raise RegistryError(f"{at}.max: required (the bound the {metric} may not exceed)")
        if metric in RATE_METRICS:
            bound = _number(item["max"], f"{at}.max", "a share in [0, 1)")
            if not 0.0 <= bound < 1.0:
                raise RegistryError(f"{at}.max: expected a share in [0, 1), got {bound!r}")
        else:
            bound = _number(item["max"], f"{at}.max", "seconds > 0")
            if bound <= 0:
                raise RegistryError(f"{at}.max: expected seconds > 0, got {bound!r}")
        window = _count(item.get("window", 100), f"{at}.window", 1, MAX_WINDOW)
        min_samples = _count(
            item.get("min_samples", min(20, window)), f"{at}.min_samples", 1, window
        )
        window_s = item.get("window_s")
        if window_s is not None:
            window_s = _number(window_s, f"{at}.window_s", "seconds > 0 or null")
            if window_s <= 0:
                raise RegistryError(f"{at}.window_s: expected seconds > 0 or null, got {window_s}")
        rules.append(CanaryRule(str(metric), bound, window, min_samples, window_s))
    return tuple(rules)


@dataclass(frozen=True)
class _Sample:
    at: float
    verdict: str
    disagreed: bool
    error: bool
    latency_s: float


@dataclass(frozen=True)
class Breach:
    """A rule that fired: its index in the list, the figure and the inputs it was computed on."""

    index: int
    rule: CanaryRule
    value: float
    samples: int

    def reason(self, run_id: str, stage: str) -> str:
        """One line for the registry, the audit log and the service log."""
        return (
            f"canary rule {self.index} fired: {self.rule.metric} {self.value:.4g} > max "
            f"{self.rule.max:g} over the last {self.samples} inputs of run {run_id} in stage "
            f"{stage!r}; demoted"
        )


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class RuleWatch:
    """The canary's recent inputs and the rules judged on them after every batch.

    Memory: at most the largest ``window`` of the rules, one small record per input. Each
    :meth:`add` judges every rule on its window: O(rules x window) per batch. Thread-safe.
    """

    def __init__(self, rules: Sequence[CanaryRule]) -> None:
        self.rules = tuple(rules)
        self._samples: deque[_Sample] = deque(maxlen=max((r.window for r in self.rules), default=1))
        self._lock = threading.Lock()

    def add(
        self,
        now: float,
        decisions: Sequence[Decision] | None,
        *,
        n: int,
        reference_labels: Sequence[int | None],
        latency_s: float,
    ) -> Breach | None:
        """Record one canary batch of ``n`` inputs at monotonic time ``now``: its
        ``decisions`` (``None``: the canary raised), production's labels for the same inputs
        and the seconds the canary took; returns the first rule that now fires, if any."""
        if not self.rules:
            return None
        if decisions is None:
            new = [_Sample(now, "error", False, True, latency_s) for _ in range(n)]
        else:
            new = [
                _Sample(now, d.verdict, d.label != ref, False, latency_s)
                for d, ref in zip(decisions, reference_labels, strict=True)
            ]
        with self._lock:
            self._samples.extend(new)
            recent = list(self._samples)
        for i, rule in enumerate(self.rules):
            window = recent[-rule.window :]
            if rule.window_s is not None:
                window = [s for s in window if now - s.at <= rule.window_s]
            if len(window) < rule.min_samples:
                continue
            value = figure(rule.metric, window)
            if value > rule.max:
                return Breach(i, rule, value, len(window))
        return None


def figure(metric: str, window: Sequence[_Sample]) -> float:
    """One rule metric (see the module docstring) over a non-empty window of samples."""
    n = len(window)
    if metric == "p50_latency_s":
        return _quantile([s.latency_s for s in window], 0.5)
    if metric == "p99_latency_s":
        return _quantile([s.latency_s for s in window], 0.99)
    if metric == "disagreement_rate":
        return sum(s.disagreed for s in window) / n
    if metric == "error_rate":
        return sum(s.error for s in window) / n
    verdict = {"abstention_rate": "abstain", "flag_rate": "flag", "reject_rate": "reject"}[metric]
    return sum(s.verdict == verdict for s in window) / n
