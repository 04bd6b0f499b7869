"""Bring your own transformer (examples/byo-model/train_transformer.py): a MiniLM checkpoint
fine-tuned by plain transformers code, saved in the Hugging Face layout, then loaded offline,
evaluated, attacked and served by bastion as a text target without touching bastion's code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import shared_data
from bastion.errors import ModelFileError
from bastion.guard.text_guard import TextGuard
from bastion.serve import load_service_guard
from bastion.text import InvisibleCharAttack, Sanitizer, WordSubstitution, load_text_dataset
from bastion.text.evaluation import clean_accuracy
from bastion.text.transformer import (
    SequenceClassifierModel,
    TransformerTextClassifier,
    load_transformer_model,
)

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "byo-model" / "train_transformer.py"
MR = shared_data.DATASETS / "movie_review_polarity"


@pytest.mark.slow
@pytest.mark.skipif(
    not (shared_data.MINILM / "model.safetensors").exists() or not MR.is_dir(),
    reason="MiniLM or Movie Review not found",
)
def test_a_team_fine_tuned_transformer_is_a_text_target(tmp_path: Path) -> None:
    out = tmp_path / "minilm-sentiment"
    subprocess.run(
        [
            *(sys.executable, str(SCRIPT), "--base", str(shared_data.MINILM), "--data", str(MR)),
            *("--out", str(out), "--texts", "192", "--epochs", "1"),
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )
    assert not list(out.glob("*.bin"))  # saved as safetensors
    loaded = load_transformer_model(out, max_length=48)
    assert isinstance(loaded.model, SequenceClassifierModel)
    assert loaded.model.classes == ("negative", "positive") and loaded.vocabulary is None
    clf = TransformerTextClassifier(loaded.model, loaded.tokenizer)
    test = load_text_dataset("movie_review", MR).test.subset(40)
    acc = clean_accuracy(clf, test.texts, test.labels)
    assert 0.0 <= acc <= 1.0
    guarded = TransformerTextClassifier(loaded.model, loaded.tokenizer, sanitizer=Sanitizer())
    texts, labels = list(test.texts[:8]), list(test.labels[:8])
    invisible = InvisibleCharAttack()
    gen = torch.Generator().manual_seed(1)
    bare = invisible(clf, texts, labels, generator=gen)
    shielded = invisible(guarded, texts, labels, generator=torch.Generator().manual_seed(1))
    assert shielded.success_rate == 0.0  # the sanitiser removes every inserted character
    assert bare.correct_before == shielded.correct_before
    word = WordSubstitution(ranking="gradient", max_share=0.3)(clf, texts, labels, generator=gen)
    for ok, before in zip(word.success, word.correct_before, strict=True):
        assert before or not ok
    guard, name = load_service_guard(out)
    assert isinstance(guard, TextGuard) and name == "minilm-sentiment"
    (d,) = guard.decide_texts(["a warm , funny and moving film"])
    assert d.verdict == "accept" and d.probabilities is not None


def test_a_checkpoint_with_only_pickled_weights_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"architectures": ["BertForSequenceClassification"]}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04 not unpickled")
    with pytest.raises(ModelFileError, match=r"^model: .*never loads pickles"):
        load_transformer_model(tmp_path)
    with pytest.raises(ModelFileError, match="never loads pickles"):
        TextGuard.from_file(tmp_path)


def test_load_model_points_a_transformer_directory_to_the_text_loader(tmp_path: Path) -> None:
    from bastion import load_model
    from bastion.models import load_model as load_array_model

    (tmp_path / "config.json").write_text('{"architectures": ["BertForSequenceClassification"]}')
    with pytest.raises(ModelFileError, match=r"^model: .* has no model\.safetensors"):
        load_model(tmp_path)  # read by the transformer loader, which names what is missing
    with pytest.raises(ModelFileError, match=r"not an array model: load it with bastion\.load"):
        load_array_model(tmp_path)
