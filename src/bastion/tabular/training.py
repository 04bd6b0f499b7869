"""Constrained adversarial training of tabular models, through the shared Trainer.

The Trainer's ``pgd-at`` objective (Madry et al. 2018) crafts its examples with the shared
gradient engine, which only uses the threat model's ``random_init``, ``steepest_step`` and
``project``. Given a :class:`TabularThreat` those are cost-weighted, masked to mutable features
and project onto the schema's relaxed constraint set, so the inner maximisation is constrained
PGD on the relaxation (one-hot groups on the simplex, integers continuous): the training
counterpart of :class:`~bastion.tabular.whitebox.ConstrainedPGD`, as in the constrained
adversarial training of Simonetto et al. 2022. No new objective is needed; this module only
packages the settings and the model construction.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bastion.models import BastionModel, ModelSpec, build_model
from bastion.tabular.threat import TabularThreat
from bastion.training.objectives import ObjectiveSettings
from bastion.training.trainer import Trainer, TrainResult, TrainSettings


def tabular_train_settings(
    *,
    adversarial: bool,
    epochs: int = 30,
    batch_size: int = 128,
    lr: float = 3e-3,
    attack_steps: int = 7,
    val_examples: int = 500,
) -> TrainSettings:
    """Trainer settings for a tabular MLP: Adam, cosine schedule, no weight decay;
    ``adversarial`` selects constrained PGD-AT (``attack_steps`` steps of ``2.5 / steps``
    eps, random start, checkpoint chosen by robust validation accuracy) over standard
    training (checkpoint chosen by clean validation accuracy)."""
    objective = ObjectiveSettings(
        name="pgd-at" if adversarial else "standard", steps=attack_steps, random_start=True
    )
    return TrainSettings(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        schedule="cosine",
        optimizer="adam",
        weight_decay=0.0,
        objective=objective,
        val_examples=val_examples,
        val_pgd_steps=attack_steps,
    )


def build_tabular_mlp(
    num_features: int,
    num_classes: int,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    hidden: tuple[int, ...] = (64, 64),
    seed: int = 0,
) -> BastionModel:
    """A fresh ``tabular-mlp`` whose initial weights depend on ``seed`` only (drawn inside
    :func:`torch.random.fork_rng`, so the caller's global generator is untouched)."""
    spec = ModelSpec(
        architecture="tabular-mlp",
        input_shape=(num_features,),
        num_classes=num_classes,
        mean=mean,
        std=std,
        options={"hidden": list(hidden)},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(spec)


def train_tabular_mlp(
    model: BastionModel,
    threat: TabularThreat,
    settings: TrainSettings,
    data: tuple[Tensor, Tensor, Tensor, Tensor],
    *,
    seed: int = 0,
) -> TrainResult:
    """Train ``model`` in place with :class:`~bastion.training.trainer.Trainer` under the
    constrained ``threat``; ``data`` is ``(x_train, y_train, x_val, y_val)`` in encoded unit
    space ``(N, D)``. Returns the Trainer's result (best checkpoint loaded, model in eval
    mode)."""
    x_train, y_train, x_val, y_val = data
    result = Trainer(settings, threat, seed=seed).fit(model, x_train, y_train, x_val, y_val)
    result.model.eval()
    return result
