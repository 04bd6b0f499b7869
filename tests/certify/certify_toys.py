"""Tiny classifiers whose smoothed behaviour is known exactly (imported by the certify tests)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LinearBinary(nn.Module):
    """``f(z) = 1 if w.z + b > 0 else 0``. Under noise ``N(0, sigma^2 I)`` it predicts the
    class of ``x`` with probability ``Phi(|w.x + b| / (sigma ||w||))``, so the smoothed
    classifier's exact certified radius is the distance ``|w.x + b| / ||w||`` to the plane."""

    w: Tensor
    b: Tensor

    def __init__(self, w: Tensor, b: float) -> None:
        super().__init__()
        self.register_buffer("w", w.double())
        self.register_buffer("b", torch.tensor(float(b), dtype=torch.float64))

    def forward(self, z: Tensor) -> Tensor:
        s = z.flatten(1).double() @ self.w + self.b
        return torch.stack([-s, s], dim=1)

    def distance(self, x: Tensor) -> Tensor:
        return (x.flatten(1).double() @ self.w + self.b).abs() / self.w.norm()

    def label(self, x: Tensor) -> Tensor:
        return (x.flatten(1).double() @ self.w + self.b > 0).long()


class ByPosition(nn.Module):
    """Ignores its input: the ``i``-th row of a batch gets class 1 if ``i % period < ones``,
    else class 0. With ``n`` a multiple of ``period`` and batches a multiple of ``period``,
    every input gets exactly ``n * ones / period`` votes for class 1."""

    def __init__(self, ones: int, period: int) -> None:
        super().__init__()
        self.ones = ones
        self.period = period

    def forward(self, z: Tensor) -> Tensor:
        pos = torch.arange(z.shape[0]) % self.period
        cls = (pos < self.ones).long()
        return nn.functional.one_hot(cls, 2).double()


class Quadrant(nn.Module):
    """Four classes from the signs of the first two input coordinates."""

    def forward(self, z: Tensor) -> Tensor:
        cls = (z[:, 0] > 0).long() + 2 * (z[:, 1] > 0).long()
        return nn.functional.one_hot(cls, 4).float()
