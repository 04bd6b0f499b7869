"""The Trainer: mini-batch training with a chosen objective, validated every epoch.

Every epoch ends with clean and PGD validation; the checkpoint kept is the best by robust
validation accuracy for adversarial objectives (clean accuracy for standard training), the
"early stopping" of Rice, Wong and Kolter 2020 ("Overfitting in adversarially robust deep
learning"). Randomness (shuffling, attack starts) comes from one seeded generator, so a run is
reproducible from its seed.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bastion.attacks.base import predict
from bastion.attacks.gradient import PGD
from bastion.errors import ConfigError
from bastion.threat import ThreatModel
from bastion.training.objectives import ObjectiveSettings, objective_loss
from bastion.training.schedules import SCHEDULES, learning_rate, ramped_eps

ProgressFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TrainSettings:
    """How to train one model.

    Attributes:
        epochs, batch_size: the usual.
        lr: peak learning rate; schedule: see :func:`learning_rate`.
        optimizer: ``"sgd"`` (momentum 0.9, Nesterov) or ``"adam"``.
        weight_decay: L2 penalty.
        objective: the inner maximisation and loss (see :mod:`objectives`).
        train_eps: eps used for training, default the threat's eps.
        eps_ramp_epochs: linear eps curriculum from 0 to ``train_eps`` over these epochs.
        val_examples: validation examples scored each epoch; val_pgd_steps: PGD steps there.
        select: which checkpoint to keep: ``"robust"`` (best PGD validation accuracy, the
            default for adversarial objectives), ``"clean"`` or ``"last"``.
        grad_clip: clip the gradient norm of the parameters (0 disables).
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    schedule: str = "cyclic"
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    objective: ObjectiveSettings = field(default_factory=ObjectiveSettings)
    train_eps: float | None = None
    eps_ramp_epochs: float = 0.0
    val_examples: int = 1000
    val_pgd_steps: int = 10
    select: str | None = None
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        checks = [
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("batch_size", self.batch_size >= 1, "an integer >= 1"),
            ("lr", self.lr > 0, "a positive number"),
            ("weight_decay", self.weight_decay >= 0, "a number >= 0"),
            (
                "eps_ramp_epochs",
                0 <= self.eps_ramp_epochs <= self.epochs,
                f"a number of epochs in [0, epochs={self.epochs}]",
            ),
            ("val_examples", self.val_examples >= 1, "an integer >= 1"),
            ("val_pgd_steps", self.val_pgd_steps >= 1, "an integer >= 1"),
            ("grad_clip", self.grad_clip >= 0, "a number >= 0"),
            ("train_eps", self.train_eps is None or self.train_eps >= 0, "a number >= 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(
                    f"training.{name}: expected {expected}, got {getattr(self, name)!r}"
                )
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"training.schedule: expected one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
            )
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(
                f"training.optimizer: expected 'sgd' or 'adam', got {self.optimizer!r}"
            )
        if self.select not in (None, "robust", "clean", "last"):
            raise ConfigError(
                f"training.select: expected robust, clean or last, got {self.select!r}"
            )

    @property
    def selection(self) -> str:
        if self.select is not None:
            return self.select
        return "robust" if self.objective.adversarial else "clean"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """The trained model (best checkpoint loaded), its per-epoch history and timing."""

    model: nn.Module
    history: list[dict[str, float]]
    best_epoch: int
    seconds: float
    selection: str

    def summary(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "epochs": len(self.history),
            "best_epoch": self.best_epoch,
            "selection": f"val_{self.selection}_accuracy" if self.selection != "last" else "last",
            "history": self.history,
        }


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Fraction of ``x`` classified as ``y``."""
    if x.shape[0] == 0:
        return 0.0
    return float((predict(model, x) == y).float().mean())


class Trainer:
    """Train a model on tensors ``(N, ...)``/``(N,)`` under a threat model.

    ``progress`` (if given) is called after every batch with a dict holding ``epoch``,
    ``batch``, ``batches``, ``loss``, ``accuracy`` and, at the end of each epoch, the validation
    figures (key ``"end_of_epoch": True``).
    """

    def __init__(
        self,
        settings: TrainSettings,
        threat: ThreatModel,
        *,
        seed: int = 0,
        progress: ProgressFn | None = None,
    ):
        self.settings = settings
        self.threat = threat
        self.seed = seed
        self.progress = progress

    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        s = self.settings
        if s.optimizer == "adam":
            return torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        return torch.optim.SGD(
            model.parameters(),
            lr=s.lr,
            momentum=s.momentum,
            weight_decay=s.weight_decay,
            nesterov=s.momentum > 0,
        )

    def validate(
        self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> tuple[float, float]:
        """Clean and PGD accuracy on a validation batch (the model in eval mode)."""
        model.eval()
        clean = accuracy(model, x, y)
        if not self.settings.objective.adversarial and self.settings.selection != "robust":
            robust = float("nan")
        else:
            pgd = PGD(steps=self.settings.val_pgd_steps, restarts=1)
            res = pgd(model, x, y, self.threat, generator=generator)
            # an empty validation set scores 0.0, as accuracy() does (the mean of nothing is NaN)
            robust = float((~res.success).float().mean()) if res.success.numel() else 0.0
        return clean, robust

    def fit(
        self, model: nn.Module, x_train: Tensor, y_train: Tensor, x_val: Tensor, y_val: Tensor
    ) -> TrainResult:
        """Train ``model`` in place and return it with the best checkpoint loaded."""
        s = self.settings
        gen = torch.Generator().manual_seed(self.seed)
        val_gen_seed = self.seed + 1
        opt = self._optimizer(model)
        n = x_train.shape[0]
        batches = max(1, (n + s.batch_size - 1) // s.batch_size)
        total_steps = s.epochs * batches
        final_eps = self.threat.eps if s.train_eps is None else s.train_eps
        xv, yv = x_val[: s.val_examples], y_val[: s.val_examples]
        history: list[dict[str, float]] = []
        best_score, best_epoch = -1.0, 0
        best_state: dict[str, Tensor] | None = None
        start = time.perf_counter()
        step = 0
        for epoch in range(1, s.epochs + 1):
            t0 = time.perf_counter()
            model.train()
            perm = torch.randperm(n, generator=gen)
            loss_sum, correct, seen = 0.0, 0, 0
            lr = s.lr
            for b in range(batches):
                idx = perm[b * s.batch_size : (b + 1) * s.batch_size]
                xb, yb = x_train[idx], y_train[idx]
                progress = step / total_steps
                lr = learning_rate(s.schedule, s.lr, progress)
                for group in opt.param_groups:
                    group["lr"] = lr
                eps = ramped_eps(final_eps, (epoch - 1) + b / batches, s.eps_ramp_epochs)
                threat = self.threat.with_eps(
                    min(eps, self.threat.bounds[1] - self.threat.bounds[0])
                )
                loss, logits = objective_loss(s.objective, model, xb, yb, threat, generator=gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                if s.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
                opt.step()
                step += 1
                loss_sum += float(loss.detach()) * yb.shape[0]
                correct += int((logits.detach().argmax(1) == yb).sum())
                seen += yb.shape[0]
                if self.progress is not None:
                    self.progress(
                        {
                            "epoch": epoch,
                            "epochs": s.epochs,
                            "batch": b + 1,
                            "batches": batches,
                            "loss": loss_sum / seen,
                            "accuracy": correct / seen,
                            "eps": eps,
                        }
                    )
            val_clean, val_robust = self.validate(
                model, xv, yv, torch.Generator().manual_seed(val_gen_seed)
            )
            record = {
                "epoch": epoch,
                "lr": lr,
                "train_eps": eps,
                "train_loss": loss_sum / max(seen, 1),
                "train_accuracy": correct / max(seen, 1),
                "val_clean_accuracy": val_clean,
                "val_robust_accuracy": val_robust,
                "seconds": time.perf_counter() - t0,
            }
            history.append(record)
            sel = s.selection
            score = float(epoch) if sel == "last" else val_clean if sel == "clean" else val_robust
            # a robust score only counts once training reached the full eps
            eligible = sel != "robust" or epoch >= s.eps_ramp_epochs
            if eligible and score >= best_score:
                best_score, best_epoch = score, epoch
                best_state = copy.deepcopy(model.state_dict())
            if self.progress is not None:
                self.progress({**record, "epochs": s.epochs, "end_of_epoch": True})
        if best_state is not None:
            model.load_state_dict(best_state)
        model.zero_grad(set_to_none=True)  # hand back a clean model: no stale parameter gradients
        model.eval()
        return TrainResult(
            model=model,
            history=history,
            best_epoch=best_epoch,
            seconds=time.perf_counter() - start,
            selection=s.selection,
        )
