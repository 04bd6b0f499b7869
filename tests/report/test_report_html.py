"""The HTML report: content, self-containment, embedded figures, escaping, missing parts."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser
from typing import Any

import pytest
from matplotlib.image import imread

from bastion.report import ScorecardError, render_html

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IMG_RE = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
_VOID = {"meta", "img", "br", "hr", "link", "input"}


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(data, validate=True) for data in _IMG_RE.findall(page)]


class _TagChecker(HTMLParser):
    """Records problems with nesting of non-void elements and every URL-bearing attribute."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.urls: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href", "action", "srcset", "poster"}:
                self.urls.append(value or "")
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _TagChecker:
    checker = _TagChecker()
    checker.feed(page)
    checker.close()
    return checker


def cells(row: str) -> list[str]:
    """The contents of a table row's cells, markup inside a cell included."""
    return re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row)


def _section(page: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', page, flags=re.S)
    assert match is not None, f"no section {section_id}"
    return match.group(1)


@pytest.fixture(scope="module")
def page(shared_scorecard: dict[str, Any]) -> str:
    return render_html(shared_scorecard)


def test_page_is_well_formed_and_has_every_section_in_order(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    checker = _parse(page)
    assert checker.errors == []
    assert checker.stack == []
    headings = re.findall(r"<h2>(.*?)</h2>", page)
    assert headings == [
        "Summary",
        "Threat model",
        "Accuracy against \u03b5",
        "Training",
        "Warnings",
        "Provenance",
    ]
    assert "<title>Robustness report \u2014 digits</title>" in page
    assert "2026-11-25T21:40:00Z" in page


def test_summary_table_shows_models_and_formatted_accuracies(page: str) -> None:
    summary = _section(page, "summary")
    rows = re.findall(r"<tr>(.*?)</tr>", summary, flags=re.S)
    assert len(rows) == 3  # header + two models
    baseline, hardened = rows[1], rows[2]
    # model, objective, clean, worst case, fgsm @ 0.2, pgd @ 0.2, training time
    assert cells(baseline) == ["baseline", "standard", "97.5%", "1.8%", "6.1%", "1.8%", "12.5 s"]
    assert cells(hardened) == [
        "hardened",
        "pgd-at",
        "94.3%",
        "76.3%",
        "81.0%",
        "76.3%",
        "1 min 01 s",
    ]
    # the per-attack columns are read at the threat eps (0.2), not at the other stored eps (0.1)
    assert "@ \u03b5 = 0.2" in rows[0]
    # the most robust model's worst case is highlighted, the other is not
    assert '<td class="num best">76.3%</td>' in hardened
    assert "best" not in baseline


def test_per_attack_column_follows_threat_eps(scorecard: dict[str, Any]) -> None:
    scorecard["threat"]["eps"] = 0.1
    summary = _section(render_html(scorecard), "summary")
    assert "@ \u03b5 = 0.1" in summary
    fgsm_at_01 = scorecard["models"]["baseline"]["attacks"]["fgsm"]["0.1"]
    assert f"{100 * fgsm_at_01:.1f}%" in summary


def test_threat_training_warnings_and_provenance(page: str) -> None:
    threat = _section(page, "threat")
    assert "L\u221e (linf)" in threat
    assert "0.2" in threat and "[0, 1]" in threat

    training = _section(page, "training")
    assert "val_robust_accuracy" in training
    assert "No model has a training history" not in training

    warnings = _section(page, "warnings")
    assert '<span class="badge">gradient-masking</span>' in warnings
    assert "gradients may be masked" in warnings
    assert "hardened" in warnings
    assert "No warnings." not in warnings

    provenance = _section(page, "provenance")
    for expected in (
        "ab12cd34ef56",
        "9f8e7d6c5b4a",
        "1,150",
        "287",
        "360",
        "1 \u00d7 8 \u00d7 8",
        "2.13.0+cpu",
        "3.11.7",
        "2.4.6",
        "1 min 35 s",
        "0.5 s",
        "bastion run examples/digits.yaml",
    ):
        assert expected in provenance, expected
    seed_row = re.search(r'<th scope="row">Seed</th><td>(.*?)</td>', provenance)
    assert seed_row is not None and seed_row.group(1) == "0"


def test_plots_are_embedded_as_decodable_png(page: str) -> None:
    images = _images(page)
    assert len(images) >= 2
    for png in images:
        assert png.startswith(PNG_SIGNATURE)
        pixels = imread(io.BytesIO(png))
        height, width = pixels.shape[:2]
        assert width > 600 and height > 300
        assert pixels.std() > 0.05  # not a blank canvas


def test_page_is_self_contained(page: str) -> None:
    lowered = page.lower()
    assert "http://" not in lowered
    assert "https://" not in lowered
    assert "<script" not in lowered
    assert "<link" not in lowered
    assert "@import" not in lowered
    assert "url(" not in lowered
    urls = _parse(page).urls
    assert urls and all(u.startswith("data:image/png;base64,") for u in urls)
    assert "Content-Security-Policy" in page


def test_values_from_the_scorecard_are_escaped(scorecard: dict[str, Any]) -> None:
    evil = '<script>alert("x")</script>'
    scorecard["models"][evil] = scorecard["models"].pop("hardened")
    scorecard["models"][evil]["objective"] = "<b>pgd</b>"
    scorecard["run"]["name"] = 'x" onload="alert(1)'
    scorecard["run"]["command"] = "</code><img src=x>"
    scorecard["data"]["name"] = "<iframe>"
    scorecard["versions"]["torch"] = "<svg onload=alert(1)>"
    scorecard["warnings"][0]["model"] = evil
    scorecard["warnings"][0]["message"] = "<a href='https://evil.example'>click</a>"
    scorecard["warnings"][0]["code"] = "<i>code</i>"
    scorecard["threat"]["note"] = "<marquee>"
    scorecard["models"][evil]["attacks"]["<u>cw</u>"] = {"0.2": 0.5}

    page = render_html(scorecard)
    lowered = page.lower()
    for raw in (
        "<script",
        "<b>pgd",
        "<img src=x",
        "<iframe",
        "<svg",
        "<a href",
        "<i>code",
        "<marquee",
        "<u>cw",
        'x" onload',
    ):
        assert raw not in lowered, raw
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&lt;b&gt;pgd&lt;/b&gt;" in page
    assert "&lt;u&gt;cw&lt;/u&gt;" in page
    checker = _parse(page)
    assert checker.errors == [] and checker.stack == []
    assert all(u.startswith("data:image/png;base64,") for u in checker.urls)
    # the escaped text reads back as the original value
    assert evil in "".join(checker.text)


def test_model_without_training_is_noted_and_other_curves_remain(
    scorecard: dict[str, Any],
) -> None:
    del scorecard["models"]["baseline"]["training"]
    page = render_html(scorecard)
    training = _section(page, "training")
    assert "baseline: evaluated without training, so it has no training curves." in training
    assert "not trained in this run" in training
    assert len(_images(page)) == 2  # accuracy vs eps + hardened's curves
    summary_rows = re.findall(r"<tr>(.*?)</tr>", _section(page, "summary"), flags=re.S)
    assert '<td class="num missing">\u2014</td>' in summary_rows[1]  # no training time


def test_trained_model_without_history_is_noted(scorecard: dict[str, Any]) -> None:
    del scorecard["models"]["hardened"]["training"]["history"]
    page = render_html(scorecard)
    training = _section(page, "training")
    assert "hardened: no per-epoch history was recorded, so its curves are skipped." in training
    assert "1 min 01 s" in training  # the training time is still shown
    assert len(_images(page)) == 2


def test_no_history_at_all_skips_the_training_plot(scorecard: dict[str, Any]) -> None:
    for model in scorecard["models"].values():
        model["training"]["history"] = []
    page = render_html(scorecard)
    assert "No model has a training history; the curves are skipped." in page
    assert len(_images(page)) == 1


def test_missing_accuracy_vs_eps_skips_the_plot_with_a_note(scorecard: dict[str, Any]) -> None:
    for model in scorecard["models"].values():
        del model["accuracy_vs_eps"]
    page = render_html(scorecard)
    section = _section(page, "accuracy-vs-eps")
    assert "the plot is skipped" in section
    assert "<img" not in section
    assert len(_images(page)) == 1  # only the training curves


def test_one_model_without_accuracy_vs_eps_is_named(scorecard: dict[str, Any]) -> None:
    del scorecard["models"]["baseline"]["accuracy_vs_eps"]
    section = _section(render_html(scorecard), "accuracy-vs-eps")
    assert "<img" in section
    assert "No accuracy-against-\u03b5 curve for: baseline." in section


def test_no_warnings_says_so(scorecard: dict[str, Any]) -> None:
    scorecard["warnings"] = []
    warnings = _section(render_html(scorecard), "warnings")
    assert "No warnings." in warnings
    assert "<li>" not in warnings


def test_minimal_scorecard_renders() -> None:
    page = render_html({"models": {"m": {"clean_accuracy": 0.9712}}})
    checker = _parse(page)
    assert checker.errors == [] and checker.stack == []
    assert "97.1%" in page
    assert "No warnings." in page
    assert "unnamed run" in page
    assert _images(page) == []


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda s: s.__setitem__("models", ["baseline"]), "models"),
        (
            lambda s: s["models"]["baseline"].__setitem__("clean_accuracy", "97%"),
            "models.baseline.clean_accuracy",
        ),
        (
            lambda s: s["models"]["baseline"]["accuracy_vs_eps"]["per_attack"]["fgsm"].pop(),
            "models.baseline.accuracy_vs_eps.per_attack.fgsm",
        ),
        (lambda s: s.__setitem__("schema_version", 3), "schema_version"),
        (lambda s: s["threat"].__setitem__("bounds", [0.0]), "threat.bounds"),
        (lambda s: s.__setitem__("warnings", "oops"), "warnings"),
    ],
)
def test_malformed_scorecard_names_the_field(
    scorecard: dict[str, Any], mutate: Any, field: str
) -> None:
    mutate(scorecard)
    with pytest.raises(ScorecardError, match=re.escape(field)):
        render_html(scorecard)
