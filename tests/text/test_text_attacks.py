from __future__ import annotations

import pytest
import torch
from text_fixtures import KeywordClassifier

from bastion.errors import AttackInputError
from bastion.text import (
    AttackChain,
    DeepWordBug,
    HomoglyphAttack,
    InvisibleCharAttack,
    Sanitizer,
    SynonymLexicon,
    TextAttackResult,
    Vocabulary,
    WordSubstitution,
    attack_metrics,
    stop_words,
    typo,
)
from bastion.text.unicode_tables import INVISIBLE_FAMILIES, INVISIBLE_INSERTIONS, family_characters
from bastion.text.words import join_words, split_words, word_core

# Positive texts: hiding or replacing their sentiment words flips the keyword classifier.
TEXTS = [
    "The movie was good and the actors were great .",
    "A charming , wonderful film",
    "what a wonderful story",
    "Excellent!",
]
LABELS = [1, 1, 1, 1]


def test_split_and_join_words_round_trip() -> None:
    for text in ["  two  words ", "", "one", "a\tb\nc "]:
        words, seps = split_words(text)
        assert join_words(words, seps) == text
        assert len(seps) == len(words) + 1


@pytest.mark.parametrize(
    "attack",
    [
        InvisibleCharAttack(),
        *(InvisibleCharAttack(family=f) for f in INVISIBLE_FAMILIES),
        InvisibleCharAttack(characters=INVISIBLE_INSERTIONS[:1]),
        HomoglyphAttack(max_share=0.5),
    ],
    ids=repr,
)
def test_unicode_attacks_fool_keywords_and_are_undone_by_sanitize(attack) -> None:  # type: ignore[no-untyped-def]
    clf = KeywordClassifier()
    result = attack(clf, TEXTS, LABELS, generator=torch.Generator().manual_seed(0))
    assert all(result.correct_before)
    assert all(result.success)
    # a vocabulary lets the sanitiser rejoin words split by wide spaces as well
    guard = Sanitizer(vocabulary=Vocabulary.build(TEXTS, max_length=16))
    for original, adv in zip(result.original, result.adversarial, strict=True):
        assert adv != original
        assert guard(adv) == original
    assert sum(result.queries) == clf.calls


def _inserted(result: TextAttackResult) -> set[str]:
    return {
        ch
        for original, adv in zip(result.original, result.adversarial, strict=True)
        for ch in adv
        if ch not in original
    }


def test_invisible_attack_draws_from_its_family_reproducibly() -> None:
    def run(attack: InvisibleCharAttack, seed: int) -> TextAttackResult:
        return attack(
            KeywordClassifier(), TEXTS, LABELS, generator=torch.Generator().manual_seed(seed)
        )

    for family in INVISIBLE_FAMILIES:
        inserted = _inserted(run(InvisibleCharAttack(family=family), 0))
        members = {chr(cp) for lo, hi in family_characters(family) for cp in range(lo, hi + 1)}
        assert inserted and inserted <= members, family
    assert run(InvisibleCharAttack(), 3) == run(InvisibleCharAttack(), 3)
    assert _inserted(run(InvisibleCharAttack(characters=["\u200b"]), 0)) == {"\u200b"}
    # the whole set: characters of several families, not only the zero-width space
    drawn = set().union(*(_inserted(run(InvisibleCharAttack(), s)) for s in range(4)))
    families = {
        f
        for f in INVISIBLE_FAMILIES
        for ch in drawn
        if any(lo <= ord(ch) <= hi for lo, hi in family_characters(f))
    }
    assert len(families) >= 4
    with pytest.raises(AttackInputError, match="family"):
        InvisibleCharAttack(family="emoji")  # type: ignore[arg-type]


def test_misclassified_examples_are_not_attacked() -> None:
    clf = KeywordClassifier()
    result = InvisibleCharAttack()(clf, ["a good film", "plain words"], [0, 1])
    assert clf.calls == 2
    assert result.correct_before == (False, False)
    assert result.adversarial == ("a good film", "plain words")
    assert result.success == (False, False)
    assert result.queries == (1, 1)
    assert attack_metrics(result)["success_rate"] is None


def test_deepwordbug_edits_at_most_share_and_is_reproducible() -> None:
    clf = KeywordClassifier()
    attack = DeepWordBug(max_share=0.5)
    a = attack(clf, TEXTS, LABELS, generator=torch.Generator().manual_seed(5))
    b = attack(clf, TEXTS, LABELS, generator=torch.Generator().manual_seed(5))
    assert a == b
    assert a.success_rate >= 0.75
    for i, text in enumerate(TEXTS):
        n = len(split_words(text)[0])
        assert a.changed_share[i] <= max(1, int(0.5 * n)) / n + 1e-9


def test_typo_operations() -> None:
    gen = torch.Generator().manual_seed(0)
    assert sorted(typo("great", "swap", gen)) == sorted("great")
    assert len(typo("great", "delete", gen)) == 4
    assert len(typo("great", "insert", gen)) == 6
    sub = typo("great", "substitute", gen)
    assert len(sub) == 5 and sum(a != b for a, b in zip(sub, "great", strict=True)) == 1
    with pytest.raises(AttackInputError, match="op"):
        typo("great", "flip", gen)


def test_word_substitution_uses_synonyms_and_spares_stop_words() -> None:
    clf = KeywordClassifier()
    attack = WordSubstitution(max_share=0.5)
    result = attack(clf, TEXTS, LABELS)
    lexicon = SynonymLexicon()
    stop = stop_words()
    assert all(result.success)
    for original, adv in zip(result.original, result.adversarial, strict=True):
        for w0, w1 in zip(split_words(original)[0], split_words(adv)[0], strict=True):
            if w0 != w1:
                core0, core1 = word_core(w0)[1].lower(), word_core(w1)[1].lower()
                assert core0 not in stop
                assert core1 in lexicon(core0)
    metrics = attack_metrics(result)
    assert 0 < metrics["mean_changed_share"] <= 0.5


def test_gradient_ranking_needs_a_text_classifier() -> None:
    with pytest.raises(AttackInputError, match="TextClassifier"):
        WordSubstitution(ranking="gradient")(KeywordClassifier(), TEXTS, LABELS)


def test_input_validation() -> None:
    with pytest.raises(AttackInputError, match="labels"):
        DeepWordBug()(KeywordClassifier(), TEXTS, LABELS[:2])
    with pytest.raises(AttackInputError, match="class indices below"):
        DeepWordBug()(KeywordClassifier(), TEXTS, [5, 1, 1, 1])
    with pytest.raises(AttackInputError, match="max_share"):
        DeepWordBug(max_share=0.0)


def test_chain_is_the_union_of_its_attacks() -> None:
    word = WordSubstitution(max_share=0.2, candidates=lambda w: [])
    chain = AttackChain([word, InvisibleCharAttack()])
    clf = KeywordClassifier()
    result = chain(clf, TEXTS, LABELS)
    assert not any(word(KeywordClassifier(), TEXTS, LABELS).success)
    assert all(result.success)
    # the second attack re-checks every example it receives; the chain counts that check once
    assert sum(result.queries) == clf.calls - len(TEXTS)
