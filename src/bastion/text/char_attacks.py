"""Character-level attacks: typos (DeepWordBug), homoglyphs and invisible characters.

- :class:`DeepWordBug` (Gao et al., 2018): score words by Replace-1 or leave-one-out, then
  perturb the most important ones with one typo each: swap two adjacent letters, delete a
  letter, insert a letter, or substitute a keyboard neighbour.
- :class:`HomoglyphAttack`: replace Latin letters of important words by Cyrillic/Greek
  look-alikes (Boucher et al., 2022, "Bad Characters").
- :class:`InvisibleCharAttack`: insert characters that render as nothing inside important words
  (Boucher et al., 2022), drawn from every family of them: zero-width and bidi controls, other
  default-ignorable format characters, variation selectors, fillers, reserved (unassigned)
  default-ignorable code points, private-use code points and narrow spaces.

Each is registered in the text channel of the attack registry
(:mod:`bastion.attacks.registry`, ``channel="text"``) with its settings model, so configs and
:func:`bastion.text.attack_base.build_text_attack` reach it by name (``deepwordbug``,
``homoglyph``, ``invisible``).

All three turn a known word into tokens a word-level vocabulary has never seen (``<unk>``),
which is why they work against word models and why the sanitiser undoes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field

from bastion.attacks.registry import register
from bastion.attacks.settings import AttackSettings
from bastion.errors import AttackInputError
from bastion.text.attack_base import Ranking, TextAttack, _Example, max_edits
from bastion.text.classifier import ProbaFn
from bastion.text.unicode_tables import (
    HOMOGLYPHS,
    INVISIBLE_FAMILIES,
    InvisibleFamily,
    family_character,
    family_members,
    family_size,
)
from bastion.text.words import word_core

_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
TypoOp = Literal["swap", "delete", "insert", "substitute"]
TYPO_OPS: tuple[TypoOp, ...] = ("swap", "delete", "insert", "substitute")

_SHARE = "at most this share of the words is edited (at least one word)"
_SCORING = "word ranking: replace (Replace-1), delete (leave-one-out), gradient, none"


class DeepWordBugSettings(AttackSettings):
    """Settings of :class:`DeepWordBug`."""

    max_share: float = Field(default=0.3, gt=0, le=1, description=_SHARE)
    scoring: Ranking = Field(default="replace", description=_SCORING)
    ops: tuple[TypoOp, ...] = Field(
        default=TYPO_OPS,
        strict=False,
        min_length=1,
        description="typo kinds tried for each word (one candidate per kind)",
        json_schema_extra={
            "type": "list of swap, delete, insert, substitute",
            "expected": "a non-empty list of swap, delete, insert, substitute",
        },
    )
    min_length: int = Field(default=3, ge=1, description="words with a shorter core are kept")


class HomoglyphSettings(AttackSettings):
    """Settings of :class:`HomoglyphAttack`."""

    max_share: float = Field(default=0.3, gt=0, le=1, description=_SHARE)
    scoring: Ranking = Field(default="delete", description=_SCORING)
    min_length: int = Field(default=2, ge=1, description="words with a shorter core are kept")


class InvisibleSettings(AttackSettings):
    """Settings of :class:`InvisibleCharAttack`."""

    family: InvisibleFamily = Field(
        default="all", description="where the inserted characters come from (all: every family)"
    )
    characters: tuple[str, ...] | None = Field(
        default=None,
        strict=False,
        min_length=1,
        description="exact single characters to insert instead of a family",
        json_schema_extra={
            "type": "list of characters or null",
            "expected": "a non-empty list of single characters or null",
        },
    )
    max_share: float = Field(default=1.0, gt=0, le=1, description=_SHARE)
    scoring: Ranking = Field(default="delete", description=_SCORING)
    min_length: int = Field(default=2, ge=1, description="words with a shorter core are kept")


def _keyboard_neighbours() -> dict[str, str]:
    pos = {ch: (r, c) for r, row in enumerate(_KEYBOARD_ROWS) for c, ch in enumerate(row)}
    out: dict[str, str] = {}
    for ch, (r, c) in pos.items():
        near = [
            other
            for other, (r2, c2) in pos.items()
            if other != ch and abs(r - r2) <= 1 and abs(c - c2) <= 1
        ]
        out[ch] = "".join(near)
    return out


KEYBOARD_NEIGHBOURS = _keyboard_neighbours()


def _randint(high: int, generator: torch.Generator) -> int:
    return int(torch.randint(high, (1,), generator=generator))


def typo(word: str, op: str, generator: torch.Generator) -> str:
    """One typo of kind ``op`` (one of :data:`TYPO_OPS`) at a random position of ``word``.

    The first and last letters are kept where the word is long enough (readers skim them).
    """
    n = len(word)
    lo, hi = (1, n - 1) if n > 3 else (0, n)
    if op == "swap":
        if n < 2:
            return word
        a, b = (lo, hi - 1) if hi - lo >= 2 else (0, n - 1)
        i = a + _randint(max(1, b - a), generator)
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if op == "delete":
        if n < 2:
            return word
        i = lo + _randint(max(1, hi - lo), generator)
        return word[:i] + word[i + 1 :]
    if op == "insert":
        i = lo + _randint(max(1, hi - lo + 1), generator)
        near = KEYBOARD_NEIGHBOURS.get(word[min(i, n - 1)].lower(), "e") if n else "e"
        return word[:i] + near[_randint(len(near), generator)] + word[i:]
    if op == "substitute":
        i = lo + _randint(max(1, hi - lo), generator)
        options = KEYBOARD_NEIGHBOURS.get(word[i].lower())
        if not options:
            return word
        ch = options[_randint(len(options), generator)]
        return word[:i] + (ch.upper() if word[i].isupper() else ch) + word[i + 1 :]
    raise AttackInputError(f"typo: op: expected one of {TYPO_OPS}, got {op!r}")


def _eligible(words: Sequence[str], min_length: int) -> list[int]:
    out = []
    for i, w in enumerate(words):
        core = word_core(w)[1]
        if len(core) >= min_length and any(ch.isalnum() for ch in core):
            out.append(i)
    return out


def _check_share(max_share: float) -> float:
    if not 0.0 < max_share <= 1.0:
        raise AttackInputError(f"max_share: expected 0 < max_share <= 1, got {max_share!r}")
    return float(max_share)


@register("deepwordbug", knowledge="score-based", settings=DeepWordBugSettings, channel="text")
class DeepWordBug(TextAttack):
    """DeepWordBug (Gao et al., 2018): important words get one typo each.

    Args:
        max_share: at most this share of the words is edited (at least one word).
        scoring: ``"replace"`` (Replace-1) or ``"delete"`` (leave-one-out) word scores, or
            ``"gradient"`` for a white-box ranking.
        ops: typo kinds tried for each word (one candidate per kind).
        min_length: words with a shorter core are left alone.
    """

    def __init__(
        self,
        *,
        max_share: float = 0.3,
        scoring: Ranking = "replace",
        ops: Sequence[str] = TYPO_OPS,
        min_length: int = 3,
    ):
        self.max_share = _check_share(max_share)
        self.scoring: Ranking = scoring
        for op in ops:
            if op not in TYPO_OPS:
                raise AttackInputError(f"ops: expected kinds from {TYPO_OPS}, got {op!r}")
        self.ops = tuple(ops)
        self.min_length = min_length

    def _attack_words(
        self, ex: _Example, classifier: ProbaFn, generator: torch.Generator
    ) -> list[str]:
        order = self.rank_words(ex, classifier, _eligible(ex.words, self.min_length), self.scoring)

        def propose(word: str) -> list[str]:
            pre, core, post = word_core(word)
            out = []
            for op in self.ops:
                cand = pre + typo(core, op, generator) + post
                if cand != word and cand not in out:
                    out.append(cand)
            return out

        return self.greedy(ex, order, propose, max_edits(self.max_share, len(ex.words)))


@register("homoglyph", knowledge="score-based", settings=HomoglyphSettings, channel="text")
class HomoglyphAttack(TextAttack):
    """Replace letters of important words by Cyrillic/Greek confusables.

    Two candidates per word: one random confusable letter replaced, and every confusable
    letter replaced.
    """

    def __init__(self, *, max_share: float = 0.3, scoring: Ranking = "delete", min_length: int = 2):
        self.max_share = _check_share(max_share)
        self.scoring: Ranking = scoring
        self.min_length = min_length

    def _attack_words(
        self, ex: _Example, classifier: ProbaFn, generator: torch.Generator
    ) -> list[str]:
        eligible = [
            i
            for i in _eligible(ex.words, self.min_length)
            if any(ch in HOMOGLYPHS for ch in word_core(ex.words[i])[1])
        ]
        order = self.rank_words(ex, classifier, eligible, self.scoring)

        def propose(word: str) -> list[str]:
            pre, core, post = word_core(word)
            spots = [j for j, ch in enumerate(core) if ch in HOMOGLYPHS]
            if not spots:
                return []
            j = spots[_randint(len(spots), generator)]
            glyphs = HOMOGLYPHS[core[j]]
            one = core[:j] + glyphs[_randint(len(glyphs), generator)] + core[j + 1 :]
            every = "".join(HOMOGLYPHS[ch][0] if ch in HOMOGLYPHS else ch for ch in core)
            return list(dict.fromkeys([pre + one + post, pre + every + post]))

        return self.greedy(ex, order, propose, max_edits(self.max_share, len(ex.words)))


@register("invisible", knowledge="score-based", settings=InvisibleSettings, channel="text")
class InvisibleCharAttack(TextAttack):
    """Insert invisible characters inside words.

    A word-level tokenizer splits the word at the inserted character, or sees an unknown word;
    the pieces may still be known words, so besides one mid-word insertion per character the
    attack also tries that character between every pair of letters.

    Args:
        family: where the characters come from: one of ``INVISIBLE_FAMILIES`` (see
            :func:`bastion.text.unicode_tables.family_characters`) or ``"all"``. For each word
            and each single family it stands for (``"all"``: every one, in a random order), one
            character is drawn uniformly from the family with the attack's generator, giving two
            candidates (mid-word, and between every pair of letters).
        characters: instead of a family, these exact characters, one mid-word candidate each
            and the first between every pair of letters. ``characters=("\\u200b",)`` is this
            attack's former default (zero-width spaces only) and reproduces its figures.
        max_share: at most this share of words is edited; the edits do not change how the
            text looks, so the default allows every word.
    """

    def __init__(
        self,
        *,
        family: InvisibleFamily = "all",
        characters: Sequence[str] | None = None,
        max_share: float = 1.0,
        scoring: Ranking = "delete",
        min_length: int = 2,
    ):
        if characters is not None and (not characters or any(len(c) != 1 for c in characters)):
            raise AttackInputError("characters: expected single characters")
        if family != "all" and family not in INVISIBLE_FAMILIES:
            raise AttackInputError(
                f"family: expected one of {(*INVISIBLE_FAMILIES, 'all')}, got {family!r}"
            )
        self.family: InvisibleFamily | None = None if characters is not None else family
        self.characters = tuple(characters) if characters is not None else ()
        self.max_share = _check_share(max_share)
        self.scoring: Ranking = scoring
        self.min_length = min_length

    def _draw(self, generator: torch.Generator) -> list[str]:
        if self.family is None:
            return list(self.characters)
        members = family_members(self.family)
        order = torch.randperm(len(members), generator=generator).tolist()
        return [
            family_character(members[j], _randint(family_size(members[j]), generator))
            for j in order
        ]

    def _attack_words(
        self, ex: _Example, classifier: ProbaFn, generator: torch.Generator
    ) -> list[str]:
        order = self.rank_words(ex, classifier, _eligible(ex.words, self.min_length), self.scoring)

        def propose(word: str) -> list[str]:
            pre, core, post = word_core(word)
            mid = len(core) // 2
            chars = self._draw(generator)
            out = [pre + core[:mid] + c + core[mid:] + post for c in chars]
            if len(core) > 2:
                # between every pair of characters: no piece longer than one character is left
                gaps = chars if self.family is not None else chars[:1]
                out.extend(pre + c.join(core) + post for c in gaps)
            return list(dict.fromkeys(out))

        return self.greedy(ex, order, propose, max_edits(self.max_share, len(ex.words)))
