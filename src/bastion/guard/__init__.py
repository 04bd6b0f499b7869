"""The runtime guard: validation -> detectors -> prediction -> post-check.

Fit one with :func:`fit_guard` (on a run directory) or :func:`build_guard` (on in-memory
models), save it with :func:`save_guard`, load it with :func:`load_guard`, and call
:meth:`Guard.decide` per batch. :func:`evaluate_guard` measures what it stops at fixed clean
false-positive rates, under standard and guard-aware (adaptive) attacks.
"""

from __future__ import annotations

from bastion.guard.adaptive import AdaptiveGuardAttack
from bastion.guard.config import GuardConfig
from bastion.guard.core import Guard
from bastion.guard.decision import Decision, GuardLike, Verdict
from bastion.guard.evaluate import evaluate_guard
from bastion.guard.fit import build_guard, fit_guard
from bastion.guard.io import load_guard, save_guard

__all__ = [
    "AdaptiveGuardAttack",
    "Decision",
    "Guard",
    "GuardConfig",
    "GuardLike",
    "Verdict",
    "build_guard",
    "evaluate_guard",
    "fit_guard",
    "load_guard",
    "save_guard",
]
