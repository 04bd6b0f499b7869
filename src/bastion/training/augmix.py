"""AugMix-style mixing of corruption chains (Hendrycks et al. 2020, "AugMix: a simple data
processing method to improve robustness and uncertainty").

Each example gets ``width`` chains; a chain applies ``1..depth`` random corruptions from
:mod:`bastion.corruptions` one after another (each at a random severity). The chains are mixed
with convex weights ``w ~ Dirichlet(1, ..., 1)`` and the mixture is blended with the clean
input with ``m ~ Beta(1, 1)``: ``x_aug = (1 - m) x + m sum_i w_i chain_i(x)``.

The paper draws ``w`` and ``m`` with a concentration ``alpha`` (1 by default); bastion fixes
``alpha = 1`` so both can be drawn from the seeded :class:`torch.Generator` (normalised
exponential spacings are Dirichlet(1), a uniform is Beta(1, 1)). The Jensen-Shannon consistency
loss between the clean and two augmented views is :func:`jensen_shannon`.

Shapes: ``x`` is ``(N, ...)`` with values in ``bounds``; outputs have ``x``'s shape and stay in
``bounds`` (a convex combination of points inside a box stays inside it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.corruptions import CORRUPTIONS, CorruptionAugment
from bastion.errors import ConfigError


@dataclass(frozen=True)
class AugMixSettings:
    """Settings of the ``augmix`` objective.

    Attributes:
        width: chains mixed per example (paper: 3).
        depth: the most corruptions in one chain; each chain draws its length in ``1..depth``.
        severities: corruption severities drawn from (1..5; mild ones by default).
        names: corruption names, or None for every corruption that applies to the input.
        jsd_weight: weight of the Jensen-Shannon consistency term (paper: 12).
    """

    width: int = 3
    depth: int = 3
    severities: tuple[int, ...] = (1, 2, 3)
    names: tuple[str, ...] | None = None
    jsd_weight: float = 12.0

    def __post_init__(self) -> None:
        if self.width < 1:
            raise ConfigError(f"objective.augmix.width: expected an integer >= 1, got {self.width}")
        if self.depth < 1:
            raise ConfigError(f"objective.augmix.depth: expected an integer >= 1, got {self.depth}")
        if not self.severities or any(not 1 <= s <= 5 for s in self.severities):
            raise ConfigError(
                f"objective.augmix.severities: expected severities in 1..5, got "
                f"{list(self.severities)}"
            )
        for n in self.names or ():
            if n not in CORRUPTIONS:
                raise ConfigError(
                    f"objective.augmix.names: unknown corruption {n!r}; expected some of "
                    f"{', '.join(CORRUPTIONS)}"
                )
        if not self.jsd_weight >= 0:
            raise ConfigError(
                f"objective.augmix.jsd_weight: expected a number >= 0, got {self.jsd_weight}"
            )


def _expand(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def augmix(
    x: Tensor,
    settings: AugMixSettings,
    *,
    bounds: tuple[float, float],
    generator: torch.Generator | None = None,
) -> Tensor:
    """One AugMix view of the batch ``x`` ``(N, ...)``; ``x`` is not modified."""
    op = CorruptionAugment(settings.names, settings.severities, 1.0, bounds=bounds)
    n = x.shape[0]
    spacings = -torch.log1p(-torch.rand(n, settings.width, generator=generator, device=x.device))
    w = spacings / spacings.sum(dim=1, keepdim=True)  # Dirichlet(1, ..., 1)
    m = torch.rand(n, generator=generator, device=x.device)  # Beta(1, 1)
    mix = torch.zeros_like(x)
    for i in range(settings.width):
        length = torch.randint(1, settings.depth + 1, (n,), generator=generator, device=x.device)
        chain = x.detach().clone()
        for d in range(settings.depth):
            active = (length > d).nonzero().squeeze(1)
            if active.numel() == 0:
                break
            chain[active] = op(chain[active], generator)
        mix = mix + _expand(w[:, i].to(x.dtype), x) * chain
    m_x = _expand(m.to(x.dtype), x)
    return ((1 - m_x) * x.detach() + m_x * mix).clamp(bounds[0], bounds[1])


def jensen_shannon(*logits: Tensor) -> Tensor:
    """Mean over the batch of the Jensen-Shannon divergence among the predictive distributions
    of several views, each ``(N, C)`` logits: ``mean_i KL(p_i || M)`` with ``M`` their mean."""
    probs = [F.softmax(z, dim=1) for z in logits]
    log_m = torch.stack(probs).mean(dim=0).clamp_min(1e-7).log()
    return sum(
        (F.kl_div(log_m, p, reduction="batchmean") for p in probs), start=torch.zeros(())
    ) / len(probs)
