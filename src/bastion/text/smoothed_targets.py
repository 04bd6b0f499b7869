"""Randomized smoothing of a text experiment's hardened targets, evaluated adaptively.

:func:`smooth_hardened` puts :func:`bastion.text.smooth_classifier` (SAFER, Ye et al. 2020;
RanMASK, Zeng et al. 2021) on the ``hardened`` and ``hardened+sanitizer`` targets of an
experiment, as ``hardening.smoothing`` asks, and returns the mean-pooled twins that an adaptive
attacker searches on when the targets vote. :func:`attack_target` runs one attack on one target:
directly (the attack queries the smoothed classifier, its gradient ranking averages over the
noisy copies) and, for a voting target, also through its twin (:class:`SurrogateAttack`, after
Tramer et al. 2020), an example counting as broken when either search breaks it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from bastion.text.attack_base import TextAttack, TextAttackResult
from bastion.text.config import TextSmoothingConfig
from bastion.text.evaluation import attack_metrics
from bastion.text.smoothing import smooth_classifier
from bastion.text.surrogate import SurrogateAttack
from bastion.text.training import SubstitutionTable
from bastion.text.transformer import TransformerTextClassifier
from bastion.text.word_attacks import AttackChain

HARDENED = ("hardened", "hardened+sanitizer")


def smooth_hardened(
    targets: dict[str, Any],
    sm: TextSmoothingConfig,
    *,
    table: SubstitutionTable | Tensor | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(targets, twins)``: ``targets`` with its hardened entries smoothed as ``sm`` says
    (unchanged when smoothing is off), and the mean-pooled twins of the smoothed targets when
    they vote and ``sm.adaptive`` (empty otherwise).

    ``table`` supplies the substitutes when ``sm.substitute_rate > 0``: a
    :class:`SubstitutionTable` over the word vocabulary for a word model, a ``(V, K)`` word-piece
    table for a transformer (its first ``sm.candidates_per_word`` columns are used).
    """
    if not sm.enabled:
        return targets, {}
    if isinstance(table, SubstitutionTable):
        table = table.table
    if table is not None and sm.substitute_rate > 0.0:
        table = table[:, : sm.candidates_per_word].contiguous()
    else:
        table = None

    def smoothed(clf: Any, aggregate: str) -> Any:
        settings: dict[str, Any] = {
            "samples": sm.samples,
            "mask_rate": sm.mask_rate,
            "substitute_rate": sm.substitute_rate,
            "seed": sm.seed,
            "aggregate": aggregate,
        }
        key = "table" if isinstance(clf, TransformerTextClassifier) else "candidates"
        return smooth_classifier(clf, **settings, **{key: table})

    out = {
        name: smoothed(clf, sm.aggregate) if name in HARDENED else clf
        for name, clf in targets.items()
    }
    twins: dict[str, Any] = {}
    if sm.aggregate == "vote" and sm.adaptive:
        twins = {name: smoothed(targets[name], "mean") for name in HARDENED if name in targets}
    return out, twins


def attack_target(
    attack: TextAttack | AttackChain,
    clf: Any,
    twin: Any | None,
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    seed: int,
) -> tuple[TextAttackResult, dict[str, Any]]:
    """Run ``attack`` on ``clf`` (and, given a ``twin``, the search on the twin judged on
    ``clf``); return the result and its metrics (:func:`bastion.text.evaluation.attack_metrics`,
    plus ``adaptive`` and ``direct_success_rate`` with a twin). The generator is seeded with
    ``seed``."""
    run: TextAttack | AttackChain = attack
    if twin is not None:
        run = AttackChain([attack, SurrogateAttack(attack, twin, label="mean-pooled twin")])
    result = run(clf, list(texts), list(labels), generator=torch.Generator().manual_seed(seed))
    metrics = attack_metrics(result)
    if isinstance(run, AttackChain) and twin is not None:
        n_correct = metrics["n_correct"]
        metrics["adaptive"] = "direct search, then search on the mean-pooled twin"
        metrics["direct_success_rate"] = run.last_breakdown[0] / n_correct if n_correct else None
    return result, metrics
