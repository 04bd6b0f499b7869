"""Distribution-shift splits: the test set under a fixed, named change of distribution.

Unlike corruptions (noise and degradations at five severities), a shift is a plausible change of
the world the model is deployed in (Koh et al. 2021, "WILDS"; Engstrom et al. 2019, "Exploring
the landscape of spatial robustness"): digits written at an angle, off-centre or at another size,
or tabular features measured with a different scale or more noise. Each shift is named
``<kind>-<amount>``:

images ``(N, C, H, W)``
    ``rotate-D`` (each image rotated by +D or -D degrees, the sign drawn per image),
    ``translate-P`` (moved by P pixels in one of the four directions, drawn per image),
    ``zoom-F`` (scaled by F about the centre; F < 1 shrinks).
any input
    ``noise-S`` (Gaussian noise of standard deviation S in input units),
    ``scale-F`` (every feature multiplied by F about the lower bound),
    ``offset-D`` (every feature shifted by D).

Outputs are clipped to the input bounds; draws come from a generator seeded per shift, so a
split is the same in every run with the same seed.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.base import predict
from bastion.errors import ConfigError

__all__ = [
    "IMAGE_SHIFTS",
    "SHIFT_KINDS",
    "apply_shift",
    "default_shifts",
    "parse_shift",
    "shift_accuracy",
]

IMAGE_SHIFTS = ("rotate", "translate", "zoom")
SHIFT_KINDS = (*IMAGE_SHIFTS, "noise", "scale", "offset")
_NAME = re.compile(r"^(?P<kind>[a-z]+)-(?P<amount>[0-9]+(\.[0-9]+)?)$")


def parse_shift(name: str) -> tuple[str, float]:
    """``"rotate-15" -> ("rotate", 15.0)``; raises :class:`ConfigError` for a bad name."""
    m = _NAME.match(name)
    if m is None or m["kind"] not in SHIFT_KINDS:
        raise ConfigError(
            f"evaluation.shifts: expected names like rotate-15, translate-2, zoom-0.8, "
            f"noise-0.1, scale-1.1 or offset-0.05 (kinds: {', '.join(SHIFT_KINDS)}), got {name!r}"
        )
    amount = float(m["amount"])
    kind = m["kind"]
    if kind == "zoom" and not 0.2 <= amount <= 5:
        raise ConfigError(f"evaluation.shifts: {name}: zoom factor must lie in [0.2, 5]")
    if kind == "rotate" and amount > 180:
        raise ConfigError(f"evaluation.shifts: {name}: rotation must be at most 180 degrees")
    if kind == "scale" and amount <= 0:
        raise ConfigError(f"evaluation.shifts: {name}: scale factor must be positive")
    return kind, amount


def default_shifts(*, images: bool) -> list[str]:
    """The shifts evaluated when the config lists none."""
    if images:
        return ["rotate-15", "rotate-30", "translate-2", "translate-4", "zoom-0.8", "zoom-1.2"]
    return ["noise-0.05", "noise-0.1", "scale-0.9", "scale-1.1", "offset-0.05"]


def _affine(x: Tensor, theta: Tensor) -> Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def apply_shift(
    name: str,
    x: Tensor,
    *,
    bounds: tuple[float, float] = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """The shifted copy of ``x`` ``(N, ...)``; image shifts need ``(N, C, H, W)``.

    Images are padded with the lower bound (the background of digits) where they move in.
    """
    kind, amount = parse_shift(name)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    n = x.shape[0]
    lo, hi = bounds
    if kind in IMAGE_SHIFTS:
        if x.dim() != 4:
            raise ConfigError(
                f"evaluation.shifts: {name} needs images (N, C, H, W), got shape {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        theta = torch.zeros(n, 2, 3, dtype=x.dtype)
        if kind == "rotate":
            sign = torch.randint(0, 2, (n,), generator=gen).to(x.dtype) * 2 - 1
            a = sign * math.radians(amount)
            theta[:, 0, 0] = torch.cos(a)
            theta[:, 0, 1] = -torch.sin(a)
            theta[:, 1, 0] = torch.sin(a)
            theta[:, 1, 1] = torch.cos(a)
        elif kind == "translate":
            theta[:, 0, 0] = 1
            theta[:, 1, 1] = 1
            direction = torch.randint(0, 4, (n,), generator=gen)
            dx = torch.tensor([1.0, -1.0, 0.0, 0.0], dtype=x.dtype)[direction]
            dy = torch.tensor([0.0, 0.0, 1.0, -1.0], dtype=x.dtype)[direction]
            # grid coordinates span [-1, 1] over the width: one pixel is 2 / w
            theta[:, 0, 2] = -dx * amount * 2 / w
            theta[:, 1, 2] = -dy * amount * 2 / h
        else:  # zoom
            theta[:, 0, 0] = 1 / amount
            theta[:, 1, 1] = 1 / amount
        shifted = _affine(x - lo, theta) + lo
    elif kind == "noise":
        shifted = x + amount * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    elif kind == "scale":
        shifted = lo + (x - lo) * amount
    else:  # offset
        shifted = x + amount
    return shifted.clamp(lo, hi)


def _seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:shift:{name}".encode()).digest()[:6], "big")


def shift_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    names: Sequence[str] | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy of ``model`` on each shifted copy of ``(x, y)``.

    Returns ``{"clean_accuracy", "shifts": {name: accuracy}, "mean_accuracy",
    "worst_shift", "worst_accuracy"}``.
    """
    images = x.dim() == 4
    chosen = list(names) if names else default_shifts(images=images)
    for n in chosen:
        parse_shift(n)
    model.eval()
    clean = float((predict(model, x) == y).float().mean())
    acc: dict[str, float] = {}
    for n in chosen:
        xs = apply_shift(
            n, x, bounds=bounds, generator=torch.Generator().manual_seed(_seed(seed, n))
        )
        acc[n] = float((predict(model, xs) == y).float().mean())
    worst = min(acc, key=lambda k: acc[k]) if acc else None
    return {
        "clean_accuracy": clean,
        "shifts": acc,
        "mean_accuracy": sum(acc.values()) / len(acc) if acc else None,
        "worst_shift": worst,
        "worst_accuracy": acc[worst] if worst is not None else None,
    }
