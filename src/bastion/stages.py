"""Pipeline stages as objects: typed inputs in, a typed result out.

The train stage (:func:`train_stage`) is what ``bastion train`` runs: it trains one model entry
of a config, writing resumable checkpoints (:mod:`bastion.training.checkpoint`) to a folder
together with a record of the config they belong to (``run.json``), and continues an
interrupted run from such a folder. A resumed run ends with the weights the uninterrupted run
would have had (the trainer restores model, optimiser, generator and the position in the epoch;
see ``docs/scale.md``).

A new stage plugs in the same way: a frozen dataclass of inputs, a dataclass of results and one
function from the first to the second, called by the CLI command (which only parses arguments
and prints) and by :func:`bastion.pipeline.run_pipeline`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.errors import ConfigError
from bastion.training.checkpoint import CHECKPOINT_NAME, checkpoint_path

if TYPE_CHECKING:
    import torch

    from bastion.config import ModelEntry, RunConfig
    from bastion.data import Dataset
    from bastion.models import BastionModel
    from bastion.progress import ProgressReporter
    from bastion.training.distributed import DataParallel
    from bastion.training.trainer import TrainResult

RUN_RECORD = "run.json"


@dataclass(frozen=True)
class TrainInputs:
    """What the train stage needs: the config and the entry to train, its loaded data, where
    checkpoints go (``None``: none are written) and, to continue an interrupted run, the
    checkpoint folder to resume from (checked by :func:`check_resume` first)."""

    cfg: RunConfig
    entry: ModelEntry
    data: Dataset
    config_path: Path | None = None
    checkpoint_dir: Path | None = None
    resume_from: Path | None = None
    reporter: ProgressReporter | None = None
    data_parallel: DataParallel | None = None
    device: torch.device | None = None


@dataclass(frozen=True)
class TrainOutput:
    """The train stage's result: the trained model (best checkpoint loaded), the trainer's
    result (history, best epoch, timing, warnings) and the sidecar metadata to save with it."""

    model: BastionModel
    result: TrainResult
    metadata: dict[str, Any]


def default_checkpoint_dir(model_stem: Path) -> Path:
    """Where ``bastion train --out STEM`` keeps its checkpoints while it runs."""
    return model_stem.with_name(model_stem.name + ".checkpoint")


def _run_record(cfg: RunConfig, entry: ModelEntry) -> dict[str, Any]:
    return {"model": entry.name, "config": cfg.model_dump(mode="json")}


def resume_folder(path: Path) -> Path:
    """The checkpoint folder ``--resume PATH`` names: PATH itself, or the folder of a
    ``checkpoint.pt`` file; :class:`ConfigError` when it holds no training checkpoint."""
    folder = path.parent if path.name == CHECKPOINT_NAME and path.is_file() else path
    if not checkpoint_path(folder).is_file():
        raise ConfigError(
            f"--resume: no training checkpoint in {path}; expected a folder holding "
            f"{CHECKPOINT_NAME} (written by an interrupted bastion train) or that file"
        )
    return folder


def _first_difference(old: Any, new: Any, where: str) -> str | None:
    """The dotted name of the first field that differs between two JSON values, or ``None``."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            if key not in old or key not in new:
                return f"{where}.{key}".lstrip(".")
            found = _first_difference(old[key], new[key], f"{where}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            found = _first_difference(a, b, f"{where}[{i}]")
            if found is not None:
                return found
        return None
    return None if old == new else (where.lstrip(".") or "(config)")


def check_resume(folder: Path, cfg: RunConfig, entry: ModelEntry) -> None:
    """Refuse to resume from a checkpoint written for another config or model entry: a
    :class:`ConfigError` naming the first differing field (``config.training.epochs``, ...)."""
    record_path = folder / RUN_RECORD
    try:
        saved = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ConfigError(
            f"--resume: {record_path} is missing or unreadable; expected the record of the "
            "config the checkpoint belongs to (written by bastion train)"
        ) from None
    field = _first_difference(saved, _run_record(cfg, entry), "")
    if field is not None:
        raise ConfigError(
            f"--resume: the checkpoint in {folder} belongs to another config: {field} "
            "differs; expected the config and model entry of the interrupted run"
        )


def train_stage(inputs: TrainInputs) -> TrainOutput:
    """Train ``inputs.entry`` (seeded from the config), checkpointing to
    ``inputs.checkpoint_dir`` (with the config's ``run.json``, by rank 0 under torchrun) when
    given, continuing from ``inputs.resume_from`` when given. The caller removes the folder
    (:func:`remove_checkpoints`) once the model is saved."""
    from bastion.pipeline import model_metadata, train_entry

    ckpt = inputs.checkpoint_dir
    dp = inputs.data_parallel
    main_process = dp is None or dp.is_main
    if ckpt is not None and main_process:
        ckpt.mkdir(parents=True, exist_ok=True)
        record = json.dumps(_run_record(inputs.cfg, inputs.entry), indent=1, sort_keys=True)
        (ckpt / RUN_RECORD).write_text(record, encoding="utf-8")
    net, result = train_entry(
        inputs.cfg,
        inputs.entry,
        inputs.data,
        reporter=inputs.reporter,
        checkpoint_dir=ckpt,
        resume_from=inputs.resume_from,
        data_parallel=dp,
        device=inputs.device,
    )
    meta = model_metadata(
        inputs.cfg, inputs.entry, inputs.data, result, config_path=inputs.config_path
    )
    return TrainOutput(model=net, result=result, metadata=meta)


def remove_checkpoints(folder: Path | None) -> None:
    """Delete a finished run's checkpoint folder (its checkpoint and ``run.json``)."""
    if folder is not None and folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)
