"""Per-key information budget weighted by coverage of the input distribution: an extraction
monitor for attackers who query with natural inputs, which PRADA misses.

PRADA (Juuti et al., EuroS&P 2019; :mod:`bastion.serve.extraction`) tests whether a key's
query distances look like natural data; Knockoff Nets (Orekondy et al., CVPR 2019) query with
natural images, so their distances do, and PRADA never flags them (Orekondy et al. and Juuti
et al. both say so). What such an attacker cannot avoid is to *learn a lot about the whole
input distribution*: a good copy needs answers spread over every region the victim must be
copied on. This monitor charges each key for that:

* A :class:`CoverageReference` cuts the input space into ``K`` cells: ``cells_per_class``
  k-means clusters (k-means++ seeding, Arthur and Vassilvitskii 2007; Lloyd iterations) of each
  class of the training data, after a seeded Gaussian random projection to ``dims`` dimensions
  (Johnson-Lindenstrauss: distances are kept up to a small factor). Fitted once, saved as
  safetensors.
* Each answered query of a key in cell ``c`` adds ``bits / (1 + n_c)`` to the key's score,
  where ``n_c`` counts the key's earlier answered queries in ``c`` and ``bits`` is what one
  answer is charged: the service charges ``log2 C`` (a label's bits) whatever the key's output
  policy, or with ``serve.extraction_budget_charge: capacity`` the most the answer can carry
  (:func:`answer_bits`). The discount is harmonic, so ``n`` queries in one cell cost about
  ``bits * ln n``: a client who sends many inputs of the same kind pays little, one who sweeps
  the distribution pays about ``bits * K * ln(n / K)``.
* A key is flagged once its score exceeds ``threshold`` bits; :func:`calibrate_threshold`
  picks the threshold so that at most a given share of keys in a replay of normal traffic
  would be flagged (the service's ``serve.extraction_budget_bits``).

Without a reference there is no discount: the score is then a plain per-key budget of answer
bits. The memory per key is ``K`` counters. Measured against Knockoff Nets and Jacobian
augmentation on MNIST, with false flags on simulated normal traffic: ``docs/privacy.md``.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bastion.errors import ConfigError
from bastion.serve.extraction import KeyFlags

_FORMAT = "bastion-coverage-reference/1"
# decimals a float32 probability carries (24-bit significand): what an unrounded answer holds
FULL_PRECISION_DECIMALS = 7


def answer_bits(
    num_classes: int, *, kind: str = "probabilities", k: int = 1, decimals: int | None = None
) -> float:
    """The most information one answer can carry, in bits (a capacity, not an estimate).

    ``kind``: ``"label"`` (``log2 C``), ``"top_k"`` (the ordered top ``k`` labels,
    ``log2(C! / (C - k)!)``, plus ``k`` probabilities) or ``"probabilities"`` (a point of the
    simplex: ``C - 1`` free probabilities). A probability rounded to ``decimals`` places takes
    one of ``10**decimals + 1`` values; ``None`` means unrounded float32
    (:data:`FULL_PRECISION_DECIMALS`).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"answer_bits.num_classes: expected an integer >= 2, got {num_classes!r}")
    d = FULL_PRECISION_DECIMALS if decimals is None else decimals
    if isinstance(d, bool) or not isinstance(d, int) or d < 0:
        raise ConfigError(f"answer_bits.decimals: expected an integer >= 0, got {decimals!r}")
    per_prob = math.log2(10.0**d + 1.0)
    if kind == "label":
        return math.log2(num_classes)
    if kind == "top_k":
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_classes:
            raise ConfigError(f"answer_bits.k: expected 1..{num_classes}, got {k!r}")
        ordered = sum(math.log2(num_classes - i) for i in range(k))
        return ordered + k * per_prob
    if kind == "probabilities":
        return (num_classes - 1) * per_prob
    raise ConfigError(f"answer_bits.kind: expected label, top_k or probabilities, got {kind!r}")


def _kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iterations: int) -> np.ndarray:
    """``k`` centroids ``(k, P)`` of ``x`` ``(n, P)``: k-means++ seeding, then Lloyd steps;
    an emptied cluster is re-seeded at the point farthest from its centroid."""
    n = x.shape[0]
    sq = (x * x).sum(1)
    centres = np.empty((k, x.shape[1]), dtype=np.float64)
    centres[0] = x[rng.integers(n)]
    d2 = np.maximum(sq - 2.0 * x @ centres[0] + centres[0] @ centres[0], 0.0)
    for j in range(1, k):
        total = d2.sum()
        pick = int(rng.choice(n, p=d2 / total)) if total > 0 else int(rng.integers(n))
        centres[j] = x[pick]
        d2 = np.minimum(d2, np.maximum(sq - 2.0 * x @ centres[j] + centres[j] @ centres[j], 0.0))
    for _ in range(iterations):
        dist = sq[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(1)[None, :]
        assign = dist.argmin(1)
        best = dist[np.arange(n), assign]
        moved = False
        for j in range(k):
            members = assign == j
            if members.any():
                new = x[members].mean(0)
            else:
                far = int(best.argmax())
                new, best[far] = x[far], 0.0
            if not np.allclose(new, centres[j]):
                moved = True
            centres[j] = new
        if not moved:
            break
    return centres


@dataclass(frozen=True)
class CoverageReference:
    """Cells of the input space fitted on training data (see the module docstring).

    Attributes:
        projection: ``(D, P)`` float32 random projection of flattened inputs (``D`` features).
        centroids: ``(K, P)`` float32 cell centres in the projected space.
        cell_class: ``(K,)`` int64, the training class each cell was fitted on.
    """

    projection: np.ndarray
    centroids: np.ndarray
    cell_class: np.ndarray

    @property
    def cells(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def features(self) -> int:
        return int(self.projection.shape[0])

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        *,
        cells_per_class: int = 10,
        dims: int = 64,
        iterations: int = 25,
        seed: int = 0,
    ) -> CoverageReference:
        """Fit on training inputs ``x`` ``(N, ...)`` (flattened to ``(N, D)``) with labels
        ``y`` ``(N,)``: ``cells_per_class`` clusters per class (fewer for a class with fewer
        examples). Deterministic for a given ``seed``."""
        xs = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        ys = np.asarray(y).reshape(-1)
        if xs.shape[0] == 0 or xs.shape[0] != ys.shape[0]:
            raise ConfigError(
                f"coverage.data: expected as many labels as inputs (at least one), got "
                f"{xs.shape[0]} inputs and {ys.shape[0]} labels"
            )
        if not np.isfinite(xs).all():
            raise ConfigError("coverage.data: the inputs hold NaN or infinite values")
        for name, v in (("cells_per_class", cells_per_class), ("dims", dims)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"coverage.{name}: expected a positive integer, got {v!r}")
        rng = np.random.default_rng(seed)
        d = xs.shape[1]
        # a square identity when the inputs are already small; else a JL projection
        projection = np.eye(d) if d <= dims else rng.standard_normal((d, dims)) / math.sqrt(dims)
        z = xs @ projection
        centres, owners = [], []
        for c in np.unique(ys):
            zc = z[ys == c]
            k = min(cells_per_class, zc.shape[0])
            centres.append(_kmeans(zc, k, rng, iterations))
            owners += [int(c)] * k
        return cls(
            projection.astype(np.float32),
            np.concatenate(centres).astype(np.float32),
            np.asarray(owners, dtype=np.int64),
        )

    def assign(self, x: np.ndarray) -> np.ndarray:
        """The cell ``(N,)`` int64 of each input ``x`` ``(N, D)`` (nearest centre)."""
        flat = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        if flat.shape[1] != self.features:
            raise ConfigError(
                f"coverage: inputs have {flat.shape[1]} features, the reference "
                f"{self.features}; fit it on the served model's data"
            )
        z = flat @ self.projection
        dist = (self.centroids * self.centroids).sum(1)[None, :] - 2.0 * z @ self.centroids.T
        return np.asarray(dist.argmin(1), dtype=np.int64)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a safetensors file (no pickle)."""
        from safetensors.numpy import save_file

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file(
            {
                "projection": np.ascontiguousarray(self.projection),
                "centroids": np.ascontiguousarray(self.centroids),
                "cell_class": np.ascontiguousarray(self.cell_class),
            },
            str(path),
            metadata={"format": _FORMAT},
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CoverageReference:
        """Read a file written by :meth:`save`; a missing or malformed file is a
        :class:`ConfigError` naming it."""
        from safetensors import safe_open
        from safetensors.numpy import load_file

        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"serve.extraction_reference: no file at {p}")
        try:
            with safe_open(str(p), framework="numpy") as f:
                fmt = (f.metadata() or {}).get("format")
            arrays = load_file(str(p))
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise ConfigError(f"serve.extraction_reference: {p} is not a safetensors file") from e
        if fmt != _FORMAT or set(arrays) != {"projection", "centroids", "cell_class"}:
            raise ConfigError(
                f"serve.extraction_reference: {p} is not a coverage reference ({_FORMAT})"
            )
        ref = cls(arrays["projection"], arrays["centroids"], arrays["cell_class"])
        if (
            ref.projection.ndim != 2
            or ref.centroids.ndim != 2
            or ref.projection.shape[1] != ref.centroids.shape[1]
            or ref.cell_class.shape != (ref.cells,)
        ):
            raise ConfigError(f"serve.extraction_reference: {p} has inconsistent shapes")
        return ref


def calibrate_threshold(
    scores: Sequence[float],
    *,
    max_flag_rate: float = 0.01,
    flagged_elsewhere: Sequence[bool] | None = None,
) -> float:
    """The smallest budget that flags (score strictly above it) at most ``max_flag_rate`` of
    the keys whose final ``scores`` come from a replay of normal traffic: the
    ``ceil((1 - rate) * n)``-th smallest score.

    ``flagged_elsewhere`` (one flag per key): keys another monitor (PRADA) already flags on
    the same replay. They count against the rate, and the threshold is then chosen among the
    other keys, so that the *union* of both monitors flags at most ``max_flag_rate`` of the
    keys (if the other monitor alone flags more, the threshold is the largest score: the
    budget then adds no false flag on this replay)."""
    if not 0.0 <= max_flag_rate < 1.0:
        raise ConfigError(f"calibrate.max_flag_rate: expected [0, 1), got {max_flag_rate!r}")
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        raise ConfigError("calibrate.scores: expected the scores of at least one normal key")
    if flagged_elsewhere is None:
        rank = max(1, math.ceil((1.0 - max_flag_rate) * s.size - 1e-9))
        return float(np.sort(s)[rank - 1])
    elsewhere = np.asarray(flagged_elsewhere, dtype=bool)
    if elsewhere.shape != s.shape:
        raise ConfigError(
            f"calibrate.flagged_elsewhere: expected one flag per key ({s.size}), got "
            f"{elsewhere.size}"
        )
    rest = np.sort(s[~elsewhere])
    allowed = math.floor(max_flag_rate * s.size + 1e-9) - int(elsewhere.sum())
    if rest.size == 0:
        return float(s.max())
    if allowed <= 0:
        return float(rest[-1])
    return float(rest[max(0, rest.size - allowed - 1)])


@dataclass(frozen=True)
class BudgetStatus:
    """A key after a query: ``score`` (bits charged so far), ``queries`` (answered queries
    seen), ``coverage`` (share of the reference's cells the key has hit; 0 without one),
    ``flagged`` (the score ever exceeded the threshold) and ``newly_flagged`` (this call)."""

    score: float
    queries: int
    coverage: float
    flagged: bool
    newly_flagged: bool

    def reason(self, threshold: float) -> str:
        return (
            f"extraction: information budget {self.score:.0f} bits > {threshold:.0f} "
            f"(coverage {self.coverage:.0%} of cells)"
        )


@dataclass
class _Budget:
    counts: np.ndarray
    score: float = 0.0
    queries: int = 0
    flagged: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class BudgetMonitor(KeyFlags[_Budget]):
    """Coverage-weighted information budget for every key; :meth:`observe` is thread-safe.

    Args:
        threshold: bits above which a key is flagged (from :func:`calibrate_threshold`).
        reference: the cells of the input distribution; ``None``: no coverage discount.
    """

    def __init__(self, *, threshold: float, reference: CoverageReference | None = None) -> None:
        if not (threshold > 0 and math.isfinite(threshold)):
            raise ConfigError(
                f"serve.extraction_budget_bits: expected a positive number, got {threshold!r}"
            )
        self.threshold = float(threshold)
        self.reference = reference
        super().__init__()

    def score(self, key: str) -> float:
        """Bits charged to ``key`` so far (0 for an unseen key)."""
        s = self._keys.get(key)
        return s.score if s else 0.0

    def observe(self, key: str, x: np.ndarray, bits: float | Sequence[float]) -> BudgetStatus:
        """Charge ``key`` for answered queries ``x`` ``(N, D)`` whose answers carried ``bits``
        (one number for all, or ``N``)."""
        n = int(x.shape[0])
        per = np.broadcast_to(np.asarray(bits, dtype=np.float64), (n,))
        ref = self.reference
        cells = ref.assign(x) if ref is not None and n else None
        with self._lock:
            state = self._keys.get(key)
            if state is None:
                state = _Budget(np.zeros(ref.cells if ref is not None else 0, dtype=np.int64))
                self._keys[key] = state
        with state.lock:
            if cells is None:
                state.score += float(per.sum())
            else:
                for b, c in zip(per, cells, strict=True):
                    state.score += float(b) / (1.0 + float(state.counts[c]))
                    state.counts[c] += 1
            state.queries += n
            newly = not state.flagged and state.score > self.threshold
            state.flagged = state.flagged or newly
            coverage = float((state.counts > 0).mean()) if state.counts.size else 0.0
            return BudgetStatus(state.score, state.queries, coverage, state.flagged, newly)
