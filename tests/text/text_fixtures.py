"""Helpers shared by the text tests: a tiny synthetic corpus and a keyword classifier."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

import shared_data as _shared_data
from bastion.text.classifier import TextClassifier
from bastion.text.models import TextModelSpec, build_text_model
from bastion.text.sanitize import Sanitizer
from bastion.text.training import TextTrainSettings, train_text_model
from bastion.text.vocab import Vocabulary, tokenize

ROOT = Path(__file__).resolve().parents[2]
DATASETS = _shared_data.DATASETS

POSITIVE = ("good", "great", "wonderful", "excellent", "charming")
NEGATIVE = ("bad", "awful", "boring", "dull", "terrible")
FILLER = ("the", "movie", "story", "was", "a", "and", "plot", "actors", "film", "really")


def synthetic_corpus(n: int, seed: int) -> tuple[list[str], list[int]]:
    """``n`` short sentences; label 1 when they hold a positive word, 0 for a negative one."""
    gen = torch.Generator().manual_seed(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = [FILLER[int(j)] for j in torch.randint(len(FILLER), (6,), generator=gen)]
        pool = POSITIVE if label else NEGATIVE
        for _ in range(2):
            k = int(torch.randint(len(pool), (1,), generator=gen))
            pos = int(torch.randint(len(words) + 1, (1,), generator=gen))
            words.insert(pos, pool[k])
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


class KeywordClassifier:
    """Black-box target: P(positive) from counts of known positive and negative words.

    A text without sentiment words is (narrowly) negative.

    Counts every text it is asked about in ``calls``.
    """

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        self.calls += len(texts)
        rows = []
        for text in texts:
            tokens = tokenize(text)
            score = sum(t in POSITIVE for t in tokens) - sum(t in NEGATIVE for t in tokens)
            p = torch.sigmoid(torch.tensor(2.0 * score - 0.1))
            rows.append(torch.stack([1 - p, p]))
        return torch.stack(rows) if rows else torch.zeros((0, 2))


def tiny_word_cnn_classifier(sanitizer: bool = False) -> TextClassifier:
    """A small word CNN trained for 2 epochs on :func:`synthetic_corpus` (160 texts, seed 0),
    optionally behind a sanitiser with spelling repair off."""
    texts, labels = synthetic_corpus(160, seed=0)
    vocab = Vocabulary.build([*texts, "fine terrific dreadful"], max_length=12)
    spec = TextModelSpec(
        arch="word_cnn",
        vocab_size=len(vocab),
        num_classes=2,
        max_length=12,
        embed_dim=16,
        num_filters=8,
        dropout=0.1,
    )
    model = build_text_model(spec, generator=torch.Generator().manual_seed(0))
    settings = TextTrainSettings(epochs=2, batch_size=16, lr=5e-3, seed=0)
    train_text_model(model, vocab.encode(texts), torch.tensor(labels), settings)
    guard = Sanitizer(vocabulary=vocab) if sanitizer else None
    return TextClassifier(model, vocab, sanitizer=guard)
