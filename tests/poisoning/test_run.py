"""``bastion run`` with a ``poisoning:`` section: the drill's training split is scanned, the
quarantine is written into the run directory, models train on the kept examples, and the
scorecard records the scan and each model's attack success rate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from poisoning_docs import yaml_blocks

from bastion.cli import main
from bastion.evaluation.gate import evaluate_gate
from bastion.models import read_sidecar
from bastion.provenance import load_model_split


def _config(quarantine: bool) -> dict[str, object]:
    return {
        "name": "digits-poison",
        "seed": 0,
        "threads": 1,
        "data": {"name": "digits"},
        "threat": {"norm": "linf", "eps": 0.1},
        "model": {"architecture": "small-cnn"},
        "training": {"epochs": 10, "batch_size": 64, "lr": 0.05, "val_examples": 100},
        "models": [{"name": "baseline", "objective": {"name": "standard"}}],
        "evaluation": {"examples": 50, "attacks": [{"name": "fgsm"}], "eps_grid": [0.0, 0.1]},
        "poisoning": {
            "attack": {"name": "badnets", "rate": 0.1, "size": 2, "target": 0},
            "scan": {
                "model": {"architecture": "small-cnn", "epochs": 10, "batch_size": 64},
                "methods": ["activation-clustering", "spectre"],
                "eps": 0.5,
                "duplicates": False,
            },
            "quarantine": quarantine,
        },
    }


def test_run_with_a_poisoning_drill_quarantines_before_training(tmp_path):
    results: dict[bool, tuple[dict[str, Any], Path]] = {}
    for quarantine in (False, True):
        path = tmp_path / f"q{quarantine}.yaml"
        path.write_text(yaml.safe_dump(_config(quarantine)))
        out = tmp_path / f"runs-{quarantine}"
        assert main(["run", str(path), "--out", str(out), "-q"]) == 0
        (run,) = out.iterdir()
        card = json.loads((run / "scorecard.json").read_text())
        section = card["poisoning"]
        q = json.loads((run / section["quarantine_file"]).read_text())
        assert q["n"] == section["n_scanned"] and q["poisoning"]["n_poisoned"] > 0
        assert section["n_trained_on"] == (q["n_kept"] if quarantine else q["n"])
        # the saved model still proves the original split (the quarantine only trims training)
        meta = read_sidecar(run / "models" / "baseline")
        assert load_model_split(meta, where="baseline").verified
        results[quarantine] = (section, run)
    (kept, kept_run), (poisoned, poisoned_run) = results[True], results[False]
    assert poisoned["models"]["baseline"]["attack_success_rate"] >= 0.9, poisoned
    assert kept["detection"]["quarantine"]["recall"] >= 0.95, kept["detection"]
    assert kept["models"]["baseline"]["attack_success_rate"] <= 0.2, kept
    # the gate's figures
    assert kept["poison_fraction_quarantined"] == round(
        kept["n_quarantined"] / kept["n_scanned"], 6
    )
    assert poisoned["backdoor_attack_success"] == max(
        m["attack_success_rate"] for m in poisoned["models"].values()
    )
    # Neural Cleanse and STRIP ran on the trained model (the section's verify defaults)
    nc_bad = poisoned["models"]["baseline"]["neural_cleanse"]
    assert (poisoned_run / nc_bad["trigger_png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert nc_bad["flagged"] and nc_bad["target"] == 0, nc_bad
    strip = poisoned["models"]["baseline"]["strip"]
    # (8x8 digits, a 2x2 patch, 90 overlays: a weaker STRIP than on MNIST, still far above
    # its false alarms)
    assert strip["false_positive_rate"] <= 0.1 and strip["detection_rate"] >= 0.6, strip
    # the report and the model card show the section
    page = (poisoned_run / "report.html").read_text()
    assert '<section id="poisoning">' in page and "data:image/png;base64," in page
    assert "<svg" in page and "quarantined" in page
    card_md = (kept_run / "model_card.md").read_text()
    assert "## Training data poisoning" in card_md and "Neural Cleanse" in card_md
    # the gate policy of docs/poisoning.md, rule by rule: the backdoor rule holds for the
    # quarantined run and fails for the other; the data rule fails for both, since this drill's
    # SPECTRE at eps 0.5 quarantines 1.5 * eps = 75% of every class
    rules = yaml_blocks()["rules"]
    verdicts = {}
    for label, run in (("kept", kept_run), ("poisoned", poisoned_run)):
        card = json.loads((run / "scorecard.json").read_text())
        verdicts[label] = [r.passed for r in evaluate_gate(card, rules).results[:2]]
    assert verdicts == {"kept": [False, True], "poisoned": [False, False]}, verdicts
    assert kept["poison_fraction_quarantined"] > 0.7
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(rules))
    assert main(["gate", str(poisoned_run / "scorecard.json"), "--policy", str(policy)]) == 1
