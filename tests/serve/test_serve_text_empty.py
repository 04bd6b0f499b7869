"""Empty texts and texts with nothing a model reads, sent over HTTP to a transformer (the real
MiniLM) and to a word model: each is rejected with its reason in a 200 answer (the other texts
of the batch are answered), a body without texts is a 422 naming the field, never a 5xx."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from serve_fixtures import AsgiClient

import shared_data
from bastion.serve import AuditLog, KeyStore, ServeSettings, load_service_guard
from bastion.serve.app import create_app
from bastion.text import TextModelSpec, Vocabulary, build_text_model, save_text_model
from bastion.text.transformer import (
    PooledEncoderClassifier,
    load_pretrained_encoder,
    save_transformer_model,
)

MINILM = shared_data.MINILM
BATCH = ["", "   \n\t", "\u200b\u200b", "\u0301", "\x00", "a fine film"]
REASONS = [
    "validation: empty text",
    "validation: empty text",
    "validation: empty after removing 2 invisible characters",
    "validation: nothing to classify (no word or token in the text)",
    "validation: nothing to classify (no word or token in the text)",
]


def _transformer_run(run: Path) -> None:
    encoder, tok = load_pretrained_encoder(MINILM)
    model = PooledEncoderClassifier(
        encoder,
        classes=("negative", "positive"),
        max_length=16,
        pad_id=tok.pad_token_id,
        generator=torch.Generator().manual_seed(0),
    )
    save_transformer_model(model, tok, run / "models" / "text-hardened")


def _word_run(run: Path) -> None:
    vocab = Vocabulary.build(["a fine film", "a dull film"], max_length=8, min_count=1)
    spec = TextModelSpec(
        arch="word_cnn",
        vocab_size=len(vocab),
        num_classes=2,
        max_length=8,
        embed_dim=8,
        num_filters=4,
        filter_sizes=(2,),
        classes=("negative", "positive"),
    )
    model = build_text_model(spec, generator=torch.Generator().manual_seed(0))
    save_text_model(model, vocab, run / "models" / "text-hardened", {})


def _post_all(run: Path, tmp_path: Path) -> list[Any]:
    guard, _ = load_service_guard(run)
    app = create_app(
        guard,
        settings=ServeSettings(require_auth=False),
        audit=AuditLog(tmp_path / "audit.db"),
        keys=KeyStore(tmp_path / "keys.db"),
    )
    client = AsgiClient(app)
    try:
        return [
            client.post("/v1/predict", json=body)
            for body in ({"texts": BATCH}, {"text": ""}, {"texts": []}, {"text": None})
        ]
    finally:
        client.close()


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(
            _transformer_run,
            id="transformer",
            marks=pytest.mark.skipif(
                not (MINILM / "model.safetensors").exists(), reason="MiniLM not found"
            ),
        ),
        pytest.param(_word_run, id="word_cnn"),
    ],
)
def test_empty_texts_are_rejected_with_their_reason_never_a_5xx(build: Any, tmp_path: Path) -> None:
    build(tmp_path / "run")
    batch, single, none, null = _post_all(tmp_path / "run", tmp_path)
    assert batch.status_code == 200, batch.text
    *rejected, answered = batch.json()["predictions"]
    for decision, reason in zip(rejected, REASONS, strict=True):
        assert decision["verdict"] == "reject" and decision["reasons"] == [reason]
        assert decision["label"] is None and decision["probabilities"] is None
    assert answered["verdict"] == "accept" and answered["label"] in (0, 1)
    assert single.status_code == 200
    assert single.json()["predictions"][0]["reasons"] == ["validation: empty text"]
    for bad, field in ((none, "texts"), (null, "text")):
        assert bad.status_code == 422, bad.text
        assert bad.json()["field"] == field
