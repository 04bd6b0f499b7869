"""The renderers read the typed scorecard: real version-1 scorecards (an image run, a tabular run
with a poisoning drill, a text run) render the same from the typed model as from their JSON, and
show the sections they hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.evaluation.scorecard import read_scorecard
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
