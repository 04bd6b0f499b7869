"""Per-key model-extraction monitoring with PRADA (Juuti, Szyller, Marchal and Asokan,
"PRADA: Protecting against DNN Model Stealing Attacks", EuroS&P 2019).

For each API key and predicted class ``c`` PRADA keeps a growing set ``G_c`` of earlier
queries. A new query ``x`` of class ``c`` has distance ``d = min_{g in G_c} ||x - g||_2``;
``d`` joins the key's distance set ``D``. ``x`` joins ``G_c`` when ``d`` exceeds the class
threshold ``T_c = max(T_c, mean(D_c) - std(D_c))`` over the distances ``D_c`` of the queries
that grew ``G_c``. Benign queries give roughly normally distributed distances; the synthetic
queries of extraction attacks (small steps around seeds, e.g. JbDA) do not. Once ``D`` holds
``min_samples`` distances, the Shapiro-Wilk statistic ``W`` of ``D`` below ``threshold``
flags the key.

Memory per key is bounded: ``G_c`` and ``D`` keep the newest ``window`` entries. Exact repeats
of an earlier query (distance 0) are skipped: they reveal nothing new about the model, and
honest clients retry.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import numpy as np
from scipy import stats  # type: ignore[import-untyped]


class _Ring:
    """The newest ``cap`` rows ``(n, D)`` with their squared norms, for fast min distances."""

    def __init__(self, first: np.ndarray, cap: int) -> None:
        self.rows = np.empty((cap, first.shape[0]), dtype=np.float32)
        self.norms = np.empty(cap, dtype=np.float32)
        self.n = 0
        self.pos = 0
        self.add(first)

    def add(self, row: np.ndarray) -> None:
        self.rows[self.pos] = row
        self.norms[self.pos] = float(row @ row)
        self.pos = (self.pos + 1) % self.rows.shape[0]
        self.n = min(self.n + 1, self.rows.shape[0])

    def min_distance(self, row: np.ndarray) -> float:
        sq = self.norms[: self.n] - 2.0 * (self.rows[: self.n] @ row)
        nearest = self.rows[int(np.argmin(sq))]
        # the expansion above finds the neighbour fast; the distance itself is computed
        # directly, so an exact repeat gives exactly 0
        diff = nearest.astype(np.float64) - row
        return float(np.sqrt(diff @ diff))


@dataclass
class _KeyState:
    groups: dict[int, _Ring] = field(default_factory=dict)
    group_dists: dict[int, deque[float]] = field(default_factory=dict)
    thresholds: dict[int, float] = field(default_factory=dict)
    dists: deque[float] = field(default_factory=deque)
    since_test: int = 0
    w: float | None = None
    flagged: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class ExtractionStatus:
    """A key's state after a query: ``w`` (last Shapiro-Wilk statistic or ``None``),
    ``flagged`` (W fell below the threshold at least once), ``newly_flagged`` (this query's
    test flagged it) and ``samples`` (distances held)."""

    w: float | None
    flagged: bool
    newly_flagged: bool
    samples: int

    def reason(self, threshold: float) -> str:
        return f"extraction: PRADA Shapiro-Wilk W {self.w:.3f} < {threshold:.3f}"


class _Flaggable(Protocol):
    flagged: bool


S = TypeVar("S", bound=_Flaggable)


class KeyFlags(Generic[S]):
    """Per-key monitor states (each with a ``flagged`` attribute) behind one lock; the
    base of both extraction monitors."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, S] = {}

    def flagged_keys(self) -> list[str]:
        """Ids of the keys flagged so far."""
        with self._lock:
            return [k for k, s in self._keys.items() if s.flagged]

    def is_flagged(self, key: str) -> bool:
        s = self._keys.get(key)
        return bool(s and s.flagged)


class ExtractionMonitor(KeyFlags[_KeyState]):
    """PRADA state for every key; :meth:`observe` is thread-safe (one lock per key)."""

    def __init__(
        self,
        *,
        min_samples: int = 100,
        threshold: float = 0.90,
        window: int = 2000,
        every: int = 10,
    ) -> None:
        self.min_samples = min_samples
        self.threshold = threshold
        self.window = window
        self.every = every
        super().__init__()

    def observe(self, key: str, x: np.ndarray, labels: list[int]) -> ExtractionStatus:
        """Add the queries ``x`` ``(N, D)`` float32 with predicted ``labels`` (N) of ``key``."""
        with self._lock:
            state = self._keys.setdefault(key, _KeyState())
        newly = False
        with state.lock:
            for row, c in zip(np.asarray(x, dtype=np.float32), labels, strict=True):
                group = state.groups.get(c)
                if group is None:
                    state.groups[c] = _Ring(row, self.window)
                    state.group_dists[c] = deque(maxlen=self.window)
                    state.thresholds[c] = 0.0
                    continue
                d = group.min_distance(row)
                if d == 0.0:  # an exact repeat tells an extractor nothing new (and retries
                    continue  # of honest clients are common): it does not enter D
                state.dists.append(d)
                if len(state.dists) > self.window:
                    state.dists.popleft()
                state.since_test += 1
                if d > state.thresholds[c]:
                    group.add(row)
                    gd = state.group_dists[c]
                    gd.append(d)
                    arr = np.asarray(gd)
                    state.thresholds[c] = max(state.thresholds[c], float(arr.mean() - arr.std()))
            if len(state.dists) >= self.min_samples and state.since_test >= self.every:
                state.since_test = 0
                sample = np.asarray(state.dists)
                if np.ptp(sample) > 0:
                    state.w = float(stats.shapiro(sample).statistic)
                else:  # every distance equal: as far from normal as distances get
                    state.w = 0.0
                if state.w < self.threshold and not state.flagged:
                    state.flagged = True
                    newly = True
            return ExtractionStatus(state.w, state.flagged, newly, len(state.dists))
