"""Constrained black-box attacks on tabular models (scikit-learn, ONNX, remote endpoints).

The model is any ``nn.Module`` mapping encoded rows to scores, typically a
:class:`~bastion.attacks.targets.SklearnTarget` or :class:`~bastion.attacks.targets.LabelTarget`.
No gradient is ever asked for, and every point sent to the model is admissible (snapped with
:meth:`TabularThreat.finalize`), so each query is a realistic row.

* :class:`ConstrainedRandomSearch` (score-based): the random search of the Square Attack
  (Andriushchenko et al. 2020, "Square Attack: a query-efficient black-box adversarial attack
  via random search") with the square window replaced by a random subset of mutable features
  whose size shrinks over the budget: each proposal moves the chosen numeric features to a
  vertex of their cost-weighted box (``x +- eps / c``), gives each chosen categorical feature a
  random category (where its cost allows a change), projects onto the constraints, snaps and is
  kept only if it lowers the score margin.
* :class:`ConstrainedHopSkipJump` (label-only): HopSkipJump (Chen, Jordan and Wainwright 2020)
  in the feasible set: start from a random admissible row of another class, binary search to
  the decision boundary along the segment to the clean row, estimate the boundary's normal from
  the labels of random admissible probes around the boundary point, take a geometric step along
  it and search back to the boundary, shrinking the cost-weighted distance to the clean row.
  The closest admissible adversarial row is returned when it lies in the eps-ball; otherwise
  its projection onto the ball if that is still adversarial; otherwise the clean row.

Query counts are per example: one per row sent to the model. Both are registered in the tabular
channel of the attack registry (``random-search``: score-based; ``hopskipjump``: label-only,
not to be confused with the image channel's ``hopskipjump``) with their settings models.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from pydantic import Field
from torch import Tensor, nn

from bastion.attacks.base import Attack, Opening
from bastion.attacks.registry import register
from bastion.attacks.settings import AttackSettings
from bastion.tabular._tracking import BestPoints, margin, only_admissible, succeeded
from bastion.tabular.threat import TabularThreat, require_tabular
from bastion.threat import ThreatModel


class RandomSearchSettings(AttackSettings):
    """Settings of :class:`ConstrainedRandomSearch`."""

    queries: int = Field(
        default=300, ge=1, description="most model queries per example (besides the clean row)"
    )
    p_init: float = Field(
        default=0.3, gt=0, le=1, description="share of mutable features changed at first"
    )


class TabularHopSkipJumpSettings(AttackSettings):
    """Settings of :class:`ConstrainedHopSkipJump`."""

    iterations: int = Field(default=15, ge=1, description="estimate-and-step rounds")
    probes: int = Field(default=40, ge=1, description="random probes per gradient estimate")
    init_tries: int = Field(
        default=100, ge=1, description="random admissible rows tried for a starting point"
    )
    binary_steps: int = Field(default=10, ge=1, description="bisection steps per search")


def _feature_columns(threat: TabularThreat) -> tuple[Tensor, Tensor, Tensor]:
    """``(membership (F, D) bool, mutable (F,) bool, categorical (F,) bool)``."""
    assert threat.schema is not None
    features = threat.schema.features
    cs = threat.constraints
    member = torch.zeros(len(features), cs.dim, dtype=torch.bool)
    for j, name in enumerate(cs.column_feature):
        member[threat.schema.feature_names.index(name), j] = True
    mutable = torch.tensor([not f.immutable for f in features], dtype=torch.bool)
    categorical = torch.tensor([f.type == "categorical" for f in features], dtype=torch.bool)
    return member, mutable, categorical


@register(
    "random-search", knowledge="score-based", settings=RandomSearchSettings, channel="tabular"
)
class ConstrainedRandomSearch(Attack):
    """Score-based random search under a tabular schema's constraints (see the module docs).

    Args:
        queries: the most model queries per example (besides the first, on the clean row).
        p_init: the fraction of mutable features changed per proposal at the start; it halves
            after 2%, 5%, 10%, 20%, 40%, 60% and 80% of the budget (the schedule of Square).
    """

    def __init__(self, *, queries: int = 300, p_init: float = 0.3):
        s = RandomSearchSettings.of(locals(), where=self.name)
        self.queries, self.p_init = s.queries, float(s.p_init)

    def _fraction(self, i: int) -> float:
        p = self.p_init
        for mark in (0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8):
            if i > mark * self.queries:
                p /= 2
        return p

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
        tt = require_tabular(threat, "random-search")
        cs = tt.constraints
        member, mutable_f, categorical_f = _feature_columns(tt)
        member, mutable_f = member.to(x.device), mutable_f.to(x.device)
        categorical_f = categorical_f.to(x.device)
        radius = tt.radius(x)
        lo, hi = cs.box(x, radius)
        n_mutable = int(mutable_f.sum())
        queries = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        best = BestPoints(x, y, targets)
        idx_all = torch.arange(x.shape[0], device=x.device)
        scores = opening.logits
        queries += 1
        best.update(idx_all, x, scores)
        cur_margin = margin(scores, y, targets)
        if n_mutable == 0:
            return x.clone(), queries
        for i in range(self.queries):
            idx = (~best.done).nonzero().flatten()
            if idx.numel() == 0:
                break
            n = idx.numel()
            k = max(1, round(self._fraction(i) * n_mutable))
            noise = torch.rand(n, member.shape[0], generator=generator, device=x.device)
            noise = noise.masked_fill(~mutable_f[None, :], -1.0)
            chosen_f = torch.zeros_like(noise, dtype=torch.bool)
            chosen_f.scatter_(1, noise.topk(k, dim=1).indices, True)
            chosen_f &= mutable_f[None, :]
            chosen = (chosen_f[:, :, None] & member[None, :, :]).any(dim=1)  # (n, D)
            xs, base = x[idx], best.x[idx]
            sign = torch.rand(n, cs.dim, generator=generator, device=x.device) < 0.5
            vertex = torch.where(sign, hi[idx], lo[idx])
            proposal = torch.where(chosen, vertex, base)
            for group in cs.groups:
                g = group.to(x.device)
                pick = torch.randint(0, g.numel(), (n,), generator=generator, device=x.device)
                onehot = torch.zeros(n, g.numel(), device=x.device, dtype=x.dtype)
                onehot[torch.arange(n, device=x.device), pick] = 1.0
                proposal[:, g] = torch.where(chosen[:, g], onehot, base[:, g])
            relaxed = tt.project(proposal, xs)
            cand, _ = tt.finalize(relaxed, xs)
            with torch.no_grad():
                scores = model(cand)
            queries[idx] += 1
            m = margin(scores, y[idx], targets[idx] if targets is not None else None)
            better = m < cur_margin[idx]
            cur_margin[idx[better]] = m[better]
            best.update(idx, cand, scores)
        return only_admissible(tt, best.x, x), queries


@register(
    "hopskipjump", knowledge="label-only", settings=TabularHopSkipJumpSettings, channel="tabular"
)
class ConstrainedHopSkipJump(Attack):
    """Label-only boundary attack under a tabular schema's constraints (see the module docs).

    Args:
        iterations: gradient-estimate-and-step rounds per example.
        probes: random probes per gradient estimate.
        init_tries: random admissible rows tried to find a starting adversarial row.
        binary_steps: bisection steps of each boundary search.
    """

    def __init__(
        self,
        *,
        iterations: int = 15,
        probes: int = 40,
        init_tries: int = 100,
        binary_steps: int = 10,
    ):
        s = TabularHopSkipJumpSettings.of(locals(), where=f"{self.channel} {self.name}")
        self.iterations, self.probes = s.iterations, s.probes
        self.init_tries, self.binary_steps = s.init_tries, s.binary_steps

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
        tt = require_tabular(threat, "tabular hopskipjump")
        # the whole feasible set, for the search: a linf ball of radius 1 with unit costs
        free = dataclasses.replace(tt, norm="linf", eps=1.0, use_costs=False)
        out = x.clone()
        queries = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        for i in range(x.shape[0]):
            t_i = targets[i : i + 1] if targets is not None else None
            adv, used = self._one(model, tt, free, x[i : i + 1], y[i : i + 1], t_i, generator)
            out[i] = adv[0]
            queries[i] = used
        return only_admissible(tt, out, x), queries

    def _one(
        self,
        model: nn.Module,
        tt: TabularThreat,
        free: TabularThreat,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, int]:
        used = 0

        def is_adv(points: Tensor) -> Tensor:
            nonlocal used
            with torch.no_grad():
                scores = model(points)
            used += points.shape[0]
            ys = y.expand(points.shape[0])
            ts = target.expand(points.shape[0]) if target is not None else None
            return succeeded(scores, ys, ts)

        if bool(is_adv(x)[0]):
            return x, used
        d = x.shape[1]
        # 1. a random admissible adversarial row to start from (the closest of those found)
        xr = x.expand(self.init_tries, d)
        draws = torch.rand(self.init_tries, d, generator=generator, device=x.device, dtype=x.dtype)
        draws = free.project(draws, xr)
        draws, _ = free.finalize(draws, xr)
        hits = is_adv(draws)
        if not bool(hits.any()):
            return x, used
        pool = draws[hits]
        start = pool[tt.distance(pool, x.expand_as(pool)).argmin()][None]
        boundary = self._bisect(free, x, start, is_adv)
        best = boundary
        best_dist = float(tt.distance(best, x)[0])
        scale = tt.scale(x)
        for k in range(self.iterations):
            dist = float(tt.distance(boundary, x)[0])
            if dist <= 0:
                break
            # 2. the boundary's normal from the labels of random probes around the boundary
            delta = max(0.05 * dist, 1e-3)
            noise = torch.randn(self.probes, d, generator=generator, device=x.device)
            noise = noise.to(x.dtype) * scale
            noise = noise / tt.norm_of(noise).clamp_min(1e-12)[:, None]
            xb = boundary.expand(self.probes, d)
            probes, _ = free.finalize(free.project(xb + delta * noise, xb), xb)
            phi = is_adv(probes).to(x.dtype) * 2 - 1
            mean = float(phi.mean())
            centred = phi - mean if abs(mean) < 1.0 else phi
            direction = (centred[:, None] * (probes - xb)).mean(dim=0, keepdim=True)
            if float(direction.abs().sum()) == 0:
                continue
            direction = direction / tt.norm_of(direction).clamp_min(1e-12)[:, None]
            # 3. a geometric step along it, halved until the point is adversarial
            step = dist / math.sqrt(k + 1)
            moved = None
            for _ in range(8):
                cand, _ = free.finalize(free.project(boundary + step * direction, boundary), x)
                if bool(is_adv(cand)[0]):
                    moved = cand
                    break
                step /= 2
            if moved is None:
                continue
            boundary = self._bisect(free, x, moved, is_adv)
            dist = float(tt.distance(boundary, x)[0])
            if dist < best_dist:
                best, best_dist = boundary, dist
        if bool(tt.admissible(best, x)[0]):
            return best, used
        # 4. outside the budget: the projection onto the ball may still be adversarial
        inside, ok = tt.finalize(tt.project(best, x), x)
        if bool(ok[0]) and bool(is_adv(inside)[0]):
            return inside, used
        return x, used

    def _bisect(
        self, free: TabularThreat, x: Tensor, adv: Tensor, is_adv: Callable[[Tensor], Tensor]
    ) -> Tensor:
        """Bisection on the segment from ``x`` (not adversarial) to ``adv`` (adversarial),
        every point snapped; returns the admissible adversarial point closest to ``x`` found."""
        lo, hi = 0.0, 1.0
        best = adv
        for _ in range(self.binary_steps):
            mid = 0.5 * (lo + hi)
            point, _ = free.finalize(x + mid * (adv - x), x)
            if bool(is_adv(point)[0]):
                hi, best = mid, point
            else:
                lo = mid
        return best
