"""Fixtures for the sanity-check tests: digits, an honest standard model and an honest
adversarially trained model (the masked wrappers live in ``sanity_masked_models``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from bastion.data import Dataset, load_dataset
from bastion.models import ModelSpec, build_model
from bastion.threat import ThreatModel
from bastion.training import Trainer, TrainSettings
from bastion.training.objectives import ObjectiveSettings


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.fixture(scope="session")
def sanity_digits() -> Dataset:
    return load_dataset("digits", seed=0)


def _train(d: Dataset, objective: ObjectiveSettings, epochs: int) -> nn.Module:
    spec = ModelSpec("small-cnn", tuple(d.input_shape), d.num_classes, tuple(d.mean), tuple(d.std))
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_model(spec)
        settings = TrainSettings(
            objective=objective, epochs=epochs, batch_size=64, lr=0.05, val_examples=100
        )
        Trainer(settings, ThreatModel("linf", 0.2), seed=0).fit(
            model, d.train.x, d.train.y, d.val.x, d.val.y
        )
    finally:
        torch.set_num_threads(old)
    return model.eval()


@pytest.fixture(scope="session")
def standard_model(sanity_digits: Dataset) -> nn.Module:
    """A small CNN trained normally (about 95% clean, no robustness to speak of)."""
    return _train(sanity_digits, ObjectiveSettings("standard"), 4)


@pytest.fixture(scope="session")
def robust_model(sanity_digits: Dataset) -> nn.Module:
    """A small CNN adversarially trained (PGD-AT, linf 0.2): honest, gradients intact."""
    return _train(sanity_digits, ObjectiveSettings("pgd-at", steps=5, step_size=0.5), 8)
