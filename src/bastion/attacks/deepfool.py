"""DeepFool (Moosavi-Dezfooli, Fawzi and Frossard 2016, "DeepFool: a simple and accurate method
to fool deep neural networks").

A minimum-norm attack: at the current point, linearise the classifier, take the step that
reaches the nearest linearised decision boundary, and repeat until the label changes. For the
true class ``y`` and each candidate class ``k`` (the ``num_classes - 1`` classes the clean input
ranks highest after ``y``), ``f_k = z_k - z_y`` and ``w_k = grad f_k``; the nearest boundary in
the threat's norm is ``l = argmin_k |f_k| / ||w_k||_q`` (``q`` the dual norm) and the step is the
smallest ``r`` with ``<w_l, r> = |f_l| + 1e-4``: ``r = (|f_l| + 1e-4) w_l / ||w_l||_2^2`` for l2,
``(|f_l| + 1e-4) sign(w_l) / ||w_l||_1`` for linf. Steps accumulate in ``r_tot``; the iterate is
``clip(x + (1 + overshoot) r_tot)``. For l1 the free step would move one coordinate, which the
box often blocks (a pixel already at 0 or 1), so there the step is the smallest one that reaches
the linearised boundary inside the box (spread greedily over the coordinates with the largest
``|w_i|``, as in :func:`bastion.attacks._boundary.project_hyperplane_box`); on the digits model
this lifts l1 DeepFool from 28% to 100% success.

A targeted call replaces the candidates by the target ``t`` and the reference class by the
current strongest competitor ``argmax_{j != t} z_j``, so every step aims at the boundary that
keeps ``t`` from winning.

Batched with per-example early exit: an example leaves the working batch at the first iterate
that fools the model. Like every minimum-norm attack here it ignores ``eps`` while it runs; the
base class then projects its point onto the eps-ball, so an example counts as broken when
DeepFool's perturbation fits within the budget.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from bastion.attacks._boundary import (
    closest_hyperplane,
    hyperplane_step,
    pair_gradients,
    project_hyperplane_box,
)
from bastion.attacks.base import Attack, Opening, ranked_other_classes
from bastion.attacks.registry import register
from bastion.attacks.settings import AttackSettings
from bastion.threat import ThreatModel

_SLACK = 1e-4  # the paper's small push past the linearised boundary


def strongest_other(logits: Tensor, cls: Tensor) -> Tensor:
    """``(N,)``: the class with the highest logit other than ``cls``."""
    return logits.scatter(1, cls[:, None], float("-inf")).argmax(dim=1)


class DeepFoolSettings(AttackSettings):
    """Settings of :class:`DeepFool`."""

    steps: int = Field(default=50, ge=1, description="the most linearisation steps per example")
    overshoot: float = Field(default=0.02, ge=0, description="scale the step by 1 + overshoot")
    num_classes: int = Field(default=10, ge=2, description="top-ranked classes that are candidates")


@register("deepfool", knowledge="white-box", kind="minimum-norm", settings=DeepFoolSettings)
class DeepFool(Attack):
    """DeepFool in the threat's norm (l2, linf, or l1), batched (Moosavi-Dezfooli et al. 2016).

    Args:
        steps: the most linearisation steps per example (50).
        overshoot: the accumulated step is scaled by ``1 + overshoot`` (0.02), to land past
            the boundary rather than on it.
        num_classes: how many of the clean input's top-ranked classes (the true one included)
            are candidates (10); fewer make each step cheaper (one backward pass per candidate).

    ``queries`` counts one forward pass per step (plus the clean pass).
    Returns ``(N, ...)`` points inside ``threat.bounds``: the first fooling iterate, or the last
    iterate for examples never fooled; examples already misclassified are returned unchanged.
    """

    def __init__(self, *, steps: int = 50, overshoot: float = 0.02, num_classes: int = 10):
        s = DeepFoolSettings.of(locals(), where=self.name)
        self.steps, self.overshoot, self.num_classes = s.steps, float(s.overshoot), s.num_classes

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
        queries, c = opening.queries(), opening.classes("deepfool")
        clean, done = opening.logits, ~opening.robust
        x_out = x.clone()
        idx = (~done).nonzero().squeeze(1)
        if idx.numel() == 0:
            return x_out, queries
        k = min(self.num_classes, c) - 1
        cand = (
            ranked_other_classes(clean[idx], y[idx], k) if targets is None else targets[idx, None]
        )
        ref = y[idx] if targets is None else targets[idx]  # y, or the target for a targeted run
        x0 = x[idx]
        lo, hi = threat.bounds
        r_tot = torch.zeros_like(x0).flatten(1)
        xc = x0.clone()

        def pairs(logits: Tensor) -> tuple[Tensor, Tensor]:
            if targets is None:
                return cand, ref[:, None].expand_as(cand)
            return ref[:, None], strongest_other(logits, ref)[:, None]

        for _ in range(self.steps):
            logits, f, w = pair_gradients(model, xc, pairs)
            queries[idx] += 1
            am = logits.argmax(1)
            hit = am == ref if targets is not None else am != ref
            if bool(hit.any()):
                x_out[idx[hit]] = xc[hit]
                keep = ~hit
                idx, x0, xc, r_tot, cand, ref = (
                    idx[keep],
                    x0[keep],
                    xc[keep],
                    r_tot[keep],
                    cand[keep],
                    ref[keep],
                )
                f, w = f[keep], w[keep]
                if idx.numel() == 0:
                    return x_out, queries
            f_l, w_l = closest_hyperplane(f, w, threat.norm)
            need = f_l.abs() + _SLACK
            if threat.norm == "l1":  # box-aware: the free step is one coordinate, often blocked
                step = project_hyperplane_box(xc.flatten(1), w_l, need, lo, hi, "l1")
            else:
                step = hyperplane_step(w_l, need, threat.norm)
            r_tot = r_tot + step
            xc = (x0 + (1 + self.overshoot) * r_tot.view_as(x0)).clamp(lo, hi)
        x_out[idx] = xc  # fooled by the last step, or the last attempt (the base class checks)
        return x_out, queries
