"""The command line: each command on tiny inputs, and bad input exits 2 with a clear message."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

import shared_data
from bastion.cli import main

ROOT = Path(__file__).resolve().parents[2]
SHARED_MNIST = shared_data.MNIST

TINY = {
    "name": "tiny",
    "data": {"name": "digits"},
    "threat": {"norm": "linf", "eps": 0.2},
    "model": {"architecture": "mlp"},
    "training": {"epochs": 2, "batch_size": 64, "lr": 0.05, "val_examples": 40, "val_pgd_steps": 2},
    "models": [
        {"name": "baseline", "objective": {"name": "standard"}},
        {"name": "hardened", "objective": {"name": "fast-fgsm"}},
    ],
    "evaluation": {"examples": 40, "attacks": [{"name": "fgsm"}, {"name": "pgd", "steps": 5}]},
}


def _cfg(tmp_path: Path, **changes: object) -> Path:
    doc = json.loads(json.dumps(TINY))
    doc.update(changes)
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == "0.1.0"


def test_run_prints_summary_and_writes_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs"
    assert main(["run", str(_cfg(tmp_path)), "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "baseline" in err and "hardened" in err and "worst case" in err
    (run_dir,) = list(out.iterdir())
    assert (run_dir / "scorecard.json").is_file()


def test_stages_one_at_a_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg(tmp_path)
    stem = tmp_path / "m" / "hardened"
    assert main(["train", str(cfg), "--model", "hardened", "--out", str(stem), "--quiet"]) == 0
    assert stem.with_suffix(".safetensors").is_file() and stem.with_suffix(".json").is_file()

    adv = tmp_path / "adv.safetensors"
    assert (
        main(
            [
                "attack",
                str(stem),
                "--data",
                "digits",
                "--attack",
                "pgd",
                "--eps",
                "0.2",
                "--steps",
                "5",
                "-n",
                "30",
                "--save",
                str(adv),
            ]
        )
        == 0
    )
    from safetensors.torch import load_file

    saved = load_file(str(adv))
    assert saved["x_adv"].shape == (30, 1, 8, 8)
    assert float(saved["x_adv"].min()) >= 0.0 and float(saved["x_adv"].max()) <= 1.0

    sc = tmp_path / "sc" / "scorecard.json"
    assert main(["evaluate", str(cfg), "-m", str(stem), "--out", str(sc), "--quiet"]) == 0
    doc = json.loads(sc.read_text())
    assert set(doc["models"]) == {"hardened"}

    assert main(["report", str(sc)]) == 0
    assert (sc.parent / "report.html").is_file()
    capsys.readouterr()
    assert main(["report", str(sc), "--markdown"]) == 0
    assert "hardened" in capsys.readouterr().out


def test_data_info(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "info", "digits"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == "digits" and len(info["fingerprint"]) == 64


@pytest.mark.parametrize(
    ("changes", "needles"),
    [
        ({"threat": {"norm": "l7", "eps": 0.2}}, ["threat.norm", "linf", "l2"]),
        ({"threat": {"norm": "linf", "eps": -0.3}}, ["threat.eps", "-0.3"]),
        (
            {"models": [{"name": "x", "objective": {"name": "pgd-at", "steps": "many"}}]},
            ["models.0.objective.steps"],
        ),
        ({"unknown_key": 1}, ["unknown_key"]),
    ],
)
def test_bad_config_exits_2_and_names_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict, needles: list[str]
) -> None:
    out = tmp_path / "runs"
    assert main(["run", str(_cfg(tmp_path, **changes)), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error" in err
    for n in needles:
        assert n in err
    assert not out.exists() or os.listdir(out) == []


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "runs")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_missing_data_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg(tmp_path, data={"name": "mnist"})
    missing = tmp_path / "no-such-dir"
    out = tmp_path / "runs"
    assert main(["run", str(cfg), "--data-dir", str(missing), "--out", str(out), "--quiet"]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not out.exists() or os.listdir(out) == []


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="MNIST files not found beside the project")
def test_truncated_idx_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "mnist"
    d.mkdir()
    for f in SHARED_MNIST.glob("*-ubyte.gz"):
        shutil.copy(f, d / f.name)
    labels = d / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(labels.read_bytes())
    labels.write_bytes(gzip.compress(raw[: 8 + 500]))  # header says 10,000 labels, 500 follow
    out = tmp_path / "runs"
    assert (
        main(
            [
                "run",
                str(_cfg(tmp_path, data={"name": "mnist"})),
                "--data-dir",
                str(d),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "t10k-labels-idx1-ubyte" in err
    assert not out.exists() or os.listdir(out) == []


@pytest.mark.parametrize("kind", ["random-bytes", "json-not-a-model", "missing"])
def test_wrong_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    p = tmp_path / "model.safetensors"
    if kind == "random-bytes":
        p.write_bytes(os.urandom(256))
        (tmp_path / "model.json").write_text(json.dumps({"format": "bastion-model/1"}))
    elif kind == "json-not-a-model":
        p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00" + b'{"a": 1}        ')
        (tmp_path / "model.json").write_text('{"hello": "world"}')
    assert main(["attack", str(p), "--data", "digits", "-n", "5"]) == 2
    err = capsys.readouterr().err
    assert "model" in err and "error" in err


def test_unknown_attack_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg(tmp_path)
    stem = tmp_path / "m"
    assert main(["train", str(cfg), "--out", str(stem), "--quiet"]) == 0
    assert main(["attack", str(stem), "--attack", "telepathy", "-n", "5"]) == 2
    assert "telepathy" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["nosuch"], ["run"], ["attack", "m", "--eps", "abc"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err.strip()


def test_certify_writes_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg(tmp_path)
    stem = tmp_path / "m"
    assert main(["train", str(cfg), "--out", str(stem), "--quiet"]) == 0
    out = tmp_path / "cert.json"
    assert (
        main(
            [
                "certify",
                str(stem),
                "--sigma",
                "0.25",
                "--n0",
                "20",
                "--n",
                "200",
                "-n",
                "10",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    doc = json.loads(out.read_text())
    accs = list(doc["certified_accuracy"].values())
    assert all(0.0 <= a <= 1.0 for a in accs) and accs == sorted(accs, reverse=True)
    assert main(["certify", str(stem), "--sigma", "-1", "-n", "5"]) == 2
    assert "sigma" in capsys.readouterr().err
