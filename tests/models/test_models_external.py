"""Models from outside the zoo (examples/byo-model): a module trained by plain PyTorch, loaded
through a reference file as factory + weights, TorchScript, torch.export and ONNX, then
attacked, evaluated and certified through the command line; bad reference files fail in one
line naming the field."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from bastion.cli import main
from bastion.errors import ModelFileError
from bastion.models import load_model, read_sidecar

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "byo-model"


@pytest.fixture(scope="module")
def byo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example trained for a few epochs in a temporary copy of its folder."""
    d = tmp_path_factory.mktemp("byo")
    for f in EXAMPLE.iterdir():
        if f.suffix in (".py", ".yaml"):
            shutil.copy(f, d / f.name)
    done = subprocess.run(
        [sys.executable, str(d / "train.py"), "--out", str(d), "--epochs", "4"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    return d


def test_every_form_loads_the_same_model(byo: Path) -> None:
    x = torch.rand(5, 1, 8, 8)
    nets = {f: load_model(byo / f) for f in ["model.yaml", "model-torchscript.yaml"]}
    nets["model-export.yaml"] = load_model(byo / "model-export.yaml")
    with torch.no_grad():
        outs = {f: n(x) for f, n in nets.items()}
    reference = outs["model.yaml"]
    for f, out in outs.items():
        assert out.shape == (5, 10)
        assert torch.allclose(out, reference, atol=1e-5), f
    spec = nets["model.yaml"].spec
    assert spec.architecture == "external" and spec.options["gradients"] is True
    meta = read_sidecar(byo / "model.yaml")["metadata"]
    assert meta["threat"]["eps"] == 0.1 and meta["declared_split"]["name"] == "digits"


def test_attack_evaluate_and_certify_take_a_reference(
    byo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = str(byo / "model.yaml")
    assert main(["attack", ref, "--attack", "apgd", "-p", "steps=10", "-n", "50"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "eps 0.1 " in out and "on 50 test examples of digits" in out

    sc = tmp_path / "sc.json"
    argv = ["evaluate", str(byo / "evaluate.yaml"), "-m", ref, "--out", str(sc), "-q"]
    assert main([*argv, "--subset", "40"]) == 0
    err = capsys.readouterr().err
    assert "records no data split" not in err  # the declared split matches
    assert "not recorded in the registry" not in err  # the reference file's digest is
    doc = json.loads(sc.read_text())
    (entry,) = doc["models"].values()
    assert entry["objective"] == "external"
    assert {"fgsm", "apgd", "square"} <= set(entry["attacks"])

    other = yaml.safe_load((byo / "evaluate.yaml").read_text())
    other["seed"] = 3
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    bad = ["evaluate", str(tmp_path / "other.yaml"), "-m", ref, "--out", str(sc), "-q"]
    assert main(bad) == 2
    assert "declares data seed 0, the config has 3" in capsys.readouterr().err

    assert main(["certify", ref, "-n", "5", "--n", "100", "--n0", "20"]) == 0
    assert "certified accuracy" in capsys.readouterr().out


def test_onnx_is_black_box_only(byo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = byo / "model-onnx.yaml"
    if not (byo / "model.onnx").exists():
        pytest.skip("the ONNX exporter is not available in this torch build")
    net = load_model(ref)
    assert net.spec.options["gradients"] is False
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(net(x), load_model(byo / "model.yaml")(x), atol=1e-4)
    assert main(["attack", str(ref), "--attack", "square", "-p", "queries=50", "-n", "20"]) == 0
    capsys.readouterr()
    assert main(["attack", str(ref), "--attack", "apgd", "-n", "5"]) == 2
    err = capsys.readouterr().err
    assert "no gradients" in err and len(err.strip().splitlines()) == 2  # threads line + error
    # evaluate: white-box attacks and gradient checks refused up front, black-box ones run
    assert main(["evaluate", str(byo / "evaluate.yaml"), "-m", str(ref), "--subset", "5"]) == 2
    assert "['fgsm', 'apgd'] cannot run" in capsys.readouterr().err
    sc = byo / "onnx.json"
    argv = ["evaluate", str(byo / "evaluate-onnx.yaml"), "-m", str(ref), "--out", str(sc)]
    assert main([*argv, "--subset", "20", "-q"]) == 0
    (entry,) = json.loads(sc.read_text())["models"].values()
    assert entry["architecture"] == "external: onnx model.onnx"
    assert set(entry["attacks"]) == {"square", "hopskipjump"}


def _ref(byo: Path, tmp_path: Path, name: str, **changes: object) -> Path:
    doc = yaml.safe_load((byo / "model.yaml").read_text())
    for k, v in changes.items():
        if v is None:
            doc.pop(k, None)
        else:
            doc[k] = v
    for f in ("mynet.py", "model.safetensors", "model.ts"):
        if not (tmp_path / f).exists():
            shutil.copy(byo / f, tmp_path / f)
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc))
    return p


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"factory": "nosuchmodule:build"}, "factory: cannot import 'nosuchmodule'"),
        ({"factory": "mynet:nothing"}, "no callable 'nothing'"),
        ({"kwargs": {"width": 8}}, "weights do not fit the module"),
        ({"input_shape": [1, 28, 28]}, "input_shape"),
        ({"weights": "model.pkl"}, "pickle"),
        ({"torchscript": "model.ts"}, "exactly one of"),
        ({"colour": "red"}, "unknown field"),
        ({"classes": None}, "num_classes"),
        ({"normalize": {"mean": [0.1, 0.2], "std": [1.0, 1.0]}}, "normalize"),
    ],
)
def test_bad_reference_files_fail_in_one_line(
    byo: Path, tmp_path: Path, changes: dict[str, object], needle: str
) -> None:
    ref = _ref(byo, tmp_path, "bad.yaml", **changes)
    with pytest.raises(ModelFileError, match=r"bad\.yaml") as info:
        load_model(ref)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_weights_mismatch_names_the_first_key(byo: Path, tmp_path: Path) -> None:
    ref = _ref(byo, tmp_path, "narrow.yaml", kwargs={"width": 8})
    with pytest.raises(ModelFileError, match=r"'features\.0\.weight' has shape"):
        load_model(ref)


def test_a_state_dict_file_loads_with_weights_only(byo: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    torch.save(load_file(str(byo / "model.safetensors")), tmp_path / "state.pt")
    ref = _ref(byo, tmp_path, "pt.yaml", weights="state.pt")
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(load_model(ref)(x), load_model(byo / "model.yaml")(x))


def test_a_reference_is_served_over_http(byo: Path, tmp_path: Path) -> None:
    import asyncio

    import httpx

    from bastion.serve import ServeSettings, create_key
    from bastion.serve.runner import build_app_for_run

    svc = tmp_path / "svc"
    (svc / "models").mkdir(parents=True)
    for f in ("mynet.py", "model.safetensors", "model.yaml"):
        shutil.copy(byo / f, svc / "models" / f)
    key = create_key(svc / "keys.db", "team")
    app: object = build_app_for_run(svc, settings=ServeSettings())
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        expected = load_model(byo / "model.yaml")(x).argmax(1).tolist()

    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post(
                "/v1/predict", json={"inputs": x.tolist()}, headers={"X-API-Key": key}
            )

    try:
        response = asyncio.run(ask())
    finally:
        app.state.service.batcher.close()  # type: ignore[attr-defined]
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "model"
    assert [p["label"] for p in body["predictions"]] == expected
    assert [p["class_name"] for p in body["predictions"]] == [str(i) for i in expected]
