"""Curricula and run control: attack-step phases, patience, catastrophic-overfitting rollback,
and the recipe settings reached from YAML."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from bastion.config import parse_config
from bastion.data import Dataset
from bastion.errors import ConfigError
from bastion.threat import ThreatModel
from bastion.training import (
    AWPSettings,
    ObjectiveSettings,
    Trainer,
    TrainSettings,
    attack_steps,
    catastrophic_overfitting,
)

THREAT = ThreatModel("linf", 0.2)


def test_attack_steps_follow_the_phases() -> None:
    phases = ((1, 2), (3, 5), (6, 10))
    assert [attack_steps(phases, e, 7) for e in range(1, 8)] == [2, 2, 5, 5, 5, 10, 10]
    assert attack_steps((), 4, 7) == 7
    assert attack_steps(((3, 1),), 2, 7) == 7  # before the first phase: the objective's steps


def test_trainer_uses_the_phase_steps(digits: Dataset, make_model: Any) -> None:
    s = TrainSettings(
        epochs=3,
        batch_size=64,
        objective=ObjectiveSettings("pgd-at", steps=4),
        step_phases=((1, 1), (3, 3)),
        val_examples=20,
        val_pgd_steps=1,
    )
    tr = digits.train.subset(128)
    res = Trainer(s, THREAT, seed=0).fit(make_model(0, "mlp", hidden=[8]), tr.x, tr.y, tr.x, tr.y)
    assert [h["attack_steps"] for h in res.history] == [1.0, 1.0, 3.0]


def test_catastrophic_overfitting_signature() -> None:
    good = {"good_robust": 0.6, "good_fgsm": 0.7}
    assert catastrophic_overfitting(**good, robust=0.05, fgsm=0.9)
    assert catastrophic_overfitting(**good, robust=0.39, fgsm=0.695)
    assert not catastrophic_overfitting(**good, robust=0.05, fgsm=0.3)  # both fell: not CO
    assert not catastrophic_overfitting(**good, robust=0.45, fgsm=0.9)  # a small dip
    assert not catastrophic_overfitting(**good, robust=0.45, fgsm=0.9, drop=0.2)
    assert catastrophic_overfitting(**good, robust=0.45, fgsm=0.9, drop=0.1)


class Replay(Trainer):
    """Replays scripted validation figures (PGD, FGSM) epoch by epoch; training is real."""

    robust: ClassVar[list[float]] = [0.3, 0.5, 0.02, 0.6]
    fgsm: ClassVar[list[float]] = [0.4, 0.6, 0.9, 0.95]

    def validate(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> tuple[float, float]:
        self.n_val = getattr(self, "n_val", 0) + 1
        return 0.9, self.robust[self.n_val - 1]

    def fgsm_accuracy(self, model: nn.Module, x: Tensor, y: Tensor) -> float:
        self.n_fgsm = getattr(self, "n_fgsm", 0) + 1
        return self.fgsm[self.n_fgsm - 1]


@pytest.mark.parametrize("select", [None, "last"])
def test_collapse_rolls_back_to_last_good_epoch_and_warns(
    digits: Dataset, make_model: Any, select: str | None
) -> None:
    states: dict[int, dict[str, Tensor]] = {}
    model = make_model(0, "mlp", hidden=[8])

    def progress(d: dict[str, Any]) -> None:
        if d.get("end_of_epoch") and "rolled_back_to" not in d:
            states[d["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}

    s = TrainSettings(
        epochs=4,
        batch_size=64,
        objective=ObjectiveSettings("fast-fgsm"),
        val_examples=20,
        select=select,
    )
    tr = digits.train.subset(128)
    res = Replay(s, THREAT, seed=0, progress=progress).fit(model, tr.x, tr.y, tr.x, tr.y)
    assert res.stop_reason == "catastrophic-overfitting"
    assert len(res.history) == 3 and res.history[-1]["rolled_back_to"] == 2.0
    assert res.best_epoch == 2
    assert len(res.warnings) == 1 and "catastrophic overfitting at epoch 3" in res.warnings[0]
    assert "rolled back to epoch 2" in res.warnings[0]
    now = model.state_dict()
    assert all(torch.equal(now[k], states[2][k]) for k in now)
    assert res.summary()["warnings"] == res.warnings


def test_no_rollback_when_the_check_is_off(digits: Dataset, make_model: Any) -> None:
    s = TrainSettings(
        epochs=4,
        batch_size=64,
        objective=ObjectiveSettings("fast-fgsm"),
        val_examples=20,
        overfit_check=False,
    )
    tr = digits.train.subset(128)
    res = Replay(s, THREAT, seed=0).fit(make_model(0, "mlp", hidden=[8]), tr.x, tr.y, tr.x, tr.y)
    assert len(res.history) == 4 and res.warnings == [] and res.stop_reason is None
    assert res.best_epoch == 4


class Plateau(Trainer):
    robust: ClassVar[list[float]] = [0.3, 0.5, 0.5, 0.4, 0.45, 0.6]

    def validate(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> tuple[float, float]:
        self.n_val = getattr(self, "n_val", 0) + 1
        return 0.9, self.robust[self.n_val - 1]


def test_patience_stops_after_epochs_without_improvement(digits: Dataset, make_model: Any) -> None:
    s = TrainSettings(
        epochs=6,
        batch_size=64,
        objective=ObjectiveSettings("pgd-at", steps=1),
        val_examples=20,
        patience=2,
    )
    tr = digits.train.subset(128)
    res = Plateau(s, THREAT, seed=0).fit(make_model(0, "mlp", hidden=[8]), tr.x, tr.y, tr.x, tr.y)
    assert len(res.history) == 4  # epochs 3 and 4 did not beat 0.5
    assert res.stop_reason == "patience" and res.best_epoch == 3  # ties keep the later epoch
    assert res.summary()["stop_reason"] == "patience"


def _doc(**model: Any) -> dict[str, Any]:
    return {
        "name": "t",
        "threat": {"norm": "linf", "eps": 0.3},
        "training": {"epochs": 6},
        "models": [{"name": "m", **model}],
    }


def test_recipe_settings_reach_the_trainer_from_yaml() -> None:
    cfg = parse_config(
        _doc(
            objective={
                "name": "mixed",
                "steps": 3,
                "mixed": [
                    {"kind": "linf", "weight": 2},
                    {"kind": "l2", "eps": 1.5},
                    {"kind": "corruption", "severities": [1, 2]},
                ],
            },
            training={
                "step_phases": [[1, 1], [3, 3]],
                "awp": {"gamma": 0.01, "warmup_epochs": 2},
                "calibrate": True,
                "patience": 3,
                "checkpoint_every": 50,
            },
        )
    )
    s = cfg.train_settings(cfg.models[0])
    assert s.step_phases == ((1, 1), (3, 3))
    assert s.awp == AWPSettings(gamma=0.01, warmup_epochs=2)
    assert s.calibrate and s.patience == 3 and s.checkpoint_every == 50
    assert [c.kind for c in s.objective.mixed] == ["linf", "l2", "corruption"]
    assert s.objective.mixed[1].eps == 1.5 and s.objective.mixed[2].severities == (1, 2)


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        ({"objective": {"name": "distill", "temperature": -2}}, "objective.temperature"),
        ({"objective": {"name": "pgd-at"}, "training": {"awp": {"gamma": 0}}}, "awp.gamma"),
        ({"objective": {"name": "pgd-at"}, "training": {"eps_ramp_epochs": 8}}, "eps_ramp_epochs"),
        (
            {"objective": {"name": "pgd-at", "steps": 10, "step_size": 1.5}},
            "objective: step_size: 1.5 x eps",
        ),
        (
            {"objective": {"name": "mixed", "mixed": [{"kind": "linf", "weight": 0}]}},
            "objective.mixed",
        ),
        ({"objective": {"name": "mixed", "mixed": [{"kind": "l5"}]}}, "mixed.0.kind"),
        ({"objective": {"name": "augmix", "augmix": {"widht": 2}}}, "augmix.widht"),
        (
            {"objective": {"name": "fast-fgsm"}, "training": {"step_phases": [[1, 2]]}},
            "training.step_phases",
        ),
    ],
)
def test_bad_recipe_settings_are_refused_naming_the_field(
    model: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        parse_config(_doc(**model))
