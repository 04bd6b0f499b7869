"""FGSM and PGD, both thin settings objects over :func:`bastion.attacks.engine.gradient_attack`.

- FGSM: Goodfellow, Shlens and Szegedy 2015, "Explaining and harnessing adversarial examples";
  with ``random_start`` the variant of Wong, Rice and Kolter 2020 ("Fast is better than free").
- PGD: Madry et al. 2018, "Towards deep learning models resistant to adversarial attacks".
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from bastion.attacks.base import Attack, Opening
from bastion.attacks.engine import LOSSES, LossName, Precision, gradient_attack
from bastion.attacks.registry import register
from bastion.attacks.settings import AttackSettings
from bastion.threat import ThreatModel


class FGSMSettings(AttackSettings):
    """Settings of :class:`FGSM`."""

    step_size: float = Field(default=1.0, gt=0, description="step length as a multiple of eps")
    random_start: bool = Field(
        default=False, description="start from a uniform random point of the ball"
    )
    loss: LossName = Field(
        default="ce", description="cross-entropy (ce) or Carlini-Wagner margin (cw)"
    )
    precision: Precision = Field(
        default="fp32", description="bf16: gradients under bfloat16 autocast"
    )


class PGDSettings(AttackSettings):
    """Settings of :class:`PGD`."""

    steps: int = Field(default=50, ge=1, description="iterations per restart")
    step_size: float | None = Field(
        default=None, gt=0, description="step length as a multiple of eps; null: 2.5 / steps"
    )
    restarts: int = Field(
        default=1, ge=1, description="random restarts, each on examples still robust"
    )
    random_start: bool = Field(
        default=True, description="start from a uniform random point of the ball"
    )
    loss: LossName = Field(
        default="ce", description="cross-entropy (ce) or Carlini-Wagner margin (cw)"
    )
    early_stop: bool = Field(default=True, description="keep each example's first fooling iterate")
    precision: Precision = Field(
        default="fp32", description="bf16: gradients under bfloat16 autocast"
    )


@register("fgsm", knowledge="white-box", settings=FGSMSettings)
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
        s = FGSMSettings.of(locals(), where=self.name)
        self.step_size = float(s.step_size)
        self.random_start = s.random_start
        self.loss = s.loss
        self.precision = s.precision

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


@register("pgd", knowledge="white-box", settings=PGDSettings)
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
        s = PGDSettings.of(locals(), where=self.name)
        self.steps = s.steps
        self.step_size = float(s.step_size) if s.step_size is not None else 2.5 / s.steps
        self.restarts = s.restarts
        self.random_start = s.random_start
        self.loss = s.loss
        self.early_stop = s.early_stop
        self.precision = s.precision

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
