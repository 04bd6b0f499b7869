"""A real backdoor on the digits: it works, Neural Cleanse finds it, STRIP catches triggered
inputs, and ``bastion scan model`` says so; a model trained on clean digits is not flagged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from bastion.cli import main
from bastion.data import Dataset, load_dataset
from bastion.models import BastionModel, save_model
from bastion.poisoning import (
    StripDetector,
    attack_success_rate,
    badnets,
    neural_cleanse,
    penultimate_features,
)
from bastion.poisoning.neural_cleanse import CleanseSettings, anomaly_indices, save_trigger_png
from bastion.poisoning.training import train_classifier
from bastion.provenance import split_record
from bastion.training.trainer import accuracy

CLEANSE = CleanseSettings(steps=150, batch_size=32)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="module")
def models(digits: Dataset) -> dict[str, object]:
    """A small CNN trained on digits poisoned by BadNets (2x2 patch, 10%, all-to-one to 0)
    and one trained on the clean digits, same seed and settings."""
    p = badnets(digits.train.x, digits.train.y, rate=0.1, num_classes=10, size=2, seed=0)
    out: dict[str, object] = {"poisoned": p}
    for name, (x, y) in {
        "backdoored": (p.x, p.y),
        "clean": (digits.train.x, digits.train.y),
    }.items():
        out[name] = train_classifier(
            x,
            y,
            digits.val.x,
            digits.val.y,
            architecture="small-cnn",
            num_classes=10,
            mean=digits.mean,
            std=digits.std,
            epochs=15,
            batch_size=64,
            lr=0.05,
            seed=0,
        )
    return out


def test_the_backdoor_works_and_the_clean_model_has_none(digits, models):
    p = models["poisoned"]
    test = digits.test
    for name, floor, asr_range in (("backdoored", 0.9, (0.9, 1.0)), ("clean", 0.9, (0.0, 0.1))):
        model = models[name]
        assert accuracy(model, test.x, test.y) >= floor, name
        asr = attack_success_rate(model, test.x, test.y, p.trigger, num_classes=10)
        assert asr_range[0] <= asr <= asr_range[1], (name, asr)


def test_neural_cleanse_flags_the_backdoor_and_its_target(digits, models, tmp_path):
    res = neural_cleanse(models["backdoored"], digits.val.x, num_classes=10, settings=CLEANSE)
    assert res.flagged and res.target == 0 and res.max_anomaly > 2, res.summary()
    # the recovered trigger is small (the real one covers 4 pixels) and works
    assert float(res.norms[0]) < 8 and float(res.success[0]) >= 0.9
    png = save_trigger_png(res.triggers[0], tmp_path / "trigger.png", scale=4)
    with Image.open(png) as im:
        assert im.size == (4 * 17, 4 * 8)  # stamp | separator | mask, each 8 wide


def test_neural_cleanse_does_not_flag_the_clean_model(digits, models):
    res = neural_cleanse(models["clean"], digits.val.x, num_classes=10, settings=CLEANSE)
    assert not res.flagged and res.target is None and res.max_anomaly < 2, res.summary()


def test_anomaly_index_is_the_mad_score():
    norms = torch.tensor([1.0, 10.0, 11.0, 9.0, 10.0])
    # median 10, deviations 9, 0, 1, 1, 0 -> MAD 1
    expected = (10.0 - norms.double()) / 1.4826
    assert torch.allclose(anomaly_indices(norms), expected)


def test_strip_catches_triggered_inputs_of_the_backdoored_model_only(digits, models):
    p = models["poisoned"]
    test = digits.test
    others = test.x[test.y != 0]
    half = len(test) // 2
    rates = {}
    for name in ("backdoored", "clean"):
        strip = StripDetector(models[name], digits.val.x, n=16, seed=0).fit(test.x[:half], fpr=0.05)
        rates[name] = strip.evaluate(test.x[half:], p.trigger.apply(others[half:]))
    b, c = rates["backdoored"], rates["clean"]
    assert b["false_positive_rate"] <= 0.15, b
    assert b["detection_rate"] >= b["false_positive_rate"] + 0.3, b
    assert b["triggered_entropy_mean"] < b["clean_entropy_mean"]
    assert c["detection_rate"] <= 0.3, c  # no backdoor: triggered inputs look clean


def test_penultimate_features_are_the_last_hidden_layer(digits, models):
    f = penultimate_features(models["clean"], digits.test.x[:7])
    assert f.shape == (7, 100) and bool((f >= 0).all())  # after the ReLU of the 100-unit layer


def _save(model: BastionModel, data: Dataset, stem: Path) -> Path:
    meta = {"split": split_record(data, seed=0, val_fraction=0.1, test_fraction=0.2)}
    return save_model(model, stem, meta)


def test_scan_model_command_exits_1_on_a_backdoor_and_0_on_a_clean_model(
    digits, models, tmp_path, capsys
):
    for name, code in (("backdoored", 1), ("clean", 0)):
        path = _save(models[name], digits, tmp_path / name)
        out = tmp_path / f"scan-{name}"
        argv = ["scan", "model", str(path), "--out", str(out), "--steps", "150", "--threads", "1"]
        assert main(argv) == code, capsys.readouterr()
        doc = json.loads((out / "neural-cleanse.json").read_text())
        assert doc["flagged"] is (code == 1)
        assert (out / "trigger.png").is_file()
        if code:
            assert doc["target"] == 0
            assert "BACKDOOR SUSPECTED: target class 0" in capsys.readouterr().out
