"""The Markdown summary: heading, one table row per model, warnings, escaping."""

from __future__ import annotations

from typing import Any

from bastion.report import render_markdown


def _table(markdown: str) -> list[list[str]]:
    rows = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


def test_summary_has_heading_threat_and_a_row_per_model(scorecard: dict[str, Any]) -> None:
    markdown = render_markdown(scorecard)
    assert markdown.startswith("# Robustness report: digits\n")
    assert "Threat model: linf, \u03b5 = 0.2, inputs in \\[0, 1\\]." in markdown
    assert "Evaluated on 360 examples." in markdown
    table = _table(markdown)
    assert table[0] == [
        "Model",
        "Objective",
        "Clean",
        "Worst case @ \u03b5=0.2",
        "fgsm @ \u03b5=0.2",
        "pgd @ \u03b5=0.2",
    ]
    assert table[1] == ["---|---|---:|---:|---:|---:"]
    assert table[2] == ["baseline", "standard", "97.5%", "1.8%", "6.1%", "1.8%"]
    assert table[3] == ["hardened", "pgd-at", "94.3%", "76.3%", "81.0%", "76.3%"]
    assert len(table) == 4


def test_warnings_are_listed(scorecard: dict[str, Any]) -> None:
    markdown = render_markdown(scorecard)
    assert "## Warnings" in markdown
    assert "- **gradient-masking** (model hardened): Accuracy at eps 0.3 stays" in markdown
    assert "No warnings." not in markdown

    scorecard["warnings"] = []
    assert render_markdown(scorecard).rstrip().endswith("## Warnings\n\nNo warnings.")


def test_names_cannot_break_the_table_or_inject_markup(scorecard: dict[str, Any]) -> None:
    models = scorecard["models"]
    models["a|b <script>\nc"] = models.pop("hardened")
    scorecard["warnings"][0]["message"] = "[click](https://evil.example) *now*"
    markdown = render_markdown(scorecard)
    row = next(line for line in markdown.splitlines() if line.startswith("| a"))
    assert row.startswith("| a\\|b \\<script\\> c | pgd-at |")
    assert row.count(" | ") == 5  # six cells: the escaped pipe did not add a column
    assert "<script>" not in markdown
    assert "\\[click\\](https://evil.example) \\*now\\*" in markdown


def test_missing_values_render_as_dash() -> None:
    markdown = render_markdown({"models": {"m": {"clean_accuracy": 0.9712}}})
    table = _table(markdown)
    assert table[0] == ["Model", "Objective", "Clean", "Worst case"]
    assert table[2] == ["m", "\u2014", "97.1%", "\u2014"]
    assert "No warnings." in markdown
