from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bastion.attacks.targets import LabelTarget, OnnxTarget, ScoreTarget
from bastion.data import Dataset
from bastion.errors import ConfigError
from bastion.models.zoo import BastionModel, ModelSpec
from bastion.privacy.extraction import (
    StudentSettings,
    agreement,
    jacobian_augmentation,
    knockoff_nets,
    student_spec,
    transferability,
)
from bastion.privacy.membership import build_seeded
from bastion.threat import ThreatModel
from bastion.training.trainer import Trainer, TrainSettings

FAST = StudentSettings(epochs=10, min_steps=120, lr=3e-3)


@pytest.fixture(scope="module")
def victim(digits: Dataset) -> BastionModel:
    spec = ModelSpec("mlp", (1, 8, 8), 10, tuple(digits.mean), tuple(digits.std), {"hidden": [64]})
    model = build_seeded(spec, 0)
    settings = TrainSettings(
        epochs=8,
        batch_size=64,
        lr=3e-3,
        optimizer="adam",
        schedule="constant",
        weight_decay=0.0,
        val_examples=100,
    )
    Trainer(settings, ThreatModel("linf", 0.1), seed=0).fit(
        model, digits.train.x, digits.train.y, digits.val.x, digits.val.y
    )
    return model


def _mlp_spec(digits: Dataset) -> ModelSpec:
    # the attacker's pool is the test split: disjoint from the victim's training split
    return student_spec("mlp", digits.test.x, 10, {"hidden": [64]})


def test_knockoff_steals_a_model_and_counts_its_queries(
    victim: BastionModel, digits: Dataset
) -> None:
    target = ScoreTarget(
        lambda a: torch.softmax(victim(torch.from_numpy(a)), 1).numpy(), 10, name="victim"
    )
    events: list[dict[str, Any]] = []
    res = knockoff_nets(
        target,
        digits.test.x,
        digits.val.x,
        digits.val.y,
        _mlp_spec(digits),
        budgets=[300, 30],
        settings=FAST,
        seed=0,
        progress=events.append,
    )
    doc = res.to_dict()
    assert [p["queries"] for p in doc["curve"]] == [30.0, 300.0]
    assert len(events) == 2
    # the victim saw the 300 pool queries and the held-out set (read for fidelity) only
    assert target.queries == 300 + digits.val.x.shape[0]
    assert doc["queries"] == 300 and doc["unanswered"] == 0
    assert doc["fidelity_at_budget"] > 0.85
    assert doc["fidelity_at_budget"] > doc["curve"][0]["fidelity"]
    assert doc["fidelity_at_budget"] == pytest.approx(agreement(res.student, victim, digits.val.x))
    assert doc["victim_accuracy"] > 0.9
    again = knockoff_nets(
        target,
        digits.test.x,
        digits.val.x,
        digits.val.y,
        _mlp_spec(digits),
        budgets=[30, 300],
        settings=FAST,
        seed=0,
    )
    assert [p["fidelity"] for p in again.curve] == [p["fidelity"] for p in doc["curve"]]


def test_label_only_knockoff_on_a_label_target(victim: BastionModel, digits: Dataset) -> None:
    labels = LabelTarget(lambda a: victim(torch.from_numpy(a)).argmax(1).numpy(), 10)
    res = knockoff_nets(
        labels,
        digits.test.x,
        digits.val.x,
        digits.val.y,
        _mlp_spec(digits),
        budgets=[200],
        labels_only=True,
        settings=FAST,
        seed=3,
    )
    same = knockoff_nets(
        victim,
        digits.test.x,
        digits.val.x,
        digits.val.y,
        _mlp_spec(digits),
        budgets=[200],
        labels_only=True,
        settings=FAST,
        seed=3,
    )
    assert res.method == "knockoff-labels"
    assert res.curve[0]["fidelity"] > 0.75
    # label-only extraction sees exactly the top labels, whatever the target returns
    assert res.curve[0]["fidelity"] == same.curve[0]["fidelity"]


def _onnx_mlp(model: BastionModel, path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    lin1, lin2 = model.body[1], model.body[3]
    arrays = {
        "mean": model.normalize.mean.numpy(),
        "std": model.normalize.std.numpy(),
        "w1": lin1.weight.detach().numpy(),
        "b1": lin1.bias.detach().numpy(),
        "w2": lin2.weight.detach().numpy(),
        "b2": lin2.bias.detach().numpy(),
    }
    inits = [numpy_helper.from_array(np.ascontiguousarray(v), k) for k, v in arrays.items()]
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["c"]),
        helper.make_node("Div", ["c", "std"], ["n"]),
        helper.make_node("Flatten", ["n"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "victim",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])],
        inits,
    )
    doc = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    doc.ir_version = 8
    onnx.save(doc, str(path))


def test_jacobian_augmentation_on_an_onnx_file(
    victim: BastionModel, digits: Dataset, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    _onnx_mlp(victim, tmp_path / "victim.onnx")
    target = OnnxTarget(str(tmp_path / "victim.onnx"), 10)
    assert agreement(target, victim, digits.val.x) == 1.0
    target.reset_queries()
    seed_set = digits.test.x[:20]
    res = jacobian_augmentation(
        target,
        seed_set,
        digits.val.x,
        digits.val.y,
        _mlp_spec(digits),
        rounds=4,
        step=0.1,
        max_queries=120,
        settings=FAST,
        seed=0,
    )
    assert [p["queries"] for p in res.curve] == [20.0, 40.0, 80.0, 120.0]
    assert res.queries == 120
    assert target.queries == 120 + digits.val.x.shape[0]
    # the substitute learns from 20 labelled seeds and their augmentations; chance is 10%
    assert res.curve[-1]["fidelity"] > 0.4
    with pytest.raises(ConfigError, match=r"jacobian\.rounds"):
        jacobian_augmentation(
            target, seed_set, digits.val.x, digits.val.y, _mlp_spec(digits), rounds=0
        )
    with pytest.raises(ConfigError, match=r"jacobian\.max_queries"):
        jacobian_augmentation(
            target, seed_set, digits.val.x, digits.val.y, _mlp_spec(digits), max_queries=5
        )


def test_transfer_from_the_stolen_copy_beats_noise(victim: BastionModel, digits: Dataset) -> None:
    res = knockoff_nets(
        victim,
        digits.test.x,
        digits.val.x,
        digits.val.y,
        _mlp_spec(digits),
        budgets=[359],
        settings=FAST,
        seed=0,
    )
    t = transferability(
        res.student, victim, digits.val.x, digits.val.y, ThreatModel("linf", 0.2), steps=10
    )
    assert t["student_success_rate"] > 0.9
    assert t["transfer_success_rate"] > t["noise_success_rate"] + 0.2
    assert t["victim_accuracy_transfer"] < t["victim_clean_accuracy"] - 0.2
    l2 = transferability(
        res.student, victim, digits.val.x[:50], digits.val.y[:50], ThreatModel("l2", 1.0), steps=5
    )
    assert 0.0 <= l2["noise_success_rate"] <= l2["transfer_success_rate"] <= 1.0


def test_bad_budgets_and_settings(victim: BastionModel, digits: Dataset) -> None:
    with pytest.raises(ConfigError, match=r"knockoff\.budgets: the largest budget 1000"):
        knockoff_nets(
            victim, digits.test.x, digits.val.x, digits.val.y, _mlp_spec(digits), budgets=[1000]
        )
    with pytest.raises(ConfigError, match=r"knockoff\.budgets: expected positive"):
        knockoff_nets(
            victim, digits.test.x, digits.val.x, digits.val.y, _mlp_spec(digits), budgets=[0]
        )
    with pytest.raises(ConfigError, match=r"extraction\.student\.epochs"):
        StudentSettings(epochs=0)
