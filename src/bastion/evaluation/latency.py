"""Inference latency of a model per batch size: p50, p99 and throughput.

Each batch size is timed over ``repeats`` forward passes under ``torch.inference_mode``, after
at least ``warmup`` untimed passes and until the untimed passes' timings have settled, on inputs
drawn from the evaluation data (repeated to fill a batch), so the figures include everything a
served prediction pays for except the transport. Timings on a shared machine are noisy: compare
models from the same run, not across machines; :func:`implausible_gaps` flags gaps between
models of one architecture that no model difference can explain.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from bastion.errors import ConfigError

__all__ = ["implausible_gaps", "measure_latency", "percentile"]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values`` by linear interpolation."""
    if not values:
        raise ConfigError("latency: no timings to summarise")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _warm_up(model: nn.Module, batch: Tensor, minimum: int, budget_s: float = 2.0) -> int:
    """Untimed passes until the timings settle: at least ``minimum``, then until the last three
    are each within 1.5x of the fastest seen (first-call costs such as kernel selection, the
    thread pool's start and lazy allocations are gone), or ``budget_s`` seconds have passed.
    Returns the number of passes run."""
    recent: list[float] = []
    best = float("inf")
    start = time.perf_counter()
    passes = 0
    while True:
        t0 = time.perf_counter()
        model(batch)
        dt = time.perf_counter() - t0
        passes += 1
        best = min(best, dt)
        recent = [*recent[-2:], dt]
        settled = len(recent) == 3 and max(recent) <= 1.5 * best
        if passes >= minimum and (settled or time.perf_counter() - start > budget_s):
            return passes


def implausible_gaps(
    results: dict[str, tuple[str, dict[str, Any]]], *, ratio: float = 3.0
) -> list[tuple[str, str]]:
    """Messages for models of the same architecture whose p50 latencies differ by more than
    ``ratio`` at some batch size: with identical compute, a gap that large is a measurement
    artefact (warm-up, a busy or oversubscribed machine), not a property of the models.

    ``results`` maps a model name to ``(architecture, measure_latency(...) result)``; returns
    ``(model, message)`` pairs naming the first model of each such pair.
    """
    out = []
    names = list(results)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            arch_a, lat_a = results[a]
            arch_b, lat_b = results[b]
            if arch_a != arch_b:
                continue
            for size, va in lat_a.get("batch_sizes", {}).items():
                vb = lat_b.get("batch_sizes", {}).get(size)
                if not vb or not va.get("p50_ms") or not vb.get("p50_ms"):
                    continue
                hi, lo = max(va["p50_ms"], vb["p50_ms"]), min(va["p50_ms"], vb["p50_ms"])
                if hi > ratio * lo:
                    out.append(
                        (
                            a,
                            f"latency of {a} and {b} (same architecture {arch_a}) differs "
                            f"{hi / lo:.1f}x at batch {size} ({va['p50_ms']} vs {vb['p50_ms']} ms "
                            "p50): a measurement artefact (a busy machine or too little warm-up), "
                            "not a property of the models; re-measure on an idle machine",
                        )
                    )
                    break
    return out


def measure_latency(
    model: nn.Module,
    x: Tensor,
    *,
    batch_sizes: Sequence[int] = (1, 64),
    repeats: int = 50,
    warmup: int = 5,
) -> dict[str, Any]:
    """Time forward passes of ``model`` on batches drawn from ``x`` ``(N, ...)``.

    Returns ``{"threads": torch threads, "repeats": repeats, "batch_sizes": {str(b): {"p50_ms",
    "p99_ms", "mean_ms", "per_example_ms", "examples_per_second"}}}``.
    """
    if x.shape[0] == 0:
        raise ConfigError("latency: no examples to time")
    if repeats < 1 or warmup < 0:
        raise ConfigError(
            f"latency: expected repeats >= 1 and warmup >= 0, got {repeats} and {warmup}"
        )
    for b in batch_sizes:
        if b < 1:
            raise ConfigError(f"latency.batch_sizes: expected integers >= 1, got {b}")
    model.eval()
    out: dict[str, Any] = {}
    with torch.inference_mode():
        for b in batch_sizes:
            reps = -(-b // x.shape[0])
            batch = x.repeat(reps, *([1] * (x.dim() - 1)))[:b].contiguous()
            passes = _warm_up(model, batch, warmup)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(batch)
                times.append((time.perf_counter() - t0) * 1000.0)
            p50 = percentile(times, 50)
            mean = sum(times) / len(times)
            out[str(b)] = {
                "p50_ms": round(p50, 4),
                "p99_ms": round(percentile(times, 99), 4),
                "mean_ms": round(mean, 4),
                "per_example_ms": round(p50 / b, 5),
                "examples_per_second": round(1000.0 * b / p50, 1) if p50 > 0 else None,
                "warmup_passes": passes,
            }
    return {"threads": torch.get_num_threads(), "repeats": repeats, "batch_sizes": out}
