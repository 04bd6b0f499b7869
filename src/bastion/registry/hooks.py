"""The calls the pipeline and the one-stage commands make to record what they wrote.

A run that has finished is never undone by the registry: if recording fails (a registry at a
newer schema, a database that cannot be reached), a warning says why and how to record the run
later (``bastion runs add RUN_DIR``), and the command still succeeds.
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from bastion.registry.db import RegistryError, display_url, resolve_registry_url, scrub
from bastion.registry.record import RunRecord, evaluation_record, model_record, run_record
from bastion.registry.store import Registry

__all__ = ["record_evaluation", "record_model_file", "record_run_dir"]


def _record(
    make: RecordFactory, *, out_dir: str | os.PathLike[str], console: Console, what: str, hint: str
) -> str | None:
    url = resolve_registry_url(None, out_dir=out_dir)
    if url is None:
        return None
    try:
        rec = make()
        with Registry(url) as reg:
            run_id = reg.record(rec)
    except (RegistryError, SQLAlchemyError, OSError) as e:
        console.print(
            f"warning: {what} not recorded in the registry: {scrub(str(e), url)}; {hint}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        return None
    console.print(f"recorded as run {run_id} in {display_url(url)}", highlight=False, markup=False)
    return run_id


class RecordFactory:
    """A deferred :func:`run_record` / :func:`model_record` / :func:`evaluation_record` call
    (reading the files can fail too, and is reported like a database error)."""

    def __init__(
        self,
        path: Path,
        kind: str,
        command: str | None,
        inputs: tuple[Path, ...],
        config: Path | None = None,
    ) -> None:
        self.path, self.kind, self.command, self.inputs = path, kind, command, inputs
        self.config = config

    def __call__(self) -> RunRecord:
        if self.kind == "train":
            return model_record(self.path, command=self.command)
        if self.kind == "evaluate":
            return evaluation_record(
                self.path, self.inputs, config=self.config, command=self.command
            )
        return run_record(self.path, kind=self.kind, command=self.command, inputs=self.inputs)


def record_run_dir(
    run_dir: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str],
    console: Console,
    command: str | None = None,
    kind: str = "run",
    inputs: tuple[Path, ...] = (),
) -> str | None:
    """Record a finished run directory in the default registry (``$BASTION_REGISTRY_URL`` or
    ``.bastion/registry.db`` beside ``out_dir``); print where, or a warning. Returns the run id
    (``None`` when not recorded)."""
    return _record(
        RecordFactory(Path(run_dir), kind, command, inputs),
        out_dir=out_dir,
        console=console,
        what=f"{run_dir}",
        hint=f"record it later with `bastion runs add {run_dir}`",
    )


def record_model_file(
    weights: str | os.PathLike[str], *, console: Console, command: str | None = None
) -> str | None:
    """Record a model saved by ``bastion train`` in the default registry
    (``$BASTION_REGISTRY_URL`` or ``.bastion/registry.db`` in the model file's folder)."""
    path = Path(weights)
    return _record(
        RecordFactory(path, "train", command, ()),
        out_dir=path.absolute().parent / "runs",  # the registry sits beside the "runs" folder
        console=console,
        what=f"{path}",
        hint="record it later with `bastion runs add --model FILE`",
    )


def record_evaluation(
    scorecard: str | os.PathLike[str],
    models: list[Path] | tuple[Path, ...],
    *,
    config: str | os.PathLike[str] | None,
    console: Console,
    command: str | None = None,
) -> str | None:
    """Record a ``bastion evaluate`` (its scorecard and the models it read) in the default
    registry (``$BASTION_REGISTRY_URL`` or ``.bastion/registry.db`` in the scorecard's folder)."""
    path = Path(scorecard)
    return _record(
        RecordFactory(
            path, "evaluate", command, tuple(models), Path(config) if config is not None else None
        ),
        out_dir=path.absolute().parent / "runs",  # the registry sits beside the "runs" folder
        console=console,
        what=f"evaluation {path}",
        hint="the scorecard is kept",
    )
