"""How much a guard stops, at fixed false-positive rates on clean inputs.

For each target rate (1% and 5% by default) the guard's thresholds are re-derived from its clean
calibration scores; then, on held-out labelled data:

* clean: the share of clean inputs on which some layer fires (the realised false-positive
  rate) and the accuracy of the answers;
* standard attacks (PGD, APGD from the attack library) against the deployed classifier alone,
  which do not know the guard: an attacked input is *stopped* when the guard detects it (any
  layer fires, it abstains or rejects) or answers it correctly;
* the adaptive attack of :mod:`bastion.guard.adaptive`, which attacks the classifier and every
  detector together (Carlini & Wagner 2017), and the worst case per example over all attacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from bastion.attacks.base import Attack, predict
from bastion.attacks.registry import build_attack
from bastion.guard.adaptive import AdaptiveGuardAttack
from bastion.guard.core import Guard
from bastion.threat import ThreatModel


def _rate(mask: Tensor) -> float:
    return round(float(mask.float().mean()), 4) if mask.numel() else 0.0


def evaluate_guard(
    guard: Guard,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    attacks: Sequence[str | Attack] = ("pgd", "apgd"),
    adaptive: bool = True,
    seed: int,
    fprs: Sequence[float] = (0.01, 0.05),
    adaptive_attack: AdaptiveGuardAttack | None = None,
) -> dict[str, Any]:
    """Evaluate ``guard`` on held-out clean ``x`` ``(N, ...)``, ``y`` ``(N,)``.

    Args:
        model: the classifier the standard attacks target (the guard's deployed model).
        attacks: registered attack names (default settings) or attack objects.
        adaptive: also run the guard-aware attack (at each rate, since it knows thresholds).
        seed: all attack randomness.
        fprs: the clean false-positive rates to set the guard to.

    Returns:
        A JSON-ready dict: ``{"examples", "threat", "seed", "model_clean_accuracy",
        "attacks": {name: model_success}, "fpr": {"0.01": {"clean": {...}, "standard":
        {name: {"detected", "stopped"}}, "adaptive": {...}, "worst_case_stopped"}, ...}}``.
    """
    x, y = x.detach().float(), y.long()
    built: list[tuple[str, Attack]] = []
    for i, a in enumerate(attacks):
        atk = build_attack(a, where=f"guard.evaluate.attacks[{i}]") if isinstance(a, str) else a
        label = a if isinstance(a, str) else atk.name
        built.append((label, atk))
    adv: dict[str, Tensor] = {}
    result: dict[str, Any] = {
        "examples": int(x.shape[0]),
        "threat": threat.to_dict(),
        "seed": seed,
        "model_clean_accuracy": _rate(predict(model, x) == y),
        "attacks": {},
        "fpr": {},
    }
    for i, (name, atk) in enumerate(built):
        res = atk(model, x, y, threat, generator=torch.Generator().manual_seed(seed + i))
        adv[name] = res.x_adv
        result["attacks"][name] = {"model_success": _rate(res.success)}
    for j, fpr in enumerate(fprs):
        g = guard.with_fpr(fpr)
        entry, worst = _at_rate(g, x, y, adv)
        if adaptive:
            attack = adaptive_attack or AdaptiveGuardAttack()
            gen = torch.Generator().manual_seed(seed + 1000 + j)
            entry["adaptive"], broken = _adaptive(g, attack, x, y, threat, gen)
            worst &= ~broken
        entry["worst_case_stopped"] = _rate(worst)
        result["fpr"][f"{fpr:g}"] = entry
    return result


def _at_rate(
    g: Guard, x: Tensor, y: Tensor, adv: dict[str, Tensor]
) -> tuple[dict[str, Any], Tensor]:
    """At one false-positive rate: the guard on clean ``x`` (share fired, accuracy, share
    answered and the accuracy of the answers) and on each standard attack's inputs (share
    detected, share stopped: detected or answered correctly), and the ``(N,)`` mask of the
    inputs every standard attack's version of which was stopped."""
    det, cor, ans = g.outcome(x, y)
    answered_correct = cor.float().sum() / ans.float().sum().clamp_min(1)
    entry: dict[str, Any] = {
        "clean": {
            "fired": _rate(det),
            "accuracy": _rate(cor),
            "answered": _rate(ans),
            "answered_accuracy": round(float(answered_correct), 4),
        },
        "standard": {},
    }
    worst = torch.ones(x.shape[0], dtype=torch.bool)
    for name, xa in adv.items():
        d, c, _ = g.outcome(xa, y)
        stopped = d | c
        worst &= stopped
        entry["standard"][name] = {"detected": _rate(d), "stopped": _rate(stopped)}
    return entry, worst


def _adaptive(
    g: Guard,
    attack: AdaptiveGuardAttack,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    gen: torch.Generator,
) -> tuple[dict[str, Any], Tensor]:
    """The guard-aware attack at one rate: its entry (share detected, share stopped, its
    settings) and the ``(N,)`` mask of the inputs it broke."""
    xa, broken = attack.run(g, x, y, threat, generator=gen)
    d, _, _ = g.outcome(xa, y)
    entry = {
        "detected": _rate(d),
        "stopped": _rate(~broken),
        "settings": {
            "steps": attack.steps,
            "lambdas": list(attack.lambdas),
            "kappa": attack.kappa,
        },
    }
    return entry, broken
