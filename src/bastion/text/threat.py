"""The text threat model: which edits an attacker may make to a text, and how many.

A :class:`TextThreat` is the text channel's counterpart of :class:`~bastion.threat.ThreatModel`
(Lp arrays) and :class:`~bastion.tabular.threat.TabularThreat` (constrained rows): an edit
budget instead of an eps-ball. A text is a sequence of words separated by ASCII whitespace; an
adversarial text keeps the word count and edits at most ``max_edits(max_word_share, n)`` words
(``floor(share * n)``, at least one, the budget of every greedy text attack in bastion), at
most ``max_char_edits`` characters in all when that is set (the Levenshtein distance of each
edited word from the original, summed), each word with one of the allowed edit kinds:

* ``typo``: the word's core at Damerau-Levenshtein distance 1 (one swap, deletion, insertion or
  substitution of a letter; DeepWordBug, Gao et al. 2018);
* ``homoglyph``: letters replaced by Cyrillic/Greek look-alikes (Boucher et al. 2022);
* ``invisible``: invisible characters or in-word spaces inserted (Boucher et al. 2022);
* ``word``: the word replaced by any other word (TextFooler, Jin et al. 2020); the widest kind,
  so a threat allowing it allows every changed word.

:meth:`TextThreat.allows` checks one adversarial text; :meth:`TextThreat.enforce` reverts the
texts outside the threat to their originals (the text form of a projection), which a text
attack called with a threat does before its final check.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from bastion.errors import ConfigError
from bastion.text.unicode_tables import CONFUSABLE_TO_LATIN, OTHER_SPACES, is_invisible
from bastion.text.words import word_core

EditKind = Literal["typo", "homoglyph", "invisible", "word"]
EDIT_KINDS: tuple[EditKind, ...] = ("typo", "homoglyph", "invisible", "word")

_ASCII_SPACE = re.compile(r"[ \t\n\r\f\v]+")
_SPACES = frozenset(OTHER_SPACES)


def text_words(text: str) -> list[str]:
    """The words of ``text``, split on ASCII whitespace only (an inserted Unicode space stays
    inside the word it was put in)."""
    return [w for w in _ASCII_SPACE.split(text) if w]


def max_word_edits(share: float, n_words: int) -> int:
    """Words an edit budget of ``share`` allows in a text of ``n_words``: ``floor(share * n)``,
    at least 1."""
    return max(1, math.floor(share * n_words + 1e-9))


def _one_typo(a: str, b: str) -> bool:
    """Whether ``b`` is ``a`` with one swap, deletion, insertion or substitution."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        if len(diff) == 1:
            return True
        i = diff[0]
        return diff == [i, i + 1] and a[i] == b[i + 1] and a[i + 1] == b[i]
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def char_edits(a: str, b: str) -> int:
    """The Levenshtein distance of two words: insertions, deletions and substitutions of one
    character each."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        cur = [i]
        for j, cb in enumerate(b, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def edit_kind(original: str, adversarial: str) -> EditKind | None:
    """The narrowest kind of edit turning the word ``original`` into ``adversarial`` (None
    when they are equal): ``invisible``, ``homoglyph``, ``typo``, else ``word``."""
    if original == adversarial:
        return None
    if "".join(c for c in adversarial if not (is_invisible(c) or c in _SPACES)) == original:
        return "invisible"
    if "".join(CONFUSABLE_TO_LATIN.get(c, c) for c in adversarial) == original:
        return "homoglyph"
    (pre0, core0, post0), (pre1, core1, post1) = word_core(original), word_core(adversarial)
    if (pre0, post0) == (pre1, post1) and _one_typo(core0, core1):
        return "typo"
    return "word"


@dataclass(frozen=True)
class TextThreat:
    """An edit budget over texts (see the module docs).

    Attributes:
        max_word_share: at most this share of a text's words is edited (at least one word),
            in ``(0, 1]``.
        edits: the allowed edit kinds, a non-empty subset of :data:`EDIT_KINDS`.
        max_char_edits: at most this many characters edited in all (:func:`char_edits` of the
            edited words, summed), an integer >= 1; None: no bound beyond the words'.

    Guarantees: :meth:`enforce` returns texts that :meth:`allows` accepts.
    """

    max_word_share: float = 0.3
    edits: tuple[EditKind, ...] = EDIT_KINDS
    max_char_edits: int | None = None

    def __post_init__(self) -> None:
        share = self.max_word_share
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
            raise ConfigError(f"threat.max_word_share: expected a number in (0, 1], got {share!r}")
        edits = tuple(self.edits) if isinstance(self.edits, list | tuple) else None
        if not edits or any(e not in EDIT_KINDS for e in edits):
            raise ConfigError(
                f"threat.edits: expected kinds from {', '.join(EDIT_KINDS)}, got {self.edits!r}"
            )
        chars = self.max_char_edits
        if chars is not None and (
            isinstance(chars, bool) or not isinstance(chars, int) or chars < 1
        ):
            raise ConfigError(
                f"threat.max_char_edits: expected an integer >= 1 or null, got {chars!r}"
            )
        object.__setattr__(self, "max_word_share", float(share))
        object.__setattr__(self, "edits", tuple(dict.fromkeys(edits)))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TextThreat:
        """Build from a mapping (a parsed YAML section); unknown keys are an error."""
        unknown = sorted(set(d) - {"max_word_share", "edits", "max_char_edits"})
        if unknown:
            raise ConfigError(
                f"threat: unknown field(s) {unknown}; expected max_word_share, edits, "
                "max_char_edits"
            )
        edits = d.get("edits", EDIT_KINDS)
        return cls(
            max_word_share=d.get("max_word_share", 0.3),
            edits=cast(tuple[EditKind, ...], tuple(edits) if isinstance(edits, list) else edits),
            max_char_edits=d.get("max_char_edits"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": "text",
            "max_word_share": self.max_word_share,
            "edits": list(self.edits),
            "max_char_edits": self.max_char_edits,
        }

    def budget(self, text: str) -> int:
        """How many words of ``text`` may be edited."""
        return max_word_edits(self.max_word_share, len(text_words(text)))

    def allows(self, original: str, adversarial: str) -> bool:
        """Whether ``adversarial`` lies within the threat around ``original``: the same number
        of words, at most :meth:`budget` of them edited, each edit of an allowed kind, at most
        ``max_char_edits`` characters edited."""
        before, after = text_words(original), text_words(adversarial)
        if len(before) != len(after):
            return False
        pairs = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
        if len(pairs) > self.budget(original):
            return False
        chars = sum(char_edits(a, b) for a, b in pairs)
        if self.max_char_edits is not None and chars > self.max_char_edits:
            return False
        kinds = [edit_kind(a, b) for a, b in pairs]
        return "word" in self.edits or all(k in self.edits for k in kinds)

    def enforce(self, originals: Sequence[str], adversarial: Sequence[str]) -> list[str]:
        """``adversarial`` with each text outside the threat replaced by its original."""
        return [
            adv if self.allows(orig, adv) else orig
            for orig, adv in zip(originals, adversarial, strict=True)
        ]
