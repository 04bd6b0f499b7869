"""Adversarial training: objectives, schedules and the Trainer."""

from bastion.training.objectives import OBJECTIVES, ObjectiveSettings, objective_loss
from bastion.training.schedules import SCHEDULES, learning_rate, ramped_eps
from bastion.training.trainer import Trainer, TrainResult, TrainSettings, accuracy

__all__ = [
    "OBJECTIVES",
    "SCHEDULES",
    "ObjectiveSettings",
    "TrainResult",
    "TrainSettings",
    "Trainer",
    "accuracy",
    "learning_rate",
    "objective_loss",
    "ramped_eps",
]
