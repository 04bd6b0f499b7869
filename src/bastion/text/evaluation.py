"""Metrics of a text attack: success rate, words perturbed, queries; JSON-ready dicts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bastion.text.attack_base import TextAttackResult
from bastion.text.classifier import ProbaFn


def clean_accuracy(classifier: ProbaFn, texts: Sequence[str], labels: Sequence[int]) -> float:
    """Share of ``texts`` the classifier labels correctly (``nan`` for none)."""
    if not texts:
        return float("nan")
    pred = classifier(list(texts)).argmax(dim=1).tolist()
    return sum(int(p) == int(y) for p, y in zip(pred, labels, strict=True)) / len(texts)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def attack_metrics(result: TextAttackResult) -> dict[str, Any]:
    """Summary of one attack run.

    - ``success_rate``: fooled / correctly classified (the attack-paper convention).
    - ``robust_accuracy``: correct and not fooled / all examples.
    - ``mean_changed_share``: mean share of words perturbed, over successes.
    - ``mean_queries_per_success``: mean queries spent on the successful examples.
    - ``mean_queries``: mean queries over all attacked (correctly classified) examples.
    Means over an empty set are ``None`` (JSON null).
    """
    n = len(result)
    attacked = [i for i in range(n) if result.correct_before[i]]
    won = [i for i in attacked if result.success[i]]
    rate = len(won) / len(attacked) if attacked else None
    return {
        "n": n,
        "n_correct": len(attacked),
        "n_success": len(won),
        "clean_accuracy": len(attacked) / n if n else None,
        "success_rate": rate,
        "robust_accuracy": (len(attacked) - len(won)) / n if n else None,
        "mean_changed_share": _mean([result.changed_share[i] for i in won]),
        "mean_queries_per_success": _mean([float(result.queries[i]) for i in won]),
        "mean_queries": _mean([float(result.queries[i]) for i in attacked]),
    }


def reduction(before: float | None, after: float | None) -> float | None:
    """Relative drop ``1 - after / before`` (``None`` when undefined)."""
    if before is None or after is None or before == 0 or math.isnan(before):
        return None
    return 1.0 - after / before
