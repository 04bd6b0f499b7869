"""Prometheus metrics written by hand: counters, gauges and histograms with labels, rendered in
the text exposition format 0.0.4. Thread-safe."""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

Labels = tuple[tuple[str, str], ...]


class Collector(Protocol):
    """Anything :class:`ServiceMetrics` can expose: it renders its own text lines."""

    def render(self) -> list[str]: ...


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def label_text(labels: Labels, extra: tuple[str, str] | None = None) -> str:
    """``{k="v",...}`` (escaped; empty for no labels)."""
    return _labels(labels, extra)


def number_text(v: float) -> str:
    """A sample value as Prometheus writes it (``+Inf``, ``NaN``, integers without ``.0``)."""
    return "NaN" if math.isnan(v) else _num(v)


def _labels(labels: Labels, extra: tuple[str, str] | None = None) -> str:
    items = [*labels, extra] if extra is not None else list(labels)
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in items) + "}"


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class Counter:
    """A monotone count per label set. ``zero``: label sets shown as 0 before their first
    increment, so dashboards see 0, not "no data" (default: the unlabelled series, while no
    other series exists)."""

    def __init__(
        self, name: str, help_text: str, *, zero: Sequence[dict[str, str]] | None = None
    ) -> None:
        self.name, self.help = name, help_text
        self._lock = threading.Lock()
        self._values: dict[Labels, float] = {tuple(sorted(z.items())): 0.0 for z in zero or ()}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        with self._lock:
            items = sorted(self._values.items()) or [((), 0.0)]
        out += [f"{self.name}{_labels(k)} {_num(v)}" for k, v in items]
        return out


class Gauge:
    """A value read at scrape time from a callable."""

    def __init__(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.name, self.help, self._read = name, help_text, read

    def render(self) -> list[str]:
        return [
            f"# HELP {self.name} {self.help}",
            f"# TYPE {self.name} gauge",
            f"{self.name} {_num(self._read())}",
        ]


class Histogram:
    """Cumulative buckets, sum and count per label set; ``zero`` as for :class:`Counter`."""

    def __init__(
        self,
        name: str,
        help_text: str,
        buckets: Sequence[float],
        *,
        zero: Sequence[dict[str, str]] | None = None,
    ) -> None:
        self.name, self.help = name, help_text
        self.bounds = tuple(float(b) for b in buckets)
        self._lock = threading.Lock()
        self._data: dict[Labels, tuple[list[int], list[float]]] = {
            tuple(sorted(z.items())): ([0] * (len(self.bounds) + 1), [0.0]) for z in zero or ()
        }

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        i = bisect.bisect_left(self.bounds, value)
        with self._lock:
            counts, total = self._data.setdefault(key, ([0] * (len(self.bounds) + 1), [0.0]))
            counts[i] += 1
            total[0] += value

    def count(self, **labels: str) -> int:
        data = self._data.get(tuple(sorted(labels.items())))
        return sum(data[0]) if data else 0

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            items = sorted((k, (list(c), t[0])) for k, (c, t) in self._data.items())
        if not items:
            items = [((), ([0] * (len(self.bounds) + 1), 0.0))]
        for key, (counts, total) in items:
            running = 0
            for bound, c in zip((*self.bounds, math.inf), counts, strict=True):
                running += c
                out.append(f"{self.name}_bucket{_labels(key, ('le', _num(bound)))} {running}")
            out.append(f"{self.name}_sum{_labels(key)} {_num(total)}")
            out.append(f"{self.name}_count{_labels(key)} {running}")
        return out


class ServiceMetrics:
    """The service's metrics (names prefixed ``bastion_``)."""

    def __init__(self, *, uptime: Callable[[], float], flagged_keys: Callable[[], float]) -> None:
        endpoints = ("/v1/predict", "/v1/health", "/metrics")
        self.requests = Counter(
            "bastion_requests_total",
            "HTTP requests by endpoint and status code (499: the client disconnected).",
            zero=[{"endpoint": e, "status": "200"} for e in endpoints],
        )
        self.decisions = Counter(
            "bastion_decisions_total",
            "Guard decisions (inputs) by verdict.",
            zero=[{"verdict": v} for v in ("accept", "flag", "abstain", "reject")],
        )
        self.latency = Histogram(
            "bastion_request_duration_seconds",
            "Time from request start to response, by endpoint.",
            LATENCY_BUCKETS,
            zero=[{"endpoint": "/v1/predict"}],
        )
        self.batch_size = Histogram(
            "bastion_guard_batch_size", "Inputs per forward pass of the guard.", BATCH_BUCKETS
        )
        self.rate_limited = Counter(
            "bastion_rate_limited_total", "Requests refused by the per-key rate limit."
        )
        self.auth_failures = Counter(
            "bastion_auth_failures_total", "Requests refused for a missing or unknown key."
        )
        self.audit_writes = Counter("bastion_audit_writes_total", "Audit records committed.")
        self.audit_errors = Counter("bastion_audit_errors_total", "Audit commits that failed.")
        self.extraction_flags = Counter(
            "bastion_extraction_flags_total", "API keys flagged by the PRADA extraction test."
        )
        self.extraction_budget_flags = Counter(
            "bastion_extraction_budget_flags_total",
            "API keys flagged by the information-budget extraction monitor.",
        )
        self.timeouts = Counter("bastion_timeouts_total", "Requests that ran past the timeout.")
        self.client_disconnects = Counter(
            "bastion_client_disconnects_total",
            "Requests whose client disconnected before the body was read (status 499).",
        )
        self._all: list[Collector] = [
            self.requests,
            self.decisions,
            self.latency,
            self.batch_size,
            self.rate_limited,
            self.auth_failures,
            self.audit_writes,
            self.audit_errors,
            self.extraction_flags,
            self.extraction_budget_flags,
            self.timeouts,
            self.client_disconnects,
            Gauge("bastion_uptime_seconds", "Seconds since the service started.", uptime),
            Gauge(
                "bastion_flagged_keys", "API keys currently flagged for extraction.", flagged_keys
            ),
        ]

    def add_gauge(self, name: str, help: str, read: Callable[[], float]) -> None:
        """Expose one more gauge (e.g. the drift monitor's window and alert counts)."""
        self._all.append(Gauge(name, help, read))

    def add(self, collector: Collector) -> None:
        """Expose more metrics: anything whose ``render()`` gives Prometheus text lines (e.g.
        the per-variant metrics of a served stage, :mod:`bastion.registry.variants`)."""
        self._all.append(collector)

    def render(self) -> str:
        lines: list[str] = []
        for m in self._all:
            lines += m.render()
        return "\n".join(lines) + "\n"
