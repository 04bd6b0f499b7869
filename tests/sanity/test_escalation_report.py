"""The report's escalation section, rendered from real evaluations: a model behind an input
quantiser (the checks fire, BPDA escalates) and an honest one (nothing fires)."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from sanity_masked_models import Quantised
from torch import nn

from bastion.attacks import FGSM, PGD
from bastion.data import Dataset
from bastion.evaluation import NamedAttack, evaluate_model
from bastion.evaluation.scorecard import SCHEMA_VERSION, sanitize
from bastion.report import _format as fmt
from bastion.report import render_html, render_markdown
from bastion.threat import ThreatModel


@pytest.fixture(scope="module")
def scorecard(
    robust_model: nn.Module, standard_model: nn.Module, sanity_digits: Dataset
) -> dict[str, Any]:
    x, y = sanity_digits.test.x[:200], sanity_digits.test.y[:200]
    attacks = [NamedAttack("fgsm", FGSM()), NamedAttack("pgd-20", PGD(steps=20))]
    masked = evaluate_model(Quantised(robust_model), x, y, ThreatModel("linf", 0.2), attacks)
    honest = evaluate_model(standard_model, x, y, ThreatModel("linf", 0.1), attacks)
    doc: dict[str, Any] = sanitize(
        {
            "schema_version": SCHEMA_VERSION,
            "run": {"name": "escalation-report"},
            "threat": {"norm": "linf", "eps": 0.2, "bounds": [0.0, 1.0]},
            "models": {"quantised": masked, "honest": honest},
            "warnings": masked["sanity_warnings"] + honest["sanity_warnings"],
        }
    )
    return doc


def _section(page: str) -> str:
    m = re.search(r'<section id="escalation">.*?</section>', page, re.S)
    assert m is not None, "no escalation section"
    return m.group(0)


def _row(section: str, model: str) -> str:
    m = re.search(rf'<tr><th scope="row">{model}</th>.*?</tr>', section, re.S)
    assert m is not None, model
    return m.group(0)


def test_html_section_for_an_escalated_and_an_honest_model(scorecard: dict[str, Any]) -> None:
    masked = scorecard["models"]["quantised"]
    esc = masked["escalation"]
    assert esc["status"] == "complete" and esc["superseded"]  # the premise of this test
    section = _section(render_html(scorecard))

    row = _row(section, "quantised")
    for code in esc["fired"]:
        assert code in row
    first, worst = masked["first_pass_worst_case_accuracy"], masked["worst_case_accuracy"]
    # the first pass is struck through and marked superseded, with the reason
    assert f"<s>{first:.1%}</s>" in row and "superseded" in row
    assert esc["reason"] and html.escape(esc["reason"]) in row
    assert f"{worst:.1%}" in row and f"superseding the first pass&#x27;s {first:.1%}" in row
    # time spent, wall clock and CPU
    assert f"{fmt.seconds(esc['seconds'])} ({fmt.seconds(esc['cpu_seconds'])} CPU)" in row
    # every remedy run is listed with its status and its cumulative figure
    for step in esc["steps"]:
        assert f"<code>{step['remedy']}</code>" in section
        if step["accuracy"] is not None:
            assert f"{step['accuracy']:.1%}" in section

    honest = _row(section, "honest")
    assert "no escalation: no sanity check fired" in honest
    assert "<s>" not in honest and "superseded" not in honest


def test_markdown_summary_states_the_escalation(scorecard: dict[str, Any]) -> None:
    md = render_markdown(scorecard)
    masked = scorecard["models"]["quantised"]
    block = md.split("## Escalation", 1)[1].split("## Warnings", 1)[0]
    (q,) = [line for line in block.splitlines() if line.startswith("- quantised")]
    assert f"superseding the first pass's {masked['first_pass_worst_case_accuracy']:.1%}" in q
    assert "bpda done" in q
    (h,) = [line for line in block.splitlines() if line.startswith("- honest")]
    assert "no escalation" in h
    # the table's worst case is the escalated figure
    assert f"| {masked['worst_case_accuracy']:.1%} |" in md


def test_old_scorecards_have_no_escalation_section(scorecard: dict[str, Any]) -> None:
    old = {
        **scorecard,
        "models": {
            name: {k: v for k, v in m.items() if k != "escalation"}
            for name, m in scorecard["models"].items()
        },
    }
    assert 'id="escalation"' not in render_html(old)
    assert "## Escalation" not in render_markdown(old)


def test_escalation_off_says_the_figure_is_unverified(
    robust_model: nn.Module, sanity_digits: Dataset
) -> None:
    x, y = sanity_digits.test.x[:100], sanity_digits.test.y[:100]
    res = evaluate_model(
        Quantised(robust_model),
        x,
        y,
        ThreatModel("linf", 0.2),
        [NamedAttack("pgd-10", PGD(steps=10))],
        escalate=False,
    )
    doc = sanitize({"schema_version": SCHEMA_VERSION, "models": {"q<b>": res}})
    row = _row(_section(render_html(doc)), "q&lt;b&gt;")  # names are escaped
    assert "escalation off although" in row and "unverified" in row
