from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import pytest
import torch

from bastion.data import Dataset
from bastion.errors import ConfigError
from bastion.models.zoo import BastionModel, ModelSpec
from bastion.privacy.inversion import (
    InversionSettings,
    class_means,
    inversion_similarity,
    invert_classes,
    save_grid,
    total_variation,
)
from bastion.privacy.membership import build_seeded
from bastion.threat import ThreatModel
from bastion.training.trainer import Trainer, TrainSettings


def _spec(ds: Dataset) -> ModelSpec:
    return ModelSpec("mlp", (1, 8, 8), 10, tuple(ds.mean), tuple(ds.std), {"hidden": [64]})


@pytest.fixture(scope="module")
def trained(digits: Dataset) -> BastionModel:
    model = build_seeded(_spec(digits), 0)
    settings = TrainSettings(
        epochs=6,
        batch_size=64,
        lr=3e-3,
        optimizer="adam",
        schedule="constant",
        weight_decay=0.0,
        val_examples=50,
    )
    Trainer(settings, ThreatModel("linf", 0.1), seed=0).fit(
        model, digits.train.x, digits.train.y, digits.val.x, digits.val.y
    )
    return model


def test_inversion_recovers_every_digit_class_and_an_untrained_model_none(
    trained: BastionModel, digits: Dataset, tmp_path: Path
) -> None:
    classes = torch.arange(10)
    start = digits.train.x.mean(0)
    means = class_means(digits.train.x, digits.train.y, 10)
    x, info = invert_classes(trained, classes, start, settings=InversionSettings(steps=150))
    assert x.shape == (10, 1, 8, 8) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert min(info["confidence"]) > 0.9
    sim = inversion_similarity(x, classes, means)
    assert sim["identified"] >= 0.8
    assert sim["cosine_own"] > sim["cosine_other_max"] + 0.3
    assert set(sim["per_class"]) == {str(c) for c in range(10)}
    blank = inversion_similarity(start.expand(10, 1, 8, 8), classes, means)
    assert abs(blank["cosine_own"]) < 0.1  # the starting point alone gives nothing away
    untrained = build_seeded(_spec(digits), 9)
    x0, _ = invert_classes(untrained, classes, start, settings=InversionSettings(steps=150))
    assert inversion_similarity(x0, classes, means)["identified"] <= 0.3
    # deterministic, and the model's parameters are left as they were
    again, _ = invert_classes(trained, classes, start, settings=InversionSettings(steps=150))
    assert torch.equal(x, again)
    assert all(p.requires_grad for p in trained.parameters())
    path = save_grid(tmp_path / "grid" / "inversion.png", [x, means])
    img = mpimg.imread(str(path))
    assert img.shape[0] == 2 * 64 + 8 and img.shape[1] == 10 * 64 + 9 * 8


def test_priors_and_settings() -> None:
    flat = torch.full((2, 1, 4, 4), 0.5)
    noisy = flat.clone()
    noisy[:, :, ::2, ::2] = 1.0
    assert total_variation(flat).tolist() == [0.0, 0.0]
    assert bool((total_variation(noisy) > 0).all())
    with pytest.raises(ConfigError, match=r"inversion\.steps"):
        InversionSettings(steps=0)
    with pytest.raises(ConfigError, match=r"inversion\.cost"):
        InversionSettings(cost="hinge")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="inversion grid"):
        save_grid("unused.png", [torch.zeros(2, 2, 4, 4)])


def test_fredrikson_cost_and_early_stop(trained: BastionModel, digits: Dataset) -> None:
    classes = torch.tensor([3, 7])
    settings = InversionSettings(steps=200, cost="fredrikson", stop_cost=0.2, step_size=0.1)
    _x, info = invert_classes(trained, classes, digits.train.x.mean(0), settings=settings)
    assert all(c > 0.7 for c in info["confidence"])
    assert max(info["steps"]) < 200  # stopped once 1 - p fell below gamma
