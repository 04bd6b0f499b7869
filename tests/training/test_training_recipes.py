"""The training recipes of examples/ run end to end (slow: each trains on real data).

The MNIST recipes (slow) run shortened: one epoch per model with the eps ramp over it, the
first attack-step phase only, AWP from the first epoch, 200 attacked test images and the
cascade's quick preset; they need ../shared/datasets/mnist beside the project and skip without
it. breast-cancer (seconds) runs as shipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import shared_data
from bastion.evaluation.scorecard import read_scorecard
from bastion.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SHARED_MNIST = shared_data.MNIST
needs_mnist = pytest.mark.skipif(
    not (SHARED_MNIST / "t10k-labels-idx1-ubyte.gz").exists(),
    reason="MNIST files not found beside the project",
)
MNIST_RECIPES = ["mnist-linf-0.3-fast.yaml", "mnist-linf-0.3-strong.yaml", "mnist-l2-2.0.yaml"]


def quick_recipe(name: str) -> dict[str, Any]:
    """A recipe shortened to one epoch per model and a small evaluation."""
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    doc["data"]["data_dir"] = str(SHARED_MNIST)
    doc["training"].update(epochs=1, val_examples=100)
    for m in doc["models"]:
        t = m.setdefault("training", {})
        # a ramp over the single epoch: at full eps from the first batch, l2 2.0 stalls
        t.update(epochs=1, eps_ramp_epochs=1 if t.get("eps_ramp_epochs") else 0)
        if "step_phases" in t:
            t["step_phases"] = t["step_phases"][:1]
        if "awp" in t:
            t["awp"]["warmup_epochs"] = 0
        t.pop("patience", None)
    doc["evaluation"].update(examples=200, eps_grid=[doc["threat"]["eps"]])
    doc["evaluation"].pop("corruptions", None)
    for a in doc["evaluation"]["attacks"]:
        if a["name"] == "cascade":
            a["preset"] = "quick"
        if a["name"] == "pgd":
            a.update(steps=20, restarts=1)
    return doc


@pytest.mark.slow
@needs_mnist
@pytest.mark.parametrize("name", MNIST_RECIPES)
def test_mnist_recipe_quick(tmp_path: Path, name: str) -> None:
    cfg = tmp_path / name
    cfg.write_text(yaml.safe_dump(quick_recipe(name), sort_keys=False))
    sc = read_scorecard(
        run_pipeline(cfg, out_dir=tmp_path / "runs", show_progress=False) / "scorecard.json"
    )
    models = sc["models"]
    base = models["baseline"]
    assert base["test_clean_accuracy"] >= 0.9
    for label, m in models.items():
        assert m["training"]["warnings"] == [], label
        if label != "baseline":
            assert m["worst_case_accuracy"] > base["worst_case_accuracy"], label
    hardened = list(models.values())[1]
    if hardened["training"].get("temperature") is not None:
        assert hardened["training"]["temperature"] > 0
        cal = hardened["training"]["calibration"]
        assert cal["nll_after"] <= cal["nll_before"] + 1e-9


def test_breast_cancer_recipe(tmp_path: Path) -> None:
    run_dir = run_pipeline(EXAMPLES / "breast-cancer.yaml", out_dir=tmp_path, show_progress=False)
    sc = read_scorecard(run_dir / "scorecard.json")
    base, hard = sc["models"]["baseline"], sc["models"]["hardened"]
    assert base["clean_accuracy"] >= 0.9 and hard["clean_accuracy"] >= 0.9
    assert hard["worst_case_accuracy"] >= base["worst_case_accuracy"] + 0.15
    cal = hard["training"]["calibration"]
    assert cal["ece_after"] < cal["ece_before"]
    assert sc["models"]["noise"]["worst_case_accuracy"] > base["worst_case_accuracy"]
