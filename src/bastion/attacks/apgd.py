"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks").

APGD is PGD without a step size to tune: it starts with a step of ``2 eps``, adds momentum
(``alpha = 0.75``) and halves an example's step at checkpoints where its loss stopped rising
(fewer than ``rho`` of the steps since the last checkpoint increased the loss, or neither step
nor best loss changed since the previous checkpoint), restarting that example from its best
point. Checkpoints come at 22% of the budget, then at intervals shrinking by 3% of the budget
down to 6%.

Two losses: cross-entropy (``ce``) and the Difference of Logits Ratio (``dlr``), which is
invariant to shifting and scaling the logits and so defeats the saturation that makes
cross-entropy gradients vanish on over-confident models:

    DLR(z, y)   = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)
    DLR-T(z, y) = -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)

where ``z_pi1 >= z_pi2 >= ...`` are the sorted logits and ``t`` the target class. APGD-T runs
the targeted loss once per target class, taking the classes the clean input ranks highest after
the true one.

Every example is dropped from the working batch as soon as it is fooled, restarts run only on
the examples still robust, and all state (step sizes, counters, best points) is per example.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from bastion.attacks.base import Attack, Opening, ranked_other_classes
from bastion.attacks.engine import Precision, autocast_for
from bastion.attacks.fast_grad import input_gradients_only
from bastion.attacks.registry import register
from bastion.attacks.settings import AttackSettings
from bastion.errors import AttackInputError
from bastion.threat import ThreatModel

APGDLoss = Literal["ce", "dlr"]
APGD_LOSSES: tuple[APGDLoss, ...] = ("ce", "dlr")


class APGDSettings(AttackSettings):
    """Settings of :class:`APGD`."""

    steps: int = Field(default=100, ge=1, description="iterations per restart")
    restarts: int = Field(
        default=1, ge=1, description="random restarts, each on examples still robust"
    )
    loss: APGDLoss = Field(
        default="ce", description="cross-entropy (ce) or DLR (dlr, >= 3 classes)"
    )
    rho: float = Field(
        default=0.75, gt=0, lt=1, description="share of loss increases to keep the step"
    )
    eot_samples: int = Field(default=1, ge=1, description="gradient passes averaged per step (EOT)")
    precision: Precision = Field(
        default="fp32", description="bf16: gradients under bfloat16 autocast"
    )


class APGDTargetedSettings(APGDSettings):
    """Settings of :class:`APGDTargeted` (those of :class:`APGD`, DLR by default, and the
    number of target classes)."""

    target_classes: int = Field(default=9, ge=1, description="top-ranked other classes to aim at")
    loss: APGDLoss = Field(default="dlr", description="cross-entropy (ce) or targeted DLR (dlr)")


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Untargeted DLR ``(N,)``; needs at least 3 classes (Croce & Hein 2020, eq. 5)."""
    z_sorted, ind = logits.sort(dim=1)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    top_is_y = ind[:, -1] == y
    best_other = torch.where(top_is_y, z_sorted[:, -2], z_sorted[:, -1])
    return -(z_y - best_other) / (z_sorted[:, -1] - z_sorted[:, -3] + 1e-12)


def dlr_targeted_loss(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR ``(N,)``; needs at least 4 classes (Croce & Hein 2020, eq. 6)."""
    z_sorted, _ = logits.sort(dim=1)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    denom = z_sorted[:, -1] - 0.5 * (z_sorted[:, -3] + z_sorted[:, -4]) + 1e-12
    return -(z_y - z_t) / denom


def _checkpoint_lengths(steps: int) -> list[int]:
    """Lengths of the intervals between step-size checkpoints: 22% of ``steps``, then shorter
    by 3% each time, never below 6% (all at least one step)."""
    first = max(math.ceil(0.22 * steps), 1)
    shrink = max(math.ceil(0.03 * steps), 1)
    floor = max(math.ceil(0.06 * steps), 1)
    out, length, total = [], first, 0
    while total < steps:
        out.append(length)
        total += length
        length = max(length - shrink, floor)
    return out


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


class _APGDRunner:
    """One APGD run over a batch: the algorithm of the paper, per example, with early exit."""

    def __init__(
        self,
        model: nn.Module,
        threat: ThreatModel,
        steps: int,
        rho: float,
        eot_samples: int,
        precision: Precision = "fp32",
    ):
        self.model, self.threat, self.steps, self.rho, self.eot = (
            model,
            threat,
            steps,
            rho,
            eot_samples,
        )
        self.precision = precision

    def _objective(
        self, x: Tensor, y: Tensor, loss: str, target: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(objective (N,), gradient, logits)``; gradients averaged over ``eot_samples``
        passes. With bf16 precision the passes run under bfloat16 autocast and the objective is
        taken in float32 from the (rounded) logits."""
        grad = torch.zeros_like(x)
        obj_sum = torch.zeros(x.shape[0], device=x.device)
        logits_sum = None
        for _ in range(self.eot):
            xg = x.detach().requires_grad_(True)
            with torch.enable_grad(), input_gradients_only(self.model):
                with autocast_for(xg, self.precision):
                    logits = self.model(xg).float()
                if target is not None:
                    obj = (
                        dlr_targeted_loss(logits, y, target)
                        if loss == "dlr"
                        else -F.cross_entropy(logits, target, reduction="none")
                    )
                else:
                    obj = (
                        dlr_loss(logits, y)
                        if loss == "dlr"
                        else F.cross_entropy(logits, y, reduction="none")
                    )
                (g,) = torch.autograd.grad(obj.sum(), xg)
            grad += g
            obj_sum += obj.detach()
            logits_sum = logits.detach() if logits_sum is None else logits_sum + logits.detach()
        assert logits_sum is not None
        return obj_sum / self.eot, grad / self.eot, logits_sum / self.eot

    def run(
        self,
        x: Tensor,
        y: Tensor,
        idx: Tensor,
        out: tuple[Tensor, Tensor, Tensor],
        *,
        loss: str,
        target: Tensor | None,
        generator: torch.Generator | None,
        until_target: bool = False,
    ) -> None:
        """Attack ``x[idx]``; ``out`` is ``(x_out, fooled, queries)``, updated in place: write
        fooling points into ``x_out`` and mark ``fooled``.
        Examples that stay robust get their highest-loss point written into ``x_out``. An example
        is fooled when misclassified, or with ``until_target`` when classified as its target.
        The step size is checked at the ends of the intervals of :func:`_checkpoint_lengths`."""
        state = _APGDRun(
            self,
            x,
            y,
            idx,
            loss=loss,
            target=target,
            generator=generator,
            out=out,
            until_target=until_target,
        )
        lengths = _checkpoint_lengths(self.steps)
        ck_i, since = 0, 0
        for k in range(self.steps):
            if state.active.numel() == 0:
                break
            state.step(k)
            since += 1
            if since == lengths[ck_i]:
                state.checkpoint(lengths[ck_i])
                since = 0
                ck_i = min(ck_i + 1, len(lengths) - 1)
        state.finish()


class _APGDRun:
    """One APGD run over the examples ``x[idx]``: the per-example state of the paper's
    algorithm (current, previous and best points, step sizes ``eta``, the checkpoint counters)
    for the examples still attacked (``active``, positions in ``x[idx]``). A fooled example
    leaves at once: its point goes into ``x_out`` and ``fooled`` is set; ``queries`` counts the
    forward passes."""

    def __init__(
        self,
        runner: _APGDRunner,
        x: Tensor,
        y: Tensor,
        idx: Tensor,
        *,
        loss: str,
        target: Tensor | None,
        generator: torch.Generator | None,
        out: tuple[Tensor, Tensor, Tensor],
        until_target: bool,
    ):
        self.runner, self.idx, self.loss, self.until_target = runner, idx, loss, until_target
        self.x_out, self.fooled, self.queries = out
        self.xs, self.ys = x[idx], y[idx]
        self.ts = target[idx] if target is not None else None
        self.x_cur = runner.threat.random_init(self.xs, generator=generator)
        f, self.g, logits = runner._objective(self.x_cur, self.ys, loss, self.ts)
        self.queries[idx] += runner.eot
        n, dev = idx.numel(), x.device
        self.active = torch.arange(n, device=dev)  # positions in xs still attacked
        self.x_best, self.f_best, self.g_best = self.x_cur.clone(), f.clone(), self.g.clone()
        self.x_prev = self.x_cur.clone()
        self.eta = torch.full((n,), 2.0 * runner.threat.eps, device=dev)
        self.count = torch.zeros(n, device=dev)
        self.f_best_ckpt = self.f_best.clone()
        self.reduced_last = torch.ones(n, dtype=torch.bool, device=dev)
        self.f_prev = f.clone()
        self.retire(self.confirmed(self.hit_of(logits, self.active), self.x_cur, self.active))

    def hit_of(self, logits: Tensor, pos: Tensor) -> Tensor:
        """``(n,)`` bool: misclassified, or with ``until_target`` classified as the target."""
        if self.until_target and self.ts is not None:
            return logits.argmax(1) == self.ts[pos]
        return logits.argmax(1) != self.ys[pos]

    def confirmed(self, hit: Tensor, x_now: Tensor, pos: Tensor) -> Tensor:
        """bf16 successes are kept only if they also fool the model in float32."""
        if self.runner.precision == "fp32" or not bool(hit.any()):
            return hit
        sub = hit.nonzero().squeeze(1)
        with torch.no_grad():
            hit[sub] = self.hit_of(self.runner.model(x_now[sub]), pos[sub])
        self.queries[self.idx[pos[sub]]] += 1
        return hit

    def retire(self, hit: Tensor) -> None:
        """Hand the fooled active examples' points to ``x_out`` and drop them."""
        pos = self.active[hit]
        self.x_out[self.idx[pos]] = self.x_cur[hit]
        self.fooled[self.idx[pos]] = True
        keep = ~hit
        self.active, self.x_cur = self.active[keep], self.x_cur[keep]
        self.x_prev, self.g = self.x_prev[keep], self.g[keep]

    def step(self, k: int) -> None:
        """Step ``k``: a steepest step of size ``eta`` with momentum (``alpha = 0.75`` after
        the first), projected; the best points and the increase counts are updated."""
        threat, a = self.runner.threat, self.active
        alpha = 1.0 if k == 0 else 0.75
        x_cur, xs = self.x_cur, self.xs[a]
        z = threat.project(x_cur + _bcast(self.eta[a], x_cur) * threat.steepest_step(self.g), xs)
        x_new = threat.project(
            x_cur + alpha * (z - x_cur) + (1.0 - alpha) * (x_cur - self.x_prev), xs
        )
        self.x_prev, self.x_cur = x_cur, x_new
        ts = self.ts[a] if self.ts is not None else None
        f_new, self.g, logits = self.runner._objective(x_new, self.ys[a], self.loss, ts)
        self.queries[self.idx[a]] += self.runner.eot
        self.count[a] += (f_new > self.f_prev[a]).float()
        self.f_prev[a] = f_new
        better = f_new > self.f_best[a]
        if bool(better.any()):
            b = a[better]
            self.x_best[b], self.f_best[b] = x_new[better], f_new[better]
            self.g_best[b] = self.g[better]
        self.retire(self.confirmed(self.hit_of(logits, a), x_new, a))

    def checkpoint(self, length: int) -> None:
        """At the end of an interval of ``length`` steps, halve the step of each active example
        whose loss rose in fewer than ``rho`` of them, or that neither reduced its step at the
        last checkpoint nor improved its best loss since; it restarts from its best point."""
        a = self.active
        if a.numel():
            few_increases = self.count[a] < self.runner.rho * length
            stalled = (~self.reduced_last[a]) & (self.f_best_ckpt[a] >= self.f_best[a])
            reduce = few_increases | stalled
            self.reduced_last[a] = reduce
            self.f_best_ckpt[a] = self.f_best[a]
            if bool(reduce.any()):
                r = a[reduce]
                self.eta[r] = self.eta[r] / 2.0
                self.x_cur[reduce] = self.x_best[r]
                self.g[reduce] = self.g_best[r]
        self.count.zero_()

    def finish(self) -> None:
        """The examples still robust: hand back the strongest point found."""
        if self.active.numel():
            self.x_out[self.idx[self.active]] = self.x_best[self.active]


@register("apgd", knowledge="white-box", settings=APGDSettings)
class APGD(Attack):
    """Auto-PGD with the cross-entropy or DLR loss (Croce & Hein 2020).

    Args:
        steps: iterations per restart (AutoAttack uses 100).
        restarts: runs from independent random starts, each only on examples still robust.
        loss: ``"ce"`` or ``"dlr"`` (DLR needs at least 3 classes).
        rho: the share of loss increases below which a checkpoint halves the step (0.75).
        eot_samples: gradient passes averaged per step, for randomised models
            (Expectation over Transformation, Athalye et al. 2018); 1 for deterministic ones.
        precision: ``"fp32"``, or ``"bf16"`` to take the gradients under bfloat16 autocast
            (about 2.4x faster on CPUs with AVX-512 BF16); a success found in bfloat16 counts
            only if it fools the model in float32 too.

    A targeted call (``targets=...``) climbs ``-CE(target)`` or the targeted DLR.
    """

    def __init__(
        self,
        *,
        steps: int = 100,
        restarts: int = 1,
        loss: str = "ce",
        rho: float = 0.75,
        eot_samples: int = 1,
        precision: str = "fp32",
    ):
        s = APGDSettings.of(locals(), where=self.name)
        self.precision = s.precision
        self.steps, self.restarts, self.loss = s.steps, s.restarts, s.loss
        self.rho, self.eot_samples = float(s.rho), s.eot_samples

    def _run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        threat: ThreatModel,
        *,
        targets: Tensor | None,
        generator: torch.Generator | None,
        opening: Opening,
    ) -> tuple[Tensor, Tensor]:
        queries, logits = opening.queries(), opening.logits
        _check_classes(logits.shape[1], self.loss, targeted=targets is not None)
        fooled = (logits.argmax(1) != y) if targets is None else (logits.argmax(1) == targets)
        x_out = x.clone()
        runner = _APGDRunner(model, threat, self.steps, self.rho, self.eot_samples, self.precision)
        if targets is not None:
            # The runner counts "fooled" as argmax != its label; for a targeted attack climb the
            # targeted objective and count success as reaching the target (checked below).
            return _targeted_apgd(
                runner, x, y, targets, self.loss, self.restarts, generator, x_out, queries
            )
        for _ in range(self.restarts):
            idx = (~fooled).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            out = (x_out, fooled, queries)
            runner.run(x, y, idx, out, loss=self.loss, target=None, generator=generator)
        return x_out, queries


def _check_classes(num_classes: int, loss: str, *, targeted: bool) -> None:
    need = 4 if (loss == "dlr" and targeted) else 3 if loss == "dlr" else 2
    if num_classes < need:
        raise AttackInputError(
            f"loss: {'targeted ' if targeted else ''}{loss} needs at least {need} classes, "
            f"the model has {num_classes}; use loss='ce'"
        )


def _targeted_apgd(
    runner: _APGDRunner,
    x: Tensor,
    y: Tensor,
    targets: Tensor,
    loss: str,
    restarts: int,
    generator: torch.Generator | None,
    x_out: Tensor,
    queries: Tensor,
) -> tuple[Tensor, Tensor]:
    """A targeted APGD: success is reaching ``targets``; points are kept only if they do."""
    reached = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        idx = (~reached).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        cand = x.clone()
        hit = torch.zeros_like(reached)
        out = (cand, hit, queries)
        runner.run(
            x, y, idx, out, loss=loss, target=targets, generator=generator, until_target=True
        )
        with torch.no_grad():
            ok = runner.model(cand[idx]).argmax(1) == targets[idx]
        queries[idx] += 1
        x_out[idx[ok]] = cand[idx[ok]]
        reached[idx[ok]] = True
        x_out[idx[~ok]] = cand[idx[~ok]]
    return x_out, queries


@register("apgd-t", knowledge="white-box", settings=APGDTargetedSettings)
class APGDTargeted(Attack):
    """APGD-T: untargeted robustness measured by targeted APGD runs (Croce & Hein 2020).

    For each of the ``target_classes`` classes the clean input ranks highest after the true one,
    a targeted APGD with the targeted DLR loss runs on the examples still robust; an example
    counts as broken as soon as it is misclassified (as any class). AutoAttack's standard
    version uses 9 targets and 100 steps, one restart each. ``precision`` as for
    :class:`APGD`.
    """

    def __init__(
        self,
        *,
        steps: int = 100,
        target_classes: int = 9,
        restarts: int = 1,
        loss: str = "dlr",
        rho: float = 0.75,
        eot_samples: int = 1,
        precision: str = "fp32",
    ):
        s = APGDTargetedSettings.of(locals(), where=self.name)
        self.precision = s.precision
        self.steps, self.target_classes = s.steps, s.target_classes
        self.restarts, self.loss = s.restarts, s.loss
        self.rho, self.eot_samples = float(s.rho), s.eot_samples

    def _run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        threat: ThreatModel,
        *,
        targets: Tensor | None,
        generator: torch.Generator | None,
        opening: Opening,
    ) -> tuple[Tensor, Tensor]:
        if targets is not None:
            raise AttackInputError(
                "targets: apgd-t chooses its own targets; use apgd for a given target"
            )
        n = x.shape[0]
        queries, logits = opening.queries(), opening.logits
        c = logits.shape[1]
        _check_classes(c, self.loss, targeted=True)
        ranking = ranked_other_classes(logits, y, c - 1)  # (N, c - 1), best first
        fooled = logits.argmax(1) != y
        x_out = x.clone()
        runner = _APGDRunner(model, threat, self.steps, self.rho, self.eot_samples, self.precision)
        for k in range(1, min(self.target_classes, c - 1) + 1):
            for _ in range(self.restarts):
                idx = (~fooled).nonzero().squeeze(1)
                if idx.numel() == 0:
                    return x_out, queries
                # the k-th ranked class other than the true one
                target = torch.zeros(n, dtype=torch.int64, device=x.device)
                target[idx] = ranking[idx, k - 1]
                out = (x_out, fooled, queries)
                runner.run(x, y, idx, out, loss=self.loss, target=target, generator=generator)
        return x_out, queries
