"""Unicode tables shared by the character attacks and the sanitiser.

- ``HOMOGLYPHS``: Latin letter -> Cyrillic/Greek letters that render (nearly) identically
  (a subset of the Unicode confusables data, UTS #39, written out by hand).
- ``CONFUSABLE_TO_LATIN``: the inverse mapping used to repair text.
- ``INVISIBLE_INSERTIONS``: zero-width and bidirectional control characters an attacker can put
  inside a word without changing how it looks.
"""

from __future__ import annotations

import unicodedata

HOMOGLYPHS: dict[str, tuple[str, ...]] = {
    "a": ("\u0430", "\u03b1"),  # Cyrillic a, Greek alpha
    "c": ("\u0441", "\u03f2"),  # Cyrillic es, Greek lunate sigma
    "d": ("\u0501",),  # Cyrillic komi de
    "e": ("\u0435",),  # Cyrillic ie
    "h": ("\u04bb",),  # Cyrillic shha
    "i": ("\u0456", "\u03b9"),  # Cyrillic byelorussian-ukrainian i, Greek iota
    "j": ("\u0458",),  # Cyrillic je
    "k": ("\u03ba",),  # Greek kappa
    "l": ("\u04cf",),  # Cyrillic palochka
    "n": ("\u0578",),  # Armenian vo (looks like n)
    "o": ("\u043e", "\u03bf"),  # Cyrillic o, Greek omicron
    "p": ("\u0440", "\u03c1"),  # Cyrillic er, Greek rho
    "q": ("\u051b",),  # Cyrillic qa
    "s": ("\u0455",),  # Cyrillic dze
    "u": ("\u057d",),  # Armenian seh
    "v": ("\u03bd",),  # Greek nu
    "w": ("\u051d",),  # Cyrillic we
    "x": ("\u0445", "\u03c7"),  # Cyrillic ha, Greek chi
    "y": ("\u0443", "\u03b3"),  # Cyrillic u, Greek gamma
    "A": ("\u0410", "\u0391"),
    "B": ("\u0412", "\u0392"),
    "C": ("\u0421",),
    "E": ("\u0415", "\u0395"),
    "H": ("\u041d", "\u0397"),
    "I": ("\u0406", "\u0399"),
    "J": ("\u0408",),
    "K": ("\u041a", "\u039a"),
    "M": ("\u041c", "\u039c"),
    "N": ("\u039d",),
    "O": ("\u041e", "\u039f"),
    "P": ("\u0420", "\u03a1"),
    "S": ("\u0405",),
    "T": ("\u0422", "\u03a4"),
    "X": ("\u0425", "\u03a7"),
    "Y": ("\u04ae", "\u03a5"),
    "Z": ("\u0396",),
}

CONFUSABLE_TO_LATIN: dict[str, str] = {
    glyph: latin for latin, glyphs in HOMOGLYPHS.items() for glyph in glyphs
}

#: Characters inserted by the invisible-character attack: zero-width space, non-joiner, joiner,
#: word joiner, left-to-right and right-to-left marks, and the bidi isolates/overrides.
INVISIBLE_INSERTIONS: tuple[str, ...] = (
    "\u200b",
    "\u200c",
    "\u200d",
    "\u2060",
    "\u200e",
    "\u200f",
    "\u2066",
    "\u2069",
    "\u202d",
    "\u202c",
)

# Characters that render as nothing or as blank space but are letters or marks, so a
# "remove format characters" rule alone misses them (Hangul fillers, braille blank, etc.).
_INVISIBLE_EXTRA = frozenset(
    "\u115f\u1160\u3164\uffa0\u2800\u034f\u17b4\u17b5\u180e"
    + "".join(chr(c) for c in range(0xFE00, 0xFE10))
)


def is_invisible(ch: str) -> bool:
    """True for format (Cf) characters, variation selectors and invisible fillers."""
    if ch in _INVISIBLE_EXTRA or 0xE0100 <= ord(ch) <= 0xE01EF:
        return True
    return unicodedata.category(ch) == "Cf"
