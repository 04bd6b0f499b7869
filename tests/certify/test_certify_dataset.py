"""certify_dataset: per-example results and the certified-accuracy summary."""

from __future__ import annotations

import json

import pytest
import torch
from certify_toys import LinearBinary

from bastion.certify import certify_dataset, radius_key, summarize_certification
from bastion.errors import DataError
from bastion.models import ModelSpec, build_model


def test_certify_dataset_summary(linear: LinearBinary) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(12, 20, generator=gen, dtype=torch.float64)
    y = linear.label(x)
    y[0] = 1 - y[0]  # one wrong label
    calls: list[tuple[str, int, int]] = []
    res = certify_dataset(
        linear,
        x,
        y,
        0.25,
        20,
        200,
        0.01,
        torch.Generator().manual_seed(1),
        lambda *a: calls.append(a),
        batch_size=1000,
        radius_grid=(0.0, 0.1, 0.5),
    )
    assert calls[-1] == ("certify", 12, 12) and len(calls) == 3  # 5 images per group
    assert res["n_examples"] == 12 and res["n"] == 200 and res["sigma"] == 0.25
    assert list(res["certified_accuracy"]) == ["0", "0.1", "0.5"]
    for key in ("predictions", "labels", "radii", "correct"):
        assert len(res[key]) == 12
    assert res["correct"][0] is False
    radii = torch.tensor(res["radii"])
    correct = torch.tensor(res["correct"])
    for r, acc in zip((0.0, 0.1, 0.5), res["certified_accuracy"].values(), strict=True):
        assert acc == pytest.approx(float((correct & (radii >= r)).double().mean()))
    abstained = sum(p == -1 for p in res["predictions"]) / 12
    assert res["abstain_rate"] == pytest.approx(abstained)
    assert res["images_per_second"] > 0
    json.dumps(res, allow_nan=False)
    summary = summarize_certification(res)
    assert "radii" not in summary and summary["certified_accuracy"] == res["certified_accuracy"]


def test_certify_dataset_on_images() -> None:
    spec = ModelSpec("lenet", (1, 8, 8), 10, (0.5,), (0.25,))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(spec)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    res = certify_dataset(
        model, x, torch.tensor([0, 1, 2]), 0.5, 10, 50, 0.1, torch.Generator().manual_seed(0)
    )
    assert res["n_examples"] == 3 and len(res["radii"]) == 3
    assert list(res["certified_accuracy"]) == [radius_key(r) for r in (0, 0.25, 0.5, 0.75, 1.0)]


def test_certify_dataset_rejects_mismatched_inputs(linear: LinearBinary) -> None:
    with pytest.raises(DataError, match="differ in length"):
        certify_dataset(linear, torch.zeros(3, 20), torch.zeros(2), 0.5, 10, 10, 0.1)
    with pytest.raises(DataError, match="no examples"):
        certify_dataset(linear, torch.zeros(0, 20), torch.zeros(0), 0.5, 10, 10, 0.1)
