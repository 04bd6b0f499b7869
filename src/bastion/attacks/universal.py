"""Universal adversarial perturbations: one perturbation ``delta`` that fools a model on most
inputs at once, fitted on a set of images and then added to new ones.

Moosavi-Dezfooli et al. 2017 ("Universal adversarial perturbations") introduced them, building
``delta`` by aggregating DeepFool steps over the data. This module uses the stochastic-gradient
formulation of Shafahi et al. 2020 ("Universal adversarial training", Algorithm 1): ``delta``
is shared by every example and climbs the mean loss of a minibatch,

    g     = mean over the batch of grad_delta min(L(f(clip(x + delta)), y), cap)
    delta <- P_eps(delta + eta * step(g))

where ``step`` is the threat's steepest-ascent direction (``sign`` for linf, the normalised
gradient for l2; ``method="sgd"``) or an Adam update (``method="adam"``), ``P_eps`` the
projection onto the threat's eps-ball, and ``cap`` the optional clipping of the loss that
Shafahi et al. use so that examples already fooled stop dominating the shared gradient.

A universal perturbation is not a per-example attack: :class:`UniversalPerturbation` is
*fitted* (:meth:`UniversalPerturbation.fit`) and then *applied* (:func:`apply`) to new inputs;
:func:`fooling_rate` measures it. :class:`UniversalAttack` adapts it to the :class:`Attack`
contract (fit on the batch, then apply) so that it can sit in a registry or cascade; it is
weaker than a per-example attack by design, since one ``delta`` must serve every example.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from bastion.attacks.base import Attack, Opening, predict, validate_batch
from bastion.attacks.engine import LOSSES, LossFn, input_gradient
from bastion.attacks.registry import register
from bastion.attacks.settings import AttackSettings
from bastion.errors import AttackInputError
from bastion.threat import ThreatModel

UniversalLoss = Literal["ce", "cw"]
UniversalMethod = Literal["sgd", "adam"]
UNIVERSAL_LOSSES: tuple[UniversalLoss, ...] = ("ce", "cw")
UNIVERSAL_METHODS: tuple[UniversalMethod, ...] = ("sgd", "adam")
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8


@dataclass(frozen=True)
class UniversalResult:
    """A fitted universal perturbation.

    Attributes:
        delta: ``(1, *input_shape)``, inside the threat's eps-ball (not clipped to the bounds:
            :func:`apply` clips ``x + delta`` per input).
        fooling_rate: on the fit set. Untargeted: the share of correctly classified examples
            whose prediction ``delta`` changes. Targeted: the share of the examples whose true
            class is not their target that ``delta`` sends to the target.
        history: the same rate after each epoch (the returned ``delta`` is the best epoch's).
        targeted: whether the fit pushed towards target classes.
        queries: forward passes spent per fit example.
    """

    delta: Tensor
    fooling_rate: float
    history: tuple[float, ...]
    targeted: bool = False
    queries: int = 0


def _check_delta(delta: Tensor, x: Tensor) -> None:
    if not isinstance(delta, Tensor) or not delta.is_floating_point():
        raise AttackInputError("delta: expected a floating-point torch.Tensor")
    if delta.dim() != x.dim() or delta.shape[0] != 1 or delta.shape[1:] != x.shape[1:]:
        raise AttackInputError(
            f"delta: expected shape (1, {', '.join(str(s) for s in x.shape[1:])}) to match x, "
            f"got {tuple(delta.shape)}"
        )


def apply(delta: Tensor, x: Tensor, threat: ThreatModel) -> Tensor:
    """Add a universal perturbation to every input: ``clip(x + P_eps(delta))``, ``(N, ...)``.

    ``delta`` ``(1, *input_shape)`` is projected onto the threat's eps-ball first (a no-op for
    a fitted one), so the result is always inside the threat model around each ``x``.
    """
    _check_delta(delta, x)
    return threat.clip(x + threat.project_delta(delta.to(x.device, x.dtype)))


def _success(
    pred_adv: Tensor, pred_clean: Tensor, y: Tensor, targets: Tensor | None
) -> tuple[int, int]:
    """``(hits, eligible)``: untargeted, correctly classified examples whose prediction changed;
    targeted, examples not of their target class that now predict it."""
    if targets is None:
        eligible = pred_clean == y
        hits = eligible & (pred_adv != pred_clean)
    else:
        eligible = y != targets
        hits = eligible & (pred_adv == targets)
    return int(hits.sum()), int(eligible.sum())


def fooling_rate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    delta: Tensor,
    threat: ThreatModel,
    *,
    target: int | Tensor | None = None,
) -> float:
    """The share of correctly classified examples of ``(x, y)`` whose prediction changes when
    ``delta`` is applied (0.0 when none is correctly classified). With ``target`` (a class, or
    ``(N,)`` classes): the share of the examples whose true class is not the target that now
    predict the target."""
    validate_batch(x, y, threat)
    targets = _as_targets(target, y)
    pred_adv = predict(model, apply(delta, x, threat))
    pred_clean = predict(model, x) if targets is None else y
    hits, eligible = _success(pred_adv, pred_clean, y.long(), targets)
    return hits / eligible if eligible else 0.0


def _as_targets(target: int | Tensor | None, y: Tensor) -> Tensor | None:
    if target is None:
        return None
    if isinstance(target, Tensor):
        return target.long()
    if isinstance(target, bool) or not isinstance(target, int):
        raise AttackInputError(f"target: expected a class index or None, got {target!r}")
    return torch.full_like(y, target, dtype=torch.int64)


def _capped(loss: LossFn, cap: float | None, targeted: bool) -> LossFn:
    """The per-example objective to maximise, as a loss of ``(logits, labels)`` for
    :func:`input_gradient`: ``L(z, y)`` untargeted, ``-L(z, t)`` targeted, at most ``cap``."""

    def objective(logits: Tensor, labels: Tensor) -> Tensor:
        obj = -loss(logits, labels) if targeted else loss(logits, labels)
        return obj if cap is None else obj.clamp(max=cap)

    return objective


class UniversalSettings(AttackSettings):
    """Settings of :class:`UniversalPerturbation` and :class:`UniversalAttack`."""

    epochs: int = Field(default=5, ge=1, description="passes over the fit set")
    step_size: float = Field(default=0.1, gt=0, description="step length as a multiple of eps")
    batch_size: int = Field(default=32, ge=1, description="examples per stochastic gradient")
    loss: UniversalLoss = Field(default="ce", description="cross-entropy (ce) or CW margin (cw)")
    method: UniversalMethod = Field(
        default="sgd", description="steepest ascent (sgd) or Adam on delta"
    )
    loss_cap: float | None = Field(
        default=None, description="clip each example's objective here; null: no clipping"
    )


class UniversalPerturbation:
    """Fits one perturbation that fools a model on most inputs (Shafahi et al. 2020).

    Args:
        epochs: passes over the fit set (5).
        step_size: the step length as a multiple of eps (0.1): each minibatch moves ``delta``
            by ``step_size * eps`` in the threat's norm (``sgd``), or by about that much per
            coordinate (``adam``, where it is the learning rate).
        batch_size: examples per stochastic gradient (32).
        loss: ``"ce"`` (cross-entropy) or ``"cw"`` (Carlini-Wagner margin).
        method: ``"sgd"`` (steepest ascent in the threat's norm, then projection: stochastic
            PGD on a shared ``delta``) or ``"adam"`` (Adam on ``delta``, then projection).
        loss_cap: clip each example's objective at this value (None: no clipping), so that
            examples already fooled stop pulling ``delta``; with ``"cw"``, ``0.0`` stops an
            example's pull as soon as it is fooled.

    Every minibatch costs one forward and backward pass per example, and every epoch one more
    forward pass over the fit set to score ``delta``; the best epoch's ``delta`` is kept.
    """

    name = "universal"

    def __init__(
        self,
        *,
        epochs: int = 5,
        step_size: float = 0.1,
        batch_size: int = 32,
        loss: str = "ce",
        method: str = "sgd",
        loss_cap: float | None = None,
    ):
        s = UniversalSettings.of(locals(), where=self.name)
        self.epochs, self.step_size, self.batch_size = s.epochs, float(s.step_size), s.batch_size
        self.loss, self.method = s.loss, s.method
        self.loss_cap = float(s.loss_cap) if s.loss_cap is not None else None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    def fit(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        threat: ThreatModel,
        *,
        target: int | Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> UniversalResult:
        """Fit ``delta`` on ``(x, y)`` ``(N, ...)``, ``(N,)`` within ``threat``.

        Args:
            target: None (untargeted), a class index, or ``(N,)`` classes: ``delta`` then
                descends the loss towards each example's target.
            generator: the source of the minibatch order (same seed, same ``delta``).

        The model's parameters get no gradients and its train/eval mode is left as it is.
        """
        validate_batch(x, y, threat)
        if x.shape[0] == 0:
            raise AttackInputError("x: expected at least one example to fit a perturbation on")
        with torch.no_grad():
            num_classes = int(model(x[:1]).shape[1])
        targets = _as_targets(target, y)
        validate_batch(x, y, threat, targets=targets, num_classes=num_classes)
        x, y = x.detach(), y.long()
        labels = targets if targets is not None else y
        objective = _capped(LOSSES[self.loss], self.loss_cap, targets is not None)
        lo, hi = threat.bounds
        n = x.shape[0]
        pred_clean = predict(model, x) if targets is None else y

        delta = torch.zeros((1, *x.shape[1:]), dtype=x.dtype, device=x.device)
        best, best_rate = delta.clone(), -1.0
        m1, m2 = torch.zeros_like(delta), torch.zeros_like(delta)
        lr = self.step_size * threat.eps
        t = 0
        history: list[float] = []
        for _epoch in range(self.epochs):
            order = torch.randperm(n, generator=generator, device=x.device)
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                xb = x[idx]
                shifted = xb + delta
                grad, _ = input_gradient(model, threat.clip(shifted), labels[idx], loss=objective)
                # d clip(x + delta) / d delta is 1 inside the bounds and 0 where clipped
                inside = (shifted >= lo) & (shifted <= hi)
                g = (grad * inside).mean(dim=0, keepdim=True)
                if self.method == "sgd":
                    step = lr * threat.steepest_step(g)
                else:
                    t += 1
                    m1 = _ADAM_BETAS[0] * m1 + (1 - _ADAM_BETAS[0]) * g
                    m2 = _ADAM_BETAS[1] * m2 + (1 - _ADAM_BETAS[1]) * g * g
                    m_hat = m1 / (1 - _ADAM_BETAS[0] ** t)
                    v_hat = m2 / (1 - _ADAM_BETAS[1] ** t)
                    step = lr * m_hat / (v_hat.sqrt() + _ADAM_EPS)
                delta = threat.project_delta(delta + step)
            pred_adv = predict(model, threat.clip(x + delta))
            hits, eligible = _success(pred_adv, pred_clean, y, targets)
            rate = hits / eligible if eligible else 0.0
            history.append(rate)
            if rate > best_rate:
                best, best_rate = delta.clone(), rate
        queries = 2 * self.epochs + (1 if targets is None else 0)
        return UniversalResult(
            best.detach(), best_rate, tuple(history), targets is not None, queries
        )


@register("universal", knowledge="white-box", settings=UniversalSettings)
class UniversalAttack(Attack):
    """The :class:`Attack` adapter of :class:`UniversalPerturbation`: fit one ``delta`` on the
    batch it is given, then apply it to that batch.

    Weaker than per-example attacks by design: one perturbation must fool every example at
    once, so it measures how much a single input-agnostic pattern (a sticker-like, physically
    reusable perturbation) hurts the model, not the model's worst case. Do not read its
    robust accuracy as a robustness bound; use it next to APGD or a cascade, not instead.

    Settings as :class:`UniversalPerturbation`. A targeted call fits one ``delta`` per target
    class, each on the examples asking for that class. ``queries`` counts the fit's forward
    passes per example (``2 epochs + 1``, ``2 epochs`` per targeted group).
    """

    def __init__(
        self,
        *,
        epochs: int = 5,
        step_size: float = 0.1,
        batch_size: int = 32,
        loss: str = "ce",
        method: str = "sgd",
        loss_cap: float | None = None,
    ):
        fitter = UniversalPerturbation(
            epochs=epochs,
            step_size=step_size,
            batch_size=batch_size,
            loss=loss,
            method=method,
            loss_cap=loss_cap,
        )
        self.epochs = fitter.epochs
        self.step_size = fitter.step_size
        self.batch_size = fitter.batch_size
        self.loss = fitter.loss
        self.method = fitter.method
        self.loss_cap = fitter.loss_cap

    def _fitter(self) -> UniversalPerturbation:
        return UniversalPerturbation(
            epochs=self.epochs,
            step_size=self.step_size,
            batch_size=self.batch_size,
            loss=self.loss,
            method=self.method,
            loss_cap=self.loss_cap,
        )

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
        fitter = self._fitter()
        queries = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        if targets is None:
            res = fitter.fit(model, x, y, threat, generator=generator)
            queries += res.queries
            return apply(res.delta, x, threat), queries
        x_adv = x.clone()
        for t in torch.unique(targets).tolist():
            mask = targets == t
            res = fitter.fit(model, x[mask], y[mask], threat, target=int(t), generator=generator)
            x_adv[mask] = apply(res.delta, x[mask], threat)
            queries[mask] += res.queries
        return x_adv, queries
