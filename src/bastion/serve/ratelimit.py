"""Per-key token buckets: ``rate`` tokens per second up to ``burst``; one token per input."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    rate: float
    burst: float
    tokens: float
    stamp: float


class RateLimiter:
    """Token buckets keyed by API-key id. Thread-safe.

    ``take(key, cost, rate=, burst=)`` returns ``0.0`` when the request may go on (its tokens
    are spent), else the seconds to wait before ``cost`` tokens will be there (the
    ``Retry-After``). A key's limits can change at any time (e.g. throttling a flagged key);
    the bucket keeps its tokens, capped at the new burst.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, cost: int, *, rate: float, burst: int) -> float:
        now = self._clock()
        with self._lock:
            b = self._buckets.get(key)
            if b is None:
                b = self._buckets[key] = _Bucket(rate, float(burst), float(burst), now)
            else:
                b.tokens = min(float(burst), b.tokens + (now - b.stamp) * b.rate)
                b.stamp = now
                b.rate, b.burst = rate, float(burst)
            if cost <= b.tokens:
                b.tokens -= cost
                return 0.0
            if cost > b.burst:
                return float("inf")
            return (cost - b.tokens) / b.rate
