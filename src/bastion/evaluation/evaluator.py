"""Clean accuracy, robust accuracy per attack, the worst case across attacks, and accuracy
against eps.

Each attack is run on every example the model classifies correctly (an example already
misclassified counts as broken without being attacked). The worst case marks an example robust
only if it survives every attack, so it is never above any single attack's accuracy. Each
(attack, eps) pair draws its randomness from its own seeded generator, so the figures do not
depend on the order of the attack list.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bastion.attacks.base import Attack, predict
from bastion.errors import ConfigError
from bastion.evaluation.state import EvaluationState
from bastion.threat import ThreatModel

EvalProgressFn = Callable[[str, int, int], None]


def eps_key(eps: float) -> str:
    """The scorecard key of an eps value, e.g. ``0.3 -> "0.3"``."""
    return format(float(eps), "g")


@dataclass(frozen=True)
class NamedAttack:
    """An attack with the label it carries in the scorecard."""

    label: str
    attack: Attack


def _seed_for(seed: int, label: str, eps: float) -> int:
    h = hashlib.sha256(f"{seed}:{label}:{eps_key(eps)}".encode()).digest()
    return int.from_bytes(h[:6], "big")


def robust_mask(
    model: nn.Module,
    attack: Attack,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    candidates: Tensor,
    seed: int,
    batch_size: int = 500,
) -> Tensor:
    """``(N,)`` bool: examples among ``candidates`` that the attack fails to break."""
    robust = candidates.clone()
    idx = candidates.nonzero().squeeze(1)
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, idx.numel(), batch_size):
        b = idx[start : start + batch_size]
        res = attack(model, x[b], y[b], threat, generator=gen)
        robust[b] = ~res.success
    return robust


def evaluate_model(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    attacks: Sequence[NamedAttack],
    *,
    eps_grid: Sequence[float] = (),
    seed: int = 0,
    batch_size: int = 500,
    progress: EvalProgressFn | None = None,
    state: EvaluationState | None = None,
    model_id: str = "model",
) -> dict[str, Any]:
    """Evaluate ``model`` on ``(x, y)`` ``(N, ...)``/``(N,)``.

    Returns a JSON-able dict with ``clean_accuracy``, ``worst_case_accuracy`` (at
    ``threat.eps``), ``attacks`` (``{label: {eps_key: accuracy}}`` for every eps of the grid),
    ``accuracy_vs_eps``
    (``{"eps": [...], "worst_case": [...], "per_attack": {label: [...]}}``) and
    ``evaluation_seconds``, with ``attack_seconds`` (``{label: {eps_key: seconds}}``, the
    wall-clock time of each attack run in this call; resumed pairs have none). All accuracies
    are fractions in [0, 1] of all ``N`` examples.

    With a ``state``, each finished (attack, eps) pair is recorded under ``model_id`` and a
    pair already recorded is not run again (a resumed evaluation gives the same figures: each
    pair draws from its own seeded generator).
    """
    labels = [a.label for a in attacks]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"evaluation.attacks: labels must be unique, got {labels}")
    start = time.perf_counter()
    model.eval()
    n = x.shape[0]
    if n == 0:
        raise ConfigError("evaluation.examples: no examples to evaluate")
    correct = predict(model, x) == y
    clean = float(correct.float().mean())
    grid = sorted({float(e) for e in eps_grid} | {threat.eps})
    per_attack: dict[str, list[float]] = {a.label: [] for a in attacks}
    seconds: dict[str, dict[str, float]] = {a.label: {} for a in attacks}
    worst: list[float] = []
    total = len(grid) * len(attacks)
    done = 0
    for eps in grid:
        t = threat.with_eps(eps)
        worst_mask = correct.clone()
        for na in attacks:
            key = EvaluationState.key(model_id, na.label, eps_key(eps))
            recorded = state.get(key, n) if state is not None and eps != 0 else None
            if eps == 0:
                mask = correct.clone()
            elif recorded is not None:
                mask = recorded
            else:
                t0 = time.perf_counter()
                mask = robust_mask(
                    model,
                    na.attack,
                    x,
                    y,
                    t,
                    candidates=correct,
                    seed=_seed_for(seed, na.label, eps),
                    batch_size=batch_size,
                )
                seconds[na.label][eps_key(eps)] = round(time.perf_counter() - t0, 3)
                if state is not None:
                    state.put(key, mask)
            per_attack[na.label].append(float(mask.float().mean()))
            worst_mask &= mask
            done += 1
            if progress is not None:
                progress(f"{na.label} eps={eps_key(eps)}", done, total)
        worst.append(float(worst_mask.float().mean()) if attacks else clean)
    at = grid.index(threat.eps)
    return {
        "clean_accuracy": clean,
        "worst_case_accuracy": worst[at],
        "attacks": {
            label: {eps_key(e): v for e, v in zip(grid, vals, strict=True)}
            for label, vals in per_attack.items()
        },
        "accuracy_vs_eps": {"eps": grid, "worst_case": worst, "per_attack": per_attack},
        "n_eval": n,
        "attack_seconds": seconds,
        "evaluation_seconds": round(time.perf_counter() - start, 3),
    }
