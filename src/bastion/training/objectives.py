"""Training objectives: what loss a batch contributes.

Each objective maps a clean batch ``x`` ``(N, ...)``, ``y`` ``(N,)`` to a scalar loss for the
model's parameters. Adversarial objectives craft their perturbations with the shared attack
engine, with the model in eval mode and gradients taken only with respect to the input; the loss
itself is computed in train mode.

- ``standard``: cross-entropy on clean inputs.
- ``pgd-at``: cross-entropy on PGD examples (Madry et al. 2018).
- ``fast-fgsm``: cross-entropy on FGSM examples from a random start with step 1.25 eps
  (Wong, Rice and Kolter 2020, "Fast is better than free"). ``grad_align > 0`` adds GradAlign
  (Andriushchenko & Flammarion 2020): ``lambda (1 - cos(grad_x l(x), grad_x l(x + eta)))``
  with ``eta`` uniform in the eps-ball, which prevents catastrophic overfitting.
- ``n-fgsm``: N-FGSM (de Jorge et al. 2022, "Make some noise"): noise uniform in
  ``noise x eps`` (default 2), then one step of ``step_size x eps`` (default 1) with no
  projection back to the eps-ball (the training perturbation may exceed eps by design); only
  clipped to the input range. Also accepts ``grad_align``.
- ``trades``: clean cross-entropy plus ``beta`` times the KL divergence between clean and
  adversarial predictions, the adversary maximising that KL (Zhang et al. 2019).
- ``mart``: MART (Wang et al. 2020, "Improving adversarial robustness requires revisiting
  misclassified examples"): boosted cross-entropy on PGD examples plus ``beta`` times the KL
  between clean and adversarial predictions weighted by ``1 - p_clean(y)``.
- ``gaussian``: cross-entropy on ``x + sigma * N(0, I)`` (not clipped, as in Cohen et al. 2019;
  the base classifier of randomized smoothing).
- ``distill``: defensive distillation (Papernot et al. 2016): the :class:`Trainer` first trains a
  teacher (a copy of the model's initial weights) on cross-entropy of ``logits / T``, then the
  student on the teacher's soft labels ``softmax(teacher(x) / T)`` against
  ``softmax(student(x) / T)``; at test time the model is used at T = 1. The teacher's loss is
  scaled by T and so is the student's, so that the gradient with respect to the logits,
  ``softmax(z / T) - target``, keeps the scale of ordinary training whatever T. Known to mask
  gradients rather than give robustness (Carlini & Wagner 2017); kept as a baseline.
- ``augmix``: clean cross-entropy plus ``jsd_weight`` times the Jensen-Shannon consistency
  between the clean view and two AugMix views (see :mod:`bastion.training.augmix`).
- ``mixed``: each batch draws one perturbation type from ``mixed`` (linf, l2, l1 PGD or
  random corruptions) with the given weights and trains on cross-entropy there.

Step sizes are multiples of the current eps. The rule for contradictory settings: an iterative
attack (``steps > 1``) may not step further than eps (``step_size <= 1``); a single step
(``fast-fgsm``, ``n-fgsm`` or ``steps == 1``) may step up to ``2 x eps``, beyond which every
linf step lands on a corner of the ball and the setting only adds catastrophic overfitting.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Self, get_args

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from bastion.attacks.engine import gradient_attack
from bastion.attacks.settings import Settings, check_settings
from bastion.corruptions import CorruptionAugment
from bastion.errors import ConfigError
from bastion.threat import ThreatModel
from bastion.training.augmix import AugMixSettings, augmix, jensen_shannon

ObjectiveName = Literal[
    "standard",
    "pgd-at",
    "fast-fgsm",
    "n-fgsm",
    "trades",
    "mart",
    "gaussian",
    "distill",
    "augmix",
    "mixed",
]
OBJECTIVES: tuple[str, ...] = get_args(ObjectiveName)
#: Objectives whose attack takes one step (``steps`` is ignored).
SINGLE_STEP: tuple[str, ...] = ("fast-fgsm", "n-fgsm")
#: Objectives whose inner maximisation runs ``steps`` iterations.
ITERATIVE: tuple[str, ...] = ("pgd-at", "trades", "mart", "mixed")
#: Objectives trained against an attack (validated and selected by robust accuracy).
ADVERSARIAL: tuple[str, ...] = SINGLE_STEP + ITERATIVE
MIXED_KINDS: tuple[str, ...] = ("linf", "l2", "l1", "corruption")

#: ``loss_fn(model) -> (loss, logits)``: the batch's loss under the model's current weights.
LossClosure = Callable[[nn.Module], tuple[Tensor, Tensor]]


class ObjectiveFields(Settings):
    """The settings of a training objective, declared once (the ``augmix`` and ``mixed``
    sub-sections apart): :class:`ObjectiveSettings` (the Python API) and the YAML section
    ``models[].objective`` (:class:`bastion.config.ObjectiveConfig`) validate through it, and
    the reference in ``docs/config.md`` is generated from it. Errors read
    ``objective.<field>: expected ..., got ...``.

    Rules across fields (see the module docstring): an iterative attack may not step further
    than eps (``step_size <= 1``), a single step (``fast-fgsm``, ``n-fgsm``, ``steps == 1``)
    not beyond ``2 x eps``; ``grad_align`` regularises single-step training only.
    """

    name: ObjectiveName = Field(default="standard", description="the training objective")
    steps: int = Field(default=10, ge=1, description="attack steps (pgd-at, trades, mart, mixed)")
    step_size: float | None = Field(
        default=None,
        gt=0,
        description="step as a multiple of eps; null: 2.5/steps, fast-fgsm 1.25, n-fgsm 1.0",
    )
    random_start: bool = Field(
        default=True, description="start the attack at a random point of the ball"
    )
    beta: float = Field(default=6.0, ge=0, description="TRADES / MART trade-off weight")
    noise: float = Field(default=2.0, ge=0, description="N-FGSM noise as a multiple of eps")
    grad_align: float = Field(
        default=0.0, ge=0, description="GradAlign weight (fast-fgsm, n-fgsm); 0: off"
    )
    sigma: float = Field(default=0.25, gt=0, description="noise standard deviation (gaussian)")
    temperature: float = Field(
        default=20.0, gt=0, description="distillation temperature T (distill)"
    )
    teacher_epochs: int | None = Field(
        default=None, ge=1, description="epochs of the distillation teacher; null: the student's"
    )

    @model_validator(mode="after")
    def _step_rules(self) -> Self:
        single = self.name in SINGLE_STEP or self.steps == 1
        size = self.step_size
        if size is not None and not single and size > 1.0:
            raise ValueError(
                f"step_size: {size} x eps is larger than eps for multi-step {self.name} "
                f"({self.steps} steps); expected a multiple of eps <= 1"
            )
        if size is not None and single and size > 2.0:
            raise ValueError(
                f"step_size: {size} x eps for a single-step attack; expected a multiple of eps <= 2"
            )
        if self.grad_align > 0 and self.name not in SINGLE_STEP:
            raise ValueError(
                f"grad_align: GradAlign regularises single-step training; expected 0 for "
                f"{self.name!r} (or objective fast-fgsm / n-fgsm), got {self.grad_align}"
            )
        return self


@dataclass(frozen=True)
class MixedComponent:
    """One perturbation type of the ``mixed`` objective.

    Attributes:
        kind: ``"linf"``, ``"l2"`` or ``"l1"`` (PGD in that norm) or ``"corruption"``.
        weight: relative probability that a batch draws this type (>= 0).
        eps: budget for a norm kind; default the threat's eps when the kind is the threat's
            norm (required otherwise). Ramped with the training eps.
        severities: corruption severities for ``"corruption"``.
    """

    kind: str
    weight: float = 1.0
    eps: float | None = None
    severities: tuple[int, ...] = (1, 2, 3)

    def check(self, where: str) -> None:
        if self.kind not in MIXED_KINDS:
            raise ConfigError(
                f"{where}.kind: expected one of {', '.join(MIXED_KINDS)}, got {self.kind!r}"
            )
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ConfigError(f"{where}.weight: expected a number >= 0, got {self.weight}")
        if self.eps is not None and not (math.isfinite(self.eps) and self.eps >= 0):
            raise ConfigError(f"{where}.eps: expected a number >= 0, got {self.eps}")
        if not self.severities or any(not 1 <= s <= 5 for s in self.severities):
            raise ConfigError(
                f"{where}.severities: expected severities in 1..5, got {list(self.severities)}"
            )


@dataclass(frozen=True)
class ObjectiveSettings:
    """Settings of an objective and its inner maximisation (keyword use recommended),
    validated at construction through :class:`ObjectiveFields` (types, bounds, the rules
    across fields) and the checks of the ``mixed`` components.

    Attributes:
        name: one of :data:`OBJECTIVES`.
        steps: attack steps (pgd-at, trades, mart, mixed).
        step_size: step length as a multiple of the (current) eps; default 2.5/steps for
            iterative attacks, 1.25 for fast FGSM and 1.0 for N-FGSM.
        random_start: start the attack at a random point of the ball.
        beta: TRADES / MART trade-off weight.
        noise: N-FGSM noise magnitude as a multiple of eps (paper: 2).
        grad_align: GradAlign weight lambda for fast-fgsm / n-fgsm (0: off; paper: 0.2 on
            CIFAR-10 at 8/255, larger for larger eps).
        sigma: Gaussian noise standard deviation (gaussian).
        temperature: distillation temperature T (distill; paper: 20 to 100).
        teacher_epochs: epochs of the distillation teacher (default: the student's epochs).
        augmix: settings of the augmix objective.
        mixed: the perturbation types of the mixed objective.
    """

    name: str = "standard"
    steps: int = 10
    step_size: float | None = None
    random_start: bool = True
    beta: float = 6.0
    noise: float = 2.0
    grad_align: float = 0.0
    sigma: float = 0.25
    temperature: float = 20.0
    teacher_epochs: int | None = None
    augmix: AugMixSettings = field(default_factory=AugMixSettings)
    mixed: tuple[MixedComponent, ...] = ()

    def __post_init__(self) -> None:
        fields = {f: getattr(self, f) for f in ObjectiveFields.model_fields}
        check_settings(ObjectiveFields, fields, where="objective")
        for i, c in enumerate(self.mixed):
            c.check(f"objective.mixed[{i}]")
        if self.name == "mixed":
            total = sum(c.weight for c in self.mixed)
            if not self.mixed or not total > 0:
                raise ConfigError(
                    "objective.mixed: expected at least one perturbation type with weights "
                    f"summing to a positive value, got {len(self.mixed)} type(s) with total "
                    f"weight {total}"
                )

    @property
    def adversarial(self) -> bool:
        """Trained against an attack: validated and selected by robust accuracy."""
        return self.name in ADVERSARIAL

    def effective_step_size(self) -> float:
        if self.step_size is not None:
            return self.step_size
        if self.name == "fast-fgsm":
            return 1.25
        if self.name == "n-fgsm":
            return 1.0
        return 2.5 / self.steps

    def check_threat(self, threat: ThreatModel, *, train_eps: float | None = None) -> None:
        """Checks that need the threat: mixed budgets against the threat's eps and norm."""
        for i, c in enumerate(self.mixed):
            where = f"objective.mixed[{i}]"
            if c.kind == "corruption":
                continue
            if c.eps is None and c.kind != threat.norm:
                raise ConfigError(
                    f"{where}.eps: required for kind {c.kind!r}, which is not the threat's norm "
                    f"{threat.norm!r}"
                )
            if c.kind == threat.norm and c.eps is not None and c.eps > threat.eps:
                raise ConfigError(
                    f"{where}.eps: {c.eps} exceeds the threat eps {threat.eps} of the same norm; "
                    f"expected eps <= {threat.eps}"
                )
            if (
                c.kind == "linf"
                and c.eps is not None
                and c.eps > threat.bounds[1] - threat.bounds[0]
            ):
                raise ConfigError(f"{where}.eps: {c.eps} exceeds the width of the input range")


def _kl_attack(
    model: nn.Module,
    x: Tensor,
    threat: ThreatModel,
    steps: int,
    step: float,
    generator: torch.Generator | None,
) -> Tensor:
    """TRADES' inner maximisation: PGD on KL(p(x) || p(x'))."""
    with torch.no_grad():
        p_clean = F.softmax(model(x), dim=1)
    xa = threat.random_init(x, generator=generator, scale=0.001 / max(threat.eps, 1e-12))
    for _ in range(steps):
        xa = xa.detach().requires_grad_(True)
        with torch.enable_grad():
            kl = F.kl_div(F.log_softmax(model(xa), dim=1), p_clean, reduction="sum")
            (g,) = torch.autograd.grad(kl, xa)
        xa = threat.project(xa.detach() + step * threat.steepest_step(g), x)
    return xa.detach()


def _n_fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    settings: ObjectiveSettings,
    generator: torch.Generator | None,
) -> Tensor:
    """N-FGSM: a noisy start in ``noise x eps`` and one unprojected step (clipped to range)."""
    start = (
        threat.clip(x)
        if settings.noise == 0
        else threat.random_init(x, generator=generator, scale=settings.noise)
    )
    start = start.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(start), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, start)
    step = settings.effective_step_size() * threat.eps
    return threat.clip(start.detach() + step * threat.steepest_step(g)).detach()


def _grad_align(model: nn.Module, x: Tensor, y: Tensor, eta: Tensor) -> Tensor:
    """``mean(1 - cos(grad_x l(x), grad_x l(x + eta)))`` with a graph for the parameters."""
    grads = []
    for point in (x, x + eta):
        p = point.detach().requires_grad_(True)
        loss = F.cross_entropy(model(p), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, p, create_graph=True)
        grads.append(g.reshape(g.shape[0], -1))
    cos = F.cosine_similarity(grads[0], grads[1], dim=1, eps=1e-12)
    return (1.0 - cos).mean()


def _mart_loss(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, beta: float) -> Tensor:
    """MART: boosted CE on the adversarial logits plus beta x misclassification-weighted KL."""
    p_adv = F.softmax(logits_adv, dim=1)
    true_mask = F.one_hot(y, logits_adv.shape[1]).bool()
    # the most likely wrong class, whose probability the boosted term pushes down
    wrong = p_adv.masked_fill(true_mask, -1.0).argmax(dim=1)
    p_wrong = p_adv.gather(1, wrong[:, None]).squeeze(1)
    bce = F.cross_entropy(logits_adv, y) - torch.log((1.0 - p_wrong).clamp_min(1e-12)).mean()
    p_clean = F.softmax(logits_clean, dim=1)
    kl = (p_clean * (p_clean.clamp_min(1e-12).log() - F.log_softmax(logits_adv, dim=1))).sum(1)
    weight = 1.0 - p_clean.gather(1, y[:, None]).squeeze(1)
    return bce + beta * (kl * weight).mean()


def _draw_component(
    settings: ObjectiveSettings, generator: torch.Generator | None
) -> MixedComponent:
    w = torch.tensor([c.weight for c in settings.mixed], dtype=torch.float64)
    i = int(torch.multinomial(w / w.sum(), 1, generator=generator))
    return settings.mixed[i]


def prepare_loss(
    settings: ObjectiveSettings,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    generator: torch.Generator | None = None,
    eps_fraction: float = 1.0,
    teacher: nn.Module | None = None,
) -> LossClosure:
    """Craft the batch's inputs (attacks, noise, augmentations; all randomness drawn here) and
    return ``loss_fn(model) -> (loss, logits)`` that scores them under the model's current
    weights. Calling ``loss_fn`` twice with unchanged weights gives the same loss, which is
    what adversarial weight perturbation needs (:mod:`bastion.training.awp`).

    Args:
        threat: the threat at the current training eps (after any ramp).
        eps_fraction: the current training eps over its final value (scales mixed budgets).
        teacher: the distillation teacher; for ``distill`` without one, the loss is the
            teacher's own (cross-entropy at temperature T).

    The model is put in eval mode while an attack runs and restored to train mode after.
    """
    name = settings.name
    if name == "standard" or (name in ADVERSARIAL and name != "mixed" and threat.eps == 0):
        return lambda m: _ce(m, x, y)
    if name in ("gaussian", "distill", "augmix"):
        return _non_adversarial_loss(settings, x, y, threat, generator, teacher)
    if name == "mixed":
        comp = _draw_component(settings, generator)
        if comp.kind == "corruption":
            op = CorruptionAugment(None, comp.severities, 1.0, bounds=threat.bounds)
            xc = op(x, generator)
            return lambda m: _ce(m, xc, y)
        eps_now = threat.eps if comp.eps is None else comp.eps * eps_fraction
        threat = ThreatModel(comp.kind, eps_now, threat.bounds)  # type: ignore[arg-type]
        if threat.eps == 0:
            return lambda m: _ce(m, x, y)
    model.eval()
    try:
        xa = _craft(settings, model, x, y, threat, generator)
        eta = threat.random_init(x, generator=generator) - x if settings.grad_align > 0 else None
    finally:
        model.train()
    return _adversarial_loss(settings, x, y, xa, eta)


def _non_adversarial_loss(
    settings: ObjectiveSettings,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    generator: torch.Generator | None,
    teacher: nn.Module | None,
) -> LossClosure:
    """The loss of ``gaussian`` (CE on noisy inputs), ``distill`` (Papernot et al. 2016:
    CE on the teacher's soft labels at temperature T) or ``augmix`` (Hendrycks et al. 2020:
    CE plus the Jensen-Shannon consistency of two augmented views)."""
    name = settings.name
    if name == "gaussian":
        noisy = x + settings.sigma * torch.randn(
            x.shape, generator=generator, device=x.device, dtype=x.dtype
        )
        return lambda m: _ce(m, noisy, y)
    if name == "distill":
        t = settings.temperature
        if teacher is None:
            return lambda m: _scaled_ce(m, x, y, t)
        with torch.no_grad():
            teacher.eval()
            soft = F.softmax(teacher(x) / t, dim=1)

        def distill(m: nn.Module) -> tuple[Tensor, Tensor]:
            logits = m(x)
            loss = -(soft * F.log_softmax(logits / t, dim=1)).sum(dim=1).mean()
            return t * loss, logits

        return distill
    views = [augmix(x, settings.augmix, bounds=threat.bounds, generator=generator) for _ in "ab"]
    lam = settings.augmix.jsd_weight

    def consistency(m: nn.Module) -> tuple[Tensor, Tensor]:
        logits = m(torch.cat([x, *views]))
        lc, la, lb = logits.split(x.shape[0])
        return F.cross_entropy(lc, y) + lam * jensen_shannon(lc, la, lb), lc

    return consistency


def _craft(
    settings: ObjectiveSettings,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    generator: torch.Generator | None,
) -> Tensor:
    """The adversarial inputs ``(B, ...)`` an adversarial objective trains on: TRADES's KL
    attack, N-FGSM's noisy step, else FGSM (``fast-fgsm``) or PGD with the objective's steps."""
    name = settings.name
    step = settings.effective_step_size() * threat.eps
    if name == "trades":
        return _kl_attack(model, x, threat, settings.steps, step, generator)
    if name == "n-fgsm":
        return _n_fgsm(model, x, y, threat, settings, generator)
    xa, _ = gradient_attack(
        model,
        x,
        y,
        threat,
        steps=1 if name == "fast-fgsm" else settings.steps,
        step_size=step,
        random_start=settings.random_start,
        early_stop=False,
        generator=generator,
    )
    return xa


def _adversarial_loss(
    settings: ObjectiveSettings, x: Tensor, y: Tensor, xa: Tensor, eta: Tensor | None
) -> LossClosure:
    """The loss on crafted inputs ``xa``: TRADES (Zhang et al. 2019), MART (Wang et al.
    2020), CE plus GradAlign (Andriushchenko & Flammarion 2020) at the random point
    ``x + eta``, or plain CE (Madry et al. 2018)."""
    name = settings.name
    if name == "trades":
        beta = settings.beta

        def trades(m: nn.Module) -> tuple[Tensor, Tensor]:
            lc, la = m(x), m(xa)  # two passes, as the paper: batch-norm sees each batch alone
            kl = F.kl_div(F.log_softmax(la, dim=1), F.softmax(lc, dim=1), reduction="batchmean")
            return F.cross_entropy(lc, y) + beta * kl, la

        return trades
    if name == "mart":
        beta = settings.beta

        def mart(m: nn.Module) -> tuple[Tensor, Tensor]:
            lc, la = m(x), m(xa)
            return _mart_loss(lc, la, y, beta), la

        return mart
    if eta is not None:
        lam, noise = settings.grad_align, eta

        def aligned(m: nn.Module) -> tuple[Tensor, Tensor]:
            loss, logits = _ce(m, xa, y)
            return loss + lam * _grad_align(m, x, y, noise), logits

        return aligned
    return lambda m: _ce(m, xa, y)


def _ce(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    logits = model(x)
    return F.cross_entropy(logits, y), logits


def _scaled_ce(model: nn.Module, x: Tensor, y: Tensor, t: float) -> tuple[Tensor, Tensor]:
    """``T x CE(logits / T, y)``: the factor T keeps the gradient's scale that of T = 1."""
    logits = model(x)
    return t * F.cross_entropy(logits / t, y), logits


def objective_loss(
    settings: ObjectiveSettings,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    generator: torch.Generator | None = None,
    eps_fraction: float = 1.0,
    teacher: nn.Module | None = None,
) -> tuple[Tensor, Tensor]:
    """``(loss, logits)`` for one batch: the scalar loss to minimise and the logits the loss
    was computed on (adversarial for adversarial objectives, clean for TRADES-like losses'
    clean half only where noted), for running accuracy. See :func:`prepare_loss`."""
    fn = prepare_loss(
        settings,
        model,
        x,
        y,
        threat,
        generator=generator,
        eps_fraction=eps_fraction,
        teacher=teacher,
    )
    return fn(model)
