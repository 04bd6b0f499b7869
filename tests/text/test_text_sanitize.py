from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bastion.text import Sanitizer, TypoNeighbours, UnionCandidates, Vocabulary, sanitize
from bastion.text.unicode_tables import HOMOGLYPHS, INVISIBLE_INSERTIONS


def test_removes_invisible_and_bidi_characters() -> None:
    for ch in INVISIBLE_INSERTIONS:
        assert sanitize(f"fr{ch}ee prize") == "free prize"
    assert sanitize("soft\u00adhyphen \u202eevil\u202c") == "softhyphen evil"


def test_maps_homoglyphs_back_to_latin() -> None:
    attacked = "".join(HOMOGLYPHS[c][0] if c in HOMOGLYPHS else c for c in "cash prize")
    assert attacked != "cash prize"
    assert sanitize(attacked) == "cash prize"
    assert sanitize("W\u0456N \u0430 car") == "WiN a car"


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
