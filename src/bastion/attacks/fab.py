"""The Fast Adaptive Boundary attack, FAB (Croce & Hein 2020, ICML, "Minimally distorted
adversarial examples with a fast adaptive boundary attack"), untargeted and targeted.

A minimum-norm attack in the threat's norm (linf, l2 or l1). Each step linearises the classifier
at the current iterate ``x_i``, picks the nearest linearised decision hyperplane ``pi`` (as
DeepFool does), and projects onto ``pi`` intersected with the input box both ``x_i`` and the
original point ``x_orig`` (an exact O(D log D) projection, see
:func:`bastion.attacks._boundary.project_hyperplane_box`):

    d_i    = proj(x_i, pi, box) - x_i
    d_orig = proj(x_orig, pi, box) - x_orig
    alpha  = min(||d_i|| / (||d_i|| + ||d_orig||), alpha_max)
    x_{i+1} = clip((1 - alpha) (x_i + eta d_i) + alpha (x_orig + eta d_orig))

The biased combination keeps the iterate close to ``x_orig``; ``eta > 1`` extrapolates slightly
past the hyperplane. Whenever ``x_{i+1}`` is adversarial it is recorded if it is the closest one
so far, and then pulled back towards the original: ``x_{i+1} = (1 - beta) x_orig + beta x_{i+1}``
(the "backward step"), so the search keeps shrinking the distance. The first run starts at
``x_orig``; each restart starts at a random point at distance ``min(best, eps) / 2`` of it.

Modes:

* :class:`FAB` untargeted: the hyperplanes between the true class and every other class.
* :class:`FAB` called with ``targets``: the hyperplane between the target and its strongest
  competitor at the iterate; success means the target wins.
* :class:`FABTargeted` (FAB-T in AutoAttack): for each of the ``target_classes`` classes the
  clean input ranks highest after the true one, a run on the hyperplane between that class and
  the true class; success is any misclassification. Needs one backward pass per step instead
  of ``C - 1``, which is what makes it the cheap member of the AutoAttack cascade.

Within bastion's bounded threat model: the search ignores ``eps`` (except for the radius of the
random restarts), each example keeps its smallest-norm adversarial point, and the base class
projects that point onto the eps-ball; an example counts as broken when the smallest
perturbation found fits within the budget. Restarts (and FAB-T's later targets) run only on the
examples not yet broken within ``eps``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from pydantic import Field
from torch import Tensor, nn

from bastion.attacks._boundary import (
    PairFn,
    closest_hyperplane,
    lp_norm,
    pair_gradients,
    project_hyperplane_box,
)
from bastion.attacks.base import Attack, Opening, ranked_other_classes
from bastion.attacks.deepfool import strongest_other
from bastion.attacks.engine import Precision
from bastion.attacks.registry import register
from bastion.attacks.settings import AttackSettings
from bastion.errors import AttackInputError
from bastion.threat import ThreatModel

SuccessFn = Callable[[Tensor], Tensor]


def _random_direction(
    shape: tuple[int, int], norm: str, generator: torch.Generator | None, like: Tensor
) -> Tensor:
    """``(N, D)`` random directions of unit ``norm`` (uniform cube / sphere / signed simplex)."""
    dev, dt = like.device, like.dtype
    if norm == "linf":
        u = 2 * torch.rand(shape, generator=generator, device=dev, dtype=dt) - 1
    elif norm == "l2":
        u = torch.randn(shape, generator=generator, device=dev, dtype=dt)
    else:  # l1: Laplace coordinates, normalised
        mag = -torch.log1p(-torch.rand(shape, generator=generator, device=dev, dtype=dt))
        neg = torch.rand(shape, generator=generator, device=dev, dtype=dt) < 0.5
        u = torch.where(neg, -mag, mag)
    return u / lp_norm(u, norm).clamp_min(1e-12)[:, None]


def _away_from(y: Tensor, classes: Tensor) -> tuple[PairFn, SuccessFn]:
    """Hyperplanes between the true class ``y`` ``(N,)`` and ``classes`` ``(N, K)``; success is
    any misclassification."""
    ref = y[:, None].expand_as(classes)

    def pairs(logits: Tensor) -> tuple[Tensor, Tensor]:
        return classes, ref

    def success(logits: Tensor) -> Tensor:
        return logits.argmax(1) != y

    return pairs, success


def _reach(target: Tensor) -> tuple[PairFn, SuccessFn]:
    """The hyperplane between ``target`` ``(N,)`` and its strongest competitor at the iterate;
    success is predicting the target."""

    def pairs(logits: Tensor) -> tuple[Tensor, Tensor]:
        return target[:, None], strongest_other(logits, target)[:, None]

    def success(logits: Tensor) -> Tensor:
        return logits.argmax(1) == target

    return pairs, success


class FABSettings(AttackSettings):
    """Settings of :class:`FAB`."""

    steps: int = Field(default=100, ge=1, description="iterations per run")
    restarts: int = Field(default=1, ge=1, description="runs; after the first, from random points")
    alpha_max: float = Field(
        default=0.1, ge=0, le=1, description="largest weight of the step from x"
    )
    eta: float = Field(default=1.05, gt=0, description="extrapolation past the hyperplane")
    beta: float = Field(
        default=0.9, gt=0, le=1, description="backward step's contraction towards x"
    )
    precision: Precision = Field(
        default="fp32", description="bf16: linearise under bfloat16 autocast"
    )


class FABTargetedSettings(FABSettings):
    """Settings of :class:`FABTargeted` (those of :class:`FAB` and the number of targets)."""

    target_classes: int = Field(default=9, ge=1, description="top-ranked other classes to aim at")


@dataclass
class _Closest:
    """The closest adversarial point found so far per example: ``best`` ``(N, ...)`` (the clean
    input until one is found), its norm ``best_norm`` ``(N,)`` (``inf`` until then), ``done``
    ``(N,)`` the examples the clean input already fools, and ``queries`` ``(N,)`` int64."""

    best: Tensor
    best_norm: Tensor
    done: Tensor
    queries: Tensor

    def pending(self, eps: float) -> Tensor:
        """Indices of the examples not yet broken within ``eps``."""
        return ((~self.done) & (self.best_norm > eps)).nonzero().squeeze(1)


class _FABSettings(Attack):
    """Settings and the single FAB run shared by :class:`FAB` and :class:`FABTargeted`."""

    steps: int
    restarts: int
    alpha_max: float
    eta: float
    beta: float
    precision: Precision

    def _set(self, s: FABSettings) -> None:
        self.precision = s.precision
        self.steps, self.restarts = s.steps, s.restarts
        self.alpha_max, self.eta, self.beta = float(s.alpha_max), float(s.eta), float(s.beta)

    def _start(
        self,
        x0: Tensor,
        best_norm: Tensor,
        restart: int,
        threat: ThreatModel,
        generator: torch.Generator | None,
    ) -> Tensor:
        """``x_orig`` for the first run; later, a random point at ``min(best, eps) / 2``."""
        if restart == 0:
            return x0.clone()
        flat = x0.flatten(1)
        radius = 0.5 * torch.clamp(best_norm, max=threat.eps)
        u = _random_direction((flat.shape[0], flat.shape[1]), threat.norm, generator, flat)
        return threat.clip(flat + radius[:, None] * u).view_as(x0)

    def _nothing_found(self, x: Tensor, opening: Opening) -> _Closest:
        """Nothing found yet: the examples the model already gets wrong are done (norm 0)."""
        done = ~opening.robust
        best_norm = torch.full((x.shape[0],), float("inf"), dtype=x.dtype, device=x.device)
        best_norm[done] = 0.0
        return _Closest(x.clone(), best_norm, done, opening.queries())

    def _run_once(
        self,
        model: nn.Module,
        x: Tensor,
        idx: Tensor,
        restart: int,
        goal: tuple[PairFn, SuccessFn],
        threat: ThreatModel,
        generator: torch.Generator | None,
        closest: _Closest,
    ) -> None:
        """Run ``restart`` (from :meth:`_start`) on the examples ``idx`` towards ``goal``
        (hyperplanes and success); closer points found update ``closest`` (two queries a step)."""
        sub_best, sub_norm = closest.best[idx], closest.best_norm[idx]
        x_start = self._start(x[idx], sub_norm, restart, threat, generator)
        self._search(model, x[idx], x_start, *goal, threat, sub_best, sub_norm)
        closest.best[idx], closest.best_norm[idx] = sub_best, sub_norm
        closest.queries[idx] += 2 * self.steps

    def _search(
        self,
        model: nn.Module,
        x0: Tensor,
        x_start: Tensor,
        pairs: PairFn,
        success: SuccessFn,
        threat: ThreatModel,
        best: Tensor,
        best_norm: Tensor,
    ) -> None:
        """One FAB run (Algorithm 1 of the paper) on the working batch ``x0``; writes the
        closest adversarial points into ``best``/``best_norm`` (rows of the batch) in place."""
        lo, hi = threat.bounds
        norm = threat.norm
        z0 = x0.flatten(1)
        xc = x_start.flatten(1)
        bf16 = self.precision == "bf16"
        for _ in range(self.steps):
            _, f, w = pair_gradients(model, xc.view_as(x0), pairs, bf16=bf16)
            f_l, w_l = closest_hyperplane(f, w, norm)
            d_cur = project_hyperplane_box(xc, w_l, -f_l, lo, hi, norm)
            f_orig = f_l + (w_l * (z0 - xc)).sum(dim=1)  # the linearisation, evaluated at x_orig
            d_orig = project_hyperplane_box(z0, w_l, -f_orig, lo, hi, norm)
            n_cur, n_orig = lp_norm(d_cur, norm), lp_norm(d_orig, norm)
            alpha = (n_cur / (n_cur + n_orig).clamp_min(1e-12)).clamp(0.0, self.alpha_max)[:, None]
            xc = ((1 - alpha) * (xc + self.eta * d_cur) + alpha * (z0 + self.eta * d_orig)).clamp(
                lo, hi
            )
            with torch.no_grad():
                adv = success(model(xc.view_as(x0)))
            if bool(adv.any()):
                dist = lp_norm(xc - z0, norm)
                closer = adv & (dist < best_norm)
                best[closer] = xc[closer].view(-1, *best.shape[1:])
                best_norm[closer] = dist[closer]
                xc = torch.where(adv[:, None], (1 - self.beta) * z0 + self.beta * xc, xc)


@register("fab", knowledge="white-box", kind="minimum-norm", settings=FABSettings)
class FAB(_FABSettings):
    """FAB in the threat's norm (Croce & Hein 2020), untargeted or with given targets.

    Args:
        steps: iterations per run (100).
        restarts: runs per example; the first from the clean input, the others from random
            points (only on examples not yet broken within eps).
        alpha_max: the largest weight of the step from the original point (0.1).
        eta: extrapolation past the hyperplane (1.05).
        beta: the backward step's contraction towards the original point (0.9).
        precision: ``"fp32"``, or ``"bf16"`` to linearise under bfloat16 autocast; whether an
            iterate is adversarial is always decided in float32 (a bfloat16 check with float32
            confirmation of each new closest point measured slower: most steps find one).

    ``queries`` counts two forward passes per step (linearisation and check). Returns
    ``(N, ...)`` points inside ``threat.bounds``: the smallest-norm success, or the clean input
    where none was found; examples already misclassified are returned unchanged.
    """

    def __init__(
        self,
        *,
        steps: int = 100,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        precision: str = "fp32",
    ):
        self._set(FABSettings.of(locals(), where=self.name))

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
        c, clean = opening.classes("fab"), opening.logits
        closest = self._nothing_found(x, opening)
        for r in range(self.restarts):
            idx = closest.pending(threat.eps)
            if idx.numel() == 0:
                break
            ys = y[idx]
            goal = (
                _away_from(ys, ranked_other_classes(clean[idx], ys, c - 1))
                if targets is None
                else _reach(targets[idx])
            )
            self._run_once(model, x, idx, r, goal, threat, generator, closest)
        return closest.best, closest.queries


@register("fab-t", knowledge="white-box", kind="minimum-norm", settings=FABTargetedSettings)
class FABTargeted(_FABSettings):
    """FAB-T: untargeted robustness measured by targeted FAB runs (Croce & Hein 2020; the
    version in AutoAttack's standard cascade).

    Args:
        steps, restarts, alpha_max, eta, beta, precision: as for :class:`FAB`.
        target_classes: how many of the clean input's top-ranked other classes to aim at (9).

    Each target runs only on the examples not yet broken within eps; an example counts as
    broken when misclassified as any class. Chooses its own targets, so a call with
    ``targets`` is an error (use :class:`FAB` with targets instead).
    """

    def __init__(
        self,
        *,
        steps: int = 100,
        target_classes: int = 9,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        precision: str = "fp32",
    ):
        s = FABTargetedSettings.of(locals(), where=self.name)
        self._set(s)
        self.target_classes = s.target_classes

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
        if targets is not None:
            raise AttackInputError(
                "targets: fab-t chooses its own targets; use fab for a given target"
            )
        c, clean = opening.classes("fab-t"), opening.logits
        closest = self._nothing_found(x, opening)
        for k in range(min(self.target_classes, c - 1)):
            for r in range(self.restarts):
                idx = closest.pending(threat.eps)
                if idx.numel() == 0:
                    return closest.best, closest.queries
                ys = y[idx]
                target = ranked_other_classes(clean[idx], ys, k + 1)[:, k : k + 1]
                goal = _away_from(ys, target)
                self._run_once(model, x, idx, r, goal, threat, generator, closest)
        return closest.best, closest.queries
