"""Adaptive evaluation of text defences: search on a surrogate, judge on the target.

A defence can look robust to a score-based search only because its scores are coarse. A
smoothed classifier that votes (:class:`bastion.text.SmoothedTextClassifier` with
``aggregate="vote"``) answers in steps of ``1 / samples``, so the greedy search, which follows
small drops of the true-class probability, sees most substitutions as no change at all. An
attacker who knows the defence does not need those scores: it can run the same search on a
classifier that answers smoothly and shares the defence's decision (the same noisy copies pooled
by mean probability) and send the result to the real target. This is the adaptive-attack advice
of Tramer, Carlini, Brendel and Madry (2020), "On adaptive attacks to adversarial example
defenses" (NeurIPS), and of Athalye, Carlini and Wagner (2018) for gradient masking.

:class:`SurrogateAttack` runs any text attack on a surrogate and judges every text it produces
on the target (one query for the original, one for the adversarial text). Chained after the
direct attack (:class:`bastion.text.AttackChain`), an example counts as broken when either the
direct search or the transferred one breaks it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from bastion.text.attack_base import TextAttackResult, _checked, check_texts
from bastion.text.classifier import ProbaFn

if TYPE_CHECKING:
    from bastion.text.attack_base import TextAttack
    from bastion.text.word_attacks import AttackChain


class SurrogateAttack:
    """Run ``attack`` against ``surrogate``; report success on the classifier it is called with.

    Args:
        attack: the search (any text attack or chain), run on ``surrogate``.
        surrogate: ``list[str] -> probabilities``: what the attacker searches on.
        label: a short name of the surrogate for the results (``params()``).

    Calling it with a target classifier, texts and labels returns a :class:`TextAttackResult`
    whose ``correct_before`` and ``success`` are the target's (a text counts as fooled only if
    the target misclassifies it) and whose ``queries`` count the surrogate's queries plus the
    two target queries per text.
    """

    name = "surrogate"

    def __init__(self, attack: TextAttack | AttackChain, surrogate: ProbaFn, *, label: str):
        self.attack = attack
        self.surrogate = surrogate
        self.label = label

    def params(self) -> dict[str, object]:
        return {
            "surrogate": self.label,
            "attack": {"name": self.attack.name, **self.attack.params()},
        }

    def __call__(
        self,
        classifier: ProbaFn,
        texts: Sequence[str],
        labels: Sequence[int],
        *,
        generator: torch.Generator | None = None,
    ) -> TextAttackResult:
        texts, labels = check_texts(texts, labels)
        if not texts:
            return TextAttackResult((), (), (), (), (), (), ())
        found = self.attack(self.surrogate, texts, labels, generator=generator)
        y = torch.tensor(labels)
        correct = _checked(classifier(texts), len(texts)).argmax(dim=1) == y
        fooled = _checked(classifier(list(found.adversarial)), len(texts)).argmax(dim=1) != y
        success = [bool(c and f) for c, f in zip(correct.tolist(), fooled.tolist(), strict=True)]
        adversarial = tuple(
            a if s else t for a, s, t in zip(found.adversarial, success, texts, strict=True)
        )
        return TextAttackResult(
            original=tuple(texts),
            adversarial=adversarial,
            labels=tuple(labels),
            correct_before=tuple(bool(c) for c in correct.tolist()),
            success=tuple(success),
            queries=tuple(q + 2 for q in found.queries),
            changed_share=tuple(
                share if s else 0.0 for share, s in zip(found.changed_share, success, strict=True)
            ),
        )
