"""Shared fixtures: the embedded digits set and a tiny MLP recipe that trains in about a
second, so the privacy tests stay fast."""

from __future__ import annotations

import pytest
import torch

from bastion.data import Dataset, load_dataset
from bastion.models.zoo import ModelSpec
from bastion.privacy.membership import ShadowRecipe
from bastion.threat import ThreatModel
from bastion.training.trainer import TrainSettings


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_dataset("digits", seed=0)


def tiny_recipe(ds: Dataset, *, epochs: int = 8, hidden: int = 64) -> ShadowRecipe:
    spec = ModelSpec(
        "mlp",
        tuple(ds.input_shape),
        ds.num_classes,
        tuple(ds.mean),
        tuple(ds.std),
        {"hidden": [hidden]},
    )
    settings = TrainSettings(
        epochs=epochs,
        batch_size=64,
        lr=2e-3,
        optimizer="adam",
        schedule="constant",
        weight_decay=0.0,
        val_examples=100,
        select="last",
    )
    return ShadowRecipe(spec, settings, ThreatModel("linf", 0.1))


@pytest.fixture(scope="session")
def recipe(digits: Dataset) -> ShadowRecipe:
    return tiny_recipe(digits)
