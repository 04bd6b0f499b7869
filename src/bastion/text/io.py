"""Saving and loading text models: safetensors weights plus a JSON sidecar.

``save_text_model(model, vocab, "dir/text-hardened")`` writes ``dir/text-hardened.safetensors``
and ``dir/text-hardened.json``; the sidecar holds the :class:`TextModelSpec`, the full
:class:`Vocabulary` and free-form provenance metadata. Both files are written to temporary
names and renamed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bastion.errors import BastionError, ModelFileError
from bastion.text.models import TextModel, TextModelSpec, build_text_model
from bastion.text.vocab import Vocabulary

TEXT_MODEL_FORMAT = "bastion-text-model/1"


def _paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def save_text_model(
    model: TextModel,
    vocab: Vocabulary,
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write weights and sidecar; returns the ``.safetensors`` path."""
    if len(vocab) != model.spec.vocab_size:
        raise ModelFileError(
            f"{path}: vocabulary has {len(vocab)} tokens but the model expects "
            f"{model.spec.vocab_size}"
        )
    weights, sidecar = _paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp_w = weights.with_name(weights.name + ".tmp")
    save_file(state, str(tmp_w), metadata={"format": TEXT_MODEL_FORMAT})
    doc = {
        "format": TEXT_MODEL_FORMAT,
        "spec": model.spec.to_dict(),
        "vocab": vocab.to_dict(),
        "metadata": dict(metadata or {}),
    }
    tmp_s = sidecar.with_name(sidecar.name + ".tmp")
    tmp_s.write_text(json.dumps(doc, ensure_ascii=False, sort_keys=True), encoding="utf-8")
    os.replace(tmp_w, weights)
    os.replace(tmp_s, sidecar)
    return weights


def load_text_model(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[TextModel, Vocabulary, dict[str, Any]]:
    """Load ``(model in eval mode, vocabulary, metadata)`` saved by :func:`save_text_model`."""
    weights, sidecar = _paths(path)
    if not sidecar.is_file():
        raise ModelFileError(f"{sidecar}: text model sidecar not found")
    if not weights.is_file():
        raise ModelFileError(f"{weights}: text model weights not found")
    try:
        doc = json.loads(sidecar.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{sidecar}: invalid JSON ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != TEXT_MODEL_FORMAT:
        raise ModelFileError(f"{sidecar}: expected format {TEXT_MODEL_FORMAT!r}")
    try:
        spec = TextModelSpec.from_dict(doc["spec"])
        vocab = Vocabulary.from_dict(doc["vocab"])
    except (KeyError, TypeError, BastionError) as e:
        raise ModelFileError(f"{sidecar}: 'spec' or 'vocab' is invalid ({e})") from e
    if len(vocab) != spec.vocab_size:
        raise ModelFileError(f"{sidecar}: vocab has {len(vocab)} tokens, spec {spec.vocab_size}")
    model = build_text_model(spec)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{weights}: not a safetensors file ({e})") from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelFileError(f"{weights}: weights do not match the sidecar spec: {e}") from e
    metadata = doc.get("metadata", {})
    return model.to(device).eval(), vocab, dict(metadata) if isinstance(metadata, dict) else {}
