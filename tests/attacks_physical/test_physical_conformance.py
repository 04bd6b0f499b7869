"""The universal and patch adapters pass the attack contract (``check_attack``)."""

from __future__ import annotations

import pytest
from physical_digits import Split

from bastion.attacks import check_attack
from bastion.attacks.patch import PatchAttack
from bastion.attacks.universal import UniversalAttack
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
N = 32


@pytest.mark.parametrize(
    "threat",
    [ThreatModel("linf", 0.15), ThreatModel("l2", 1.0), ThreatModel("l1", 4.0)],
    ids=["linf", "l2", "l1"],
)
def test_universal_adapter_conforms(mlp: Split, threat: ThreatModel) -> None:
    # one perturbation for the whole batch, fitted with one minibatch per epoch; each targeted
    # group (one per target class, about 3 examples here) gets its own
    step = 1.0 if threat.norm == "l1" else 0.1
    passed = check_attack(
        lambda: UniversalAttack(epochs=5, step_size=step),
        mlp.model,
        mlp.x[:N],
        mlp.y[:N],
        threat,
        seed=3,
    )
    assert passed == ALL_CHECKS


@pytest.mark.parametrize("location", ["random", "center"])
def test_patch_adapter_conforms_under_a_covering_threat(canvas: Split, location: str) -> None:
    # linf with eps = hi - lo: the ball holds every patch, so the base class's projection is a
    # no-op; under a smaller ball the adapter refuses to run (see test_physical_patch)
    passed = check_attack(
        lambda: PatchAttack(size=0.3, epochs=5, location=location),
        canvas.model,
        canvas.x[:N],
        canvas.y[:N],
        ThreatModel("linf", 1.0),
        seed=3,
    )
    assert passed == ALL_CHECKS
