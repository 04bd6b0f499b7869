"""Evasion attacks on one shared gradient engine, and their conformance suite."""

from bastion.attacks.base import Attack, AttackResult, predict, validate_batch
from bastion.attacks.conformance import AttackConformanceError, check_attack
from bastion.attacks.engine import LOSSES, ce_loss, cw_margin_loss, gradient_attack, input_gradient
from bastion.attacks.gradient import FGSM, PGD
from bastion.attacks.registry import ATTACKS, attack_params, build_attack

__all__ = [
    "ATTACKS",
    "FGSM",
    "LOSSES",
    "PGD",
    "Attack",
    "AttackConformanceError",
    "AttackResult",
    "attack_params",
    "build_attack",
    "ce_loss",
    "check_attack",
    "cw_margin_loss",
    "gradient_attack",
    "input_gradient",
    "predict",
    "validate_batch",
]
