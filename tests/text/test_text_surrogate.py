"""Adaptive text evaluation: search on a surrogate, judge on the target."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from text_fixtures import synthetic_corpus, tiny_word_cnn_classifier

from bastion.errors import AttackInputError
from bastion.text import (
    AttackChain,
    SmoothedTextClassifier,
    SurrogateAttack,
    SynonymLexicon,
    TextClassifier,
    WordSubstitution,
    parse_text_config,
    run_text_experiment,
)


@pytest.fixture(scope="module")
def base() -> TextClassifier:
    torch.set_num_threads(1)
    return tiny_word_cnn_classifier()


def _texts() -> tuple[list[str], list[int]]:
    texts, labels = synthetic_corpus(24, seed=5)
    return list(texts), list(labels)


class _Flipped:
    """A target that always answers the opposite of ``inner`` (to check who judges)."""

    def __init__(self, inner: TextClassifier):
        self.inner = inner

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        return self.inner(texts).flip(1)


def test_success_is_judged_on_the_target(base: TextClassifier) -> None:
    texts, labels = _texts()
    attack = WordSubstitution(candidates=SynonymLexicon(), max_share=0.5)
    on_itself = SurrogateAttack(attack, base, label="itself")(base, texts, labels)
    direct = attack(base, texts, labels)
    assert on_itself.success == direct.success  # surrogate == target: the plain attack
    assert on_itself.correct_before == direct.correct_before
    assert all(q == d + 2 for q, d in zip(on_itself.queries, direct.queries, strict=True))
    # a target that disagrees everywhere: what fools the surrogate does not fool it
    flipped = SurrogateAttack(attack, base, label="base")(_Flipped(base), texts, labels)
    assert flipped.correct_before == tuple(not c for c in direct.correct_before)
    for i, ok in enumerate(flipped.success):
        assert not ok or (flipped.correct_before[i] and flipped.adversarial[i] != texts[i])
    for i in range(len(texts)):
        if not flipped.success[i]:
            assert flipped.adversarial[i] == texts[i] and flipped.changed_share[i] == 0.0


def test_chain_with_surrogate_breaks_at_least_as_many_and_counts_each(
    base: TextClassifier,
) -> None:
    texts, labels = _texts()
    voting, twin = (
        SmoothedTextClassifier(
            base,
            samples=8,
            mask_rate=0.3,
            substitute_rate=0.3,
            candidates=SynonymLexicon(),
            aggregate=pooling,
        )
        for pooling in ("vote", "mean")
    )
    attack = WordSubstitution(candidates=SynonymLexicon(), max_share=0.5)
    direct = attack(voting, texts, labels)
    chain = AttackChain([attack, SurrogateAttack(attack, twin, label="mean-pooled twin")])
    both = chain(voting, texts, labels)
    assert sum(both.success) >= sum(direct.success)
    assert sum(chain.last_breakdown) == sum(both.success)
    assert chain.last_breakdown[0] == sum(direct.success)
    fooled = voting([both.adversarial[i] for i in range(len(texts)) if both.success[i]])
    wrong = [labels[i] for i in range(len(texts)) if both.success[i]]
    assert (fooled.argmax(dim=1) != torch.tensor(wrong, dtype=torch.long)).all()
    described = chain.params()["attacks"]
    assert isinstance(described, list) and described[1]["surrogate"] == "mean-pooled twin"


def test_empty_and_bad_input(base: TextClassifier) -> None:
    attack = SurrogateAttack(WordSubstitution(), base, label="x")
    res = attack(base, [], [])
    assert len(res) == 0 and res.success_rate == 0.0
    with pytest.raises(AttackInputError, match="labels: expected 0 labels, got 1"):
        attack(base, [], [1])
    with pytest.raises(AttackInputError, match="classifier: expected a tensor"):
        attack(lambda texts: [0.5, 0.5], ["a good film"], [1])  # type: ignore[arg-type,return-value]


def test_experiment_reports_adaptive_vote_figures(tmp_path: Path) -> None:
    texts, labels = synthetic_corpus(160, seed=2)
    lines = [f"{'spam' if y else 'ham'}\t{t}" for t, y in zip(texts, labels, strict=True)]
    (tmp_path / "SMSSpamCollection").write_text("\n".join(lines) + "\n", encoding="utf-8")
    base_cfg = {
        "dataset": "sms_spam",
        "vocab": {"max_length": 16},
        "model": {"embed_dim": 16, "num_filters": 8, "dropout": 0.1},
        "training": {"epochs": 2, "batch_size": 16, "lr": 0.01},
        "attack": {"candidates": "lexicon"},
        "attacks": ["word_substitution"],
        "n_attack": 8,
    }
    smoothing = {"enabled": True, "samples": 4, "substitute_rate": 0.2, "aggregate": "vote"}
    out = run_text_experiment(
        parse_text_config({**base_cfg, "hardening": {"smoothing": smoothing}}),
        tmp_path,
        tmp_path / "run",
        seed=0,
    )
    json.dumps(out)
    word = out["attacks"]["word_substitution"]
    for name in ("hardened", "hardened+sanitizer"):
        m = word[name]
        assert m["adaptive"].startswith("direct search")
        assert m["direct_success_rate"] is None or m["direct_success_rate"] <= m["success_rate"]
    assert "adaptive" not in word["standard"]
    off = {**smoothing, "adaptive": False}
    out_off = run_text_experiment(
        parse_text_config({**base_cfg, "hardening": {"smoothing": off}}),
        tmp_path,
        tmp_path / "run-off",
        seed=0,
    )
    assert "adaptive" not in out_off["attacks"]["word_substitution"]["hardened"]
