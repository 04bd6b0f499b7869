"""The worst case over a list of attacks (the protocol of AutoAttack, Croce & Hein 2020).

Attacks run in order, each only on the examples every earlier attack failed to break; an
example is robust only if it survives all of them, and its returned point is the first that
fooled the model (or the last attack's best attempt). Sub-attacks are built fresh from their
specifications at every call and never changed, so a cascade can be shared and reused.

Presets:

* ``quick``: PGD-50 with 3 restarts.
* ``standard``: APGD-CE, APGD-T (9 targets), FAB-T (9 targets) and Square (5,000 queries), the
  "standard" version of AutoAttack with its paper's settings (100 steps per APGD run). Attacks
  not yet available in this installation are skipped with a note in ``skipped``.
* ``black-box``: Square (5,000 queries) alone; what a score-based attacker can do.

``precision: bf16`` hands bfloat16 autocast to every sub-attack that takes a ``precision``
setting and does not set its own (PGD, FGSM, APGD, APGD-T, FAB, FAB-T): their gradients are
about 2.4x cheaper on CPUs with AVX-512 BF16, and every success is still decided in float32.
Square keeps float32 scores (its random search compares margins that bfloat16 would round).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Self

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from bastion.attacks.base import Attack, AttackShare, Crafted, Knowledge, Opening
from bastion.attacks.engine import Precision
from bastion.attacks.registry import ATTACKS, attack_params, build_attack, register
from bastion.attacks.settings import AttackSettings
from bastion.errors import ConfigError
from bastion.threat import ThreatModel

PRESETS: dict[str, list[dict[str, Any]]] = {
    "quick": [{"name": "pgd", "steps": 50, "restarts": 3}],
    "standard": [
        {"name": "apgd", "loss": "ce", "steps": 100},
        {"name": "apgd-t", "steps": 100, "target_classes": 9},
        {"name": "fab-t", "steps": 100, "target_classes": 9},
        {"name": "square", "queries": 5000},
    ],
    "black-box": [{"name": "square", "queries": 5000}],
}


#: Sub-attacks that a cascade's ``precision`` reaches (Square keeps float32 scores).
PRECISION_ATTACKS = frozenset({"fgsm", "pgd", "apgd", "apgd-t", "fab", "fab-t"})


def preset_specs(name: str, *, where: str = "cascade.preset") -> list[dict[str, Any]]:
    """The attack specifications of a preset (copies)."""
    if name not in PRESETS:
        raise ConfigError(f"{where}: expected one of {', '.join(PRESETS)}, got {name!r}")
    return [dict(s) for s in PRESETS[name]]


PresetName = Literal["quick", "standard", "black-box"]


class CascadeSettings(AttackSettings):
    """Settings of :class:`Cascade`: exactly one of ``preset`` and ``attacks``."""

    preset: PresetName | None = Field(default=None, description="a preset list of attacks")
    attacks: list[dict[str, Any]] | None = Field(
        default=None,
        description="instead of a preset, the attacks in order",
        json_schema_extra={
            "type": "list of attack specs or null",
            "expected": "a list of {name: ..., settings} or null",
        },
    )
    precision: Precision | None = Field(
        default=None, description="precision of every gradient sub-attack that sets none"
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.preset is None) == (self.attacks is None):
            given = "both" if self.preset is not None else "neither"
            raise ValueError(f"preset, attacks: expected exactly one of them, got {given}")
        if self.attacks is not None and not self.attacks:
            raise ValueError("attacks: expected at least one attack, got []")
        return self


@register("cascade", knowledge=None, settings=CascadeSettings)
class Cascade(Attack):
    """Run attacks in order on the still-robust examples; keep the worst case per example.

    Args:
        preset: ``"quick"``, ``"standard"`` or ``"black-box"`` (see the module docstring).
        attacks: instead of a preset, a list of specifications ``{"name": ..., **settings}``.
        precision: ``"bf16"`` or ``"fp32"`` for every gradient sub-attack that does not set its
            own (see the module docstring); None leaves each at its default (float32).

    A call's :attr:`AttackResult.breakdown` holds, per sub-attack label (``"0:apgd"``), how
    many examples it broke (those earlier attacks had not) and the wall-clock seconds it took;
    the cascade keeps no state between calls. :attr:`skipped` lists the preset attacks that are
    not registered in this installation. Its knowledge is that of its sub-attacks.
    """

    def __init__(
        self,
        *,
        preset: str | None = None,
        attacks: list[dict[str, Any]] | None = None,
        precision: str | None = None,
    ):
        checked = CascadeSettings.of(locals(), where=self.name)
        given = [dict(a) for a in checked.attacks or []]
        specs = preset_specs(checked.preset) if checked.preset is not None else given
        self.preset = checked.preset
        self.skipped = [
            s["name"] for s in specs if preset is not None and s.get("name") not in ATTACKS
        ]
        specs = [s for s in specs if s.get("name") not in self.skipped]
        self.precision = checked.precision
        if self.precision is not None:
            for s in specs:
                if s.get("name") in PRECISION_ATTACKS and "precision" in attack_params(s["name"]):
                    s.setdefault("precision", self.precision)
        for i, s in enumerate(specs):  # fail early on a bad specification
            if "name" not in s:
                raise ConfigError(f"cascade.attacks[{i}].name: expected an attack name")
            build_attack(
                s["name"],
                {k: v for k, v in s.items() if k != "name"},
                where=f"cascade.attacks[{i}]",
            )
        self.attacks = specs

    @classmethod
    def knowledge_in(cls, settings: dict[str, Any]) -> set[Knowledge]:
        """The knowledge of the preset's or the listed sub-attacks (a bad spec adds none)."""
        specs: Sequence[Mapping[str, Any]] = []
        if isinstance(settings.get("preset"), str) and settings["preset"] in PRESETS:
            specs = PRESETS[settings["preset"]]
        elif isinstance(settings.get("attacks"), list):
            specs = [a for a in settings["attacks"] if isinstance(a, Mapping)]
        found: set[Knowledge] = set()
        for spec in specs:
            sub = ATTACKS.get(str(spec.get("name")))
            if sub is not None:
                found |= sub.knowledge_in(dict(spec))
        return found

    def params(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "attacks": self.attacks,
            "skipped": self.skipped,
            "precision": self.precision,
        }

    def sub_attacks(self) -> list[tuple[str, Attack]]:
        """Fresh ``(label, attack)`` pairs, in order."""
        out = []
        for i, s in enumerate(self.attacks):
            label = f"{i}:{s['name']}"
            out.append(
                (
                    label,
                    build_attack(
                        s["name"],
                        {k: v for k, v in s.items() if k != "name"},
                        where=f"cascade.attacks[{i}]",
                    ),
                )
            )
        return out

    def _run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        threat: ThreatModel,
        *,
        targets: Tensor | None,
        generator: torch.Generator | None,
        opening: Opening,
    ) -> Crafted:
        n = x.shape[0]
        queries = torch.ones(n, dtype=torch.int64, device=x.device)
        done = ~opening.robust
        x_out = x.clone()
        shares: list[AttackShare] = []
        for label, atk in self.sub_attacks():
            idx = (~done).nonzero().squeeze(1)
            if idx.numel() == 0:
                shares.append(AttackShare(label, 0, 0.0))
                continue
            t0 = time.perf_counter()
            res = atk(
                model,
                x[idx],
                y[idx],
                threat,
                targets=targets[idx] if targets is not None else None,
                generator=generator,
            )
            queries[idx] += res.queries
            x_out[idx] = res.x_adv
            done[idx[res.success]] = True
            shares.append(
                AttackShare(label, int(res.success.sum()), round(time.perf_counter() - t0, 3))
            )
        return Crafted(x_out, queries, tuple(shares))
