"""bastion train --resume: an interrupted training run continues from its checkpoint folder
and ends with the weights of the uninterrupted run; a missing checkpoint or one written for
another config is a one-line error (exit 2) naming what is wrong."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console
from safetensors.torch import load_file

from bastion.cli import main
from bastion.config import load_config
from bastion.pipeline import load_run_data
from bastion.progress import ProgressReporter
from bastion.stages import TrainInputs, default_checkpoint_dir, train_stage
from bastion.training.checkpoint import checkpoint_path

CONFIG = {
    "name": "resume",
    "seed": 3,
    "data": {"name": "digits"},
    "threat": {"norm": "linf", "eps": 0.2},
    "model": {"architecture": "mlp"},
    "training": {
        "epochs": 3,
        "batch_size": 64,
        "lr": 0.05,
        "val_examples": 40,
        "val_pgd_steps": 2,
        "checkpoint_every": 5,
    },
    "models": [{"name": "plain", "objective": {"name": "standard"}}],
}
STOP_AT = 23  # batches: mid-epoch 2 (digits: 18 batches of 64 an epoch), after step 20's checkpoint


class _StopAfter(ProgressReporter):
    """A progress reporter whose training hook stops the run after ``n`` batches, as Ctrl-C
    would."""

    def __init__(self, n: int) -> None:
        super().__init__(Console(file=io.StringIO()), enabled=False)
        self.n = n
        self.batches = 0

    def training(self, model_name: str) -> Any:
        def hook(event: dict[str, Any]) -> None:
            if event.get("end_of_epoch"):
                return
            self.batches += 1
            if self.batches == self.n:
                raise KeyboardInterrupt

        return hook


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def _interrupt(config: Path, stem: Path) -> Path:
    """Train the config's entry through the train stage until the hook stops it."""
    cfg, _ = load_config(config)
    data = load_run_data(cfg, config_path=config)
    ckpt = default_checkpoint_dir(stem)
    stop = _StopAfter(STOP_AT)
    inputs = TrainInputs(cfg, cfg.models[0], data, config, ckpt, reporter=stop)
    with pytest.raises(KeyboardInterrupt):
        train_stage(inputs)
    assert stop.batches == STOP_AT
    return ckpt


def test_resumed_run_matches_uninterrupted(tmp_path: Path) -> None:
    config = _write(tmp_path / "c.yaml", CONFIG)
    whole = tmp_path / "whole"
    assert main(["train", str(config), "--out", str(whole), "-q", "--threads", "1"]) == 0
    assert not default_checkpoint_dir(whole).exists()  # removed once the model is saved

    stem = tmp_path / "resumed"
    ckpt = _interrupt(config, stem)
    assert checkpoint_path(ckpt).is_file() and not stem.with_suffix(".safetensors").exists()
    # the resumed run trains only the batches after the checkpoint (step 20), not from scratch
    copy = shutil.copytree(ckpt, tmp_path / "copy.checkpoint")
    cfg, _ = load_config(config)
    data = load_run_data(cfg, config_path=config)
    count = _StopAfter(-1)
    train_stage(TrainInputs(cfg, cfg.models[0], data, config, copy, copy, reporter=count))
    per_epoch = -(-data.train.x.shape[0] // 64)
    assert count.batches == 3 * per_epoch - 20
    args = ["train", str(config), "--out", str(stem), "-q", "--threads", "1"]
    assert main([*args, "--resume", str(checkpoint_path(ckpt))]) == 0
    a = load_file(str(whole.with_suffix(".safetensors")))
    b = load_file(str(stem.with_suffix(".safetensors")))
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] - b[key]).abs().max().item() <= 1e-5, key
    assert not ckpt.exists()


def test_resume_refuses_missing_and_foreign_checkpoints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write(tmp_path / "c.yaml", CONFIG)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", str(config), "--resume", str(empty), "-q"]) == 2
    assert "--resume: no training checkpoint in" in capsys.readouterr().err

    ckpt = _interrupt(config, tmp_path / "m")
    other = {**CONFIG, "training": {**CONFIG["training"], "epochs": 4}}
    changed = _write(tmp_path / "other.yaml", other)
    out = tmp_path / "never"
    assert main(["train", str(changed), "--resume", str(ckpt), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "belongs to another config: config.training.epochs differs" in err
    assert not out.with_suffix(".safetensors").exists()
    assert checkpoint_path(ckpt).is_file()  # the checkpoint is left for the right config
