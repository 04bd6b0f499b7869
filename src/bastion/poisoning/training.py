"""Train a fresh classifier on (possibly poisoned) tensors, reproducibly from a seed.

The scans and the benchmark need models trained on a given training set: the model whose
latent features a data scan reads, the victim of a backdoor, and the model retrained on the
examples a scan kept. :func:`train_classifier` builds one from the zoo with its weights
initialised under :func:`torch.random.fork_rng` seeded with ``seed`` (the caller's global
generator is untouched) and trains it with the standard objective through the
:class:`~bastion.training.trainer.Trainer` (whose shuffling is seeded from ``seed`` too).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from bastion.models import BastionModel, ModelSpec, build_model
from bastion.threat import ThreatModel
from bastion.training.objectives import ObjectiveSettings
from bastion.training.trainer import Trainer, TrainSettings


def train_classifier(
    x: Tensor,
    y: Tensor,
    x_val: Tensor,
    y_val: Tensor,
    *,
    architecture: str,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 0.05,
    seed: int = 0,
) -> BastionModel:
    """A ``architecture`` model (see :mod:`bastion.models.zoo`) trained on ``x`` (``(N, C, H,
    W)``) and ``y`` (``(N,)``) with the standard cross-entropy objective, SGD and a one-cycle
    learning rate; the checkpoint kept is the last one. Returned in eval mode."""
    spec = ModelSpec(
        architecture=architecture,
        input_shape=tuple(int(v) for v in x.shape[1:]),
        num_classes=num_classes,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(spec)
    settings = TrainSettings(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        objective=ObjectiveSettings(name="standard"),
        select="last",
        val_examples=max(1, min(1000, len(y_val))),
    )
    Trainer(settings, ThreatModel("linf", 0.1), seed=seed).fit(model, x, y, x_val, y_val)
    return model.eval()
