"""A fine-tuned-layout transformer text model served over HTTP behind the text guard: empty
texts are refused, over-long texts answered from their first tokens and flagged, bad bodies
get 4xx, never a 5xx."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from serve_fixtures import AsgiClient

import shared_data
from bastion.serve import AuditLog, KeyStore, ServeSettings, load_service_guard
from bastion.serve.app import create_app
from bastion.text.transformer import (
    PooledEncoderClassifier,
    load_pretrained_encoder,
    save_transformer_model,
)

MINILM = shared_data.MINILM


@pytest.mark.skipif(not (MINILM / "model.safetensors").exists(), reason="MiniLM not found")
def test_transformer_run_is_served_behind_the_text_guard(tmp_path: Path) -> None:
    encoder, tok = load_pretrained_encoder(MINILM)
    model = PooledEncoderClassifier(
        encoder,
        classes=("ham", "spam"),
        max_length=24,
        pad_id=tok.pad_token_id,
        generator=torch.Generator().manual_seed(0),
    )
    save_transformer_model(model, tok, tmp_path / "run" / "models" / "text-hardened")
    guard, name = load_service_guard(tmp_path / "run")
    assert name == "text-hardened"
    app = create_app(
        guard,
        settings=ServeSettings(require_auth=False),
        audit=AuditLog(tmp_path / "audit.db"),
        keys=KeyStore(tmp_path / "keys.db"),
    )
    client = AsgiClient(app)
    try:
        r = client.post(
            "/v1/predict", json={"texts": ["win a free prize now", "", "word " * 600, "\u200b"]}
        )
        assert r.status_code == 200, r.text
        ok, empty, long, invisible = r.json()["predictions"]
        assert ok["verdict"] == "accept" and ok["class_name"] in ("ham", "spam")
        assert empty["verdict"] == "reject" and "empty" in empty["reasons"][0]
        assert long["verdict"] == "flag"
        assert long["reasons"] == ["model: read the first 24 of 602 tokens (truncated)"]
        assert invisible["verdict"] == "reject"
        for body, field in (({"text": 3}, "text"), ({"texts": []}, "texts")):
            bad = client.post("/v1/predict", json=body)
            assert bad.status_code == 422, (body, bad.text)
            assert bad.json()["field"] == field
    finally:
        client.close()
