"""Feature squeezing (Xu, Evans and Qi 2018, "Feature squeezing: detecting adversarial examples
in deep neural networks").

An input is squeezed by reducing its colour bit depth and, separately, by a local median
filter; the detection score is the largest L1 distance between the model's softmax output on
the original and on a squeezed input. Adversarial perturbations tend to be undone by squeezing,
so the prediction moves; clean inputs barely change.

Both squeezers are non-differentiable almost everywhere; :func:`straight_through` gives them the
identity gradient (BPDA, Athalye et al. 2018) for adaptive attacks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def reduce_bit_depth(x: Tensor, bits: int, bounds: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """Quantise ``x`` ``(N, ...)`` to ``2**bits`` evenly spaced levels over ``bounds``."""
    lo, hi = bounds
    levels = float(2**bits - 1)
    return torch.round((x - lo) / (hi - lo) * levels) / levels * (hi - lo) + lo


def median_filter(x: Tensor, size: int) -> Tensor:
    """Per-channel median over ``size x size`` windows of images ``(N, C, H, W)``, same shape.

    Even sizes pad one more pixel on the bottom/right (as in Xu et al.'s 2x2 filter); borders
    are reflected. The median of an even count is the lower middle value (``torch.median``).
    """
    if size <= 1:
        return x
    n, c, h, w = x.shape
    before, after = (size - 1) // 2, size // 2
    mode = "reflect" if min(h, w) > max(before, after) else "replicate"
    padded = F.pad(x, (before, after, before, after), mode=mode)
    patches = F.unfold(padded.reshape(n * c, 1, *padded.shape[2:]), kernel_size=size)
    return patches.median(dim=1).values.reshape(n, c, h, w)


def straight_through(x: Tensor, squeezed: Tensor) -> Tensor:
    """``squeezed`` in the forward pass, the identity in the backward pass (BPDA)."""
    return x + (squeezed - x).detach()


def squeeze_variants(
    x: Tensor, *, bit_depth: int, median_size: int, bounds: tuple[float, float]
) -> list[Tensor]:
    """The squeezed copies of ``x``: bit-depth reduction always, the median filter for images
    ``(N, C, H, W)`` with ``median_size > 1``."""
    out = [reduce_bit_depth(x, bit_depth, bounds)]
    if x.dim() == 4 and median_size > 1:
        out.append(median_filter(x, median_size))
    return out


def squeezing_score(probs: Tensor, squeezed_probs: list[Tensor]) -> Tensor:
    """``(N,)``: the largest L1 distance between ``probs`` ``(N, C)`` and each squeezed
    input's probabilities (Xu et al. 2018, the joint detector)."""
    dists = [(probs - p).abs().sum(dim=1) for p in squeezed_probs]
    return torch.stack(dists, dim=1).amax(dim=1)
