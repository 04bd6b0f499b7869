"""Learning-rate and eps schedules, as pure functions of training progress.

``progress`` runs from 0 at the first step to 1 after the last, so schedules are independent of
the batch size and number of epochs.
"""

from __future__ import annotations

import math
from typing import Literal

from bastion.errors import ConfigError

ScheduleName = Literal["cyclic", "cosine", "constant", "step"]
SCHEDULES: tuple[str, ...] = ("cyclic", "cosine", "constant", "step")


def learning_rate(schedule: str, lr_max: float, progress: float, *, peak: float = 0.4) -> float:
    """Learning rate at ``progress`` in [0, 1].

    - ``cyclic``: one triangular cycle, 0 -> ``lr_max`` at ``peak`` -> 0 (Smith 2017; the
      schedule of Wong et al. 2020's fast adversarial training).
    - ``cosine``: ``lr_max`` decaying to 0 along half a cosine.
    - ``step``: ``lr_max``, divided by 10 at 50% and again at 75% of training (Madry et al.).
    - ``constant``: ``lr_max``.
    """
    p = min(max(progress, 0.0), 1.0)
    if schedule == "cyclic":
        return lr_max * (p / peak if p < peak else (1.0 - p) / (1.0 - peak))
    if schedule == "cosine":
        return lr_max * 0.5 * (1.0 + math.cos(math.pi * p))
    if schedule == "step":
        return lr_max * (1.0 if p < 0.5 else 0.1 if p < 0.75 else 0.01)
    if schedule == "constant":
        return lr_max
    raise ConfigError(
        f"training.schedule: expected one of {', '.join(SCHEDULES)}, got {schedule!r}"
    )


def ramped_eps(
    eps: float, progress_epochs: float, ramp_epochs: float, *, start_fraction: float = 0.0
) -> float:
    """Training eps during a linear ramp (a curriculum that grows adversarial exposure).

    Starts at ``start_fraction * eps`` and reaches ``eps`` after ``ramp_epochs`` epochs
    (``progress_epochs`` counts fractional epochs); constant afterwards.
    """
    if ramp_epochs <= 0 or progress_epochs >= ramp_epochs:
        return eps
    frac = start_fraction + (1.0 - start_fraction) * (progress_epochs / ramp_epochs)
    return eps * frac


def attack_steps(phases: tuple[tuple[int, int], ...], epoch: int, default: int) -> int:
    """Attack steps in ``epoch`` (1-based) under an attack-step curriculum.

    ``phases`` is ``((first_epoch, steps), ...)`` with increasing first epochs: from
    ``first_epoch`` on, the attack takes ``steps`` steps (cheap attacks early, when the model is
    weak and a few steps already find its worst case; more later). Before the first phase, and
    with no phases, ``default``.
    """
    steps = default
    for first, k in phases:
        if epoch >= first:
            steps = k
    return steps


def check_phases(phases: tuple[tuple[int, int], ...], epochs: int) -> None:
    """Raise :class:`ConfigError` naming ``training.step_phases`` unless the phases start at
    increasing epochs within ``1..epochs`` and each has at least one step."""
    prev = 0
    for i, phase in enumerate(phases):
        if len(phase) != 2:
            raise ConfigError(
                f"training.step_phases[{i}]: expected [first_epoch, steps], got {list(phase)}"
            )
        first, k = phase
        if not prev < first <= epochs:
            raise ConfigError(
                f"training.step_phases[{i}]: first epoch {first} must be in {prev + 1}..{epochs} "
                f"(increasing, within epochs={epochs})"
            )
        if k < 1:
            raise ConfigError(f"training.step_phases[{i}]: expected steps >= 1, got {k}")
        prev = first
