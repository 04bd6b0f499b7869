"""Word-level view of a text used by the attacks: words, separators and the word's core.

A text is split on runs of whitespace, keeping the separators, so ``join_words`` restores the
original exactly. A word's *core* is the word without leading and trailing punctuation: attacks
edit the core and keep the punctuation and the capitalisation around it.
"""

from __future__ import annotations

import re

_WORD_RE = re.compile(r"\S+")
_CORE_RE = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)


def split_words(text: str) -> tuple[list[str], list[str]]:
    """``(words, separators)`` with ``len(separators) == len(words) + 1``.

    ``separators[0]`` is leading space, ``separators[i + 1]`` the space after ``words[i]``.
    """
    words: list[str] = []
    seps: list[str] = []
    last = 0
    for m in _WORD_RE.finditer(text):
        seps.append(text[last : m.start()])
        words.append(m.group(0))
        last = m.end()
    seps.append(text[last:])
    return words, seps


def join_words(words: list[str], seps: list[str]) -> str:
    """Inverse of :func:`split_words`."""
    out = [seps[0]]
    for word, sep in zip(words, seps[1:], strict=True):
        out.append(word)
        out.append(sep)
    return "".join(out)


def word_core(word: str) -> tuple[str, str, str]:
    """``(prefix, core, suffix)``: leading punctuation, the word itself, trailing punctuation."""
    m = _CORE_RE.match(word)
    if m is None:  # pragma: no cover - the pattern matches every string
        return "", word, ""
    return m.group(1), m.group(2), m.group(3)


def match_case(template: str, word: str) -> str:
    """``word`` with the capitalisation pattern of ``template`` (lower, Title or UPPER)."""
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def changed_share(original: list[str], adversarial: list[str]) -> float:
    """Share of word positions that differ (0.0 for an empty text)."""
    if not original:
        return 0.0
    changed = sum(a != b for a, b in zip(original, adversarial, strict=True))
    return changed / len(original)
