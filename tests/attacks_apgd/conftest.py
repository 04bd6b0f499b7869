"""A small CNN trained on digits (standard and PGD-AT) for the APGD and cascade tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from apgd_models import Trained

from bastion.data import load_dataset
from bastion.models import ModelSpec, build_model
from bastion.threat import ThreatModel
from bastion.training import ObjectiveSettings, Trainer, TrainSettings


def _train(objective: str, epochs: int) -> Trained:
    data = load_dataset("digits", seed=0)
    spec = ModelSpec(
        "small-cnn", tuple(data.input_shape), data.num_classes, tuple(data.mean), tuple(data.std)
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(spec)
    threat = ThreatModel("linf", 0.2)
    settings = TrainSettings(
        epochs=epochs,
        batch_size=64,
        lr=0.05,
        val_examples=50,
        val_pgd_steps=3,
        objective=ObjectiveSettings(objective, steps=5, step_size=0.5),
    )
    Trainer(settings, threat, seed=0).fit(model, data.train.x, data.train.y, data.val.x, data.val.y)
    model.eval()
    return Trained(model, data.test.x[:120], data.test.y[:120], threat)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def plain() -> Trained:
    return _train("standard", 4)


@pytest.fixture(scope="session")
def robust() -> Trained:
    return _train("pgd-at", 8)
