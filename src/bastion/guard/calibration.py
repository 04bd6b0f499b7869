"""Fitting the numbers the guard compares against: thresholds at a false-positive rate and the
softmax temperature.

* Thresholds: a detector fires when its score is strictly above its threshold. Given clean
  calibration scores, :func:`joint_thresholds` picks one quantile level shared by every firing
  layer so that the share of clean rows on which *any* layer fires is at most the target rate.
* Temperature scaling (Guo, Pleiss, Sun and Weinberger 2017, "On calibration of modern neural
  networks"): one scalar ``T > 0`` minimising the negative log-likelihood of ``softmax(z / T)``
  on held-out labelled data.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bastion.training.calibration import fit_temperature as fit_training_temperature


def quantile_threshold(scores: Tensor, level: float) -> float:
    """The smallest observed score ``t`` with ``P(score > t) <= 1 - level`` on ``scores``
    ``(N,)`` (an order statistic, no interpolation)."""
    s = scores.double().sort().values
    n = s.shape[0]
    k = min(n - 1, max(0, math.ceil(level * n) - 1))
    return float(s[k])


def joint_thresholds(scores: Tensor, fpr: float, *, iterations: int = 40) -> list[float]:
    """Thresholds for each column of clean scores ``(N, K)`` so that at most ``fpr`` of the rows
    exceed any threshold (the union's rate), each column at the same quantile level.

    Found by bisection on the level, monotone in the union rate. With ``K == 1`` this is the
    plain ``1 - fpr`` quantile.
    """
    if scores.shape[1] == 0:
        return []
    lo, hi = 1.0 - fpr, 1.0  # at level 1 - fpr/K (Bonferroni) the union is already feasible

    def union_rate(level: float) -> tuple[float, list[float]]:
        th = [quantile_threshold(scores[:, j], level) for j in range(scores.shape[1])]
        fired = (scores.double() > torch.tensor(th, dtype=torch.float64)).any(dim=1)
        return float(fired.double().mean()), th

    rate, best = union_rate(hi)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        rate, th = union_rate(mid)
        if rate <= fpr:
            hi, best = mid, th
        else:
            lo = mid
    return best


def fit_temperature(logits: Tensor, labels: Tensor) -> float:
    """The temperature ``T`` in ``[0.05, 20]`` minimising ``NLL(softmax(logits / T), labels)``
    for held-out logits ``(N, C)`` and labels ``(N,)`` (Guo et al. 2017); the training
    module's search, bounded for the guard."""
    return fit_training_temperature(logits, labels, t_min=0.05, t_max=20.0)
