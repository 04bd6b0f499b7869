"""Every example config in examples/ is run by a test.

digits.yaml runs as shipped (about half a minute). mnist-linf.yaml needs the real MNIST files
(../shared/datasets/mnist beside the project); the default suite runs it with one epoch per
model and 200 evaluation examples, the slow suite runs it as shipped and checks the figures the
README quotes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

import shared_data
from bastion.config import load_config
from bastion.evaluation.scorecard import Scorecard, read_scorecard
from bastion.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SHARED_MNIST = shared_data.MNIST

ALL_EXAMPLES = sorted(p.name for p in EXAMPLES.glob("*.yaml"))
RECIPE_EXAMPLES = {
    "mnist-linf-0.3-fast.yaml",
    "mnist-linf-0.3-strong.yaml",
    "mnist-l2-2.0.yaml",
    "breast-cancer.yaml",
}
needs_mnist = pytest.mark.skipif(
    not (SHARED_MNIST / "t10k-labels-idx1-ubyte.gz").exists(),
    reason="MNIST files not found beside the project",
)


SHARED = shared_data.DATASETS
CHANNEL_EXAMPLES = {"fraud-tabular.yaml", "text-sms-spam.yaml", "text-movie-review.yaml"}
CHANNEL_EXAMPLES.add("text-own-csv.yaml")  # run as shipped by tests/text/test_text_files.py
# run on a subset by test_examples_minilm.py (slow)
CHANNEL_EXAMPLES |= {"text-movie-review-minilm.yaml", "text-sms-spam-minilm.yaml"}
# run on a subset by tests/poisoning/test_channel_run.py
CHANNEL_EXAMPLES |= {"sms-backdoor.yaml", "tabular-backdoor.yaml"}


def test_every_example_is_covered() -> None:
    covered = {"digits.yaml", "mnist-linf.yaml", *CHANNEL_EXAMPLES, *RECIPE_EXAMPLES}
    covered.add("mnist-backdoor.yaml")  # run by tests/poisoning/test_flow.py (slow)
    assert set(ALL_EXAMPLES) <= covered, "add a test for each new example"


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_example_parses(name: str) -> None:
    cfg, raw = load_config(EXAMPLES / name)
    assert cfg.name == raw["name"]
    if name in CHANNEL_EXAMPLES:
        assert cfg.tabular is not None or cfg.text is not None
    elif name == "mnist-backdoor.yaml":  # one model, trained on what the scan keeps
        assert cfg.poisoning_config() is not None and len(cfg.models) == 1
    else:
        assert len(cfg.models) >= 2


def _shrunk(name: str, tmp_path: Path, section: str, changes: dict[str, object]) -> Path:
    """A copy of an example with a smaller ``section`` and paths made absolute."""
    raw = yaml.safe_load((EXAMPLES / name).read_text())
    raw[section].update(changes)
    for key in ("path", "schema"):
        if key in raw.get("data", {}):
            raw["data"][key] = str(EXAMPLES / raw["data"][key])
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw))
    return p


def test_fraud_tabular_example(tmp_path: Path) -> None:
    cfg = _shrunk(
        "fraud-tabular.yaml",
        tmp_path,
        "tabular",
        {
            "examples": 40,
            "epochs": 4,
            "attack_steps": 10,
            "queries": 40,
            "hsj_iterations": 2,
            "hsj_probes": 10,
            "gbm_estimators": 20,
            "train_attack_steps": 3,
        },
    )
    run_dir = run_pipeline(cfg, out_dir=tmp_path / "runs", show_progress=False)
    sc = read_scorecard(run_dir / "scorecard.json")
    tab = sc["tabular"]
    assert set(tab["models"]) == {"standard-mlp", "constrained-at-mlp", "gbm"}
    for m in tab["models"].values():
        assert m["robust_accuracy"] <= m["clean_accuracy"]
        for fig in m["attacks"].values():
            assert fig["feasible_rate"] == 1.0
    assert "Tabular, under the schema" in (run_dir / "report.html").read_text()
    assert sc["data"]["fingerprint"] == tab["data"]["fingerprint"]
    _check_channel_run(run_dir, sc, "tabular")
    assert sc["threat"]["eps"] == tab["threat"]["eps"]  # the channel's, not the unused default


def _check_channel_run(run_dir: Path, sc: Scorecard, channel: str) -> None:
    """A channel-only run: paths relative to the run directory and existing, the threat and the
    attacks the channel ran, and a model card with results on the examples attacked."""
    paths = [m["path"] for m in sc[channel]["models"].values() if "path" in m]
    for p in paths:
        assert not Path(p).is_absolute() and (run_dir / p).exists(), p
    assert ".partial-" not in json.dumps(sc.to_json())
    assert sc["threat"]["channel"] == channel
    assert sc["data"]["n_eval"] > 0
    ran = {a["label"] for a in sc["evaluation"]["attacks"]}
    assert ran and all(a.get("channel") == channel for a in sc["evaluation"]["attacks"])
    card = (run_dir / "model_card.md").read_text()
    assert f"on {sc['data']['n_eval']}" in card and " on 0 " not in card
    assert f"### {channel.capitalize()} channel" in card


@pytest.mark.skipif(
    not (SHARED / "sms_spam" / "SMSSpamCollection").exists(), reason="SMS Spam files not found"
)
def test_text_sms_spam_example(tmp_path: Path) -> None:
    cfg = _shrunk(
        "text-sms-spam.yaml", tmp_path, "text", {"n_attack": 20, "training": {"epochs": 1}}
    )
    run_dir = run_pipeline(
        cfg, out_dir=tmp_path / "runs", data_dir=SHARED / "sms_spam", show_progress=False
    )
    sc = read_scorecard(run_dir / "scorecard.json")
    txt = sc["text"]
    assert txt["models"]["standard"]["clean_accuracy"] > 0.85
    inv = txt["attacks"]["invisible"]
    assert inv["standard+sanitizer"]["success_rate"] <= inv["standard"]["success_rate"]
    assert (run_dir / "models" / "text-hardened.safetensors").exists()
    assert "Text attacks" in (run_dir / "report.html").read_text()
    _check_channel_run(run_dir, sc, "text")


@pytest.mark.skipif(
    not (SHARED / "movie_review_polarity" / "rt-polarity.pos").exists(),
    reason="Movie Review files not found",
)
def test_text_movie_review_example_parses_and_names_missing_data(tmp_path: Path) -> None:
    from bastion.errors import BastionError

    cfg = _shrunk("text-movie-review.yaml", tmp_path, "text", {"n_attack": 10})
    with pytest.raises(BastionError, match="--data-dir"):
        run_pipeline(cfg, out_dir=tmp_path / "runs", show_progress=False)
    assert not list((tmp_path / "runs").glob("*"))  # nothing left behind


def test_digits_example_hardened_beats_baseline(tmp_path: Path) -> None:
    run_dir = run_pipeline(EXAMPLES / "digits.yaml", out_dir=tmp_path, show_progress=False)
    sc = read_scorecard(run_dir / "scorecard.json")
    base, hard = sc["models"]["baseline"], sc["models"]["hardened"]
    assert base["clean_accuracy"] >= 0.9 and hard["clean_accuracy"] >= 0.9
    assert hard["attacks"]["pgd-50x5"]["0.2"] >= base["attacks"]["pgd-50x5"]["0.2"] + 0.30
    assert hard["worst_case_accuracy"] >= 0.45


@needs_mnist
def test_mnist_example_quick(tmp_path: Path, mnist_example_config: Callable[..., Path]) -> None:
    run_dir = run_pipeline(
        mnist_example_config(quick=True), out_dir=tmp_path / "runs", show_progress=False
    )
    sc = read_scorecard(run_dir / "scorecard.json")
    assert sc["models"]["baseline"]["n_test"] == 10_000
    assert sc["models"]["baseline"]["test_clean_accuracy"] >= 0.95
    assert (
        sc["models"]["hardened"]["worst_case_accuracy"]
        > sc["models"]["baseline"]["worst_case_accuracy"]
    )


@pytest.mark.slow
@needs_mnist
def test_mnist_example_full(tmp_path: Path, mnist_example_config: Callable[..., Path]) -> None:
    run_dir = run_pipeline(
        mnist_example_config(quick=False), out_dir=tmp_path / "runs", show_progress=False
    )
    sc = read_scorecard(run_dir / "scorecard.json")
    hard = sc["models"]["hardened"]
    assert hard["test_clean_accuracy"] >= 0.97
    assert hard["attacks"]["pgd-50x10"]["0.3"] >= 0.70
    assert hard["training"]["seconds"] < 15 * 60
