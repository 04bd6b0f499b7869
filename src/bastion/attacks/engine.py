"""One gradient loop for the FGSM/PGD family.

Every iterative first-order attack here is this loop with different hooks: the loss it climbs
(cross-entropy or the Carlini-Wagner margin), the step (steepest ascent in the threat's norm,
from :meth:`ThreatModel.steepest_step`) and the projection (:meth:`ThreatModel.project`).

Performance habits: gradients are taken with respect to the input only
(:func:`torch.autograd.grad`), so no parameter gradient is computed or accumulated; with
``early_stop`` an example leaves the working batch as soon as it is fooled, and restarts run only
on the examples still robust.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.fast_grad import input_gradients_only
from bastion.threat import ThreatModel

LossName = Literal["ce", "cw"]
LossFn = Callable[[Tensor, Tensor], Tensor]
Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16")


def autocast_for(x: Tensor, precision: Precision) -> AbstractContextManager[object]:
    """The autocast context of ``precision`` on ``x``'s device (none for fp32)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(x.device.type, dtype=torch.bfloat16)


def ce_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Per-example cross-entropy ``(N,)``."""
    return F.cross_entropy(logits, y, reduction="none")


def cw_margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Per-example Carlini-Wagner margin ``max_{j != y} z_j - z_y`` ``(N,)``
    (Carlini & Wagner 2017)."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return other.amax(dim=1) - z_y


LOSSES: dict[str, LossFn] = {"ce": ce_loss, "cw": cw_margin_loss}


def _objective(loss: LossFn, logits: Tensor, y: Tensor, targets: Tensor | None) -> Tensor:
    """The quantity to maximise, per example: the loss for the true class, or minus the loss
    towards the target for a targeted attack."""
    if targets is None:
        return loss(logits, y)
    return -loss(logits, targets)


def _fooled(logits: Tensor, y: Tensor, targets: Tensor | None) -> Tensor:
    pred = logits.argmax(dim=1)
    return pred == targets if targets is not None else pred != y


def input_gradient(
    model: nn.Module,
    x_adv: Tensor,
    y: Tensor,
    *,
    loss: LossFn = ce_loss,
    targets: Tensor | None = None,
    precision: Precision = "fp32",
) -> tuple[Tensor, Tensor]:
    """``(grad, logits)``: the gradient of the objective summed over the batch with respect to
    ``x_adv`` ``(N, ...)``, and the logits at ``x_adv`` ``(N, C)`` (detached, float32).

    With ``precision="bf16"`` the forward and backward passes run under bfloat16 autocast
    (about twice as fast on CPUs with AVX-512 BF16); the loss is taken in float32. Only the
    search direction is approximate: callers confirm successes in float32.
    """
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad(), input_gradients_only(model), autocast_for(x_adv, precision):
        logits = model(x_adv).float()
        obj = _objective(loss, logits, y, targets).sum()
        (grad,) = torch.autograd.grad(obj, x_adv)
    return grad, logits.detach()


@dataclass
class _AscentLoop:
    """The state of :func:`gradient_attack` across restarts: the best points ``x_best``
    ``(N, ...)``, the forward passes per example ``queries`` ``(N,)`` and the examples already
    fooled ``done`` ``(N,)`` (only those not done are attacked by a later restart)."""

    model: nn.Module
    threat: ThreatModel
    x: Tensor
    y: Tensor
    targets: Tensor | None
    steps: int
    step_size: float
    loss: LossFn
    early_stop: bool
    precision: Precision
    x_best: Tensor
    queries: Tensor
    done: Tensor

    def _targets(self, idx: Tensor) -> Tensor | None:
        return self.targets[idx] if self.targets is not None else None

    def _hits(self, logits: Tensor, xa: Tensor, ys: Tensor, ts: Tensor | None) -> Tensor:
        """``(n,)`` bool: the iterates that fool the model; under bf16 each one is confirmed by
        a float32 forward pass, so early stopping never freezes a false success."""
        hit = _fooled(logits, ys, ts)
        if self.precision != "fp32" and bool(hit.any()):
            with torch.no_grad():
                sub = hit.nonzero().squeeze(1)
                ts_sub = ts[sub] if ts is not None else None
                hit[sub] = _fooled(self.model(xa[sub]), ys[sub], ts_sub)
        return hit

    def climb(self, idx: Tensor, xa: Tensor) -> tuple[Tensor, Tensor]:
        """Up to ``steps`` projected steepest-ascent steps (Madry et al. 2018) from ``xa`` for
        the examples ``idx``; with early stopping an example leaves the working batch at its
        first fooling iterate (kept in ``x_best``). Returns the examples still in the batch and
        their last iterates; their gradient passes are counted in ``queries``."""
        xs, ys, ts = self.x[idx], self.y[idx], self._targets(idx)
        taken = 0  # gradient passes so far on the examples still in the working batch
        for _step in range(self.steps):
            grad, logits = input_gradient(
                self.model, xa, ys, loss=self.loss, targets=ts, precision=self.precision
            )
            taken += 1
            if self.early_stop:
                hit = self._hits(logits, xa, ys, ts)
                if bool(hit.any()):
                    self.x_best[idx[hit]] = xa[hit]
                    self.done[idx[hit]] = True
                    self.queries[idx[hit]] += taken
                    keep = ~hit
                    idx, xs, ys, xa, grad = idx[keep], xs[keep], ys[keep], xa[keep], grad[keep]
                    ts = ts[keep] if ts is not None else None
                    if idx.numel() == 0:
                        break
            xa = self.threat.project(xa + self.step_size * self.threat.steepest_step(grad), xs)
        self.queries[idx] += taken
        return idx, xa

    def settle(self, idx: Tensor, xa: Tensor, restarts: int) -> None:
        """Record the last iterates ``xa`` of the examples ``idx`` a restart ended with: with
        early stopping, checked by one forward pass (fooled or not, the latest attempt is
        returned); without, kept as they are, checked only when a later restart needs to know
        which examples this one fooled."""
        if idx.numel() == 0:
            return
        ys, ts = self.y[idx], self._targets(idx)
        if self.early_stop:
            with torch.no_grad():
                hit = _fooled(self.model(xa), ys, ts)
            self.queries[idx] += 1
            self.x_best[idx[hit]] = xa[hit]
            self.done[idx[hit]] = True
            self.x_best[idx[~hit]] = xa[~hit]  # not fooled: return the latest attempt
        else:
            self.x_best[idx] = xa
            if restarts > 1:
                with torch.no_grad():
                    hit = _fooled(self.model(xa), ys, ts)
                self.queries[idx] += 1
                self.done[idx[hit]] = True


def gradient_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    steps: int,
    step_size: float,
    random_start: bool,
    restarts: int = 1,
    loss: LossFn = ce_loss,
    targets: Tensor | None = None,
    early_stop: bool = True,
    init_scale: float = 1.0,
    generator: torch.Generator | None = None,
    precision: Precision = "fp32",
    fooled: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Projected steepest ascent (Madry et al. 2018) with restarts.

    Args:
        x, y: clean batch ``(N, ...)`` and labels ``(N,)``.
        steps: gradient steps per restart; step_size: length of each step in the threat's norm.
        random_start: start from a random point of the eps-ball (scaled by ``init_scale``).
        restarts: independent runs; each later run only attacks examples not yet fooled.
        early_stop: freeze an example at the first iterate that fools the model (evaluation);
            without it every example takes every step and the last iterate is returned
            (training, where the hardest point in the budget is wanted, not the first fooling one).
        precision: ``"bf16"`` takes gradients under bfloat16 autocast (see
            :func:`input_gradient`); an iterate that fools the model in bfloat16 is kept only if
            it also fools it in float32, so early stopping never freezes a false success.
        fooled: with ``early_stop``, the ``(N,)`` bool examples the clean inputs already fool
            (from an attack's :class:`bastion.attacks.base.Opening`); None takes that forward
            pass here. Either way it counts as one query.

    Returns:
        ``(x_adv, queries)``: ``(N, ...)`` and ``(N,)`` int64 forward passes per example.
    """
    n = x.shape[0]
    loop = _AscentLoop(
        model,
        threat,
        x,
        y,
        targets,
        steps,
        step_size,
        loss,
        early_stop,
        precision,
        x_best=x.clone(),
        queries=torch.zeros(n, dtype=torch.int64, device=x.device),
        done=torch.zeros(n, dtype=torch.bool, device=x.device),
    )
    if early_stop:
        if fooled is None:
            with torch.no_grad():
                fooled = _fooled(model(x), y, targets)
        loop.done = fooled.clone()
        loop.queries += 1
    with input_gradients_only(model):  # once for the whole loop (nested uses are free)
        for _ in range(max(1, restarts)):
            idx = (~loop.done).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            xs = x[idx]
            xa = (
                threat.random_init(xs, generator=generator, scale=init_scale)
                if random_start
                else xs.clone()
            )
            loop.settle(*loop.climb(idx, xa), restarts)
    return loop.x_best, loop.queries
