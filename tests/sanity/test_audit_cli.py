"""``bastion audit masking MODEL``: only the gradient-masking checks and their escalation, on a
saved model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bastion.cli import main
from bastion.evaluation.sanity import CHECK_CODES

TINY = {
    "name": "tiny",
    "data": {"name": "digits"},
    "threat": {"norm": "linf", "eps": 0.2},
    "model": {"architecture": "mlp"},
    "training": {"epochs": 2, "batch_size": 64, "lr": 0.05, "val_examples": 40, "val_pgd_steps": 2},
    "models": [{"name": "baseline", "objective": {"name": "standard"}}],
    "evaluation": {"examples": 40, "attacks": [{"name": "fgsm"}]},
}


def test_audit_masking_runs_checks_and_escalation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    stem = tmp_path / "m"
    assert main(["train", str(cfg), "--out", str(stem), "--quiet"]) == 0
    capsys.readouterr()
    out = tmp_path / "audit.json"
    args = ["audit", "masking", str(stem), "-n", "60", "--eps", "0.1", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    for code in CHECK_CODES:
        assert code in printed
    assert "linf eps 0.1" in printed
    assert "nothing to escalate" in printed or "the escalation leaves" in printed
    doc = json.loads(out.read_text())
    assert [c["code"] for c in doc["sanity_checks"]] == list(CHECK_CODES)
    assert doc["escalation"]["enabled"] is True
    assert doc["escalation"]["status"] in ("not-needed", "complete")
    assert doc["worst_case_accuracy"] <= doc["first_pass_worst_case_accuracy"]
    assert doc["threat"]["eps"] == 0.1 and doc["n_eval"] == 60

    assert (
        main(["audit", "masking", str(stem), "-n", "60", "--no-escalate", "--out", str(out)]) == 0
    )
    assert json.loads(out.read_text())["escalation"]["enabled"] is False
    capsys.readouterr()
    assert main(["audit", "masking", str(stem), "--budget", "huge"]) == 2
    assert "--budget" in capsys.readouterr().err
