"""Helpers of the registry tests: the tiny digits config in three versions, and running it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bastion.cli import main

TINY: dict[str, Any] = {
    "name": "tiny",
    "data": {"name": "digits"},
    "threat": {"norm": "linf", "eps": 0.2},
    "model": {"architecture": "mlp"},
    "training": {"epochs": 2, "batch_size": 64, "lr": 0.05, "val_examples": 40, "val_pgd_steps": 2},
    "models": [{"name": "baseline", "objective": {"name": "standard"}}],
    "evaluation": {"examples": 40, "attacks": [{"name": "pgd", "steps": 5}]},
}
"""The tiny config of tests/cli/test_cli_gate.py: an MLP on digits, 2 epochs, 40 examples."""

VERSIONS: dict[str, dict[str, Any]] = {
    "v1": {},
    # deliberately weakened: one epoch at a hundredth of the learning rate
    "weak": {"training": {**TINY["training"], "epochs": 1, "lr": 0.0005}},
    # better: twice the epochs
    "better": {"training": {**TINY["training"], "epochs": 4}},
}


def tiny_config(folder: Path, version: str = "v1") -> Path:
    """Write the tiny config (with the changes of ``version``) to ``folder/<version>.yaml``."""
    cfg = {**TINY, **VERSIONS[version]}
    path = folder / f"{version}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@dataclass(frozen=True)
class Project:
    """A folder with ``runs/`` (one run per version) and ``.bastion/registry.db``."""

    root: Path
    runs: dict[str, Path]

    @property
    def db(self) -> Path:
        return self.root / ".bastion" / "registry.db"


def run_version(root: Path, version: str) -> Path:
    """``bastion run`` of one version into ``root/runs``; returns the new run directory."""
    out = root / "runs"
    before = set(out.iterdir()) if out.exists() else set()
    assert main(["run", str(tiny_config(root, version)), "--out", str(out), "-q"]) == 0
    (new,) = set(out.iterdir()) - before
    return new
