"""``--device`` on run, train, evaluate and serve, and the config's ``device``: the device is
recorded in the scorecard's ``runtime`` section, an absent or misspelt device stops the command
in one line with exit 2 before anything is written, and a model placed on a device takes and
returns CPU tensors with gradients. CUDA tests run where a GPU exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from bastion.cli import main
from bastion.config import load_config
from bastion.errors import BastionError, ConfigError
from bastion.evaluation.scorecard import read_scorecard
from bastion.models import build_model, load_model
from bastion.models.zoo import ModelSpec
from bastion.runtime import check_device_name, place_on_device

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")

CFG = {
    "name": "dev",
    "seed": 0,
    "data": {"name": "digits"},
    "threat": {"norm": "linf", "eps": 0.1},
    "model": {"architecture": "mlp", "options": {"hidden": [16]}},
    "training": {"epochs": 1, "batch_size": 128, "val_examples": 50, "val_pgd_steps": 1},
    "models": [{"name": "m", "objective": {"name": "standard"}}],
    "evaluation": {"examples": 40, "attacks": [{"name": "fgsm"}], "sanity_checks": "off"},
}


def _config(tmp_path: Path, **changes: object) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump({**CFG, **changes}))
    return p


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1
    return lines[0]


@pytest.mark.parametrize("name", ["auto", "cpu", "CUDA", "cuda:1", "mps"])
def test_device_names_are_checked_for_form(name: str) -> None:
    assert check_device_name(name) == name.lower()


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "tpu:0", ""])
def test_bad_device_names(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="device: expected auto, cpu, cuda, cuda:N or mps"):
        check_device_name(name)
    with pytest.raises(BastionError, match="device: expected auto, cpu"):
        load_config(_config(tmp_path, device=name))


def test_run_records_the_device_and_train_and_evaluate_take_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, device="cpu")
    out = tmp_path / "runs"
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    (run_dir,) = out.iterdir()
    sc = read_scorecard(run_dir / "scorecard.json")
    assert sc["runtime"]["device"] == "cpu"
    assert "device" not in sc["runtime"]["thread_choice"]
    stem = tmp_path / "m"
    assert main(["train", str(cfg), "--out", str(stem), "-q", "--device", "cpu"]) == 0
    scorecard = tmp_path / "sc.json"
    args = ["evaluate", str(cfg), "-m", str(stem), "--out", str(scorecard), "-q"]
    assert main([*args, "--device", "cpu"]) == 0
    assert json.loads(scorecard.read_text())["runtime"]["device"] == "cpu"
    # the same seed and data on the same device: the trained model is the run's
    trained = load_model(stem).state_dict()
    ran = load_model(run_dir / "models" / "m").state_dict()
    assert all(torch.equal(trained[k], ran[k]) for k in ran)


@NO_CUDA
@pytest.mark.parametrize("command", ["run", "train", "evaluate", "serve", "attack", "certify"])
def test_an_absent_cuda_device_is_one_line_and_exit_2(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path)
    out = tmp_path / "out"
    stem = tmp_path / "none"
    args = {
        "run": ["run", str(cfg), "--out", str(out)],
        "train": ["train", str(cfg), "--out", str(out / "m")],
        "evaluate": ["evaluate", str(cfg), "-m", str(stem), "--out", str(out / "sc.json")],
        "serve": ["serve", str(tmp_path)],
        "attack": ["attack", str(stem)],
        "certify": ["certify", str(stem)],
    }[command]
    if command in ("run", "train", "evaluate"):
        args.append("--quiet")
    assert main([*args, "--device", "cuda:0"]) == 2
    line = _error_line(capsys)
    assert "--device: 'cuda:0', but no CUDA device is available here" in line, line
    assert not out.exists()  # nothing written


@NO_CUDA
def test_the_config_device_is_checked_and_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, device="cuda")
    out = tmp_path / "runs"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2
    assert "error: device: 'cuda', but no CUDA device" in _error_line(capsys)
    assert not out.exists() or not list(out.iterdir())
    # --device wins over the config's device
    assert main(["train", str(cfg), "--out", str(tmp_path / "m"), "-q", "--device", "cpu"]) == 0


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec("mlp", (1, 8, 8), 10, (0.0,), (1.0,), {"hidden": [16]}))


def test_placing_on_the_cpu_changes_nothing() -> None:
    net = _tiny()
    assert place_on_device(net, torch.device("cpu")) is net
    assert not net._forward_pre_hooks and not net._forward_hooks


@CUDA
def test_a_placed_model_takes_and_returns_cpu_tensors_with_gradients() -> None:
    cpu, gpu = _tiny(), _tiny()
    place_on_device(gpu, torch.device("cuda"))
    place_on_device(gpu, torch.device("cuda"))  # twice: the hooks are registered once
    assert len(gpu._forward_pre_hooks) == 1
    assert next(gpu.parameters()).device.type == "cuda"
    x = torch.rand(5, 1, 8, 8, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    out = gpu(x)
    assert out.device.type == "cpu"
    torch.testing.assert_close(out, cpu(x2), atol=1e-5, rtol=1e-4)
    out.sum().backward()
    cpu(x2).sum().backward()
    assert x.grad is not None and x2.grad is not None
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-5, rtol=1e-4)
    assert set(gpu.state_dict()) == set(cpu.state_dict())


@CUDA
def test_run_on_cuda_matches_the_cpu_run(tmp_path: Path) -> None:
    scores = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        assert (
            main(["run", str(_config(tmp_path)), "--out", str(out), "-q", "--device", device]) == 0
        )
        (run_dir,) = out.iterdir()
        scores[device] = read_scorecard(run_dir / "scorecard.json")
    assert scores["cuda"]["runtime"]["device"] == "cuda"
    a, b = scores["cpu"]["models"]["m"], scores["cuda"]["models"]["m"]
    assert abs(a["test_clean_accuracy"] - b["test_clean_accuracy"]) <= 0.02
