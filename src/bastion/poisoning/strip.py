"""STRIP: flag inputs whose prediction survives being superimposed with other images.

Gao, Xu, Wang, Chen, Ranasinghe and Nepal 2019 ("STRIP: a defence against trojan attacks on
deep neural networks"). A triggered input keeps being classified as the backdoor's target when
it is superimposed with random clean images (the trigger dominates), so the predictions on its
perturbed copies have low entropy; a clean input's predictions scatter. For an input ``x`` and
``n`` clean overlays ``h_i`` the score is the mean Shannon entropy (bits) of the model's
softmax on ``clip(x + h_i, 0, 1)`` (the paper's additive superimposition). The detector
flags inputs whose entropy falls below a threshold set on clean held-out inputs at a chosen
false-positive rate (the paper's "false rejection rate").

Randomness: the overlays for every call are drawn from a :class:`torch.Generator` seeded with
the detector's seed, so a score is a function of the input alone.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from bastion.errors import ConfigError, DataError


class StripDetector:
    """A fitted STRIP detector.

    Args:
        model: the classifier (inputs ``(N, C, H, W)`` in ``[0, 1]`` -> logits ``(N, K)``).
        overlays: clean held-out inputs ``(M, C, H, W)`` to superimpose (kept, not copied).
        n: overlays per scored input.
        seed: seed of the overlay draws.

    After :meth:`fit` ``threshold`` holds the entropy below which an input is flagged.
    """

    def __init__(self, model: nn.Module, overlays: Tensor, *, n: int = 20, seed: int = 0):
        if overlays.ndim != 4 or len(overlays) == 0:
            raise DataError(f"strip: overlays: expected (M, C, H, W), got {tuple(overlays.shape)}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"strip.n: expected an integer >= 1, got {n!r}")
        self.model = model
        self.overlays = overlays
        self.n = n
        self.seed = seed
        self.threshold: float | None = None
        self.fpr: float | None = None

    def entropy(self, x: Tensor, *, batch_size: int = 64) -> Tensor:
        """float64 ``(N,)``: mean prediction entropy (bits) over ``n`` superimposed copies of
        each input of ``x`` (``(N, C, H, W)``)."""
        if tuple(x.shape[1:]) != tuple(self.overlays.shape[1:]):
            want = ", ".join(map(str, self.overlays.shape[1:]))
            raise DataError(f"strip: expected inputs of shape (N, {want}), got {tuple(x.shape)}")
        gen = torch.Generator().manual_seed(self.seed)
        out: list[Tensor] = []
        self.model.eval()
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                chunk = x[i : i + batch_size]
                pick = torch.randint(0, len(self.overlays), (len(chunk), self.n), generator=gen)
                mixed = (chunk[:, None] + self.overlays[pick]).clamp(0.0, 1.0)
                logits = self.model(mixed.flatten(0, 1)).double()
                logp = torch.log_softmax(logits, dim=1)
                h = -(logp.exp() * logp).sum(dim=1) / math.log(2)
                out.append(h.view(len(chunk), self.n).mean(dim=1))
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    def fit(self, x_clean: Tensor, *, fpr: float = 0.01) -> StripDetector:
        """Set the threshold to the ``fpr`` quantile of the entropies of clean held-out inputs
        ``x_clean`` (``(N, C, H, W)``, distinct from the overlays), so that about ``fpr`` of
        clean inputs are flagged."""
        if not 0 < fpr < 1:
            raise ConfigError(f"strip.fpr: expected a number in (0, 1), got {fpr!r}")
        if len(x_clean) == 0:
            raise DataError("strip: fit: expected at least one clean input")
        scores = self.entropy(x_clean)
        self.threshold = float(torch.quantile(scores, fpr))
        self.fpr = fpr
        return self

    def detect(self, x: Tensor) -> Tensor:
        """bool ``(N,)``: True where the entropy is below the fitted threshold."""
        if self.threshold is None:
            raise ConfigError("strip: call fit() on clean inputs before detect()")
        return self.entropy(x) < self.threshold

    def evaluate(self, x_clean: Tensor, x_triggered: Tensor) -> dict[str, Any]:
        """False-positive rate on clean inputs and detection rate on triggered inputs (both
        ``(N, C, H, W)``), with the threshold and the mean entropies."""
        if self.threshold is None:
            raise ConfigError("strip: call fit() on clean inputs before evaluate()")
        clean = self.entropy(x_clean)
        trig = self.entropy(x_triggered)
        return {
            "threshold": round(self.threshold, 6),
            "target_fpr": self.fpr,
            "false_positive_rate": round(float((clean < self.threshold).double().mean()), 4),
            "detection_rate": round(float((trig < self.threshold).double().mean()), 4),
            "clean_entropy_mean": round(float(clean.mean()), 4),
            "triggered_entropy_mean": round(float(trig.mean()), 4),
            "n_clean": len(clean),
            "n_triggered": len(trig),
        }
