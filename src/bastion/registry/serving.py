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

The primary's run decides every input of a batch (also those the canary answers), so each
canary answer is compared with production's. Per-variant counts, latencies and agreement are
kept in :attr:`StageGuard.metrics` (:class:`~bastion.registry.variants.VariantMetrics`, shown on
``/metrics``). With rollback ``rules`` (:mod:`bastion.registry.canary`), every canary batch is
judged; when a rule fires, the canary stops taking inputs from the next batch on (the batch
being decided still gets its answers: no request fails), and a background thread records the
demotion in the registry (:func:`bastion.registry.stages.demote`) and one line in the audit
log. A canary batch that raises is answered by the primary's decisions for those inputs.

The drift monitor (:class:`StageDrift`) follows the primary: when the primary's run changes,
it continues from that run's saved state against that run's reference.
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
from bastion.monitor import DriftMonitor, MonitorState, ReferenceStats
from bastion.registry.canary import Breach, CanaryRule, RuleWatch
from bastion.registry.db import RegistryError
from bastion.registry.stages import check_run_files, current_runs, demote
from bastion.registry.store import Registry
from bastion.registry.variants import VariantMetrics

__all__ = [
    "LoadedRun",
    "StageDrift",
    "StageGuard",
    "StageStats",
    "build_stage_app",
    "default_state_dir",
]

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
    canary_errors: int = 0
    demotions: list[str] = field(default_factory=list)
    served_runs: list[str] = field(default_factory=list)


class StageGuard:
    """The guard of the run a stage holds, reloaded when the stage changes (see the module
    docstring).

    Args:
        registry: where the stages are read (and a demotion recorded).
        stage: the stage whose run answers (the primary).
        model: which model of each run directory to serve (``None``: the hardened one).
        canary: a stage answering ``canary_fraction`` of the inputs (a seeded draw per input).
        shadow: a stage deciding every input on the side; with ``shadow_log``, one JSON line
            per batch.
        seed: the seed of the canary draw.
        on_event: called with one line per switch, refusal or demotion.
        rules: the canary's rollback rules (:mod:`bastion.registry.canary`); needs ``canary``.
        audit: an :class:`~bastion.serve.audit.AuditLog` that gets one line per demotion.

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
        rules: Sequence[CanaryRule] = (),
        audit: Any = None,
    ) -> None:
        if not 0.0 <= canary_fraction <= 1.0:
            raise RegistryError(
                f"canary_fraction: expected a share in [0, 1], got {canary_fraction}"
            )
        if canary_fraction > 0 and canary is None:
            raise RegistryError("canary_fraction: needs a canary stage")
        if rules and canary is None:
            raise RegistryError("demote_when: rollback rules need a canary stage")
        self.rules = tuple(rules)
        self.audit = audit  # a bastion.serve.AuditLog, or None
        self.drift: StageDrift | None = None
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
        self._demoted: set[str] = set()
        self._watch = RuleWatch(self.rules)
        self._recorders: list[threading.Thread] = []
        self.metrics = VariantMetrics(runs=self._served, routing=self.canary_routing)
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
            if run_id is None and role != "primary" and now is not None:
                with self._lock:  # the stage was emptied (a demotion): stop using it
                    self._runs[role] = None
                    self._demoted.discard(now.run_id)
                self._say(f"stage {stage!r} holds no run now; {role} off")
                changed = True
                continue
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
                if role == "canary":  # a new candidate is judged on its own inputs only
                    self._watch = RuleWatch(self.rules)
            if role == "primary" and self.drift is not None:
                self.drift.follow(Path(loaded.run_dir))
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
        """Stop polling, and wait (up to 10 s each) for demotions being recorded."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for t in list(self._recorders):
            t.join(timeout=10)

    def _served(self) -> dict[str, str]:
        with self._lock:
            return {role: r.run_id for role, r in self._runs.items() if r is not None}

    def canary_routing(self) -> bool:
        """Whether the canary takes inputs now (a canary run, a share > 0, not demoted)."""
        with self._lock:
            canary = self._runs.get("canary")
            return (
                canary is not None
                and self.canary_fraction > 0
                and canary.run_id not in self._demoted
            )

    # ------------------------------------------------------------------ deciding

    @property
    def layers(self) -> tuple[str, ...]:
        """The primary guard's layers, for the service's health endpoint."""
        primary = self.current()
        assert primary is not None
        layers = getattr(primary.guard, "layers", None)
        return tuple(layers) if layers is not None else (type(primary.guard).__name__,)

    def decide(self, x: Tensor) -> Sequence[Decision]:
        """Decide a batch ``(N, *input_shape)``: the primary's run decides every input, the
        canary's run answers its share instead (and is compared with the primary on it); the
        shadow's run judges all of them on the side. Returns ``N`` decisions in order."""
        routing = self.canary_routing()
        with self._lock:
            primary, canary, shadow = (self._runs.get(r) for r in ("primary", "canary", "shadow"))
            to_canary = (
                torch.rand(x.shape[0], generator=self._gen) < self.canary_fraction
                if routing
                else torch.zeros(x.shape[0], dtype=torch.bool)
            )
            watch = self._watch
        assert primary is not None
        t0 = time.perf_counter()
        base = list(primary.guard.decide(x))
        primary_s = time.perf_counter() - t0
        assert len(base) == x.shape[0]
        out: list[Decision] = list(base)
        idx = torch.nonzero(to_canary).flatten().tolist()
        answered = (
            self._canary(canary, x, idx, base, out, watch) if canary is not None and idx else False
        )
        n_canary = len(idx) if answered else 0
        kept = [d for i, d in enumerate(base) if not to_canary[i]] if answered else base
        self.metrics.observe("primary", kept, primary_s)
        with self._lock:
            self.stats.canary += n_canary
            self.stats.primary += x.shape[0] - n_canary
        if shadow is not None:
            self._shadow(shadow, x, out, primary.run_id)
        return out

    def _canary(
        self,
        canary: LoadedRun,
        x: Tensor,
        idx: list[int],
        base: list[Decision],
        out: list[Decision],
        watch: RuleWatch,
    ) -> bool:
        """Answer inputs ``idx`` with the canary (into ``out``), count them and judge the
        rules; returns whether the canary answered. A canary that raises (or answers the wrong
        number of inputs) leaves the primary's answers in place."""
        reference = [base[i].label for i in idx]
        t0 = time.perf_counter()
        decided: list[Decision] | None
        try:
            decided = list(canary.guard.decide(x[idx]))
            if len(decided) != len(idx):
                raise ValueError(f"{len(decided)} decisions for {len(idx)} inputs")
        except Exception as e:  # a broken candidate must not fail a request
            decided = None
            self.last_error = f"canary run {canary.run_id}: {e}"
            log.warning("canary failed, primary answered: %s", e)
        seconds = time.perf_counter() - t0
        if decided is None:
            self.metrics.errors.inc(len(idx), variant="canary")
            self.metrics.timing("canary", seconds)
            with self._lock:
                self.stats.canary_errors += len(idx)
        else:
            for i, d in zip(idx, decided, strict=True):
                out[i] = d
            self.metrics.observe("canary", decided, seconds, reference=reference)
        breach = watch.add(
            time.monotonic(),
            decided,
            n=len(idx),
            reference_labels=reference,
            latency_s=seconds,
        )
        if breach is not None:
            self._demote(canary, breach)
        return decided is not None

    def _demote(self, canary: LoadedRun, breach: Breach) -> None:
        """Stop routing to ``canary`` now; record why in the registry and the audit log in
        a background thread (off the request path)."""
        with self._lock:
            if canary.run_id in self._demoted:
                return
            self._demoted.add(canary.run_id)
            self.stats.demotions.append(canary.run_id)
        self.metrics.demotions.inc()
        reason = breach.reason(canary.run_id, canary.stage)
        log.warning("%s", reason)
        self._say(reason)
        t = threading.Thread(
            target=self._record_demotion,
            args=(canary, breach, reason),
            name="bastion-canary-demotion",
            daemon=True,
        )
        self._recorders.append(t)
        t.start()

    def _record_demotion(self, canary: LoadedRun, breach: Breach, reason: str) -> None:
        details = [
            {
                "rule": breach.rule.describe(),
                "index": breach.index,
                "value": breach.value,
                "threshold": breach.rule.max,
                "samples": breach.samples,
                "passed": False,
                "message": reason,
            }
        ]
        event = None
        for attempt in range(5):
            try:
                event = demote(
                    self.registry, canary.stage, canary.run_id, reason=reason, details=details
                )
                break
            except Exception as e:  # a registry outage: retry, the routing is already off
                self.last_error = f"recording the demotion of {canary.run_id}: {e}"
                log.warning("%s", self.last_error)
                if self._stop.wait(0.5 * 2**attempt):
                    break
        if self.audit is not None:
            from bastion.serve.audit import AuditRecord

            record = AuditRecord(
                request_id=f"demotion-{event.id if event is not None else canary.run_id}",
                index=0,
                time=time.time(),
                key_id="bastion",
                key_name="canary-rule",
                input_sha256="",
                verdict="demote",
                label=None,
                confidence=None,
                reasons=(reason,),
                scores={"value": breach.value, "max": breach.rule.max, "samples": breach.samples},
                model=canary.stage,
            )
            try:
                self.audit.write([record])
            except Exception as e:
                self.last_error = f"audit log: the demotion of {canary.run_id} not written: {e}"
                log.warning("%s", self.last_error)

    def _shadow(self, shadow: LoadedRun, x: Tensor, answered: list[Decision], run_id: str) -> None:
        t0 = time.perf_counter()
        try:
            side = list(shadow.guard.decide(x))
        except Exception as e:  # the shadow must never break the answers
            self.last_error = f"shadow run {shadow.run_id}: {e}"
            self.metrics.errors.inc(len(answered), variant="shadow")
            return
        self.metrics.observe(
            "shadow", side, time.perf_counter() - t0, reference=[a.label for a in answered]
        )
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


class StageDrift(DriftMonitor):
    """The drift monitor of a served stage: tests the inputs the service answers against the
    reference statistics of the primary's run (``RUN_DIR/guard/drift-reference.json``, saved by
    ``bastion run`` with a guard), and saves its state to ``RUN_DIR/monitor-state.json`` after
    each window, as ``bastion serve RUN_DIR`` does, so ``bastion monitor RUN_DIR`` shows it.

    :meth:`follow` switches it to another run (the stage's new primary): the partial window is
    dropped, and the monitor continues from that run's saved state, or a fresh one; a run
    without a reference pauses it (nothing is observed) until a run with one is served. A
    window that was filling when the run changed is not tested.
    """

    def __init__(self, run_dir: Path, reference: ReferenceStats, **kwargs: Any) -> None:
        super().__init__(reference, **kwargs)
        self.run_dir = run_dir
        self.active = True
        self.generation = 0
        self._window_generation = 0

    @staticmethod
    def reference_path(run_dir: Path) -> Path:
        """Where a run keeps its drift reference."""
        return run_dir / "guard" / "drift-reference.json"

    @classmethod
    def for_run(cls, run_dir: Path) -> StageDrift | None:
        """The monitor for ``run_dir``'s reference (``None`` if it has none)."""
        from bastion.serve.runner import MONITOR_STATE

        ref = cls.reference_path(run_dir)
        if not ref.is_file():
            return None
        state_path = run_dir / MONITOR_STATE
        state = MonitorState.load(state_path) if state_path.is_file() else None
        return cls(run_dir, ReferenceStats.load(ref), state=state)

    def follow(self, run_dir: Path) -> None:
        """Monitor against ``run_dir``'s reference from now on (see the class docstring)."""
        from bastion.serve.runner import MONITOR_STATE

        ref = self.reference_path(run_dir)
        reference = ReferenceStats.load(ref) if ref.is_file() else None
        state_path = run_dir / MONITOR_STATE
        state = MonitorState.load(state_path) if state_path.is_file() else MonitorState()
        with self._buffer_lock, self._state_lock:
            self._xs, self._ps, self._count = [], [], 0
            self.generation += 1
            self.run_dir = run_dir
            self.active = reference is not None
            if reference is not None:
                self.reference = reference
                self.state = state
        log.info("drift monitor now follows %s (%s)", run_dir, "on" if self.active else "paused")

    def observe(self, x: Tensor, probs: Tensor) -> None:
        """As :meth:`DriftMonitor.observe`, while the served run has a reference."""
        if not self.active:
            return
        self._window_generation = self.generation
        super().observe(x, probs)

    def close_window(self, views: Tensor, probs: Tensor) -> dict[str, Any]:
        """Test a window and save the state beside the run (skipped if the run changed while
        the window filled)."""
        from bastion.serve.runner import MONITOR_STATE

        if self._window_generation != self.generation:
            return {}
        result = super().close_window(views, probs)
        with self._state_lock:
            self.state.save(self.run_dir / MONITOR_STATE)
        return result


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
    rules: Sequence[CanaryRule] = (),
    drift: bool = True,
) -> tuple[Any, StageGuard]:
    """The service app for a stage (needs the ``service`` extra), and its :class:`StageGuard`
    (not yet polling: call ``guard.start(poll_s)``). API keys and the audit log live in
    ``state_dir`` (default :func:`default_state_dir`) unless the settings name others, so they
    outlive the runs the stage holds. ``rules``: the canary's rollback rules (the canary
    stage's ``demote_when``). With ``drift`` and a primary run that has a drift reference, a
    :class:`StageDrift` monitor follows the primary (its window and alert counts on
    ``/metrics``). The per-variant metrics are added to ``/metrics``."""
    from bastion.serve import AuditLog, KeyStore, ServeSettings
    from bastion.serve.app import create_app

    s = settings if settings is not None else ServeSettings()
    state = Path(state_dir) if state_dir is not None else default_state_dir(registry, stage)
    state.mkdir(parents=True, exist_ok=True)
    audit = AuditLog(s.audit_url or state / "audit.db", synchronous=s.audit_synchronous)
    guard = StageGuard(
        registry,
        stage,
        model=s.model,
        canary=canary,
        canary_fraction=canary_fraction,
        shadow=shadow,
        shadow_log=state / "shadow.jsonl" if shadow is not None else None,
        on_event=on_event,
        rules=rules,
        audit=audit,
    )
    primary = guard.current()
    assert primary is not None
    monitor = StageDrift.for_run(Path(primary.run_dir)) if drift else None
    guard.drift = monitor
    keys = KeyStore(s.keys_db or state / "keys.db")
    app = create_app(guard, settings=s, audit=audit, keys=keys, model_name=stage, drift=monitor)
    app.state.service.metrics.add(guard.metrics)
    return app, guard
