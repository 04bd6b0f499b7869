"""Word-substitution attack under constraints (TextFooler, Jin et al., 2020) and the
worst-case chain of several text attacks.

:class:`WordSubstitution` ranks words by importance (black-box: deletion scores; white-box:
gradient x embedding), then greedily replaces them with candidates from a synonym lexicon
and/or embedding neighbours above a cosine threshold (see :mod:`bastion.text.candidates`).
Stop words are never changed and at most ``max_share`` of the words are. :class:`CombinedAttack`
(``combined``) is the worst case of word substitution, DeepWordBug typos and homoglyphs. Both
are registered in the text channel of the attack registry (``word_substitution``,
``combined``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field

from bastion.attacks.registry import register
from bastion.attacks.settings import AttackSettings
from bastion.errors import AttackInputError
from bastion.text.attack_base import (
    Ranking,
    TextAttack,
    TextAttackBase,
    TextAttackResult,
    TextBatch,
    _Example,
    max_edits,
)
from bastion.text.candidates import CandidateSource, SynonymLexicon, stop_words
from bastion.text.char_attacks import DeepWordBug, HomoglyphAttack
from bastion.text.classifier import ProbaFn
from bastion.text.words import join_words, match_case, word_core

if TYPE_CHECKING:
    from bastion.text.surrogate import SurrogateAttack


def _python_only(default: Any, what: str, description: str) -> Any:
    """A setting that holds a Python object (a function, a set of words): from the Python API
    only; a YAML config leaves it at its default."""
    return Field(
        default=default,
        description=description,
        json_schema_extra={"type": f"{what} (Python API)", "expected": what},
    )


_CANDIDATES = "word -> replacements, most similar first (null: the bundled lexicon)"
_CONSTRAINT = "(original, candidate texts) -> which candidates may be tried (null: none)"
_WORD_SHARE = "at most this share of the words is replaced (at least one word)"


class WordSubstitutionSettings(AttackSettings):
    """Settings of :class:`WordSubstitution`."""

    candidates: Any = _python_only(None, "a candidate source", _CANDIDATES)
    ranking: Ranking = Field(default="delete", description="word ranking: delete or gradient")
    max_share: float = Field(default=0.3, gt=0, le=1, description=_WORD_SHARE)
    max_candidates: int = Field(default=30, ge=1, description="candidates tried per word")
    stop: Any = _python_only(None, "a collection of words", "words never replaced (null: bundled)")
    constraint: Any = _python_only(None, "a constraint function", _CONSTRAINT)


@register(
    "word_substitution",
    knowledge="score-based",
    settings=WordSubstitutionSettings,
    channel="text",
)
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


class AttackChain(TextAttackBase):
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

    def _attack(self, batch: TextBatch) -> TextAttackResult:
        """Run the attacks in turn on the examples still standing (each within the batch's
        threat when it has one; a surrogate search takes none)."""
        texts, labels = batch.texts, batch.labels
        first = _call(self.attacks[0], batch, texts, labels)
        adversarial = list(first.adversarial)
        success = list(first.success)
        queries = list(first.queries)
        shares = list(first.changed_share)
        breakdown = [sum(first.success)] + [0] * (len(self.attacks) - 1)
        for k, attack in enumerate(self.attacks[1:], start=1):
            todo = [i for i in range(len(texts)) if first.correct_before[i] and not success[i]]
            if not todo:
                break
            res = _call(attack, batch, [texts[i] for i in todo], [labels[i] for i in todo])
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


def _call(
    attack: TextAttackBase | SurrogateAttack, batch: TextBatch, texts: list[str], labels: list[int]
) -> TextAttackResult:
    """``attack`` on ``texts`` with the batch's classifier, generator and threat."""
    clf, gen = batch.classifier, batch.generator
    if batch.threat is None or not isinstance(attack, TextAttackBase):
        return attack(clf, texts, labels, generator=gen)
    return attack(clf, texts, labels, generator=gen, threat=batch.threat)


class CombinedSettings(WordSubstitutionSettings):
    """Settings of :class:`CombinedAttack`: the word substitution's, and ``char_max_share``."""

    char_max_share: float = Field(
        default=0.3, gt=0, le=1, description="max_share of the typo and homoglyph attacks"
    )


@register("combined", knowledge="score-based", settings=CombinedSettings, channel="text")
class CombinedAttack(AttackChain):
    """Character and word attacks together: the worst case of :class:`WordSubstitution`, then
    :class:`~bastion.text.DeepWordBug` typos, then :class:`~bastion.text.HomoglyphAttack`
    (an :class:`AttackChain` of the three).

    Args:
        char_max_share: ``max_share`` of the typo and homoglyph attacks.
        word: the :class:`WordSubstitution`'s settings (``candidates``, ``ranking``,
            ``max_share``, ``max_candidates``, ``stop``, ``constraint``).
    """

    def __init__(self, *, char_max_share: float = 0.3, **word: Any):
        chars = [DeepWordBug(max_share=char_max_share), HomoglyphAttack(max_share=char_max_share)]
        super().__init__([WordSubstitution(**word), *chars])
