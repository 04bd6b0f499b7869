"""``bastion.load_model`` on a saved transformer directory returns the text classifier (the real
MiniLM from ../shared/models with a fresh head); on array-model files it returns the module."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import bastion
import shared_data
from bastion.models import BastionModel, ModelSpec, build_model
from bastion.text import Vocabulary
from bastion.text.transformer import (
    PooledEncoderClassifier,
    TransformerTextClassifier,
    load_pretrained_encoder,
    save_transformer_model,
)

MINILM = shared_data.MINILM


@pytest.mark.skipif(
    not (MINILM / "model.safetensors").exists(), reason="MiniLM not found beside the project"
)
def test_a_saved_transformer_directory_loads_as_its_text_classifier(tmp_path: Path) -> None:
    encoder, tok = load_pretrained_encoder(MINILM)
    model = PooledEncoderClassifier(
        copy.deepcopy(encoder),
        classes=("negative", "positive"),
        max_length=16,
        pad_id=tok.pad_token_id,
        generator=torch.Generator().manual_seed(0),
    )
    vocab = Vocabulary.build(["a great film", "an awful movie"], max_length=16)
    out = save_transformer_model(model, tok, tmp_path / "text-standard", vocabulary=vocab)
    loaded = bastion.load_model(out)
    assert isinstance(loaded, TransformerTextClassifier)
    assert not isinstance(loaded, torch.nn.Module)
    assert loaded.model.classes == ("negative", "positive")
    assert loaded.model.max_length == 16 and not loaded.model.training
    texts = ["a great film", "an awful , dull movie", "word " * 40]
    expected = TransformerTextClassifier(model, tok)(texts)
    probs = loaded(texts)
    assert probs.shape == (3, 2) and torch.allclose(probs, expected, atol=1e-5)
    assert loaded.sanitizer is None  # the guard's sanitiser is bastion serve's, not the loader's


def test_an_array_model_still_loads_as_a_module(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model: BastionModel = build_model(ModelSpec("mlp", (1, 4, 4), 3, (0.5,), (0.25,), {}))
    weights = bastion.save_model(model, tmp_path / "net")
    loaded = bastion.load_model(weights)
    assert isinstance(loaded, torch.nn.Module) and not loaded.training
    x = torch.rand(5, 1, 4, 4)
    assert torch.equal(loaded(x), model.eval()(x))


def test_a_broken_transformer_directory_names_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"architectures": ["BertModel"]}')
    with pytest.raises(bastion.ModelFileError, match=r"^model: .* has no model\.safetensors"):
        bastion.load_model(tmp_path)
