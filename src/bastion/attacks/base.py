"""The attack contract.

An attack holds settings only (keyword-only hyperparameters; no model, no device, no data). The
one final :meth:`Attack.__call__` validates the inputs, runs the attack, projects its output onto
the threat model and re-checks success, so no attack can return an input outside its threat
model or report a success the model does not confirm.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, final

import torch
from torch import Tensor, nn

from bastion.errors import AttackInputError
from bastion.threat import ThreatModel


@dataclass(frozen=True)
class AttackResult:
    """What an attack returns.

    Attributes:
        x_adv: adversarial inputs ``(N, *input_shape)``, inside the threat model.
        success: ``(N,)`` bool: the model misclassifies ``x_adv`` (untargeted) or predicts the
            target (targeted), checked by a fresh forward pass.
        queries: ``(N,)`` int64: forward passes the attack spent on each example.
    """

    x_adv: Tensor
    success: Tensor
    queries: Tensor

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if self.success.numel() else 0.0


def validate_batch(
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    targets: Tensor | None = None,
    num_classes: int | None = None,
) -> None:
    """Raise :class:`AttackInputError` for inputs an attack cannot take."""
    threat.validate_inputs(x, name="x")
    if x.dim() < 2:
        raise AttackInputError(f"x: expected a batch of shape (N, ...), got shape {tuple(x.shape)}")
    for name, t in (("y", y), ("targets", targets)):
        if t is None:
            continue
        if not isinstance(t, Tensor) or t.dtype not in (torch.int64, torch.int32):
            raise AttackInputError(
                f"{name}: expected an integer tensor of class indices, got "
                f"{getattr(t, 'dtype', type(t).__name__)}"
            )
        if t.shape != (x.shape[0],):
            raise AttackInputError(
                f"{name}: expected shape ({x.shape[0]},) to match x, got {tuple(t.shape)}"
            )
        if t.numel() and (
            int(t.min()) < 0 or (num_classes is not None and int(t.max()) >= num_classes)
        ):
            upper = num_classes if num_classes is not None else "inf"
            raise AttackInputError(
                f"{name}: class indices must lie in [0, {upper}), "
                f"got range [{int(t.min())}, {int(t.max())}]"
            )


def predict(model: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    """Predicted classes ``(N,)`` without building a graph."""
    with torch.no_grad():
        if x.shape[0] <= batch_size:
            out: Tensor = model(x).argmax(dim=1)
            return out
        return torch.cat(
            [model(x[i : i + batch_size]).argmax(dim=1) for i in range(0, x.shape[0], batch_size)]
        )


def ranked_other_classes(logits: Tensor, y: Tensor, k: int) -> Tensor:
    """``(N, k)``: the ``k`` classes other than ``y`` with the highest logits, best first."""
    order = logits.argsort(dim=1, descending=True)
    not_y = order != y[:, None]
    return order[not_y].view(logits.shape[0], logits.shape[1] - 1)[:, :k]


class Attack(ABC):
    """Base class of every evasion attack. Subclasses implement :meth:`_run` only."""

    name: ClassVar[str] = "attack"

    def params(self) -> dict[str, Any]:
        """The attack's settings (for scorecards and repr)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    @final
    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        threat: ThreatModel,
        *,
        targets: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> AttackResult:
        """Attack ``model`` on ``(x, y)`` within ``threat``.

        Args:
            model: maps ``(N, *input_shape)`` inputs in ``threat.bounds`` to logits ``(N, C)``.
            x: clean inputs; y: true labels ``(N,)`` int64.
            targets: for a targeted attack, the classes to reach ``(N,)``; None is untargeted.
            generator: the source of all randomness (same seed, same result).
        """
        validate_batch(x, y, threat, targets=targets)  # before any forward pass on x
        if generator is not None and generator.device.type != x.device.type:
            raise AttackInputError(
                f"generator: expected one on the inputs' device ({x.device.type}), got one on "
                f"{generator.device.type}; create it with torch.Generator(device=x.device)"
            )
        with torch.no_grad():
            num_classes = int(model(x[:1]).shape[1]) if x.shape[0] else None
        validate_batch(x, y, threat, targets=targets, num_classes=num_classes)
        y = y.long()
        targets = targets.long() if targets is not None else None
        if x.shape[0] == 0:
            empty = torch.zeros(0, dtype=torch.bool, device=x.device)
            return AttackResult(
                x.clone(), empty, torch.zeros(0, dtype=torch.int64, device=x.device)
            )
        x = x.detach()
        x_adv, queries = self._run(model, x, y, threat, targets=targets, generator=generator)
        x_adv = threat.project(x_adv.detach(), x)
        pred = predict(model, x_adv)
        success = pred == targets if targets is not None else pred != y
        return AttackResult(x_adv, success, queries + 1)

    @abstractmethod
    def _run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        threat: ThreatModel,
        *,
        targets: Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        """Return ``(x_adv, queries)``; the base class projects and re-checks ``x_adv``."""
