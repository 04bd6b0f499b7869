"""Bad settings of the universal perturbation and patch fitters and adapters raise
:class:`ConfigError` naming ``<attack>.<field>``; constructors only store settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bastion.attacks.patch import AdversarialPatch, PatchAttack
from bastion.attacks.universal import UniversalAttack, UniversalPerturbation
from bastion.errors import ConfigError

UNIVERSAL_BAD: list[tuple[str, Any]] = [
    ("epochs", 0),
    ("epochs", 2.5),
    ("epochs", True),
    ("step_size", 0.0),
    ("step_size", -1.0),
    ("step_size", float("nan")),
    ("batch_size", 0),
    ("loss", "dlr"),
    ("method", "lbfgs"),
    ("loss_cap", float("inf")),
    ("loss_cap", "2"),
]
PATCH_BAD: list[tuple[str, Any]] = [
    ("size", 0.0),
    ("size", 1.5),
    ("size", 0),
    ("size", True),
    ("size", "big"),
    ("epochs", 0),
    ("step_size", 0),
    ("batch_size", -2),
    ("loss", "hinge"),
    ("scale_range", (1.2, 0.8)),
    ("scale_range", (0.0, 1.0)),
    ("scale_range", 1.0),
    ("scale_range", (1.0, 1.0, 1.0)),
    ("max_rotation", -5.0),
    ("max_rotation", 270.0),
    ("init", "zeros"),
]


@pytest.mark.parametrize("make", [UniversalPerturbation, UniversalAttack], ids=["fit", "attack"])
@pytest.mark.parametrize(
    ("field", "value"), UNIVERSAL_BAD, ids=[f"{f}={v!r}" for f, v in UNIVERSAL_BAD]
)
def test_universal_settings_are_validated(
    make: Callable[..., object], field: str, value: Any
) -> None:
    with pytest.raises(ConfigError, match=rf"^universal\.{field}: expected"):
        make(**{field: value})


@pytest.mark.parametrize("make", [AdversarialPatch, PatchAttack], ids=["fit", "attack"])
@pytest.mark.parametrize(("field", "value"), PATCH_BAD, ids=[f"{f}={v!r}" for f, v in PATCH_BAD])
def test_patch_settings_are_validated(make: Callable[..., object], field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=rf"^patch\.{field}: expected"):
        make(**{field: value})


def test_patch_location_setting_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"^patch\.location: expected"):
        PatchAttack(location="corner")


def test_defaults_and_params_round_trip() -> None:
    uni = UniversalAttack()
    assert uni.name == "universal"
    assert uni.params() == {
        "epochs": 5,
        "step_size": 0.1,
        "batch_size": 32,
        "loss": "ce",
        "method": "sgd",
        "loss_cap": None,
    }
    assert UniversalAttack(**uni.params()).params() == uni.params()
    patch = PatchAttack(size=3, scale_range=[0.9, 1.1], max_rotation=10)  # type: ignore[arg-type]
    assert patch.name == "patch"
    params = patch.params()
    assert params["size"] == 3 and isinstance(params["size"], int)
    assert params["scale_range"] == (0.9, 1.1) and params["max_rotation"] == 10.0
    assert PatchAttack(**params).params() == params
    assert "UniversalPerturbation(epochs=5" in repr(UniversalPerturbation())
    assert "AdversarialPatch(size=0.25" in repr(AdversarialPatch())
