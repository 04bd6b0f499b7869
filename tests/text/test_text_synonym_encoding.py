"""Tests for bastion.text.synonym_encoding and synonym codes inside text models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bastion.errors import ConfigError
from bastion.text import (
    SynonymLexicon,
    TextModelSpec,
    Vocabulary,
    build_text_model,
    load_text_model,
    save_text_model,
)
from bastion.text.synonym_encoding import synonym_codes

TEXTS = [
    "good good good great great fine movie film picture",
    "bad bad bad awful awful terrible movie film",
    "good movie",
]


def _vocab() -> Vocabulary:
    return Vocabulary.build(TEXTS, max_length=8)


def test_clusters_follow_candidates_and_frequency() -> None:
    vocab = _vocab()
    lex = SynonymLexicon([["good", "great", "fine"], ["bad", "awful", "terrible"]])
    enc = synonym_codes(vocab, lex)
    code = {t: vocab.tokens[int(enc.codes[vocab.id_of(t)])] for t in vocab.tokens[2:]}
    # the most frequent member represents its cluster
    assert code["great"] == code["fine"] == code["good"] == "good"
    assert code["awful"] == code["terrible"] == code["bad"] == "bad"
    # words without candidates and the special tokens keep their own ids
    assert code["movie"] == "movie" and code["picture"] == "picture"
    assert enc.codes[0] == 0 and enc.codes[1] == 1
    assert enc.covered_edges == 1.0 and enc.clusters == 2 and enc.largest == 3


def test_cluster_size_cap_is_respected() -> None:
    vocab = _vocab()
    chain = SynonymLexicon([["good", "great", "fine", "bad", "awful", "terrible"]])
    enc = synonym_codes(vocab, chain, max_cluster=2)
    _, counts = torch.unique(enc.codes, return_counts=True)
    assert int(counts.max()) == 2 and enc.largest == 2
    assert 0.0 < enc.covered_edges < 1.0
    with pytest.raises(ConfigError, match="max_cluster"):
        synonym_codes(vocab, chain, max_cluster=1)


def _spec(vocab: Vocabulary, codes: bool) -> TextModelSpec:
    return TextModelSpec(
        arch="word_cnn",
        vocab_size=len(vocab),
        num_classes=2,
        max_length=8,
        embed_dim=8,
        num_filters=4,
        filter_sizes=(2, 3),
        synonym_codes=codes,
    )


def test_model_with_codes_cannot_tell_cluster_members_apart(tmp_path: Path) -> None:
    vocab = _vocab()
    lex = SynonymLexicon([["good", "great", "fine"], ["bad", "awful", "terrible"]])
    model = build_text_model(_spec(vocab, True), generator=torch.Generator().manual_seed(0))
    model.set_codes(synonym_codes(vocab, lex).codes)
    model.eval()
    a, b, c = vocab.encode(["a great movie", "a fine movie", "a bad movie"])
    assert torch.equal(model(a[None]), model(b[None]))
    assert not torch.equal(model(a[None]), model(c[None]))
    # the codes travel with the weights
    loaded, _, _ = load_text_model(save_text_model(model, vocab, tmp_path / "m"))
    assert torch.equal(loaded(b[None]), model(b[None]))
    assert torch.equal(loaded.codes, model.codes)  # type: ignore[arg-type]


def test_set_codes_checks_its_input() -> None:
    vocab = _vocab()
    plain = build_text_model(_spec(vocab, False))
    with pytest.raises(ConfigError, match="synonym_codes"):
        plain.set_codes(torch.arange(len(vocab)))
    model = build_text_model(_spec(vocab, True))
    with pytest.raises(ConfigError, match="shape"):
        model.set_codes(torch.arange(len(vocab) + 1))
    with pytest.raises(ConfigError, match="vocabulary ids"):
        model.set_codes(torch.full((len(vocab),), len(vocab)))
