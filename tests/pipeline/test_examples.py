"""Every example config in examples/ is run by a test.

digits.yaml runs as shipped (about half a minute). mnist-linf.yaml needs the real MNIST files
(../shared/datasets/mnist beside the project); the default suite runs it with one epoch per
model and 200 evaluation examples, the slow suite runs it as shipped and checks the figures the
README quotes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.config import load_config
from bastion.evaluation.scorecard import read_scorecard
from bastion.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SHARED_MNIST = ROOT.parent / "shared" / "datasets" / "mnist"

ALL_EXAMPLES = sorted(p.name for p in EXAMPLES.glob("*.yaml"))
needs_mnist = pytest.mark.skipif(
    not (SHARED_MNIST / "t10k-labels-idx1-ubyte.gz").exists(),
    reason="MNIST files not found beside the project",
)


def test_every_example_is_covered() -> None:
    assert set(ALL_EXAMPLES) == {"digits.yaml", "mnist-linf.yaml"}, (
        "add a test for each new example"
    )


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_example_parses(name: str) -> None:
    cfg, raw = load_config(EXAMPLES / name)
    assert cfg.name == raw["name"] and len(cfg.models) >= 2


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
