"""The registry's tables, as SQLAlchemy ORM classes.

The schema itself is created and changed only by the Alembic migrations in
``bastion/registry/migrations/versions``; these classes describe the newest schema for queries
(a test checks that migrating an empty database gives exactly these tables).

- ``runs``: one row per recorded run (``bastion run``, ``train`` or ``evaluate``), with what is
  needed to reproduce and compare it: config and its hash, data fingerprints, code version,
  seeds, the attack library version, who and when, the scorecard and its summary.
- ``artifacts``: the files of a run and their SHA-256 digests (model weights, scorecard), and
  the models an evaluation read; lineage is a lookup by digest.
- ``stage_events``: promotions, refused promotions and rollbacks of a stage (append only).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["ArtifactRow", "Base", "RunRow", "StageEventRow"]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with a naming convention (so migrations can name constraints)."""

    metadata = MetaData(naming_convention=NAMING)


class RunRow(Base):
    """One recorded run."""

    __tablename__ = "runs"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200), index=True)
    created_at: Mapped[str] = mapped_column(String(32))
    recorded_by: Mapped[str] = mapped_column(String(200))
    host: Mapped[str] = mapped_column(String(200))
    run_dir: Mapped[str | None] = mapped_column(Text)
    command: Mapped[str | None] = mapped_column(Text)
    config_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    data_fingerprint: Mapped[str | None] = mapped_column(String(64), index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    bastion_version: Mapped[str] = mapped_column(String(64))
    git_commit: Mapped[str | None] = mapped_column(String(40))
    git_dirty: Mapped[bool | None] = mapped_column(Boolean)
    attack_library: Mapped[str | None] = mapped_column(String(100))
    seeds: Mapped[dict[str, Any]] = mapped_column(JSON)
    parent_id: Mapped[str | None] = mapped_column(String(64), ForeignKey("runs.run_id"))
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    scorecard: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ArtifactRow(Base):
    """A file of a run (``role`` ``model`` or ``scorecard``), or a model file an evaluation
    read (``role`` ``input``), with its SHA-256 digest."""

    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64), ForeignKey("runs.run_id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)


class StageEventRow(Base):
    """One change (or refused change) of a stage: ``promote``, ``rollback`` or ``refused``.

    ``run_id`` is the run in the stage after the event (the candidate, for ``refused``);
    ``previous_run_id`` the run that was in it before."""

    __tablename__ = "stage_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stage: Mapped[str] = mapped_column(String(100), index=True)
    action: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[str | None] = mapped_column(String(64), ForeignKey("runs.run_id"))
    previous_run_id: Mapped[str | None] = mapped_column(String(64), ForeignKey("runs.run_id"))
    at: Mapped[str] = mapped_column(String(32))
    user: Mapped[str] = mapped_column(String(200))
    host: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    policy_source: Mapped[str | None] = mapped_column(Text)
    policy_sha256: Mapped[str | None] = mapped_column(String(64))
    gate: Mapped[list[Any] | None] = mapped_column(JSON)
