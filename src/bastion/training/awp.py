"""Adversarial weight perturbation (Wu, Xia and Wang 2020, "Adversarial weight perturbation
helps robust generalization").

AWP flattens the robust loss landscape in weight space: before each update the weights ``w_l``
of every layer (tensors with more than one dimension; biases and norms are left alone) move
to ``w_l + v_l`` with ``v_l = gamma ||w_l|| g_l / ||g_l||``, ``g_l`` the gradient of the batch's
training loss (one normalised ascent step, the paper's one-step inner maximisation); the update's
gradient is taken there and applied to the unperturbed weights. It wraps any objective: the loss
is whatever :func:`bastion.training.objectives.prepare_loss` returns.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bastion.errors import ConfigError
from bastion.training.objectives import LossClosure


@dataclass(frozen=True)
class AWPSettings:
    """``gamma``: relative size of the weight perturbation (paper: 5e-3); ``warmup_epochs``:
    epochs trained without AWP first (the paper starts it after a few epochs on MNIST-size
    problems, where early perturbations slow learning)."""

    gamma: float = 0.005
    warmup_epochs: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.gamma) and self.gamma > 0):
            raise ConfigError(f"training.awp.gamma: expected a number > 0, got {self.gamma}")
        if self.warmup_epochs < 0:
            raise ConfigError(
                f"training.awp.warmup_epochs: expected an integer >= 0, got {self.warmup_epochs}"
            )


def weight_perturbation(
    model: nn.Module, loss_fn: LossClosure, gamma: float
) -> list[tuple[nn.Parameter, Tensor]]:
    """``[(weight, v)]``: the AWP step for each perturbed weight tensor (no parameter gradient
    is accumulated; gradients are taken with :func:`torch.autograd.grad`)."""
    params = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    if not params:
        return []
    loss, _ = loss_fn(model)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    out = []
    for p, g in zip(params, grads, strict=True):
        if g is None:
            continue
        gn = g.norm()
        if float(gn) == 0.0:
            continue
        out.append((p, gamma * p.detach().norm() * g / gn))
    return out


@contextmanager
def perturbed(pairs: list[tuple[nn.Parameter, Tensor]]) -> Iterator[None]:
    """Add each ``v`` to its weight inside the block; restore the exact original weights after
    (copied back, not subtracted, so no rounding drift accumulates)."""
    saved = [p.detach().clone() for p, _ in pairs]
    with torch.no_grad():
        for p, v in pairs:
            p.add_(v)
    try:
        yield
    finally:
        with torch.no_grad():
            for (p, _), w in zip(pairs, saved, strict=True):
                p.copy_(w)
