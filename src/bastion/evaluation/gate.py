"""The robustness gate: check a scorecard against a policy of thresholds, for CI.

A policy is a YAML file with a list of rules::

    rules:
      - {metric: models.hardened.worst_case_accuracy, min: 0.5}
      - {metric: models.hardened.attacks.pgd-50x5.0.1, min: 0.7}
      - {metric: timings.total_seconds, max: 600}
      - {metric: models.hardened.worst_case_accuracy, max_drop: 0.02}   # needs a baseline
      - {check: warning-absent, code: single-step-beats-iterative, model: hardened}
      - {check: no-warnings}

A ``metric`` is a dotted path into the scorecard (see :func:`parse_metric_path`); it gets exactly
one of ``min`` (value >= min), ``max`` (value <= max) or ``max_drop`` (baseline value - value
<= max_drop, against the same path of a baseline scorecard). A ``check`` rule inspects the
scorecard's ``warnings``, or (``{check: escalation-complete}``) that every model's escalation
finished.

Every judgement also carries one implicit rule, after the policy's: a model whose evaluation
escalated (a sanity check fired, :mod:`bastion.evaluation.escalation`) but whose escalation could
not finish (``escalation.status: incomplete``) fails the gate, since its worst case is
unverified. It is added only to scorecards with escalation records (older ones have none).

The gate fails closed: a metric that is missing, null or not a number fails its rule (naming the
path), and inputs that cannot be judged at all (a scorecard from a newer schema, a baseline from
another data set or threat model, a malformed policy) raise :class:`GateError`. The command line
maps a pass to exit status 0, a failed rule to 1 and a :class:`GateError` to 2.
"""

from __future__ import annotations

import json
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bastion.errors import BastionError, yaml_error_line
from bastion.evaluation.scorecard import SCHEMA_VERSION
from bastion.evaluation.scorecard_model import (
    AUDIT_KINDS,
    AuditDocument,
    Scorecard,
    ScorecardError,
    error_message,
    load_scorecard,
)

GateDocument = Scorecard | AuditDocument
"""What the gate judges: a scorecard, or a privacy or extraction audit document."""

__all__ = [
    "SUPPORTED_SCHEMA_VERSION",
    "CheckRule",
    "GateError",
    "GateOutcome",
    "GatePolicy",
    "GateResult",
    "MetricRule",
    "PathPart",
    "RuleResult",
    "check_comparable",
    "check_scorecard",
    "evaluate_gate",
    "load_policy",
    "parse_metric_path",
    "parse_policy",
    "read_gate_scorecard",
    "render_gate_markdown",
    "resolve_metric",
    "run_gate",
    "write_junit_error",
    "write_junit_xml",
]

SUPPORTED_SCHEMA_VERSION = SCHEMA_VERSION
"""The newest scorecard schema this gate understands."""

_TOLERANCE = 1e-12  # float slack in comparisons (accuracies are ratios of counts)


class GateError(BastionError, ValueError):
    """The gate cannot judge its inputs (bad policy, unreadable or incompatible scorecards)."""


# --------------------------------------------------------------------------- metric paths


@dataclass(frozen=True)
class PathPart:
    """One part of a metric path: ``text``, and whether it was written in brackets (then it is
    one key, dots included)."""

    text: str
    bracketed: bool = False


class MetricNotFound(LookupError):
    """A metric path does not lead to a value (the message says where it stopped)."""


def parse_metric_path(path: str) -> tuple[PathPart, ...]:
    """Split a metric path into parts.

    Parts are separated by dots; a part in brackets (``attacks["pgd"]["0.3"]``, quotes optional)
    is taken whole, dots included. List elements are addressed by an integer part
    (``accuracy_vs_eps.worst_case.2``, ``worst_case[-1]``). Dotted parts that together spell one
    key are joined when the path is resolved, so ``attacks.pgd-50x5.0.2`` reaches the key
    ``"0.2"`` without brackets.

    Raises:
        ValueError: for an empty path, an empty part (``a..b``, a leading or trailing dot) or an
            unclosed or empty bracket.
    """
    if not isinstance(path, str) or not path.strip():
        raise ValueError("expected a non-empty dotted path such as 'models.NAME.clean_accuracy'")
    parts: list[PathPart] = []
    i, size = 0, len(path)
    while i < size:
        if path[i] == "[":
            close = path.find("]", i)
            if close < 0:
                raise ValueError(f"unclosed '[' at position {i} of {path!r}")
            inner = path[i + 1 : close].strip()
            if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "\"'":
                inner = inner[1:-1]
            if not inner:
                raise ValueError(f"empty brackets at position {i} of {path!r}")
            parts.append(PathPart(inner, bracketed=True))
            i = close + 1
            if i < size and path[i] not in ".[":
                raise ValueError(f"expected '.' or '[' after ']' at position {i} of {path!r}")
        else:
            j = i
            while j < size and path[j] not in ".[]":
                j += 1
            if j < size and path[j] == "]":
                raise ValueError(f"unmatched ']' at position {j} of {path!r}")
            if j == i:
                raise ValueError(f"empty part at position {i} of {path!r}")
            parts.append(PathPart(path[i:j]))
            i = j
        if i < size and path[i] == ".":
            i += 1
            if i == size:
                raise ValueError(f"{path!r} ends with '.'")
    return tuple(parts)


def _key_candidates(key: str) -> list[str]:
    """``key`` and, for a number, its scorecard spelling (``"0.30" -> "0.3"``)."""
    out = [key]
    try:
        normal = format(float(key), "g")
    except ValueError:
        return out
    if normal != key:
        out.append(normal)
    return out


def _where(walked: list[str]) -> str:
    return "the top level" if not walked else repr(".".join(walked))


def _keys_hint(node: Mapping[str, Any]) -> str:
    keys = [str(k) for k in node]
    if not keys:
        return "it is empty"
    shown = ", ".join(keys[:12]) + (", ..." if len(keys) > 12 else "")
    return f"keys: {shown}"


def resolve_metric(doc: Any, path: str | Sequence[PathPart]) -> Any:
    """The value at a metric path (see :func:`parse_metric_path`) in a JSON-like document.

    At a mapping, the longest run of dotted parts that names a key wins (so both ``"0.2"`` and
    a model named ``"v1.2"`` are reachable); at a list, the part must be an integer index.

    Raises:
        MetricNotFound: naming where the path stopped and what was there instead.
    """
    parts = parse_metric_path(path) if isinstance(path, str) else tuple(path)
    node = doc
    walked: list[str] = []
    i = 0
    while i < len(parts):
        part = parts[i]
        if isinstance(node, Mapping):
            if part.bracketed:
                spans = [1]
            else:
                run = 0
                while i + run < len(parts) and not parts[i + run].bracketed:
                    run += 1
                spans = list(range(run, 0, -1))
            for span in spans:
                key = ".".join(p.text for p in parts[i : i + span])
                found = next((k for k in _key_candidates(key) if k in node), None)
                if found is not None:
                    node = node[found]
                    walked.append(found)
                    i += span
                    break
            else:
                raise MetricNotFound(
                    f"no key {part.text!r} under {_where(walked)} ({_keys_hint(node)})"
                )
        elif isinstance(node, list):
            try:
                index = int(part.text)
            except ValueError:
                raise MetricNotFound(
                    f"{_where(walked)} is a list; expected an integer index, got {part.text!r}"
                ) from None
            if not -len(node) <= index < len(node):
                raise MetricNotFound(
                    f"index {index} is out of range for {_where(walked)} (a list of {len(node)})"
                )
            node = node[index]
            walked.append(str(index))
            i += 1
        else:
            raise MetricNotFound(
                f"{_where(walked)} is a {type(node).__name__}, not a mapping or list, so it "
                f"has no {part.text!r}"
            )
    return node


# --------------------------------------------------------------------------- policy


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str | None = Field(default=None, description="label shown in reports")


class MetricRule(_Rule):
    """A threshold on one number of the scorecard: exactly one of min, max and max_drop."""

    metric: str
    min: float | None = None
    max: float | None = None
    max_drop: float | None = Field(default=None, ge=0)

    @field_validator("metric")
    @classmethod
    def _valid_path(cls, v: str) -> str:
        parse_metric_path(v)
        return v

    @model_validator(mode="after")
    def _one_threshold(self) -> MetricRule:
        given = [k for k in ("min", "max", "max_drop") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "expected exactly one of min, max or max_drop"
                + (f" (got {', '.join(given)}; write one rule per threshold)" if given else "")
            )
        return self

    @property
    def kind(self) -> Literal["min", "max", "max_drop"]:
        if self.min is not None:
            return "min"
        if self.max is not None:
            return "max"
        return "max_drop"

    @property
    def limit(self) -> float:
        for value in (self.min, self.max, self.max_drop):
            if value is not None:
                return value
        raise RuntimeError("a validated MetricRule has a threshold")  # pragma: no cover

    def describe(self) -> str:
        op = {"min": ">=", "max": "<=", "max_drop": "drops at most"}[self.kind]
        return f"{self.metric} {op} {_fmt(self.limit)}"


class CheckRule(_Rule):
    """A check of the scorecard's ``warnings``: none at all (``no-warnings``), or none with a
    given ``code`` (``warning-absent``); or that every escalation finished
    (``escalation-complete``); ``model`` restricts any of them to one model."""

    check: Literal["no-warnings", "warning-absent", "escalation-complete"]
    code: str | None = Field(default=None, min_length=1)
    model: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _code_matches_check(self) -> CheckRule:
        if self.check == "warning-absent" and self.code is None:
            raise ValueError("check 'warning-absent' needs the warning 'code' to look for")
        if self.check != "warning-absent" and self.code is not None:
            raise ValueError(
                f"check {self.check!r} takes no 'code'; use check 'warning-absent' for one code"
            )
        return self

    def describe(self) -> str:
        scope = f" for model {self.model!r}" if self.model else ""
        if self.check == "escalation-complete":
            return f"escalation finished{scope}"
        if self.check == "no-warnings":
            return f"no warnings{scope}"
        return f"no {self.code!r} warning{scope}"


Rule = MetricRule | CheckRule


@dataclass(frozen=True)
class GatePolicy:
    """A validated policy: its rules, in order, and where it came from."""

    rules: tuple[Rule, ...]
    source: str = "policy"

    @property
    def needs_baseline(self) -> bool:
        return any(isinstance(r, MetricRule) and r.kind == "max_drop" for r in self.rules)


def _format_errors(e: ValidationError, where: str) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if isinstance(got, dict) or err["type"] == "missing" else f" (got {got!r})"
        lines.append(f"{where}.{loc}: {msg}{shown}" if loc else f"{where}: {msg}")
    return "\n".join(lines)


def parse_policy(doc: Any, *, source: str = "policy") -> GatePolicy:
    """Validate a parsed policy document; raises :class:`GateError` naming the rule and field.

    Errors read ``SOURCE: rules[INDEX].FIELD: what was expected (got VALUE)``.
    """
    if not isinstance(doc, Mapping):
        raise GateError(
            f"{source}: expected a mapping with a 'rules' list, got {type(doc).__name__}"
        )
    unknown = sorted(str(k) for k in doc if k not in ("rules", "version"))
    if unknown:
        raise GateError(f"{source}: unknown top-level key(s) {', '.join(unknown)} (expected rules)")
    version = doc.get("version", 1)
    if version != 1:
        raise GateError(f"{source}: version: expected 1, got {version!r}")
    raw_rules = doc.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise GateError(f"{source}: rules: expected a non-empty list of rules, got {raw_rules!r}")
    rules: list[Rule] = []
    for i, raw in enumerate(raw_rules):
        where = f"{source}: rules[{i}]"
        if not isinstance(raw, Mapping):
            raise GateError(f"{where}: expected a mapping, got {raw!r}")
        if "check" in raw and "metric" in raw:
            raise GateError(f"{where}: a rule has either 'metric' or 'check', not both")
        cls: type[MetricRule] | type[CheckRule]
        if "metric" in raw:
            cls = MetricRule
        elif "check" in raw:
            cls = CheckRule
        else:
            raise GateError(
                f"{where}: expected a 'metric' rule (with min, max or max_drop) or a 'check' "
                "rule (no-warnings, warning-absent, escalation-complete), got keys "
                f"{sorted(map(str, raw))}"
            )
        try:
            rules.append(cls.model_validate(dict(raw)))
        except ValidationError as e:
            raise GateError(_format_errors(e, where)) from None
    return GatePolicy(tuple(rules), source)


def load_policy(path: str | os.PathLike[str]) -> GatePolicy:
    """Read and validate a policy YAML file."""
    p = Path(path)
    if not p.is_file():
        raise GateError(f"{p}: policy file not found")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise GateError(f"{p}: not valid YAML: {yaml_error_line(e)}") from None
    return parse_policy(doc, source=str(p))


# --------------------------------------------------------------------------- scorecards


def check_scorecard(doc: Any, what: str = "scorecard") -> Mapping[str, Any]:
    """Check that ``doc`` is a scorecard this gate can read; returns it.

    Raises:
        GateError: not a mapping, no integer ``schema_version``, a schema newer than
            :data:`SUPPORTED_SCHEMA_VERSION`, or no ``models`` mapping.
    """
    if not isinstance(doc, Mapping):
        raise GateError(f"{what}: expected a scorecard (a JSON object), got {type(doc).__name__}")
    version = doc.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise GateError(f"{what}: not a bastion scorecard (no valid 'schema_version')")
    if version > SUPPORTED_SCHEMA_VERSION:
        raise GateError(
            f"{what}: written with scorecard schema_version {version}, newer than this bastion "
            f"reads ({SUPPORTED_SCHEMA_VERSION}); upgrade bastion to gate it"
        )
    if not isinstance(doc.get("models"), Mapping):
        raise GateError(f"{what}: not a bastion scorecard (no 'models' mapping)")
    return doc


def read_gate_scorecard(path: str | os.PathLike[str], what: str | None = None) -> GateDocument:
    """Load a scorecard file for the gate as a typed :class:`Scorecard` (version 1 migrated), or
    an audit document as an :class:`AuditDocument`; every problem is a :class:`GateError`."""
    p = Path(path)
    label = what or str(p)
    if not p.is_file():
        raise GateError(f"{label}: scorecard not found")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GateError(f"{label}: not a scorecard (invalid JSON: {e})") from None
    return typed_scorecard(doc, label)


def typed_scorecard(doc: GateDocument | Any, what: str = "scorecard") -> GateDocument:
    """``doc`` checked by :func:`check_scorecard` and validated as a :class:`Scorecard` (an
    audit document, ``kind`` in :data:`AUDIT_KINDS`, as an :class:`AuditDocument`); a malformed
    part is a :class:`GateError` naming the field."""
    if isinstance(doc, Scorecard | AuditDocument):
        return doc
    check_scorecard(doc, what)
    try:
        if doc.get("kind") in AUDIT_KINDS:
            return AuditDocument.model_validate(doc)
        return load_scorecard(doc, what)
    except ScorecardError as e:
        raise GateError(f"{what}: malformed scorecard: {e}") from None
    except ValidationError as e:
        raise GateError(f"{what}: malformed audit document: {error_message(e)}") from None


def check_comparable(
    scorecard: GateDocument | Mapping[str, Any], baseline: GateDocument | Mapping[str, Any]
) -> None:
    """Raise :class:`GateError` unless the two scorecards measured the same thing: the same data
    (``data.fingerprint``) under the same threat model (``threat.norm`` and ``threat.eps``)."""
    sc, base = typed_scorecard(scorecard, "scorecard"), typed_scorecard(baseline, "baseline")
    if not isinstance(sc, Scorecard) or not isinstance(base, Scorecard):
        raise GateError("baseline: audit documents are not compared with a baseline")
    fp, base_fp = sc.data.fingerprint, base.data.fingerprint
    if fp is None or base_fp is None:
        raise GateError(
            f"{'scorecard' if fp is None else 'baseline'}: no data.fingerprint, so it cannot be "
            "compared"
        )
    if fp != base_fp:
        raise GateError(
            "baseline: evaluated on a different data set (data.fingerprint "
            f"{base_fp[:12]}... ({base.data.name}) vs {fp[:12]}... ({sc.data.name})); its "
            "figures are not comparable"
        )
    for field in ("norm", "eps"):
        a, b = getattr(sc.threat, field), getattr(base.threat, field)
        if a is not None and b is not None and a != b:
            raise GateError(
                f"baseline: evaluated under a different threat model (threat.{field} {b!r} vs "
                f"{a!r}); its figures are not comparable"
            )


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class RuleResult:
    """The outcome of one rule.

    Attributes:
        index: position of the rule in the policy.
        rule: the rule.
        value: the metric's value (``None`` if missing or not a number); for a check rule, the
            number of matching warnings.
        threshold: the bound the value was held to: ``min`` or ``max``; for ``max_drop`` the
            lowest passing value (baseline value - max_drop, ``None`` without one); 0 for a
            check rule.
        passed: whether the rule holds.
        message: what was found, in words.
    """

    index: int
    rule: Rule
    value: float | None
    threshold: float | None
    passed: bool
    message: str

    @property
    def label(self) -> str:
        return self.rule.name or self.rule.describe()


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict on one scorecard."""

    passed: bool
    results: list[RuleResult]
    name: str = "scorecard"
    source: str | None = None

    @property
    def title(self) -> str:
        """The run name, with the scorecard file when known."""
        return f"{self.name} ({self.source})" if self.source else self.name

    @property
    def failures(self) -> list[RuleResult]:
        return [r for r in self.results if not r.passed]


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return format(float(v), ".4g")


def _number(doc: Mapping[str, Any], metric: str, what: str) -> tuple[float | None, str]:
    """The number at ``metric`` or ``None`` with the reason."""
    try:
        value = resolve_metric(doc, metric)
    except MetricNotFound as e:
        return None, f"{metric}: not in the {what}: {e}"
    if value is None:
        return None, f"{metric}: null in the {what} (a NaN or a figure that was not computed)"
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = type(value).__name__
        return None, f"{metric}: is a {kind} in the {what}, not a number"
    if not math.isfinite(value):
        return None, f"{metric}: is {value} in the {what}, not a finite number"
    return float(value), ""


def _evaluate_metric(
    index: int, rule: MetricRule, scorecard: Mapping[str, Any], baseline: Mapping[str, Any] | None
) -> RuleResult:
    value, why = _number(scorecard, rule.metric, "scorecard")
    limit = rule.limit
    if rule.kind == "max_drop":
        if baseline is None:  # evaluate_gate raises first; kept for direct callers
            return RuleResult(index, rule, value, None, False, "max_drop needs a baseline")
        base, base_why = _number(baseline, rule.metric, "baseline scorecard")
        threshold = None if base is None else base - limit
        if value is None or base is None:
            return RuleResult(index, rule, value, threshold, False, why or base_why)
        drop = base - value
        passed = drop <= limit + _TOLERANCE
        rel = "within" if passed else "exceeds"
        msg = (
            f"{_fmt(value)} vs baseline {_fmt(base)}: drop {_fmt(drop)} {rel} the allowed "
            f"{_fmt(limit)}"
        )
        return RuleResult(index, rule, value, threshold, passed, msg)
    if value is None:
        return RuleResult(index, rule, None, limit, False, why)
    if rule.kind == "min":
        passed = value >= limit - _TOLERANCE
        msg = f"{_fmt(value)} {'>=' if passed else '<'} min {_fmt(limit)}"
    else:
        passed = value <= limit + _TOLERANCE
        msg = f"{_fmt(value)} {'<=' if passed else '>'} max {_fmt(limit)}"
    return RuleResult(index, rule, value, limit, passed, msg)


def _evaluate_escalation(index: int, rule: CheckRule, scorecard: GateDocument) -> RuleResult:
    models = scorecard.models
    if rule.model is not None and rule.model not in models:
        return RuleResult(
            index, rule, None, 0, False, f"model {rule.model!r} is not in the scorecard"
        )
    bad = []
    for name, entry in models.items():
        if rule.model is not None and name != rule.model:
            continue
        esc = entry.escalation
        if esc is not None and esc.status == "incomplete":
            why = ", ".join(esc.unanswered) or "?"
            bad.append(f"{name} (no remedy finished for {why})")
    if bad:
        return RuleResult(
            index,
            rule,
            len(bad),
            0,
            False,
            f"escalation could not finish, the worst case is unverified: {'; '.join(bad)}",
        )
    return RuleResult(index, rule, 0, 0, True, "every escalation finished (or none was needed)")


def _evaluate_check(index: int, rule: CheckRule, scorecard: GateDocument) -> RuleResult:
    if rule.check == "escalation-complete":
        return _evaluate_escalation(index, rule, scorecard)
    if "warnings" not in scorecard.model_fields_set:
        return RuleResult(index, rule, None, 0, False, "the scorecard has no 'warnings' list")
    models = scorecard.models
    if rule.model is not None and rule.model not in models:
        return RuleResult(
            index,
            rule,
            None,
            0,
            False,
            f"model {rule.model!r} is not in the scorecard (models: {', '.join(models)})",
        )
    matching = [
        w
        for w in scorecard.warnings
        if isinstance(w, str)  # a bare message matches every rule: it cannot be told apart
        or (
            (rule.model is None or w.model == rule.model)
            and (rule.code is None or w.code == rule.code)
        )
    ]
    if not matching:
        return RuleResult(index, rule, 0, 0, True, f"{rule.describe()}: none recorded")
    shown = "; ".join(
        f"malformed warning {w!r}"
        if isinstance(w, str)
        else f"{_or(w.code)} ({_or(w.model)}): {w.message or ''}"
        for w in matching
    )
    n = len(matching)
    return RuleResult(index, rule, n, 0, False, f"{n} warning{'s' * (n != 1)}: {shown}")


def _or(value: str | None) -> str:
    return "?" if value is None else value


def evaluate_gate(
    scorecard: GateDocument | Mapping[str, Any],
    policy: GatePolicy | Mapping[str, Any],
    baseline: GateDocument | Mapping[str, Any] | None = None,
    *,
    name: str | None = None,
    source: str | None = None,
) -> GateResult:
    """Judge a scorecard against a policy (and, for ``max_drop`` rules, a baseline scorecard).

    Every rule is evaluated (none is skipped after a failure); the gate passes only if all do.
    A metric missing from the scorecard (or the baseline) fails its rule. Metric paths resolve
    on the scorecard's JSON document (:meth:`Scorecard.to_json`), checks on the typed model.

    Args:
        scorecard: a :class:`Scorecard` or its JSON document (version 1 is migrated).
        policy: a :class:`GatePolicy` or a policy document to validate.
        baseline: the scorecard to compare ``max_drop`` rules with.
        name: how reports name this scorecard (default: its ``run.name``).
        source: the scorecard's file, shown in reports.

    Raises:
        GateError: an invalid policy; a document that is not a readable scorecard or is from a
            newer schema; ``max_drop`` rules without a baseline; a baseline from another data
            set or threat model.
    """
    pol = policy if isinstance(policy, GatePolicy) else parse_policy(policy)
    sc = typed_scorecard(scorecard, "scorecard")
    base = None if baseline is None else typed_scorecard(baseline, "baseline")
    if base is not None:
        check_comparable(sc, base)
    elif pol.needs_baseline:
        first = next(
            i for i, r in enumerate(pol.rules) if isinstance(r, MetricRule) and r.kind == "max_drop"
        )
        raise GateError(
            f"{pol.source}: rules[{first}].max_drop: compares with a baseline scorecard; "
            "give one (--baseline)"
        )
    doc, base_doc = sc.to_json(), None if base is None else base.to_json()
    results = [
        _evaluate_metric(i, r, doc, base_doc)
        if isinstance(r, MetricRule)
        else _evaluate_check(i, r, sc)
        for i, r in enumerate(pol.rules)
    ]
    escalated = any(m.escalation is not None for m in sc.models.values())
    if escalated and not any(
        isinstance(r, CheckRule) and r.check == "escalation-complete" and r.model is None
        for r in pol.rules
    ):
        implicit = CheckRule(check="escalation-complete", name="escalation finished (implicit)")
        results.append(_evaluate_escalation(len(pol.rules), implicit, sc))
    label = name or sc.run.name or "scorecard"
    return GateResult(all(r.passed for r in results), results, label, source)


# --------------------------------------------------------------------------- outputs


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _as_list(result: GateResult | Sequence[GateResult]) -> list[GateResult]:
    return [result] if isinstance(result, GateResult) else list(result)


def render_gate_markdown(result: GateResult | Sequence[GateResult]) -> str:
    """A Markdown summary: the verdict, then a table with every rule of every scorecard
    (fit for a CI job summary, e.g. ``$GITHUB_STEP_SUMMARY``)."""
    results = _as_list(result)
    passed = all(r.passed for r in results)
    n_rules = sum(len(r.results) for r in results)
    n_failed = sum(len(r.failures) for r in results)
    verdict = "PASSED" if passed else "FAILED"
    lines = [f"## Robustness gate: {verdict} ({n_rules - n_failed}/{n_rules} rules hold)", ""]
    for res in results:
        lines += [
            f"### {_cell(res.title)}: {'passed' if res.passed else 'failed'}",
            "",
            "| # | rule | value | threshold | result | details |",
            "|---|---|---|---|---|---|",
        ]
        for r in res.results:
            lines.append(
                f"| {r.index} | {_cell(r.label)} | {_fmt(r.value)} | {_fmt(r.threshold)} | "
                f"{'pass' if r.passed else '**FAIL**'} | {_cell(r.message)} |"
            )
        lines.append("")
    return "\n".join(lines)


def _write_xml(root: ET.Element, path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    ET.indent(root)
    tmp = p.with_name(p.name + ".tmp")
    ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, p)
    return p


def write_junit_xml(
    result: GateResult | Sequence[GateResult], path: str | os.PathLike[str]
) -> Path:
    """Write a JUnit XML report: one ``testsuite`` per scorecard, one ``testcase`` per rule, a
    ``failure`` element (with the message) for each rule that fails. Written atomically."""
    results = _as_list(result)
    total = sum(len(r.results) for r in results)
    failed = sum(len(r.failures) for r in results)
    root = ET.Element(
        "testsuites",
        name="bastion gate",
        tests=str(total),
        failures=str(failed),
        errors="0",
        time="0",
    )
    for res in results:
        suite = ET.SubElement(
            root,
            "testsuite",
            name=res.title,
            tests=str(len(res.results)),
            failures=str(len(res.failures)),
            errors="0",
            skipped="0",
            time="0",
        )
        for r in res.results:
            case = ET.SubElement(
                suite,
                "testcase",
                classname="bastion.gate." + re.sub(r"[^A-Za-z0-9_-]+", "_", res.name),
                name=f"rules[{r.index}] {r.label}",
                time="0",
            )
            if r.passed:
                ET.SubElement(case, "system-out").text = r.message
            else:
                failure = ET.SubElement(case, "failure", message=r.message, type="GateRuleFailed")
                failure.text = (
                    f"{r.label}\nvalue: {_fmt(r.value)}\nthreshold: {_fmt(r.threshold)}\n"
                    f"{r.message}"
                )
    return _write_xml(root, path)


def write_junit_error(message: str, path: str | os.PathLike[str]) -> Path:
    """A JUnit report with one errored test case, for a gate that could not run (so CI still
    finds a report that says why)."""
    root = ET.Element("testsuites", name="bastion gate", tests="1", failures="0", errors="1")
    suite = ET.SubElement(
        root, "testsuite", name="bastion gate", tests="1", failures="0", errors="1", skipped="0"
    )
    case = ET.SubElement(suite, "testcase", classname="bastion.gate", name="gate inputs")
    ET.SubElement(case, "error", message=message, type="GateError").text = message
    return _write_xml(root, path)


@dataclass(frozen=True)
class GateOutcome:
    """What :func:`run_gate` found: one result per scorecard, and the exit status to use."""

    results: list[GateResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def exit_code(self) -> int:
        """0 when every rule of every scorecard holds, 1 otherwise (bad input raises)."""
        return 0 if self.passed else 1


def run_gate(
    scorecards: Sequence[str | os.PathLike[str]],
    policy: str | os.PathLike[str],
    *,
    baseline: str | os.PathLike[str] | None = None,
    junit: str | os.PathLike[str] | None = None,
    markdown: str | os.PathLike[str] | None = None,
) -> GateOutcome:
    """The ``bastion gate`` command without the printing: load the policy, the baseline and
    each scorecard, judge each, and write the JUnit and Markdown reports if asked.

    Raises:
        GateError: for any input that cannot be judged (then, if ``junit`` is given, a JUnit
            report with one error is written first).
    """
    try:
        if not scorecards:
            raise GateError("no scorecard given")
        pol = load_policy(policy)
        base = read_gate_scorecard(baseline, f"baseline {baseline}") if baseline else None
        results = []
        for path in scorecards:
            doc = read_gate_scorecard(path)
            try:
                results.append(evaluate_gate(doc, pol, base, source=str(path)))
            except GateError as e:
                raise GateError(f"{path}: {e}") from None
    except GateError as e:
        if junit is not None:
            write_junit_error(str(e), junit)
        raise
    outcome = GateOutcome(results)
    if junit is not None:
        write_junit_xml(results, junit)
    if markdown is not None:
        p = Path(markdown)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(render_gate_markdown(results), encoding="utf-8")
    return outcome
