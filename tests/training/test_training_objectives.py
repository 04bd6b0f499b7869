"""Training objectives: finite differentiable losses, eval mode during attacks, validation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.errors import ConfigError
from bastion.threat import ThreatModel
from bastion.training.objectives import (
    ADVERSARIAL,
    OBJECTIVES,
    MixedComponent,
    ObjectiveSettings,
    objective_loss,
)

MIXED = (MixedComponent("linf"), MixedComponent("l2", eps=0.5), MixedComponent("corruption"))


def _settings(name: str, **kw: object) -> ObjectiveSettings:
    """Settings for ``name``, with three perturbation types for ``mixed``."""
    if name == "mixed":
        kw.setdefault("mixed", MIXED)
    return ObjectiveSettings(name, **kw)  # type: ignore[arg-type]


class ModeRecorder(nn.Module):
    """A tiny MLP that records whether it was in train mode at each forward call."""

    def __init__(self, d: int = 16, classes: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(d, 32), nn.ReLU(), nn.Linear(32, classes))
        self.modes: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.modes.append(self.training)
        return self.net(x)  # type: ignore[no-any-return]


def _batch(n: int = 32, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    return x, y


def _model(seed: int = 0) -> ModeRecorder:
    torch.manual_seed(seed)
    m = ModeRecorder()
    m.train()
    return m


THREAT = ThreatModel("linf", 0.1)


@pytest.mark.parametrize("name", OBJECTIVES)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_objective_returns_finite_scalar_with_parameter_gradients(name: str, norm: str) -> None:
    model = _model()
    x, y = _batch()
    x0 = x.clone()
    threat = ThreatModel(norm, 0.1 if norm == "linf" else 0.5)  # type: ignore[arg-type]
    settings = _settings(name, steps=3)
    loss, logits = objective_loss(
        settings, model, x, y, threat, generator=torch.Generator().manual_seed(0)
    )
    assert loss.dim() == 0
    assert math.isfinite(float(loss.detach()))
    assert float(loss.detach()) > 0
    assert logits.shape == (32, 4)
    assert loss.requires_grad
    # the attack took gradients with respect to the input only
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(x, x0)
    loss.backward()  # type: ignore[no-untyped-call]
    for p in model.parameters():
        assert p.grad is not None
        assert torch.isfinite(p.grad).all()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.parameters())
    assert model.training


@pytest.mark.parametrize("name", ["pgd-at", "fast-fgsm", "trades"])
def test_attack_runs_in_eval_mode_and_train_mode_is_restored(name: str) -> None:
    model = _model()
    x, y = _batch()
    objective_loss(
        ObjectiveSettings(name=name, steps=2),
        model,
        x,
        y,
        THREAT,
        generator=torch.Generator().manual_seed(0),
    )
    assert model.training
    assert False in model.modes  # the attack's forward passes ran in eval mode
    n_final = 2 if name == "trades" else 1  # forward passes the loss is computed on
    assert model.modes[-n_final:] == [True] * n_final
    assert not any(model.modes[:-n_final])


def test_standard_is_clean_cross_entropy() -> None:
    model = _model()
    x, y = _batch()
    loss, logits = objective_loss(ObjectiveSettings("standard"), model, x, y, THREAT)
    with torch.no_grad():
        expected = F.cross_entropy(model.net(x), y)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert torch.allclose(logits, model.net(x))


@pytest.mark.parametrize("name", ["pgd-at", "fast-fgsm", "trades"])
def test_adversarial_objective_with_zero_eps_is_standard(name: str) -> None:
    model = _model()
    x, y = _batch()
    std, _ = objective_loss(ObjectiveSettings("standard"), model, x, y, THREAT)
    adv, _ = objective_loss(ObjectiveSettings(name), model, x, y, THREAT.with_eps(0.0))
    assert float(adv.detach()) == pytest.approx(float(std.detach()), rel=1e-6)


@pytest.mark.parametrize("name", ["pgd-at", "fast-fgsm"])
def test_adversarial_loss_exceeds_clean_loss(name: str) -> None:
    model = _model()
    x, y = _batch(64)
    clean, _ = objective_loss(ObjectiveSettings("standard"), model, x, y, THREAT)
    adv, logits = objective_loss(
        ObjectiveSettings(name, steps=5),
        model,
        x,
        y,
        THREAT.with_eps(0.3),
        generator=torch.Generator().manual_seed(1),
    )
    assert float(adv.detach()) > float(clean.detach())
    # the logits returned are those of the adversarial batch, not the clean one
    with torch.no_grad():
        assert not torch.allclose(logits, model.net(x))


def test_trades_is_clean_ce_plus_beta_kl() -> None:
    model = _model()
    x, y = _batch()
    clean, _ = objective_loss(ObjectiveSettings("standard"), model, x, y, THREAT)
    no_beta, _ = objective_loss(
        ObjectiveSettings("trades", steps=3, beta=0.0),
        model,
        x,
        y,
        THREAT,
        generator=torch.Generator().manual_seed(0),
    )
    with_beta, _ = objective_loss(
        ObjectiveSettings("trades", steps=3, beta=6.0),
        model,
        x,
        y,
        THREAT.with_eps(0.3),
        generator=torch.Generator().manual_seed(0),
    )
    assert float(no_beta.detach()) == pytest.approx(float(clean.detach()), rel=1e-6)
    assert float(with_beta.detach()) > float(clean.detach())


@pytest.mark.parametrize("name", ["pgd-at", "fast-fgsm", "trades"])
def test_objective_is_reproducible_from_generator_seed(name: str) -> None:
    model = _model()
    x, y = _batch()
    s = ObjectiveSettings(name, steps=3)
    a, la = objective_loss(s, model, x, y, THREAT, generator=torch.Generator().manual_seed(5))
    b, lb = objective_loss(s, model, x, y, THREAT, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert torch.equal(la, lb)


def test_effective_step_size_defaults() -> None:
    assert ObjectiveSettings("pgd-at", steps=10).effective_step_size() == pytest.approx(0.25)
    assert ObjectiveSettings("pgd-at", steps=5).effective_step_size() == pytest.approx(0.5)
    assert ObjectiveSettings("fast-fgsm").effective_step_size() == pytest.approx(1.25)
    assert ObjectiveSettings("pgd-at", steps=7, step_size=0.35).effective_step_size() == 0.35
    assert ObjectiveSettings("n-fgsm").effective_step_size() == pytest.approx(1.0)
    assert not ObjectiveSettings("standard").adversarial
    assert all(_settings(n).adversarial == (n in ADVERSARIAL) for n in OBJECTIVES)
    assert {"pgd-at", "fast-fgsm", "n-fgsm", "trades", "mart", "mixed"} == set(ADVERSARIAL)


@pytest.mark.parametrize(
    ("kwargs", "field", "expected"),
    [
        ({"name": "pgd"}, "objective.name", "standard, pgd-at, fast-fgsm, n-fgsm, trades, mart"),
        ({"name": "pgd-at", "steps": 0}, "objective.steps", "expected an integer >= 1, got 0"),
        (
            {"name": "pgd-at", "step_size": 0.0},
            "objective.step_size",
            "expected a finite number > 0",
        ),
        ({"name": "fast-fgsm", "step_size": -1.0}, "objective.step_size", "> 0 or null, got -1.0"),
        ({"name": "pgd-at", "steps": 10, "step_size": 1.5}, "objective.step_size", "<= 1"),
        ({"name": "trades", "beta": -0.5}, "objective.beta", "expected a finite number >= 0"),
        ({"name": "pgd-at", "steps": 2.0}, "objective.steps", "expected an integer >= 1, got 2.0"),
    ],
)
def test_objective_settings_validation(
    kwargs: dict[str, object], field: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        ObjectiveSettings(**kwargs)  # type: ignore[arg-type]
    msg = str(info.value)
    assert msg.startswith(f"{field}:")
    assert expected in msg


def test_objective_settings_accepts_large_steps_where_allowed() -> None:
    # single-step PGD and fast FGSM may step further than eps (the projection clips)
    assert ObjectiveSettings("pgd-at", steps=1, step_size=1.5).step_size == 1.5
    assert ObjectiveSettings("fast-fgsm", step_size=1.25).step_size == 1.25
    assert ObjectiveSettings("pgd-at", steps=10, step_size=1.0).step_size == 1.0
