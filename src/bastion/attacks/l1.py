"""Sparse L1 Descent, SLIDE (Tramer & Boneh 2019, "Adversarial training and robustness for
multiple perturbations").

PGD for the l1 threat. The steepest l1 ascent direction moves a single coordinate, which makes
plain l1 PGD crawl; SLIDE instead steps along the signs of the gradient's top ``q``-percentile
coordinates,

    e_i = sign(g_i) if |g_i| >= P_q(|g|) else 0,    x <- Proj(x + step * e / ||e||_1),

projecting onto the l1 ball around the clean input (Duchi et al. 2008, through
:meth:`ThreatModel.project`) and the box. Following the observation of Croce & Hein 2021
("Mind the box: l1-APGD for sparse adversarial attacks"), coordinates sitting on a face of the
box whose gradient points out of it are left out of the selection, so no part of a step is
wasted on a coordinate the box would clip straight back.

Examples leave the working batch at the first iterate that fools the model; restarts (from
random points of the ball) run only on the examples still robust.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import Tensor, nn

from bastion.attacks.base import Attack, Opening
from bastion.attacks.engine import ce_loss, input_gradient
from bastion.attacks.registry import register
from bastion.attacks.settings import AttackSettings
from bastion.errors import AttackInputError
from bastion.threat import ThreatModel


def sparse_l1_direction(
    grad: Tensor, x: Tensor, bounds: tuple[float, float], percentile: float
) -> Tensor:
    """SLIDE's step direction ``(N, ...)``, unit l1 norm per example (zero for a zero gradient).

    The signs of the ``k = max(1, ceil((1 - percentile / 100) * D_free))`` largest-magnitude
    gradient coordinates among the ``D_free`` that can move in the gradient's direction (not on
    the box face the gradient points through), each ``1 / k``.
    """
    lo, hi = bounds
    g = grad.flatten(1)
    xf = x.flatten(1)
    blocked = ((xf >= hi) & (g > 0)) | ((xf <= lo) & (g < 0))
    mag = g.abs().masked_fill(blocked, 0.0)
    free = (mag > 0).sum(dim=1)
    k = torch.clamp(torch.ceil((1 - percentile / 100.0) * free.to(g.dtype)), min=1).long()
    kmax = int(k.max()) if k.numel() else 1
    top, where = mag.topk(min(max(kmax, 1), g.shape[1]), dim=1)
    rank = torch.arange(top.shape[1], device=g.device)[None, :]
    take = (rank < k[:, None]) & (top > 0)
    e = torch.zeros_like(g).scatter(1, where, take.to(g.dtype) * g.gather(1, where).sign())
    norm = e.abs().sum(dim=1, keepdim=True).clamp_min(1.0)
    return (e / norm).view_as(grad)


class SLIDESettings(AttackSettings):
    """Settings of :class:`SparseL1Descent`."""

    steps: int = Field(default=50, ge=1, description="iterations per restart")
    step_size: float = Field(default=0.25, gt=0, description="step length as a multiple of eps")
    percentile: float = Field(
        default=99.0, ge=0, lt=100, description="coordinates whose gradient is above it move"
    )
    restarts: int = Field(default=1, ge=1, description="runs, each on examples still robust")
    random_start: bool = Field(
        default=False, description="start from a random point of the l1 ball"
    )


@register("slide", knowledge="white-box", settings=SLIDESettings)
class SparseL1Descent(Attack):
    """SLIDE: PGD with sparse steps on the l1 ball intersected with the box (Tramer & Boneh
    2019). Needs an l1 threat.

    Args:
        steps: iterations per restart (50).
        step_size: the l1 length of each step, as a multiple of eps (0.25).
        percentile: the gradient percentile ``q`` above which coordinates move (99: the top 1%,
            at least one coordinate).
        restarts: runs on the examples still robust; every run after the first starts from a
            random point of the ball.
        random_start: start the first run from a random point of the ball too.

    ``queries`` counts one forward pass per step (plus a final check). Returns ``(N, ...)``
    points within the threat: the first fooling iterate, or the last one.
    """

    def __init__(
        self,
        *,
        steps: int = 50,
        step_size: float = 0.25,
        percentile: float = 99.0,
        restarts: int = 1,
        random_start: bool = False,
    ):
        s = SLIDESettings.of(locals(), where=self.name)
        self.steps, self.step_size = s.steps, float(s.step_size)
        self.percentile = float(s.percentile)
        self.restarts, self.random_start = s.restarts, s.random_start

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
        if threat.norm != "l1":
            raise AttackInputError(f"threat.norm: slide is an l1 attack, got norm {threat.norm!r}")
        queries = opening.queries()
        done = ~opening.robust
        x_out = x.clone()
        step = self.step_size * threat.eps
        if not math.isfinite(step) or step <= 0:
            return x_out, queries
        for r in range(self.restarts):
            idx = (~done).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            xs, ys = x[idx], y[idx]
            ts = targets[idx] if targets is not None else None
            xa = (
                threat.random_init(xs, generator=generator)
                if (r > 0 or self.random_start)
                else xs.clone()
            )
            for _ in range(self.steps):
                grad, logits = input_gradient(model, xa, ys, loss=ce_loss, targets=ts)
                queries[idx] += 1
                am = logits.argmax(1)
                hit = am == ts if ts is not None else am != ys
                if bool(hit.any()):
                    x_out[idx[hit]] = xa[hit]
                    done[idx[hit]] = True
                    keep = ~hit
                    idx, xs, ys, xa, grad = idx[keep], xs[keep], ys[keep], xa[keep], grad[keep]
                    ts = ts[keep] if ts is not None else None
                    if idx.numel() == 0:
                        break
                direction = sparse_l1_direction(grad, xa, threat.bounds, self.percentile)
                xa = threat.project(xa + step * direction, xs)
            if idx.numel() == 0:
                continue
            with torch.no_grad():
                am = model(xa).argmax(1)
            queries[idx] += 1
            hit = am == ts if ts is not None else am != ys
            done[idx[hit]] = True
            x_out[idx] = xa  # fooled by the last step, or the latest attempt
        return x_out, queries
