"""Model inversion: what does the model remember a class looks like?

:func:`invert_classes` is the MI-Face attack of Fredrikson, Jha and Ristenpart 2015 ("Model
inversion attacks that exploit confidence information and basic countermeasures", CCS): plain
gradient descent on the *input* to maximise the model's confidence in a chosen class, from a
prior starting point, kept in the valid input range, with a prior on what images look like.
The paper's cost is ``1 - p_c(x)``; the default here is ``-log p_c(x)`` (``cost="log"``),
which has the same minimiser and does not stall where ``p_c`` is tiny. The image prior is total
variation plus an l2 pull towards the starting point (Mahendran and Vedaldi 2015 use the same
pair): ``cost(x) + tv * TV(x) + l2 * ||x - x0||^2``.

:func:`inversion_similarity` measures how much of a class the reconstruction gives away: its
centred cosine similarity and a global SSIM against each class mean of the training data (the
"average face" that the attack approximates; Fredrikson et al. judged theirs by eye and by
recognition rate). A class is *identified* when its reconstruction is closest to its own class
mean. :func:`save_grid` writes the reconstructions over the class means as a PNG.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.errors import ConfigError

__all__ = [
    "InversionSettings",
    "class_means",
    "inversion_similarity",
    "invert_classes",
    "save_grid",
    "total_variation",
]


@dataclass(frozen=True)
class InversionSettings:
    """MI-Face settings (the paper's alpha, beta, gamma, lambda are ``steps``, ``patience``,
    ``stop_cost`` and ``step_size``).

    Attributes:
        steps: gradient steps at most; step_size: the descent step (input units).
        patience: stop a class when its cost has not improved for this many steps (0: never).
        stop_cost: stop when the class cost falls below this (``-inf``: never).
        tv, l2: weights of the total-variation and l2 priors.
        cost: ``"log"`` (``-log p_c``) or ``"fredrikson"`` (``1 - p_c``).
    """

    steps: int = 300
    step_size: float = 0.05
    patience: int = 50
    stop_cost: float = float("-inf")
    tv: float = 0.05
    l2: float = 0.01
    cost: Literal["log", "fredrikson"] = "log"

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"inversion.steps: expected an integer >= 1, got {self.steps!r}")
        if not self.step_size > 0:
            raise ConfigError(f"inversion.step_size: expected > 0, got {self.step_size!r}")
        if self.patience < 0:
            raise ConfigError(f"inversion.patience: expected >= 0, got {self.patience!r}")
        for name in ("tv", "l2"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"inversion.{name}: expected >= 0, got {getattr(self, name)!r}")
        if self.cost not in ("log", "fredrikson"):
            raise ConfigError(f"inversion.cost: expected 'log' or 'fredrikson', got {self.cost!r}")


def total_variation(x: Tensor) -> Tensor:
    """Anisotropic total variation per image, ``(N,)``, of ``x`` ``(N, C, H, W)`` (mean absolute
    difference of neighbouring pixels); 0 for inputs that are not images."""
    if x.dim() != 4:
        return x.new_zeros(x.shape[0])
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return dh + dw


def invert_classes(
    model: nn.Module,
    classes: Tensor,
    start: Tensor,
    *,
    settings: InversionSettings | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> tuple[Tensor, dict[str, Any]]:
    """Reconstruct one representative input per class by gradient descent on the input.

    Args:
        model: maps inputs ``(N, *input_shape)`` to logits; its parameters are not changed.
        classes: ``(K,)`` int64 class indices to invert.
        start: ``(*input_shape)`` or ``(K, *input_shape)``: the starting point ``x0`` (the
            attacker's prior, e.g. the mean of any auxiliary images, or a flat grey image).
        bounds: inputs stay in ``[lo, hi]`` (projected after every step).

    Returns:
        ``(x, info)``: reconstructions ``(K, *input_shape)`` in bounds, and per class the final
        ``confidence`` ``p_c(x)``, ``cost`` and ``steps`` taken. Deterministic (no randomness).
    """
    s = settings or InversionSettings()
    k = classes.shape[0]
    x0 = start.unsqueeze(0).expand(k, *start.shape).clone() if _single(start, k) else start.clone()
    x = x0.clone()
    model.eval()
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:  # gradients with respect to the input only
        p.requires_grad_(False)
    best = torch.full((k,), float("inf"), dtype=torch.float64)
    best_x = x.clone()
    stale = torch.zeros(k, dtype=torch.int64)
    active = torch.ones(k, dtype=torch.bool)
    steps_taken = torch.zeros(k, dtype=torch.int64)
    try:
        for _ in range(s.steps):
            if not bool(active.any()):
                break
            xg = x.detach().requires_grad_(True)
            with torch.enable_grad():
                logp = F.log_softmax(model(xg), dim=1).gather(1, classes.view(-1, 1)).squeeze(1)
                cost = -logp if s.cost == "log" else 1 - logp.exp()
                prior = s.tv * total_variation(xg) + s.l2 * (xg - x0).flatten(1).pow(2).sum(1)
                total = cost + prior
                (grad,) = torch.autograd.grad(total.sum(), xg)
            c = total.detach().to(torch.float64)
            improved = c < best - 1e-9
            best = torch.where(improved & active, c, best)
            best_x[improved & active] = x[improved & active]
            stale = torch.where(improved, torch.zeros_like(stale), stale + 1)
            done = cost.detach().to(torch.float64) < s.stop_cost
            if s.patience > 0:
                done |= stale >= s.patience
            active &= ~done
            step = -s.step_size * grad
            mask = active.view(-1, *([1] * (x.dim() - 1)))
            x = torch.where(mask, (x + step).clamp(bounds[0], bounds[1]), x).detach()
            steps_taken += active.to(torch.int64)
        with torch.no_grad():  # the last iterate may be the best
            logp = F.log_softmax(model(x), dim=1).gather(1, classes.view(-1, 1)).squeeze(1)
            prior = s.tv * total_variation(x) + s.l2 * (x - x0).flatten(1).pow(2).sum(1)
            last = (-logp if s.cost == "log" else 1 - logp.exp()) + prior
            better = last.to(torch.float64) < best
            best_x[better] = x[better]
            final = F.softmax(model(best_x), dim=1).gather(1, classes.view(-1, 1)).squeeze(1)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    info = {
        "confidence": [float(v) for v in final],
        "cost": [float(v) for v in torch.minimum(best, last.to(torch.float64))],
        "steps": [int(v) for v in steps_taken],
    }
    return best_x, info


def _single(start: Tensor, k: int) -> bool:
    """Whether ``start`` is one input (to be repeated) rather than one per class."""
    return not (start.dim() >= 2 and start.shape[0] == k and start.dim() in (2, 4))


def class_means(x: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """``(C, *input_shape)``: the mean training input of each class (zeros for an absent one)."""
    flat = x.reshape(x.shape[0], -1).to(torch.float64)
    sums = torch.zeros(num_classes, flat.shape[1], dtype=torch.float64).index_add_(0, y, flat)
    counts = torch.bincount(y, minlength=num_classes).clamp_min(1).to(torch.float64)
    return (sums / counts.view(-1, 1)).to(x.dtype).reshape(num_classes, *x.shape[1:])


def _ssim_global(a: Tensor, b: Tensor, data_range: float) -> Tensor:
    """Global (one window) SSIM of Wang et al. 2004 between rows of ``a`` ``(K, D)`` and
    ``b`` ``(C, D)``: ``(K, C)``."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ma, mb = a.mean(1, keepdim=True), b.mean(1, keepdim=True)
    va, vb = a.var(1, unbiased=False), b.var(1, unbiased=False)
    cov = (a - ma) @ (b - mb).T / a.shape[1]
    num = (2 * ma @ mb.T + c1) * (2 * cov + c2)
    den = (ma**2 + (mb**2).T + c1) * (va.view(-1, 1) + vb.view(1, -1) + c2)
    return num / den


def inversion_similarity(
    recon: Tensor,
    classes: Tensor,
    means: Tensor,
    *,
    data_range: float = 1.0,
) -> dict[str, Any]:
    """Compare reconstructions ``(K, ...)`` of ``classes`` ``(K,)`` with the class means
    ``(C, ...)`` of the training data.

    Returns ``identified`` (share of classes whose reconstruction is nearest, by centred cosine,
    to its own class mean: chance is ``1 / C``), mean ``cosine_own`` / ``cosine_other_max`` and
    ``ssim_own``, and the same per class under ``per_class``. Cosines are taken after
    subtracting the mean of the class means, so a blank image scores 0, not ~0.8.
    """
    a = recon.reshape(recon.shape[0], -1).to(torch.float64)
    b = means.reshape(means.shape[0], -1).to(torch.float64)
    centre = b.mean(0, keepdim=True)
    ac, bc = a - centre, b - centre
    cos = (ac @ bc.T) / (ac.norm(dim=1, keepdim=True) * bc.norm(dim=1).view(1, -1)).clamp_min(1e-12)
    ssim = _ssim_global(a, b, data_range)
    own = cos.gather(1, classes.view(-1, 1)).squeeze(1)
    other = cos.scatter(1, classes.view(-1, 1), float("-inf")).max(1).values
    hit = cos.argmax(1) == classes
    ssim_own = ssim.gather(1, classes.view(-1, 1)).squeeze(1)
    return {
        "identified": float(hit.to(torch.float64).mean()),
        "cosine_own": float(own.mean()),
        "cosine_other_max": float(other.mean()),
        "ssim_own": float(ssim_own.mean()),
        "chance": 1.0 / means.shape[0],
        "per_class": {
            str(int(c)): {
                "cosine_own": float(own[i]),
                "cosine_other_max": float(other[i]),
                "ssim_own": float(ssim_own[i]),
                "identified": bool(hit[i]),
            }
            for i, c in enumerate(classes)
        },
    }


def save_grid(
    path: str | os.PathLike[str],
    rows: list[Tensor],
    *,
    bounds: tuple[float, float] = (0.0, 1.0),
    min_size: int = 64,
) -> Path:
    """Write images as a PNG grid: one row per tensor in ``rows`` (each ``(K, C, H, W)`` with
    ``C`` 1 or 3, all the same shape), one column per image, each upscaled (nearest
    neighbour) to at least ``min_size`` pixels, with a 1-pixel-per-scale gap. Returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.image as mpimg

    if not rows or any(r.dim() != 4 or r.shape != rows[0].shape for r in rows):
        raise ConfigError("inversion grid: expected rows of images (K, C, H, W) of one shape")
    k, c, h, w = rows[0].shape
    if c not in (1, 3):
        raise ConfigError(f"inversion grid: expected 1 or 3 channels, got {c}")
    scale = max(1, -(-min_size // max(h, w)))
    gap = scale
    lo, hi = bounds
    canvas = np.ones((len(rows) * (h * scale + gap) - gap, k * (w * scale + gap) - gap, 3))
    for r, row in enumerate(rows):
        imgs = ((row.detach().to(torch.float64) - lo) / (hi - lo)).clamp(0, 1).numpy()
        for i in range(k):
            img = np.repeat(np.repeat(imgs[i], scale, axis=1), scale, axis=2)
            img = np.transpose(img, (1, 2, 0))
            if c == 1:
                img = np.repeat(img, 3, axis=2)
            top, left = r * (h * scale + gap), i * (w * scale + gap)
            canvas[top : top + h * scale, left : left + w * scale] = img
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    mpimg.imsave(str(out), canvas)
    return out
