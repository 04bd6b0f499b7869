"""Neural Cleanse: reverse-engineer a trigger per class and flag a class whose trigger is tiny.

Wang, Yao, Shan, Li, Viswanath, Zheng and Zhao 2019 ("Neural Cleanse: identifying and
mitigating backdoor attacks in neural networks"). For every class ``t`` find the smallest mask
``m`` (``(1, H, W)`` in ``[0, 1]``) and a pattern ``p`` (``(C, H, W)`` in ``[0, 1]``) such that
stamping ``(1 - m) * x + m * p`` on clean inputs makes the model answer ``t``:

    min_{m, p}  CE(f((1 - m) x + m p), t) + lambda_t * ||m||_1

with ``m = (tanh(a) + 1) / 2`` and ``p = (tanh(b) + 1) / 2`` and ``lambda_t`` adapted as in the
paper (raised by 1.5x while the reversed trigger succeeds on at least ``success_threshold`` of
the batch, lowered by 1.5^1.5 otherwise). A backdoor's target needs a far smaller mask than
any other class; the anomaly index of class ``t`` is ``(median(L1) - L1_t) / (1.4826 * MAD)``
(median absolute deviation over the classes), and the model is flagged when the smallest
norm's index exceeds 2 (the paper's threshold, a 95% one-sided normal tail).

All classes are optimised together in one batched loop (``K * batch`` inputs per step), with
batches drawn from a seeded :class:`torch.Generator`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bastion.errors import ConfigError, DataError
from bastion.poisoning.attacks import Trigger

#: The MAD consistency constant for a normal distribution.
MAD_CONSTANT = 1.4826


@dataclass(frozen=True)
class CleanseSettings:
    """Settings of the trigger search.

    Attributes:
        steps: optimisation steps (each over one batch, for all classes at once).
        batch_size: clean inputs per step and class.
        lr: Adam learning rate on the tanh parameters.
        init_cost: the starting ``lambda``; adapt_every: steps between adaptations.
        success_threshold: the reversed trigger's success rate that counts as working.
        threshold: the anomaly index above which the model is flagged (paper: 2).
    """

    steps: int = 400
    batch_size: int = 64
    lr: float = 0.1
    init_cost: float = 1e-3
    adapt_every: int = 10
    success_threshold: float = 0.99
    threshold: float = 2.0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "adapt_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"neural_cleanse.{name}: expected an integer >= 1, got {value!r}")
        for name in ("lr", "init_cost", "threshold"):
            value = getattr(self, name)
            if not value > 0:
                raise ConfigError(f"neural_cleanse.{name}: expected a number > 0, got {value!r}")
        if not 0 < self.success_threshold <= 1:
            raise ConfigError(
                "neural_cleanse.success_threshold: expected a number in (0, 1], got "
                f"{self.success_threshold!r}"
            )


@dataclass(frozen=True, eq=False)
class CleanseResult:
    """What Neural Cleanse found.

    Attributes:
        norms: float64 ``(K,)``, the L1 norm of each class's smallest working mask (or of
            its last mask when none reached the success threshold).
        success: float64 ``(K,)``, each reversed trigger's success rate on the held-out check.
        anomaly: float64 ``(K,)``, anomaly index per class (positive below the median).
        flagged: whether the smallest norm's anomaly index exceeds the threshold.
        target: the suspected target class (the smallest norm) when flagged, else None.
        triggers: the reversed trigger of every class.
        settings: the settings used, and the seed.
    """

    norms: Tensor
    success: Tensor
    anomaly: Tensor
    flagged: bool
    target: int | None
    triggers: tuple[Trigger, ...]
    settings: dict[str, Any]

    @property
    def max_anomaly(self) -> float:
        """The anomaly index of the class with the smallest mask."""
        return float(self.anomaly[int(self.norms.argmin())])

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable verdict, norms, success rates and anomaly indices."""
        return {
            "flagged": self.flagged,
            "target": self.target,
            "anomaly_index": round(self.max_anomaly, 4),
            "smallest_norm_class": int(self.norms.argmin()),
            "norms": [round(float(v), 4) for v in self.norms],
            "success": [round(float(v), 4) for v in self.success],
            "anomaly": [round(float(v), 4) for v in self.anomaly],
            "settings": dict(self.settings),
        }


def anomaly_indices(norms: Tensor) -> Tensor:
    """``(median - norms) / (1.4826 * MAD)`` (float64 ``(K,)``); the MAD is floored at 1e-12."""
    values = norms.double()
    median = (
        values.median()
        if len(values) % 2
        else values.sort().values[len(values) // 2 - 1 : len(values) // 2 + 1].mean()
    )
    deviations = (values - median).abs()
    mad = (
        deviations.median()
        if len(values) % 2
        else deviations.sort().values[len(values) // 2 - 1 : len(values) // 2 + 1].mean()
    )
    return (median - values) / (MAD_CONSTANT * mad.clamp_min(1e-12))


def neural_cleanse(
    model: nn.Module,
    x: Tensor,
    *,
    num_classes: int,
    settings: CleanseSettings | None = None,
    seed: int = 0,
) -> CleanseResult:
    """Run Neural Cleanse on ``model`` with clean inputs ``x`` (``(N, C, H, W)`` in
    ``[0, 1]``; a few hundred held-out examples suffice). The model's parameters are frozen
    for the search and restored afterwards; the model is left in eval mode.

    The success rate per class is measured on all of ``x`` with the kept trigger (inputs
    already of class ``t`` count as successes, as in the paper).
    """
    s = settings or CleanseSettings()
    if x.ndim != 4 or len(x) == 0:
        raise DataError(f"neural_cleanse: expected clean inputs (N, C, H, W), got {tuple(x.shape)}")
    if num_classes < 3:
        raise ConfigError(
            f"neural_cleanse: needs at least 3 classes for a median deviation, got {num_classes}"
        )
    k = num_classes
    gen = torch.Generator().manual_seed(seed)
    frozen = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    try:
        best_mask, best_pattern = _search(model, x, k, s, gen)
        with torch.no_grad():
            norms = best_mask.flatten(1).sum(dim=1).double()
            triggers = tuple(
                Trigger(best_mask[t].clone(), best_pattern[t].clone(), "recovered")
                for t in range(k)
            )
            success = torch.tensor(
                [_success(model, x, triggers[t], t) for t in range(k)], dtype=torch.float64
            )
    finally:
        for p, flag in zip(model.parameters(), frozen, strict=True):
            p.requires_grad_(flag)
    anomaly = anomaly_indices(norms)
    smallest = int(norms.argmin())
    flagged = bool(anomaly[smallest] > s.threshold)
    record = {**s.__dict__, "seed": seed, "clean_examples": len(x)}
    return CleanseResult(
        norms, success, anomaly, flagged, smallest if flagged else None, triggers, record
    )


def _search(
    model: nn.Module, x: Tensor, k: int, s: CleanseSettings, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """The per-class trigger search of :func:`neural_cleanse` (frozen model in eval mode):
    masks ``(K, 1, H, W)`` and patterns ``(K, C, H, W)``, per class the smallest-L1 mask that
    reached ``s.success_threshold`` on a batch (the final one when none did). The cost of the
    L1 term adapts every ``s.adapt_every`` steps, as in the paper's implementation."""
    _, c, h, w = x.shape
    a = (torch.rand(k, 1, h, w, generator=gen) * 2 - 1).mul_(0.5).requires_grad_(True)
    b = (torch.rand(k, c, h, w, generator=gen) * 2 - 1).requires_grad_(True)
    opt = torch.optim.Adam([a, b], lr=s.lr, betas=(0.5, 0.9))
    cost = torch.full((k,), s.init_cost)
    targets = torch.arange(k).repeat_interleave(s.batch_size)
    best_norm = torch.full((k,), math.inf)
    best_mask = torch.zeros(k, 1, h, w)
    best_pattern = torch.zeros(k, c, h, w)
    hits = torch.zeros(k)
    seen = 0
    for step in range(1, s.steps + 1):
        pick = torch.randint(0, len(x), (s.batch_size,), generator=gen)
        batch = x[pick]
        mask = (torch.tanh(a) + 1) / 2
        pattern = (torch.tanh(b) + 1) / 2
        stamped = (1 - mask[:, None]) * batch[None] + (mask * pattern)[:, None]
        logits = model(stamped.reshape(k * s.batch_size, c, h, w))
        ce = nn.functional.cross_entropy(logits, targets, reduction="none")
        ce = ce.view(k, s.batch_size).mean(dim=1)
        l1 = mask.flatten(1).sum(dim=1)
        loss = (ce + cost * l1).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        with torch.no_grad():
            hit = (logits.argmax(dim=1) == targets).float().view(k, s.batch_size).mean(dim=1)
            hits += hit
            seen += 1
            working = hit >= s.success_threshold
            better = working & (l1 < best_norm)
            best_norm = torch.where(better, l1, best_norm)
            best_mask[better] = mask[better]
            best_pattern[better] = pattern[better]
            if step % s.adapt_every == 0:
                rate = hits / seen
                up = rate >= s.success_threshold
                cost = torch.where(up, cost * 1.5, cost / 1.5**1.5)
                hits.zero_()
                seen = 0
    with torch.no_grad():
        missing = torch.isinf(best_norm)
        best_mask[missing] = ((torch.tanh(a) + 1) / 2)[missing]
        best_pattern[missing] = ((torch.tanh(b) + 1) / 2)[missing]
    return best_mask, best_pattern


def _success(model: nn.Module, x: Tensor, trigger: Trigger, target: int) -> float:
    with torch.no_grad():
        hits = 0
        for i in range(0, len(x), 1024):
            hits += int((model(trigger.apply(x[i : i + 1024])).argmax(dim=1) == target).sum())
    return hits / len(x)


def save_trigger_png(trigger: Trigger, path: str | os.PathLike[str], *, scale: int = 8) -> Path:
    """Write ``mask * pattern`` beside the mask as one greyscale (or RGB) PNG, each pixel
    enlarged ``scale`` times; returns the path. Written to a temporary name and renamed."""
    from PIL import Image

    stamp = (trigger.mask * trigger.pattern).clamp(0, 1)
    mask = trigger.mask.expand_as(stamp)
    both = torch.cat([stamp, torch.ones(stamp.shape[0], stamp.shape[1], 1), mask], dim=2)
    image = (both.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image = image.repeat(scale, axis=0).repeat(scale, axis=1)
    if image.shape[2] == 1:
        image = image[:, :, 0]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    Image.fromarray(image).save(tmp, format="PNG")
    os.replace(tmp, out)
    return out
