"""Invalid settings of the new attacks raise ConfigError naming the attack and the field."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from whitebox_digits import Digits

from bastion.attacks import Attack
from bastion.attacks.cw import CarliniWagnerL2
from bastion.attacks.deepfool import DeepFool
from bastion.attacks.fab import FAB, FABTargeted
from bastion.attacks.l1 import SparseL1Descent
from bastion.attacks.transfer import MIFGSM
from bastion.errors import AttackInputError, ConfigError
from bastion.threat import ThreatModel

BAD: list[tuple[type[Attack], dict[str, Any], str]] = [
    (CarliniWagnerL2, {"steps": 0}, r"cw-l2\.steps: expected an integer >= 1, got 0$"),
    (CarliniWagnerL2, {"steps": 1.5}, r"cw-l2\.steps: expected an integer >= 1, got 1\.5$"),
    (CarliniWagnerL2, {"steps": True}, r"cw-l2\.steps: expected an integer >= 1, got True$"),
    (
        CarliniWagnerL2,
        {"binary_search_steps": 0},
        r"cw-l2\.binary_search_steps: expected an integer",
    ),
    (CarliniWagnerL2, {"lr": 0.0}, r"cw-l2\.lr: expected a finite number > 0, got 0\.0$"),
    (CarliniWagnerL2, {"lr": float("nan")}, r"cw-l2\.lr: expected a finite number > 0, got nan$"),
    (CarliniWagnerL2, {"lr": "0.1"}, r"cw-l2\.lr: expected a finite number > 0, got '0\.1'$"),
    (CarliniWagnerL2, {"confidence": -1}, r"cw-l2\.confidence: expected a finite number >= 0"),
    (CarliniWagnerL2, {"initial_const": 0}, r"cw-l2\.initial_const: expected a finite number > 0"),
    (CarliniWagnerL2, {"abort_early": "yes"}, r"cw-l2\.abort_early: expected true or false"),
    (DeepFool, {"steps": 0}, r"deepfool\.steps: expected an integer >= 1"),
    (DeepFool, {"overshoot": -0.1}, r"deepfool\.overshoot: expected a finite number >= 0"),
    (DeepFool, {"num_classes": 1}, r"deepfool\.num_classes: expected an integer >= 2, got 1$"),
    (FAB, {"steps": 0}, r"fab\.steps: expected an integer >= 1"),
    (FAB, {"restarts": 0}, r"fab\.restarts: expected an integer >= 1"),
    (FAB, {"alpha_max": 1.5}, r"fab\.alpha_max: expected a number in \[0, 1\], got 1\.5$"),
    (FAB, {"eta": 0}, r"fab\.eta: expected a finite number > 0"),
    (FAB, {"beta": 0.0}, r"fab\.beta: expected a number in \(0, 1\], got 0\.0$"),
    (FABTargeted, {"target_classes": 0}, r"fab-t\.target_classes: expected an integer >= 1"),
    (FABTargeted, {"beta": 2}, r"fab-t\.beta: expected a number in \(0, 1\]"),
    (SparseL1Descent, {"steps": 0}, r"slide\.steps: expected an integer >= 1"),
    (SparseL1Descent, {"step_size": -1}, r"slide\.step_size: expected a finite number > 0"),
    (SparseL1Descent, {"percentile": 100}, r"slide\.percentile: expected a number in \[0, 100\)"),
    (SparseL1Descent, {"restarts": 0}, r"slide\.restarts: expected an integer >= 1"),
    (SparseL1Descent, {"random_start": 1}, r"slide\.random_start: expected true or false"),
    (MIFGSM, {"steps": 0}, r"mi-fgsm\.steps: expected an integer >= 1"),
    (MIFGSM, {"decay": -0.5}, r"mi-fgsm\.decay: expected a finite number >= 0"),
    (MIFGSM, {"diversity_prob": 1.5}, r"mi-fgsm\.diversity_prob: expected a number in \[0, 1\]"),
    (MIFGSM, {"diversity_scale": 0}, r"mi-fgsm\.diversity_scale: expected a number in \(0, 1\]"),
]


@pytest.mark.parametrize(
    ("cls", "kwargs", "pattern"), BAD, ids=[f"{c.name}-{next(iter(k))}" for c, k, _ in BAD]
)
def test_invalid_settings_name_the_field(
    cls: type[Attack], kwargs: dict[str, Any], pattern: str
) -> None:
    with pytest.raises(ConfigError, match="^" + pattern):
        cls(**kwargs)


@pytest.mark.parametrize(
    "cls", [CarliniWagnerL2, DeepFool, FAB, FABTargeted, SparseL1Descent, MIFGSM]
)
def test_settings_are_keyword_only_and_reported(cls: type[Attack]) -> None:
    attack = cls()
    params = attack.params()
    assert params and all(not k.startswith("_") for k in params)
    assert repr(attack).startswith(f"{cls.__name__}(")
    assert cls(**params).params() == params  # round trip through the settings
    with pytest.raises(TypeError):
        cls(1)  # type: ignore[call-arg]


def test_fab_t_chooses_its_own_targets(digits: Digits) -> None:
    with pytest.raises(AttackInputError, match=r"^targets: fab-t chooses its own targets"):
        FABTargeted(steps=2)(
            digits.model,
            digits.x[:4],
            digits.y[:4],
            ThreatModel("linf", 0.1),
            targets=torch.zeros(4, dtype=torch.int64),
        )


def test_already_misclassified_points_are_left_alone(digits: Digits) -> None:
    x, y = digits.x[:6], (digits.y[:6] + 1) % 10  # wrong labels: every point is "fooled" already
    for attack in (
        CarliniWagnerL2(steps=3, binary_search_steps=1),
        DeepFool(),
        FAB(steps=3),
        FABTargeted(steps=3),
        SparseL1Descent(steps=3),
    ):
        threat = (
            ThreatModel("l1", 1.0)
            if isinstance(attack, SparseL1Descent)
            else ThreatModel("l2", 1.0)
        )
        res = attack(digits.model, x, y, threat)
        assert torch.equal(res.x_adv, x) and bool(res.success.all()), attack
