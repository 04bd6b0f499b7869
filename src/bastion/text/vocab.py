"""Tokenisation and the word vocabulary of the text channel.

:func:`tokenize` lower-cases (optionally) and splits a text into words and single punctuation
marks. :class:`Vocabulary` maps tokens to ids (``0`` is padding, ``1`` the unknown word), is
built from training texts with a minimum count and a maximum size, encodes batches of texts to
``(N, max_length)`` int64 ids and round-trips through JSON.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bastion.errors import DataError

PAD = "<pad>"
UNK = "<unk>"
PAD_ID = 0
UNK_ID = 1
VOCAB_FORMAT = "bastion-vocab/1"

# A run of word characters, or any single character that is neither a word character nor space.
# Invisible format characters (zero-width space, bidi controls) fall in the second class, so a
# word with one inserted splits into pieces the vocabulary has never seen.
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str, *, lower: bool = True) -> list[str]:
    """Split ``text`` into word tokens and single punctuation tokens (lower-cased if ``lower``)."""
    if lower:
        text = text.lower()
    return _TOKEN_RE.findall(text)


@dataclass(frozen=True)
class Vocabulary:
    """Token <-> id table with counts from the training data.

    Attributes:
        tokens: id -> token; ``tokens[0] == "<pad>"``, ``tokens[1] == "<unk>"``.
        counts: training-set count of each token (0 for the two special tokens).
        max_length: texts are truncated or right-padded to this many tokens by :meth:`encode`.
        lower: whether :meth:`encode` lower-cases before tokenising.
    """

    tokens: tuple[str, ...]
    counts: tuple[int, ...]
    max_length: int
    lower: bool = True
    _index: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.tokens[:2] != (PAD, UNK):
            raise DataError(f"vocabulary: tokens: expected to start with {PAD!r}, {UNK!r}")
        if len(self.counts) != len(self.tokens):
            raise DataError(
                f"vocabulary: counts: expected {len(self.tokens)} values, got {len(self.counts)}"
            )
        if len(set(self.tokens)) != len(self.tokens):
            raise DataError("vocabulary: tokens: expected distinct tokens")
        if isinstance(self.max_length, bool) or self.max_length < 1:
            raise DataError(f"vocabulary: max_length: expected >= 1, got {self.max_length!r}")
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.tokens)})

    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        *,
        max_length: int,
        min_count: int = 1,
        max_size: int | None = None,
        lower: bool = True,
    ) -> Vocabulary:
        """Build from training texts: tokens seen ``>= min_count`` times, most frequent first.

        Ties in count are broken alphabetically, so the result does not depend on text order.
        ``max_size`` bounds the total size including the two special tokens.
        """
        if isinstance(min_count, bool) or min_count < 1:
            raise DataError(f"vocabulary: min_count: expected >= 1, got {min_count!r}")
        if max_size is not None and (isinstance(max_size, bool) or max_size < 3):
            raise DataError(f"vocabulary: max_size: expected >= 3 or None, got {max_size!r}")
        counter: Counter[str] = Counter()
        for text in texts:
            counter.update(tokenize(text, lower=lower))
        kept = sorted(
            ((t, c) for t, c in counter.items() if c >= min_count and t not in (PAD, UNK)),
            key=lambda tc: (-tc[1], tc[0]),
        )
        if max_size is not None:
            kept = kept[: max_size - 2]
        return cls(
            tokens=(PAD, UNK, *(t for t, _ in kept)),
            counts=(0, 0, *(c for _, c in kept)),
            max_length=max_length,
            lower=lower,
        )

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and token in self._index

    def id_of(self, token: str) -> int:
        """The id of ``token`` (``UNK_ID`` when absent)."""
        return self._index.get(token, UNK_ID)

    def count_of(self, token: str) -> int:
        """Training count of ``token`` (0 when absent)."""
        i = self._index.get(token)
        return 0 if i is None else self.counts[i]

    def ids(self, text: str) -> list[int]:
        """Untruncated ids of one text."""
        return [self._index.get(t, UNK_ID) for t in tokenize(text, lower=self.lower)]

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """``(N, max_length)`` int64 ids: truncated at ``max_length``, right-padded with 0."""
        out = torch.zeros((len(texts), self.max_length), dtype=torch.int64)
        for row, text in enumerate(texts):
            ids = self.ids(text)[: self.max_length]
            if ids:
                out[row, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (see :meth:`from_dict`)."""
        return {
            "format": VOCAB_FORMAT,
            "tokens": list(self.tokens),
            "counts": list(self.counts),
            "max_length": self.max_length,
            "lower": self.lower,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Vocabulary:
        """Inverse of :meth:`to_dict`; raises :class:`DataError` for a malformed document."""
        if doc.get("format") != VOCAB_FORMAT:
            raise DataError(
                f"vocabulary: format: expected {VOCAB_FORMAT!r}, got {doc.get('format')!r}"
            )
        try:
            tokens = tuple(str(t) for t in doc["tokens"])
            counts = tuple(int(c) for c in doc["counts"])
            max_length = int(doc["max_length"])
            lower = bool(doc["lower"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"vocabulary: incomplete document ({e!r})") from e
        return cls(tokens=tokens, counts=counts, max_length=max_length, lower=lower)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the vocabulary as JSON (atomic rename); returns the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Vocabulary:
        """Read a vocabulary written by :meth:`save`."""
        p = Path(path)
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{p}: not a vocabulary file ({e})") from e
        if not isinstance(doc, dict):
            raise DataError(f"{p}: not a vocabulary file (expected a JSON object)")
        return cls.from_dict(doc)
