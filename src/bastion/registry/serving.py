"""Serving a stage: the run a stage holds, swapped in when a promotion or rollback changes it,
optionally with a canary stage answering a share of the inputs and a shadow stage judged on all
of them without answering.

:class:`StageGuard` is a guard (:class:`bastion.guard.decision.GuardLike`) that the service
(:func:`bastion.serve.app.create_app`) puts behind its API keys, rate limits and audit log like
any other. It asks the registry every ``poll_s`` seconds which run each stage holds; when that
changed, it checks the new run's model files against their recorded digests, loads its guard
(:func:`bastion.serve.runner.load_service_guard`), and swaps it in between two batches. A new run
whose input shape or classes differ from the served one is refused (the old one keeps serving,
and ``last_error`` says why): clients of a stage see one interface.

- canary: each input goes to the canary stage's run with probability ``canary_fraction``
  (drawn from a seeded generator), else to the primary's;
- shadow: the shadow stage's run also decides every input; its answers are never returned, and
  agreement with what was returned is counted (:attr:`StageGuard.stats`) and, with
  ``shadow_log``, appended as one JSON line per batch.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bastion.guard.decision import Decision, GuardLike
from bastion.registry.db import RegistryError
from bastion.registry.stages import check_run_files, current_runs
from bastion.registry.store import Registry

__all__ = ["LoadedRun", "StageGuard", "StageStats", "build_stage_app", "default_state_dir"]

log = logging.getLogger("bastion.registry.serving")


@dataclass(frozen=True)
class LoadedRun:
    """A stage's run and its loaded guard."""

    stage: str
    run_id: str
    run_dir: str
    guard: GuardLike
    name: str


@dataclass
class StageStats:
    """Counters of a :class:`StageGuard` (read them under its lock, or accept a torn read)."""

    primary: int = 0
    canary: int = 0
    shadow_compared: int = 0
    shadow_disagreed: int = 0
    reloads: int = 0
    refused_reloads: int = 0
    served_runs: list[str] = field(default_factory=list)


class StageGuard:
    """The guard of the run a stage holds, reloaded when the stage changes (see the module
    docstring).

    Raises:
        RegistryError: a stage holds no run, or its run's files are missing or changed.
    """

    def __init__(
        self,
        registry: Registry,
        stage: str = "production",
        *,
        model: str | None = None,
        canary: str | None = None,
        canary_fraction: float = 0.0,
        shadow: str | None = None,
        shadow_log: str | os.PathLike[str] | None = None,
        seed: int = 0,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        if not 0.0 <= canary_fraction <= 1.0:
            raise RegistryError(
                f"canary_fraction: expected a share in [0, 1], got {canary_fraction}"
            )
        if canary_fraction > 0 and canary is None:
            raise RegistryError("canary_fraction: needs a canary stage")
        self.registry = registry
        self.stage, self.canary_stage, self.shadow_stage = stage, canary, shadow
        self.canary_fraction = canary_fraction
        self.model = model
        self.on_event = on_event
        self.shadow_log = Path(shadow_log) if shadow_log is not None else None
        self._gen = torch.Generator().manual_seed(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = StageStats()
        self.last_error: str | None = None
        held = current_runs(registry)
        self._runs: dict[str, LoadedRun | None] = {}
        for role, name in self._roles():
            if name not in held:
                if role == "primary":
                    raise RegistryError(f"serve: stage {name!r} holds no run; promote one first")
                self._runs[role] = None
                continue
            self._runs[role] = self._load(name, held[name])
        primary = self._runs["primary"]
        assert primary is not None
        self.input_shape: tuple[int, ...] = tuple(primary.guard.input_shape)
        self.classes: tuple[str, ...] = tuple(primary.guard.classes)
        self.name = stage
        self.stats.served_runs.append(primary.run_id)
        for role in ("canary", "shadow"):
            loaded = self._runs.get(role)
            if loaded is not None:
                self._check_compatible(loaded)

    # ------------------------------------------------------------------ loading

    def _roles(self) -> list[tuple[str, str]]:
        roles = [("primary", self.stage)]
        if self.canary_stage is not None:
            roles.append(("canary", self.canary_stage))
        if self.shadow_stage is not None:
            roles.append(("shadow", self.shadow_stage))
        return roles

    def _load(self, stage: str, run_id: str) -> LoadedRun:
        from bastion.serve.runner import load_service_guard

        with self.registry.session() as s:
            row = self.registry.resolve_in(s, run_id)
            check_run_files(s, row)
            run_dir = row.run_dir
        assert run_dir is not None
        guard, name = load_service_guard(run_dir, model=self.model)
        return LoadedRun(stage, run_id, run_dir, guard, name)

    def _check_compatible(self, loaded: LoadedRun) -> None:
        shape, classes = tuple(loaded.guard.input_shape), tuple(loaded.guard.classes)
        if shape != self.input_shape or classes != self.classes:
            raise RegistryError(
                f"serve: run {loaded.run_id} of stage {loaded.stage!r} takes {shape} with classes "
                f"{list(classes)}, the served interface is {self.input_shape} with "
                f"{list(self.classes)}; refusing to switch"
            )

    def current(self, role: str = "primary") -> LoadedRun | None:
        """What ``role`` (``primary``, ``canary``, ``shadow``) serves now."""
        with self._lock:
            return self._runs.get(role)

    def refresh(self) -> bool:
        """Ask the registry which runs the stages hold and swap in any that changed; returns
        whether anything was swapped. A run that cannot be loaded or does not fit the interface
        is refused: the old one keeps serving and :attr:`last_error` says why."""
        held = current_runs(self.registry)
        changed = False
        for role, stage in self._roles():
            now = self.current(role)
            run_id = held.get(stage)
            if run_id is None or (now is not None and now.run_id == run_id):
                continue
            try:
                loaded = self._load(stage, run_id)
                self._check_compatible(loaded)
            except Exception as e:  # any failure to load keeps the old run serving
                with self._lock:
                    self.stats.refused_reloads += 1
                    self.last_error = f"stage {stage!r} run {run_id}: {e}"
                log.warning("not switching: %s", self.last_error)
                self._say(f"not switching: {self.last_error}")
                continue
            with self._lock:
                self._runs[role] = loaded
                self.stats.reloads += 1
                if role == "primary":
                    self.stats.served_runs.append(run_id)
            log.info("stage %r now served from run %s", stage, run_id)
            self._say(f"stage {stage!r} now served from run {run_id} ({loaded.run_dir})")
            changed = True
        return changed

    def _say(self, message: str) -> None:
        if self.on_event is not None:
            self.on_event(message)

    def start(self, poll_s: float = 5.0) -> None:
        """Poll the registry every ``poll_s`` seconds in a daemon thread until :meth:`close`."""
        if poll_s <= 0:
            raise RegistryError(f"poll: expected seconds > 0, got {poll_s}")

        def loop() -> None:
            while not self._stop.wait(poll_s):
                try:
                    self.refresh()
                except Exception as e:  # a registry outage must not stop the service
                    self.last_error = f"registry: {e}"
                    log.warning("registry poll failed: %s", e)
                    self._say(f"registry poll failed: {e}")

        self._thread = threading.Thread(target=loop, name="bastion-stage-poll", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # ------------------------------------------------------------------ deciding

    @property
    def layers(self) -> tuple[str, ...]:
        """The primary guard's layers, for the service's health endpoint."""
        primary = self.current()
        assert primary is not None
        layers = getattr(primary.guard, "layers", None)
        return tuple(layers) if layers is not None else (type(primary.guard).__name__,)

    def decide(self, x: Tensor) -> Sequence[Decision]:
        """Decide a batch: canary inputs by the canary's run, the rest by the primary's; the
        shadow's run judges all of them on the side."""
        with self._lock:
            primary, canary, shadow = (self._runs.get(r) for r in ("primary", "canary", "shadow"))
            to_canary = (
                torch.rand(x.shape[0], generator=self._gen) < self.canary_fraction
                if canary is not None and self.canary_fraction > 0
                else torch.zeros(x.shape[0], dtype=torch.bool)
            )
        assert primary is not None
        out: list[Decision | None] = [None] * x.shape[0]
        for guard, mask in (
            (primary.guard, ~to_canary),
            (canary.guard if canary else None, to_canary),
        ):
            idx = torch.nonzero(mask).flatten()
            if guard is None or idx.numel() == 0:
                continue
            for i, d in zip(idx.tolist(), guard.decide(x[idx]), strict=True):
                out[i] = d
        answered = [d for d in out if d is not None]
        assert len(answered) == x.shape[0]
        n_canary = int(to_canary.sum())
        with self._lock:
            self.stats.canary += n_canary
            self.stats.primary += x.shape[0] - n_canary
        if shadow is not None:
            self._shadow(shadow, x, answered, primary.run_id)
        return answered

    def _shadow(self, shadow: LoadedRun, x: Tensor, answered: list[Decision], run_id: str) -> None:
        try:
            side = shadow.guard.decide(x)
        except Exception as e:  # the shadow must never break the answers
            self.last_error = f"shadow run {shadow.run_id}: {e}"
            return
        disagree = sum(a.label != b.label for a, b in zip(answered, side, strict=True))
        with self._lock:
            self.stats.shadow_compared += len(answered)
            self.stats.shadow_disagreed += disagree
        if self.shadow_log is not None:
            record: dict[str, Any] = {
                "time": round(time.time(), 3),
                "served_run": run_id,
                "shadow_run": shadow.run_id,
                "n": len(answered),
                "disagreed": disagree,
            }
            self.shadow_log.parent.mkdir(parents=True, exist_ok=True)
            with self.shadow_log.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


def default_state_dir(registry: Registry, stage: str) -> Path:
    """Where a served stage keeps its key store and audit log by default:
    ``serve-<stage>/`` beside a SQLite registry, else ``.bastion/serve-<stage>/`` here."""
    database = registry.engine.url.database
    if registry.engine.dialect.name == "sqlite" and database:
        return Path(database).parent / f"serve-{stage}"
    return Path(".bastion") / f"serve-{stage}"


def build_stage_app(
    registry: Registry,
    stage: str = "production",
    *,
    settings: Any = None,
    state_dir: str | os.PathLike[str] | None = None,
    canary: str | None = None,
    canary_fraction: float = 0.0,
    shadow: str | None = None,
    on_event: Callable[[str], None] | None = None,
) -> tuple[Any, StageGuard]:
    """The service app for a stage (needs the ``service`` extra), and its :class:`StageGuard`
    (not yet polling: call ``guard.start(poll_s)``). API keys and the audit log live in
    ``state_dir`` (default :func:`default_state_dir`) unless the settings name others, so they
    outlive the runs the stage holds."""
    from bastion.serve import AuditLog, KeyStore, ServeSettings
    from bastion.serve.app import create_app

    s = settings if settings is not None else ServeSettings()
    state = Path(state_dir) if state_dir is not None else default_state_dir(registry, stage)
    state.mkdir(parents=True, exist_ok=True)
    guard = StageGuard(
        registry,
        stage,
        model=s.model,
        canary=canary,
        canary_fraction=canary_fraction,
        shadow=shadow,
        shadow_log=state / "shadow.jsonl" if shadow is not None else None,
        on_event=on_event,
    )
    audit = AuditLog(s.audit_url or state / "audit.db", synchronous=s.audit_synchronous)
    keys = KeyStore(s.keys_db or state / "keys.db")
    app = create_app(guard, settings=s, audit=audit, keys=keys, model_name=stage)
    return app, guard
