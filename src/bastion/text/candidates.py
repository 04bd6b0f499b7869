"""Substitution candidates for word-level attacks: a bundled synonym lexicon and embedding
neighbours (TextFooler, Jin et al., 2020, sec. 3.2: nearest neighbours above a cosine
threshold).

A candidate source is any callable ``word (lower-case core) -> list of replacement words``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from importlib import resources

import torch

from bastion.errors import AttackInputError
from bastion.text.sanitize import edits1, repair_rank
from bastion.text.vocab import Vocabulary

CandidateSource = Callable[[str], list[str]]


def _read_lexicon_file(name: str) -> list[str]:
    text = (
        resources.files("bastion.text")
        .joinpath("lexicon")
        .joinpath(name)
        .read_text(encoding="utf-8")
    )
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@lru_cache(maxsize=1)
def stop_words() -> frozenset[str]:
    """The bundled English stop-word list (``lexicon/stopwords.txt``)."""
    return frozenset(_read_lexicon_file("stopwords.txt"))


class SynonymLexicon:
    """Synonym groups; ``lexicon(word)`` lists the other members of every group holding ``word``.

    Args:
        groups: iterables of interchangeable words; ``None`` loads the bundled
            ``lexicon/synonyms.txt``.
    """

    def __init__(self, groups: Iterable[Iterable[str]] | None = None):
        if groups is None:
            groups = [line.split(",") for line in _read_lexicon_file("synonyms.txt")]
        table: dict[str, list[str]] = {}
        for group in groups:
            members = [w.strip().lower() for w in group if w.strip()]
            for w in members:
                bucket = table.setdefault(w, [])
                bucket.extend(m for m in members if m != w and m not in bucket)
        self._table: Mapping[str, list[str]] = table

    def __call__(self, word: str) -> list[str]:
        return list(self._table.get(word.lower(), ()))

    def __len__(self) -> int:
        return len(self._table)

    def words(self) -> list[str]:
        """Every word with at least one synonym."""
        return sorted(self._table)


class EmbeddingNeighbours:
    """Nearest vocabulary words by cosine similarity in an embedding matrix.

    Args:
        weight: ``(V, D)`` embedding matrix aligned with ``vocab`` (e.g. a trained model's
            ``embedding.weight``); copied and normalised once.
        vocab: the vocabulary indexing ``weight``.
        k: at most this many neighbours per word.
        min_cosine: neighbours need cosine similarity ``>= min_cosine``.

    Only alphabetic tokens are candidates; the special tokens never are.
    """

    def __init__(
        self, weight: torch.Tensor, vocab: Vocabulary, *, k: int = 15, min_cosine: float = 0.5
    ):
        if weight.ndim != 2 or weight.shape[0] != len(vocab):
            raise AttackInputError(
                f"weight: expected shape ({len(vocab)}, D) to match the vocabulary, got "
                f"{tuple(weight.shape)}"
            )
        if not -1.0 <= min_cosine <= 1.0:
            raise AttackInputError(f"min_cosine: expected a value in [-1, 1], got {min_cosine}")
        w = weight.detach().float().cpu()
        self._unit = w / w.norm(dim=1, keepdim=True).clamp_min(1e-8)
        allowed = torch.tensor([t.isalpha() for t in vocab.tokens], dtype=torch.bool)
        allowed[:2] = False
        self._allowed = allowed
        self.vocab = vocab
        self.k = k
        self.min_cosine = min_cosine
        self._cache: dict[str, list[str]] = {}

    def __call__(self, word: str) -> list[str]:
        word = word.lower()
        if word in self._cache:
            return list(self._cache[word])
        i = self.vocab.id_of(word)
        result: list[str] = []
        if i > 1:
            sims = self._unit @ self._unit[i]
            sims[~self._allowed] = -2.0
            sims[i] = -2.0
            top = torch.topk(sims, min(self.k, sims.numel()))
            result = [
                self.vocab.tokens[int(j)]
                for s, j in zip(top.values, top.indices, strict=True)
                if float(s) >= self.min_cosine
            ]
        self._cache[word] = result
        return list(result)

    def cosine(self, a: str, b: str) -> float:
        """Cosine similarity of two vocabulary words (``nan`` when either is unknown)."""
        i, j = self.vocab.id_of(a.lower()), self.vocab.id_of(b.lower())
        if i <= 1 or j <= 1:
            return float("nan")
        return float(self._unit[i] @ self._unit[j])


class TypoNeighbours:
    """Vocabulary words one typo away: ``source(word)`` lists the vocabulary words at
    Damerau-Levenshtein distance 1 from ``word`` (alphabetic, at least ``min_length`` letters),
    likeliest first by the spelling repair's ranking
    (:func:`bastion.text.sanitize.repair_rank`).

    These are what a character attack turns a word into for a word-level model behind the
    sanitiser: a typo that is itself a word, or that the repair maps to a neighbour of the
    original. Used as substitutes in A2T training and in smoothing noise
    (``text.hardening.typo_neighbours``), they teach the model to shrug off such swaps.
    """

    def __init__(self, vocab: Vocabulary, *, min_length: int = 3):
        self.vocab = vocab
        self.min_length = min_length

    def __call__(self, word: str) -> list[str]:
        w = word.lower()
        if len(w) < self.min_length or not w.isalpha():
            return []
        found = [
            c
            for c in edits1(w)
            if c != w and c in self.vocab and c.isalpha() and len(c) >= self.min_length
        ]
        return sorted(found, key=repair_rank(w, self.vocab), reverse=True)


class UnionCandidates:
    """Candidates of several sources, de-duplicated, in source order."""

    def __init__(self, *sources: CandidateSource):
        self.sources = sources

    def __call__(self, word: str) -> list[str]:
        seen: list[str] = []
        for source in self.sources:
            for c in source(word):
                if c not in seen and c != word.lower():
                    seen.append(c)
        return seen
