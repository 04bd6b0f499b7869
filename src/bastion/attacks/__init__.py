"""Evasion attacks on one shared contract (:class:`Attack`), their registry (each attack enters
it with :func:`register`), the worst-case cascade, black-box target wrappers and the conformance
suite every attack passes. Importing this package registers every built-in attack."""

from bastion.attacks.adaptive import BPDAWrapper, EOTModel
from bastion.attacks.apgd import APGD, APGDTargeted
from bastion.attacks.base import (
    Attack,
    AttackResult,
    AttackShare,
    Crafted,
    MinimumNormResult,
    Opening,
    predict,
    validate_batch,
)
from bastion.attacks.cascade import PRESETS, Cascade
from bastion.attacks.conformance import AttackConformanceError, check_attack, check_minimum_norm
from bastion.attacks.cw import CarliniWagnerL2
from bastion.attacks.deepfool import DeepFool
from bastion.attacks.engine import LOSSES, ce_loss, cw_margin_loss, gradient_attack, input_gradient
from bastion.attacks.fab import FAB, FABTargeted
from bastion.attacks.gradient import FGSM, PGD
from bastion.attacks.hopskipjump import HopSkipJump
from bastion.attacks.l1 import SparseL1Descent
from bastion.attacks.patch import AdversarialPatch, PatchAttack, apply_patch, patch_success_rate
from bastion.attacks.registry import (
    ATTACKS,
    attack_knowledge,
    attack_params,
    build_attack,
    register,
    unregister,
)
from bastion.attacks.square import Square
from bastion.attacks.targets import (
    HTTPTarget,
    LabelTarget,
    OnnxTarget,
    ScoreTarget,
    SklearnTarget,
)
from bastion.attacks.transfer import MIFGSM, TransferAttack
from bastion.attacks.universal import UniversalAttack, UniversalPerturbation, fooling_rate

__all__ = [
    "APGD",
    "ATTACKS",
    "FAB",
    "FGSM",
    "LOSSES",
    "MIFGSM",
    "PGD",
    "PRESETS",
    "APGDTargeted",
    "AdversarialPatch",
    "Attack",
    "AttackConformanceError",
    "AttackResult",
    "AttackShare",
    "BPDAWrapper",
    "CarliniWagnerL2",
    "Cascade",
    "Crafted",
    "DeepFool",
    "EOTModel",
    "FABTargeted",
    "HTTPTarget",
    "HopSkipJump",
    "LabelTarget",
    "MinimumNormResult",
    "OnnxTarget",
    "Opening",
    "PatchAttack",
    "ScoreTarget",
    "SklearnTarget",
    "SparseL1Descent",
    "Square",
    "TransferAttack",
    "UniversalAttack",
    "UniversalPerturbation",
    "apply_patch",
    "attack_knowledge",
    "attack_params",
    "build_attack",
    "ce_loss",
    "check_attack",
    "check_minimum_norm",
    "cw_margin_loss",
    "fooling_rate",
    "gradient_attack",
    "input_gradient",
    "patch_success_rate",
    "predict",
    "register",
    "unregister",
    "validate_batch",
]
