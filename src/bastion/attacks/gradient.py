"""FGSM and PGD, both thin settings objects over :func:`bastion.attacks.engine.gradient_attack`.

- FGSM: Goodfellow, Shlens and Szegedy 2015, "Explaining and harnessing adversarial examples";
  with ``random_start`` the variant of Wong, Rice and Kolter 2020 ("Fast is better than free").
- PGD: Madry et al. 2018, "Towards deep learning models resistant to adversarial attacks".
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bastion.attacks.base import Attack, Opening
from bastion.attacks.engine import LOSSES, check_precision, gradient_attack
from bastion.attacks.registry import register
from bastion.errors import ConfigError
from bastion.threat import ThreatModel


def _check_loss(loss: str, attack: str) -> str:
    if loss not in LOSSES:
        raise ConfigError(f"{attack}.loss: expected one of {', '.join(LOSSES)}, got {loss!r}")
    return loss


@register("fgsm", knowledge="white-box")
class FGSM(Attack):
    """One signed-gradient (linf) or normalised-gradient (l2) step.

    Args:
        step_size: step length as a multiple of eps (1.0 is the classic FGSM; Wong et al.'s
            fast adversarial training uses 1.25 with ``random_start``).
        random_start: start from a uniform random point of the eps-ball.
        loss: ``"ce"`` or ``"cw"``.
        precision: ``"fp32"`` or ``"bf16"`` (gradient under bfloat16 autocast; see
            :func:`bastion.attacks.engine.input_gradient`).
    """

    def __init__(
        self,
        *,
        step_size: float = 1.0,
        random_start: bool = False,
        loss: str = "ce",
        precision: str = "fp32",
    ):
        if not step_size > 0:
            raise ConfigError(
                f"fgsm.step_size: expected a positive multiple of eps, got {step_size}"
            )
        self.step_size = float(step_size)
        self.random_start = bool(random_start)
        self.loss = _check_loss(loss, "fgsm")
        self.precision = check_precision(precision, "fgsm")

    def _run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        threat: ThreatModel,
        *,
        targets: Tensor | None,
        generator: torch.Generator | None,
        opening: Opening,
    ) -> tuple[Tensor, Tensor]:
        return gradient_attack(
            model,
            x,
            y,
            threat,
            steps=1,
            step_size=self.step_size * threat.eps,
            random_start=self.random_start,
            loss=LOSSES[self.loss],
            targets=targets,
            early_stop=False,
            generator=generator,
            precision=self.precision,
        )


@register("pgd", knowledge="white-box")
class PGD(Attack):
    """Projected gradient descent with random start, restarts and per-example early stop.

    Args:
        steps: iterations per restart.
        step_size: step length as a multiple of eps; default ``2.5 / steps`` (Madry et al.).
        restarts: random restarts (each on the examples still robust).
        random_start: start from a uniform random point of the eps-ball.
        loss: ``"ce"`` (cross-entropy) or ``"cw"`` (margin).
        early_stop: keep the first fooling iterate per example (evaluation); False returns the
            last iterate for every example (training).
        precision: ``"fp32"`` or ``"bf16"``: gradients under bfloat16 autocast, about twice
            as fast on CPUs with AVX-512 BF16; successes are confirmed in float32.
    """

    def __init__(
        self,
        *,
        steps: int = 50,
        step_size: float | None = None,
        restarts: int = 1,
        random_start: bool = True,
        loss: str = "ce",
        early_stop: bool = True,
        precision: str = "fp32",
    ):
        if int(steps) < 1:
            raise ConfigError(f"pgd.steps: expected an integer >= 1, got {steps}")
        if int(restarts) < 1:
            raise ConfigError(f"pgd.restarts: expected an integer >= 1, got {restarts}")
        if step_size is not None and not step_size > 0:
            raise ConfigError(
                f"pgd.step_size: expected a positive multiple of eps, got {step_size}"
            )
        self.steps = int(steps)
        self.step_size = float(step_size) if step_size is not None else 2.5 / int(steps)
        self.restarts = int(restarts)
        self.random_start = bool(random_start)
        self.loss = _check_loss(loss, "pgd")
        self.early_stop = bool(early_stop)
        self.precision = check_precision(precision, "pgd")

    def _run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        threat: ThreatModel,
        *,
        targets: Tensor | None,
        generator: torch.Generator | None,
        opening: Opening,
    ) -> tuple[Tensor, Tensor]:
        return gradient_attack(
            model,
            x,
            y,
            threat,
            steps=self.steps,
            step_size=self.step_size * threat.eps,
            random_start=self.random_start,
            restarts=self.restarts,
            loss=LOSSES[self.loss],
            targets=targets,
            early_stop=self.early_stop,
            generator=generator,
            precision=self.precision,
            fooled=~opening.robust if self.early_stop else None,
        )
