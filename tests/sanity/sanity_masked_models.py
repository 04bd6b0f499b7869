"""Wrappers that mask gradients in three classic ways (Athalye et al. 2018)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Quantised(nn.Module):
    """Rounds the input to ``levels`` grey levels before the model: the gradient is zero almost
    everywhere (the masking BPDA was invented for)."""

    def __init__(self, inner: nn.Module, levels: int = 4):
        super().__init__()
        self.inner, self.levels = inner, levels

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(torch.round(x * self.levels) / self.levels)
        return out


class Saturated(nn.Module):
    """Returns softmax probabilities scaled by 1e4 as 'logits': the cross-entropy on them
    saturates, so its gradient underflows to exactly zero on confident examples."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.inner(x), dim=1) * 1e4


class Noisy(nn.Module):
    """Adds Gaussian noise to the input on every call: a randomised defence."""

    def __init__(self, inner: nn.Module, sigma: float = 0.1):
        super().__init__()
        self.inner, self.sigma = inner, sigma

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(x + self.sigma * torch.randn_like(x))
        return out


class Scaled(nn.Module):
    """Multiplies the logits by ``scale`` (1e4): the same predictions, but the cross-entropy is
    saturated, so its gradient is exactly zero on every confidently classified example."""

    def __init__(self, inner: nn.Module, scale: float = 1e4):
        super().__init__()
        self.inner, self.scale = inner, scale

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(x) * self.scale
        return out


class RandomDrop(nn.Module):
    """Zeroes each input pixel with probability ``p`` and adds Gaussian noise on every call: a
    randomised-transformation defence."""

    def __init__(self, inner: nn.Module, p: float = 0.1, sigma: float = 0.05):
        super().__init__()
        self.inner, self.p, self.sigma = inner, p, sigma

    def forward(self, x: Tensor) -> Tensor:
        keep = (torch.rand_like(x) >= self.p).to(x.dtype)
        out: Tensor = self.inner(x * keep + self.sigma * torch.randn_like(x))
        return out


class DetectAndPurify(nn.Module):
    """A non-differentiable detector in front of the model: the digits data lie on a grid of 17
    grey levels, and an input whose mean distance to that grid (in grid steps) exceeds
    ``threshold`` is flagged
    as adversarial and purified (rounded to ``levels`` grey levels) before the model. Clean
    digits pass untouched with honest gradients; the random starts and the steps of an attack
    are flagged, and there the gradient is zero."""

    def __init__(self, inner: nn.Module, threshold: float = 0.02, levels: int = 4):
        super().__init__()
        self.inner, self.threshold, self.levels = inner, threshold, levels

    def score(self, x: Tensor) -> Tensor:
        return (x * 16 - torch.round(x * 16)).abs().flatten(1).mean(1)

    def forward(self, x: Tensor) -> Tensor:
        flagged = (self.score(x) > self.threshold).view(-1, *([1] * (x.dim() - 1)))
        purified = torch.round(x * self.levels) / self.levels
        out: Tensor = self.inner(torch.where(flagged, purified, x))
        return out
