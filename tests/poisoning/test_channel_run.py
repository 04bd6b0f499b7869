"""``bastion run`` with a ``poisoning:`` section on the text and tabular channels: the drill
poisons, scans, quarantines, retrains and verifies, and lands in the scorecard (gate paths
``poisoning.poison_fraction_quarantined`` / ``poisoning.backdoor_attack_success``), the report
and the model card. examples/sms-backdoor.yaml and examples/tabular-backdoor.yaml run here on a
subset; bad values exit 2 with one line naming ``poisoning.<field>`` and write nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bastion.cli import main
from bastion.evaluation.gate import evaluate_gate
from bastion.evaluation.scorecard import read_scorecard
from bastion.pipeline import run_pipeline
from shared_data import DATASETS

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SMS = DATASETS / "sms_spam"
needs_sms = pytest.mark.skipif(
    not (SMS / "SMSSpamCollection").exists(), reason="SMS Spam files not found"
)
RULES = {
    "rules": [
        {"metric": "poisoning.backdoor_attack_success", "max": 0.05},
        {"metric": "poisoning.poison_fraction_quarantined", "max": 0.05},
    ]
}


def _shrunk(name: str, tmp_path: Path, **sections: dict[str, Any]) -> Path:
    """A copy of an example with sections updated and data paths made absolute."""
    raw = yaml.safe_load((EXAMPLES / name).read_text())
    for section, changes in sections.items():
        raw[section].update(changes)
    data = raw.get("data", {})
    data.update({k: str(EXAMPLES / v) for k, v in data.items() if k in ("path", "schema")})
    (tmp_path / name).write_text(yaml.safe_dump(raw))
    return tmp_path / name


def _check_section(run_dir: Path, channel: str, model: str) -> dict[str, Any]:
    sc = read_scorecard(run_dir / "scorecard.json")
    p = sc["poisoning"]
    q = json.loads((run_dir / p["quarantine_file"]).read_text())
    assert p["channel"] == channel and q["n"] == p["n_scanned"]
    assert q["poisoning"]["n_poisoned"] == p["attack"]["n_poisoned"] > 0
    assert len(q["poisoning"]["indices"]) == p["attack"]["n_poisoned"]
    # nothing dropped silently: every entry has its reasons and their scores
    assert all(e["reasons"] and set(e["scores"]) == set(e["reasons"]) for e in q["entries"])
    assert p["n_trained_on"] == q["n_kept"] == p["n_scanned"] - p["n_quarantined"]
    assert p["poison_fraction_quarantined"] == round(p["n_quarantined"] / p["n_scanned"], 6)
    assert p["backdoor_attack_success"] == p["models"][model]["attack_success_rate"]
    assert p["scan_model_attack_success_rate"] == p["undefended"]["attack_success_rate"]
    page = (run_dir / "report.html").read_text()
    assert '<section id="poisoning">' in page and "<svg" in page
    card = (run_dir / "model_card.md").read_text()
    assert "## Training data poisoning" in card and "victim" in card
    return p


@needs_sms
def test_sms_backdoor_example_on_a_subset(tmp_path: Path) -> None:
    cfg = _shrunk(
        "sms-backdoor.yaml",
        tmp_path,
        text={"n_attack": 10, "training": {"epochs": 1}},
        poisoning={"train_examples": 2000, "scan": {"model": {"epochs": 6}}},
    )
    run_dir = run_pipeline(cfg, out_dir=tmp_path / "runs", data_dir=SMS, show_progress=False)
    p = _check_section(run_dir, "text", "word-cnn")
    assert p["attack"]["n_poisoned"] == 20 and p["attack"]["settings"]["repeats"] == 3
    assert p["undefended"]["attack_success_rate"] >= 0.8, p["undefended"]
    assert p["detection"]["quarantine"]["recall"] >= 0.9, p["detection"]
    assert p["scans"]["trigger-token"]["flagged_tokens"] == ["cf"]
    assert p["models"]["word-cnn"]["attack_success_rate"] <= 0.05, p["models"]
    sc = read_scorecard(run_dir / "scorecard.json")
    assert [r.passed for r in evaluate_gate(sc, RULES).results] == [True, True]
    assert sc["text"]["models"]["standard"]["clean_accuracy"] > 0.8  # the text channel ran


def test_tabular_backdoor_example_on_a_subset(tmp_path: Path) -> None:
    cfg = _shrunk(
        "tabular-backdoor.yaml",
        tmp_path,
        tabular={
            "examples": 20,
            "epochs": 30,
            "attack_steps": 5,
            "queries": 20,
            "hsj_iterations": 2,
            "hsj_probes": 10,
            "gbm_estimators": 10,
            "train_attack_steps": 2,
            "attacks": ["cpgd"],
        },
    )
    run_dir = run_pipeline(cfg, out_dir=tmp_path / "runs", show_progress=False)
    p = _check_section(run_dir, "tabular", "mlp")
    assert p["undefended"]["attack_success_rate"] >= 0.8, p["undefended"]
    assert p["detection"]["quarantine"]["recall"] >= 0.95, p["detection"]
    assert p["models"]["mlp"]["attack_success_rate"] <= 0.05, p["models"]
    assert p["scans"]["feature-value"]["flagged_cells"]
    sc = read_scorecard(run_dir / "scorecard.json")
    assert [r.passed for r in evaluate_gate(sc, RULES).results] == [True, True]
    assert "tabular" in sc  # the tabular channel ran too


def _text_config(poisoning: object) -> dict[str, Any]:
    return {
        "name": "bad",
        "text": {"dataset": "sms_spam", "n_attack": 5},
        "poisoning": poisoning,
    }


def _tabular_config(poisoning: object) -> dict[str, Any]:
    return {
        "name": "bad",
        "data": {
            "name": "csv",
            "path": str(EXAMPLES / "data/fraud.csv"),
            "schema": str(EXAMPLES / "data/fraud-schema.yaml"),
        },
        "tabular": {"examples": 5},
        "poisoning": poisoning,
    }


_IMAGE = {"name": "bad", "models": [{"name": "b", "objective": {"name": "standard"}}]}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (_text_config({"attack": {"name": "badnets"}}), r"poisoning\.attack\.name: the text"),
        (_text_config({"scan": {"methods": ["trigger-token"]}}), r"poisoning\.attack: expected"),
        (
            _text_config({"attack": {"name": "trigger-word", "word": "two words"}}),
            r"poisoning\.attack\.word: expected one word token",
        ),
        (
            _text_config({"attack": {"name": "trigger-word", "repeats": 0}}),
            r"poisoning\.attack\.repeats",
        ),
        (
            _text_config({"attack": {"name": "trigger-word", "size": 3}}),
            r"poisoning\.attack\.size: not a setting of the trigger-word attack",
        ),
        (
            _text_config(
                {"attack": {"name": "trigger-word"}, "scan": {"methods": ["feature-value"]}}
            ),
            r"poisoning\.scan\.methods\[0\]: the text channel takes",
        ),
        (
            _text_config({"attack": {"name": "trigger-word"}, "verify": {"strip": True}}),
            r"poisoning\.verify\.strip: image data only",
        ),
        (
            _tabular_config({"attack": {"name": "feature-pattern", "rate": 1.5}}),
            r"poisoning\.attack\.rate: Input should be less than or equal to 1",
        ),
        (
            _tabular_config({"attack": {"name": "trigger-word"}}),
            r"poisoning\.attack\.name: the tabular channel takes feature-pattern",
        ),
        ({**_IMAGE, "poisoning": {"attack": {"name": "feature-pattern"}}}, r"the image channel"),
        ({**_IMAGE, "poisoning": {"scan": {"methods": ["trigger-token"]}}}, r"methods\[0\]"),
    ],
)
def test_bad_channel_sections_exit_2_with_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: dict[str, Any], message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "runs"
    assert main(["run", str(path), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert re.search(message, err), err
    assert not out.exists()


@pytest.mark.parametrize(
    ("poisoning", "message"),
    [
        (
            {"attack": {"name": "feature-pattern", "features": ["country"]}},
            r"poisoning\.attack\.features\[0\]: 'country' is",
        ),
        ({"attack": {"name": "feature-pattern", "target": 2}}, r"poisoning\.attack\.target"),
    ],
)
def test_bad_tabular_drill_values_found_with_the_data_exit_2_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], poisoning: object, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_tabular_config(poisoning)))
    out = tmp_path / "runs"
    assert main(["run", str(path), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert re.search(message, err), err
    assert not out.exists()


def test_scan_data_refuses_a_text_or_tabular_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "q.json"
    for name in ("sms-backdoor.yaml", "tabular-backdoor.yaml"):
        assert main(["scan", "data", str(EXAMPLES / name), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "bastion scan data scans image data" in err and "drill runs in bastion run" in err
        assert not out.exists()
