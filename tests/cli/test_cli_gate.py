"""`bastion gate` on a real (tiny) run: exit 0 pass, 1 fail, 2 bad input; JUnit written."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from bastion.cli import main

TINY = {
    "name": "tiny",
    "data": {"name": "digits"},
    "threat": {"norm": "linf", "eps": 0.2},
    "model": {"architecture": "mlp"},
    "training": {"epochs": 2, "batch_size": 64, "lr": 0.05, "val_examples": 40, "val_pgd_steps": 2},
    "models": [{"name": "baseline", "objective": {"name": "standard"}}],
    "evaluation": {"examples": 40, "attacks": [{"name": "pgd", "steps": 5}]},
}


@pytest.fixture(scope="module")
def scorecard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("gate")
    cfg = d / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    assert main(["run", str(cfg), "--out", str(d / "runs"), "-q"]) == 0
    (run,) = list((d / "runs").iterdir())
    return run / "scorecard.json"


def _policy(tmp_path: Path, rules: list[dict]) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(yaml.safe_dump({"version": 1, "rules": rules}))
    return p


def test_passing_policy_exits_0_and_writes_junit(scorecard: Path, tmp_path: Path) -> None:
    pol = _policy(tmp_path, [{"metric": "models.baseline.clean_accuracy", "min": 0.5}])
    junit = tmp_path / "gate.xml"
    assert main(["gate", str(scorecard), "--policy", str(pol), "--junit", str(junit)]) == 0
    root = ET.parse(junit).getroot()
    assert root.iter("testcase") and not list(root.iter("failure"))


def test_failing_policy_exits_1(
    scorecard: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    acc = json.loads(scorecard.read_text())["models"]["baseline"]["worst_case_accuracy"]
    pol = _policy(tmp_path, [{"metric": "models.baseline.worst_case_accuracy", "min": acc + 0.01}])
    junit = tmp_path / "gate.xml"
    assert main(["gate", str(scorecard), "--policy", str(pol), "--junit", str(junit)]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert len(list(ET.parse(junit).getroot().iter("failure"))) == 1


def test_missing_metric_fails_closed(scorecard: Path, tmp_path: Path) -> None:
    pol = _policy(tmp_path, [{"metric": "models.hardened.worst_case_accuracy", "min": 0.1}])
    assert main(["gate", str(scorecard), "--policy", str(pol)]) == 1


def test_baseline_from_another_data_set_is_refused(
    scorecard: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = json.loads(scorecard.read_text())
    other["data"]["fingerprint"] = "0" * 64
    base = tmp_path / "base.json"
    base.write_text(json.dumps(other))
    pol = _policy(tmp_path, [{"metric": "models.baseline.clean_accuracy", "max_drop": 0.02}])
    assert main(["gate", str(scorecard), "--policy", str(pol), "--baseline", str(base)]) == 2
    assert "fingerprint" in capsys.readouterr().err


def test_bad_policy_exits_2(
    scorecard: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pol = _policy(tmp_path, [{"metric": "models.baseline.clean_accuracy"}])
    assert main(["gate", str(scorecard), "--policy", str(pol)]) == 2
    assert "rules[0]" in capsys.readouterr().err
