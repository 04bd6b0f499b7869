"""Word-substitution attack under constraints (TextFooler, Jin et al., 2020) and the
worst-case chain of several text attacks.

:class:`WordSubstitution` ranks words by importance (black-box: deletion scores; white-box:
gradient x embedding), then greedily replaces them with candidates from a synonym lexicon
and/or embedding neighbours above a cosine threshold (see :mod:`bastion.text.candidates`).
Stop words are never changed and at most ``max_share`` of the words are.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

import torch

from bastion.errors import AttackInputError
from bastion.text.attack_base import (
    Ranking,
    TextAttack,
    TextAttackResult,
    _Example,
    check_texts,
    max_edits,
)
from bastion.text.candidates import CandidateSource, SynonymLexicon, stop_words
from bastion.text.classifier import ProbaFn
from bastion.text.words import join_words, match_case, word_core

if TYPE_CHECKING:
    from bastion.text.surrogate import SurrogateAttack


class WordSubstitution(TextAttack):
    """TextFooler-style greedy word substitution.

    Args:
        candidates: ``word -> replacements`` (most similar first); default: the bundled
            synonym lexicon.
        ranking: ``"delete"`` (black-box, Jin et al. eq. 2) or ``"gradient"`` (white-box).
        max_share: at most this share of words is replaced (at least one word).
        max_candidates: candidates tried per word.
        stop: words never replaced (default: the bundled stop-word list).
        constraint: optional ``(original text, candidate texts) -> (N,) bool`` that a
            substitution must pass (e.g. :class:`bastion.text.transformer.SentenceConstraint`,
            TextFooler's sentence-similarity check); rejected candidates cost no query.
    """

    name = "word_substitution"

    def __init__(
        self,
        *,
        candidates: CandidateSource | None = None,
        ranking: Ranking = "delete",
        max_share: float = 0.3,
        max_candidates: int = 30,
        stop: Collection[str] | None = None,
        constraint: Callable[[str, list[str]], Sequence[bool]] | None = None,
    ):
        if not 0.0 < max_share <= 1.0:
            raise AttackInputError(f"max_share: expected 0 < max_share <= 1, got {max_share!r}")
        if ranking not in ("delete", "gradient", "replace", "none"):
            raise AttackInputError(f"ranking: expected 'delete' or 'gradient', got {ranking!r}")
        self.candidates: CandidateSource = (
            candidates if candidates is not None else SynonymLexicon()
        )
        self.ranking: Ranking = ranking
        self.max_share = float(max_share)
        self.max_candidates = max_candidates
        self.stop = frozenset(stop) if stop is not None else stop_words()
        self.constraint = constraint

    def _replaceable(self, word: str) -> bool:
        core = word_core(word)[1]
        return core.isalpha() and core.lower() not in self.stop

    def _attack_words(
        self, ex: _Example, classifier: ProbaFn, generator: torch.Generator
    ) -> list[str]:
        eligible = [i for i, w in enumerate(ex.words) if self._replaceable(w)]
        order = self.rank_words(ex, classifier, eligible, self.ranking)

        def propose(word: str) -> list[str]:
            pre, core, post = word_core(word)
            found = self.candidates(core.lower())[: self.max_candidates]
            return [pre + match_case(core, c) + post for c in found if c.lower() not in self.stop]

        keep = None
        if self.constraint is not None:
            constraint, original = self.constraint, join_words(ex.words, ex.seps)

            def keep(trials: list[list[str]]) -> list[bool]:
                return list(constraint(original, [join_words(t, ex.seps) for t in trials]))

        budget = max_edits(self.max_share, len(ex.words))
        return self.greedy(ex, order, propose, budget, keep)


class AttackChain:
    """Worst case over several text attacks, cheapest first (the text form of a cascade).

    Each attack runs only on examples that all earlier attacks failed on; an example counts as
    broken when any attack breaks it, with the adversarial text of the first that did. Queries
    add up over the attacks that ran on the example (the shared first check counted once).
    After a call, ``last_breakdown`` holds how many examples each attack broke, in order.
    """

    name = "chain"

    def __init__(self, attacks: Sequence[TextAttack | AttackChain | SurrogateAttack]):
        if not attacks:
            raise AttackInputError("attacks: expected at least one attack")
        self.attacks = tuple(attacks)
        self.last_breakdown: tuple[int, ...] = ()

    def params(self) -> dict[str, object]:
        return {"attacks": [{"name": a.name, **a.params()} for a in self.attacks]}

    def __call__(
        self,
        classifier: ProbaFn,
        texts: Sequence[str],
        labels: Sequence[int],
        *,
        generator: torch.Generator | None = None,
    ) -> TextAttackResult:
        texts, labels = check_texts(texts, labels)
        first = self.attacks[0](classifier, texts, labels, generator=generator)
        adversarial = list(first.adversarial)
        success = list(first.success)
        queries = list(first.queries)
        shares = list(first.changed_share)
        breakdown = [sum(first.success)] + [0] * (len(self.attacks) - 1)
        for k, attack in enumerate(self.attacks[1:], start=1):
            todo = [i for i in range(len(texts)) if first.correct_before[i] and not success[i]]
            if not todo:
                break
            res = attack(
                classifier, [texts[i] for i in todo], [labels[i] for i in todo], generator=generator
            )
            for j, i in enumerate(todo):
                queries[i] += res.queries[j] - 1
                if res.success[j]:
                    success[i] = True
                    adversarial[i] = res.adversarial[j]
                    shares[i] = res.changed_share[j]
                    breakdown[k] += 1
        self.last_breakdown = tuple(breakdown)
        return TextAttackResult(
            original=first.original,
            adversarial=tuple(adversarial),
            labels=first.labels,
            correct_before=first.correct_before,
            success=tuple(success),
            queries=tuple(queries),
            changed_share=tuple(shares),
        )
