"""The drill end to end: ``bastion scan data`` on digits (default suite) and
``examples/mnist-backdoor.yaml`` through :func:`backdoor_drill` on an MNIST subset (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bastion.cli import main
from bastion.config import load_config
from bastion.data import load_dataset
from bastion.poisoning.config import PoisoningConfig
from bastion.poisoning.flow import backdoor_drill
from bastion.poisoning.quarantine import read_kept

ROOT = Path(__file__).resolve().parents[2]
MNIST = Path("/work/shared/datasets/mnist")


def test_scan_data_command_quarantines_the_drills_poisons(tmp_path, capsys):
    config = {
        "name": "digits-drill",
        "seed": 0,
        "data": {"name": "digits"},
        "models": [{"name": "baseline", "objective": {"name": "standard"}}],
        "poisoning": {
            "attack": {"name": "badnets", "rate": 0.1, "size": 2, "target": 0},
            "scan": {
                "model": {"architecture": "small-cnn", "epochs": 10, "batch_size": 64},
                "methods": ["activation-clustering", "spectral-signatures"],
                "eps": 0.5,
            },
        },
    }
    path = tmp_path / "drill.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "q.json"
    assert main(["scan", "data", str(path), "--out", str(out), "-q", "--threads", "1"]) == 0
    doc = json.loads(out.read_text())
    record = doc["poisoning"]
    assert record["n_poisoned"] == round(0.1 * doc["n"]) == len(record["indices"])
    quarantined = {e["index"] for e in doc["entries"]}
    # nothing dropped silently: every entry has its reasons and their scores
    assert all(e["reasons"] and set(e["scores"]) == set(e["reasons"]) for e in doc["entries"])
    assert doc["n_kept"] == doc["n"] - len(quarantined) == len(read_kept(out))
    # spectral signatures with eps 0.5 quarantines the top 75% of every class by its score;
    # the poisons are a third of class 0 here and nearly all rank among them
    ss = doc["detection"]["spectral-signatures"]
    assert ss["recall"] >= 0.8, ss
    flagged_poisons = set(record["indices"]) & quarantined
    assert len(flagged_poisons) >= 0.8 * len(record["indices"])
    assert doc["scans"]["spectral-signatures"]["suspect_classes"] == list(range(10))
    printed = capsys.readouterr().out
    assert "quarantined" in printed and f"quarantine written to {out}" in printed


def test_scan_data_command_rejects_a_bad_poisoning_section(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "bad",
                "models": [{"name": "b", "objective": {"name": "standard"}}],
                "poisoning": {"attack": {"rate": 2.0}},
            }
        )
    )
    assert main(["scan", "data", str(path), "--out", str(tmp_path / "q.json")]) == 2
    err = capsys.readouterr().err
    assert "poisoning.attack.rate" in err and not (tmp_path / "q.json").exists()


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_dir(), reason="MNIST IDX files not present")
def test_mnist_backdoor_example_runs_poison_scan_quarantine_train_verify(tmp_path):
    cfg, _ = load_config(ROOT / "examples" / "mnist-backdoor.yaml")
    section = cfg.poisoning_config()
    assert section is not None and section.attack is not None
    # the example as written, on the first 10,000 training images and a shorter trigger search
    small = PoisoningConfig.from_dict(
        {
            **cfg.poisoning,  # type: ignore[dict-item]
            "train_examples": 10000,
            "verify": {**section.verify.model_dump(), "cleanse_examples": 300, "examples": 500},
        }
    )
    data = load_dataset("mnist", data_dir=MNIST, seed=cfg.seed)
    report = backdoor_drill(small, data, tmp_path, seed=cfg.seed)
    und, dfd = report["models"]["undefended"], report["models"]["defended"]
    assert und["attack_success_rate"] >= 0.9 and und["clean_accuracy"] >= 0.95, und
    q = report["scan"]["detection"]["quarantine"]
    assert q["recall"] >= 0.9 and q["clean_flagged_rate"] <= 0.05, q
    assert (
        dfd["attack_success_rate"] <= 0.05 and dfd["clean_accuracy"] >= und["clean_accuracy"] - 0.01
    )
    assert und["neural_cleanse"]["flagged"] and und["neural_cleanse"]["target"] == 0
    assert report["strip"]["detection_rate"] >= 0.5
    for name in ("poisoning.json", "quarantine.json", "trigger-undefended.png"):
        assert (tmp_path / name).is_file()


def test_scan_data_command_finds_flipped_labels_by_confident_learning(tmp_path):
    config = {
        "name": "digits-flip",
        "seed": 0,
        "data": {"name": "digits"},
        "models": [{"name": "baseline", "objective": {"name": "standard"}}],
        "poisoning": {
            "attack": {"name": "label-flip", "rate": 0.05},
            "scan": {
                "model": {"architecture": "mlp", "epochs": 10, "batch_size": 64},
                "methods": [],
                "duplicates": False,
                "label_issues": True,
                "folds": 2,
            },
        },
    }
    path = tmp_path / "flip.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "q.json"
    assert main(["scan", "data", str(path), "--out", str(out), "-q", "--threads", "1"]) == 0
    doc = json.loads(out.read_text())
    m = doc["detection"]["label-issue"]
    assert m["recall"] >= 0.7 and m["precision"] >= 0.5, m
    entries = [e for e in doc["entries"] if "label-issue" in e["reasons"]]
    assert entries and all("suggested" in e["details"]["label-issue"] for e in entries)
