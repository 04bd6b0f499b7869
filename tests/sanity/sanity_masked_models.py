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
