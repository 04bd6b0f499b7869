"""Temperature scaling (Guo et al. 2017, "On calibration of modern neural networks") and the
expected calibration error.

A single temperature ``T > 0`` divides the logits: ``p = softmax(z / T)``. It changes no
prediction (the argmax is the same) and is fitted by minimising the negative log-likelihood on
held-out data; bastion fits it on clean plus adversarial validation examples, so the confidence
of a hardened model means the same under attack. NLL is convex in ``1 / T`` (the logits are
linear in it and cross-entropy is convex in the logits), so a golden-section search over
``1 / T`` finds the global minimum.

Apply the fitted temperature with :func:`apply_temperature` (``logits / T``), or wrap the model
in :class:`TemperatureScaled`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.errors import ConfigError

ECE_BINS = 15
_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """Calibrated logits ``logits / T`` (``(N, C)``); softmax them for probabilities."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"temperature: expected a number > 0, got {temperature}")
    return logits / temperature


class TemperatureScaled(nn.Module):
    """``model(x) / T``: the same predictions with calibrated confidences."""

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        apply_temperature(torch.zeros(1, 1), temperature)  # validates T
        self.model = model
        self.temperature = float(temperature)

    def forward(self, x: Tensor) -> Tensor:
        return apply_temperature(self.model(x), self.temperature)


def expected_calibration_error(logits: Tensor, y: Tensor, *, bins: int = ECE_BINS) -> float:
    """ECE of ``softmax(logits)`` with ``bins`` equal-width confidence bins (Naeini et al. 2015;
    15 bins as Guo et al.), in [0, 1]; ``logits`` ``(N, C)``, ``y`` ``(N,)``; 0.0 for an empty
    batch. The binning is the evaluation's
    (:func:`bastion.evaluation.calibration.expected_calibration_error`), so the figures agree."""
    from bastion.evaluation.calibration import expected_calibration_error as ece_of_probs

    if bins < 1:
        raise ConfigError(f"bins: expected an integer >= 1, got {bins}")
    if logits.shape[0] == 0:
        return 0.0
    return float(ece_of_probs(F.softmax(logits.double(), dim=1), y, bins=bins))


def _nll(logits: Tensor, y: Tensor, inv_t: float) -> float:
    return float(F.cross_entropy(logits * inv_t, y))


def fit_temperature(
    logits: Tensor, y: Tensor, *, t_min: float = 0.01, t_max: float = 100.0, iters: int = 100
) -> float:
    """The temperature in ``[t_min, t_max]`` minimising the NLL of ``softmax(logits / T)``
    (golden-section search over ``1 / T``; ``logits`` ``(N, C)``, ``y`` ``(N,)``)."""
    if logits.shape[0] == 0:
        raise ConfigError("calibration: expected at least one validation example, got none")
    if not 0 < t_min < t_max:
        raise ConfigError(f"calibration: expected 0 < t_min < t_max, got {t_min}, {t_max}")
    z = logits.detach().double()
    a, b = 1.0 / t_max, 1.0 / t_min
    c, d = b - _INV_PHI * (b - a), a + _INV_PHI * (b - a)
    fc, fd = _nll(z, y, c), _nll(z, y, d)
    for _ in range(iters):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - _INV_PHI * (b - a)
            fc = _nll(z, y, c)
        else:
            a, c, fc = c, d, fd
            d = a + _INV_PHI * (b - a)
            fd = _nll(z, y, d)
    return 1.0 / ((a + b) / 2.0)


@dataclass(frozen=True)
class CalibrationReport:
    """What temperature scaling did: the fitted ``temperature`` and ECE (15 bins) and NLL on
    the fitting data before (T = 1) and after, with the counts of clean and adversarial
    examples used."""

    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    n_clean: int
    n_adversarial: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate(
    logits_clean: Tensor, y_clean: Tensor, logits_adv: Tensor, y_adv: Tensor
) -> CalibrationReport:
    """Fit a temperature on clean plus adversarial logits and report ECE and NLL around it."""
    z = torch.cat([logits_clean, logits_adv]).detach().double()
    y = torch.cat([y_clean, y_adv])
    t = fit_temperature(z, y)
    return CalibrationReport(
        temperature=t,
        ece_before=expected_calibration_error(z, y),
        ece_after=expected_calibration_error(z / t, y),
        nll_before=_nll(z, y, 1.0),
        nll_after=_nll(z, y, 1.0 / t),
        n_clean=int(y_clean.shape[0]),
        n_adversarial=int(y_adv.shape[0]),
    )
