"""A living attack library: runs judged by the attacks of today, not of the day they ran.

Every record carries the attack library version it was evaluated with
(:func:`bastion.registry.record.attack_library_version`: bastion's version and a digest of the
attack code). When the library changes (a new attack, a stronger default, a fixed bug), the runs
the stages hold were judged by yesterday's attacks:

- :func:`stale_runs` lists the stage runs whose newest evaluation used another library;
- ``bastion runs reevaluate`` evaluates a run's models again under its recorded config with the
  current library (:func:`plan_reevaluation`, ``bastion evaluate``, :func:`record_reevaluation`:
  kind ``evaluate``, its parent the run), next to the run's folder;
- :func:`latest_evaluation` is the newest evaluation of a run's exact model files (by digest),
  the run itself if none is newer: ``bastion risks --stage`` judges the register against it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bastion.registry.db import RegistryError
from bastion.registry.record import attack_library_version, evaluation_record
from bastion.registry.stages import current_runs
from bastion.registry.store import Registry, RunInfo

__all__ = [
    "Reevaluation",
    "StaleRun",
    "latest_evaluation",
    "plan_reevaluation",
    "record_reevaluation",
    "stale_runs",
]


def latest_evaluation(reg: Registry, run_id: str) -> RunInfo:
    """The newest record judging run ``run_id``'s model files: a later ``evaluate`` run whose
    inputs are exactly those files (by SHA-256), else the run itself."""
    run = reg.get(run_id)
    models = {a.sha256 for a in reg.artifacts(run.run_id) if a.role == "model"}
    if not models:
        return run
    for other in reg.runs(docs=False):
        if other.run_id == run.run_id:
            break  # runs() is newest first: nothing older counts
        if other.kind != "evaluate":
            continue
        inputs = {a.sha256 for a in reg.artifacts(other.run_id) if a.role == "input"}
        if inputs == models:
            return reg.get(other.run_id)
    return run


@dataclass(frozen=True)
class StaleRun:
    """A run a stage holds whose newest evaluation used another attack library."""

    stage: str
    run: RunInfo
    evaluation: RunInfo
    current_library: str


def stale_runs(reg: Registry) -> list[StaleRun]:
    """The stage runs judged by another attack library than this bastion's, by stage name."""
    now = attack_library_version()
    out = []
    for stage, run_id in sorted(current_runs(reg).items()):
        evaluation = latest_evaluation(reg, run_id)
        if evaluation.attack_library != now:
            out.append(StaleRun(stage, reg.get(run_id), evaluation, now))
    return out


@dataclass(frozen=True)
class Reevaluation:
    """What re-evaluating a run takes: its recorded config, its model files, and where the new
    scorecard goes."""

    run: RunInfo
    config: Path
    models: tuple[Path, ...]
    scorecard: Path


def plan_reevaluation(
    reg: Registry, ref: str, *, out: str | os.PathLike[str] | None = None
) -> Reevaluation:
    """The inputs of re-evaluating run ``ref`` (``bastion runs reevaluate`` runs
    ``bastion evaluate`` on them, then records the result with :func:`record_reevaluation`).
    The scorecard goes to ``out`` (default ``<runs folder>/<run dir>.reeval-<UTC stamp>/``).

    Raises:
        RegistryError: an unknown run, not a ``bastion run``, or one whose directory, config or
            models are gone.
    """
    run = reg.get(ref)
    if run.kind != "run" or run.run_dir is None:
        raise RegistryError(f"reevaluate: run {run.run_id} is a {run.kind}; give a `bastion run`")
    run_dir = Path(run.run_dir)
    config = run_dir / "config.yaml"
    models = tuple(run_dir / a.path for a in reg.artifacts(run.run_id) if a.role == "model")
    if not config.is_file() or not models or not all(m.is_file() for m in models):
        raise RegistryError(f"reevaluate: {run_dir} has no config.yaml or no models any more")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    folder = Path(out) if out is not None else run_dir.parent / f"{run_dir.name}.reeval-{stamp}"
    return Reevaluation(run, config, models, folder / "scorecard.json")


def record_reevaluation(
    reg: Registry, plan: Reevaluation, *, command: str | None = None
) -> RunInfo:
    """Record the evaluation ``plan`` produced (kind ``evaluate``, parent the run)."""
    rec = evaluation_record(plan.scorecard, plan.models, config=plan.config, command=command)
    return reg.get(reg.record(rec, parent=plan.run.run_id))
