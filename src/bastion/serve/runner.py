"""Running the service: pick the guard of a run directory and start uvicorn."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bastion.errors import ConfigError
from bastion.guard.decision import GuardLike
from bastion.monitor import DriftMonitor, MonitorState, ReferenceStats
from bastion.serve.audit import AuditLog
from bastion.serve.keys import KeyStore
from bastion.serve.model_guard import ModelGuard, pick_model
from bastion.serve.settings import ServeSettings


def load_service_guard(
    run_dir: str | os.PathLike[str], *, model: str | None = None
) -> tuple[GuardLike, str]:
    """The guard to serve for a run and its model name.

    A fitted guard (``<run_dir>/guard/guard.json``, or ``run_dir`` itself being a saved guard)
    is loaded with :func:`bastion.guard.io.load_guard`; a transformer text model (``run_dir``
    itself, or ``<run_dir>/models/text-hardened/``, holding a Hugging Face ``config.json``) is
    served behind :class:`~bastion.guard.text_guard.TextGuard`; otherwise the run's model (see
    :func:`~bastion.serve.model_guard.pick_model`) is served behind :class:`ModelGuard`.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise ConfigError(f"run_dir: {run} is not a directory")
    for folder in (run / "guard", run):
        if (folder / "guard.json").is_file():
            from bastion.guard.io import load_guard

            guard = load_guard(folder)
            name = model or run.name
            return guard, name
    text_model = run / "models" / f"{model or 'text-hardened'}.json"
    if (
        text_model.is_file()
        and '"bastion-text-model/1"' in text_model.read_text(encoding="utf-8")[:64]
    ):
        from bastion.guard.text_guard import TextGuard

        stem = text_model.with_suffix("")
        return TextGuard.from_file(stem), stem.name
    for folder in (run, run / "models" / (model or "text-hardened")):
        if (folder / "config.json").is_file():  # a transformer directory (Hugging Face layout)
            from bastion.guard.text_guard import TextGuard

            return TextGuard.from_file(folder), folder.name
    stem = pick_model(run, model)
    return ModelGuard.from_file(stem), stem.name.removesuffix(".yaml").removesuffix(".yml")


def place_service_guard(guard: GuardLike, device: str | None) -> str:
    """Put the served model on ``device`` (``--device``; ``None``: auto, the best present) and
    return the device it runs on. Only a run's model behind :class:`ModelGuard` moves off the
    CPU; a fitted guard (which splits its model into layers) and a text model stay on the CPU,
    and asking for another device for them explicitly is a ConfigError. A device that is not
    present is a ConfigError naming ``--device``."""
    from bastion.runtime import place_on_device, resolve_device

    dev = resolve_device(device)
    if dev.type == "cpu":
        return "cpu"
    if isinstance(guard, ModelGuard):
        place_on_device(guard.model, dev)
        return str(dev)
    if device is not None:
        raise ConfigError(
            f"--device: {device!r}, but a fitted guard or a text model is served on the CPU "
            "only; expected cpu or auto"
        )
    return "cpu"


def build_app_for_run(
    run_dir: str | os.PathLike[str], *, settings: ServeSettings, device: str | None = "cpu"
) -> object:
    """``create_app`` for a run directory, with its default key store and audit log
    (``<run_dir>/keys.db``, ``<run_dir>/audit.db`` unless the settings name others); the model
    runs on ``device`` (see :func:`place_service_guard`)."""
    from bastion.serve.app import create_app

    run = Path(run_dir)
    if settings.torch_threads is not None:
        import torch

        torch.set_num_threads(settings.torch_threads)
    guard, name = load_service_guard(run, model=settings.model)
    place_service_guard(guard, device)
    reference = run / "guard" / EXTRACTION_REFERENCE
    if settings.extraction_reference is None and reference.is_file():
        settings = settings.with_(extraction_reference=str(reference))
    audit = AuditLog(settings.audit_url or run / "audit.db", synchronous=settings.audit_synchronous)
    keys = KeyStore(settings.keys_db or run / "keys.db")
    drift, state_path = drift_monitor_for_run(run)
    return create_app(
        guard,
        settings=settings,
        audit=audit,
        keys=keys,
        model_name=name,
        drift=drift,
        drift_state=state_path,
    )


MONITOR_STATE = "monitor-state.json"
# the coverage reference of the information-budget extraction monitor
EXTRACTION_REFERENCE = "extraction-reference.safetensors"


def drift_monitor_for_run(run: Path) -> tuple[DriftMonitor | None, Path | None]:
    """The drift monitor of a run whose guard saved reference statistics
    (``guard/drift-reference.json``), continuing from ``monitor-state.json`` if present."""
    ref = run / "guard" / "drift-reference.json"
    if not ref.is_file():
        return None, None
    state_path = run / MONITOR_STATE
    state = MonitorState.load(state_path) if state_path.is_file() else None
    return DriftMonitor(ReferenceStats.load(ref), state=state), state_path


def serve(
    run_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServeSettings | None = None,
    log_level: str = "warning",
    device: str | None = "cpu",
) -> None:
    """Serve ``run_dir``'s guard over HTTP with uvicorn until interrupted (one process; the
    guard's micro-batcher makes one worker use the cores torch is given); the model runs on
    ``device`` (see :func:`place_service_guard`)."""
    import uvicorn

    s = settings or ServeSettings()
    app = build_app_for_run(run_dir, settings=s, device=device)
    uvicorn.run(app, **uvicorn_options(s, host=host, port=port, log_level=log_level))  # type: ignore[arg-type]


def uvicorn_options(
    settings: ServeSettings, *, host: str, port: int, log_level: str = "warning"
) -> dict[str, Any]:
    """``uvicorn.run``/``uvicorn.Config`` keyword arguments for ``settings``: the total
    connection bound (``limit_concurrency``) and the per-address and first-request bounds of
    :mod:`bastion.serve.connections`."""
    from bastion.serve.connections import bounded_protocol, default_protocol

    return {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": False,
        "timeout_keep_alive": 30,
        "limit_concurrency": settings.max_connections,
        "http": bounded_protocol(
            default_protocol(),
            per_client=settings.max_connections_per_client,
            idle_timeout_s=settings.idle_connection_timeout_s,
        ),
    }
