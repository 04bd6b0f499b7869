"""A text model behind the text guard, served over HTTP: validation, sanitisation flags
invisible-character and homoglyph attacks, and bad bodies get 4xx."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from serve_fixtures import AsgiClient

from bastion.guard.text_guard import TextGuard
from bastion.serve import AuditLog, KeyStore, ServeSettings, load_service_guard
from bastion.serve.app import create_app
from bastion.text import (
    TextModelSpec,
    TextTrainSettings,
    Vocabulary,
    build_text_model,
    save_text_model,
    train_text_model,
)

POS = ["good", "great", "fine", "lovely"]
NEG = ["bad", "awful", "poor", "dull"]


def _corpus() -> tuple[list[str], list[int]]:
    texts, labels = [], []
    for i in range(200):
        words = ["the", "film", "was", "really"]
        label = i % 2
        words.insert(i % 4, (POS if label else NEG)[i % 4])
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts, labels = _corpus()
    vocab = Vocabulary.build(texts, max_length=12, min_count=1, max_size=100, lower=True)
    spec = TextModelSpec(
        arch="word_cnn",
        vocab_size=len(vocab),
        num_classes=2,
        max_length=12,
        embed_dim=16,
        num_filters=8,
        filter_sizes=(2, 3),
        classes=("negative", "positive"),
    )
    model = build_text_model(spec, generator=torch.Generator().manual_seed(0))
    train_text_model(
        model,
        vocab.encode(texts),
        torch.tensor(labels),
        TextTrainSettings(epochs=15, batch_size=32, lr=1e-2, seed=0),
    )
    run = tmp_path_factory.mktemp("text-run")
    save_text_model(model, vocab, run / "models" / "text-hardened", {"classes": list(spec.classes)})
    return run


def test_text_run_is_served_behind_the_text_guard(text_run: Path, tmp_path: Path) -> None:
    guard, name = load_service_guard(text_run)
    assert isinstance(guard, TextGuard) and name == "text-hardened"
    app = create_app(
        guard,
        settings=ServeSettings(require_auth=False),
        audit=AuditLog(tmp_path / "audit.db"),
        keys=KeyStore(tmp_path / "keys.db"),
    )
    client = AsgiClient(app)
    try:
        ok = client.post("/v1/predict", json={"text": "the film was really great"})
        assert ok.status_code == 200, ok.text
        (pred,) = ok.json()["predictions"]
        assert pred["verdict"] == "accept" and pred["class_name"] == "positive"
        zw = "\u200b"
        attacked = f"the film was really g{zw}r{zw}eat"  # invisible characters
        homoglyph = "the film was really gr\u0435at"  # Cyrillic e
        r = client.post("/v1/predict", json={"texts": [attacked, homoglyph, "", "x" * 6000]})
        assert r.status_code == 200, r.text
        a, h, empty, long = r.json()["predictions"]
        assert a["verdict"] == "flag" and a["class_name"] == "positive"
        assert a["scores"]["invisible_chars"] == 2
        assert h["verdict"] == "flag" and h["class_name"] == "positive"
        assert empty["verdict"] == "reject" and "empty" in empty["reasons"][0]
        assert long["verdict"] == "reject" and "exceed" in long["reasons"][0]
        request_id = r.json()["request_id"]
        assert len(AuditLog(tmp_path / "audit.db").by_request(request_id)) == 4
        for body, field in (
            ({"text": 3}, "text"),
            ({"texts": ["a", 5]}, "texts[1]"),
            ({"input": [[0.0]]}, "input"),
            ({"texts": []}, "texts"),
        ):
            bad = client.post("/v1/predict", json=body)
            assert bad.status_code == 422, (body, bad.text)
            assert bad.json()["field"] == field
        lone = client.post(
            "/v1/predict",
            content=b'{"text": "bad \\ud800 surrogate"}',
            headers={"content-type": "application/json"},
        )
        assert lone.status_code == 200
        assert lone.json()["predictions"][0]["verdict"] == "reject"
    finally:
        client.close()


def test_invisible_families_long_words_and_empty_texts_over_http(
    text_run: Path, tmp_path: Path
) -> None:
    """Issue 18: Mongolian variation selectors, unassigned default-ignorable code points and
    hair spaces were answered ``accept``; a text of invisible characters was classified; a
    5000-letter word took 10 s (504)."""
    guard, _ = load_service_guard(text_run)
    app = create_app(
        guard,
        settings=ServeSettings(require_auth=False),
        audit=AuditLog(tmp_path / "audit.db"),
        keys=KeyStore(tmp_path / "keys.db"),
    )
    client = AsgiClient(app)
    try:
        texts = [f"the film was really g{c}re{c}at" for c in ("\u180b", "\U000e0080", "\u200a")]
        r = client.post("/v1/predict", json={"texts": [*texts, "\u200b\u2065\u180b", "a" * 5000]})
        assert r.status_code == 200, r.text
        *attacked, empty, long = r.json()["predictions"]
        for p in attacked:
            assert p["verdict"] == "flag" and p["class_name"] == "positive", p
            assert p["scores"]["invisible_chars"] == 2
        assert empty["verdict"] == "reject" and "empty" in empty["reasons"][0]
        assert long["verdict"] in ("accept", "flag")
    finally:
        client.close()
