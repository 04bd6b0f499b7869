"""Shared bookkeeping of the constrained attacks: the best admissible point per example."""

from __future__ import annotations

import torch
from torch import Tensor

from bastion.tabular.threat import TabularThreat


def margin(scores: Tensor, y: Tensor, targets: Tensor | None) -> Tensor:
    """``(N,)``: how far from success an example is (negative once it succeeds).

    Untargeted: ``s_y - max_{j != y} s_j``; targeted: ``max_{j != t} s_j - s_t``.
    """
    cls = targets if targets is not None else y
    own = scores.gather(1, cls[:, None]).squeeze(1)
    others = scores.clone()
    others[torch.arange(scores.shape[0], device=scores.device), cls] = float("-inf")
    best_other = others.amax(dim=1)
    return own - best_other if targets is None else best_other - own


def succeeded(scores: Tensor, y: Tensor, targets: Tensor | None) -> Tensor:
    """``(N,)`` bool: misclassified (untargeted) or classified as the target."""
    pred = scores.argmax(dim=1)
    return pred == targets if targets is not None else pred != y


class BestPoints:
    """Per example, the best admissible point seen: the first that succeeds, else the one of
    lowest margin. Starts at the clean input (always admissible)."""

    def __init__(self, x: Tensor, y: Tensor, targets: Tensor | None):
        self.x = x.clone()
        self.y = y
        self.targets = targets
        self.score = torch.full((x.shape[0],), float("inf"), device=x.device)
        self.done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

    def update(self, idx: Tensor, cand: Tensor, scores: Tensor) -> Tensor:
        """Offer admissible candidates ``cand`` ``(n, D)`` for examples ``idx`` ``(n,)`` with
        the model's scores on them; returns ``(n,)`` bool: which succeed."""
        ts = self.targets[idx] if self.targets is not None else None
        hit = succeeded(scores, self.y[idx], ts)
        m = margin(scores, self.y[idx], ts).to(self.score.dtype)
        better = (~self.done[idx]) & (hit | (m < self.score[idx]))
        take = idx[better]
        self.x[take] = cand[better]
        self.score[take] = m[better]
        self.done[idx[hit & ~self.done[idx]]] = True
        return hit


def only_admissible(threat: TabularThreat, x_adv: Tensor, x: Tensor) -> Tensor:
    """``x_adv`` where :meth:`TabularThreat.admissible`, else ``x`` (the last guard before an
    attack returns)."""
    ok = threat.admissible(x_adv, x)
    return torch.where(ok[:, None], x_adv, x)
