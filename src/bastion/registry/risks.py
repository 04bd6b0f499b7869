"""The risk register: threats to a model, who owns them, how they are mitigated, and the evidence
in a scorecard that the mitigations work.

A register is a YAML file::

    version: 1
    risks:
      - id: EVA-1
        threat: evasion                  # see THREATS
        asset: digits classifier (hardened)
        likelihood: high                 # low | medium | high | critical
        impact: high
        owner: ml-platform
        mitigations: [PGD adversarial training (Madry et al. 2018)]
        evidence:                        # scorecard fields and the thresholds that show it works
          - {metric: models.hardened.worst_case_accuracy, min: 0.5}
          - {metric: data.fingerprint, equals: "a9ecc420..."}
          - {metric: models.hardened.calibration.clean.mean_confidence,
             minus: models.hardened.calibration.clean.accuracy, max: 0.05}

Each evidence item reads a scorecard field by the gate's metric paths
(:func:`bastion.evaluation.gate.resolve_metric`) and holds it to exactly one of ``min``, ``max``
(numbers; ``minus`` subtracts a second field first) or ``equals`` (any JSON value). A risk is
``mitigated`` when every item holds, ``at risk`` when one does not (a null/NaN figure fails),
and ``no evidence`` when it lists none. A field the scorecard does not have is an error (the
register does not fit the run), never a silent pass.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bastion.errors import BastionError, read_yaml_file
from bastion.evaluation.gate import MetricNotFound, parse_metric_path, resolve_metric

__all__ = [
    "LEVELS",
    "THREATS",
    "Evidence",
    "EvidenceResult",
    "Register",
    "Risk",
    "RiskError",
    "RiskStatus",
    "assess",
    "load_register",
    "parse_register",
    "render_risks",
]

LEVELS = {"low": 1, "medium": 2, "high": 3, "critical": 4}
"""Likelihood and impact levels, and their weights in a risk's score (likelihood x impact)."""

Level = Literal["low", "medium", "high", "critical"]
Threat = Literal[
    "evasion",
    "poisoning",
    "extraction",
    "inversion",
    "membership-inference",
    "prompt-injection",
    "drift",
    "other",
]
THREATS: tuple[str, ...] = get_args(Threat)
"""The threat categories a risk may name."""
Status = Literal["mitigated", "at risk", "no evidence"]


class RiskError(BastionError, ValueError):
    """A register that cannot be read, or that does not fit the scorecard judged."""


class Evidence(BaseModel):
    """One scorecard field and the threshold that shows a mitigation works."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    metric: str
    minus: str | None = None
    min: float | None = None
    max: float | None = None
    equals: Any = None
    name: str | None = None

    @model_validator(mode="after")
    def _one_threshold(self) -> Evidence:
        parse_metric_path(self.metric)
        if self.minus is not None:
            parse_metric_path(self.minus)
        given = [k for k in ("min", "max", "equals") if k in self.model_fields_set]
        if len(given) != 1:
            raise ValueError("expected exactly one of min, max or equals")
        if self.minus is not None and given == ["equals"]:
            raise ValueError("'minus' goes with min or max, not equals")
        return self

    def describe(self) -> str:
        """The item in words, e.g. ``models.m.worst_case_accuracy >= 0.5``."""
        if self.name:
            return self.name
        what = f"{self.metric} - {self.minus}" if self.minus else self.metric
        if "equals" in self.model_fields_set:
            return f"{what} == {_short(self.equals)}"
        return f"{what} >= {self.min:g}" if self.min is not None else f"{what} <= {self.max:g}"


class Risk(BaseModel):
    """One entry of the register."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=40)
    threat: Threat
    asset: str = Field(min_length=1)
    likelihood: Level
    impact: Level
    owner: str = Field(min_length=1)
    mitigations: list[str] = Field(default_factory=list)
    evidence: list[Evidence] = Field(default_factory=list)
    description: str | None = None

    @property
    def score(self) -> int:
        """likelihood x impact, from 1 (low, low) to 16 (critical, critical)."""
        return LEVELS[self.likelihood] * LEVELS[self.impact]


class Register(BaseModel):
    """A validated register."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    risks: list[Risk] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> Register:
        seen: set[str] = set()
        for r in self.risks:
            if r.id in seen:
                raise ValueError(f"risk id {r.id!r} is used twice")
            seen.add(r.id)
        return self


def _errors(e: ValidationError, source: str, doc: Any) -> str:
    lines = []
    for err in e.errors():
        loc = list(err["loc"])
        where = ""
        for i, part in enumerate(loc):
            where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
            if loc[:1] == ["risks"] and i == 1 and isinstance(part, int):
                risks = doc.get("risks") if isinstance(doc, Mapping) else None
                entry = risks[part] if isinstance(risks, list) and part < len(risks) else None
                if isinstance(entry, Mapping) and "id" in entry:
                    where += f" ({entry['id']})"
        msg = str(err["msg"]).removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if isinstance(got, dict) or err["type"] == "missing" else f" (got {got!r})"
        lines.append(f"{source}: {where}: {msg}{shown}" if where else f"{source}: {msg}")
    return lines[0] if len(lines) == 1 else lines[0] + f" (and {len(lines) - 1} more)"


def parse_register(doc: Any, *, source: str = "risks") -> Register:
    """Validate a parsed register; raises :class:`RiskError` naming the risk and field."""
    if not isinstance(doc, Mapping):
        raise RiskError(f"{source}: expected a mapping with a 'risks' list")
    try:
        return Register.model_validate(dict(doc))
    except ValidationError as e:
        raise RiskError(_errors(e, source, doc)) from None


def load_register(path: str | os.PathLike[str]) -> Register:
    """Read and validate a register YAML file."""
    p = Path(path)
    doc = read_yaml_file(p, RiskError, "risk register not found")
    return parse_register(doc, source=str(p))


@dataclass(frozen=True)
class EvidenceResult:
    """One evidence item judged: the value found, whether it holds, and why."""

    evidence: Evidence
    value: Any
    holds: bool
    message: str


@dataclass(frozen=True)
class RiskStatus:
    """A risk's status against one scorecard."""

    risk: Risk
    status: Status
    results: list[EvidenceResult]


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return None if math.isnan(float(v)) else float(v)


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 24 else text[:20] + "..."


def _judge(ev: Evidence, scorecard: Mapping[str, Any], where: str) -> EvidenceResult:
    def read(path: str) -> Any:
        try:
            return resolve_metric(scorecard, path)
        except MetricNotFound as e:
            raise RiskError(f"{where}: {path}: not in the scorecard: {e}") from None

    value = read(ev.metric)
    if "equals" in ev.model_fields_set:
        holds = value == ev.equals
        return EvidenceResult(ev, value, holds, "equal" if holds else f"differs: {_short(value)}")
    if value is not None and _number(value) is None:
        raise RiskError(f"{where}: {ev.metric}: expected a number, the scorecard has {value!r}")
    x = _number(value)
    if ev.minus is not None:
        other = read(ev.minus)
        if other is not None and _number(other) is None:
            raise RiskError(f"{where}: {ev.minus}: expected a number, the scorecard has {other!r}")
        y = _number(other)
        x = None if x is None or y is None else x - y
    if x is None:
        return EvidenceResult(ev, None, False, "no figure (null or NaN in the scorecard)")
    if ev.min is not None:
        holds = x >= ev.min - 1e-12
        return EvidenceResult(ev, x, holds, f"{x:.4g} {'>=' if holds else '<'} {ev.min:g}")
    assert ev.max is not None
    holds = x <= ev.max + 1e-12
    return EvidenceResult(ev, x, holds, f"{x:.4g} {'<=' if holds else '>'} {ev.max:g}")


def assess(
    register: Register, scorecard: Mapping[str, Any], *, source: str = "risks"
) -> list[RiskStatus]:
    """Each risk's status against ``scorecard`` (see the module docstring).

    Raises:
        RiskError: an evidence field the scorecard does not have, or a non-number where a
            number is compared (naming the risk, the item and the field).
    """
    out = []
    for i, risk in enumerate(register.risks):
        results = [
            _judge(ev, scorecard, f"{source}: risks[{i}] ({risk.id}).evidence[{j}]")
            for j, ev in enumerate(risk.evidence)
        ]
        status: Status
        if not results:
            status = "no evidence"
        elif all(r.holds for r in results):
            status = "mitigated"
        else:
            status = "at risk"
        out.append(RiskStatus(risk, status, results))
    return out


def render_risks(statuses: Sequence[RiskStatus], *, title: str = "") -> str:
    """A plain-text report: one line per risk (id, threat, score, owner, status), then one
    indented line per evidence item."""
    rows = [("id", "threat", "likelihood x impact", "owner", "status")]
    for s in statuses:
        r = s.risk
        rows.append((r.id, r.threat, f"{r.likelihood} x {r.impact} = {r.score}", r.owner, s.status))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [title] if title else []
    for k, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if k == 0:
            continue
        for res in statuses[k - 1].results:
            mark = "ok  " if res.holds else "FAIL"
            lines.append(f"    {mark} {res.evidence.describe()}: {res.message}")
    counts = {
        st: sum(s.status == st for s in statuses) for st in ("mitigated", "at risk", "no evidence")
    }
    lines.append(", ".join(f"{n} {st}" for st, n in counts.items()))
    return "\n".join(lines)
