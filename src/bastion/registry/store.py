"""The run registry: record runs, find them, and trace a model file back to where it came from.

::

    with Registry.open() as reg:            # $BASTION_REGISTRY_URL or .bastion/registry.db
        run_id = reg.record(run_record("runs/digits-20261202-091500"))
        reg.get(run_id[:6]).summary         # a unique prefix, a run directory or its name
        reg.lineage(sha256_of_a_safetensors_file)

Every write is one transaction, committed before the method returns: a record that
:meth:`Registry.record` has returned is on disk (SQLite in WAL mode with ``synchronous=FULL``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import Engine, or_, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, defer

from bastion.registry.db import (
    PG_LOCK_KEY,
    RegistryError,
    display_url,
    open_engine,
    resolve_registry_url,
    scrub,
)
from bastion.registry.models import ArtifactRow, RunRow, StageEventRow
from bastion.registry.record import ArtifactRecord, RunRecord

__all__ = ["Lineage", "Registry", "RunInfo", "StageEvent"]


@dataclass(frozen=True)
class RunInfo:
    """A recorded run, as read back from the registry."""

    run_id: str
    kind: str
    name: str
    created_at: str
    recorded_by: str
    host: str
    run_dir: str | None
    command: str | None
    config_hash: str | None
    config: dict[str, Any] | None
    data_fingerprint: str | None
    data: dict[str, Any]
    bastion_version: str
    git_commit: str | None
    git_dirty: bool | None
    attack_library: str | None
    seeds: dict[str, Any]
    parent_id: str | None
    summary: dict[str, Any]
    scorecard: dict[str, Any] | None

    @classmethod
    def from_row(cls, r: RunRow, *, docs: bool = True) -> RunInfo:
        """Copy an ORM row (so the result outlives its session); without ``docs`` the config
        and scorecard are left out (``None``: they were not loaded)."""
        return cls(
            run_id=r.run_id,
            kind=r.kind,
            name=r.name,
            created_at=r.created_at,
            recorded_by=r.recorded_by,
            host=r.host,
            run_dir=r.run_dir,
            command=r.command,
            config_hash=r.config_hash,
            config=r.config if docs else None,
            data_fingerprint=r.data_fingerprint,
            data=dict(r.data or {}),
            bastion_version=r.bastion_version,
            git_commit=r.git_commit,
            git_dirty=r.git_dirty,
            attack_library=r.attack_library,
            seeds=dict(r.seeds or {}),
            parent_id=r.parent_id,
            summary=dict(r.summary or {}),
            scorecard=r.scorecard if docs else None,
        )


@dataclass(frozen=True)
class StageEvent:
    """One promotion, refused promotion or rollback of a stage."""

    id: int
    stage: str
    action: str
    run_id: str | None
    previous_run_id: str | None
    at: str
    user: str
    host: str
    reason: str | None
    policy_source: str | None
    policy_sha256: str | None
    gate: list[Any] | None

    @classmethod
    def from_row(cls, r: StageEventRow) -> StageEvent:
        """Copy an ORM row."""
        return cls(
            r.id,
            r.stage,
            r.action,
            r.run_id,
            r.previous_run_id,
            r.at,
            r.user,
            r.host,
            r.reason,
            r.policy_source,
            r.policy_sha256,
            r.gate,
        )


@dataclass(frozen=True)
class Lineage:
    """Where a model file (by SHA-256) came from and where it went.

    ``produced_by``: the runs that wrote it; ``evaluated_by``: runs that read it (evaluations);
    ``ancestors``: the parent chain of the first producing run, nearest first; ``stage_events``:
    promotions and rollbacks involving any of those runs."""

    digest: str
    produced_by: list[tuple[RunInfo, ArtifactRecord]]
    evaluated_by: list[tuple[RunInfo, ArtifactRecord]]
    ancestors: list[RunInfo]
    stage_events: list[StageEvent]


def _artifact(a: ArtifactRow) -> ArtifactRecord:
    return ArtifactRecord(a.role, a.name, a.path, a.sha256, a.size)


class Registry:
    """A connection to a run registry (SQLite or PostgreSQL), migrated to the newest schema."""

    def __init__(self, url: str | os.PathLike[str]) -> None:
        self._raw_url = str(url)
        self.engine: Engine = open_engine(url)
        self.url = display_url(self._raw_url)

    @classmethod
    def open(
        cls,
        registry: str | os.PathLike[str] | None = None,
        *,
        out_dir: str | os.PathLike[str] = "runs",
    ) -> Registry:
        """The registry named by ``registry``, ``$BASTION_REGISTRY_URL`` or the default
        (see :func:`bastion.registry.db.resolve_registry_url`).

        Raises:
            RegistryError: recording is turned off (``BASTION_REGISTRY_URL=off``) and no
                registry is named, or it cannot be opened.
        """
        url = resolve_registry_url(registry, out_dir=out_dir)
        if url is None:
            raise RegistryError("registry: turned off (BASTION_REGISTRY_URL=off); give --registry")
        return cls(url)

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ sessions

    @contextmanager
    def session(self, *, lock: bool = False) -> Iterator[Session]:
        """A session in one transaction, committed on success. ``lock`` serialises it with
        other locking writers (PostgreSQL advisory lock; SQLite transactions always begin
        with ``BEGIN IMMEDIATE``). Database errors become :class:`RegistryError` (scrubbed)."""
        try:
            with Session(self.engine, expire_on_commit=False) as s, s.begin():
                if lock and self.engine.dialect.name == "postgresql":
                    s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})
                yield s
        except SQLAlchemyError as e:
            first = (str(getattr(e, "orig", None) or e).strip().splitlines() or ["error"])[0]
            raise RegistryError(f"registry {self.url}: {scrub(first, self._raw_url)}") from None

    # ------------------------------------------------------------------ runs

    def record(self, rec: RunRecord, *, parent: str | None = None) -> str:
        """Store a run and its artifacts; returns its new run id.

        The parent is ``parent`` (any reference :meth:`get` takes), else ``rec.parent_id``,
        else the run that produced the first model file it read (an evaluation) or wrote (the
        same bytes recorded again), else the latest earlier run of the same name."""
        with self.session() as s:
            parent_id = self.resolve_in(s, parent).run_id if parent else rec.parent_id
            if parent_id is None:
                parent_id = self._default_parent(s, rec)
            run_id = secrets.token_hex(6)
            s.add(
                RunRow(
                    run_id=run_id,
                    kind=rec.kind,
                    name=rec.name,
                    created_at=rec.created_at,
                    recorded_by=rec.recorded_by,
                    host=rec.host,
                    run_dir=rec.run_dir,
                    command=rec.command,
                    config_hash=rec.config_hash,
                    config=rec.config,
                    data_fingerprint=rec.data_fingerprint,
                    data=rec.data,
                    bastion_version=rec.bastion_version,
                    git_commit=rec.git_commit,
                    git_dirty=rec.git_dirty,
                    attack_library=rec.attack_library,
                    seeds=rec.seeds,
                    parent_id=parent_id,
                    summary=rec.summary,
                    scorecard=rec.scorecard,
                )
            )
            s.flush()
            for a in rec.artifacts:
                s.add(
                    ArtifactRow(
                        run_id=run_id,
                        role=a.role,
                        name=a.name,
                        path=a.path,
                        sha256=a.sha256,
                        size=a.size,
                    )
                )
        return run_id

    def _default_parent(self, s: Session, rec: RunRecord) -> str | None:
        inputs = [a.sha256 for a in rec.artifacts if a.role == "input"]
        models = [a.sha256 for a in rec.artifacts if a.role == "model"]
        for digest in (inputs or models)[:1]:
            producer = s.scalars(
                select(ArtifactRow.run_id)
                .where(ArtifactRow.sha256 == digest, ArtifactRow.role == "model")
                .order_by(ArtifactRow.id.desc())
            ).first()
            if producer is not None:
                return producer
        return s.scalars(
            select(RunRow.run_id).where(RunRow.name == rec.name).order_by(RunRow.seq.desc())
        ).first()

    def resolve_in(self, s: Session, ref: str) -> RunRow:
        """The run row ``ref`` names, within session ``s`` (see :meth:`get`)."""
        ref = ref.strip()
        if not ref:
            raise RegistryError(
                "run: expected a run id, a unique prefix of one, or a run directory"
            )
        row = s.scalars(select(RunRow).where(RunRow.run_id == ref)).first()
        if row is not None:
            return row
        candidates: list[RunRow] = []
        path = Path(ref)
        if path.exists():
            candidates = list(
                s.scalars(
                    select(RunRow).where(RunRow.run_dir == str(path.resolve())).order_by(RunRow.seq)
                )
            )
        if not candidates and "/" not in ref and os.sep not in ref:
            candidates = list(
                s.scalars(
                    select(RunRow)
                    .where(
                        or_(
                            RunRow.run_id.startswith(ref, autoescape=True),
                            RunRow.run_dir.endswith("/" + ref, autoescape=True),
                        )
                    )
                    .order_by(RunRow.seq)
                )
            )
        if not candidates:
            raise RegistryError(
                f"run {ref!r}: not in the registry {self.url} (see `bastion runs list`)"
            )
        if len({c.run_id for c in candidates}) > 1:
            shown = ", ".join(c.run_id for c in candidates[:5])
            raise RegistryError(
                f"run {ref!r}: ambiguous, matches runs {shown}; give more of the id"
            )
        return candidates[0]

    def get(self, ref: str) -> RunInfo:
        """A run by id, unique id prefix, run directory path or run directory name.

        Raises:
            RegistryError: no such run, or the reference matches several.
        """
        with self.session() as s:
            return RunInfo.from_row(self.resolve_in(s, ref))

    def runs(
        self, *, name: str | None = None, limit: int | None = None, docs: bool = True
    ) -> list[RunInfo]:
        """Recorded runs, newest first (optionally only those of one config ``name``). With
        ``docs=False`` the configs and scorecards are not loaded (a listing of many runs)."""
        with self.session() as s:
            q = select(RunRow).order_by(RunRow.seq.desc())
            if not docs:
                q = q.options(defer(RunRow.config), defer(RunRow.scorecard))
            if name is not None:
                q = q.where(RunRow.name == name)
            if limit is not None:
                q = q.limit(limit)
            return [RunInfo.from_row(r, docs=docs) for r in s.scalars(q)]

    def artifacts(self, run_id: str) -> list[ArtifactRecord]:
        """The files recorded with a run."""
        with self.session() as s:
            rows = s.scalars(
                select(ArtifactRow).where(ArtifactRow.run_id == run_id).order_by(ArtifactRow.id)
            )
            return [_artifact(a) for a in rows]

    def lineage(self, digest: str) -> Lineage:
        """Where the model file with this SHA-256 (or a unique prefix of at least 8 hex digits)
        came from, what evaluated it, its ancestors and its stage history.

        Raises:
            RegistryError: a malformed digest, or one no recorded file has.
        """
        d = digest.strip().lower()
        if len(d) < 8 or any(c not in "0123456789abcdef" for c in d):
            raise RegistryError(
                f"lineage: expected a SHA-256 digest (at least 8 hex digits), got {digest!r}"
            )
        with self.session() as s:
            rows = list(
                s.scalars(
                    select(ArtifactRow)
                    .where(ArtifactRow.sha256.startswith(d))
                    .where(ArtifactRow.role.in_(("model", "input")))
                    .order_by(ArtifactRow.id)
                )
            )
            if not rows:
                raise RegistryError(f"lineage: no recorded model file has digest {digest!r}")
            full = {r.sha256 for r in rows}
            if len(full) > 1:
                raise RegistryError(f"lineage: digest prefix {digest!r} is ambiguous; give more")
            runs = {
                r.run_id: r
                for r in s.scalars(
                    select(RunRow).where(RunRow.run_id.in_({a.run_id for a in rows}))
                )
            }
            produced = [
                (RunInfo.from_row(runs[a.run_id]), _artifact(a)) for a in rows if a.role == "model"
            ]
            evaluated = [
                (RunInfo.from_row(runs[a.run_id]), _artifact(a)) for a in rows if a.role == "input"
            ]
            ancestors: list[RunInfo] = []
            start = produced[0][0] if produced else evaluated[0][0]
            seen = {start.run_id}
            parent = start.parent_id
            while parent is not None and parent not in seen:
                seen.add(parent)
                row = s.scalars(select(RunRow).where(RunRow.run_id == parent)).first()
                if row is None:
                    break
                ancestors.append(RunInfo.from_row(row))
                parent = row.parent_id
            involved = {r.run_id for r, _ in produced} | {r.run_id for r, _ in evaluated}
            events = [
                StageEvent.from_row(e)
                for e in s.scalars(
                    select(StageEventRow)
                    .where(
                        or_(
                            StageEventRow.run_id.in_(involved),
                            StageEventRow.previous_run_id.in_(involved),
                        )
                    )
                    .order_by(StageEventRow.id)
                )
            ]
            return Lineage(next(iter(full)), produced, evaluated, ancestors, events)

    # ------------------------------------------------------------------ stages

    def stage_events(self, stage: str | None = None) -> list[StageEvent]:
        """Stage events, oldest first (optionally of one stage)."""
        with self.session() as s:
            q = select(StageEventRow).order_by(StageEventRow.id)
            if stage is not None:
                q = q.where(StageEventRow.stage == stage)
            return [StageEvent.from_row(e) for e in s.scalars(q)]


def stage_stack(events: list[StageEvent] | list[StageEventRow]) -> list[str]:
    """The runs a stage has held, oldest first, by replaying its events: a promotion pushes its
    run, a rollback pops the current one, a demotion (a canary's rollback rule fired) empties
    the stage (refused promotions change nothing). The last entry is the run in the stage
    now."""
    stack: list[str] = []
    for e in events:
        if e.action == "promote" and e.run_id is not None:
            stack.append(e.run_id)
        elif e.action == "rollback" and stack:
            stack.pop()
        elif e.action == "demote":
            stack.clear()
    return stack


def summary_value(summary: Mapping[str, Any], model: str, key: str) -> Any:
    """``summary[model][key]`` or ``None``."""
    m = summary.get(model)
    return m.get(key) if isinstance(m, Mapping) else None
