"""Shared fixtures for the report tests: a realistic scorecard with two trained models."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

EPS_GRID = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]


def _decay(clean: float, eps: float, scale: float, floor: float) -> float:
    """A smooth accuracy-against-eps curve from ``clean`` down towards ``floor``."""
    return round(floor + (clean - floor) * math.exp(-((eps / scale) ** 2)), 4)


def _history(
    epochs: int, *, start_loss: float, end_loss: float, clean: float, robust: float
) -> list[dict[str, Any]]:
    rows = []
    for epoch in range(1, epochs + 1):
        t = epoch / epochs
        rows.append(
            {
                "epoch": epoch,
                "lr": round(0.01 * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs)), 6),
                "train_loss": round(end_loss + (start_loss - end_loss) * math.exp(-4 * t), 4),
                "train_accuracy": round(clean * (1 - 0.5 * math.exp(-5 * t)), 4),
                "val_clean_accuracy": round(clean * (1 - 0.4 * math.exp(-5 * t)), 4),
                "val_robust_accuracy": round(robust * (1 - math.exp(-3 * t)), 4),
                "seconds": 0.6,
            }
        )
    return rows


def _model(
    objective: str,
    clean: float,
    scales: dict[str, float],
    floor: float,
    history: list[dict[str, Any]],
    seconds: float,
    best_epoch: int,
) -> dict[str, Any]:
    per_attack = {
        attack: [_decay(clean, e, scale, floor) for e in EPS_GRID]
        for attack, scale in scales.items()
    }
    worst = [min(values) for values in zip(*per_attack.values(), strict=True)]
    attacks = {
        attack: {
            format(e, "g"): acc for e, acc in zip(EPS_GRID, values, strict=True) if e in (0.1, 0.2)
        }
        for attack, values in per_attack.items()
    }
    return {
        "objective": objective,
        "architecture": "mlp",
        "clean_accuracy": clean,
        "worst_case_accuracy": worst[EPS_GRID.index(0.2)],
        "attacks": attacks,
        "accuracy_vs_eps": {"eps": EPS_GRID, "worst_case": worst, "per_attack": per_attack},
        "training": {
            "seconds": seconds,
            "epochs": len(history),
            "best_epoch": best_epoch,
            "selection": "val_robust_accuracy",
            "history": history,
        },
        "evaluation_seconds": 3.2,
    }


_SCORECARD: dict[str, Any] = {
    "schema_version": 1,
    "run": {
        "name": "digits",
        "created": "2026-11-25T21:40:00Z",
        "seed": 0,
        "config_hash": "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12",
        "command": "bastion run examples/digits.yaml",
    },
    "data": {
        "name": "digits",
        "fingerprint": "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0",
        "n_train": 1150,
        "n_val": 287,
        "n_test": 360,
        "n_eval": 360,
        "input_shape": [1, 8, 8],
        "classes": [str(i) for i in range(10)],
    },
    "threat": {"norm": "linf", "eps": 0.2, "bounds": [0.0, 1.0]},
    "versions": {
        "bastion": "0.1.0",
        "python": "3.11.7",
        "torch": "2.13.0+cpu",
        "numpy": "2.4.6",
        "platform": "Linux-6.1.0-x86_64-with-glibc2.36",
    },
    "models": {
        "baseline": _model(
            "standard",
            0.975,
            {"fgsm": 0.12, "pgd": 0.1},
            0.0,
            _history(20, start_loss=2.1, end_loss=0.08, clean=0.975, robust=0.05),
            seconds=12.5,
            best_epoch=19,
        ),
        "hardened": _model(
            "pgd-at",
            0.9431,
            {"fgsm": 0.45, "pgd": 0.38},
            0.2,
            _history(20, start_loss=2.3, end_loss=0.65, clean=0.94, robust=0.83),
            seconds=61.0,
            best_epoch=18,
        ),
    },
    "timings": {"total_seconds": 95.0, "data_seconds": 0.5},
    "warnings": [
        {
            "code": "gradient-masking",
            "model": "hardened",
            "message": "Accuracy at eps 0.3 stays at 20.0% under every attack; gradients may be "
            "masked. Check with a gradient-free attack.",
        }
    ],
}


def make_scorecard() -> dict[str, Any]:
    """A fresh deep copy of the realistic two-model scorecard (safe to mutate)."""
    return copy.deepcopy(_SCORECARD)


@pytest.fixture
def scorecard() -> dict[str, Any]:
    """A realistic two-model scorecard; each test gets its own copy."""
    return make_scorecard()


@pytest.fixture(scope="session")
def shared_scorecard() -> dict[str, Any]:
    """One copy of the scorecard shared by a whole session; tests must not mutate it."""
    return make_scorecard()
