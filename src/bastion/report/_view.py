"""A typed, validated view of a scorecard, shared by the HTML, Markdown and plot renderers.

A scorecard is a JSON-able mapping written by the evaluation stage (see the package docstring
for its shape). Renderers never index the raw mapping themselves: :func:`parse_scorecard` reads
it once and returns frozen dataclasses. Missing optional parts become ``None`` or empty
containers so the renderers can skip them with a note; parts that are present but malformed
(a list where a mapping belongs, a string where a number belongs, curves whose lengths do not
match their eps grid) raise :class:`ScorecardError` naming the offending field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bastion.errors import BastionError

SUPPORTED_SCHEMA_VERSIONS = (1,)


class ScorecardError(BastionError, ValueError):
    """A scorecard handed to the report is malformed (names the field and what was expected)."""


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
    corruptions: Mapping[str, Any] | None = None
    calibration: Mapping[str, Any] | None = None
    shifts: Mapping[str, Any] | None = None
    latency: Mapping[str, Any] | None = None
    sanity_checks: tuple[Mapping[str, Any], ...] = ()
    #: the scorecard's ``escalation`` record, ``first_pass_worst_case_accuracy`` and
    #: ``headline`` (absent in scorecards written before escalation existed)
    escalation: Mapping[str, Any] | None = None
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
    data: dict[str, Any]
    threat: Threat
    versions: dict[str, str]
    timings: dict[str, float]
    models: tuple[ModelView, ...]
    warnings: tuple[WarningEntry, ...]
    channels: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

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


# -- low-level readers --------------------------------------------------------------------------
def _mapping(value: object, where: str) -> Mapping[str, Any]:
    """``value`` as a mapping; ``None`` (absent) reads as empty."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ScorecardError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _sequence(value: object, where: str) -> Sequence[Any]:
    """``value`` as a list or tuple; ``None`` (absent) reads as empty."""
    if value is None:
        return ()
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ScorecardError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _number(value: object, where: str) -> float | None:
    """``value`` as a float; ``None`` stays ``None``. Booleans and strings are rejected."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScorecardError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _series(value: object, where: str) -> tuple[float, ...]:
    """A list of numbers; ``null`` entries become NaN."""
    out = []
    for i, item in enumerate(_sequence(value, where)):
        number = _number(item, f"{where}[{i}]")
        out.append(math.nan if number is None else number)
    return tuple(out)


def _text(value: object) -> str | None:
    """Any scalar as text (``None`` stays ``None``); containers are rendered as compact JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping | list | tuple):
        try:
            return json.dumps(value, sort_keys=False, default=str)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def _text_dict(value: object, where: str) -> dict[str, str]:
    """A flat mapping with every value as text (``None`` values dropped)."""
    out: dict[str, str] = {}
    for key, item in _mapping(value, where).items():
        text = _text(item)
        if text is not None:
            out[str(key)] = text
    return out


# -- parts --------------------------------------------------------------------------------------
def _parse_curve(value: object, where: str) -> EpsCurve | None:
    raw = _mapping(value, where)
    if not raw:
        return None
    eps = _series(raw.get("eps"), f"{where}.eps")
    if not eps:
        return None
    worst = _series(raw.get("worst_case"), f"{where}.worst_case")
    if worst and len(worst) != len(eps):
        raise ScorecardError(
            f"{where}.worst_case: expected {len(eps)} values (one per eps), got {len(worst)}"
        )
    per_attack: dict[str, tuple[float, ...]] = {}
    for attack, series in _mapping(raw.get("per_attack"), f"{where}.per_attack").items():
        values = _series(series, f"{where}.per_attack.{attack}")
        if len(values) != len(eps):
            raise ScorecardError(
                f"{where}.per_attack.{attack}: expected {len(eps)} values (one per eps), "
                f"got {len(values)}"
            )
        per_attack[str(attack)] = values
    return EpsCurve(eps=eps, worst_case=worst, per_attack=per_attack)


def _parse_history(value: object, where: str) -> History | None:
    records = _sequence(value, where)
    if not records:
        return None
    columns: dict[str, list[float]] = {
        "epoch": [],
        "train_loss": [],
        "val_clean_accuracy": [],
        "val_robust_accuracy": [],
    }
    for i, record in enumerate(records):
        row = _mapping(record, f"{where}[{i}]")
        for key, column in columns.items():
            number = _number(row.get(key), f"{where}[{i}].{key}")
            if number is None and key == "epoch":
                number = float(i + 1)
            column.append(math.nan if number is None else number)
    ranks = 0
    while any(f"train_loss_rank{ranks}" in _mapping(r, where) for r in records):
        ranks += 1
    rank_loss = tuple(
        tuple(
            math.nan if v is None else v
            for v in (
                _number(_mapping(r, where).get(f"train_loss_rank{k}"), f"{where}[{i}]")
                for i, r in enumerate(records)
            )
        )
        for k in range(ranks)
    )
    return History(
        epoch=tuple(columns["epoch"]),
        train_loss=tuple(columns["train_loss"]),
        val_clean_accuracy=tuple(columns["val_clean_accuracy"]),
        val_robust_accuracy=tuple(columns["val_robust_accuracy"]),
        rank_loss=rank_loss,
    )


def _parse_training(value: object, where: str) -> Training | None:
    if value is None:
        return None
    raw = _mapping(value, where)
    return Training(
        seconds=_number(raw.get("seconds"), f"{where}.seconds"),
        epochs=_number(raw.get("epochs"), f"{where}.epochs"),
        best_epoch=_number(raw.get("best_epoch"), f"{where}.best_epoch"),
        selection=_text(raw.get("selection")),
        history=_parse_history(raw.get("history"), f"{where}.history"),
    )


def _parse_model(name: str, value: object) -> ModelView:
    where = f"models.{name}"
    raw = _mapping(value, where)
    attacks: dict[str, dict[str, float | None]] = {}
    for attack, by_eps in _mapping(raw.get("attacks"), f"{where}.attacks").items():
        attacks[str(attack)] = {
            str(key): _number(acc, f"{where}.attacks.{attack}.{key}")
            for key, acc in _mapping(by_eps, f"{where}.attacks.{attack}").items()
        }
    return ModelView(
        name=name,
        objective=_text(raw.get("objective")),
        architecture=_text(raw.get("architecture")),
        clean_accuracy=_number(raw.get("clean_accuracy"), f"{where}.clean_accuracy"),
        worst_case_accuracy=_number(raw.get("worst_case_accuracy"), f"{where}.worst_case_accuracy"),
        attacks=attacks,
        curve=_parse_curve(raw.get("accuracy_vs_eps"), f"{where}.accuracy_vs_eps"),
        training=_parse_training(raw.get("training"), f"{where}.training"),
        evaluation_seconds=_number(raw.get("evaluation_seconds"), f"{where}.evaluation_seconds"),
        corruptions=(
            _mapping(raw["corruptions"], f"{where}.corruptions") if raw.get("corruptions") else None
        ),
        calibration=(
            _mapping(raw["calibration"], f"{where}.calibration") if raw.get("calibration") else None
        ),
        shifts=_mapping(raw["shifts"], f"{where}.shifts") if raw.get("shifts") else None,
        latency=_mapping(raw["latency"], f"{where}.latency") if raw.get("latency") else None,
        sanity_checks=tuple(
            c for c in raw.get("sanity_checks") or [] if isinstance(c, Mapping) and "code" in c
        ),
        escalation=(
            _mapping(raw["escalation"], f"{where}.escalation") if raw.get("escalation") else None
        ),
        first_pass_worst_case_accuracy=_number(
            raw.get("first_pass_worst_case_accuracy"), f"{where}.first_pass_worst_case_accuracy"
        ),
        headline=_text(raw.get("headline")),
    )


def _parse_threat(value: object) -> Threat:
    raw = _mapping(value, "threat")
    bounds_raw = raw.get("bounds")
    bounds: tuple[float, float] | None = None
    if bounds_raw is not None:
        pair = _series(bounds_raw, "threat.bounds")
        if len(pair) != 2:
            raise ScorecardError(f"threat.bounds: expected [lo, hi], got {bounds_raw!r}")
        bounds = (pair[0], pair[1])
    extra = {
        key: text
        for key, text in _text_dict(raw, "threat").items()
        if key not in {"norm", "eps", "bounds"}
    }
    return Threat(
        norm=_text(raw.get("norm")),
        eps=_number(raw.get("eps"), "threat.eps"),
        bounds=bounds,
        extra=extra,
    )


def _parse_warnings(value: object) -> tuple[WarningEntry, ...]:
    out = []
    for i, item in enumerate(_sequence(value, "warnings")):
        if isinstance(item, str):
            out.append(WarningEntry(code=None, model=None, message=item))
            continue
        raw = _mapping(item, f"warnings[{i}]")
        out.append(
            WarningEntry(
                code=_text(raw.get("code")),
                model=_text(raw.get("model")),
                message=_text(raw.get("message")) or "(no message)",
            )
        )
    return tuple(out)


def parse_scorecard(scorecard: Mapping[str, Any]) -> ScorecardView:
    """Validate ``scorecard`` and return its typed view.

    Raises:
        ScorecardError: the scorecard is not a mapping, has an unsupported ``schema_version``, or
            a part that is present has the wrong type or shape.
    """
    if not isinstance(scorecard, Mapping):
        raise ScorecardError(f"scorecard: expected a mapping, got {type(scorecard).__name__}")
    version = scorecard.get("schema_version")
    if version is not None and version not in SUPPORTED_SCHEMA_VERSIONS:
        raise ScorecardError(
            f"schema_version: expected one of {list(SUPPORTED_SCHEMA_VERSIONS)}, got {version!r}"
        )
    run = _text_dict(scorecard.get("run"), "run")
    data = dict(_mapping(scorecard.get("data"), "data"))
    models = tuple(
        _parse_model(str(name), raw)
        for name, raw in _mapping(scorecard.get("models"), "models").items()
    )
    timings: dict[str, float] = {}
    for key, seconds in _mapping(scorecard.get("timings"), "timings").items():
        number = _number(seconds, f"timings.{key}")
        if number is not None:
            timings[str(key)] = number
    data_name = _text(data.get("name"))
    return ScorecardView(
        run=run,
        run_name=run.get("name") or data_name or "unnamed run",
        created=run.get("created"),
        data=data,
        threat=_parse_threat(scorecard.get("threat")),
        versions=_text_dict(scorecard.get("versions"), "versions"),
        timings=timings,
        models=models,
        warnings=_parse_warnings(scorecard.get("warnings")),
        channels={
            name: _mapping(scorecard[name], name)
            for name in ("tabular", "text", "guard", "privacy", "poisoning")
            if scorecard.get(name)
        },
    )
