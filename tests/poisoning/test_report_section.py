"""The poisoning section of the report and the model card, on hand-made channels: what is
shown, what is escaped, and that a malformed channel renders instead of raising."""

from __future__ import annotations

import base64
import io
from types import SimpleNamespace

from PIL import Image

from bastion.report.poisoning_section import poisoning_markdown, render_poisoning_section


def _png() -> str:
    buf = io.BytesIO()
    Image.new("L", (4, 2), 128).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


CHANNEL = {
    "n_scanned": 1000,
    "n_quarantined": 52,
    "n_trained_on": 948,
    "quarantine_file": "quarantine.json",
    "poison_fraction_quarantined": 0.052,
    "backdoor_attack_success": 0.013,
    "attack": {"attack": "badnets", "n": 1000, "n_poisoned": 50},
    "detection": {"quarantine": {"precision": 0.96, "recall": 1.0, "clean_flagged_rate": 0.002}},
    "score_histograms": {
        "activation-clustering": {
            "edges": [0.0, 0.5, 1.0],
            "kept": [940, 8],
            "quarantined": [0, 52],
        }
    },
    "quarantine_table": [
        {"index": 7, "label": 0, "reasons": ["activation-clustering"], "scores": {"ac": 0.9}}
    ],
    "models": {
        "<b>baseline</b>": {
            "attack_success_rate": 0.013,
            "neural_cleanse": {
                "flagged": False,
                "target": None,
                "anomaly_index": 1.2,
                "trigger_png_base64": _png(),
            },
            "strip": {"false_positive_rate": 0.01, "detection_rate": 0.0},
        }
    },
}


def test_section_shows_histogram_trigger_and_tables_escaped():
    page = render_poisoning_section(SimpleNamespace(channels={"poisoning": CHANNEL}))
    assert page.startswith('<section id="poisoning">') and page.endswith("</section>")
    assert page.count("<svg") == 1 and 'fill="#c0392b"' in page  # the quarantined bars
    assert page.count("data:image/png;base64,") == 1
    assert "&lt;b&gt;baseline&lt;/b&gt;" in page and "<b>baseline" not in page
    assert "5.2%" in page and "1.3%" in page and "quarantine.json" in page
    card = "\n".join(poisoning_markdown({"poisoning": CHANNEL}))
    assert "## Training data poisoning" in card and "quarantined 52 (5.2%)" in card
    assert "Neural Cleanse clean (anomaly index 1.20)" in card


def test_malformed_channel_renders_without_raising_and_without_images():
    bad = {
        **CHANNEL,
        "poison_fraction_quarantined": "lots",
        "score_histograms": {"x": {"kept": "no", "quarantined": None}},
        "quarantine_table": ["not a mapping"],
        "models": {"m": {"neural_cleanse": {"trigger_png_base64": "bm90IGEgcG5n"}}, "n": 3},
    }
    page = render_poisoning_section(SimpleNamespace(channels={"poisoning": bad}))
    assert "data:image/png" not in page and "<svg" not in page
    assert "\u2014" in page  # the unreadable fraction shows as missing
    assert render_poisoning_section(SimpleNamespace(channels={})) == ""
    assert poisoning_markdown({}) == []
