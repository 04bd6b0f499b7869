"""Attacks by name, as the YAML config and the command line refer to them."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from bastion.attacks.apgd import APGD, APGDTargeted
from bastion.attacks.base import Attack
from bastion.attacks.cascade import Cascade, preset_specs
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


#: What each registered attack assumes the attacker knows (the threat model's "knowledge").
KNOWLEDGE: dict[str, str] = {
    "fgsm": "white-box",
    "pgd": "white-box",
    "mi-fgsm": "white-box",
    "apgd": "white-box",
    "apgd-t": "white-box",
    "slide": "white-box",
    "cw-l2": "white-box",
    "deepfool": "white-box",
    "fab": "white-box",
    "fab-t": "white-box",
    "universal": "white-box",
    "patch": "white-box",
    "square": "score-based",
    "hopskipjump": "label-only",
    "transfer": "transfer",
}


def attack_knowledge(name: str, settings: Mapping[str, Any] | None = None) -> list[str]:
    """The kinds of attacker knowledge an attack specification exercises, in a fixed order
    (``white-box``, ``score-based``, ``label-only``, ``transfer``); a cascade contributes those
    of its preset or sub-attacks; an unknown name contributes nothing."""
    settings = settings or {}
    if name == "cascade":
        specs: Sequence[Mapping[str, Any]] = []
        if isinstance(settings.get("preset"), str):
            specs = preset_specs(settings["preset"])
        elif isinstance(settings.get("attacks"), list):
            specs = [a for a in settings["attacks"] if isinstance(a, Mapping)]
        found = {k for spec in specs for k in attack_knowledge(str(spec.get("name")), spec)}
    else:
        found = {KNOWLEDGE[name]} if name in KNOWLEDGE else set()
    order = ["white-box", "score-based", "label-only", "transfer"]
    return [k for k in order if k in found]


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
