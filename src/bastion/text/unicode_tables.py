"""Unicode tables shared by the character attacks and the sanitiser.

- ``HOMOGLYPHS``: Latin letter -> Cyrillic/Greek letters that render (nearly) identically
  (a subset of the Unicode confusables data, UTS #39, written out by hand).
- ``CONFUSABLE_TO_LATIN``: the inverse mapping used to repair text (with the NFKC images of
  the glyphs, since the sanitiser maps after NFKC).
- ``INVISIBLE_INSERTIONS``: zero-width and bidirectional control characters an attacker can put
  inside a word without changing how it looks.
- :func:`is_default_ignorable`: Unicode's Default_Ignorable_Code_Point, derived from its
  definition; :func:`is_invisible`: what the sanitiser removes (default-ignorable, format,
  unassigned and private-use code points, blank glyphs); :data:`OTHER_SPACES` and
  :data:`NARROW_SPACES`: the space separators that split a word when put inside it.
- The families of characters the invisible-character attack draws from
  (:data:`INVISIBLE_FAMILIES`, :func:`family_characters`).
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Literal

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
# The sanitiser maps confusables after NFKC, which turns some glyphs into other letters (Greek
# lunate sigma U+03F2 -> final sigma U+03C2): those images map to the same Latin letter.
CONFUSABLE_TO_LATIN.update(
    {
        unicodedata.normalize("NFKC", glyph): latin
        for glyph, latin in list(CONFUSABLE_TO_LATIN.items())
        if unicodedata.normalize("NFKC", glyph) not in CONFUSABLE_TO_LATIN
    }
)

#: The ``zero_width`` family of the invisible-character attack: zero-width space, non-joiner,
#: joiner, word joiner, left-to-right and right-to-left marks, and the bidi isolates/overrides.
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

# --- Default_Ignorable_Code_Point, derived from its definition -------------------------------
#
# DerivedCoreProperties.txt (UAX #44) defines Default_Ignorable_Code_Point as
#   Other_Default_Ignorable_Code_Point + Cf + Variation_Selector - White_Space
#   - FFF9..FFFB (interlinear annotation) - 13430..1343F (Egyptian hieroglyph format controls)
#   - Prepended_Concatenation_Mark.
# Python's ``unicodedata`` gives the general category (Cf) but not the three contributory
# properties, so those are written out below from PropList.txt (Unicode 15.1; both lists are
# stable: Other_Default_Ignorable_Code_Point only ever reserves code points ahead of
# assignment). Ranges are inclusive ``(first, last)`` code points.

#: Other_Default_Ignorable_Code_Point (PropList.txt).
OTHER_DEFAULT_IGNORABLE: tuple[tuple[int, int], ...] = (
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x115F, 0x1160),  # Hangul choseong/jungseong fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x2065, 0x2065),  # reserved
    (0x3164, 0x3164),  # Hangul filler
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xFFF0, 0xFFF8),  # reserved
    (0xE0000, 0xE0000),  # reserved
    (0xE0002, 0xE001F),  # reserved
    (0xE0080, 0xE00FF),  # reserved
    (0xE01F0, 0xE0FFF),  # reserved
)

#: Variation_Selector (PropList.txt): Mongolian free variation selectors, VS1-16, VS17-256.
VARIATION_SELECTORS: tuple[tuple[int, int], ...] = (
    (0x180B, 0x180D),
    (0x180F, 0x180F),
    (0xFE00, 0xFE0F),
    (0xE0100, 0xE01EF),
)

#: Format characters the definition keeps visible: interlinear annotation, Egyptian hieroglyph
#: format controls and Prepended_Concatenation_Mark.
VISIBLE_FORMAT: tuple[tuple[int, int], ...] = (
    (0x0600, 0x0605),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
)


def _in_ranges(cp: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(lo <= cp <= hi for lo, hi in ranges)


def is_default_ignorable(ch: str) -> bool:
    """Unicode's Default_Ignorable_Code_Point, computed from its definition (see above) with
    the general categories of Python's ``unicodedata``: code points a renderer shows as nothing
    when it has no glyph for them."""
    cp = ord(ch)
    if ch.isspace():
        return False
    if _in_ranges(cp, OTHER_DEFAULT_IGNORABLE) or _in_ranges(cp, VARIATION_SELECTORS):
        return True
    return unicodedata.category(ch) == "Cf" and not _in_ranges(cp, VISIBLE_FORMAT)


#: Blank characters that are neither default-ignorable nor unassigned but render as empty space
#: inside a word: the braille pattern blank and the Mongolian vowel separator (Cf since Unicode
#: 6.3, listed in case an older table calls it a space).
BLANK_GLYPHS: tuple[str, ...] = ("\u2800", "\u180e")

_LISTED_DEFAULT_IGNORABLE = frozenset(
    chr(cp)
    for lo, hi in (*OTHER_DEFAULT_IGNORABLE, *VARIATION_SELECTORS)
    for cp in range(lo, hi + 1)
)
_INVISIBLE_EXTRA = _LISTED_DEFAULT_IGNORABLE | frozenset(BLANK_GLYPHS)
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Cn", "Co"})


def is_invisible(ch: str) -> bool:
    """True for the characters the sanitiser removes wherever they occur.

    The set is, by construction from the Unicode data: every default-ignorable code point
    (:func:`is_default_ignorable`), every other format (Cf) character too (the interlinear
    annotation and hieroglyph controls and the prepended concatenation marks have no place in
    ordinary text), every code point unassigned (Cn, which includes the noncharacters) or
    private-use (Co) in Python's Unicode data (``unicodedata.unidata_version``: code points
    assigned by a later Unicode version count as unassigned), and :data:`BLANK_GLYPHS`.
    Spaces (Zs) are not in it: the sanitiser removes :data:`OTHER_SPACES` only inside words.
    """
    return ch in _INVISIBLE_EXTRA or unicodedata.category(ch) in _INVISIBLE_CATEGORIES


#: The space separators (Zs) other than U+0020, from the Unicode data (checked by the tests).
#: NFKC turns all but the Ogham space mark into U+0020, so one placed inside a word splits it.
OTHER_SPACES: tuple[str, ...] = (
    "\u00a0",
    "\u1680",
    *(chr(cp) for cp in range(0x2000, 0x200B)),
    "\u202f",
    "\u205f",
    "\u3000",
)

#: The spaces among :data:`OTHER_SPACES` narrower than an ordinary space (about 1/4 em): six-
#: per-em, punctuation, thin, hair, narrow no-break and medium mathematical spaces. Inside a
#: word they leave it looking whole.
NARROW_SPACES: frozenset[str] = frozenset("\u2006\u2008\u2009\u200a\u202f\u205f")


# --- Character families of the invisible-character attack --------------------------------

InvisibleFamily = Literal[
    "zero_width",
    "format",
    "variation_selector",
    "filler",
    "unassigned",
    "private_use",
    "space",
    "all",
]

#: The single families, in the order ``"all"`` lists them.
INVISIBLE_FAMILIES: tuple[InvisibleFamily, ...] = (
    "zero_width",
    "format",
    "variation_selector",
    "filler",
    "unassigned",
    "private_use",
    "space",
)


@functools.cache
def family_characters(family: InvisibleFamily) -> tuple[tuple[int, int], ...]:
    """The code points of one attack family, as inclusive ranges (``"all"`` is not a single
    family: use :func:`family_members`).

    - ``zero_width``: :data:`INVISIBLE_INSERTIONS` (zero-width and bidi controls);
    - ``format``: the default-ignorable format (Cf) characters assigned in Python's data;
    - ``variation_selector``: Mongolian free variation selectors, VS1-VS256;
    - ``filler``: the assigned default-ignorable letters and marks (combining grapheme joiner,
      Hangul fillers, Khmer inherent vowels) and :data:`BLANK_GLYPHS`;
    - ``unassigned``: default-ignorable code points unassigned in Python's data (U+2065,
      U+FFF0..FFF8, U+E0000, U+E0002..E001F, U+E0080..E00FF, U+E01F0..E0FFF): reserved so that
      renderers show them as nothing;
    - ``private_use``: all private-use (Co) code points;
    - ``space``: :data:`NARROW_SPACES`, the spaces that leave a word looking whole (a wider one
      inside a word shows as a gap, as a plain space would: that is a visible edit, not an
      invisible one).
    """
    if family == "zero_width":
        cps = sorted(ord(c) for c in INVISIBLE_INSERTIONS)
    elif family == "format":
        cps = [cp for lo, hi in _CF_BLOCKS for cp in range(lo, hi + 1) if _is_df_format(cp)]
    elif family == "variation_selector":
        return VARIATION_SELECTORS
    elif family == "filler":
        cps = sorted(
            [
                cp
                for lo, hi in OTHER_DEFAULT_IGNORABLE
                for cp in range(lo, hi + 1)
                if unicodedata.category(chr(cp)) != "Cn"
            ]
            + [ord(c) for c in BLANK_GLYPHS if unicodedata.category(c) != "Cf"]
        )
    elif family == "unassigned":
        cps = [
            cp
            for lo, hi in OTHER_DEFAULT_IGNORABLE
            for cp in range(lo, hi + 1)
            if unicodedata.category(chr(cp)) == "Cn"
        ]
    elif family == "private_use":
        return ((0xE000, 0xF8FF), (0xF0000, 0xFFFFD), (0x100000, 0x10FFFD))
    elif family == "space":
        cps = sorted(ord(c) for c in NARROW_SPACES)
    else:
        raise ValueError(f"not a single invisible-character family: {family!r}")
    return _ranges(cps)


# Blocks holding every format character (all Cf code points of Unicode 15.1 lie in them).
_CF_BLOCKS: tuple[tuple[int, int], ...] = ((0x0000, 0x2FFFF), (0xE0000, 0xE0FFF))


def _is_df_format(cp: int) -> bool:
    ch = chr(cp)
    return unicodedata.category(ch) == "Cf" and is_default_ignorable(ch)


def _ranges(cps: list[int]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for cp in cps:
        if out and out[-1][1] == cp - 1:
            out[-1] = (out[-1][0], cp)
        else:
            out.append((cp, cp))
    return tuple(out)


def family_members(family: InvisibleFamily) -> tuple[InvisibleFamily, ...]:
    """The single families ``family`` stands for: itself, or all of them for ``"all"``."""
    if family == "all":
        return INVISIBLE_FAMILIES
    if family not in INVISIBLE_FAMILIES:
        raise ValueError(f"invisible family: expected one of {(*INVISIBLE_FAMILIES, 'all')}")
    return (family,)


def family_size(family: InvisibleFamily) -> int:
    """How many code points a single family holds."""
    return sum(hi - lo + 1 for lo, hi in family_characters(family))


def family_character(family: InvisibleFamily, index: int) -> str:
    """The ``index``-th code point (``0 <= index < family_size(family)``) of a single family."""
    for lo, hi in family_characters(family):
        if index <= hi - lo:
            return chr(lo + index)
        index -= hi - lo + 1
    raise IndexError(f"{family}: index beyond its {family_size(family)} characters")
