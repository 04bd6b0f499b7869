"""Adversarial training: objectives, curricula, weight perturbation, calibration, the Trainer."""

from bastion.training.augmix import AugMixSettings, augmix, jensen_shannon
from bastion.training.awp import AWPSettings
from bastion.training.calibration import (
    CalibrationReport,
    TemperatureScaled,
    apply_temperature,
    calibrate,
    expected_calibration_error,
    fit_temperature,
)
from bastion.training.checkpoint import load_checkpoint, save_checkpoint
from bastion.training.objectives import (
    OBJECTIVES,
    MixedComponent,
    ObjectiveSettings,
    objective_loss,
    prepare_loss,
)
from bastion.training.overfitting import catastrophic_overfitting
from bastion.training.schedules import SCHEDULES, attack_steps, learning_rate, ramped_eps
from bastion.training.trainer import (
    Trainer,
    TrainResult,
    TrainSettings,
    accuracy,
    check_against_threat,
)

__all__ = [
    "OBJECTIVES",
    "SCHEDULES",
    "AWPSettings",
    "AugMixSettings",
    "CalibrationReport",
    "MixedComponent",
    "ObjectiveSettings",
    "TemperatureScaled",
    "TrainResult",
    "TrainSettings",
    "Trainer",
    "accuracy",
    "apply_temperature",
    "attack_steps",
    "augmix",
    "calibrate",
    "catastrophic_overfitting",
    "check_against_threat",
    "expected_calibration_error",
    "fit_temperature",
    "jensen_shannon",
    "learning_rate",
    "load_checkpoint",
    "objective_loss",
    "prepare_loss",
    "ramped_eps",
    "save_checkpoint",
]
