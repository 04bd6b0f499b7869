"""One drill runner for every channel: poison -> train -> scan -> quarantine -> retrain -> measure.

A backdoor drill has the same shape on images, texts and tables; only the hooks differ. A
channel (:class:`DrillChannel`) holds the poisoned training set (``labels`` as the victim sees
them, ``truth`` the poisoning record's mask) and supplies:

* ``train(kept)``: a model trained on the whole poisoned set (``kept`` None) or on the rows
  ``kept`` (int64 indices); returned as the channel keeps it (the text channel keeps the model
  with its vocabulary, rebuilt from what is kept);
* ``measure(trained)``: its clean accuracy and attack success on the test split;
* ``scans(trained)``: the scans of the training set, by name, each a callable returning a
  :class:`ScanOutcome` (run and timed in order).

:func:`run_drill` trains the victim, measures it, runs every scan (detection metrics against
the record, seconds, the channel's extra fields), merges the flags of the scans named in
``quarantine_by`` into a :class:`~bastion.poisoning.quarantine.Quarantine` (nothing dropped
silently: each entry lists its reasons and scores), retrains on the kept rows and measures
again. Every step is seeded by the channel; the runner draws nothing itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from torch import Tensor

from bastion.errors import ConfigError
from bastion.poisoning.quarantine import Quarantine, build_quarantine
from bastion.poisoning.scans import detection_metrics

T = TypeVar("T")

LogFn = Callable[[str], None]


def _quiet(message: str) -> None:
    return None


@dataclass(frozen=True, eq=False)
class ScanOutcome:
    """One scan of the training set.

    Attributes:
        flagged: bool ``(N,)``, the examples the scan flags.
        scores: float64 ``(N,)``, higher = more suspect (the quarantine's per-reason score).
        summary: the scan's JSON summary (written into ``quarantine.json``).
        doc: extra JSON fields of the drill's per-scan record (flagged tokens, ``eps``...).
        details: per flagged index, notes for its quarantine entry (``{reason: {...}}``, e.g.
            the copy a duplicate repeats).
        result: the scan's own result object, for callers that need more than the flags.
    """

    flagged: Tensor
    scores: Tensor
    summary: dict[str, Any] = field(default_factory=dict)
    doc: dict[str, Any] = field(default_factory=dict)
    details: dict[int, dict[str, Any]] = field(default_factory=dict)
    result: Any = None


def merge_outcomes(labels: Tensor, outcomes: Mapping[str, ScanOutcome]) -> Quarantine:
    """The quarantine of ``outcomes`` (in their order): every index one of them flags, with
    each reason's score, the scans' summaries and the merged per-index details."""
    details: dict[int, dict[str, Any]] = {}
    for o in outcomes.values():
        for i, d in o.details.items():
            details.setdefault(i, {}).update(d)
    return build_quarantine(
        labels,
        {n: (o.flagged, o.scores) for n, o in outcomes.items()},
        summaries={n: o.summary for n, o in outcomes.items()},
        details=details,
    )


class DrillChannel(Protocol[T]):
    """The hooks of one channel (see the module docstring)."""

    @property
    def labels(self) -> Tensor:
        """int64 ``(N,)``: the training labels as the victim sees them."""
        ...

    @property
    def truth(self) -> Tensor:
        """bool ``(N,)``: True where the drill poisoned the example."""
        ...

    def train(self, kept: Tensor | None) -> T: ...

    def measure(self, trained: T) -> dict[str, Any]: ...

    def scans(self, trained: T) -> list[tuple[str, Callable[[], ScanOutcome]]]: ...


@dataclass(frozen=True, eq=False)
class DrillOutcome(Generic[T]):
    """What :func:`run_drill` measured.

    Attributes:
        victim: the model trained on the poisoned set.
        undefended: the victim's figures (``measure``).
        scans: per scan, its detection metrics against the record, ``seconds`` and ``doc``.
        outcomes: per scan, its :class:`ScanOutcome`.
        quarantine: the merged flags of the ``quarantine_by`` scans.
        quarantined: detection metrics of the quarantine against the record.
        defended: the model retrained on the kept rows (None when not retrained).
        retrained: its figures with ``kept`` (the number of kept rows), or None.
    """

    victim: T
    undefended: dict[str, Any]
    scans: dict[str, dict[str, Any]]
    outcomes: dict[str, ScanOutcome]
    quarantine: Quarantine
    quarantined: dict[str, float]
    defended: T | None
    retrained: dict[str, Any] | None


def run_drill(
    channel: DrillChannel[T],
    quarantine_by: Sequence[str] | None,
    *,
    retrain: bool = True,
    log: LogFn = _quiet,
) -> DrillOutcome[T]:
    """Run the drill through ``channel``'s hooks (see the module docstring).

    ``quarantine_by`` None quarantines by every scan. Raises :class:`ConfigError` when it names
    a scan the channel does not run (once the victim is trained, before any scan runs).
    Guarantee: the quarantine holds exactly the examples one of the ``quarantine_by`` scans
    flagged, and the retrained model saw none of them.
    """
    victim = channel.train(None)
    undefended = channel.measure(victim)
    log(f"undefended: {undefended}")
    runs = channel.scans(victim)
    if quarantine_by is None:
        quarantine_by = [name for name, _ in runs]
    unknown = sorted(set(quarantine_by) - {name for name, _ in runs})
    if unknown:
        raise ConfigError(
            f"quarantine_by: {unknown} not among the scans {[name for name, _ in runs]}"
        )
    scans: dict[str, dict[str, Any]] = {}
    outcomes: dict[str, ScanOutcome] = {}
    for name, run in runs:
        t = time.perf_counter()
        res = run()
        outcomes[name] = res
        scans[name] = {
            **detection_metrics(res.flagged, channel.truth),
            "seconds": round(time.perf_counter() - t, 2),
            **res.doc,
        }
    log(f"scans: { {n: (s['recall'], s['clean_flagged_rate']) for n, s in scans.items()} }")
    quarantine = merge_outcomes(channel.labels, {n: outcomes[n] for n in quarantine_by})
    defended, retrained = None, None
    if retrain:
        kept = quarantine.kept
        log(f"retraining on {len(kept)} kept examples")
        defended = channel.train(kept)
        retrained = {"kept": len(kept), **channel.measure(defended)}
        log(f"retrained: {retrained}")
    return DrillOutcome(
        victim,
        undefended,
        scans,
        outcomes,
        quarantine,
        detection_metrics(quarantine.mask, channel.truth),
        defended,
        retrained,
    )
