"""A hand-built scorecard shaped like the one ``bastion run examples/digits.yaml`` writes."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

FINGERPRINT = "a9ecc4200ea792780542ffeb649eaf72992b16cea58c4e6df26949ad7044e31b"


def _model(clean: float, worst: float, fgsm: float, pgd: float) -> dict[str, Any]:
    return {
        "objective": "pgd-at",
        "architecture": "small-cnn",
        "clean_accuracy": clean,
        "worst_case_accuracy": worst,
        "attacks": {
            "fgsm": {"0": clean, "0.1": (clean + fgsm) / 2, "0.2": fgsm},
            "pgd-50x5": {"0": clean, "0.1": (clean + pgd) / 2, "0.2": pgd},
        },
        "accuracy_vs_eps": {
            "eps": [0.0, 0.1, 0.2],
            "worst_case": [clean, (clean + worst) / 2, worst],
            "per_attack": {"fgsm": [clean, (clean + fgsm) / 2, fgsm]},
        },
        "n_eval": 359,
        "evaluation_seconds": 40.9,
        "test_clean_accuracy": clean,
        "n_test": 359,
        "training": {"seconds": 95.0, "epochs": 30, "best_epoch": 29, "history": []},
    }


BASE_SCORECARD: dict[str, Any] = {
    "schema_version": 1,
    "run": {
        "name": "digits",
        "created": "2026-11-26T02:47:17Z",
        "seed": 0,
        "config_hash": "5b7b5565" * 8,
        "command": "bastion run examples/digits.yaml",
    },
    "data": {
        "name": "digits",
        "kind": "image",
        "fingerprint": FINGERPRINT,
        "n_train": 1258,
        "n_val": 180,
        "n_test": 359,
        "input_shape": [1, 8, 8],
        "classes": [str(i) for i in range(10)],
        "n_eval": 359,
    },
    "threat": {"norm": "linf", "eps": 0.2, "bounds": [0.0, 1.0]},
    "evaluation": {"attacks": [{"label": "fgsm", "name": "fgsm"}], "examples": 359},
    "versions": {"python": "3.11.7", "bastion": "0.1.0"},
    "models": {
        "baseline": {**_model(0.958, 0.008, 0.086, 0.008), "objective": "standard"},
        "hardened": _model(0.953, 0.604, 0.699, 0.604),
    },
    "timings": {"data_seconds": 0.7, "evaluation_seconds": 50.3, "total_seconds": 164.8},
    "warnings": [],
}


@pytest.fixture
def make_scorecard() -> Callable[..., dict[str, Any]]:
    """``make_scorecard(**changes)``: a fresh deep copy of the scorecard; each keyword is a
    dotted path (``"models.hardened.worst_case_accuracy"`` spelled with ``__`` for ``.``)
    set to the value."""

    def make(**changes: Any) -> dict[str, Any]:
        doc = copy.deepcopy(BASE_SCORECARD)
        for dotted, value in changes.items():
            *head, last = dotted.split("__")
            node = doc
            for k in head:
                node = node[k]
            node[last] = value
        return doc

    return make


@pytest.fixture
def scorecard(make_scorecard: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    return make_scorecard()
