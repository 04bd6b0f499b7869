"""The Trainer: mini-batch training with a chosen objective, validated every epoch.

Every epoch ends with clean and PGD validation; the checkpoint kept is the best by robust
validation accuracy for adversarial objectives (clean accuracy otherwise), the "early stopping"
of Rice, Wong and Kolter 2020 ("Overfitting in adversarially robust deep learning").
``patience`` stops the run once that score has not improved for so many epochs.

Curricula: a linear eps ramp (``eps_ramp_epochs``) and an attack-step ramp (``step_phases``).
Adversarial weight perturbation (``awp``) wraps any objective. Single-step objectives are
watched for catastrophic overfitting (PGD validation accuracy collapsing while FGSM validation
accuracy climbs): on a collapse the run rolls back to the last good epoch's weights, stops and
records a warning in :attr:`TrainResult.warnings`. With ``calibrate`` a temperature is fitted
on clean plus PGD validation examples after training (:mod:`bastion.training.calibration`).

Randomness (shuffling, attack starts, noise, augmentations) comes from one seeded
:class:`torch.Generator`; validation attacks use a second one re-seeded every epoch. A run is
reproducible from its seed, and with ``checkpoint_dir`` it writes checkpoints (model,
optimizer, generator state, epoch and batch position, the current epoch's batch order and
running sums, best-so-far and last-good states) from which ``fit(..., resume_from=dir)``
continues to bit-identical weights.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bastion.attacks.base import predict
from bastion.attacks.engine import gradient_attack
from bastion.attacks.gradient import PGD
from bastion.errors import ConfigError
from bastion.threat import ThreatModel
from bastion.training.awp import AWPSettings, perturbed, weight_perturbation
from bastion.training.calibration import calibrate
from bastion.training.checkpoint import load_checkpoint, save_checkpoint
from bastion.training.distributed import DataParallel
from bastion.training.objectives import ITERATIVE, SINGLE_STEP, ObjectiveSettings, prepare_loss
from bastion.training.overfitting import catastrophic_overfitting
from bastion.training.schedules import (
    SCHEDULES,
    attack_steps,
    check_phases,
    learning_rate,
    ramped_eps,
)

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
        train_eps: eps used for training, default the threat's eps (may not exceed it).
        eps_ramp_epochs: linear eps curriculum from 0 to ``train_eps`` over these epochs.
        step_phases: attack-step curriculum ``((first_epoch, steps), ...)`` for iterative
            objectives (see :func:`attack_steps`).
        val_examples: validation examples scored each epoch; val_pgd_steps: PGD steps there.
        select: which checkpoint to keep: ``"robust"`` (best PGD validation accuracy, the
            default for adversarial objectives), ``"clean"`` or ``"last"``.
        grad_clip: clip the gradient norm of the parameters (0 disables).
        patience: stop after this many epochs without a better selection score (0: never).
        overfit_check: watch single-step objectives for catastrophic overfitting.
        overfit_drop: the fall of PGD validation accuracy that counts as a collapse.
        calibrate: fit a temperature on clean plus adversarial validation data after training.
        awp: adversarial weight perturbation, or None.
        checkpoint_every: with a checkpoint directory, also write a checkpoint every this many
            batches (0: only at the end of each epoch).
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
    step_phases: tuple[tuple[int, int], ...] = ()
    val_examples: int = 1000
    val_pgd_steps: int = 10
    select: str | None = None
    grad_clip: float = 0.0
    patience: int = 0
    overfit_check: bool = True
    overfit_drop: float = 0.2
    calibrate: bool = False
    awp: AWPSettings | None = None
    checkpoint_every: int = 0

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
            ("patience", self.patience >= 0, "an integer >= 0"),
            ("overfit_drop", 0 < self.overfit_drop <= 1, "a number in (0, 1]"),
            ("checkpoint_every", self.checkpoint_every >= 0, "an integer >= 0"),
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
        if self.step_phases:
            if self.objective.name not in ITERATIVE:
                raise ConfigError(
                    f"training.step_phases: objective {self.objective.name!r} takes no attack "
                    f"steps; expected no phases, or one of {', '.join(ITERATIVE)}"
                )
            check_phases(self.step_phases, self.epochs)
            for _, k in self.step_phases:  # each phase's steps must suit the step size
                dataclasses.replace(self.objective, steps=k)
        if self.awp is not None and self.awp.warmup_epochs >= self.epochs:
            raise ConfigError(
                f"training.awp.warmup_epochs: {self.awp.warmup_epochs} leaves no epoch with AWP; "
                f"expected fewer than epochs={self.epochs}"
            )
        if self.objective.teacher_epochs is not None and self.objective.name != "distill":
            raise ConfigError(
                "objective.teacher_epochs: only the distill objective trains a teacher; got "
                f"{self.objective.teacher_epochs} for {self.objective.name!r}"
            )

    @property
    def selection(self) -> str:
        if self.select is not None:
            return self.select
        return "robust" if self.objective.adversarial else "clean"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_against_threat(settings: TrainSettings, threat: ThreatModel) -> None:
    """Settings that contradict the threat model: a ``train_eps`` above the threat's eps (the
    attacker is never that strong, so the extra budget only costs clean accuracy), a linf
    ``train_eps`` wider than the input range, and mixed-threat budgets (see
    :meth:`ObjectiveSettings.check_threat`). Raises :class:`ConfigError` naming the field."""
    te = settings.train_eps
    if te is not None and te > threat.eps:
        raise ConfigError(
            f"training.train_eps: {te} exceeds the threat eps {threat.eps}; expected "
            f"train_eps <= {threat.eps}"
        )
    settings.objective.check_threat(threat, train_eps=te)


@dataclass
class TrainResult:
    """The trained model (best checkpoint loaded), its per-epoch history and timing.

    Attributes:
        warnings: human-readable warnings (catastrophic overfitting and its rollback).
        temperature: the fitted calibration temperature (``calibrate``), else None; apply it
            as ``logits / temperature``.
        calibration: ECE and NLL before and after temperature scaling, or None.
        stop_reason: why training ended before ``epochs`` (``"patience"``,
            ``"catastrophic-overfitting"``), else None.
    """

    model: nn.Module
    history: list[dict[str, float]]
    best_epoch: int
    seconds: float
    selection: str
    warnings: list[str] = field(default_factory=list)
    temperature: float | None = None
    calibration: dict[str, Any] | None = None
    stop_reason: str | None = None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seconds": round(self.seconds, 3),
            "epochs": len(self.history),
            "best_epoch": self.best_epoch,
            "selection": f"val_{self.selection}_accuracy" if self.selection != "last" else "last",
            "history": self.history,
            "warnings": list(self.warnings),
        }
        if self.stop_reason is not None:
            out["stop_reason"] = self.stop_reason
        if self.temperature is not None:
            out["temperature"] = self.temperature
            out["calibration"] = self.calibration
        return out


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Fraction of ``x`` classified as ``y``."""
    if x.shape[0] == 0:
        return 0.0
    return float((predict(model, x) == y).float().mean())


def _copy_state(obj: nn.Module | torch.optim.Optimizer) -> dict[str, Any]:
    return copy.deepcopy(obj.state_dict())


@dataclass
class _Progress:
    """Where a run stands; everything here goes into a checkpoint."""

    epoch: int = 1
    batch: int = 0
    step: int = 0
    perm: Tensor | None = None
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_score: float = -1.0
    best_epoch: int = 0
    best_state: dict[str, Any] | None = None
    good: dict[str, Any] | None = None  # last good epoch: model, optimizer, figures
    stale: int = 0
    warnings: list[str] = field(default_factory=list)
    stop_reason: str | None = None
    elapsed: float = 0.0


@dataclass
class _Fit:
    """What one call of ``Trainer._fit`` works on: the model, its optimizer, the shuffling
    and attack generator, where the run stands, and the training tensors ``(N, ...)``/``(N,)``."""

    model: nn.Module
    opt: torch.optim.Optimizer
    gen: torch.Generator
    run: _Progress
    teacher: nn.Module | None
    checkpoint_dir: str | os.PathLike[str] | None
    start: float
    x: Tensor
    y: Tensor
    batches: int
    final_eps: float


class Trainer:
    """Train a model on tensors ``(N, ...)``/``(N,)`` under a threat model.

    ``progress`` (if given) is called after every batch with a dict holding ``epoch``,
    ``batch``, ``batches``, ``loss``, ``accuracy`` and, at the end of each epoch, the validation
    figures (key ``"end_of_epoch": True``). An exception raised from it stops training; with a
    checkpoint directory, the run can be resumed from the last checkpoint.
    """

    def __init__(
        self,
        settings: TrainSettings,
        threat: ThreatModel,
        *,
        seed: int = 0,
        progress: ProgressFn | None = None,
        data_parallel: DataParallel | None = None,
    ):
        check_against_threat(settings, threat)
        self.settings = settings
        self.threat = threat
        self.seed = seed
        self.progress = progress
        self.data_parallel = data_parallel
        if data_parallel is not None:
            data_parallel.check_batch(settings.batch_size)

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

    def _watch_overfitting(self) -> bool:
        s = self.settings
        return s.overfit_check and s.objective.name in SINGLE_STEP

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

    def fgsm_accuracy(self, model: nn.Module, x: Tensor, y: Tensor) -> float:
        """Accuracy under one FGSM step of size eps from the clean point (the model in eval
        mode); the other half of the catastrophic-overfitting signature."""
        if x.shape[0] == 0:
            return 0.0
        model.eval()
        xa, _ = gradient_attack(
            model, x, y, self.threat, steps=1, step_size=self.threat.eps, random_start=False
        )
        return accuracy(model, xa, y)

    # -- training ------------------------------------------------------------------------------
    def fit(
        self,
        model: nn.Module,
        x_train: Tensor,
        y_train: Tensor,
        x_val: Tensor,
        y_val: Tensor,
        *,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        resume_from: str | os.PathLike[str] | None = None,
    ) -> TrainResult:
        """Train ``model`` in place and return it with the best checkpoint loaded.

        Args:
            checkpoint_dir: write checkpoints here (each epoch, and every
                ``checkpoint_every`` batches), atomically.
            resume_from: a checkpoint directory to continue from; the run then ends with the
                same weights as an uninterrupted run with the same seed, settings and data.
                (Give the same directory as ``checkpoint_dir`` to keep checkpointing.)

        For ``distill`` a teacher (a copy of ``model``'s initial weights) is trained first, at
        temperature T with its own generator (seed + 1 000 003); its weights travel in the
        student's checkpoints.
        """
        s = self.settings
        start = time.perf_counter()
        saved = load_checkpoint(resume_from) if resume_from is not None else None
        teacher: nn.Module | None = None
        if s.objective.name == "distill":
            teacher = copy.deepcopy(model)
            if saved is not None and saved.get("teacher") is not None:
                teacher.load_state_dict(saved["teacher"])
            else:
                teacher_settings = dataclasses.replace(
                    s,
                    epochs=s.objective.teacher_epochs or s.epochs,
                    objective=dataclasses.replace(s.objective, teacher_epochs=None),
                    select="clean",
                    calibrate=False,
                    patience=0,
                    awp=None,
                    checkpoint_every=0,
                    eps_ramp_epochs=0.0,
                )
                Trainer(teacher_settings, self.threat, seed=self.seed + 1_000_003)._fit(
                    teacher, x_train, y_train, x_val, y_val, None, None, None, start
                )
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        return self._fit(
            model, x_train, y_train, x_val, y_val, teacher, checkpoint_dir, saved, start
        )

    def _checkpoint(
        self,
        directory: str | os.PathLike[str],
        model: nn.Module,
        opt: torch.optim.Optimizer,
        gen: torch.Generator,
        run: _Progress,
        teacher: nn.Module | None,
        start: float,
    ) -> None:
        totals: dict[str, float] = {}
        if self.data_parallel is not None:  # the epoch's sums so far, over every process
            sums = self.data_parallel.gather((run.loss_sum, float(run.correct), float(run.seen)))
            if not self.data_parallel.is_main:
                return  # rank 0 writes the (identical) state for everyone
            totals = {
                "loss_sum": sum(r[0] for r in sums),
                "correct": int(sum(r[1] for r in sums)),
                "seen": int(sum(r[2] for r in sums)),
            }
        state = {
            "seed": self.seed,
            "settings": repr(self.settings),
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "generator": gen.get_state(),
            "teacher": teacher.state_dict() if teacher is not None else None,
            "run": {
                **{f.name: getattr(run, f.name) for f in dataclasses.fields(run)},
                "elapsed": run.elapsed + time.perf_counter() - start,
                **totals,
            },
        }
        save_checkpoint(directory, state)

    def _fit(
        self,
        model: nn.Module,
        x_train: Tensor,
        y_train: Tensor,
        x_val: Tensor,
        y_val: Tensor,
        teacher: nn.Module | None,
        checkpoint_dir: str | os.PathLike[str] | None,
        saved: dict[str, Any] | None,
        start: float,
    ) -> TrainResult:
        s = self.settings
        gen = torch.Generator().manual_seed(self.seed)
        val_gen_seed = self.seed + 1
        opt = self._optimizer(model)
        run = self._resume(saved, model, opt, gen) if saved is not None else _Progress()
        n = x_train.shape[0]
        batches = max(1, (n + s.batch_size - 1) // s.batch_size)
        fit = _Fit(
            model=model,
            opt=opt,
            gen=gen,
            run=run,
            teacher=teacher,
            checkpoint_dir=checkpoint_dir,
            start=start,
            x=x_train,
            y=y_train,
            batches=batches,
            final_eps=self.threat.eps if s.train_eps is None else s.train_eps,
        )
        xv, yv = x_val[: s.val_examples], y_val[: s.val_examples]
        eps = ramped_eps(fit.final_eps, run.epoch - 1 + run.batch / batches, s.eps_ramp_epochs)
        lr = s.lr
        while run.epoch <= s.epochs and run.stop_reason is None:
            t0 = time.perf_counter()
            lr, eps, steps = self._epoch(fit, lr, eps)
            record = self._end_epoch(model, opt, xv, yv, run, val_gen_seed, t0)
            record.update(lr=lr, train_eps=eps, attack_steps=float(steps))
            run.epoch += 1
            run.batch = 0
            run.perm = None
            if checkpoint_dir is not None:
                self._checkpoint(checkpoint_dir, model, opt, gen, run, teacher, start)
            if self.progress is not None:
                self.progress({**record, "epochs": s.epochs, "end_of_epoch": True})
        return self._finish(model, xv, yv, run, val_gen_seed, start)

    def _resume(
        self,
        saved: dict[str, Any],
        model: nn.Module,
        opt: torch.optim.Optimizer,
        gen: torch.Generator,
    ) -> _Progress:
        """Load a checkpoint's model, optimizer and generator state and return where its run
        stood; :class:`ConfigError` if it was written with other settings or another seed."""
        if saved.get("settings") != repr(self.settings) or saved.get("seed") != self.seed:
            raise ConfigError(
                "resume_from: the checkpoint was written with other training settings or "
                "another seed; expected the same settings and seed as the interrupted run"
            )
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        gen.set_state(saved["generator"])
        run = _Progress(**saved["run"])
        if self.data_parallel is not None and not self.data_parallel.is_main:
            run.loss_sum, run.correct, run.seen = 0.0, 0, 0  # rank 0 carries the totals
        return run

    def _epoch(self, fit: _Fit, lr: float, eps: float) -> tuple[float, float, int]:
        """Train the batches of epoch ``fit.run.epoch`` left to run (all of them, unless
        resumed mid-epoch); returns the last batch's learning rate and training eps, and the
        attack steps of this epoch."""
        s, run, model, opt = self.settings, fit.run, fit.model, fit.opt
        epoch = run.epoch
        model.train()
        if run.batch == 0 or run.perm is None:
            run.perm = torch.randperm(fit.x.shape[0], generator=fit.gen)
            run.loss_sum, run.correct, run.seen = 0.0, 0, 0
        objective = s.objective
        steps = attack_steps(s.step_phases, epoch, objective.steps)
        if steps != objective.steps:
            objective = dataclasses.replace(objective, steps=steps)
        awp_on = s.awp is not None and epoch > s.awp.warmup_epochs
        dp = self.data_parallel
        attack_gen = fit.gen if dp is None else dp.attack_generator(self.seed, epoch)
        width = self.threat.bounds[1] - self.threat.bounds[0]
        for b in range(run.batch, fit.batches):
            idx = run.perm[b * s.batch_size : (b + 1) * s.batch_size]
            global_n = int(idx.numel())
            if dp is not None:
                idx = dp.shard(idx)
            xb, yb = fit.x[idx], fit.y[idx]
            lr = learning_rate(s.schedule, s.lr, run.step / (s.epochs * fit.batches))
            for group in opt.param_groups:
                group["lr"] = lr
            eps = ramped_eps(fit.final_eps, (epoch - 1) + b / fit.batches, s.eps_ramp_epochs)
            threat = self.threat.with_eps(min(eps, width) if self.threat.norm == "linf" else eps)
            eps_fraction = eps / fit.final_eps if fit.final_eps > 0 else 1.0
            loss, logits = self._backward(
                fit, objective, xb, yb, threat, attack_gen, eps_fraction, awp_on
            )
            if dp is not None:
                dp.average_gradients(model, int(yb.numel()), global_n)
            if s.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
            opt.step()
            self._after_batch(fit, b, loss, logits, yb, eps)
        return lr, eps, steps

    def _backward(
        self,
        fit: _Fit,
        objective: ObjectiveSettings,
        xb: Tensor,
        yb: Tensor,
        threat: ThreatModel,
        attack_gen: torch.Generator,
        eps_fraction: float,
        awp_on: bool,
    ) -> tuple[Tensor, Tensor]:
        """The objective's loss on one batch, its gradients accumulated into the zeroed
        model (at the adversarial weight perturbation when AWP is on); returns the loss and
        the logits ``(B, C)`` (``(0, 1)`` for an empty shard)."""
        opt, model, awp = fit.opt, fit.model, self.settings.awp
        if yb.numel() == 0:  # a last batch smaller than the number of processes
            opt.zero_grad(set_to_none=True)
            return torch.zeros(()), torch.zeros(0, 1)
        loss_fn = prepare_loss(
            objective,
            model,
            xb,
            yb,
            threat,
            generator=attack_gen,
            eps_fraction=eps_fraction,
            teacher=fit.teacher,
        )
        opt.zero_grad(set_to_none=True)
        if awp_on and awp is not None:
            pairs = weight_perturbation(model, loss_fn, awp.gamma)
            with perturbed(pairs):
                loss, logits = loss_fn(model)
                loss.backward()  # type: ignore[no-untyped-call]
        else:
            loss, logits = loss_fn(model)
            loss.backward()  # type: ignore[no-untyped-call]
        return loss, logits

    def _after_batch(
        self, fit: _Fit, b: int, loss: Tensor, logits: Tensor, yb: Tensor, eps: float
    ) -> None:
        """Count batch ``b`` into the run's totals, checkpoint every ``checkpoint_every``
        steps (not at an epoch's last batch: the epoch's end does) and report progress."""
        s, run = self.settings, fit.run
        run.step += 1
        run.batch = b + 1
        run.loss_sum += float(loss.detach()) * yb.shape[0]
        run.correct += int((logits.detach().argmax(1) == yb).sum())
        run.seen += yb.shape[0]
        if (
            fit.checkpoint_dir is not None
            and s.checkpoint_every > 0
            and run.step % s.checkpoint_every == 0
            and run.batch < fit.batches
        ):
            self._checkpoint(
                fit.checkpoint_dir, fit.model, fit.opt, fit.gen, run, fit.teacher, fit.start
            )
        if self.progress is not None:
            self.progress(
                {
                    "epoch": run.epoch,
                    "epochs": s.epochs,
                    "batch": b + 1,
                    "batches": fit.batches,
                    "loss": run.loss_sum / run.seen,
                    "accuracy": run.correct / run.seen,
                    "eps": eps,
                }
            )

    def _end_epoch(
        self,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        xv: Tensor,
        yv: Tensor,
        run: _Progress,
        val_gen_seed: int,
        t0: float,
    ) -> dict[str, float]:
        """Validate, select, watch for catastrophic overfitting and for patience."""
        s = self.settings
        epoch = run.epoch
        val_clean, val_robust = self.validate(
            model, xv, yv, torch.Generator().manual_seed(val_gen_seed)
        )
        sums = [(run.loss_sum, float(run.correct), float(run.seen))]
        if self.data_parallel is not None:  # every process's share, in rank order
            sums = [(r[0], r[1], r[2]) for r in self.data_parallel.gather(sums[0])]
        seen = sum(r[2] for r in sums)
        record: dict[str, float] = {
            "epoch": epoch,
            "lr": 0.0,
            "train_eps": 0.0,
            "attack_steps": 0.0,
            "train_loss": sum(r[0] for r in sums) / max(seen, 1),
            "train_accuracy": sum(r[1] for r in sums) / max(seen, 1),
            "val_clean_accuracy": val_clean,
            "val_robust_accuracy": val_robust,
        }
        if self.data_parallel is not None:
            for rank, (loss_sum, _, n) in enumerate(sums):
                record[f"train_loss_rank{rank}"] = loss_sum / max(n, 1)
        if s.objective.name in SINGLE_STEP:  # recorded for single-step runs, checked if asked
            self._watch_fgsm(model, opt, xv, yv, run, val_robust, record)
        record["seconds"] = time.perf_counter() - t0
        run.history.append(record)
        if run.stop_reason is None:
            self._select(model, run, val_clean, val_robust)
        return record

    def _watch_fgsm(
        self,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        xv: Tensor,
        yv: Tensor,
        run: _Progress,
        val_robust: float,
        record: dict[str, float],
    ) -> None:
        """Record the FGSM validation accuracy; when asked to watch, on catastrophic
        overfitting (Wong et al. 2020) roll back to the last good epoch and stop, else keep
        this epoch as the last good one."""
        fgsm = self.fgsm_accuracy(model, xv, yv)
        record["val_fgsm_accuracy"] = fgsm
        good, epoch = run.good, run.epoch
        if (
            self._watch_overfitting()
            and good is not None
            and catastrophic_overfitting(
                good_robust=good["robust"],
                good_fgsm=good["fgsm"],
                robust=val_robust,
                fgsm=fgsm,
                drop=self.settings.overfit_drop,
            )
        ):
            run.warnings.append(
                f"catastrophic overfitting at epoch {epoch}: PGD validation accuracy fell "
                f"from {good['robust']:.1%} (epoch {good['epoch']}) to {val_robust:.1%} while "
                f"FGSM validation accuracy rose to {fgsm:.1%}; rolled back to epoch "
                f"{good['epoch']} and stopped (use n-fgsm, grad_align or pgd-at)"
            )
            model.load_state_dict(good["model"])
            opt.load_state_dict(good["optimizer"])
            run.stop_reason = "catastrophic-overfitting"
            record["rolled_back_to"] = float(good["epoch"])
        else:
            run.good = {
                "epoch": epoch,
                "robust": val_robust,
                "fgsm": fgsm,
                "model": _copy_state(model),
                "optimizer": _copy_state(opt),
            }

    def _select(
        self, model: nn.Module, run: _Progress, val_clean: float, val_robust: float
    ) -> None:
        """Keep this epoch's weights if its selection score is the best so far (a robust
        score only once training reached the full eps); stop for patience."""
        s = self.settings
        epoch = run.epoch
        sel = s.selection
        score = float(epoch) if sel == "last" else val_clean if sel == "clean" else val_robust
        # a robust score only counts once training reached the full eps
        eligible = sel != "robust" or epoch >= s.eps_ramp_epochs
        if eligible and score >= run.best_score:
            improved = score > run.best_score
            run.best_score, run.best_epoch = score, epoch
            run.best_state = _copy_state(model)
            run.stale = 0 if improved or sel == "last" else run.stale + 1
        elif eligible:
            run.stale += 1
        if s.patience > 0 and run.stale >= s.patience and epoch < s.epochs:
            run.stop_reason = "patience"

    def _finish(
        self,
        model: nn.Module,
        xv: Tensor,
        yv: Tensor,
        run: _Progress,
        val_gen_seed: int,
        start: float,
    ) -> TrainResult:
        s = self.settings
        if run.best_state is not None:  # after a rollback, never an epoch past the last good one
            model.load_state_dict(run.best_state)
        elif run.good is not None and run.stop_reason == "catastrophic-overfitting":
            run.best_epoch = int(run.good["epoch"])  # no eligible epoch: the rollback's weights
        model.zero_grad(set_to_none=True)  # hand back a clean model: no stale parameter gradients
        model.eval()
        temperature, report = None, None
        if s.calibrate and xv.shape[0] > 0:
            pgd = PGD(steps=s.val_pgd_steps, restarts=1)
            res = pgd(
                model, xv, yv, self.threat, generator=torch.Generator().manual_seed(val_gen_seed)
            )
            with torch.inference_mode():
                cal = calibrate(model(xv), yv, model(res.x_adv), yv)
            temperature, report = cal.temperature, cal.to_dict()
        seconds = run.elapsed + time.perf_counter() - start
        if not math.isfinite(seconds):
            seconds = 0.0
        return TrainResult(
            model=model,
            history=run.history,
            best_epoch=run.best_epoch,
            seconds=seconds,
            selection=s.selection,
            warnings=list(run.warnings),
            temperature=temperature,
            calibration=report,
            stop_reason=run.stop_reason,
        )
