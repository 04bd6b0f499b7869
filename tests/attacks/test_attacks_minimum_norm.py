"""Minimum-norm attacks run once and answer every eps; every attack takes the clean forward pass
from the base class's opening instead of repeating it."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from attack_toy import Toy, single_thread
from torch import Tensor, nn

from bastion.attacks import Attack, build_attack
from bastion.attacks.deepfool import DeepFool
from bastion.evaluation.evaluator import NamedAttack, evaluate_model
from bastion.threat import ThreatModel

GRID = [0.02, 0.05, 0.1, 0.2]
N = 48


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    ("name", "settings", "norm"),
    [
        ("deepfool", {"steps": 20}, "linf"),
        ("deepfool", {"steps": 20}, "l2"),
        ("cw-l2", {"steps": 30, "binary_search_steps": 3, "initial_const": 0.1}, "l2"),
        ("fab", {"steps": 20}, "linf"),
        ("fab", {"steps": 20}, "l1"),
    ],
)
def test_one_search_answers_each_eps_as_a_run_at_that_eps_would(
    toy: Toy, name: str, settings: dict[str, Any], norm: str
) -> None:
    # these searches do not depend on eps, so the one run must agree exactly, example by example
    x, y = toy.x[:N], toy.y[:N]
    scale = {"linf": 1.0, "l2": 2.5, "l1": 5.0}[norm]
    grid = [e * scale for e in GRID]
    with single_thread():
        found = build_attack(name, settings).search(
            toy.model, x, y, ThreatModel(norm, grid[0]), generator=_gen()
        )
        for eps in grid:
            threat = ThreatModel(norm, eps)
            per_eps = build_attack(name, settings)(toy.model, x, y, threat, generator=_gen(1))
            assert torch.equal(found.robust_at(toy.model, threat), ~per_eps.success)
            assert bool((found.norms[~found.robust_at(toy.model, threat)] < float("inf")).all())
    # broken at a small eps: broken at every larger one; some examples need more than the least
    assert 0 < int((found.norms <= grid[0]).sum()) < int((found.norms <= grid[-1]).sum())


class CountingDeepFool(DeepFool):
    """DeepFool that counts how many times its search runs."""

    runs = 0

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, **kw: Any) -> Any:
        CountingDeepFool.runs += 1
        return super()._run(model, x, y, threat, **kw)


def test_the_evaluator_runs_a_minimum_norm_attack_once_per_model(toy: Toy) -> None:
    x, y = toy.x[:N], toy.y[:N]
    CountingDeepFool.runs = 0
    with single_thread():
        res = evaluate_model(
            toy.model,
            x,
            y,
            ThreatModel("linf", 0.1),
            [NamedAttack("deepfool", CountingDeepFool(steps=20))],
            eps_grid=[0.0, *GRID],
            sanity="off",
        )
        assert CountingDeepFool.runs == 1  # one batch, one search, five eps answered
        curve = res["accuracy_vs_eps"]["per_attack"]["deepfool"]
        with torch.no_grad():
            correct = toy.model(x).argmax(1) == y
        expected = [float(correct.float().mean())]
        for eps in GRID:
            r = DeepFool(steps=20)(toy.model, x, y, ThreatModel("linf", eps))
            expected.append(float((correct & ~r.success).float().mean()))
    assert curve == expected
    assert curve == sorted(curve, reverse=True)


class CleanPassCounter(nn.Module):
    """Wraps a model; counts forward passes on exactly the clean batch ``x``."""

    def __init__(self, model: nn.Module, x: Tensor):
        super().__init__()
        self.model, self.x, self.clean_passes = model, x, 0

    def forward(self, inp: Tensor) -> Tensor:
        if inp.shape == self.x.shape and torch.equal(inp, self.x):
            self.clean_passes += 1
        out: Tensor = self.model(inp)
        return out


@pytest.mark.parametrize(
    ("name", "settings", "threat"),
    [
        ("pgd", {"steps": 5}, ThreatModel("linf", 0.1)),
        ("apgd", {"steps": 10}, ThreatModel("linf", 0.1)),
        ("apgd-t", {"steps": 10, "target_classes": 2, "loss": "ce"}, ThreatModel("linf", 0.1)),
        ("slide", {"steps": 5}, ThreatModel("l1", 0.5)),
        ("deepfool", {"steps": 10}, ThreatModel("l2", 0.25)),
        ("fab", {"steps": 10}, ThreatModel("linf", 0.1)),
        ("fab-t", {"steps": 10, "target_classes": 2}, ThreatModel("linf", 0.1)),
        ("cw-l2", {"steps": 10, "binary_search_steps": 2}, ThreatModel("l2", 0.25)),
        ("square", {"queries": 50}, ThreatModel("linf", 0.1)),
        ("hopskipjump", {"queries": 100}, ThreatModel("linf", 0.1)),
    ],
)
def test_the_clean_pass_is_taken_once(
    toy: Toy, name: str, settings: dict[str, Any], threat: ThreatModel
) -> None:
    x, y = toy.x[:N], toy.y[:N]
    counter = CleanPassCounter(toy.model, x)
    attack: Attack = build_attack(name, settings)
    with single_thread():
        attack(counter, x, y, threat, generator=_gen())
    assert counter.clean_passes == 1
