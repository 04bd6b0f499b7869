"""The render view of a typed scorecard, shared by the HTML, Markdown and plot renderers.

Renderers never index a raw scorecard mapping: :func:`parse_scorecard` validates it once as a
:class:`~bastion.evaluation.scorecard_model.Scorecard` (a version-1 document is migrated) and
returns frozen dataclasses built from the model's attributes: per-epoch histories as columns
(NaN where missing), accuracy curves as tuples, and the model's typed records (corruptions,
calibration, latency, ...). Missing optional parts become ``None`` or empty containers so the
renderers can skip them with a note; parts that are present but malformed (a list where a
mapping belongs, a string where a number belongs, curves whose lengths do not match their eps
grid) raise :class:`ScorecardError` naming the offending field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bastion.evaluation.scorecard_model import (
    AccuracyCurve,
    Calibration,
    Corruptions,
    DataInfo,
    EscalationRecord,
    Figure,
    Latency,
    ModelResult,
    SanityCheckRecord,
    Scorecard,
    ScorecardError,
    Section,
    Shifts,
    TrainingRecord,
    WarningRecord,
    load_scorecard,
)

__all__ = ["ScorecardError", "ScorecardView", "parse_scorecard"]


# -- typed view ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class EpsCurve:
    """Accuracy against the perturbation budget for one model.

    ``worst_case`` and every ``per_attack`` series have one entry per ``eps``; a missing value
    is NaN (drawn as a gap).
    """

    eps: tuple[float, ...]
    worst_case: tuple[float, ...]
    per_attack: dict[str, tuple[float, ...]]


@dataclass(frozen=True)
class History:
    """Per-epoch training records of one model, one entry per epoch (NaN where missing)."""

    epoch: tuple[float, ...]
    train_loss: tuple[float, ...]
    val_clean_accuracy: tuple[float, ...]
    val_robust_accuracy: tuple[float, ...]
    #: per torchrun process (rank order), its training loss per epoch over its own share
    #: (``train_loss_rank<r>``; NaN for epochs run with fewer processes); empty otherwise
    rank_loss: tuple[tuple[float, ...], ...] = ()

    def __len__(self) -> int:
        return len(self.epoch)


@dataclass(frozen=True)
class Training:
    """How a model was trained; ``history`` is ``None`` when no per-epoch records exist."""

    seconds: float | None
    epochs: float | None
    best_epoch: float | None
    selection: str | None
    history: History | None


@dataclass(frozen=True)
class ModelView:
    """One evaluated model. ``attacks`` maps attack name to ``{eps key: accuracy}``."""

    name: str
    objective: str | None
    architecture: str | None
    clean_accuracy: float | None
    worst_case_accuracy: float | None
    attacks: dict[str, dict[str, float | None]]
    curve: EpsCurve | None
    training: Training | None
    evaluation_seconds: float | None
    corruptions: Corruptions | None = None
    calibration: Calibration | None = None
    shifts: Shifts | None = None
    latency: Latency | None = None
    sanity_checks: tuple[SanityCheckRecord, ...] = ()
    #: the scorecard's ``escalation`` record, ``first_pass_worst_case_accuracy`` and
    #: ``headline`` (absent in scorecards written before escalation existed)
    escalation: EscalationRecord | None = None
    first_pass_worst_case_accuracy: float | None = None
    headline: str | None = None

    def attack_accuracy(self, attack: str, eps_key: str | None) -> float | None:
        """Accuracy under ``attack`` at the budget whose key is ``eps_key`` (``None`` if absent)."""
        if eps_key is None:
            return None
        return self.attacks.get(attack, {}).get(eps_key)

    @property
    def history(self) -> History | None:
        """The per-epoch history, or ``None`` if the model was not trained or has no records."""
        return None if self.training is None else self.training.history


@dataclass(frozen=True)
class Threat:
    """The threat model: norm, budget and input range, plus any extra fields as text."""

    norm: str | None
    eps: float | None
    bounds: tuple[float, float] | None
    extra: dict[str, str]

    @property
    def eps_key(self) -> str | None:
        """The key under which per-attack accuracies at the threat budget are stored."""
        return None if self.eps is None else format(self.eps, "g")


@dataclass(frozen=True)
class WarningEntry:
    """One warning raised by the evaluation (for example suspected gradient masking)."""

    code: str | None
    model: str | None
    message: str


@dataclass(frozen=True)
class ScorecardView:
    """Everything the renderers need, validated and typed."""

    run: dict[str, str]
    run_name: str
    created: str | None
    data: DataInfo
    threat: Threat
    versions: dict[str, str]
    timings: dict[str, float]
    models: tuple[ModelView, ...]
    warnings: tuple[WarningEntry, ...]
    #: the open-ended channel and stage sections present (``tabular``, ``text``, ``guard``,
    #: ``privacy``, ``poisoning``) as their JSON documents
    channels: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: the typed scorecard this view was built from
    scorecard: Scorecard = field(default_factory=Scorecard)

    @property
    def attack_names(self) -> list[str]:
        """Every attack evaluated on any model, in order of first appearance."""
        names: dict[str, None] = {}
        for model in self.models:
            for attack in model.attacks:
                names.setdefault(attack, None)
            if model.curve is not None:
                for attack in model.curve.per_attack:
                    names.setdefault(attack, None)
        return list(names)


# -- built from the typed scorecard ----------------------------------------------------------------
def _nan(value: Figure) -> float:
    return math.nan if value is None else float(value)


def _text(value: object) -> str | None:
    """Any scalar as text (``None`` stays ``None``); containers are rendered as compact JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, sort_keys=False, default=str)
    return str(value)


def _text_dict(doc: Mapping[str, Any]) -> dict[str, str]:
    """A flat mapping with every value as text (``None`` values dropped)."""
    return {str(k): t for k, v in doc.items() if (t := _text(v)) is not None}


def _curve(curve: AccuracyCurve | None) -> EpsCurve | None:
    if curve is None or not curve.eps:
        return None
    return EpsCurve(
        eps=tuple(_nan(e) for e in curve.eps),
        worst_case=tuple(_nan(v) for v in curve.worst_case),
        per_attack={a: tuple(_nan(v) for v in vs) for a, vs in curve.per_attack.items()},
    )


def _extra_number(value: object, where: str) -> float:
    """An untyped (extra) history figure as a float, NaN for ``null``."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScorecardError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _history(name: str, training: TrainingRecord) -> History | None:
    """The per-epoch records as columns; ``train_loss_rank<r>`` (torchrun) per process."""
    records = training.history
    if not records:
        return None
    extras = [r.extra() for r in records]
    ranks = 0
    while any(f"train_loss_rank{ranks}" in e for e in extras):
        ranks += 1
    where = f"models.{name}.training.history"
    rank_loss = tuple(
        tuple(
            _extra_number(e.get(f"train_loss_rank{k}"), f"{where}[{i}].train_loss_rank{k}")
            for i, e in enumerate(extras)
        )
        for k in range(ranks)
    )
    return History(
        epoch=tuple(_nan(i + 1 if r.epoch is None else r.epoch) for i, r in enumerate(records)),
        train_loss=tuple(_nan(r.train_loss) for r in records),
        val_clean_accuracy=tuple(_nan(r.val_clean_accuracy) for r in records),
        val_robust_accuracy=tuple(_nan(r.val_robust_accuracy) for r in records),
        rank_loss=rank_loss,
    )


def _training(name: str, training: TrainingRecord | None) -> Training | None:
    if training is None:
        return None
    return Training(
        seconds=_float(training.seconds),
        epochs=_float(training.epochs),
        best_epoch=_float(training.best_epoch),
        selection=training.selection,
        history=_history(name, training),
    )


def _float(value: Figure) -> float | None:
    return None if value is None else float(value)


def _model(name: str, m: ModelResult) -> ModelView:
    return ModelView(
        name=name,
        objective=m.objective,
        architecture=m.architecture,
        clean_accuracy=_float(m.clean_accuracy),
        worst_case_accuracy=_float(m.worst_case_accuracy),
        attacks={a: {k: _float(v) for k, v in by_eps.items()} for a, by_eps in m.attacks.items()},
        curve=_curve(m.accuracy_vs_eps),
        training=_training(name, m.training),
        evaluation_seconds=_float(m.evaluation_seconds),
        corruptions=m.corruptions if m.corruptions and m.corruptions.to_json() else None,
        calibration=m.calibration if m.calibration and m.calibration.to_json() else None,
        shifts=m.shifts if m.shifts and m.shifts.to_json() else None,
        latency=m.latency if m.latency and m.latency.to_json() else None,
        sanity_checks=tuple(c for c in m.sanity_checks if c.code is not None),
        escalation=m.escalation if m.escalation and m.escalation.to_json() else None,
        first_pass_worst_case_accuracy=_float(m.first_pass_worst_case_accuracy),
        headline=m.headline,
    )


def _threat(sc: Scorecard) -> Threat:
    t = sc.threat
    extra = {k: v for k, v in _text_dict(t.to_json()).items() if k not in {"norm", "eps", "bounds"}}
    bounds = None if t.bounds is None else (float(t.bounds[0]), float(t.bounds[1]))
    return Threat(norm=t.norm, eps=_float(t.eps), bounds=bounds, extra=extra)


def _warning(w: WarningRecord | str) -> WarningEntry:
    if isinstance(w, str):
        return WarningEntry(code=None, model=None, message=w)
    return WarningEntry(code=w.code, model=w.model, message=w.message or "(no message)")


def _channel_doc(section: Section) -> Mapping[str, Any]:
    return section.to_json()


def parse_scorecard(scorecard: Scorecard | Mapping[str, Any]) -> ScorecardView:
    """Validate ``scorecard`` (a :class:`Scorecard` or its JSON document, version 1 or
    :data:`SCHEMA_VERSION`) and return its render view.

    Raises:
        ScorecardError: the scorecard is not a mapping, has an unsupported ``schema_version``, or
            a part that is present has the wrong type or shape (the field is named).
    """
    sc = load_scorecard(scorecard)
    run = _text_dict(sc.run.to_json())
    return ScorecardView(
        run=run,
        run_name=sc.run.name or sc.data.name or "unnamed run",
        created=sc.run.created,
        data=sc.data,
        threat=_threat(sc),
        versions=dict(sc.versions),
        timings={k: float(v) for k, v in sc.timings.items() if v is not None},
        models=tuple(_model(name, m) for name, m in sc.models.items()),
        warnings=tuple(_warning(w) for w in sc.warnings),
        channels={name: _channel_doc(section) for name, section in sc.channels().items()},
        scorecard=sc,
    )
