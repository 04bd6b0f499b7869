"""End to end: `run_pipeline` writes a complete run directory, or none at all."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from bastion import load_model
from bastion.errors import BastionError, ConfigError, DataError
from bastion.evaluation.scorecard import read_scorecard
from bastion.pipeline import run_pipeline


def _entries(p: Path) -> list[str]:
    return sorted(os.listdir(p)) if p.exists() else []


def test_run_writes_complete_directory(tiny_config_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    run_dir = run_pipeline(tiny_config_file, out_dir=out, show_progress=False)
    assert run_dir.parent == out and run_dir.name.startswith("tiny-")
    assert _entries(out) == [run_dir.name], "only the finished run directory, no temporary left"
    names = set(os.listdir(run_dir))
    assert {"config.yaml", "scorecard.json", "report.html", "models"} <= names
    assert set(os.listdir(run_dir / "models")) == {
        "baseline.safetensors",
        "baseline.json",
        "hardened.safetensors",
        "hardened.json",
    }
    sc = read_scorecard(run_dir / "scorecard.json")
    for name in ("baseline", "hardened"):
        r = sc["models"][name]
        assert 0.0 <= r["worst_case_accuracy"] <= r["clean_accuracy"] <= 1.0
        for label in ("fgsm", "pgd-10"):
            assert set(r["attacks"][label]) == {"0", "0.1", "0.2"}
            assert r["worst_case_accuracy"] <= r["attacks"][label]["0.2"] + 1e-12
        assert r["training"]["seconds"] > 0
        assert r["n_test"] == 359 and 0.0 <= r["test_clean_accuracy"] <= 1.0
    assert len(sc["data"]["fingerprint"]) == 64
    assert sc["run"]["seed"] == 0 and len(sc["run"]["config_hash"]) == 64
    assert "torch" in sc["versions"]
    assert sc["timings"]["total_seconds"] > 0
    html = (run_dir / "report.html").read_text()
    assert "<html" in html.lower() and "data:image/png;base64," in html


def test_saved_models_reload_and_match_scorecard(tiny_config_file: Path, tmp_path: Path) -> None:
    from bastion.data import load_dataset

    run_dir = run_pipeline(tiny_config_file, out_dir=tmp_path, show_progress=False)
    sc = json.loads((run_dir / "scorecard.json").read_text())
    data = load_dataset("digits", seed=0)
    test = data.test.subset(60)
    for name in ("baseline", "hardened"):
        model = load_model(run_dir / "models" / name)
        assert not model.training
        with torch.no_grad():
            acc = (model(test.x).argmax(1) == test.y).float().mean().item()
        assert acc == pytest.approx(sc["models"][name]["clean_accuracy"], abs=1e-9)
        meta = json.loads((run_dir / "models" / f"{name}.json").read_text())
        assert meta["metadata"]["data_fingerprint"] == sc["data"]["fingerprint"]
        assert meta["metadata"]["config_hash"] == sc["run"]["config_hash"]


def test_same_seed_same_results(tiny_config_file: Path, tmp_path: Path) -> None:
    a = read_scorecard(
        run_pipeline(tiny_config_file, out_dir=tmp_path / "a", show_progress=False)
        / "scorecard.json"
    )
    b = read_scorecard(
        run_pipeline(tiny_config_file, out_dir=tmp_path / "b", show_progress=False)
        / "scorecard.json"
    )
    for name in ("baseline", "hardened"):
        assert a["models"][name]["attacks"] == b["models"][name]["attacks"]
        assert a["models"][name]["clean_accuracy"] == b["models"][name]["clean_accuracy"]


@pytest.mark.parametrize(
    ("change", "error", "needle"),
    [
        ({"threat": {"norm": "l3", "eps": 0.2}}, ConfigError, "threat.norm"),
        ({"threat": {"norm": "linf", "eps": -0.1}}, ConfigError, "threat.eps"),
        (
            {"data": {"name": "mnist", "data_dir": "/nonexistent/mnist-dir"}},
            DataError,
            "/nonexistent/mnist-dir",
        ),
        (
            {"evaluation": {"attacks": [{"name": "nosuchattack"}]}},
            ConfigError,
            "evaluation.attacks",
        ),
    ],
)
def test_bad_config_leaves_no_run_directory(
    tmp_path: Path, make_config: Callable[..., Path], change: dict, error: type, needle: str
) -> None:
    cfg = make_config(**change)
    out = tmp_path / "runs"
    with pytest.raises(error) as exc:
        run_pipeline(cfg, out_dir=out, show_progress=False)
    assert needle in str(exc.value)
    assert _entries(out) == []


def test_failure_midway_removes_partial_directory(
    tmp_path: Path, make_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import bastion.pipeline as pipeline

    def boom(*args: object, **kwargs: object) -> None:
        raise BastionError("evaluation failed on purpose")

    monkeypatch.setattr(pipeline, "evaluate_models", boom)
    cfg = make_config()
    out = tmp_path / "runs"
    with pytest.raises(BastionError):
        run_pipeline(cfg, out_dir=out, show_progress=False)
    assert _entries(out) == []


def test_existing_runs_are_never_overwritten(tiny_config_file: Path, tmp_path: Path) -> None:
    first = run_pipeline(tiny_config_file, out_dir=tmp_path, show_progress=False)
    marker = first / "keep.txt"
    marker.write_text("mine")
    second = run_pipeline(tiny_config_file, out_dir=tmp_path, show_progress=False)
    assert second != first and marker.read_text() == "mine"


def test_stale_partial_of_a_dead_process_is_removed(tiny_config_file: Path, tmp_path: Path) -> None:
    import subprocess

    dead = subprocess.Popen(["true"])  # a pid that has surely exited
    dead.wait()
    stale = tmp_path / f".tiny-20260101-000000.partial-{dead.pid}"
    (stale / "models").mkdir(parents=True)
    alive = tmp_path / f".other-20260101-000000.partial-{os.getpid()}"
    alive.mkdir()
    run_pipeline(tiny_config_file, out_dir=tmp_path, show_progress=False)
    assert not stale.exists() and alive.exists()


def test_sigterm_leaves_no_partial_directory(tiny_config_file: Path, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "runs"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bastion.cli",
            "run",
            str(tiny_config_file),
            "--out",
            str(out),
            "-q",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and any(out.glob(".*partial*"))):
        time.sleep(0.05)
    assert any(out.glob(".*partial*")), "the run never started"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert _entries(out) == []


def test_corruptions_and_sanity_checks_land_in_scorecard_and_report(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    evaluation = {
        "examples": 60,
        "attacks": [{"name": "fgsm"}, {"name": "pgd", "label": "pgd-10", "steps": 10}],
        "corruptions": {"names": ["gaussian_noise", "rotation"], "severities": [1, 5]},
    }
    cfg = make_config(evaluation=evaluation)
    run_dir = run_pipeline(cfg, out_dir=tmp_path / "runs", show_progress=False)
    sc = read_scorecard(run_dir / "scorecard.json")
    base, hard = sc["models"]["baseline"]["corruptions"], sc["models"]["hardened"]["corruptions"]
    assert set(base["accuracy"]) == {"gaussian_noise", "rotation"}
    assert set(base["accuracy"]["rotation"]) == {"1", "5"}
    assert base["mce"] == pytest.approx(1.0) and base["reference"] == "baseline"
    assert hard["mce"] is None or hard["mce"] > 0
    codes = {c["code"] for c in sc["models"]["hardened"]["sanity_checks"]}
    assert {"zero-or-nonfinite-gradients", "unbounded-eps-not-zero"} <= codes
    html = (run_dir / "report.html").read_text()
    assert 'id="corruptions"' in html and "gaussian_noise" in html
