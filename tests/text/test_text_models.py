from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bastion.errors import ConfigError, ModelFileError
from bastion.text import (
    TextModelSpec,
    Vocabulary,
    build_text_model,
    load_text_model,
    save_text_model,
)


def _spec(arch: str, vocab_size: int = 30) -> TextModelSpec:
    return TextModelSpec(
        arch=arch,  # type: ignore[arg-type]
        vocab_size=vocab_size,
        num_classes=3,
        max_length=12,
        embed_dim=8,
        num_filters=4,
        hidden_size=5,
        hash_buckets=97,
    )


@pytest.mark.parametrize("arch", ["word_cnn", "bilstm", "ngram_bag"])
def test_forward_shapes_and_embedded_path(arch: str) -> None:
    model = build_text_model(_spec(arch), generator=torch.Generator().manual_seed(0)).eval()
    ids = torch.randint(0, 30, (4, 12), generator=torch.Generator().manual_seed(1))
    ids[:, 9:] = 0
    logits = model(ids)
    assert logits.shape == (4, 3) and logits.dtype == torch.float32
    torch.testing.assert_close(model.forward_embedded(model.embedding(ids), ids), logits)
    again = build_text_model(_spec(arch), generator=torch.Generator().manual_seed(0)).eval()
    torch.testing.assert_close(again(ids), logits)


def test_bilstm_output_depends_on_each_token() -> None:
    model = build_text_model(_spec("bilstm"), generator=torch.Generator().manual_seed(0)).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    other = torch.tensor([[5, 6, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    assert not torch.allclose(model(ids), model(other))


@pytest.mark.parametrize("arch", ["word_cnn", "bilstm", "ngram_bag"])
def test_save_load_round_trip(tmp_path: Path, arch: str) -> None:
    vocab = Vocabulary.build([" ".join(f"w{i}" for i in range(28))], max_length=12)
    model = build_text_model(_spec(arch, len(vocab)), generator=torch.Generator().manual_seed(0))
    path = save_text_model(model.eval(), vocab, tmp_path / "m", {"note": "x"})
    loaded, vocab2, meta = load_text_model(path)
    ids = vocab.encode(["w1 w2 w3 w27", "w5"])
    torch.testing.assert_close(loaded(ids), model(ids))
    assert vocab2 == vocab and meta == {"note": "x"}


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="sidecar not found"):
        load_text_model(tmp_path / "none")
    vocab = Vocabulary.build(["a b c"], max_length=12)
    model = build_text_model(_spec("word_cnn", len(vocab)))
    path = save_text_model(model, vocab, tmp_path / "m")
    path.write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="safetensors"):
        load_text_model(tmp_path / "m")
    with pytest.raises(ModelFileError, match="vocabulary has"):
        save_text_model(build_text_model(_spec("word_cnn", 99)), vocab, tmp_path / "x")


def test_spec_validation() -> None:
    with pytest.raises(ConfigError, match="arch"):
        _spec("transformer")
    with pytest.raises(ConfigError, match="widest filter"):
        TextModelSpec(arch="word_cnn", vocab_size=10, num_classes=2, max_length=2)
