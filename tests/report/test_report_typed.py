"""The renderers read the typed scorecard: real version-1 scorecards (an image run, a tabular run
with a poisoning drill, a text run) render the same from the typed model as from their JSON, and
show the sections they hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.evaluation.scorecard import read_scorecard
from bastion.evaluation.scorecard_model import load_scorecard
from bastion.report import render_html, render_markdown
from bastion.report.model_card import render_model_card

DATA = Path(__file__).resolve().parents[1] / "evaluation" / "data"
V1_FILES = sorted(DATA.glob("scorecard_v1_*.json"))


@pytest.mark.parametrize("path", V1_FILES, ids=[p.stem for p in V1_FILES])
def test_typed_and_json_render_the_same(path: Path) -> None:
    raw = json.loads(path.read_text())
    typed = read_scorecard(path)
    assert render_markdown(typed) == render_markdown(raw)
    assert render_model_card(typed) == render_model_card(raw)
    assert render_html(typed) == render_html(raw)


def test_image_run_sections() -> None:
    sc = read_scorecard(DATA / "scorecard_v1_digits.json")
    page = render_html(sc)
    for section in ("corruptions", "calibration", "latency", "sanity", "provenance"):
        assert f'<section id="{section}">' in page
    hard = sc.models["hardened"]
    assert hard.corruptions is not None
    assert f"{hard.corruptions.mean_accuracy:.1%}" in page
    card = render_model_card(sc)
    assert f"on the {hard.n_eval} evaluated examples".lower() in card.lower()
    assert "- Latency (forward pass): batch 1: p50" in card


def test_channel_sections() -> None:
    tab = read_scorecard(DATA / "scorecard_v1_tabular_poisoning.json")
    assert tab.tabular is not None
    page = render_html(tab)
    assert '<section id="tabular">' in page
    for name in tab.tabular.models:
        assert name in page
    assert "### Tabular channel" in render_model_card(tab)
    txt = read_scorecard(DATA / "scorecard_v1_text.json")
    assert txt.text is not None
    card = render_model_card(txt)
    assert "### Text channel" in card
    header = next(line for line in card.splitlines() if line.startswith("| attack |"))
    assert "params" not in header  # an attack's settings are not a target column
    assert '<section id="text">' in render_html(txt)


def test_guard_section_reads_the_typed_guard(scorecard: dict[str, object]) -> None:
    """A guard section shaped like :func:`bastion.guard.evaluate.evaluate_guard`'s result."""
    at = {
        "clean": {"fired": 0.01, "accuracy": 0.9, "answered": 0.99, "answered_accuracy": 0.912},
        "standard": {"pgd": {"detected": 0.6, "stopped": 0.734}},
        "adaptive": {"detected": 0.2, "stopped": 0.456, "settings": {"steps": 10}},
        "worst_case_stopped": 0.421,
    }
    scorecard["guard"] = {"model": "hardened", "examples": 120, "fpr": {"0.01": at}}
    page = render_html(scorecard)
    section = page[page.index('<section id="guard">') :]
    section = section[: section.index("</section>")]
    for text in ("91.2%", "73.4%", "45.6%", "42.1%", "pgd stopped", "hardened on 120"):
        assert text in section
    read = load_scorecard(scorecard)
    assert read.guard is not None and read.guard.fpr["0.01"].adaptive is not None
    assert read.guard.fpr["0.01"].adaptive.extra() == {"settings": {"steps": 10}}


def test_privacy_section_reads_the_typed_audits(scorecard: dict[str, object]) -> None:
    mia = {"tpr_at_0.1pct_fpr": 0.0123, "tpr_at_1pct_fpr": 0.0456, "auc": 0.61}
    scorecard["privacy"] = {
        "dp": {"hardened": {"epsilon": 3.5, "delta": 1e-5}},
        "audits": [
            {
                "kind": "privacy-audit",
                "model": "runs/x/models/hardened",
                "mia": {**mia, "attacks": {"lira-online": mia}},
                "inversion": {"identified": 0.3, "cosine_own": 0.52},
            }
        ],
    }
    typed = load_scorecard(scorecard)
    assert typed.privacy is not None and typed.privacy.audits[0].mia is not None
    assert typed.privacy.audits[0].mia.tpr_at_0_1pct_fpr == 0.0123
    assert typed.to_json()["privacy"] == scorecard["privacy"]  # the dotted name round-trips
    page = render_html(typed)
    for text in ("1.23%", "4.56%", "lira-online", "3.5", "30.00%"):
        assert text in page
    card = render_model_card(scorecard)
    assert "- Membership inference on `hardened`: TPR 1.23% at 0.1% FPR" in card
