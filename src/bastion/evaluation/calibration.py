"""Calibration of a classifier's confidence, clean and under attack.

The expected calibration error (ECE; Naeini et al. 2015, Guo et al. 2017 "On calibration of
modern neural networks") bins predictions by their top-class confidence into ``bins`` equal-width
bins and averages ``|accuracy - confidence|`` over the bins, weighted by their share of examples.
A reliability diagram plots each bin's accuracy against its mean confidence.

Calibration under attack (Stutz et al. 2020, "Confidence-calibrated adversarial training")
measures the same on adversarial inputs: a model that stays confident while an attack flips its
answer cannot be guarded by a confidence threshold. The adversarial inputs come from one attack,
run on every example (a wrong clean answer is attacked too, so the set is the one a guard sees).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.base import Attack
from bastion.errors import ConfigError
from bastion.threat import ThreatModel

__all__ = [
    "calibration_metrics",
    "evaluate_calibration",
    "expected_calibration_error",
    "model_probabilities",
    "reliability_bins",
]


def model_probabilities(
    model: nn.Module, x: Tensor, *, batch_size: int = 1000, temperature: float = 1.0
) -> Tensor:
    """Softmax probabilities ``(N, C)`` of ``model`` on ``x`` ``(N, ...)``, logits / temperature."""
    if temperature <= 0:
        raise ConfigError(f"temperature: expected a positive number, got {temperature}")
    outs = []
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch_size):
            outs.append(F.softmax(model(x[i : i + batch_size]).float() / temperature, dim=1))
    return torch.cat(outs) if outs else torch.empty(0, 0)


def reliability_bins(probs: Tensor, y: Tensor, *, bins: int = 15) -> list[dict[str, float]]:
    """Per-bin ``{"lower", "upper", "count", "accuracy", "confidence"}`` of the top-class
    confidence of ``probs`` ``(N, C)`` against labels ``y`` ``(N,)``; empty bins have count 0 and
    accuracy/confidence 0. Bins are ``(lower, upper]``, the first one closed at 0."""
    if bins < 1:
        raise ConfigError(f"calibration.bins: expected an integer >= 1, got {bins}")
    if probs.dim() != 2 or y.shape != (probs.shape[0],):
        raise ConfigError(
            f"probs/y: expected shapes (N, C) and (N,), got {tuple(probs.shape)} and "
            f"{tuple(y.shape)}"
        )
    conf, pred = probs.max(dim=1)
    correct = (pred == y).double()
    conf = conf.double()
    # bin index: ceil(conf * bins) - 1, clamped (conf 0 falls in the first bin)
    idx = (torch.ceil(conf * bins).long() - 1).clamp(0, bins - 1)
    count = torch.bincount(idx, minlength=bins).double()
    acc_sum = torch.bincount(idx, weights=correct, minlength=bins)
    conf_sum = torch.bincount(idx, weights=conf, minlength=bins)
    out = []
    for b in range(bins):
        n = float(count[b])
        out.append(
            {
                "lower": b / bins,
                "upper": (b + 1) / bins,
                "count": int(n),
                "accuracy": float(acc_sum[b]) / n if n else 0.0,
                "confidence": float(conf_sum[b]) / n if n else 0.0,
            }
        )
    return out


def expected_calibration_error(probs: Tensor, y: Tensor, *, bins: int = 15) -> float:
    """ECE in [0, 1]: ``sum_b (n_b / N) |acc_b - conf_b|`` over equal-width confidence bins."""
    table = reliability_bins(probs, y, bins=bins)
    n = sum(b["count"] for b in table)
    if n == 0:
        return 0.0
    return sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in table)


def calibration_metrics(probs: Tensor, y: Tensor, *, bins: int = 15) -> dict[str, Any]:
    """ECE, maximum calibration error, negative log-likelihood, Brier score, accuracy, mean
    confidence and the reliability bins of ``probs`` ``(N, C)`` against ``y`` ``(N,)``."""
    table = reliability_bins(probs, y, bins=bins)
    n = probs.shape[0]
    filled = [b for b in table if b["count"]]
    p_true = probs.gather(1, y[:, None]).squeeze(1).double().clamp_min(1e-12)
    onehot = F.one_hot(y, probs.shape[1]).double()
    return {
        "n": n,
        "ece": sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in table)
        if n
        else 0.0,
        "mce": max((abs(b["accuracy"] - b["confidence"]) for b in filled), default=0.0),
        "nll": float(-p_true.log().mean()) if n else 0.0,
        "brier": float(((probs.double() - onehot) ** 2).sum(dim=1).mean()) if n else 0.0,
        "accuracy": float((probs.argmax(dim=1) == y).double().mean()) if n else 0.0,
        "mean_confidence": float(probs.max(dim=1).values.double().mean()) if n else 0.0,
        "bins": table,
    }


def _seed(seed: int, label: str) -> int:
    return int.from_bytes(
        hashlib.sha256(f"{seed}:calibration:{label}".encode()).digest()[:6], "big"
    )


def evaluate_calibration(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    attack: Attack | None,
    attack_label: str = "pgd",
    bins: int = 15,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 500,
) -> dict[str, Any]:
    """Calibration on clean ``x`` ``(N, ...)`` and, if ``attack`` is given, on its adversarial
    examples at ``threat.eps``.

    Returns ``{"bins", "temperature", "clean": metrics, "adversarial": metrics | None,
    "attack": attack_label | None}`` with the metrics of :func:`calibration_metrics`.
    """
    model.eval()
    clean = calibration_metrics(
        model_probabilities(model, x, temperature=temperature), y, bins=bins
    )
    adversarial = None
    if attack is not None and x.shape[0]:
        gen = torch.Generator().manual_seed(_seed(seed, attack_label))
        parts = []
        for i in range(0, x.shape[0], batch_size):
            parts.append(
                attack(
                    model, x[i : i + batch_size], y[i : i + batch_size], threat, generator=gen
                ).x_adv
            )
        x_adv = torch.cat(parts)
        adversarial = calibration_metrics(
            model_probabilities(model, x_adv, temperature=temperature), y, bins=bins
        )
    return {
        "bins": bins,
        "temperature": temperature,
        "clean": clean,
        "adversarial": adversarial,
        "attack": attack_label if attack is not None else None,
    }
