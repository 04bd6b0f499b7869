"""Fixtures for the end-to-end tests: tiny run configs on the embedded digits data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import shared_data

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SHARED_MNIST = shared_data.MNIST


def tiny_config(**overrides: Any) -> dict[str, Any]:
    """A run config that trains two small MLPs on digits for a few epochs (seconds)."""
    doc: dict[str, Any] = {
        "name": "tiny",
        "seed": 0,
        "data": {"name": "digits"},
        "threat": {"norm": "linf", "eps": 0.2},
        "model": {"architecture": "mlp"},
        "training": {
            "epochs": 3,
            "batch_size": 64,
            "lr": 0.05,
            "val_examples": 60,
            "val_pgd_steps": 3,
        },
        "models": [
            {"name": "baseline", "objective": {"name": "standard"}},
            {"name": "hardened", "objective": {"name": "pgd-at", "steps": 3}},
        ],
        "evaluation": {
            "examples": 60,
            "attacks": [{"name": "fgsm"}, {"name": "pgd", "label": "pgd-10", "steps": 10}],
            "eps_grid": [0.0, 0.1, 0.2],
        },
    }
    doc.update(overrides)
    return doc


def write_config(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def tiny_config_file(tmp_path: Path) -> Path:
    return write_config(tmp_path / "tiny.yaml", tiny_config())


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Path]:
    """``make_config(**overrides)`` writes the tiny config with top-level overrides to a file."""

    def make(**overrides: Any) -> Path:
        return write_config(tmp_path / "run.yaml", tiny_config(**overrides))

    return make


@pytest.fixture
def mnist_example_config(tmp_path: Path) -> Callable[..., Path]:
    """``mnist_example_config(quick=...)``: examples/mnist-linf.yaml pointed at the shared MNIST
    files; ``quick`` trains one epoch per model and evaluates 200 examples."""

    def make(*, quick: bool) -> Path:
        doc = yaml.safe_load((EXAMPLES / "mnist-linf.yaml").read_text())
        doc["data"]["data_dir"] = str(SHARED_MNIST)
        if quick:
            doc["training"].update(epochs=1, val_examples=100)
            for m in doc["models"]:
                m.setdefault("training", {}).update(epochs=1, eps_ramp_epochs=0)
            doc["evaluation"].update(examples=200, eps_grid=[0.3])
            doc["evaluation"]["attacks"][1].update(restarts=1, steps=20)
        return write_config(tmp_path / "mnist-linf.yaml", doc)

    return make
