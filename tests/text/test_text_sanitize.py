from __future__ import annotations

import random
import time
import tracemalloc
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st
from text_fixtures import DATASETS

from bastion.text import Sanitizer, TypoNeighbours, UnionCandidates, Vocabulary, sanitize
from bastion.text.sanitize import (
    Cleaned,
    DeletionIndex,
    edit_count,
    edits1,
    iter_edits1,
    join_in_word_spaces,
)
from bastion.text.unicode_tables import (
    HOMOGLYPHS,
    INVISIBLE_FAMILIES,
    INVISIBLE_INSERTIONS,
    NARROW_SPACES,
    OTHER_SPACES,
    InvisibleFamily,
    family_characters,
    is_default_ignorable,
    is_invisible,
)
from bastion.text.words import join_words, split_words, word_core


def test_removes_invisible_and_bidi_characters() -> None:
    for ch in INVISIBLE_INSERTIONS:
        assert sanitize(f"fr{ch}ee prize") == "free prize"
    assert sanitize("soft\u00adhyphen \u202eevil\u202c") == "softhyphen evil"


def test_maps_homoglyphs_back_to_latin() -> None:
    attacked = "".join(HOMOGLYPHS[c][0] if c in HOMOGLYPHS else c for c in "cash prize")
    assert attacked != "cash prize"
    assert sanitize(attacked) == "cash prize"
    assert sanitize("W\u0456N \u0430 car") == "WiN a car"


def test_maps_every_homoglyph_back_even_when_nfkc_changes_it() -> None:
    # NFKC turns the Greek lunate sigma (a "c" look-alike) into a final sigma
    assert sanitize("\u03f2ustomer servi\u03f2e") == "customer service"
    for latin, glyphs in HOMOGLYPHS.items():
        for glyph in glyphs:
            assert sanitize(f"x{glyph}x") == f"x{latin}x", hex(ord(glyph))


def test_leaves_genuine_greek_and_cyrillic_words() -> None:
    assert sanitize("καλημέρα мир") == "καλημέρα мир"


def test_nfkc_folds_compatibility_forms() -> None:
    assert sanitize("\uff26\uff32\uff25\uff25 \ufb01ne") == "FREE fine"


def test_spelling_repair_uses_vocabulary_counts() -> None:
    vocab = Vocabulary.build(["likely likely good good good gold"], max_length=8)
    s = Sanitizer(vocabulary=vocab, repair_spelling=True)
    assert s("more likley and goood, Good!") == "more likely and good, Good!"
    assert s("zzzz") == "zzzz"
    assert Sanitizer(vocabulary=vocab)("likley") == "likley"


def test_spelling_repair_prefers_kept_first_and_last_letters_then_swaps() -> None:
    # "are" is far more frequent, but "mre" keeps the first and last letters of "more"
    vocab = Vocabulary.build(["are are are are are more words words words worlds"], max_length=16)
    s = Sanitizer(vocabulary=vocab, repair_spelling=True)
    assert s("mre") == "more"
    # both keep "w...s"; the adjacent swap explains "wolrds" with the letters of "worlds"
    assert s("wolrds") == "worlds"
    # frequency still decides among equally plausible candidates
    vocab2 = Vocabulary.build(["good good gold"], max_length=8)
    assert Sanitizer(vocabulary=vocab2, repair_spelling=True)("goid") == "good"


@given(st.text(max_size=40))
def test_sanitize_is_idempotent(text: str) -> None:
    once = sanitize(text)
    assert sanitize(once) == once


def test_typo_neighbours_are_vocabulary_words_one_edit_away_likeliest_first() -> None:
    vocab = Vocabulary.build(
        ["good good good gold god goods food bad bed bed bat and ok"], max_length=16
    )
    near = TypoNeighbours(vocab)
    assert near("good") == ["gold", "god", "goods", "food"]  # first and last kept go first
    assert near("Bad") == ["bed", "bat"]
    assert near("ok") == [] and near("g00d") == []  # too short / not alphabetic
    assert all(w in vocab and w != "good" for w in near("good"))
    # a union puts them before the attack's own candidates, without repeats
    union = UnionCandidates(near, lambda w: ["food", "fine"])
    assert union("good") == ["gold", "god", "goods", "food", "fine"]


# --- the invisible set, built from the Unicode data ------------------------------------------


def _samples(family: InvisibleFamily) -> list[str]:
    """The first, middle and last code point of every range of a family."""
    return sorted(
        {chr(cp) for lo, hi in family_characters(family) for cp in (lo, (lo + hi) // 2, hi)}
    )


def test_default_ignorable_follows_the_unicode_definition() -> None:
    ignorable = [
        "\u00ad",  # soft hyphen (Cf)
        "\u034f",  # combining grapheme joiner
        "\u115f",
        "\u1160",
        "\u3164",
        "\uffa0",  # Hangul fillers
        "\u180b",
        "\u180c",
        "\u180d",
        "\u180f",  # Mongolian free variation selectors
        "\u200b",
        "\u2060",
        "\u2065",
        "\ufe0f",
        "\ufff0",
        "\ufff8",
        "\U000e0000",
        "\U000e0001",
        "\U000e0080",
        "\U000e00ff",
        "\U000e0100",
        "\U000e01ef",
        "\U000e01f0",
        "\U000e0fff",
    ]
    assert all(is_default_ignorable(ch) for ch in ignorable)
    # prepended concatenation marks and interlinear annotation stay visible; spaces are spaces
    visible = ["\u0600", "\u06dd", "\ufff9", " ", "\u00a0", "\u3000", "a", "\u2800", "\ue000"]
    assert not any(is_default_ignorable(ch) for ch in visible)


def test_invisible_set_holds_every_default_ignorable_unassigned_and_private_code_point() -> None:
    for cp in [*range(0x0, 0x30000), *range(0xE0000, 0xE1000)]:
        ch = chr(cp)
        if is_default_ignorable(ch) or unicodedata.category(ch) in ("Cf", "Cn", "Co"):
            assert is_invisible(ch), hex(cp)
    for ch in ["\U000f0000", "\U0010fffd", "\U0010ffff", "\U0003ffff", "\u2800"]:
        assert is_invisible(ch)
    assert not any(is_invisible(ch) for ch in "aZ0 \u00a0\u3000\u0430\u00e9\u4e2d")


def test_other_spaces_are_the_space_separators_but_u0020() -> None:
    zs = {chr(cp) for cp in range(0x110000) if unicodedata.category(chr(cp)) == "Zs"}
    assert set(OTHER_SPACES) == zs - {" "}
    assert set(OTHER_SPACES) > NARROW_SPACES


@pytest.mark.parametrize("family", [f for f in INVISIBLE_FAMILIES if f != "space"])
def test_removes_every_invisible_family_inside_words(family: InvisibleFamily) -> None:
    for ch in _samples(family):
        assert sanitize(f"fr{ch}ee pri{ch}{ch}ze") == "free prize", (family, hex(ord(ch)))


def test_in_word_spaces_are_removed_where_they_split_a_word() -> None:
    vocab = Vocabulary.build(["free prize call now hello world"], max_length=8)
    s = Sanitizer(vocabulary=vocab)
    for ch in OTHER_SPACES:
        cleaned = s.clean(f"fr{ch}ee c{ch}a{ch}l{ch}l now")
        assert cleaned.text == "free call now", hex(ord(ch))
        assert cleaned.invisible == 4
    for ch in NARROW_SPACES:  # narrow ones need no vocabulary: the word still looks whole
        assert sanitize(f"fr{ch}ee unkn{ch}own") == "free unknown"
    # a wide space between two real words stays a word break, and is not counted
    for ch in ("\u00a0", "\u2003", "\u3000"):
        cleaned = s.clean(f"hello{ch}world call{ch}now")
        assert cleaned.text == "hello world call now" and cleaned.invisible == 0
        assert sanitize(f"fr{ch}ee") == "fr ee"  # without a vocabulary: no word to check
    assert s.clean("fr\u200b\u2009ee").text == "free"
    # narrow spaces next to punctuation inside a word, too; not at a word's edge
    assert s.clean("R\u200a*\u200are\u2009veal \u2009x\u2009 (\u2006a").text == "R*reveal  x  (a"
    # letters spaced out by wide spaces are one word, vocabulary or not; two are left alone
    assert sanitize("P\u00a0a\u3000n\u2003a\u00a0s\u00a0o\u00a0n\u00a0i\u00a0c!") == "Panasonic!"
    assert sanitize("a\u00a0b c\u00a0d\u00a0ef") == "a b c d ef"


def test_clean_counts_what_it_removed_and_mapped() -> None:
    cleaned = Sanitizer().clean("fr\u200bee \u0441a\u180bsh \U000e0080")
    assert cleaned == Cleaned("free cash ", invisible=3, confusables=1)
    assert Sanitizer().clean("\u200b\u2065\ufe0f") == Cleaned("", invisible=3, confusables=0)


def test_in_word_space_search_is_linear() -> None:
    # one long word, and many short words linked by spaces: both ~10 ms; quadratic was ~1 s
    texts = ["a" * 50_000, "ab\u00a0" * 16_000 + "x", ("ab " * 20_000) + "\u00a0"]
    for text in texts:
        t0 = time.process_time()
        join_in_word_spaces(text)
        assert time.process_time() - t0 < 0.25


# --- bounded spelling repair ------------------------------------------------------------------


def test_repair_skips_only_words_no_vocabulary_word_is_one_edit_from() -> None:
    vocab = Vocabulary.build(["likely likely remarkable"], max_length=8)
    s = Sanitizer(vocabulary=vocab, repair_spelling=True)
    assert s.max_repair_length == len("remarkable") + 1
    assert s("remarkablee likley") == "remarkable likely"  # longest word + 1 still repaired
    assert s("x" * 5000) == "x" * 5000


def test_repair_budget_is_per_call_and_words_beyond_it_are_left_alone() -> None:
    vocab = Vocabulary.build(["likely gold"], max_length=8)
    found, cost = Sanitizer(vocabulary=vocab).index.neighbours("likley")
    assert found == {"likely"}
    assert Sanitizer(vocabulary=vocab).index.neighbours("likley", cost - 1) == (None, cost)
    # six deletions and the typo looked up; "likely" found under two of them ("likey", "likly")
    assert cost == 6 + 1 + 2
    tight = Sanitizer(vocabulary=vocab, repair_spelling=True, max_repair_work=cost - 1)
    assert tight("likley") == "likley"
    enough = Sanitizer(vocabulary=vocab, repair_spelling=True, max_repair_work=cost)
    assert enough("likley gpld") == "likely gpld"  # gpld's search would exceed the budget
    assert enough("gpld") == "gold"  # a new call, a new budget
    assert enough("likley gpld") == "likely gold"  # both remembered: no search, no cost


def test_edit_variants_are_generated_lazily() -> None:
    assert edit_count("likley") == len(list(iter_edits1("likley"))) == 74 * 6 + 35
    assert edits1("ab") == set(iter_edits1("ab")) - {"ab"}


_WORDS = st.text(alphabet="abcde", min_size=1, max_size=6)


@given(st.lists(_WORDS, max_size=40), _WORDS)
def test_deletion_index_finds_exactly_the_words_one_edit_away(words: list[str], typo: str) -> None:
    index = DeletionIndex([*words, "<unk>", "Caps", "\u00e9t\u00e9"])
    assert index.neighbours(typo)[0] == edits1(typo) & set(words)


def test_repair_cache_is_bounded() -> None:
    vocab = Vocabulary.build(["likely gold"], max_length=8)
    s = Sanitizer(vocabulary=vocab, repair_spelling=True, max_cached_repairs=2)
    assert s("likley gpld zzzz qqqq") == "likely gold zzzz qqqq"
    assert len(s._repairs) == 2


def _sms_vocabulary() -> Vocabulary:
    path = DATASETS / "sms_spam" / "SMSSpamCollection"
    if not path.is_file():
        pytest.skip(f"SMS Spam Collection not found at {path}")
    texts = [line.split("\t", 1)[1] for line in path.read_text(encoding="utf-8").splitlines()]
    return Vocabulary.build(texts, max_length=40)


def _worst_texts(longest: int) -> list[str]:
    """A 5000-letter word, and 5000 characters of distinct unknown words of every length that
    can be repaired (the cache cannot help, every word is searched)."""
    gen = random.Random(0)
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < 5000:
        n = gen.randint(3, longest + 1)
        words.append("".join(gen.choice("bcdfghjklmnpqrstvwxz") for _ in range(n)))
    return ["a" * 5000, " ".join(words)[:5000]]


def test_repair_work_per_call_is_bounded_in_time_and_memory() -> None:
    """Before the caps a 5000-letter word cost 1.3 GB and 10 s."""
    s = Sanitizer(vocabulary=_sms_vocabulary(), repair_spelling=True)
    for text in _worst_texts(s.max_repair_length):
        s._repairs.clear()
        t0 = time.process_time()
        s(text)
        assert time.process_time() - t0 < 2.0  # CPU seconds; the uncapped search took 6-10 s
        s._repairs.clear()
        tracemalloc.start()
        try:
            s(text)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 16 * 2**20


_REPAIR_VOCAB = Vocabulary.build(["likely good gold food words worlds more are cat"], max_length=8)


@given(
    st.lists(
        st.one_of(
            st.sampled_from(["likley", "goid", "gpld", "Wolrds", "mre", "(goid)", "cta!", "a_b"]),
            st.text(alphabet="abcdgiklort-'(!_\u00e9", max_size=8),
        ),
        max_size=12,
    ),
    st.lists(st.sampled_from([" ", "  ", "\t", "\n"]), min_size=13, max_size=13),
)
def test_repair_of_a_text_is_the_repair_of_each_word_core(
    words: list[str], seps: list[str]
) -> None:
    text = "".join(w + sep for w, sep in zip(words, seps, strict=False))
    s = Sanitizer(vocabulary=_REPAIR_VOCAB, repair_spelling=True, confusables=False)
    ws, ss = split_words(text)
    expected = []
    for w in ws:
        pre, core, post = word_core(w)
        expected.append(pre + s.repair_word(core) + post)
    assert s(text) == join_words(expected, ss)
