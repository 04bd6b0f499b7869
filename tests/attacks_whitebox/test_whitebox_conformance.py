"""Every new white-box attack passes the attack contract (``check_attack``) on the digits MLP,
in each norm it supports."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from whitebox_digits import Digits

from bastion.attacks import Attack, check_attack
from bastion.attacks.cw import CarliniWagnerL2
from bastion.attacks.deepfool import DeepFool
from bastion.attacks.fab import FAB, FABTargeted
from bastion.attacks.l1 import SparseL1Descent
from bastion.attacks.transfer import MIFGSM, TransferAttack
from bastion.models import BastionModel
from bastion.threat import ThreatModel

ALL_CHECKS = [
    "shapes",
    "inputs-untouched",
    "feasible",
    "success-consistent",
    "repeatable",
    "stronger-than-clean",
    "model-untouched",
    "targeted",
    "empty-batch",
]
THREATS = {
    "linf": ThreatModel("linf", 0.15),
    "l2": ThreatModel("l2", 1.0),
    "l1": ThreatModel("l1", 2.5),
}
N = 32

FACTORIES: dict[str, tuple[Callable[[], Attack], tuple[str, ...]]] = {
    "cw-l2": (
        lambda: CarliniWagnerL2(steps=100, binary_search_steps=3, initial_const=0.1),
        ("l2",),
    ),
    "deepfool": (DeepFool, ("linf", "l2", "l1")),
    "deepfool-top3": (lambda: DeepFool(steps=20, num_classes=3), ("l2",)),
    "fab": (lambda: FAB(steps=20), ("linf", "l2", "l1")),
    "fab-restarts": (lambda: FAB(steps=10, restarts=3), ("linf",)),
    "slide": (lambda: SparseL1Descent(steps=20), ("l1",)),
    "slide-restarts": (lambda: SparseL1Descent(steps=10, restarts=2, random_start=True), ("l1",)),
    "mi-fgsm": (MIFGSM, ("linf", "l2")),
    "di-mi-fgsm": (lambda: MIFGSM(diversity_prob=0.7), ("linf",)),
}
CASES = [(name, norm) for name, (_, norms) in FACTORIES.items() for norm in norms]


@pytest.mark.parametrize(("name", "norm"), CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_attacks_conform(digits: Digits, name: str, norm: str) -> None:
    make, _ = FACTORIES[name]
    passed = check_attack(make, digits.model, digits.x[:N], digits.y[:N], THREATS[norm], seed=3)
    assert passed == ALL_CHECKS


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_t_conforms_untargeted(digits: Digits, norm: str) -> None:
    passed = check_attack(
        lambda: FABTargeted(steps=15, target_classes=3),
        digits.model,
        digits.x[:N],
        digits.y[:N],
        THREATS[norm],
        targeted=False,
    )
    assert passed == [c for c in ALL_CHECKS if c != "targeted"]


def test_transfer_conforms(digits: Digits, surrogate: BastionModel) -> None:
    passed = check_attack(
        lambda: TransferAttack(surrogate=surrogate, attack=MIFGSM(steps=5)),
        digits.model,
        digits.x[:N],
        digits.y[:N],
        ThreatModel("linf", 0.3),
    )
    assert passed == ALL_CHECKS


def test_float64_inputs_and_model(digits: Digits) -> None:
    model = _double(digits.model)
    x = digits.x[:8].double()
    for attack in (
        CarliniWagnerL2(steps=20, binary_search_steps=2, initial_const=1.0),
        DeepFool(),
        FAB(steps=5),
        MIFGSM(steps=3),
    ):
        res = attack(model, x, digits.y[:8], ThreatModel("l2", 1.0))
        assert res.x_adv.dtype == torch.float64, attack


def _double(model: BastionModel) -> BastionModel:
    import copy

    return copy.deepcopy(model).double()
