"""Stages (``staging``, ``production``, ...): promotion through the gate, and rollback.

A promotion judges the run's scorecard with the robustness gate
(:func:`bastion.evaluation.gate.evaluate_gate`) under the stage's policy, with the run now in the
stage as the baseline of ``max_drop`` rules; it changes the stage only if every rule holds. A
refused promotion is recorded too (action ``refused``, with the gate's findings), so the
registry shows every attempt. A rollback returns the stage to the run it held before the
current one. Every event records who, when, why, the policy file and its digest.

Stages are configured in a YAML file (``--stages FILE`` or ``$BASTION_STAGES``)::

    stages:
      staging: {policy: policies/staging.yaml}
      production: {policy: policies/production.yaml}

A policy path is relative to the stages file. Without a file, the stages are ``staging`` and
``production``, with no default policy (give ``--policy``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.errors import read_yaml_file
from bastion.evaluation.gate import (
    GatePolicy,
    GateResult,
    MetricRule,
    evaluate_gate,
    load_policy,
)
from bastion.registry.canary import CanaryRule, parse_rules
from bastion.registry.db import RegistryError
from bastion.registry.models import ArtifactRow, RunRow, StageEventRow
from bastion.registry.record import current_user, file_sha256, now_utc
from bastion.registry.risks import RiskStatus, assess, load_register
from bastion.registry.store import Registry, StageEvent, stage_stack

__all__ = [
    "DEFAULT_STAGES",
    "ENV_STAGES",
    "PromotionResult",
    "StageConfig",
    "check_run_files",
    "current_runs",
    "demote",
    "gate_record",
    "load_stages",
    "promote",
    "risk_record",
    "rollback",
]

ENV_STAGES = "BASTION_STAGES"
"""Environment variable naming the stages file (when ``--stages`` is not given)."""

DEFAULT_STAGES = ("staging", "production")


@dataclass(frozen=True)
class StageConfig:
    """A configured stage, its default promotion policy (``None``: give ``--policy``), the
    risk register a candidate must not be at risk under (``None``: none), and the rules that
    demote its run while it serves as a canary (:mod:`bastion.registry.canary`)."""

    name: str
    policy: Path | None = None
    risks: Path | None = None
    demote_when: tuple[CanaryRule, ...] = ()


def load_stages(path: str | os.PathLike[str] | None = None) -> dict[str, StageConfig]:
    """The configured stages: from ``path``, else ``$BASTION_STAGES``, else the defaults.

    Raises:
        RegistryError: the file is missing or malformed (naming the field).
    """
    if path is None:
        env = os.environ.get(ENV_STAGES, "").strip()
        path = env or None
    if path is None:
        return {name: StageConfig(name) for name in DEFAULT_STAGES}
    p = Path(path)
    doc = read_yaml_file(p, RegistryError, "stages file not found")
    if not isinstance(doc, Mapping) or set(doc) != {"stages"}:
        raise RegistryError(f"{p}: expected one top-level key 'stages' (a mapping of stage names)")
    raw = doc["stages"]
    if not isinstance(raw, Mapping) or not raw:
        raise RegistryError(f"{p}: stages: expected a non-empty mapping of stage names")
    out: dict[str, StageConfig] = {}
    for name, body in raw.items():
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise RegistryError(
                f"{p}: stages: expected stage names of 1-100 characters, got {name!r}"
            )
        body = {} if body is None else body
        if not isinstance(body, Mapping) or not set(body) <= {"policy", "risks", "demote_when"}:
            raise RegistryError(
                f"{p}: stages.{name}: expected a mapping with an optional 'policy', 'risks' and "
                "'demote_when'"
            )
        paths: dict[str, Path | None] = {}
        for key in ("policy", "risks"):
            value = body.get(key)
            if value is not None and not isinstance(value, str):
                raise RegistryError(
                    f"{p}: stages.{name}.{key}: expected a file path, got {value!r}"
                )
            paths[key] = (p.parent / value) if value else None
        rules = parse_rules(body.get("demote_when"), f"{p}: stages.{name}.demote_when")
        out[name] = StageConfig(name, paths["policy"], paths["risks"], rules)
    return out


def _stage(stages: Mapping[str, StageConfig], stage: str) -> StageConfig:
    if stage not in stages:
        raise RegistryError(
            f"stage {stage!r}: not configured (configured: {', '.join(stages)}; see --stages)"
        )
    return stages[stage]


def risk_record(statuses: tuple[RiskStatus, ...]) -> list[dict[str, Any]]:
    """A risk register's verdicts as rows like :func:`gate_record`'s (``at risk`` fails)."""
    return [
        {
            "rule": f"risk {s.risk.id} ({s.risk.threat})",
            "value": s.status,
            "threshold": None,
            "passed": s.status != "at risk",
            "message": "; ".join(f"{r.evidence.describe()}: {r.message}" for r in s.results)
            or "no evidence",
        }
        for s in statuses
    ]


def gate_record(result: GateResult) -> list[dict[str, Any]]:
    """The gate's findings as JSON rows (rule, value, threshold, passed, message)."""
    return [
        {
            "index": r.index,
            "rule": r.label,
            "value": r.value,
            "threshold": r.threshold,
            "passed": r.passed,
            "message": r.message,
        }
        for r in result.results
    ]


@dataclass(frozen=True)
class PromotionResult:
    """What a promotion did: ``promoted`` (else the gate refused it, and ``gate`` says why)."""

    stage: str
    run_id: str
    previous_run_id: str | None
    promoted: bool
    gate: GateResult
    event: StageEvent
    notes: tuple[str, ...] = ()
    risks: tuple[RiskStatus, ...] = ()

    @property
    def risks_at_risk(self) -> list[RiskStatus]:
        """The risks of the stage's register the candidate is at risk under."""
        return [r for r in self.risks if r.status == "at risk"]


def _events(s: Session, stage: str) -> list[StageEventRow]:
    return list(
        s.scalars(
            select(StageEventRow).where(StageEventRow.stage == stage).order_by(StageEventRow.id)
        )
    )


def check_run_files(s: Session, row: RunRow) -> None:
    """The run's model files (those it wrote, or an evaluation's inputs) must still be where
    they were, with the recorded digests."""
    if row.run_dir is None or not Path(row.run_dir).is_dir():
        raise RegistryError(f"run {row.run_id}: its run directory {row.run_dir} is gone")
    for a in s.scalars(
        select(ArtifactRow).where(
            ArtifactRow.run_id == row.run_id, ArtifactRow.role.in_(("model", "input"))
        )
    ):
        f = Path(row.run_dir) / a.path  # an absolute path (an evaluation's input) stays as is
        if not f.is_file():
            raise RegistryError(f"run {row.run_id}: {f} is missing")
        if file_sha256(f) != a.sha256:
            raise RegistryError(
                f"run {row.run_id}: {f} changed since the run was recorded (sha256 "
                f"{a.sha256[:12]}... recorded)"
            )


def _event(s: Session, **fields: Any) -> StageEvent:
    row = StageEventRow(at=now_utc(), user=current_user(), host=socket.gethostname(), **fields)
    s.add(row)
    s.flush()
    return StageEvent.from_row(row)


def promote(
    reg: Registry,
    ref: str,
    stage: str,
    *,
    stages: Mapping[str, StageConfig] | None = None,
    policy: str | os.PathLike[str] | None = None,
    risks: str | os.PathLike[str] | None = None,
    reason: str | None = None,
) -> PromotionResult:
    """Promote run ``ref`` to ``stage`` if the gate passes (see the module docstring) and, with
    a risk register (``risks``, else the stage's), no risk is ``at risk`` under the run's
    scorecard (risks with no evidence do not block).

    The whole decision is one locked transaction, so two promotions of the same stage cannot
    interleave. A refused promotion is recorded and returned (``promoted`` false).

    Raises:
        RegistryError: an unknown stage or run, no policy, a record that is not a
            ``bastion run`` (a saved model, an evaluation), a run whose model files changed or
            vanished, the run already in the stage (nothing recorded).
        GateError: a policy that cannot be read, a scorecard that cannot be judged, a baseline
            from another data set or threat model (nothing recorded).
        RiskError: a register that cannot be read or does not fit the scorecard (nothing
            recorded).
    """
    conf = _stage(stages if stages is not None else load_stages(), stage)
    policy_path = Path(policy) if policy is not None else conf.policy
    if policy_path is None:
        raise RegistryError(
            f"promote: stage {stage!r} has no policy configured; give --policy FILE"
        )
    pol = load_policy(policy_path)
    policy_digest = file_sha256(policy_path)
    risks_path = Path(risks) if risks is not None else conf.risks
    register = load_register(risks_path) if risks_path is not None else None
    with reg.session(lock=True) as s:
        row = reg.resolve_in(s, ref)
        if row.kind != "run" or row.scorecard is None:
            raise RegistryError(
                f"promote: run {row.run_id} is a `bastion {row.kind}` record; a stage holds a "
                "`bastion run` (its models and its scorecard together)"
            )
        check_run_files(s, row)
        stack = stage_stack(_events(s, stage))
        current = stack[-1] if stack else None
        if current == row.run_id:
            raise RegistryError(f"promote: run {row.run_id} is already in {stage!r}")
        baseline = reg.resolve_in(s, current).scorecard if current is not None else None
        gate_policy, notes = _policy_for_baseline(pol, baseline is not None, stage)
        result = evaluate_gate(
            row.scorecard, gate_policy, baseline, name=row.run_id, source=row.run_dir
        )
        statuses = (
            tuple(assess(register, row.scorecard, source=str(risks_path)))
            if register is not None
            else ()
        )
        passed = result.passed and not any(r.status == "at risk" for r in statuses)
        event = _event(
            s,
            stage=stage,
            action="promote" if passed else "refused",
            run_id=row.run_id,
            previous_run_id=current,
            reason=reason if reason is not None else _reason(result, statuses, risks_path),
            policy_source=str(policy_path),
            policy_sha256=policy_digest,
            gate=gate_record(result) + risk_record(statuses),
        )
        return PromotionResult(stage, row.run_id, current, passed, result, event, notes, statuses)


def _policy_for_baseline(
    pol: GatePolicy, has_baseline: bool, stage: str
) -> tuple[GatePolicy, tuple[str, ...]]:
    """The policy to judge a promotion by, and notes: with no run in the stage yet, its
    ``max_drop`` rules (which compare against that run) are left out, and a note says so."""
    if has_baseline or not pol.needs_baseline:
        return pol, ()
    kept = tuple(r for r in pol.rules if not (isinstance(r, MetricRule) and r.kind == "max_drop"))
    note = f"no run in {stage!r} yet: {len(pol.rules) - len(kept)} max_drop rule(s) not applied"
    return GatePolicy(kept, pol.source), (note,)


def _reason(result: GateResult, statuses: tuple[RiskStatus, ...], risks_path: Path | None) -> str:
    """The recorded reason of a promotion (rules passed, and no risk at risk) or of a
    refusal (each failed rule and each risk at risk)."""
    at_risk = [r for r in statuses if r.status == "at risk"]
    passed = result.passed and not at_risk
    n = len(result.results)
    parts = [f"{f.label} ({f.message})" for f in result.failures]
    parts += [f"risk {r.risk.id} ({r.risk.threat}) at risk" for r in at_risk]
    reason = f"gate passed ({n}/{n} rules)" if passed else "refused: " + "; ".join(parts)
    if passed and statuses:
        reason += f", no risk of {risks_path} at risk"
    return reason


def rollback(
    reg: Registry,
    stage: str,
    *,
    stages: Mapping[str, StageConfig] | None = None,
    reason: str | None = None,
) -> StageEvent:
    """Return ``stage`` to the run it held before the current one; returns the event.

    Raises:
        RegistryError: an unknown stage, or a stage with no earlier run (nothing recorded).
    """
    _stage(stages if stages is not None else load_stages(), stage)
    with reg.session(lock=True) as s:
        stack = stage_stack(_events(s, stage))
        if len(stack) < 2:
            held = f"it holds only run {stack[-1]}" if stack else "it is empty"
            raise RegistryError(
                f"rollback: stage {stage!r} has no earlier run to return to ({held})"
            )
        return _event(
            s,
            stage=stage,
            action="rollback",
            run_id=stack[-2],
            previous_run_id=stack[-1],
            reason=reason or f"rollback from {stack[-1]}",
        )


def demote(
    reg: Registry, stage: str, run_id: str, *, reason: str, details: list[Any] | None = None
) -> StageEvent | None:
    """Empty ``stage`` if it still holds ``run_id`` (a canary whose rollback rule fired); the
    event (action ``demote``, ``previous_run_id`` the demoted run, ``gate`` the rule's figures)
    is returned. Returns ``None`` and records nothing when the stage no longer holds that run
    (another service replica demoted it first, or someone promoted another run): demoting is
    idempotent across replicas. The stage need not be configured (the service demotes)."""
    with reg.session(lock=True) as s:
        stack = stage_stack(_events(s, stage))
        if not stack or stack[-1] != run_id:
            return None
        return _event(
            s,
            stage=stage,
            action="demote",
            run_id=None,
            previous_run_id=run_id,
            reason=reason,
            gate=details,
        )


def current_runs(reg: Registry) -> dict[str, str]:
    """The run each stage holds now (stages that hold none are left out)."""
    by_stage: dict[str, list[StageEvent]] = {}
    for e in reg.stage_events():
        by_stage.setdefault(e.stage, []).append(e)
    out = {}
    for stage, events in by_stage.items():
        stack = stage_stack(events)
        if stack:
            out[stage] = stack[-1]
    return out
