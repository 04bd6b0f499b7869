"""Inference latency of a model per batch size: p50, p99 and throughput.

Each batch size is timed over ``repeats`` forward passes under ``torch.inference_mode`` after
``warmup`` untimed passes, on inputs drawn from the evaluation data (repeated to fill a batch), so
the figures include everything a served prediction pays for except the transport. Timings on a
shared machine are noisy: compare models from the same run, not across machines.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from bastion.errors import ConfigError

__all__ = ["measure_latency", "percentile"]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values`` by linear interpolation."""
    if not values:
        raise ConfigError("latency: no timings to summarise")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


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
            for _ in range(warmup):
                model(batch)
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
            }
    return {"threads": torch.get_num_threads(), "repeats": repeats, "batch_sizes": out}
