"""Checkpoint and resume: an interrupted run, resumed, ends with bit-identical weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from bastion.data import Dataset
from bastion.errors import ConfigError, ModelFileError
from bastion.threat import ThreatModel
from bastion.training import AWPSettings, ObjectiveSettings, Trainer, TrainSettings
from bastion.training.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint

THREAT = ThreatModel("linf", 0.2)
ROOT = Path(__file__).resolve().parents[2]


class Interrupt(Exception):
    """Raised from the progress callback to stop a run mid-epoch."""


def _settings(**kw: Any) -> TrainSettings:
    base: dict[str, Any] = {
        "epochs": 3,
        "batch_size": 50,
        "lr": 0.05,
        "objective": ObjectiveSettings("pgd-at", steps=2),
        "eps_ramp_epochs": 1.0,
        "val_examples": 40,
        "val_pgd_steps": 2,
        "checkpoint_every": 2,
    }
    base.update(kw)
    return TrainSettings(**base)


def _state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _stop_at(epoch: int, batch: int) -> Any:
    def progress(d: dict[str, Any]) -> None:
        if not d.get("end_of_epoch") and (d["epoch"], d["batch"]) == (epoch, batch):
            raise Interrupt

    return progress


@pytest.mark.parametrize(
    ("settings", "stop"),
    [
        (_settings(), (2, 3)),  # mid-epoch, one batch after the checkpoint at batch 2
        (_settings(checkpoint_every=0), (3, 1)),  # only end-of-epoch checkpoints
        (
            _settings(
                objective=ObjectiveSettings("trades", steps=2),
                awp=AWPSettings(gamma=0.01, warmup_epochs=1),
                patience=5,
            ),
            (2, 2),
        ),
        (
            _settings(
                objective=ObjectiveSettings("distill", temperature=5.0, teacher_epochs=1),
                eps_ramp_epochs=0.0,
            ),
            (2, 3),
        ),
    ],
    ids=["pgd-at", "epoch-checkpoints", "trades-awp", "distill"],
)
def test_interrupted_run_resumes_to_identical_weights(
    digits: Dataset, make_model: Any, tmp_path: Path, settings: TrainSettings, stop: tuple[int, int]
) -> None:
    tr = digits.train.subset(200)  # 4 batches an epoch
    args = (tr.x, tr.y, digits.val.x, digits.val.y)
    straight = make_model(0)
    ref = Trainer(settings, THREAT, seed=3).fit(straight, *args)

    interrupted = make_model(0)
    with pytest.raises(Interrupt):
        Trainer(settings, THREAT, seed=3, progress=_stop_at(*stop)).fit(
            interrupted, *args, checkpoint_dir=tmp_path
        )
    saved = load_checkpoint(tmp_path)
    assert (saved["run"]["epoch"], saved["run"]["batch"]) <= stop  # not past the stop
    resumed = make_model(99)  # other initial weights: everything must come from the checkpoint
    res = Trainer(settings, THREAT, seed=3).fit(
        resumed, *args, checkpoint_dir=tmp_path, resume_from=tmp_path
    )
    a, b = _state(straight), _state(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert res.best_epoch == ref.best_epoch
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in res.history]
    assert repr(strip) == repr(
        [{k: v for k, v in h.items() if k != "seconds"} for h in ref.history]
    )


@pytest.mark.slow  # a fresh interpreter importing torch: about 10 s on a busy machine
def test_run_killed_with_sigkill_resumes_to_identical_weights(
    digits: Dataset, make_model: Any, tmp_path: Path
) -> None:
    """A real process killed with SIGKILL in the middle of an epoch."""
    script = textwrap.dedent(
        """
        import os, signal, sys, torch
        from bastion.data import load_dataset
        from bastion.models import ModelSpec, build_model
        from bastion.threat import ThreatModel
        from bastion.training import ObjectiveSettings, Trainer, TrainSettings
        torch.set_num_threads(1)
        d = load_dataset("digits", seed=0)
        tr = d.train.subset(200)
        spec = ModelSpec("small-cnn", tuple(d.input_shape), d.num_classes, tuple(d.mean),
                         tuple(d.std), {})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_model(spec)
        s = TrainSettings(epochs=3, batch_size=50, lr=0.05,
                          objective=ObjectiveSettings("pgd-at", steps=2), eps_ramp_epochs=1.0,
                          val_examples=40, val_pgd_steps=2, checkpoint_every=2)
        def progress(p):
            if not p.get("end_of_epoch") and (p["epoch"], p["batch"]) == (2, 3):
                os.kill(os.getpid(), signal.SIGKILL)
        Trainer(s, ThreatModel("linf", 0.2), seed=3, progress=progress).fit(
            model, tr.x, tr.y, d.val.x, d.val.y, checkpoint_dir=sys.argv[1])
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], env=env, cwd=ROOT, timeout=120, check=False
    )
    assert proc.returncode == -signal.SIGKILL
    assert checkpoint_path(tmp_path).is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no torn temp file
    s = _settings()
    tr = digits.train.subset(200)
    args = (tr.x, tr.y, digits.val.x, digits.val.y)
    straight = make_model(0)
    Trainer(s, THREAT, seed=3).fit(straight, *args)
    resumed = make_model(1)
    Trainer(s, THREAT, seed=3).fit(resumed, *args, resume_from=tmp_path)
    a, b = _state(straight), _state(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_other_settings_or_seed_is_refused(
    digits: Dataset, make_model: Any, tmp_path: Path
) -> None:
    tr = digits.train.subset(100)
    args = (tr.x, tr.y, digits.val.x, digits.val.y)
    Trainer(_settings(epochs=1), THREAT, seed=0).fit(make_model(0), *args, checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match="resume_from"):
        Trainer(_settings(epochs=2), THREAT, seed=0).fit(make_model(0), *args, resume_from=tmp_path)
    with pytest.raises(ConfigError, match="resume_from"):
        Trainer(_settings(epochs=1), THREAT, seed=1).fit(make_model(0), *args, resume_from=tmp_path)


def test_missing_or_foreign_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"checkpoint\.pt: training checkpoint not found"):
        load_checkpoint(tmp_path / "nowhere")
    torch.save({"weights": torch.zeros(1)}, checkpoint_path(tmp_path))
    with pytest.raises(ModelFileError, match="expected a bastion-train-checkpoint"):
        load_checkpoint(tmp_path)
    checkpoint_path(tmp_path).write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match="not a readable training checkpoint"):
        load_checkpoint(tmp_path)


def test_save_checkpoint_replaces_atomically(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, {"x": torch.arange(3)})
    save_checkpoint(tmp_path, {"x": torch.arange(4)})
    assert torch.equal(load_checkpoint(tmp_path)["x"], torch.arange(4))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
