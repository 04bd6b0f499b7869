"""The two MiniLM text examples, each run through ``run_pipeline`` on a small subset: the
pretrained encoder from ../shared/models (tests/shared_data.py), 128 training texts, one epoch,
max_length 32, four attacked texts. Checks the run's models, scorecard and report; the figures
at full scale come from ``benchmarks/text.py --model minilm``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import shared_data
from bastion.evaluation.scorecard import read_scorecard
from bastion.pipeline import run_pipeline
from bastion.text.transformer import load_transformer_model

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MINILM = shared_data.MINILM
CASES = {
    "text-movie-review-minilm.yaml": "movie_review_polarity",
    "text-sms-spam-minilm.yaml": "sms_spam",
}


@pytest.mark.slow
@pytest.mark.skipif(not (MINILM / "model.safetensors").exists(), reason="MiniLM not found")
@pytest.mark.parametrize("name", sorted(CASES))
def test_minilm_example_runs_on_a_subset(name: str, tmp_path: Path) -> None:
    folder = shared_data.DATASETS / CASES[name]
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    raw = yaml.safe_load((EXAMPLES / name).read_text())
    raw["text"]["n_attack"] = 4
    raw["text"]["transformer"].update(
        {
            "path": str(MINILM),
            "max_train": 128,
            "max_val": 32,
            "max_test": 32,
            "epochs": 1,
            "batch_size": 16,
            "max_length": 32,
            "lr": 1e-4,
        }
    )
    cfg = tmp_path / name
    cfg.write_text(yaml.safe_dump(raw))
    run_dir = run_pipeline(cfg, out_dir=tmp_path / "runs", data_dir=folder, show_progress=False)
    sc = read_scorecard(run_dir / "scorecard.json")
    txt = sc["text"]
    assert txt["spec"]["arch"] == "transformer" and txt["transformer"]["n_train"] == 128
    assert set(txt["attacks"]) == set(raw["text"].get("attacks") or txt["attacks"])
    for per in txt["attacks"].values():
        for target in ("standard", "standard+sanitizer", "hardened", "hardened+sanitizer"):
            assert per[target]["n"] == 4
    inv = txt["attacks"]["invisible"]
    assert inv["standard+sanitizer"]["success_rate"] in (0.0, None)
    for role in ("standard", "hardened"):
        training = txt["models"][role]["training"]
        assert training["precision"] in ("fp32", "bf16")
        path = run_dir / txt["models"][role]["path"]
        loaded = load_transformer_model(path if path.exists() else txt["models"][role]["path"])
        assert loaded.model.max_length == 32 and loaded.vocabulary is not None
    assert "Text attacks" in (run_dir / "report.html").read_text()
