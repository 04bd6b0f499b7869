from __future__ import annotations

import json

import pytest

from bastion.errors import DataError
from bastion.text import PAD_ID, UNK_ID, Vocabulary, tokenize


def test_tokenize_lowercases_and_splits_punctuation() -> None:
    assert tokenize("Hello, World!") == ["hello", ",", "world", "!"]
    assert tokenize("Hello", lower=False) == ["Hello"]
    assert tokenize("fr\u200bee") == ["fr", "\u200b", "ee"]


def test_build_respects_min_count_and_max_size() -> None:
    texts = ["a a a b b c", "a b d"]
    vocab = Vocabulary.build(texts, max_length=5, min_count=2)
    assert vocab.tokens == ("<pad>", "<unk>", "a", "b")
    assert vocab.count_of("a") == 4
    small = Vocabulary.build(texts, max_length=5, max_size=3)
    assert small.tokens == ("<pad>", "<unk>", "a")


def test_encode_pads_truncates_and_maps_unknown() -> None:
    vocab = Vocabulary.build(["x y z"], max_length=3)
    ids = vocab.encode(["x q", "x y z x y", ""])
    assert ids.shape == (3, 3)
    assert ids[0].tolist() == [vocab.id_of("x"), UNK_ID, PAD_ID]
    assert ids[1].tolist() == [vocab.id_of("x"), vocab.id_of("y"), vocab.id_of("z")]
    assert ids[2].tolist() == [PAD_ID] * 3


def test_save_load_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    vocab = Vocabulary.build(["Ünïcode words here", "words"], max_length=7, lower=False)
    path = vocab.save(tmp_path / "v.json")
    assert Vocabulary.load(path) == vocab


def test_load_rejects_bad_documents(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match="format"):
        Vocabulary.load(bad)
    bad.write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json"):
        Vocabulary.load(bad)
    with pytest.raises(DataError, match="min_count"):
        Vocabulary.build(["a"], max_length=3, min_count=0)
