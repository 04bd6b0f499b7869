"""The Trainer: settings validation, learning, reproducibility, checkpoint selection, progress."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from bastion.attacks import PGD
from bastion.data import Dataset
from bastion.errors import ConfigError
from bastion.threat import ThreatModel
from bastion.training import (
    ObjectiveSettings,
    Trainer,
    TrainResult,
    TrainSettings,
    accuracy,
    learning_rate,
)

ModelFactory = Callable[..., nn.Module]  # the make_model fixture of conftest.py
THREAT = ThreatModel("linf", 0.2)
BATCH_KEYS = {"epoch", "epochs", "batch", "batches", "loss", "accuracy", "eps"}
EPOCH_KEYS = {
    "epoch",
    "epochs",
    "lr",
    "train_eps",
    "train_loss",
    "train_accuracy",
    "val_clean_accuracy",
    "val_robust_accuracy",
    "attack_steps",
    "seconds",
    "end_of_epoch",
}


def _fit(
    settings: TrainSettings,
    model: nn.Module,
    data: Dataset,
    *,
    n_train: int | None = None,
    seed: int = 0,
    progress: Any = None,
    trainer_cls: type[Trainer] = Trainer,
) -> TrainResult:
    tr = data.train if n_train is None else data.train.subset(n_train)
    trainer = trainer_cls(settings, THREAT, seed=seed, progress=progress)
    return trainer.fit(model, tr.x, tr.y, data.val.x, data.val.y)


def _state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"lr": -0.1}, "lr"),
        ({"weight_decay": -1e-4}, "weight_decay"),
        ({"epochs": 3, "eps_ramp_epochs": 4}, "eps_ramp_epochs"),
        ({"eps_ramp_epochs": -1}, "eps_ramp_epochs"),
        ({"val_examples": 0}, "val_examples"),
        ({"val_pgd_steps": 0}, "val_pgd_steps"),
        ({"grad_clip": -1.0}, "grad_clip"),
        ({"train_eps": -0.1}, "train_eps"),
        ({"schedule": "linear"}, "schedule"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"select": "best"}, "select"),
    ],
)
def test_train_settings_validation_names_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrainSettings(**kwargs)
    msg = str(info.value)
    assert msg.startswith(f"training.{field}: expected ")
    assert msg.endswith(f"got {kwargs[field]!r}")


def test_train_settings_defaults_and_selection() -> None:
    s = TrainSettings()
    assert s.selection == "clean"
    assert TrainSettings(objective=ObjectiveSettings("pgd-at")).selection == "robust"
    assert TrainSettings(objective=ObjectiveSettings("trades")).selection == "robust"
    assert TrainSettings(objective=ObjectiveSettings("pgd-at"), select="last").selection == "last"
    assert TrainSettings(select="robust").selection == "robust"
    d = TrainSettings(objective=ObjectiveSettings("pgd-at", steps=3)).to_dict()
    assert d["objective"]["name"] == "pgd-at"
    assert d["objective"]["steps"] == 3
    json.dumps(d)
    # the ramp may last the whole training
    assert TrainSettings(epochs=3, eps_ramp_epochs=3).eps_ramp_epochs == 3


def test_accuracy_helper() -> None:
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
        model.bias.zero_()
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert accuracy(model, x, torch.tensor([0, 1, 1, 1])) == pytest.approx(0.75)
    assert accuracy(model, x[:0], torch.tensor([], dtype=torch.long)) == 0.0


# -- learning -------------------------------------------------------------------------------------


def test_fit_reduces_loss_and_learns(digits: Dataset, make_model: ModelFactory) -> None:
    model = make_model(0)
    before = accuracy(model, digits.val.x, digits.val.y)
    s = TrainSettings(epochs=4, batch_size=64, lr=0.05, val_examples=180)
    res = _fit(s, model, digits)
    losses = [h["train_loss"] for h in res.history]
    assert len(res.history) == 4
    assert losses[-1] < 0.5 * losses[0]
    after = accuracy(model, digits.val.x, digits.val.y)
    assert after > 0.85 > before
    assert res.history[-1]["val_clean_accuracy"] > 0.85
    assert not model.training
    assert res.selection == "clean"
    # standard training does not pay for a robust validation
    assert all(math.isnan(h["val_robust_accuracy"]) for h in res.history)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fit_with_each_optimizer_and_grad_clip(
    digits: Dataset, make_model: ModelFactory, optimizer: str
) -> None:
    model = make_model(0, "mlp", hidden=[32])
    lr = 0.01 if optimizer == "adam" else 0.1
    s = TrainSettings(
        epochs=3,
        batch_size=64,
        lr=lr,
        optimizer=optimizer,
        grad_clip=1.0,
        schedule="constant",
        val_examples=100,
    )
    res = _fit(s, model, digits, n_train=600)
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert res.history[-1]["val_clean_accuracy"] > 0.6


def test_history_lr_follows_schedule(digits: Dataset, make_model: ModelFactory) -> None:
    n, bs, epochs = 200, 50, 3
    s = TrainSettings(epochs=epochs, batch_size=bs, lr=0.1, schedule="cosine", val_examples=20)
    res = _fit(s, make_model(0, "mlp", hidden=[16]), digits, n_train=n)
    batches = n // bs
    total = epochs * batches
    for e, h in enumerate(res.history, start=1):
        # the lr recorded is the one of the epoch's last step
        assert h["lr"] == pytest.approx(learning_rate("cosine", 0.1, (e * batches - 1) / total))
    assert [h["epoch"] for h in res.history] == [1, 2, 3]


# -- reproducibility ------------------------------------------------------------------------------


def test_same_seed_gives_identical_weights(digits: Dataset, make_model: ModelFactory) -> None:
    s = TrainSettings(
        epochs=2,
        batch_size=64,
        lr=0.05,
        objective=ObjectiveSettings("pgd-at", steps=2),
        val_examples=50,
        val_pgd_steps=2,
    )
    a = make_model(0)
    b = make_model(0)
    c = make_model(0)
    assert _same_state(_state(a), _state(c))
    ra = _fit(s, a, digits, n_train=300, seed=3)
    rb = _fit(s, b, digits, n_train=300, seed=3)
    _fit(s, c, digits, n_train=300, seed=4)
    assert _same_state(_state(a), _state(b))
    assert not _same_state(_state(a), _state(c))
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in ra.history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in rb.history]
    assert ra.best_epoch == rb.best_epoch


def test_fit_leaves_global_rng_alone(digits: Dataset, make_model: ModelFactory) -> None:
    model = make_model(0, "mlp", hidden=[8])
    s = TrainSettings(
        epochs=1,
        batch_size=64,
        objective=ObjectiveSettings("fast-fgsm"),
        val_examples=20,
        val_pgd_steps=1,
    )
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _fit(s, model, digits, n_train=128)
    assert torch.equal(torch.rand(3), expected)


# -- checkpoint selection -------------------------------------------------------------------------


class ScriptedTrainer(Trainer):
    """Reports scripted validation figures, one pair per epoch."""

    clean: ClassVar[list[float]] = []
    robust: ClassVar[list[float]] = []

    def validate(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> tuple[float, float]:
        self.calls = getattr(self, "calls", 0) + 1
        return self.clean[self.calls - 1], self.robust[self.calls - 1]


def _scripted(clean: list[float], robust: list[float]) -> type[Trainer]:
    return type("Scripted", (ScriptedTrainer,), {"clean": clean, "robust": robust})


@pytest.mark.parametrize(
    ("ramp", "select", "expected"),
    [
        (2.0, None, 3),  # epoch 1 (0.9) is inside the ramp and does not count
        (0.0, None, 1),  # without a ramp the early epoch wins
        (1.5, None, 3),  # a fractional ramp ends during epoch 2
        (2.0, "clean", 2),  # clean accuracy picks its own best epoch
        (2.0, "last", 4),
    ],
)
def test_best_checkpoint_selection(
    digits: Dataset, make_model: ModelFactory, ramp: float, select: str | None, expected: int
) -> None:
    clean = [0.5, 0.95, 0.7, 0.8]
    robust = [0.9, 0.2, 0.6, 0.5]
    snapshots: dict[int, dict[str, Tensor]] = {}
    model = make_model(0, "mlp", hidden=[16])

    def progress(d: dict[str, Any]) -> None:
        if d.get("end_of_epoch"):
            snapshots[d["epoch"]] = _state(model)

    s = TrainSettings(
        epochs=4,
        batch_size=64,
        lr=0.05,
        eps_ramp_epochs=ramp,
        select=select,
        objective=ObjectiveSettings("fast-fgsm"),
        val_examples=10,
        overfit_check=False,  # the scripted drop 0.9 -> 0.2 would read as a collapse
    )
    res = _fit(
        s, model, digits, n_train=128, progress=progress, trainer_cls=_scripted(clean, robust)
    )
    assert res.best_epoch == expected
    # the weights returned are those at the end of the selected epoch
    assert _same_state(_state(model), snapshots[expected])
    if expected != 4:
        assert not _same_state(snapshots[expected], snapshots[4])
    assert [h["val_robust_accuracy"] for h in res.history] == robust


def test_best_robust_checkpoint_is_the_best_eligible_epoch(
    digits: Dataset, make_model: ModelFactory
) -> None:
    """With real PGD validation: the kept weights reproduce the best history entry."""
    model = make_model(0)
    s = TrainSettings(
        epochs=4,
        batch_size=64,
        lr=0.1,
        schedule="constant",
        eps_ramp_epochs=1,
        objective=ObjectiveSettings("pgd-at", steps=2),
        val_examples=120,
        val_pgd_steps=3,
    )
    trainer = Trainer(s, THREAT, seed=0)
    tr = digits.train.subset(500)
    res = trainer.fit(model, tr.x, tr.y, digits.val.x, digits.val.y)
    robust = [h["val_robust_accuracy"] for h in res.history]
    eligible = [(r, e) for e, r in enumerate(robust, start=1) if e >= s.eps_ramp_epochs]
    assert res.best_epoch == max(eligible)[1]
    assert res.selection == "robust"
    xv, yv = digits.val.x[:120], digits.val.y[:120]
    clean, rob = trainer.validate(model, xv, yv, torch.Generator().manual_seed(1))
    assert rob == robust[res.best_epoch - 1]
    assert clean == res.history[res.best_epoch - 1]["val_clean_accuracy"]


def test_empty_validation_set_keeps_last_epoch(digits: Dataset, make_model: ModelFactory) -> None:
    s = TrainSettings(
        epochs=2,
        batch_size=64,
        objective=ObjectiveSettings("fast-fgsm"),
        val_examples=10,
        val_pgd_steps=1,
    )
    tr = digits.train.subset(128)
    res = Trainer(s, THREAT).fit(make_model(0, "mlp", hidden=[8]), tr.x, tr.y, tr.x[:0], tr.y[:0])
    assert res.best_epoch == 2
    assert all(math.isfinite(h["val_robust_accuracy"]) for h in res.history)


# -- progress and summary -------------------------------------------------------------------------


def test_progress_callback_reports_batches_and_epochs(
    digits: Dataset, make_model: ModelFactory
) -> None:
    calls: list[dict[str, Any]] = []
    n, bs, epochs, ramp = 150, 50, 3, 2.0
    s = TrainSettings(
        epochs=epochs,
        batch_size=bs,
        objective=ObjectiveSettings("pgd-at", steps=1),
        eps_ramp_epochs=ramp,
        val_examples=30,
        val_pgd_steps=2,
    )
    res = _fit(s, make_model(0, "mlp", hidden=[8]), digits, n_train=n, progress=calls.append)
    per_batch = [c for c in calls if not c.get("end_of_epoch")]
    per_epoch = [c for c in calls if c.get("end_of_epoch")]
    assert len(per_batch) == epochs * 3
    assert len(per_epoch) == epochs
    for c in per_batch:
        assert set(c) == BATCH_KEYS
        assert c["epochs"] == epochs
        assert c["batches"] == 3
        assert 1 <= c["batch"] <= 3
        assert 0.0 <= c["accuracy"] <= 1.0
        assert math.isfinite(c["loss"]) and c["loss"] > 0
    assert [(c["epoch"], c["batch"]) for c in per_batch] == [
        (e, b) for e in range(1, epochs + 1) for b in range(1, 4)
    ]
    eps = [c["eps"] for c in per_batch]
    assert eps[0] == 0.0
    assert all(b >= a for a, b in itertools.pairwise(eps))
    assert all(c["eps"] < THREAT.eps for c in per_batch if c["epoch"] <= ramp)
    assert all(c["eps"] == THREAT.eps for c in per_batch if c["epoch"] > ramp)
    for c, h in zip(per_epoch, res.history, strict=True):
        assert set(c) == EPOCH_KEYS
        assert c["end_of_epoch"] is True
        assert {k: v for k, v in c.items() if k not in ("end_of_epoch", "epochs")} == h
        assert 0.0 <= c["val_clean_accuracy"] <= 1.0
        assert 0.0 <= c["val_robust_accuracy"] <= c["val_clean_accuracy"]
    # the per-epoch record repeats the epoch's last batch
    last = [c for c in per_batch if c["batch"] == 3]
    for b, e in zip(last, per_epoch, strict=True):
        assert e["train_loss"] == pytest.approx(b["loss"])
        assert e["train_accuracy"] == pytest.approx(b["accuracy"])
        assert e["train_eps"] == b["eps"]


def test_train_eps_overrides_threat_eps_for_training(
    digits: Dataset, make_model: ModelFactory
) -> None:
    calls: list[dict[str, Any]] = []
    s = TrainSettings(
        epochs=1,
        batch_size=64,
        objective=ObjectiveSettings("fast-fgsm"),
        train_eps=0.05,
        val_examples=10,
        val_pgd_steps=1,
    )
    _fit(s, make_model(0, "mlp", hidden=[8]), digits, n_train=128, progress=calls.append)
    assert {c["eps"] for c in calls if not c.get("end_of_epoch")} == {0.05}


@pytest.mark.parametrize(
    ("objective", "select", "label"),
    [
        ("standard", None, "val_clean_accuracy"),
        ("fast-fgsm", None, "val_robust_accuracy"),
        ("fast-fgsm", "last", "last"),
    ],
)
def test_train_result_summary(
    digits: Dataset, make_model: ModelFactory, objective: str, select: str | None, label: str
) -> None:
    s = TrainSettings(
        epochs=2,
        batch_size=64,
        objective=ObjectiveSettings(objective),
        select=select,
        val_examples=20,
        val_pgd_steps=1,
    )
    res = _fit(s, make_model(0, "mlp", hidden=[8]), digits, n_train=128)
    summary = res.summary()
    assert set(summary) == {"seconds", "epochs", "best_epoch", "selection", "history", "warnings"}
    assert summary["warnings"] == []
    assert summary["epochs"] == 2
    assert summary["best_epoch"] == res.best_epoch
    assert 1 <= res.best_epoch <= 2
    assert summary["selection"] == label
    assert summary["history"] == res.history
    assert summary["seconds"] == round(res.seconds, 3)
    assert summary["seconds"] >= 0
    assert res.seconds >= sum(h["seconds"] for h in res.history) - 1e-6


def test_summary_rounds_seconds() -> None:
    res = TrainResult(
        model=nn.Linear(1, 1),
        history=[{"epoch": 1}],
        best_epoch=1,
        seconds=1.23456,
        selection="robust",
    )
    assert res.summary() == {
        "seconds": 1.235,
        "epochs": 1,
        "best_epoch": 1,
        "selection": "val_robust_accuracy",
        "history": [{"epoch": 1}],
        "warnings": [],
    }


# -- adversarial training works -------------------------------------------------------------------


def test_pgd_training_beats_standard_training_under_pgd(
    digits: Dataset, make_model: ModelFactory
) -> None:
    common: dict[str, Any] = {
        "epochs": 6,
        "batch_size": 64,
        "lr": 0.05,
        "val_examples": 100,
        "val_pgd_steps": 3,
    }
    std = make_model(0)
    _fit(TrainSettings(**common), std, digits)
    adv = make_model(0)
    _fit(
        TrainSettings(
            **common,
            eps_ramp_epochs=2,
            objective=ObjectiveSettings("pgd-at", steps=4, step_size=0.5),
        ),
        adv,
        digits,
    )
    x, y = digits.test.x, digits.test.y
    pgd = PGD(steps=20)

    def robust(m: nn.Module) -> float:
        res = pgd(m, x, y, THREAT, generator=torch.Generator().manual_seed(0))
        return float((~res.success).float().mean())

    r_std, r_adv = robust(std), robust(adv)
    assert accuracy(std, x, y) > 0.9
    assert accuracy(adv, x, y) > 0.75
    assert r_std < 0.15
    assert r_adv > r_std + 0.2
