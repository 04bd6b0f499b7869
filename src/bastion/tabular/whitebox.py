"""Constrained gradient attacks on differentiable tabular models: CPGD and CAPGD.

Both climb the loss in the relaxed constraint set of a :class:`TabularThreat` (cost-weighted
steps masked to mutable features, projection onto the weighted ball and the constraints after
every step, one-hot groups relaxed to the simplex) and, after every step, snap the iterate to a
point satisfying every constraint exactly (:meth:`TabularThreat.finalize`), query the model
there and keep the best such point per example. So every output is feasible by construction,
and a success is a success of the snapped point. This follows the constrained PGD of Simonetto
et al. 2022 ("A unified framework for adversarial attack and training in constrained feature
space", CPGD), with the repair done by projection rather than by a penalty, and APGD's step
size rule (Croce & Hein 2020) for CAPGD.

Queries per example: one forward-backward pass per step, plus one forward pass on the snapped
point. Both are registered in the tabular channel of the attack registry (``cpgd``, ``capgd``;
white-box, fixed-budget) with their settings models.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from bastion.attacks.base import Attack, Opening
from bastion.attacks.engine import LOSSES, input_gradient
from bastion.attacks.registry import register
from bastion.attacks.settings import AttackSettings
from bastion.tabular._tracking import BestPoints, only_admissible
from bastion.tabular.threat import TabularThreat, require_tabular
from bastion.threat import ThreatModel

_LOSS = "ce (cross-entropy) or cw (the Carlini-Wagner margin)"


class ConstrainedPGDSettings(AttackSettings):
    """Settings of :class:`ConstrainedPGD`."""

    steps: int = Field(default=40, ge=1, description="gradient steps per restart")
    step_size: float | None = Field(
        default=None, gt=0, description="step length as a multiple of eps (null: 2.5 / steps)"
    )
    restarts: int = Field(default=1, ge=1, description="runs on the examples still robust")
    random_start: bool = Field(default=True, description="start from a random admissible point")
    loss: Literal["ce", "cw"] = Field(default="ce", description=_LOSS)


class ConstrainedAPGDSettings(AttackSettings):
    """Settings of :class:`ConstrainedAPGD`."""

    steps: int = Field(default=40, ge=1, description="iterations per restart")
    restarts: int = Field(default=1, ge=1, description="runs on the examples still robust")
    loss: Literal["ce", "cw"] = Field(default="ce", description=_LOSS)
    rho: float = Field(default=0.75, gt=0, le=1, description="the checkpoint threshold")


def _snap_and_score(
    model: nn.Module,
    threat: TabularThreat,
    best: BestPoints,
    idx: Tensor,
    xa: Tensor,
    xs: Tensor,
) -> Tensor:
    """Finalize the relaxed iterates ``xa`` of examples ``idx``, score them, offer them to
    ``best``; returns which succeed ``(n,)``."""
    cand, _ = threat.finalize(xa, xs)
    with torch.no_grad():
        scores = model(cand)
    return best.update(idx, cand, scores)


@register("cpgd", knowledge="white-box", settings=ConstrainedPGDSettings, channel="tabular")
class ConstrainedPGD(Attack):
    """Projected gradient ascent under a tabular schema's constraints (see the module docs).

    Args:
        steps: gradient steps per restart.
        step_size: step length as a multiple of eps (in the weighted norm); default
            ``2.5 / steps``.
        restarts: independent runs; later ones attack only the examples still robust.
        random_start: start from a random admissible point of the relaxed ball.
        loss: ``"ce"`` or ``"cw"`` (the Carlini-Wagner margin).
    """

    def __init__(
        self,
        *,
        steps: int = 40,
        step_size: float | None = None,
        restarts: int = 1,
        random_start: bool = True,
        loss: Literal["ce", "cw"] = "ce",
    ):
        s = ConstrainedPGDSettings.of(locals(), where=self.name)
        self.steps, self.step_size, self.restarts = s.steps, s.step_size, s.restarts
        self.random_start, self.loss = s.random_start, s.loss

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
        tt = require_tabular(threat, "cpgd")
        loss = LOSSES[self.loss]
        step = (self.step_size if self.step_size is not None else 2.5 / self.steps) * tt.eps
        queries = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        best = BestPoints(x, y, targets)
        best.update(torch.arange(x.shape[0], device=x.device), x, opening.logits)
        queries += 1
        for restart in range(self.restarts):
            idx = (~best.done).nonzero().flatten()
            if idx.numel() == 0:
                break
            xs, ys = x[idx], y[idx]
            ts = targets[idx] if targets is not None else None
            use_random = self.random_start or restart > 0
            xa = tt.random_init(xs, generator=generator) if use_random else xs.clone()
            for _ in range(self.steps):
                grad, _ = input_gradient(model, xa, ys, loss=loss, targets=ts)
                xa = tt.project(xa + step * tt.steepest_step(grad), xs)
                hit = _snap_and_score(model, tt, best, idx, xa, xs)
                queries[idx] += 2
                if bool(hit.any()):
                    keep = ~hit
                    idx, xs, ys, xa = idx[keep], xs[keep], ys[keep], xa[keep]
                    ts = ts[keep] if ts is not None else None
                    if idx.numel() == 0:
                        break
        return only_admissible(tt, best.x, x), queries


def _checkpoints(steps: int) -> set[int]:
    """APGD's checkpoints: after 22% of the steps, then intervals shrinking by 3% of the
    steps down to 6% (Croce & Hein 2020, section 3.2)."""
    out: set[int] = set()
    first = max(math.ceil(0.22 * steps), 1)
    shrink = max(math.ceil(0.03 * steps), 1)
    floor = max(math.ceil(0.06 * steps), 1)
    total, length = 0, first
    while total < steps:
        total += length
        out.add(total)
        length = max(length - shrink, floor)
    return out


@register("capgd", knowledge="white-box", settings=ConstrainedAPGDSettings, channel="tabular")
class ConstrainedAPGD(Attack):
    """Auto-PGD under a tabular schema's constraints: momentum 0.75, an initial step of
    ``2 eps`` halved per example at checkpoints where the loss stopped rising (fewer than
    ``rho`` of the steps since the last checkpoint increased it, or no gain since the last
    checkpoint), restarting from that example's best relaxed point. Every iterate is snapped
    and scored as in :class:`ConstrainedPGD`.

    Args:
        steps: iterations per restart; restarts: runs on the examples still robust.
        loss: ``"ce"`` or ``"cw"``; rho: the checkpoint threshold (0.75 in the paper).
    """

    def __init__(
        self,
        *,
        steps: int = 40,
        restarts: int = 1,
        loss: Literal["ce", "cw"] = "ce",
        rho: float = 0.75,
    ):
        s = ConstrainedAPGDSettings.of(locals(), where=self.name)
        self.steps, self.restarts, self.loss, self.rho = s.steps, s.restarts, s.loss, s.rho

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
        tt = require_tabular(threat, "capgd")
        queries = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        best = BestPoints(x, y, targets)
        best.update(torch.arange(x.shape[0], device=x.device), x, opening.logits)
        queries += 1
        for _ in range(self.restarts):
            idx = (~best.done).nonzero().flatten()
            if idx.numel() == 0:
                break
            self._one_run(model, tt, x, y, targets, idx, best, queries, generator)
        return only_admissible(tt, best.x, x), queries

    def _objective(
        self, model: nn.Module, xa: Tensor, y: Tensor, targets: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """``(objective (n,), gradient (n, D))`` to maximise."""
        loss = LOSSES[self.loss]
        xg = xa.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xg)
            obj = loss(logits, y) if targets is None else -loss(logits, targets)
            (grad,) = torch.autograd.grad(obj.sum(), xg)
        return obj.detach(), grad

    def _one_run(
        self,
        model: nn.Module,
        tt: TabularThreat,
        x: Tensor,
        y: Tensor,
        targets: Tensor | None,
        idx: Tensor,
        best: BestPoints,
        queries: Tensor,
        generator: torch.Generator | None,
    ) -> None:
        xs, ys = x[idx], y[idx]
        ts = targets[idx] if targets is not None else None
        n = idx.numel()
        cur = tt.random_init(xs, generator=generator)
        f, g = self._objective(model, cur, ys, ts)
        queries[idx] += 1
        prev = cur.clone()
        best_rel, f_best, g_best = cur.clone(), f.clone(), g.clone()
        eta = torch.full((n,), 2.0 * tt.eps, device=x.device, dtype=x.dtype)
        increases = torch.zeros(n, device=x.device)
        f_at_ckpt = f_best.clone()
        halved_last = torch.ones(n, dtype=torch.bool, device=x.device)
        alive = torch.ones(n, dtype=torch.bool, device=x.device)
        f_prev = f.clone()
        checkpoints = _checkpoints(self.steps)
        last_ckpt = 0
        for k in range(1, self.steps + 1):
            a = alive.nonzero().flatten()
            if a.numel() == 0:
                break
            alpha = 1.0 if k == 1 else 0.75
            z = tt.project(cur[a] + eta[a, None] * tt.steepest_step(g[a]), xs[a])
            new = tt.project(
                cur[a] + alpha * (z - cur[a]) + (1 - alpha) * (cur[a] - prev[a]), xs[a]
            )
            prev[a] = cur[a]
            cur[a] = new
            fa, ga = self._objective(model, new, ys[a], ts[a] if ts is not None else None)
            g[a] = ga
            increases[a] += (fa > f_prev[a]).float()
            f_prev[a] = fa
            up = fa > f_best[a]
            best_rel[a[up]], f_best[a[up]], g_best[a[up]] = new[up], fa[up], ga[up]
            hit = _snap_and_score(model, tt, best, idx[a], new, xs[a])
            queries[idx[a]] += 2
            alive[a[hit]] = False
            if k in checkpoints:
                length = k - last_ckpt
                few = increases < self.rho * length
                stalled = (~halved_last) & (f_at_ckpt >= f_best)
                halve = (few | stalled) & alive
                eta = torch.where(halve, eta / 2, eta)
                cur[halve], g[halve] = best_rel[halve], g_best[halve]
                halved_last = halve
                increases.zero_()
                f_at_ckpt = f_best.clone()
                last_ckpt = k
