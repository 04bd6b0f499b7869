"""The conformance suite over every registered attack, parametrised from the registry: an attack
that enters the registry with ``@register`` is checked here without anyone adding it.

Each attack runs on a tiny image classifier (1x4x4 inputs, 4 classes as APGD-T's DLR loss needs,
trained in about a second) with a small budget; an attack missing from ``CHEAP`` runs with its
defaults under a linf threat.
Minimum-norm attacks also pass :func:`check_minimum_norm` on an eps grid.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from attack_toy import single_thread
from torch import Tensor, nn

from bastion.attacks import ATTACKS, build_attack, check_attack, check_minimum_norm
from bastion.errors import AttackInputError
from bastion.threat import ThreatModel

LINF = ThreatModel("linf", 0.3)
L2 = ThreatModel("l2", 1.0)
L1 = ThreatModel("l1", 2.0)

#: name -> (cheap settings, threat, whether a targeted call is allowed)
CHEAP: dict[str, tuple[dict[str, Any], ThreatModel, bool]] = {
    "fgsm": ({}, LINF, True),
    "pgd": ({"steps": 5}, LINF, True),
    "mi-fgsm": ({"steps": 5}, LINF, True),
    "apgd": ({"steps": 10}, LINF, True),
    "apgd-t": ({"steps": 10, "target_classes": 2}, LINF, False),
    "slide": ({"steps": 10}, L1, True),
    "cw-l2": ({"steps": 30, "binary_search_steps": 3, "lr": 0.05, "initial_const": 0.1}, L2, True),
    "deepfool": ({"steps": 20}, L2, True),
    "fab": ({"steps": 20}, LINF, True),
    "fab-t": ({"steps": 20, "target_classes": 2}, LINF, False),
    "square": ({"queries": 100}, LINF, True),
    "hopskipjump": ({"queries": 300}, LINF, True),
    "universal": ({"epochs": 5, "step_size": 0.1}, LINF, True),
    "patch": ({"size": 0.5, "epochs": 20, "step_size": 0.2}, ThreatModel("linf", 1.0), True),
    "cascade": ({"attacks": [{"name": "fgsm"}, {"name": "pgd", "steps": 5}]}, LINF, True),
}


@dataclass(frozen=True)
class Tiny:
    model: nn.Module
    x: Tensor  # (N, 1, 4, 4) in [0, 1]
    y: Tensor  # (N,) int64, every example classified correctly


def _train_tiny() -> Tiny:
    g = torch.Generator().manual_seed(7)
    w = torch.randn(16, 4, generator=g)
    x = torch.rand(600, 1, 4, 4, generator=g)
    y = ((x.flatten(1) - 0.5) @ w).argmax(dim=1)
    with torch.random.fork_rng(), single_thread():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for step in range(200):
            i = (step * 100) % 500
            loss = F.cross_entropy(model(x[i : i + 100]), y[i : i + 100])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    model.zero_grad(set_to_none=True)
    xt, yt = x[500:], y[500:]
    with torch.no_grad():
        right = model(xt).argmax(1) == yt
    return Tiny(model, xt[right][:24], yt[right][:24])


@pytest.fixture(scope="module")
def tiny() -> Iterator[Tiny]:
    with single_thread():
        yield _train_tiny()


def _settings(name: str, tiny: Tiny) -> tuple[dict[str, Any], ThreatModel, bool]:
    if name == "transfer":  # crafted on a surrogate: here the model itself, attacked by PGD
        return {"surrogate": tiny.model, "attack": {"name": "pgd", "steps": 5}}, LINF, True
    return CHEAP.get(name, ({}, LINF, True))


def test_the_tiny_model_is_accurate(tiny: Tiny) -> None:
    assert tiny.x.shape == (24, 1, 4, 4)  # 24 of the 100 held-out examples, all correct


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_registered_attack_conforms(tiny: Tiny, name: str) -> None:
    settings, threat, targeted = _settings(name, tiny)
    make = lambda: build_attack(name, settings)  # noqa: E731
    with single_thread():
        passed = check_attack(make, tiny.model, tiny.x, tiny.y, threat, seed=1, targeted=targeted)
        assert "stronger-than-clean" in passed and "feasible" in passed
        if ATTACKS[name].kind == "minimum-norm":
            grid = [threat.eps / 4, threat.eps / 2, threat.eps]
            stop = threat.with_eps(grid[0])
            minimum = check_minimum_norm(make, tiny.model, tiny.x, tiny.y, stop, grid, seed=1)
            assert minimum == ["search-feasible", "norms-honest", "answers-grid"]
        else:
            with pytest.raises(AttackInputError, match="search\\(\\) needs a minimum-norm attack"):
                make().search(tiny.model, tiny.x, tiny.y, threat)


def test_every_registered_attack_declares_knowledge_and_kind() -> None:
    for name, cls in ATTACKS.items():
        assert cls.name == name
        assert cls.kind in ("fixed-budget", "minimum-norm")
        assert cls.knowledge in ("white-box", "score-based", "label-only", "transfer") or (
            cls.knowledge is None and name == "cascade"
        )
    minimum = sorted(n for n, c in ATTACKS.items() if c.kind == "minimum-norm")
    assert {"fab", "fab-t", "deepfool", "cw-l2"} <= set(minimum)
