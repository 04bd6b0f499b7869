"""An adaptive attack that knows the guard (Carlini & Wagner 2017, "Adversarial examples are
not easily detected: bypassing ten detection methods"; Athalye, Carlini and Wagner 2018).

It climbs one combined objective through the whole guard, per example::

    J(x') = min(margin(x'), kappa) - lambda * sum_l relu(s_l(x') - t_l + m_l) / sigma_l

where ``margin`` is the Carlini-Wagner logit margin of the deployed classifier (the best wrong
class minus the true one), ``s_l`` the score of each firing layer, ``t_l`` its threshold,
``sigma_l`` the spread of its clean calibration scores and ``m_l = 0.05 sigma_l`` a safety
margin. The squeezers pass gradients straight through (BPDA); a smoothed classifier is
attacked through the expectation over its Gaussian noise (EOT). Steps are projected onto the
threat model. An example counts as broken as soon as the *real* guard (no approximations)
answers it with a wrong label and no layer fires; several ``lambda`` values run in turn, each
on the examples not yet broken.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bastion.attacks.engine import cw_margin_loss
from bastion.guard.core import Guard
from bastion.threat import ThreatModel


class AdaptiveGuardAttack:
    """Settings of the adaptive attack; :meth:`run` attacks one guard.

    Args:
        steps: projected steps per ``lambda``.
        step_size: step length as a multiple of eps (default ``2.5 / steps``, Madry et al.).
        lambdas: detector weights tried in turn (small first).
        kappa: the margin the classifier term stops rewarding (logit units).
        eot_samples: noise draws per step against a smoothed classifier.
    """

    def __init__(
        self,
        *,
        steps: int = 100,
        step_size: float | None = None,
        lambdas: tuple[float, ...] = (1.0, 10.0),
        kappa: float = 5.0,
        eot_samples: int = 8,
    ) -> None:
        self.steps = int(steps)
        self.step_size = float(step_size) if step_size is not None else 2.5 / self.steps
        self.lambdas = tuple(float(v) for v in lambdas)
        self.kappa = float(kappa)
        self.eot_samples = int(eot_samples)

    def _objective(
        self, guard: Guard, x: Tensor, y: Tensor, lam: float, generator: torch.Generator
    ) -> Tensor:
        scorer = guard.scorer
        probs, _, scores = scorer(x)
        if guard.config.prediction.kind == "smoothing":
            sigma = guard.config.prediction.sigma
            noisy = [
                (
                    scorer.head(
                        scorer.features(x + sigma * torch.randn(x.shape, generator=generator))
                    )
                ).softmax(dim=1)
                for _ in range(self.eot_samples)
            ]
            probs = torch.stack(noisy).mean(dim=0)
        margin = cw_margin_loss(probs.clamp_min(1e-12).log(), y).clamp(max=self.kappa)
        penalty = torch.zeros_like(margin)
        for name, thr in guard.thresholds.items():
            spread = self._spread(guard, name)
            penalty = penalty + torch.relu(scores[name] - thr + 0.05 * spread) / spread
        return margin - lam * penalty

    @staticmethod
    def _spread(guard: Guard, name: str) -> float:
        if name in guard.firing:
            col = guard.cal_scores[:, guard.firing.index(name)]
            return max(float(col.std()), 1e-3)
        return 0.1

    def run(
        self, guard: Guard, x: Tensor, y: Tensor, threat: ThreatModel, *, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """``(x_adv (N, ...), broken (N,) bool)``: the first iterate per example that the guard
        answers wrongly without any layer firing (else the last iterate)."""
        x = x.detach().float()
        x_best = x.clone()
        detected, correct, _ = guard.outcome(x, y)
        broken = ~detected & ~correct
        scorer = guard.scorer
        scorer.bpda = True
        try:
            for lam in self.lambdas:
                idx = (~broken).nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                xs, ys = x[idx], y[idx]
                xa = threat.random_init(xs, generator=generator, scale=0.5)
                for _ in range(self.steps):
                    xa = xa.detach().requires_grad_(True)
                    with torch.enable_grad():
                        obj = self._objective(guard, xa, ys, lam, generator).sum()
                        (grad,) = torch.autograd.grad(obj, xa)
                    step = self.step_size * threat.eps * threat.steepest_step(grad)
                    xa = threat.project(xa.detach() + step, xs)
                    det, cor, _ = guard.outcome(xa, ys)
                    hit = ~det & ~cor
                    x_best[idx] = xa
                    if bool(hit.any()):
                        broken[idx[hit]] = True
                        keep = ~hit
                        idx, xs, ys, xa = idx[keep], xs[keep], ys[keep], xa[keep]
                        if idx.numel() == 0:
                            break
        finally:
            scorer.bpda = False
        return x_best, broken
