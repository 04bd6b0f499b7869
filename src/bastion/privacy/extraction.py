"""Model extraction: steal a functional copy of a black-box classifier through its queries.

Any queryable target works: a bastion model, a :class:`~bastion.attacks.targets.ScoreTarget`
or :class:`~bastion.attacks.targets.LabelTarget` around a callable, an
:class:`~bastion.attacks.targets.OnnxTarget`, an :class:`~bastion.attacks.targets.HTTPTarget`,
or a bastion service (:class:`~bastion.privacy.targets.ServedModelTarget`). The victim is only
ever called forward, without gradients, and every input sent counts as one query.

* :func:`knockoff_nets`: Knockoff Nets (Orekondy, Schiele and Fritz, CVPR 2019, "Knockoff
  Nets: stealing functionality of black-box models"), the *random* sampling strategy: query
  images drawn from a surrogate set (by contract disjoint from the victim's training data),
  the victim's probability vectors as soft labels, a student trained on them. With
  ``labels_only=True`` only the victim's top label is used (the label-only variant, for
  targets that answer a class and nothing else).
* :func:`jacobian_augmentation`: the substitute training of Papernot, McDaniel, Goodfellow,
  Jha, Celik and Swami 2017 ("Practical black-box attacks against machine learning", AsiaCCS):
  a small seed set labelled by the victim; after each round the substitute's Jacobian adds
  ``x + lambda * sign(d F_{O(x)}(x) / dx)`` for every point (the direction in which the
  substitute's output for the victim's label changes most), with ``lambda``'s sign flipped
  every ``tau`` rounds (the paper's periodic step size); labels only.
* :func:`transferability`: adversarial examples crafted on the stolen copy with PGD (through
  :class:`~bastion.attacks.transfer.TransferAttack`) and evaluated on the victim.

Each attack reports a curve of (queries spent, fidelity, accuracy): *fidelity* is agreement of
the student's and the victim's top labels on held-out data, *accuracy* the student's accuracy
on the held-out labels (Jagielski et al. 2020 separate the two goals this way). Students start
from seeded weights and train with a seeded :class:`torch.Generator`, so a run is reproducible
from its seed (given a deterministic victim).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.base import predict
from bastion.attacks.gradient import PGD
from bastion.attacks.transfer import TransferAttack
from bastion.errors import ConfigError
from bastion.models.zoo import ModelSpec
from bastion.privacy.membership import build_seeded
from bastion.threat import ThreatModel

__all__ = [
    "ExtractionResult",
    "StudentSettings",
    "agreement",
    "jacobian_augmentation",
    "knockoff_nets",
    "query_victim",
    "student_spec",
    "train_student",
    "transferability",
]

ExtractionProgress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class StudentSettings:
    """How the stolen copy is trained (Adam, full passes over the labelled queries).

    Attributes:
        epochs: passes over the queries; at least ``min_steps`` optimiser steps are taken
            whatever the budget, so tiny budgets still converge.
        batch_size, lr, weight_decay: the usual.
    """

    epochs: int = 30
    min_steps: int = 300
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        for name in ("epochs", "min_steps", "batch_size"):
            v = getattr(self, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, int)
                or v < (0 if name == "min_steps" else 1)
            ):
                raise ConfigError(
                    f"extraction.student.{name}: expected a positive integer, got {v!r}"
                )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"extraction.student.lr: expected a positive number, got {self.lr!r}")


def student_spec(
    architecture: str,
    x_pool: Tensor,
    num_classes: int,
    options: dict[str, Any] | None = None,
) -> ModelSpec:
    """A zoo spec for the student: the attacker's own normalisation, per channel (images
    ``(N, C, H, W)``) or per feature ``(N, F)``, measured on the attacker's query pool."""
    if x_pool.dim() == 4:
        mean = x_pool.mean(dim=(0, 2, 3))
        std = x_pool.std(dim=(0, 2, 3))
    else:
        flat = x_pool.reshape(x_pool.shape[0], -1)
        mean, std = flat.mean(0), flat.std(0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return ModelSpec(
        architecture,
        tuple(int(s) for s in x_pool.shape[1:]),
        int(num_classes),
        tuple(float(v) for v in mean),
        tuple(float(v) for v in std),
        dict(options or {}),
    )


def query_victim(victim: nn.Module, x: Tensor, *, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """Send ``x`` ``(n, ...)`` to the victim once: returns its probabilities ``(n, C)`` float32
    (softmax of its scores; log-probabilities and logits alike) and ``answered`` ``(n,)`` bool
    (False where the victim withheld an answer: non-finite scores, e.g. a service abstaining)."""
    outs = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            outs.append(victim(x[i : i + batch_size]).to(torch.float32))
    scores = torch.cat(outs) if outs else torch.zeros(0, 2)
    answered = torch.isfinite(scores).all(dim=1)
    probs = torch.softmax(torch.where(answered.view(-1, 1), scores, 0.0), dim=1)
    return probs, answered


def agreement(a: nn.Module, b: nn.Module, x: Tensor) -> float:
    """Fraction of ``x`` on which ``a`` and ``b`` predict the same class."""
    if x.shape[0] == 0:
        return 0.0
    return float((predict(a, x) == predict(b, x)).float().mean())


def train_student(
    spec: ModelSpec,
    x: Tensor,
    targets: Tensor,
    settings: StudentSettings,
    *,
    seed: int,
) -> nn.Module:
    """A fresh student (weights seeded by ``seed``) trained on ``x`` ``(n, ...)`` against
    ``targets``: class probabilities ``(n, C)`` (soft cross-entropy, the distillation loss of
    Knockoff Nets) or class indices ``(n,)`` (cross-entropy). Returned in eval mode."""
    model = build_seeded(spec, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    n = x.shape[0]
    per_epoch = max(1, math.ceil(n / settings.batch_size))
    epochs = max(settings.epochs, math.ceil(settings.min_steps / per_epoch))
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for b in range(per_epoch):
            idx = perm[b * settings.batch_size : (b + 1) * settings.batch_size]
            logits = model(x[idx])
            t = targets[idx]
            if t.dim() == 2:
                loss = -(t * F.log_softmax(logits, dim=1)).sum(1).mean()
            else:
                loss = F.cross_entropy(logits, t)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    return model.eval()


@dataclass
class ExtractionResult:
    """One extraction run.

    Attributes:
        method: ``"knockoff"``, ``"knockoff-labels"`` or ``"jacobian"``.
        curve: one point per budget: ``queries``, ``fidelity``, ``accuracy`` (the student's,
            on the held-out labels), ``seconds``.
        victim_accuracy: the victim's own accuracy on the held-out labels.
        queries: inputs sent to the victim in all; unanswered: of them, withheld answers.
        student: the student of the last budget (eval mode).
        transfer: :func:`transferability` figures, when measured.
    """

    method: str
    curve: list[dict[str, float]]
    victim_accuracy: float
    queries: int
    unanswered: int
    student: nn.Module
    transfer: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        last = self.curve[-1] if self.curve else {"fidelity": 0.0, "accuracy": 0.0}
        out: dict[str, Any] = {
            "method": self.method,
            "fidelity_at_budget": last["fidelity"],
            "accuracy_at_budget": last["accuracy"],
            "victim_accuracy": self.victim_accuracy,
            "queries": self.queries,
            "unanswered": self.unanswered,
            "curve": self.curve,
            "settings": self.settings,
        }
        if self.transfer is not None:
            out["transfer"] = self.transfer
        return out


def _check_budgets(budgets: Sequence[int], pool: int, where: str) -> list[int]:
    out = sorted({int(b) for b in budgets})
    if not out or out[0] < 1:
        raise ConfigError(f"{where}.budgets: expected positive query counts, got {list(budgets)}")
    if out[-1] > pool:
        raise ConfigError(
            f"{where}.budgets: the largest budget {out[-1]} exceeds the {pool} inputs of the "
            "query pool; give a larger pool or smaller budgets"
        )
    return out


def _victim_labels(victim: nn.Module, x: Tensor) -> Tensor:
    return predict(victim, x)


def knockoff_nets(
    victim: nn.Module,
    x_pool: Tensor,
    x_eval: Tensor,
    y_eval: Tensor,
    spec: ModelSpec,
    *,
    budgets: Sequence[int],
    labels_only: bool = False,
    settings: StudentSettings | None = None,
    seed: int = 0,
    progress: ExtractionProgress | None = None,
) -> ExtractionResult:
    """Knockoff Nets, random strategy (Orekondy et al. 2019, section 4.1).

    Args:
        victim: the target, called forward on ``max(budgets)`` pool inputs, once each.
        x_pool: ``(P, ...)`` the attacker's surrogate inputs (must not overlap the victim's
            training data for the figures to mean theft rather than recall).
        x_eval, y_eval: ``(E, ...)``, ``(E,)`` held-out data for fidelity and accuracy (never
            trained on, and not counted as queries: fidelity needs the victim's answer on them
            too, which an auditor reads directly).
        spec: the student's architecture (see :func:`student_spec`).
        budgets: query counts; one student per budget, each trained from scratch on the
            first ``b`` queries of one seeded random order (nested sets).
        labels_only: train on the victim's top label only (the label-only variant).

    Returns:
        the curve over budgets; ``queries == max(budgets)``.
    """
    s = settings or StudentSettings()
    order = _check_budgets(budgets, x_pool.shape[0], "knockoff")
    gen = torch.Generator().manual_seed(seed)
    picked = x_pool[torch.randperm(x_pool.shape[0], generator=gen)[: order[-1]]]
    probs, answered = query_victim(victim, picked)
    victim_eval = _victim_labels(victim, x_eval)
    victim_acc = float((victim_eval == y_eval).float().mean())
    curve: list[dict[str, float]] = []
    student: nn.Module | None = None
    for b in order:
        t0 = time.perf_counter()
        keep = answered[:b]
        xb = picked[:b][keep]
        tb = probs[:b][keep]
        targets = tb.argmax(1) if labels_only else tb
        student = train_student(spec, xb, targets, s, seed=seed + b)
        point = _curve_point(student, x_eval, y_eval, victim_eval, b, t0)
        curve.append(point)
        if progress is not None:
            progress(dict(point))
    if student is None:  # unreachable: budgets and rounds are checked non-empty above
        raise ConfigError("extraction: no student was trained")
    return ExtractionResult(
        method="knockoff-labels" if labels_only else "knockoff",
        curve=curve,
        victim_accuracy=victim_acc,
        queries=order[-1],
        unanswered=int((~answered).sum()),
        student=student,
        settings={"budgets": order, "labels_only": labels_only, "seed": seed, **s.__dict__},
    )


def _curve_point(
    student: nn.Module,
    x_eval: Tensor,
    y_eval: Tensor,
    victim_eval: Tensor,
    queries: int,
    t0: float,
) -> dict[str, float]:
    """One point of an extraction curve: the queries spent, the student's agreement with
    the victim's labels (fidelity) and its accuracy on ``x_eval`` ``(E, ...)``, and the
    seconds since ``t0``."""
    pred = predict(student, x_eval)
    return {
        "queries": float(queries),
        "fidelity": float((pred == victim_eval).float().mean()),
        "accuracy": float((pred == y_eval).float().mean()),
        "seconds": time.perf_counter() - t0,
    }


def _jacobian_cap(rounds: int, step: float, tau: int, seeds: int, max_queries: int | None) -> int:
    """The query cap of :func:`jacobian_augmentation` (default: the ``seeds`` inputs doubled
    every round but the last); :class:`ConfigError` naming the ``jacobian`` field for a bad
    rounds, step, tau, an empty seed set or a cap under the seed set."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"jacobian.rounds: expected an integer >= 1, got {rounds!r}")
    if not (step > 0 and math.isfinite(step)):
        raise ConfigError(f"jacobian.step: expected a positive number, got {step!r}")
    if isinstance(tau, bool) or not isinstance(tau, int) or tau < 1:
        raise ConfigError(f"jacobian.tau: expected an integer >= 1, got {tau!r}")
    if seeds < 1:
        raise ConfigError("jacobian.seed_set: expected at least one input")
    cap = max_queries if max_queries is not None else seeds * 2 ** (rounds - 1)
    if cap < seeds:
        raise ConfigError(
            f"jacobian.max_queries: expected at least the {seeds} seed inputs, got {cap}"
        )
    return cap


def _jacobian_step(
    student: nn.Module, x: Tensor, labels: Tensor, lam: float, bounds: tuple[float, float]
) -> Tensor:
    """New points ``x + lam * sign(d student(x)[label] / dx)``, clipped to ``bounds``
    (Papernot et al. 2017, the augmentation step)."""
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = student(xg).gather(1, labels.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(out, xg)
    return (x + lam * grad.sign()).clamp(bounds[0], bounds[1]).detach()


def jacobian_augmentation(
    victim: nn.Module,
    x_seed: Tensor,
    x_eval: Tensor,
    y_eval: Tensor,
    spec: ModelSpec,
    *,
    rounds: int = 5,
    step: float = 0.1,
    tau: int = 3,
    max_queries: int | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    settings: StudentSettings | None = None,
    seed: int = 0,
    progress: ExtractionProgress | None = None,
) -> ExtractionResult:
    """Jacobian-based dataset augmentation (Papernot et al. 2017, Algorithm 1), labels only.

    Args:
        x_seed: ``(S, ...)`` the initial substitute set (the paper: 10 examples per class).
        rounds: substitute training epochs ``rho``; the set doubles after each but the last.
        step: ``lambda``, the augmentation step in input units; its sign flips every ``tau``
            rounds (``lambda_rho = lambda * (-1)^floor(rho / tau)``).
        max_queries: stop growing the set here; when a doubling would exceed it, a seeded
            random subset of the points is augmented (the paper's reservoir sampling).
        bounds: the valid input range; augmented points are clipped to it.

    Returns:
        one curve point per round, at the queries spent so far.
    """
    s = settings or StudentSettings()
    cap = _jacobian_cap(rounds, step, tau, x_seed.shape[0], max_queries)
    gen = torch.Generator().manual_seed(seed)
    victim_eval = _victim_labels(victim, x_eval)
    victim_acc = float((victim_eval == y_eval).float().mean())
    xs = x_seed.clone()
    probs, answered = query_victim(victim, xs)
    labels = probs.argmax(1)
    queries, unanswered = xs.shape[0], int((~answered).sum())
    curve: list[dict[str, float]] = []
    student: nn.Module | None = None
    for rho in range(rounds):
        t0 = time.perf_counter()
        student = train_student(spec, xs[answered], labels[answered], s, seed=seed + rho)
        point = _curve_point(student, x_eval, y_eval, victim_eval, queries, t0)
        curve.append(point)
        if progress is not None:
            progress(dict(point))
        room = cap - queries
        if rho == rounds - 1 or room <= 0:
            break
        src = torch.nonzero(answered).squeeze(1)
        if src.numel() > room:
            src = src[torch.randperm(src.numel(), generator=gen)[:room]]
        lam = step * (-1) ** (rho // tau)
        new = _jacobian_step(student, xs[src], labels[src], lam, bounds)
        p_new, a_new = query_victim(victim, new)
        xs = torch.cat([xs, new])
        labels = torch.cat([labels, p_new.argmax(1)])
        answered = torch.cat([answered, a_new])
        queries += new.shape[0]
        unanswered += int((~a_new).sum())
    if student is None:  # unreachable: budgets and rounds are checked non-empty above
        raise ConfigError("extraction: no student was trained")
    return ExtractionResult(
        method="jacobian",
        curve=curve,
        victim_accuracy=victim_acc,
        queries=queries,
        unanswered=unanswered,
        student=student,
        settings={
            "rounds": rounds,
            "step": step,
            "tau": tau,
            "max_queries": cap,
            "seed": seed,
            **s.__dict__,
        },
    )


def transferability(
    student: nn.Module,
    victim: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    steps: int = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """How well PGD examples crafted on the stolen ``student`` fool the ``victim``.

    PGD-``steps`` (no early stop) runs white-box on the student (:class:`TransferAttack`); its
    points are then classified by the victim (one query each). Returned: ``victim_clean_accuracy``,
    ``victim_accuracy_transfer`` (under the transferred examples), ``transfer_success_rate``
    (of the examples the victim classified correctly, the share now misclassified),
    ``student_success_rate`` (white-box, on the student), and the same rate for random noise
    of size eps (``noise_success_rate``: random signs for linf, a random direction of length
    eps for l2 and l1), the floor a transfer must beat.
    Inputs ``x`` ``(N, ...)``, ``y`` ``(N,)``: held-out examples.
    """
    gen = torch.Generator().manual_seed(seed)
    clean = predict(victim, x) == y
    # every example takes every step (no early stop): a point just across the student's
    # boundary rarely crosses the victim's
    attack = TransferAttack(
        surrogate=student, attack=PGD(steps=steps, restarts=1, early_stop=False)
    )
    res = attack(victim, x, y, threat, generator=gen)
    fooled = predict(victim, res.x_adv) != y
    on_student = predict(student, res.x_adv) != y
    noise = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    flat = noise.flatten(1)
    if threat.norm == "linf":
        noise = noise.sign()
    else:
        scale = flat.norm(p=2 if threat.norm == "l2" else 1, dim=1).clamp_min(1e-12)
        noise = noise / scale.view(-1, *([1] * (x.dim() - 1)))
    noisy = threat.project(x + threat.eps * noise, x)
    noise_fooled = predict(victim, noisy) != y
    base = max(int(clean.sum()), 1)
    return {
        "attack": f"pgd-{steps} on the student",
        "threat": threat.to_dict(),
        "examples": int(x.shape[0]),
        "victim_clean_accuracy": float(clean.float().mean()),
        "victim_accuracy_transfer": float((~fooled).float().mean()),
        "transfer_success_rate": float((fooled & clean).sum()) / base,
        "student_success_rate": float(on_student.float().mean()),
        "noise_success_rate": float((noise_fooled & clean).sum()) / base,
    }
