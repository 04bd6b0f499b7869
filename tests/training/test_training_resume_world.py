"""Sharded adversarial training equals one process when no random numbers are drawn, and
resuming across a changed world size: a checkpoint written mid-epoch by a 2-process torchrun
run continues in 1 process, and one written by 1 process continues under torchrun with 2, and
both end with the weights of an uninterrupted 1-process run (to float rounding).

That equality holds because the objective here (``standard``) draws no random numbers: the
checkpoint carries the model, the optimiser, the step (so the learning-rate schedule), the
interrupted epoch's permutation (the rest of that epoch visits the same examples in the same
order) and the permutation generator (later epochs' order), and the gradient of a batch is the
same whether one process or two compute it. Objectives with attack noise differ after a change
of world size the way two world sizes differ anyway (per-process attack generators), see
docs/scale.md. The per-epoch training loss is the mean over every example of the epoch in
both cases (the processes' sums are exchanged, and a checkpoint stores the totals).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from bastion.training.checkpoint import load_checkpoint

HERE = Path(__file__).resolve().parent
WORKER = HERE / "dp_resume_worker.py"
TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
# digits: 1258 training examples; batches of 45 (odd, so the two shares differ: 23 and 22) make
# 28 batches an epoch, the last of 43; global step 40 is epoch 2, batch 12: a checkpoint
# mid-epoch (one every 5 steps)
N_TRAIN, BATCH, BATCHES, STOP = 1258, 45, 28, 40
SHARES = (27 * 23 + 22, 27 * 22 + 21)  # examples per epoch of rank 0 and rank 1

CFG = {
    "name": "resume-world",
    "seed": 0,
    "data": {"name": "digits"},
    "threat": {"norm": "linf", "eps": 0.2},
    "model": {"architecture": "mlp", "options": {"hidden": [32]}},
    "training": {
        "epochs": 3,
        "batch_size": BATCH,
        "lr": 0.05,
        "schedule": "cyclic",  # the schedule's position must carry over too
        "val_examples": 50,
        "val_pgd_steps": 1,
        "select": "last",
        "checkpoint_every": 5,
    },
    "models": [{"name": "m", "objective": {"name": "standard"}}],
}

pytestmark = [  # five training processes started: about 2 minutes on a busy 2-core machine
    pytest.mark.slow,
    pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="torchrun is not installed with torch"),
]


def _run(processes: int, cfg: Path, ckpt: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    head = (
        [sys.executable] if processes == 1 else [TORCHRUN, "--nproc-per-node", "2", "--standalone"]
    )
    return subprocess.run(
        [*head, str(WORKER), str(cfg), "--checkpoints", str(ckpt), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    d = tmp_path_factory.mktemp("world")
    cfg = d / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CFG))
    done = _run(1, cfg, d / "ref-ckpt", "--out", str(d / "ref"))
    assert done.returncode == 0, done.stderr[-6000:]
    return cfg, load_file(str(d / "ref" / "model.safetensors"))


def _interrupt_then_resume(
    tmp_path: Path, cfg: Path, first: int, second: int
) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    ckpt = tmp_path / "ckpt"
    stopped = _run(first, cfg, ckpt, "--stop-at", str(STOP))
    assert stopped.returncode != 0  # interrupted
    saved = load_checkpoint(ckpt)
    assert saved["run"]["epoch"] == 2 and saved["run"]["batch"] == STOP - BATCHES
    assert saved["run"]["seen"] == (STOP - BATCHES) * BATCH  # every process's, not rank 0's
    done = _run(second, cfg, ckpt, "--resume", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-6000:]
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    return load_file(str(tmp_path / "out" / "model.safetensors")), history


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-4, msg=k)


def test_two_process_checkpoint_resumes_in_one_process(
    setup: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    cfg, ref = setup
    weights, history = _interrupt_then_resume(tmp_path, cfg, first=2, second=1)
    _same(weights, ref)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert "train_loss_rank1" in history[0]  # epoch 1 ran on two processes
    assert "train_loss_rank1" not in history[2]


def test_one_process_checkpoint_resumes_under_torchrun(
    setup: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    cfg, ref = setup
    weights, history = _interrupt_then_resume(tmp_path, cfg, first=1, second=2)
    _same(weights, ref)
    last = history[2]
    # the epoch's loss is the processes' example-weighted mean
    assert sum(SHARES) == N_TRAIN
    mean = (last["train_loss_rank0"] * SHARES[0] + last["train_loss_rank1"] * SHARES[1]) / N_TRAIN
    assert last["train_loss"] == pytest.approx(mean, rel=1e-9)
    assert last["train_loss_rank0"] != last["train_loss_rank1"]


def test_sharded_adversarial_training_equals_one_process(tmp_path: Path) -> None:
    """PGD-AT without random start draws no random numbers, so two processes crafting the
    adversarial examples of their halves must train the model one process trains."""
    doc = copy.deepcopy(CFG)
    doc["training"] = {**doc["training"], "epochs": 2, "eps_ramp_epochs": 1}
    doc["models"] = [
        {"name": "m", "objective": {"name": "pgd-at", "steps": 3, "random_start": False}}
    ]
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    for processes, name in ((1, "one"), (2, "two")):
        done = _run(processes, cfg, tmp_path / f"{name}-ckpt", "--out", str(tmp_path / name))
        assert done.returncode == 0, done.stderr[-6000:]
    one = load_file(str(tmp_path / "one" / "model.safetensors"))
    _same(load_file(str(tmp_path / "two" / "model.safetensors")), one)
    history = json.loads((tmp_path / "two" / "history.json").read_text())
    assert history[-1]["train_loss"] < history[0]["train_loss"]  # it learnt something
