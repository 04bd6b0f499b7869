"""Data-parallel training under torchrun: two CPU processes train the model one process
would (same permutation, batch-weighted gradient average), and only rank 0 writes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from bastion.cli import main
from bastion.models import load_model

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))

CFG = {
    "name": "dp",
    "seed": 0,
    "data": {"name": "digits"},
    "threat": {"norm": "linf", "eps": 0.2},
    "model": {"architecture": "mlp", "options": {"hidden": [32]}},
    # 1437 training digits: the last batch of 60 examples leaves 57, odd, so the two shares
    # differ in size and the weighting of the average matters
    "training": {
        "epochs": 2,
        "batch_size": 60,
        "lr": 0.05,
        "schedule": "constant",
        "val_examples": 50,
        "val_pgd_steps": 1,
        "select": "last",
    },
    "models": [{"name": "m", "objective": {"name": "standard"}}],
}


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [TORCHRUN, "--nproc-per-node", "2", "--standalone", "-m", "bastion.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="torchrun is not installed with torch")
def test_two_processes_train_the_single_process_model(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CFG))
    done = _torchrun(["train", str(cfg), "--out", str(tmp_path / "two" / "m"), "-q"], tmp_path)
    assert done.returncode == 0, done.stderr[-6000:]
    assert "data-parallel training on 2 processes" in done.stderr
    assert done.stderr.count("saved ") == 0 and done.stdout.count("saved ") == 1  # rank 0 only
    assert "val robust not measured" in done.stdout  # standard training, select: last
    assert (
        main(["train", str(cfg), "--out", str(tmp_path / "one" / "m"), "-q", "--threads", "1"]) == 0
    )
    two = load_model(tmp_path / "two" / "m").state_dict()
    one = load_model(tmp_path / "one" / "m").state_dict()
    for k in one:
        assert torch.allclose(two[k], one[k], atol=1e-4), k


def test_a_batch_smaller_than_the_processes_is_refused() -> None:
    from bastion.errors import ConfigError
    from bastion.training.distributed import DataParallel

    with pytest.raises(ConfigError, match=r"training\.batch_size"):
        DataParallel(rank=0, world=4).check_batch(3)
    dp = DataParallel(rank=1, world=3)
    assert dp.shard(torch.arange(8)).tolist() == [1, 4, 7]
    assert not dp.is_main
