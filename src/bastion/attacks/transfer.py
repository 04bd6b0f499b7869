"""Transfer attacks: examples crafted on a surrogate model, evaluated on the target.

* :class:`MIFGSM`: momentum iterative FGSM (Dong et al. 2018, "Boosting adversarial attacks with
  momentum"), optionally with input diversity (Xie et al. 2019, "Improving transferability of
  adversarial examples with input diversity"). Momentum accumulates l1-normalised gradients,
  ``g <- mu g + grad / ||grad||_1``, and each of the ``T`` steps moves ``eps / T`` along the
  steepest direction of ``g`` in the threat's norm (``sign(g)`` for linf), so the iterates
  stabilise and transfer better than plain I-FGSM's. Input diversity computes each gradient
  through a random resize-and-pad of the input, with probability ``p`` per example.
* :class:`TransferAttack`: runs any bastion attack on a surrogate model (given to the
  constructor), then hands its points to the target; the target model is queried only by the
  base class's final check (one forward pass per example).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from bastion.attacks.base import Attack, Opening
from bastion.attacks.engine import ce_loss
from bastion.attacks.fast_grad import input_gradients_only
from bastion.attacks.registry import build_attack, register
from bastion.attacks.settings import AttackSettings
from bastion.errors import AttackInputError, ConfigError, ModelFileError
from bastion.threat import ThreatModel


def diverse_inputs(
    x: Tensor, prob: float, min_scale: float, fill: float, generator: torch.Generator | None
) -> Tensor:
    """Xie et al.'s input diversity, shape-preserving: with probability ``prob`` per example,
    shrink the image ``(N, C, H, W)`` to a random size in ``[floor(min_scale H), H]`` (nearest
    neighbour, one size per call as in the paper) and pad it back to ``H x W`` at a random
    offset with ``fill``. Differentiable in ``x`` (interpolation and padding are)."""
    n, _, h, w = x.shape
    lo_h, lo_w = max(1, math.floor(min_scale * h)), max(1, math.floor(min_scale * w))
    dev = x.device
    rh = int(torch.randint(lo_h, h + 1, (1,), generator=generator, device=dev))
    rw = int(torch.randint(lo_w, w + 1, (1,), generator=generator, device=dev))
    top = int(torch.randint(0, h - rh + 1, (1,), generator=generator, device=dev))
    left = int(torch.randint(0, w - rw + 1, (1,), generator=generator, device=dev))
    use = torch.rand(n, generator=generator, device=dev) < prob
    small = F.interpolate(x, size=(rh, rw), mode="nearest")
    padded = F.pad(small, (left, w - rw - left, top, h - rh - top), value=fill)
    return torch.where(use.view(-1, 1, 1, 1), padded, x)


class MIFGSMSettings(AttackSettings):
    """Settings of :class:`MIFGSM`."""

    steps: int = Field(default=10, ge=1, description="iterations T, each moving eps / T")
    decay: float = Field(default=1.0, ge=0, description="the momentum factor mu")
    diversity_prob: float = Field(
        default=0.0, ge=0, le=1, description="probability of a random resize-and-pad per input (DI)"
    )
    diversity_scale: float = Field(
        default=0.9, gt=0, le=1, description="smallest resize factor (DI)"
    )


class TransferSettings(AttackSettings):
    """Settings of :class:`TransferAttack`."""

    surrogate: nn.Module | str | Path = Field(
        description="the model the examples are crafted on",
        json_schema_extra={
            "type": "model or path",
            "expected": "a torch nn.Module or the path of a model saved by bastion",
        },
    )
    attack: Attack | dict[str, Any] | None = Field(
        default=None,
        description="the attack run on the surrogate; null: mi-fgsm",
        json_schema_extra={
            "type": "attack spec or null",
            "expected": "an attack or a specification {name: ...} or null",
        },
    )


@register("mi-fgsm", knowledge="white-box", settings=MIFGSMSettings)
class MIFGSM(Attack):
    """Momentum iterative FGSM with optional input diversity (MI-FGSM, DI-MI-FGSM).

    Args:
        steps: iterations ``T`` (10); each moves ``eps / T``.
        decay: the momentum factor ``mu`` (1.0).
        diversity_prob: the probability of transforming each input before a gradient (0: plain
            MI-FGSM; Xie et al. use 0.5). Needs image inputs ``(N, C, H, W)``.
        diversity_scale: the smallest resize factor of the transform (0.9).

    Every example takes every step (the point of a transfer attack is a strong perturbation on
    the surrogate, not the first one that fools it). A targeted call descends the cross-entropy
    of the target. ``queries`` counts ``steps`` forward passes per example.
    """

    def __init__(
        self,
        *,
        steps: int = 10,
        decay: float = 1.0,
        diversity_prob: float = 0.0,
        diversity_scale: float = 0.9,
    ):
        s = MIFGSMSettings.of(locals(), where=self.name)
        self.steps, self.decay = s.steps, float(s.decay)
        self.diversity_prob = float(s.diversity_prob)
        self.diversity_scale = float(s.diversity_scale)

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
        if self.diversity_prob > 0 and x.dim() != 4:
            raise AttackInputError(
                "x: mi-fgsm's input diversity needs images (N, C, H, W), got shape "
                f"{tuple(x.shape)}; set diversity_prob to 0"
            )
        alpha = threat.eps / self.steps
        momentum = torch.zeros_like(x)
        xa = x.clone()
        for _ in range(self.steps):
            xg = xa.detach().requires_grad_(True)
            with torch.enable_grad(), input_gradients_only(model):
                xin = xg
                if self.diversity_prob > 0:
                    xin = diverse_inputs(
                        xg, self.diversity_prob, self.diversity_scale, threat.bounds[0], generator
                    )
                logits = model(xin)
                obj = ce_loss(logits, y) if targets is None else -ce_loss(logits, targets)
                (grad,) = torch.autograd.grad(obj.sum(), xg)
            l1 = grad.flatten(1).abs().sum(dim=1).clamp_min(torch.finfo(grad.dtype).tiny)
            momentum = self.decay * momentum + grad / l1.view(-1, *([1] * (x.dim() - 1)))
            xa = threat.project(xa + alpha * threat.steepest_step(momentum), x)
        queries = torch.full((x.shape[0],), self.steps, dtype=torch.int64, device=x.device)
        return xa, queries


@register("transfer", knowledge="transfer", settings=TransferSettings)
class TransferAttack(Attack):
    """Craft on a surrogate model, evaluate on the target (a black-box transfer attack).

    Args:
        surrogate: the model the examples are crafted on, an ``nn.Module`` with the target's
            input and label spaces, on the same device as the inputs, or the path of a model
            saved by bastion (loaded on the CPU; ``-p surrogate=PATH`` on the command line).
            Held by reference; the attack never trains or moves it.
        attack: the attack run on the surrogate: an :class:`Attack`, a specification
            ``{"name": ..., **settings}`` built through the registry at every call, or None
            for ``MIFGSM()``.

    The target model is touched only by the base class's final check, so ``queries`` is 1 per
    example. The surrogate's own forward passes are not counted against the target.
    """

    def __init__(
        self,
        *,
        surrogate: nn.Module | str | Path,
        attack: Attack | dict[str, Any] | None = None,
    ):
        s = TransferSettings.of(locals(), where=self.name)
        self.surrogate_path: str | None = None
        if isinstance(s.surrogate, nn.Module):
            self.surrogate = s.surrogate
        else:
            from bastion.models.io import load_model

            self.surrogate_path = os.fspath(s.surrogate)
            try:
                self.surrogate = load_model(s.surrogate)
            except ModelFileError as e:
                raise ConfigError(f"transfer.surrogate: {e}") from None
        if isinstance(s.attack, TransferAttack):
            raise ConfigError(
                "transfer.attack: a transfer attack cannot run another transfer attack"
            )
        self.attack: Attack | dict[str, Any] | None = (
            dict(s.attack) if isinstance(s.attack, dict) else s.attack
        )
        if isinstance(self.attack, dict):
            self._build()  # fail early on a bad specification

    def params(self) -> dict[str, Any]:
        """Settings for scorecards: the surrogate appears by class name, not as a module dump."""
        return {
            "surrogate": self.surrogate_path or type(self.surrogate).__name__,
            "attack": self.attack,
        }

    def _build(self) -> Attack:
        if self.attack is None:
            return MIFGSM()
        if isinstance(self.attack, Attack):
            return self.attack
        spec = dict(self.attack)
        if "name" not in spec:
            raise ConfigError("transfer.attack.name: expected an attack name")
        name = spec.pop("name")
        if name == TransferAttack.name:
            raise ConfigError(
                "transfer.attack: a transfer attack cannot run another transfer attack"
            )
        return build_attack(name, spec, where="transfer.attack")

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
        crafted = self._build()(self.surrogate, x, y, threat, targets=targets, generator=generator)
        return crafted.x_adv, torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
