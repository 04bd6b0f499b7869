"""Training objectives: what loss a batch contributes.

Each objective maps a clean batch to a scalar loss for the model's parameters. Adversarial
objectives craft their perturbations with the shared attack engine, with the model in eval mode
and gradients taken only with respect to the input.

- ``standard``: cross-entropy on clean inputs.
- ``pgd-at``: cross-entropy on PGD examples (Madry et al. 2018).
- ``fast-fgsm``: cross-entropy on FGSM examples from a random start with step 1.25 eps
  (Wong, Rice and Kolter 2020, "Fast is better than free").
- ``trades``: clean cross-entropy plus ``beta`` times the KL divergence between clean and
  adversarial predictions, the adversary maximising that KL (Zhang et al. 2019).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.engine import gradient_attack
from bastion.errors import ConfigError
from bastion.threat import ThreatModel

OBJECTIVES: tuple[str, ...] = ("standard", "pgd-at", "fast-fgsm", "trades")


@dataclass(frozen=True)
class ObjectiveSettings:
    """Settings of an objective's inner maximisation.

    Attributes:
        name: one of :data:`OBJECTIVES`.
        steps: attack steps (pgd-at, trades).
        step_size: step length as a multiple of the (current) eps; default 2.5/steps for PGD
            and 1.25 for fast FGSM.
        random_start: start the attack at a random point of the ball.
        beta: TRADES trade-off weight.
    """

    name: str = "standard"
    steps: int = 10
    step_size: float | None = None
    random_start: bool = True
    beta: float = 6.0

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise ConfigError(
                f"objective: expected one of {', '.join(OBJECTIVES)}, got {self.name!r}"
            )
        if self.steps < 1:
            raise ConfigError(f"attack.steps: expected an integer >= 1, got {self.steps}")
        if self.step_size is not None and self.step_size <= 0:
            raise ConfigError(
                f"attack.step_size: expected a positive multiple of eps, got {self.step_size}"
            )
        if (
            self.name == "pgd-at"
            and self.step_size is not None
            and self.step_size > 1.0
            and self.steps > 1
        ):
            raise ConfigError(
                f"attack.step_size: {self.step_size} x eps is larger than eps for multi-step PGD; "
                "expected a multiple of eps <= 1"
            )
        if self.beta < 0:
            raise ConfigError(f"attack.beta: expected a number >= 0, got {self.beta}")

    @property
    def adversarial(self) -> bool:
        return self.name != "standard"

    def effective_step_size(self) -> float:
        if self.step_size is not None:
            return self.step_size
        return 1.25 if self.name == "fast-fgsm" else 2.5 / self.steps


def _kl_attack(
    model: nn.Module,
    x: Tensor,
    threat: ThreatModel,
    steps: int,
    step: float,
    generator: torch.Generator | None,
) -> Tensor:
    """TRADES' inner maximisation: PGD on KL(p(x) || p(x'))."""
    with torch.no_grad():
        p_clean = F.softmax(model(x), dim=1)
    xa = threat.random_init(x, generator=generator, scale=0.001 / max(threat.eps, 1e-12))
    for _ in range(steps):
        xa = xa.detach().requires_grad_(True)
        with torch.enable_grad():
            kl = F.kl_div(F.log_softmax(model(xa), dim=1), p_clean, reduction="sum")
            (g,) = torch.autograd.grad(kl, xa)
        xa = threat.project(xa.detach() + step * threat.steepest_step(g), x)
    return xa.detach()


def objective_loss(
    settings: ObjectiveSettings,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """``(loss, logits)`` for one batch: the scalar loss to minimise and the logits the loss
    was computed on (adversarial for adversarial objectives), for running accuracy.

    The model is put in eval mode while the attack runs and restored to train mode after.
    """
    if not settings.adversarial or threat.eps == 0:
        logits = model(x)
        return F.cross_entropy(logits, y), logits
    step = settings.effective_step_size() * threat.eps
    model.eval()
    try:
        if settings.name == "trades":
            xa = _kl_attack(model, x, threat, settings.steps, step, generator)
        else:
            steps = 1 if settings.name == "fast-fgsm" else settings.steps
            xa, _ = gradient_attack(
                model,
                x,
                y,
                threat,
                steps=steps,
                step_size=step,
                random_start=settings.random_start,
                early_stop=False,
                generator=generator,
            )
    finally:
        model.train()
    if settings.name == "trades":
        logits_clean = model(x)
        logits_adv = model(xa)
        kl = F.kl_div(
            F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="batchmean"
        )
        return F.cross_entropy(logits_clean, y) + settings.beta * kl, logits_adv
    logits = model(xa)
    return F.cross_entropy(logits, y), logits
