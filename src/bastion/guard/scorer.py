"""The differentiable heart of the guard: one module from inputs to predictive probabilities and
every detector score.

:class:`GuardScorer` runs the primary model once on the input and its squeezed copies stacked
into one batch (one forward call, not three), reads the penultimate features for the
Mahalanobis score from the same pass, and derives the rest from the logits. With ``bpda=True``
the squeezers pass gradients straight through (Athalye et al. 2018), so an adaptive attack can
climb through the whole guard; the forward values are the same either way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.guard.ood import Mahalanobis, energy_score, split_model
from bastion.guard.squeezing import squeeze_variants, squeezing_score, straight_through

CONFIDENCE = "confidence"
"""The score name of the post-check: ``1 - max calibrated probability``."""


class AdversarialDetector(nn.Module):
    """Logistic regression (``hidden == 0``) or a one-hidden-layer MLP on standardised detector
    features ``(N, F)`` -> a logit ``(N,)``; higher means more likely attacked."""

    mean: Tensor
    std: Tensor

    def __init__(self, n_features: int, hidden: int = 0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        if hidden > 0:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, 1)
            )
        else:
            self.net = nn.Linear(n_features, 1)
        self.n_features, self.hidden = n_features, hidden

    def forward(self, feats: Tensor) -> Tensor:
        out: Tensor = self.net((feats - self.mean) / self.std)
        return out.squeeze(1)

    def fit(
        self, clean: Tensor, attacked: Tensor, *, epochs: int, generator: torch.Generator
    ) -> AdversarialDetector:
        """Train on clean ``(N, F)`` (label 0) vs attacked ``(M, F)`` (label 1) features with
        class-balanced logistic loss, full batch, Adam; initialised from ``generator``."""
        x = torch.cat([clean, attacked]).detach().float()
        t = torch.cat([torch.zeros(clean.shape[0]), torch.ones(attacked.shape[0])])
        self.mean.copy_(x.mean(dim=0))
        self.std.copy_(x.std(dim=0).clamp_min(1e-6))
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
        weight = torch.where(
            t > 0, x.shape[0] / (2.0 * attacked.shape[0]), x.shape[0] / (2.0 * clean.shape[0])
        )
        opt = torch.optim.Adam(self.net.parameters(), lr=0.03, weight_decay=1e-4)
        with torch.enable_grad():
            for _ in range(epochs):
                opt.zero_grad()
                loss = F.binary_cross_entropy_with_logits(self(x), t, weight=weight)
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
        return self.eval()


class GuardScorer(nn.Module):
    """Inputs ``(N, *input_shape)`` -> ``(probs (N, C), logits (N, C), scores {name: (N,)})``.

    Args:
        models: the predicting models; the first is the primary one, whose features and
            logits feed the detectors. More than one makes an ensemble (mean probabilities,
            Lakshminarayanan et al. 2017) with a ``disagreement`` score: the share of members
            whose class differs from the ensemble's.
        temperature: divides every model's logits before the softmax.
        squeeze: ``(bit_depth, median_size)`` or None to skip feature squeezing.
        bounds: the input range (for bit-depth reduction).
        mahalanobis: a fitted :class:`Mahalanobis` on the primary's features, or None.
        ood: ``"mahalanobis"``, ``"energy"`` or None: which score is reported as ``ood``.
        detector: a fitted :class:`AdversarialDetector` or None.

    Score names: ``squeezing``, ``ood``, ``adversarial``, ``disagreement``, ``confidence``
    (present when their part is configured); higher is more suspicious for all.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        *,
        temperature: float,
        squeeze: tuple[int, int] | None,
        bounds: tuple[float, float],
        mahalanobis: Mahalanobis | None,
        ood: str | None,
        ood_temperature: float = 1.0,
        detector: AdversarialDetector | None = None,
    ) -> None:
        super().__init__()
        self.features, self.head = split_model(models[0])
        self.members = nn.ModuleList(models[1:])
        self.temperature = float(temperature)
        self.squeeze = squeeze
        self.bounds = bounds
        self.mahalanobis = mahalanobis
        self.ood = ood
        self.ood_temperature = float(ood_temperature)
        self.detector = detector
        self.bpda = False

    def detector_features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """``(features (N, F), primary logits, squeezing distances (N, S), base scores)``:
        the class-agnostic statistics the adversarial detector reads."""
        n = x.shape[0]
        batch = [x]
        if self.squeeze is not None:
            variants = squeeze_variants(
                x, bit_depth=self.squeeze[0], median_size=self.squeeze[1], bounds=self.bounds
            )
            if self.bpda:
                variants = [straight_through(x, v) for v in variants]
            batch += variants
        stacked = torch.cat(batch) if len(batch) > 1 else x
        feats = self.features(stacked)
        logits_all = self.head(feats)
        logits = logits_all[:n]
        probs = logits.softmax(dim=1)
        scores: dict[str, Tensor] = {}
        dists = torch.zeros(n, 0, device=x.device)
        if len(batch) > 1:
            sq = [logits_all[i * n : (i + 1) * n].softmax(dim=1) for i in range(1, len(batch))]
            dists = torch.stack([(probs - p).abs().sum(dim=1) for p in sq], dim=1)
            scores["squeezing"] = squeezing_score(probs, sq)
        energy = energy_score(logits, self.ood_temperature)
        maha = self.mahalanobis(feats[:n].flatten(1)) if self.mahalanobis is not None else None
        if self.ood == "mahalanobis" and maha is not None:
            scores["ood"] = maha
        elif self.ood == "energy":
            scores["ood"] = energy
        top2 = logits.topk(2, dim=1).values
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)
        cols = [probs.amax(dim=1), top2[:, 0] - top2[:, 1], energy, entropy, dists]
        if maha is not None:
            cols.append(torch.log1p(maha))
        stat = torch.cat([c if c.dim() == 2 else c[:, None] for c in cols], dim=1)
        return stat, logits, dists, scores

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        stat, logits, _, scores = self.detector_features(x)
        if self.detector is not None:
            scores["adversarial"] = self.detector(stat)
        probs = (logits / self.temperature).softmax(dim=1)
        if len(self.members) > 0:
            member_probs = [probs] + [
                (m(x) / self.temperature).softmax(dim=1) for m in self.members
            ]
            stacked = torch.stack(member_probs)
            probs = stacked.mean(dim=0)
            agree = stacked.argmax(dim=2) == probs.argmax(dim=1)[None]
            scores["disagreement"] = 1.0 - agree.float().mean(dim=0)
        scores[CONFIDENCE] = 1.0 - probs.amax(dim=1)
        return probs, logits, scores


class PredictiveLogits(nn.Module):
    """The log of the scorer's predictive probabilities, ``(N, C)``: what a standard attack on
    the deployed classifier (model or ensemble, no detectors) climbs."""

    def __init__(self, scorer: GuardScorer) -> None:
        super().__init__()
        self.scorer = scorer

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.scorer.head(self.scorer.features(x))
        probs = (logits / self.scorer.temperature).softmax(dim=1)
        if len(self.scorer.members) > 0:
            parts = [probs] + [
                (m(x) / self.scorer.temperature).softmax(dim=1) for m in self.scorer.members
            ]
            probs = torch.stack(parts).mean(dim=0)
        return probs.clamp_min(1e-12).log()
