"""The sanitising layer of the text guard: undo character-level tricks before classification.

Steps, in order (each can be switched off):

1. Removal of invisible characters (:func:`bastion.text.unicode_tables.is_invisible`): every
   default-ignorable code point (format characters such as zero-width space/joiner/non-joiner,
   word joiner, soft hyphen, bidi marks, embeddings, overrides and isolates; variation
   selectors including the Mongolian ones; Hangul and other fillers; the reserved ranges
   U+2065, U+FFF0..FFF8, U+E0000..E0FFF), every other format character, every unassigned and
   private-use code point, and blank glyphs (braille blank). Then spaces other than U+0020 put
   *inside* a word (between two word characters): narrow ones (thin, hair, six-per-em,
   punctuation, narrow no-break, medium mathematical) are removed, which rejoins the word; wider
   ones are removed when they space out single characters or when the joined word is in the
   vocabulary (so ``"fr\\u00a0ee"`` becomes ``"free"``) and otherwise left to NFKC, which turns
   them into ordinary spaces (a no-break space between two real words stays a word break).
2. Unicode NFKC normalisation (full-width letters, ligatures, mathematical alphanumerics ->
   plain forms), then step 1's removal again.
3. Confusable mapping: Cyrillic/Greek look-alikes mapped back to Latin letters in any word that
   contains a Latin letter or consists only of confusable letters (so genuine Greek or Russian
   words are left alone).
4. Optional spelling repair (Pruthi et al., 2019, in its simplest form): a word whose lower-cased
   core is not in the vocabulary is replaced by a vocabulary word at Damerau-Levenshtein
   distance 1 (deletion, adjacent swap, substitution, insertion), if any. Candidates are ranked
   as Pruthi et al.'s semi-character view of a word suggests (readers, and typo attacks such as
   DeepWordBug, keep a word's first and last letters; Rawlinson 1976): first those keeping
   both the first and the last letter of the typo, then those keeping one, then an adjacent swap
   before other edits, and the most frequent last. On Movie Review test words this repairs all
   four DeepWordBug typos of a word for 58% of words, against 47% for frequency alone.

   The work is bounded: a word longer than the longest vocabulary word plus one has no
   vocabulary word one edit away and is not searched; the others are looked up in a
   :class:`DeletionIndex` of the vocabulary (``len(word) + 1`` look-ups instead of the
   ``74 * len(word) + 35`` one-edit variants, with the same result); one call spends at most
   ``max_repair_work`` look-ups and checks (words beyond the budget are left as they
   are); and at most ``max_cached_repairs`` repairs are remembered between calls.

``sanitize(text)`` applies steps 1-3 without a vocabulary; :class:`Sanitizer` configures all
four and :meth:`Sanitizer.clean` also reports what it removed and mapped.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from bastion.errors import ConfigError
from bastion.text.unicode_tables import (
    CONFUSABLE_TO_LATIN,
    NARROW_SPACES,
    OTHER_SPACES,
    is_invisible,
)
from bastion.text.vocab import Vocabulary
from bastion.text.words import join_words, split_words

_LETTERS = string.ascii_lowercase + string.digits


def _is_latin_letter(ch: str) -> bool:
    return ch.isascii() and ch.isalpha()


def strip_invisible(text: str) -> str:
    """``text`` without the characters :func:`~bastion.text.unicode_tables.is_invisible` names
    (in-word spaces are :func:`join_in_word_spaces`' business). Each distinct character is
    classified once, so the cost is that of a few passes of C over ``text``."""
    if text.isascii():  # ASCII holds no invisible character
        return text
    drop = {ord(ch): None for ch in set(text) if is_invisible(ch)}
    return text.translate(drop) if drop else text


_SPACES = "".join(OTHER_SPACES)
# Runs of word characters linked by spaces other than U+0020, starting at a word start (the
# look-behind keeps the search linear: each start is tried once per word, not once per letter).
_LINKED_RE = re.compile(rf"(?<!\w)(?:\w+[{_SPACES}]+)+\w+")
_SPACE_RUN_RE = re.compile(rf"[{_SPACES}]+")
_SPACE_SET = frozenset(_SPACES)
_NARROW_IN_WORD_RE = re.compile(rf"(?<=\S)[{''.join(sorted(NARROW_SPACES))}]+(?=\S)")


def join_in_word_spaces(text: str, vocabulary: Vocabulary | None = None) -> tuple[str, int]:
    """``(text, removed)``: ``text`` with the spaces other than U+0020 that sit inside a word
    removed where they split it, and how many were removed.

    Narrow spaces (:data:`~bastion.text.unicode_tables.NARROW_SPACES`) between two characters
    that are not white space are always removed. Wider ones between word characters are removed
    when they space out single characters (three or more, ``"f\\u00a0r\\u00a0e\\u00a0e"``) or
    when the word they split, rejoined (after NFKC, confusable mapping and lower-casing as the
    vocabulary does), is a ``vocabulary`` word, and are kept otherwise. Linear in
    ``len(text)``.
    """
    if _SPACE_SET.isdisjoint(text):
        return text, 0
    before = len(text)
    text = _NARROW_IN_WORD_RE.sub("", text)
    removed = before - len(text)

    def fix(m: re.Match[str]) -> str:
        nonlocal removed
        linked = m.group(0)
        joined = _SPACE_RUN_RE.sub("", linked)
        if len(joined) >= 3 and len(joined) == len(_SPACE_RUN_RE.findall(linked)) + 1:
            removed += len(linked) - len(joined)  # letter-spaced: "f r e e" is one word
            return joined
        if vocabulary is not None:
            key = map_confusables(unicodedata.normalize("NFKC", joined))
            if (key.lower() if vocabulary.lower else key) in vocabulary:
                removed += len(linked) - len(joined)
                return joined
        return linked  # NFKC makes these word breaks

    return _LINKED_RE.sub(fix, text), removed


_CONFUSABLES = frozenset(CONFUSABLE_TO_LATIN)


def map_confusables(text: str) -> str:
    """Map Cyrillic/Greek confusables to Latin inside mixed-script or all-confusable words."""
    if text.isascii() or _CONFUSABLES.isdisjoint(text):
        return text
    words, seps = split_words(text)
    out: list[str] = []
    for word in words:
        letters = [ch for ch in word if ch.isalpha()]
        has_confusable = any(ch in CONFUSABLE_TO_LATIN for ch in letters)
        if has_confusable and (
            any(_is_latin_letter(ch) for ch in letters)
            or all(ch in CONFUSABLE_TO_LATIN for ch in letters)
        ):
            word = "".join(CONFUSABLE_TO_LATIN.get(ch, ch) for ch in word)
        out.append(word)
    return join_words(out, seps)


def edits1(word: str) -> set[str]:
    """All strings at Damerau-Levenshtein distance 1 from ``word`` over ``[a-z0-9]``."""
    return set(iter_edits1(word)) - {word}


def edit_count(word: str) -> int:
    """How many strings :func:`iter_edits1` yields for ``word`` (``74 * len(word) + 35``, less
    one swap for a single letter)."""
    n = len(word)
    return n + max(0, n - 1) + len(_LETTERS) * (2 * n + 1)


def iter_edits1(word: str) -> Iterator[str]:
    """The one-edit variants of ``word`` one at a time (repeats and ``word`` itself included),
    :func:`edit_count` of them; memory stays that of one variant."""
    n = len(word)
    for i in range(n):
        yield word[:i] + word[i + 1 :]
    for i in range(n - 1):
        yield word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    for i in range(n + 1):
        a, b = word[:i], word[i:]
        for c in _LETTERS:
            yield a + c + b
        if b:
            rest = b[1:]
            for c in _LETTERS:
                yield a + c + rest


def _one_substitution_or_swap(a: str, b: str) -> bool:
    """Whether equal-length ``a`` and ``b`` differ by one substituted letter or one swap of two
    adjacent letters."""
    diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    if len(diff) == 1:
        return True
    i = diff[0] if len(diff) == 2 else -1
    return diff == [i, i + 1] and a[i] == b[i + 1] and a[i + 1] == b[i]


class DeletionIndex:
    """The vocabulary words over ``[a-z0-9]`` keyed by their one-letter deletions (the
    symmetric-delete scheme of SymSpell, Garbe 2012), to find the words one edit from a typo
    without generating its ``74 * len + 35`` variants.

    :meth:`neighbours` returns exactly ``edits1(typo) & words`` for a lower-case ASCII
    alphanumeric ``typo``, after ``len(typo) + 1`` look-ups and a check of each word found under
    them, and says how much work that was.
    """

    def __init__(self, words: Iterable[str]) -> None:
        letters = set(_LETTERS)
        self.words = frozenset(w for w in words if w and set(w) <= letters)
        index: dict[str, list[str]] = {}
        for w in self.words:
            for d in {w[:i] + w[i + 1 :] for i in range(len(w))}:
                index.setdefault(d, []).append(w)
        self._index = index

    def neighbours(self, typo: str, budget: int | None = None) -> tuple[set[str] | None, int]:
        """``(words, work)``: the indexed words at Damerau-Levenshtein distance 1 from
        ``typo`` and the work of finding them (look-ups plus words checked). When the work
        would exceed ``budget`` nothing is checked and the words are ``None``."""
        if budget is not None and len(typo) + 1 > budget:  # not even the look-ups fit
            return None, len(typo) + 1
        keys = {typo[:i] + typo[i + 1 :] for i in range(len(typo))}
        lists = [self._index.get(k, ()) for k in keys]
        work = len(keys) + 1 + sum(map(len, lists))
        if budget is not None and work > budget:
            return None, work
        found = {k for k in keys if k in self.words}  # the typo inserted a letter
        found.update(self._index.get(typo, ()))  # the typo deleted one
        n = len(typo)
        for words in lists:  # substituted or swapped letters share a deletion
            for w in words:
                if len(w) == n and w != typo and _one_substitution_or_swap(typo, w):
                    found.add(w)
        found.discard(typo)
        return found, work


def repair_rank(typo: str, vocab: Vocabulary) -> Callable[[str], tuple[int, bool, int, str]]:
    """Sort key of the repair candidates of ``typo`` (lower-case), higher is likelier: how many
    of the typo's first and last letters a candidate keeps, then whether it has the typo's
    letters (an adjacent swap), then its count in ``vocab``, then the word itself."""
    first, last, letters = typo[0], typo[-1], sorted(typo)

    def rank(word: str) -> tuple[int, bool, int, str]:
        kept = (word[0] == first) + (word[-1] == last)
        return kept, sorted(word) == letters, vocab.count_of(word), word

    return rank


@dataclass(frozen=True)
class Cleaned:
    """What :meth:`Sanitizer.clean` made of a text.

    Attributes:
        text: the sanitised text.
        invisible: characters removed as invisible (including in-word spaces).
        confusables: look-alike characters mapped back to Latin.
    """

    text: str
    invisible: int
    confusables: int


class Sanitizer:
    """Configurable sanitiser; ``sanitizer(text) -> str`` (see the module docstring).

    Args:
        nfkc: apply NFKC normalisation.
        strip_invisible: remove invisible characters and in-word spaces.
        confusables: map homoglyphs back to Latin.
        vocabulary: enables spelling repair against this vocabulary (its counts break ties) and
            lets wide in-word spaces be removed when they split a vocabulary word.
        repair_spelling: repair out-of-vocabulary words at edit distance 1 (needs
            ``vocabulary``); words of fewer than ``min_repair_length`` letters are left alone.
        max_repair_work: the most work one call spends on repairs, counted in look-ups
            and words checked (:meth:`DeletionIndex.neighbours`); a word whose search does
            not fit in what is left is not repaired.
        max_cached_repairs: the most repairs remembered between calls (oldest forgotten first).
    """

    def __init__(
        self,
        *,
        nfkc: bool = True,
        strip_invisible: bool = True,
        confusables: bool = True,
        vocabulary: Vocabulary | None = None,
        repair_spelling: bool = False,
        min_repair_length: int = 3,
        max_repair_work: int = 20_000,
        max_cached_repairs: int = 65_536,
    ):
        if max_repair_work < 0 or max_cached_repairs < 0:
            raise ConfigError("sanitizer: repair budgets must be >= 0")
        self.nfkc = nfkc
        self.strip_invisible = strip_invisible
        self.confusables = confusables
        self.vocabulary = vocabulary
        self.repair_spelling = repair_spelling and vocabulary is not None
        self.min_repair_length = min_repair_length
        self.max_repair_work = max_repair_work
        self.max_cached_repairs = max_cached_repairs
        # no vocabulary word lies one edit from a word longer than this
        self.max_repair_length = (
            max(map(len, vocabulary.tokens)) + 1 if vocabulary is not None else 0
        )
        self._repairs: dict[str, str] = {}
        self._index: DeletionIndex | None = None
        # a whole white-space-delimited word whose core (the word less leading and trailing
        # punctuation, as word_core splits it) is ASCII alphanumeric of a repairable length;
        # the look-behind makes each word one match attempt, so the search is linear
        lo, hi = min_repair_length, max(min_repair_length, self.max_repair_length)
        self._repairable = re.compile(
            rf"(?<!\S)([^\w\s]*)([A-Za-z0-9]{{{lo},{hi}}})([^\w\s]*)(?!\S)"
        )

    @property
    def index(self) -> DeletionIndex:
        """The vocabulary's :class:`DeletionIndex` (built on first use)."""
        if self._index is None:
            self._index = DeletionIndex(self.vocabulary.tokens if self.vocabulary else ())
        return self._index

    def repair_word(self, core: str) -> str:
        """The vocabulary word nearest to ``core`` (itself when known or beyond distance 1),
        searched within one call's budget of ``max_repair_work``."""
        return self._repair(core, self.max_repair_work)[0]

    def _repair(self, core: str, budget: int) -> tuple[str, int]:
        """``(repaired core, work spent)``; a search costing more than ``budget``
        (:meth:`DeletionIndex.neighbours`) is not made and leaves ``core`` as it is."""
        vocab = self.vocabulary
        lowered = core.lower()
        if vocab is None or lowered in vocab or len(lowered) < self.min_repair_length:
            return core, 0
        if len(lowered) > self.max_repair_length:
            return core, 0
        if not lowered.isascii() or not lowered.isalnum():
            return core, 0
        cost = 0
        best = self._repairs.get(lowered)
        if best is None:
            found, cost = self.index.neighbours(lowered, budget)
            if found is None:
                return core, 0
            best = max(found, key=repair_rank(lowered, vocab), default=lowered)
            if self.max_cached_repairs:
                while len(self._repairs) >= self.max_cached_repairs:
                    self._repairs.pop(next(iter(self._repairs)), None)  # the oldest
                self._repairs[lowered] = best
        return (core if best == lowered else best), cost

    def _strip(self, text: str) -> tuple[str, int]:
        kept = strip_invisible(text)
        joined, spaces = join_in_word_spaces(kept, self.vocabulary)
        return joined, len(text) - len(kept) + spaces

    def clean(self, text: str, *, repair_work: int | None = None) -> Cleaned:
        """The sanitised text with the number of invisible characters removed and of
        confusables mapped (both 0 for a text the first three steps leave alone).

        ``repair_work`` lowers this call's repair budget below ``max_repair_work`` (a caller
        sharing one budget among many texts gives each its part)."""
        invisible = confusable = 0
        if self.strip_invisible:
            text, invisible = self._strip(text)
        if self.nfkc:
            text = unicodedata.normalize("NFKC", text)
            if self.strip_invisible:
                text, more = self._strip(text)
                invisible += more
        if self.confusables:
            mapped = map_confusables(text)
            if mapped is not text:
                confusable = sum(a != b for a, b in zip(text, mapped, strict=True))
            text = mapped
        if self.repair_spelling:
            budget = self.max_repair_work
            if repair_work is not None:
                budget = max(0, min(budget, repair_work))

            def repair(m: re.Match[str]) -> str:
                nonlocal budget
                fixed, spent = self._repair(m.group(2), budget)
                budget -= spent
                return m.group(1) + fixed + m.group(3)

            text = self._repairable.sub(repair, text)
        return Cleaned(text, invisible, confusable)

    def __call__(self, text: str) -> str:
        return self.clean(text).text

    def params(self) -> dict[str, object]:
        """Settings for scorecards."""
        return {
            "nfkc": self.nfkc,
            "strip_invisible": self.strip_invisible,
            "confusables": self.confusables,
            "repair_spelling": self.repair_spelling,
        }


_DEFAULT = Sanitizer()


def sanitize(text: str) -> str:
    """Invisible-character removal, NFKC and confusable mapping (no vocabulary, so no spelling
    repair and only narrow in-word spaces removed)."""
    return _DEFAULT(text)
