"""The quarantine: every example a scan flags, with its scores and reasons, written as JSON.

Nothing is dropped silently: :func:`build_quarantine` merges the flags of every scan into one
entry per flagged training index (reasons and scores of each scan that flagged it, plus its
label), and :func:`write_quarantine` writes them, the scans' summaries and the kept/removed
counts to one JSON file (atomically: a temporary name, then a rename). The kept indices are
the complement, in order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bastion.errors import DataError

FORMAT = "bastion-quarantine/1"


@dataclass(frozen=True)
class QuarantineEntry:
    """One quarantined training example: its index, label, and for each reason its score."""

    index: int
    label: int
    reasons: tuple[str, ...]
    scores: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "label": self.label,
            "reasons": list(self.reasons),
            "scores": {k: round(v, 6) for k, v in self.scores.items()},
            **({"details": self.details} if self.details else {}),
        }


@dataclass(frozen=True, eq=False)
class Quarantine:
    """The merged quarantine of ``n`` training examples.

    Attributes:
        n: size of the scanned set.
        entries: flagged examples, ascending by index.
        summaries: each scan's JSON summary, by scan name.
    """

    n: int
    entries: tuple[QuarantineEntry, ...]
    summaries: dict[str, Any]

    @property
    def mask(self) -> Tensor:
        """bool ``(n,)``: True for quarantined examples."""
        out = torch.zeros(self.n, dtype=torch.bool)
        if self.entries:
            out[torch.tensor([e.index for e in self.entries])] = True
        return out

    @property
    def kept(self) -> Tensor:
        """int64 indices of the examples that stay, ascending."""
        return torch.nonzero(~self.mask).flatten()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "n": self.n,
            "n_quarantined": len(self.entries),
            "n_kept": self.n - len(self.entries),
            "scans": self.summaries,
            "entries": [e.to_dict() for e in self.entries],
        }


def build_quarantine(
    labels: Tensor,
    flags: Mapping[str, tuple[Tensor, Tensor]],
    *,
    summaries: Mapping[str, Any] | None = None,
    details: Mapping[int, Mapping[str, Any]] | None = None,
) -> Quarantine:
    """Merge scans: ``flags[name] = (flagged bool (N,), score float (N,))``; every index any
    scan flags becomes one entry listing every scan that flagged it with that scan's score.
    ``details`` adds per-index notes (e.g. the copy a duplicate repeats)."""
    n = len(labels)
    reasons: dict[int, list[str]] = {}
    scores: dict[int, dict[str, float]] = {}
    for name, (flagged, score) in flags.items():
        if flagged.shape != (n,) or score.shape != (n,):
            raise DataError(f"quarantine: scan {name!r}: expected flags and scores of shape ({n},)")
        for i in torch.nonzero(flagged).flatten().tolist():
            reasons.setdefault(i, []).append(name)
            scores.setdefault(i, {})[name] = float(score[i])
    ys = labels.tolist()
    entries = tuple(
        QuarantineEntry(
            i, int(ys[i]), tuple(reasons[i]), scores[i], dict((details or {}).get(i, {}))
        )
        for i in sorted(reasons)
    )
    return Quarantine(n, entries, dict(summaries or {}))


def write_quarantine(
    quarantine: Quarantine,
    path: str | os.PathLike[str],
    *,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the quarantine (and ``extra`` top-level fields) as JSON; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {**quarantine.to_dict(), **dict(extra or {})}
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=False), encoding="utf-8")
    os.replace(tmp, out)
    return out


def read_kept(path: str | os.PathLike[str]) -> Sequence[int]:
    """The kept indices recorded by :func:`write_quarantine` (the complement of the entries)."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DataError(f"{path}: not a bastion quarantine file (expected format {FORMAT!r})")
    removed = {int(e["index"]) for e in doc["entries"]}
    return [i for i in range(int(doc["n"])) if i not in removed]
