"""``bastion run`` with a ``poisoning:`` section: the drill's training split is scanned, the
quarantine is written into the run directory, models train on the kept examples, and the
scorecard records the scan and each model's attack success rate."""

from __future__ import annotations

import json

import yaml

from bastion.cli import main
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
    results = {}
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
        results[quarantine] = section
    kept, poisoned = results[True], results[False]
    assert poisoned["models"]["baseline"]["attack_success_rate"] >= 0.9, poisoned
    assert kept["detection"]["quarantine"]["recall"] >= 0.95, kept["detection"]
    assert kept["models"]["baseline"]["attack_success_rate"] <= 0.2, kept
