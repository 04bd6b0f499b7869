"""Per-variant metrics of a served stage (``primary``, ``canary``, ``shadow``) for ``/metrics``.

Rendered in the Prometheus text format 0.0.4 with the service's own metric classes
(:mod:`bastion.serve.metrics`), so a stage service's ``/metrics`` shows, next to the service's
totals:

- ``bastion_variant_inputs_total{variant}``: inputs each variant decided (the primary's count
  is of the inputs it answered, a failed canary batch's included; the shadow's of those it
  judged on the side);
- ``bastion_variant_decisions_total{variant,verdict}``: those decisions by verdict (guard flags
  are ``verdict="flag"``, abstentions ``verdict="abstain"``);
- ``bastion_variant_errors_total{variant}``: inputs whose canary or shadow batch raised (the
  primary's answer was returned);
- ``bastion_variant_decide_seconds{variant}``: histogram of the seconds each variant's guard
  took per batch, and ``bastion_variant_decide_seconds_recent{variant,quantile}``: the 0.5, 0.9
  and 0.99 quantiles of its last 1,000 batches (a summary);
- ``bastion_variant_compared_total{variant}``, ``bastion_variant_agreed_total{variant}`` and
  ``bastion_variant_agreement_ratio{variant}``: how often the canary's (on its inputs) and the
  shadow's (on every input) label equalled production's;
- ``bastion_variant_run{variant,run}``: 1 for the run each variant serves now;
- ``bastion_canary_routing``: 1 while the canary takes traffic; ``bastion_canary_demotions_total``.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Sequence

from bastion.guard.decision import VERDICTS, Decision
from bastion.serve.metrics import LATENCY_BUCKETS, Counter, Histogram, label_text, number_text

__all__ = ["VARIANTS", "VariantMetrics"]

VARIANTS = ("primary", "canary", "shadow")
RECENT = 1000
QUANTILES = (0.5, 0.9, 0.99)


class VariantMetrics:
    """Counters, latency histograms and agreement per variant (thread-safe).

    Args:
        runs: read at scrape time: the run each variant serves now (variants serving none
            are left out).
        routing: read at scrape time: whether the canary takes traffic now.
    """

    def __init__(
        self,
        *,
        runs: Callable[[], dict[str, str]],
        routing: Callable[[], bool],
    ) -> None:
        self._runs, self._routing = runs, routing
        self.inputs = Counter(
            "bastion_variant_inputs_total",
            "Inputs decided per variant (primary: answered; shadow: judged on the side).",
            zero=[{"variant": v} for v in VARIANTS],
        )
        self.decisions = Counter(
            "bastion_variant_decisions_total",
            "Decisions per variant and verdict (flag: a guard layer fired; abstain: no answer).",
            zero=[{"variant": v, "verdict": d} for v in VARIANTS for d in VERDICTS],
        )
        self.errors = Counter(
            "bastion_variant_errors_total",
            "Inputs whose canary or shadow batch raised (the primary answered them).",
            zero=[{"variant": v} for v in VARIANTS],
        )
        self.latency = Histogram(
            "bastion_variant_decide_seconds",
            "Seconds a variant's guard took per batch.",
            LATENCY_BUCKETS,
            zero=[{"variant": v} for v in VARIANTS],
        )
        self.compared = Counter(
            "bastion_variant_compared_total",
            "Canary and shadow answers compared with production's label for the same input.",
            zero=[{"variant": v} for v in ("canary", "shadow")],
        )
        self.agreed = Counter(
            "bastion_variant_agreed_total",
            "Compared answers whose label equalled production's.",
            zero=[{"variant": v} for v in ("canary", "shadow")],
        )
        self.demotions = Counter(
            "bastion_canary_demotions_total", "Canary runs demoted by a rollback rule."
        )
        self._recent: dict[str, deque[float]] = {v: deque(maxlen=RECENT) for v in VARIANTS}
        self._lock = threading.Lock()

    def observe(
        self,
        variant: str,
        decisions: Sequence[Decision],
        seconds: float,
        *,
        reference: Sequence[int | None] | None = None,
    ) -> None:
        """Count one batch part a variant decided in ``seconds``; with ``reference`` (the
        production labels of the same inputs), count the agreement too."""
        self.inputs.inc(len(decisions), variant=variant)
        for d in decisions:
            self.decisions.inc(variant=variant, verdict=d.verdict)
        self.timing(variant, seconds)
        if reference is not None:
            agreed = sum(d.label == r for d, r in zip(decisions, reference, strict=True))
            self.compared.inc(len(decisions), variant=variant)
            self.agreed.inc(agreed, variant=variant)

    def timing(self, variant: str, seconds: float) -> None:
        """One batch's decide time of a variant."""
        self.latency.observe(seconds, variant=variant)
        with self._lock:
            self._recent[variant].append(seconds)

    def render(self) -> list[str]:
        """The Prometheus text lines."""
        out: list[str] = []
        for c in (self.inputs, self.decisions, self.errors):
            out += c.render()
        out += self.latency.render()
        name = "bastion_variant_decide_seconds_recent"
        out += [
            f"# HELP {name} Quantiles of the decide seconds of each variant's last {RECENT} "
            "batches.",
            f"# TYPE {name} summary",
        ]
        with self._lock:
            recent = {v: sorted(d) for v, d in self._recent.items()}
        for v, values in recent.items():
            for q in QUANTILES:
                value = values[max(0, math.ceil(q * len(values)) - 1)] if values else math.nan
                labels = label_text((("quantile", str(q)), ("variant", v)))
                out.append(f"{name}{labels} {number_text(value)}")
            out.append(f"{name}_sum{label_text((('variant', v),))} {number_text(sum(values))}")
            out.append(f"{name}_count{label_text((('variant', v),))} {len(values)}")
        out += self.compared.render() + self.agreed.render()
        ratio = "bastion_variant_agreement_ratio"
        out += [
            f"# HELP {ratio} Agreed over compared answers (NaN before the first comparison).",
            f"# TYPE {ratio} gauge",
        ]
        for v in ("canary", "shadow"):
            n = self.compared.value(variant=v)
            value = self.agreed.value(variant=v) / n if n else math.nan
            out.append(f"{ratio}{label_text((('variant', v),))} {number_text(value)}")
        out += [
            "# HELP bastion_variant_run The run each variant serves now (value 1).",
            "# TYPE bastion_variant_run gauge",
        ]
        for v, run in sorted(self._runs().items()):
            out.append(f"bastion_variant_run{label_text((('run', run), ('variant', v)))} 1")
        out += [
            "# HELP bastion_canary_routing 1 while the canary stage takes traffic, else 0.",
            "# TYPE bastion_canary_routing gauge",
            f"bastion_canary_routing {int(self._routing())}",
        ]
        out += self.demotions.render()
        return out
