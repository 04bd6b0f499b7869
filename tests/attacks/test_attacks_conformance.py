"""The conformance suite: the shipped attacks pass it, and broken attacks are caught by it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from attack_toy import Toy
from torch import Tensor, nn

from bastion.attacks import (
    FGSM,
    PGD,
    Attack,
    AttackConformanceError,
    Opening,
    build_attack,
    check_attack,
    predict,
)
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

FACTORIES: dict[str, Callable[[], Attack]] = {
    "fgsm": FGSM,
    "fgsm-random-start": lambda: FGSM(step_size=1.25, random_start=True),
    "fgsm-cw": lambda: FGSM(loss="cw"),
    "pgd": lambda: PGD(steps=10),
    "pgd-no-random-start": lambda: PGD(steps=10, random_start=False),
    "pgd-restarts": lambda: PGD(steps=5, restarts=3),
    "pgd-cw": lambda: PGD(steps=10, loss="cw"),
    "pgd-no-early-stop": lambda: PGD(steps=10, early_stop=False, restarts=2),
    "registry-pgd": lambda: build_attack("pgd", {"steps": 7, "restarts": 2}),
}


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_shipped_attacks_conform(toy: Toy, name: str, norm: str) -> None:
    threat = ThreatModel("linf", 0.1) if norm == "linf" else ThreatModel("l2", 0.25)
    passed = check_attack(FACTORIES[name], toy.model, toy.x[:64], toy.y[:64], threat, seed=3)
    assert passed == ALL_CHECKS


def test_conforms_on_an_image_model_in_train_mode() -> None:
    # A (random) small CNN in training mode; attacks must leave the mode as they found it.
    from bastion.models import ModelSpec, build_model

    torch.manual_seed(0)
    model = build_model(ModelSpec("small-cnn", (1, 8, 8), 4, (0.5,), (0.25,)))
    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(dim=1)  # every clean example correct
    model.train()
    # eps 0.5: this random net is fooled everywhere and reaches the target on about 2/3 of x
    passed = check_attack(lambda: PGD(steps=10), model, x, y, ThreatModel("linf", 0.5))
    assert passed == ALL_CHECKS
    assert model.training


# -- the suite catches broken attacks ----------------------------------------------------------


class _NoOp(Attack):
    name = "noop"

    def _run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        threat: ThreatModel,
        *,
        targets: Tensor | None,
        generator: torch.Generator | None,
        opening: Opening,
    ) -> tuple[Tensor, Tensor]:
        return x.clone(), torch.zeros(x.shape[0], dtype=torch.int64)


class _GlobalRandom(Attack):
    """Ignores the generator: not repeatable."""

    name = "global-random"

    def _run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        threat: ThreatModel,
        *,
        targets: Tensor | None,
        generator: torch.Generator | None,
        opening: Opening,
    ) -> tuple[Tensor, Tensor]:
        x_adv, q = FGSM()._run(
            model, x, y, threat, targets=targets, generator=generator, opening=opening
        )
        return x_adv + 0.05 * torch.randn_like(x), q


class _InPlace(Attack):
    name = "in-place"

    def _run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        threat: ThreatModel,
        *,
        targets: Tensor | None,
        generator: torch.Generator | None,
        opening: Opening,
    ) -> tuple[Tensor, Tensor]:
        x_adv, q = FGSM()._run(
            model, x, y, threat, targets=targets, generator=generator, opening=opening
        )
        x.copy_(x_adv)  # x is detached in __call__ but shares storage with the caller's tensor
        return x_adv, q


class _LeavesGrads(Attack):
    name = "leaves-grads"

    def _run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        threat: ThreatModel,
        *,
        targets: Tensor | None,
        generator: torch.Generator | None,
        opening: Opening,
    ) -> tuple[Tensor, Tensor]:
        xa = x.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(xa), y)
        loss.backward()  # accumulates into the parameters too
        assert xa.grad is not None
        return x + threat.eps * xa.grad.sign(), torch.ones(x.shape[0], dtype=torch.int64)


class _SwitchesMode(Attack):
    name = "switches-mode"

    def _run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        threat: ThreatModel,
        *,
        targets: Tensor | None,
        generator: torch.Generator | None,
        opening: Opening,
    ) -> tuple[Tensor, Tensor]:
        model.train()
        return FGSM()._run(
            model, x, y, threat, targets=targets, generator=generator, opening=opening
        )


class _IgnoresTargets(Attack):
    """Untargeted FGSM that silently does nothing when asked for targets."""

    name = "ignores-targets"

    def _run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        threat: ThreatModel,
        *,
        targets: Tensor | None,
        generator: torch.Generator | None,
        opening: Opening,
    ) -> tuple[Tensor, Tensor]:
        if targets is not None:
            return x.clone(), torch.zeros(x.shape[0], dtype=torch.int64)
        return FGSM()._run(model, x, y, threat, targets=None, generator=generator, opening=opening)


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        (_NoOp, "no stronger than no attack"),
        (_GlobalRandom, "not repeatable with the same generator seed"),
        (_InPlace, "modified its inputs in place"),
        (_LeavesGrads, "left gradients on the model's parameters"),
        (_SwitchesMode, "changed the model's train/eval mode"),
    ],
)
def test_check_attack_catches_broken_attacks(
    toy: Toy, attack: Callable[[], Attack], message: str
) -> None:
    x, y = toy.x[:64].clone(), toy.y[:64].clone()
    toy.model.eval()
    try:
        with pytest.raises(AttackConformanceError, match=message):
            check_attack(attack, toy.model, x, y, ThreatModel("linf", 0.1))
    finally:
        toy.model.eval()
        toy.model.zero_grad(set_to_none=True)


def test_check_attack_catches_targeted_failure(toy: Toy) -> None:
    correct = predict(toy.model, toy.x) == toy.y  # so that no clean point already hits a target
    x, y = toy.x[correct][:64], toy.y[correct][:64]
    with pytest.raises(AttackConformanceError, match="targeted mode reached no target"):
        check_attack(_IgnoresTargets, toy.model, x, y, ThreatModel("linf", 0.1))


def test_expect_stronger_false_skips_the_strength_checks(toy: Toy) -> None:
    passed = check_attack(
        _NoOp,
        toy.model,
        toy.x[:32],
        toy.y[:32],
        ThreatModel("linf", 0.1),
        expect_stronger=False,
        targeted=False,
    )
    assert passed == [c for c in ALL_CHECKS if c not in ("stronger-than-clean", "targeted")]


def test_conformance_error_is_an_assertion_error() -> None:
    assert issubclass(AttackConformanceError, AssertionError)
