"""The text guard: invisible characters of every family are removed and flagged, a text of
nothing but invisible characters is rejected, and one request's work is bounded."""

from __future__ import annotations

import random
import time
import tracemalloc

import pytest
import torch

from bastion.errors import ConfigError
from bastion.guard.text_guard import TextGuard
from bastion.text import (
    TextModelSpec,
    TextTrainSettings,
    Vocabulary,
    build_text_model,
    train_text_model,
)
from bastion.text.unicode_tables import (
    INVISIBLE_FAMILIES,
    NARROW_SPACES,
    OTHER_SPACES,
    family_characters,
)

POS = ["good", "great", "fine", "lovely"]
NEG = ["bad", "awful", "poor", "dull"]


@pytest.fixture(scope="module")
def guard() -> TextGuard:
    texts, labels = [], []
    for i in range(200):
        words = ["the", "film", "was", "really"]
        label = i % 2
        words.insert(i % 4, (POS if label else NEG)[i % 4])
        texts.append(" ".join(words))
        labels.append(label)
    vocab = Vocabulary.build(texts, max_length=12)
    spec = TextModelSpec(
        arch="word_cnn",
        vocab_size=len(vocab),
        num_classes=2,
        max_length=12,
        embed_dim=16,
        num_filters=8,
        filter_sizes=(2, 3),
    )
    model = build_text_model(spec, generator=torch.Generator().manual_seed(0))
    settings = TextTrainSettings(epochs=6, batch_size=32, lr=1e-2, seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only contend
    try:
        train_text_model(model, vocab.encode(texts), torch.tensor(labels), settings)
    finally:
        torch.set_num_threads(threads)
    return TextGuard(model, vocab, ("negative", "positive"))


def _samples() -> list[tuple[str, str]]:
    """(family, character): the first, middle and last code point of every family range."""
    return [
        (family, chr(cp))
        for family in INVISIBLE_FAMILIES
        for lo, hi in family_characters(family)
        for cp in sorted({lo, (lo + hi) // 2, hi})
    ]


def test_every_invisible_family_is_removed_and_flagged(guard: TextGuard) -> None:
    clean = guard.decide_texts(["the film was really lovely"])[0]
    assert clean.verdict == "accept" and clean.label == 1
    samples = _samples()
    attacked = [f"the film was really lo{ch}ve{ch}ly" for _, ch in samples]
    for (family, ch), d in zip(samples, guard.decide_texts(attacked), strict=True):
        where = f"{family} U+{ord(ch):04X}"
        assert d.verdict == "flag", where
        assert d.label == clean.label and d.probabilities == pytest.approx(clean.probabilities)
        assert d.scores["invisible_chars"] == 2.0, where
        assert any("invisible" in r for r in d.reasons), where


def test_wide_space_between_words_is_a_word_break_not_a_flag(guard: TextGuard) -> None:
    plain = guard.decide_texts(["the film was really lovely"])[0]
    # narrow spaces are removed wherever they sit inside a word; wide ones only when they split
    # a vocabulary word ("thefilm" is not one)
    for ch in OTHER_SPACES:
        d = guard.decide_texts([f"the{ch}film was really lovely"])[0]
        if ch in NARROW_SPACES:
            assert d.verdict == "flag" and d.scores["invisible_chars"] == 1.0
        else:
            assert d.verdict == "accept" and d.scores["invisible_chars"] == 0.0
            assert d.probabilities == pytest.approx(plain.probabilities)


def test_text_of_only_invisible_characters_is_rejected_as_empty(guard: TextGuard) -> None:
    texts = ["\u200b\u200b", "\u180b\U000e0080\u2065", "\u3164 \u200d", "\ufe0f"]
    for d in guard.decide_texts(texts):
        assert d.verdict == "reject" and d.label is None
        assert d.reasons and "empty" in d.reasons[0]
    ok = guard.decide_texts(["\u200bthe film was really lovely\u200b"])[0]
    assert ok.verdict == "flag" and ok.label == 1


def _long_word_texts() -> list[str]:
    gen = random.Random(0)
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < 5000:
        words.append("".join(gen.choice("bcdfghjklmnpqrstvwxz") for _ in range(gen.randint(3, 9))))
    return ["a" * 5000, " ".join(words)[:5000], ("go\u2009od " * 1000)[:5000]]


def test_one_request_costs_under_a_second_and_100_mib(guard: TextGuard) -> None:
    """Before the caps ``"a" * 5000`` took 10 s and 1.3 GB in the spelling repair."""
    for text in _long_word_texts():
        guard.sanitizer._repairs.clear()
        t0 = time.process_time()
        (d,) = guard.decide_texts([text])
        assert time.process_time() - t0 < 1.0
        assert d.verdict in ("accept", "flag")
        guard.sanitizer._repairs.clear()
        tracemalloc.start()
        try:
            guard.decide_texts([text])
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 100 * 2**20


def test_a_full_batch_of_worst_texts_is_bounded_by_the_call_budget(guard: TextGuard) -> None:
    """The repair budget is one per call, split among its texts: 64 texts of 5000 characters of
    distinct unknown words cost well under a second together (0.1-0.2 s here; 256 such texts,
    the service's largest batch, 0.4-0.6 s)."""
    texts = [_long_word_texts()[1] for _ in range(64)]
    gen = random.Random(1)
    texts = ["".join(gen.sample(t, len(t))) for t in texts]  # all different
    guard.sanitizer._repairs.clear()
    t0 = time.process_time()
    decisions = guard.decide_texts(texts)
    spent = time.process_time() - t0
    assert spent < 1.0, spent
    assert len(decisions) == 64 and all(d.verdict in ("accept", "flag") for d in decisions)


def test_repair_budget_setting_is_checked(guard: TextGuard) -> None:
    with pytest.raises(ConfigError, match="max_repair_work"):
        TextGuard(guard.classifier.model, guard.classifier.vocab, ("n", "p"), max_repair_work=-1)
    # no budget: typos stay typos ("lovley" is not repaired), invisible characters still go
    bare = TextGuard(guard.classifier.model, guard.classifier.vocab, ("n", "p"), max_repair_work=0)
    (d,) = bare.decide_texts(["the film was really lov\u200bley"])
    assert d.verdict == "flag" and d.scores["invisible_chars"] == 1.0
    assert bare.sanitizer.clean("lovley", repair_work=0).text == "lovley"
    assert guard.sanitizer.clean("lovley").text == "lovely"
