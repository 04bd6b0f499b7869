"""Tests for bastion.models.io: safetensors weights + JSON sidecar, and rejection of bad files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from bastion.errors import BastionError, ModelFileError
from bastion.models import (
    BastionModel,
    ModelSpec,
    build_model,
    load_model,
    read_sidecar,
    save_model,
)
from bastion.models.io import FORMAT


def _model(
    arch: str = "mlp", shape: tuple[int, ...] = (1, 6, 6), seed: int = 0, **options: Any
) -> BastionModel:
    torch.manual_seed(seed)
    spec = ModelSpec(arch, shape, 3, (0.25,) * shape[0], (0.5,) * shape[0], dict(options))
    return build_model(spec)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[BastionModel, Path]:
    model = _model(hidden=[12])
    weights = save_model(model, tmp_path / "run" / "net", {"name": "net", "eps": 0.3})
    return model, weights


@pytest.mark.parametrize(
    ("arch", "shape", "options"),
    [
        ("mlp", (1, 6, 6), {"hidden": [12]}),
        ("small-cnn", (1, 8, 8), {}),
        ("lenet", (1, 8, 8), {}),
        ("tabular-mlp", (5,), {"hidden": [4, 4]}),
    ],
)
def test_round_trip_gives_identical_outputs(
    tmp_path: Path, arch: str, shape: tuple[int, ...], options: dict[str, Any]
) -> None:
    model = _model(arch, shape, **options).eval()
    weights = save_model(model, tmp_path / "m")
    assert weights == tmp_path / "m.safetensors"
    torch.manual_seed(123)  # a fresh build would differ: the weights must come from the file
    loaded = load_model(weights)
    x = torch.rand(4, *shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded.spec == model.spec
    for (k1, v1), (k2, v2) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert k1 == k2 and torch.equal(v1, v2)


def test_round_trip_preserves_batchnorm_statistics(tmp_path: Path) -> None:
    model = _model("preact-resnet18", (3, 4, 4))
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 3, 4, 4))  # move the running statistics off their defaults
    model.eval()
    save_model(model, tmp_path / "resnet")
    loaded = load_model(tmp_path / "resnet")
    x = torch.rand(2, 3, 4, 4)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_loaded_model_is_in_eval_mode(saved: tuple[BastionModel, Path]) -> None:
    model, weights = saved
    assert model.training  # saved while in training mode
    loaded = load_model(weights)
    assert not loaded.training
    assert not any(m.training for m in loaded.modules())


@pytest.mark.parametrize("name", ["run/net", "run/net.safetensors", "run/net.json"])
def test_load_accepts_stem_weights_or_sidecar(
    saved: tuple[BastionModel, Path], tmp_path: Path, name: str
) -> None:
    model, _ = saved
    loaded = load_model(tmp_path / name)
    loaded_str = load_model(str(tmp_path / name))
    x = torch.rand(2, 1, 6, 6)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x)) and torch.equal(loaded_str(x), model(x))


def test_sidecar_has_documented_fields(saved: tuple[BastionModel, Path], tmp_path: Path) -> None:
    _, weights = saved
    sidecar = tmp_path / "run" / "net.json"
    assert sidecar.is_file() and weights.is_file()
    doc = json.loads(sidecar.read_text())
    assert doc["format"] == FORMAT == "bastion-model/1"
    assert doc["spec"] == {
        "architecture": "mlp",
        "input_shape": [1, 6, 6],
        "num_classes": 3,
        "mean": [0.25],
        "std": [0.5],
        "options": {"hidden": [12]},
    }
    assert doc["metadata"] == {"name": "net", "eps": 0.3}
    assert read_sidecar(weights) == doc
    assert read_sidecar(tmp_path / "run" / "net") == doc


def test_metadata_defaults_to_empty(tmp_path: Path) -> None:
    save_model(_model(), tmp_path / "m")
    assert read_sidecar(tmp_path / "m")["metadata"] == {}


def test_no_temporary_files_left(saved: tuple[BastionModel, Path], tmp_path: Path) -> None:
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["net.json", "net.safetensors"]


def test_save_overwrites_previous_model(tmp_path: Path) -> None:
    save_model(_model(seed=0), tmp_path / "m")
    second = _model(seed=1)
    save_model(second, tmp_path / "m")
    x = torch.rand(2, 1, 6, 6)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "m")(x), second.eval()(x))


def test_dotted_stems_do_not_collide(tmp_path: Path) -> None:
    # "model-eps0.1" and "model-eps0.3" are different models; their files must not be shared.
    a, b = _model(seed=0).eval(), _model(seed=1).eval()
    wa = save_model(a, tmp_path / "model-eps0.1")
    wb = save_model(b, tmp_path / "model-eps0.3")
    assert wa.name == "model-eps0.1.safetensors" and wb.name == "model-eps0.3.safetensors"
    assert (tmp_path / "model-eps0.1.json").is_file() and (tmp_path / "model-eps0.3.json").is_file()
    x = torch.rand(2, 1, 6, 6)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "model-eps0.1")(x), a(x))
        assert torch.equal(load_model(wb)(x), b(x))


# -- wrong kinds of file ------------------------------------------------------------------------


def _raises_naming(path: Path, pattern: str = "") -> pytest.RaisesExc[ModelFileError]:
    # ``match`` is a regex search: the message must contain the offending file's path.
    import re

    return pytest.raises(ModelFileError, match=re.escape(str(path)) + ".*" + pattern)


def test_missing_files(tmp_path: Path) -> None:
    with _raises_naming(tmp_path / "nope.json", "sidecar not found"):
        load_model(tmp_path / "nope")
    with _raises_naming(tmp_path / "nope.json", "sidecar not found"):
        read_sidecar(tmp_path / "nope.safetensors")


def test_missing_weights_with_sidecar(saved: tuple[BastionModel, Path]) -> None:
    _, weights = saved
    weights.unlink()
    with _raises_naming(weights, "weights not found"):
        load_model(weights)


def test_random_bytes_as_weights(saved: tuple[BastionModel, Path]) -> None:
    _, weights = saved
    weights.write_bytes(bytes(range(256)) * 8)
    with _raises_naming(weights, "not a safetensors file"):
        load_model(weights)


def test_empty_weights_file(saved: tuple[BastionModel, Path]) -> None:
    _, weights = saved
    weights.write_bytes(b"")
    with _raises_naming(weights, "not a safetensors file"):
        load_model(weights)


def test_random_bytes_as_sidecar(saved: tuple[BastionModel, Path], tmp_path: Path) -> None:
    sidecar = tmp_path / "run" / "net.json"
    sidecar.write_bytes(b"\xff\xfe\x00garbage\x80")
    with _raises_naming(sidecar, "not a bastion model sidecar"):
        load_model(tmp_path / "run" / "net")


@pytest.mark.parametrize(
    "doc",
    [
        {"hello": "world"},
        [1, 2, 3],
        "bastion-model/1",
        {"format": "bastion-model/2", "spec": {}},
        {"format": FORMAT},
    ],
    ids=["other-json", "list", "string", "wrong-format-tag", "no-spec"],
)
def test_json_that_is_not_a_sidecar(tmp_path: Path, doc: Any) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    with _raises_naming(path, r"not a bastion model sidecar \(expected format 'bastion-model/1'\)"):
        load_model(path)


def test_sidecar_with_wrong_format_tag(saved: tuple[BastionModel, Path], tmp_path: Path) -> None:
    sidecar = tmp_path / "run" / "net.json"
    doc = json.loads(sidecar.read_text())
    doc["format"] = "something-else/1"
    sidecar.write_text(json.dumps(doc))
    with _raises_naming(sidecar, "expected format"):
        load_model(sidecar)


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"architecture": None, "drop": "num_classes"}, "incomplete"),
        ({"input_shape": ["a"]}, "incomplete"),
        ({"architecture": "vit-huge"}, "cannot be built"),
        ({"mean": [0.1, 0.2]}, "cannot be built"),
    ],
    ids=["missing-field", "bad-shape", "unknown-architecture", "mean-std-mismatch"],
)
def test_sidecar_with_bad_spec(
    saved: tuple[BastionModel, Path], tmp_path: Path, change: dict[str, Any], pattern: str
) -> None:
    sidecar = tmp_path / "run" / "net.json"
    doc = json.loads(sidecar.read_text())
    change = dict(change)
    if "drop" in change:
        del doc["spec"][change.pop("drop")]
        change.pop("architecture")
    doc["spec"].update(change)
    sidecar.write_text(json.dumps(doc))
    with _raises_naming(tmp_path / "run" / "net", pattern):
        load_model(tmp_path / "run" / "net")


def test_safetensors_with_mismatched_shapes(tmp_path: Path) -> None:
    save_model(_model(hidden=[12]), tmp_path / "small")
    save_model(_model(hidden=[20]), tmp_path / "big")
    # weights of one architecture beside the sidecar of another
    (tmp_path / "small.safetensors").replace(tmp_path / "big.safetensors")
    with _raises_naming(tmp_path / "big.safetensors", "do not match the architecture"):
        load_model(tmp_path / "big")


def test_safetensors_with_missing_and_extra_tensors(saved: tuple[BastionModel, Path]) -> None:
    model, weights = saved
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state.pop("body.1.weight")
    state["unexpected"] = torch.zeros(2)
    save_file(state, str(weights))
    with _raises_naming(weights, "do not match the architecture"):
        load_model(weights)


def test_safetensors_of_another_program(saved: tuple[BastionModel, Path]) -> None:
    _, weights = saved
    save_file({"x_adv": torch.rand(3, 4), "y": torch.zeros(3, dtype=torch.int64)}, str(weights))
    with _raises_naming(weights, "do not match the architecture"):
        load_model(weights)


def test_model_file_error_is_a_bastion_value_error() -> None:
    assert issubclass(ModelFileError, BastionError) and issubclass(ModelFileError, ValueError)


def test_estimators_are_saved_with_skops_and_pickles_refused(tmp_path: Path) -> None:
    import pickle

    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from bastion.errors import ModelFileError
    from bastion.models.estimators import load_estimator, save_estimator

    x = np.random.default_rng(0).random((40, 3))
    est = LogisticRegression().fit(x, (x[:, 0] > 0.5).astype(int))
    path = save_estimator(est, tmp_path / "model")
    assert path.suffix == ".skops"
    assert (load_estimator(path).predict(x) == est.predict(x)).all()
    pkl = tmp_path / "model.pkl"
    pkl.write_bytes(pickle.dumps(est))
    with pytest.raises(ModelFileError, match="pickle"):
        load_estimator(pkl)
    with pytest.raises(ModelFileError, match="pickle"):
        save_estimator(est, pkl)
    (tmp_path / "junk.skops").write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="not a skops file"):
        load_estimator(tmp_path / "junk.skops")
