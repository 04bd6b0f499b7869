"""Attacks by name, as the YAML config and the command line refer to them."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from bastion.attacks.apgd import APGD, APGDTargeted
from bastion.attacks.base import Attack
from bastion.attacks.cascade import Cascade
from bastion.attacks.cw import CarliniWagnerL2
from bastion.attacks.deepfool import DeepFool
from bastion.attacks.fab import FAB, FABTargeted
from bastion.attacks.gradient import FGSM, PGD
from bastion.attacks.hopskipjump import HopSkipJump
from bastion.attacks.l1 import SparseL1Descent
from bastion.attacks.patch import PatchAttack
from bastion.attacks.square import Square
from bastion.attacks.transfer import MIFGSM, TransferAttack
from bastion.attacks.universal import UniversalAttack
from bastion.errors import ConfigError

ATTACKS: dict[str, type[Attack]] = {
    # white-box, gradient
    "fgsm": FGSM,
    "pgd": PGD,
    "mi-fgsm": MIFGSM,
    "apgd": APGD,
    "apgd-t": APGDTargeted,
    "slide": SparseL1Descent,
    # white-box, minimum norm
    "cw-l2": CarliniWagnerL2,
    "deepfool": DeepFool,
    "fab": FAB,
    "fab-t": FABTargeted,
    # black-box
    "square": Square,
    "hopskipjump": HopSkipJump,
    "transfer": TransferAttack,
    # physical-world style
    "universal": UniversalAttack,
    "patch": PatchAttack,
    # worst case over several
    "cascade": Cascade,
}


def attack_params(name: str) -> list[str]:
    """The keyword settings an attack accepts."""
    sig = inspect.signature(ATTACKS[name].__init__)
    return [p for p in sig.parameters if p != "self"]


def build_attack(
    name: str, params: Mapping[str, Any] | None = None, *, where: str = "attack"
) -> Attack:
    """A fresh attack from its registered name and settings; errors name ``where`` and the field."""
    if name not in ATTACKS:
        raise ConfigError(
            f"{where}.name: expected one of {', '.join(sorted(ATTACKS))}, got {name!r}"
        )
    params = dict(params or {})
    allowed = attack_params(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting(s) {unknown} for {name!r}; expected some of {allowed}"
        )
    try:
        return ATTACKS[name](**params)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from e
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: invalid settings for {name!r}: {e}") from e
