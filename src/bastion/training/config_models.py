"""Pydantic models of the YAML sections the training features add, used by
:mod:`bastion.config` (``models[].objective`` and ``training``). Each builds the frozen settings
dataclass that the Trainer takes; values are re-checked there, so the messages name the field.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bastion.training.augmix import AugMixSettings
from bastion.training.awp import AWPSettings
from bastion.training.objectives import MixedComponent


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AugMixConfig(_Section):
    """``objective.augmix``: see :class:`AugMixSettings`."""

    width: int = Field(default=3, ge=1)
    depth: int = Field(default=3, ge=1)
    severities: list[int] = Field(default_factory=lambda: [1, 2, 3])
    names: list[str] | None = None
    jsd_weight: float = Field(default=12.0, ge=0)

    def build(self) -> AugMixSettings:
        return AugMixSettings(
            width=self.width,
            depth=self.depth,
            severities=tuple(self.severities),
            names=None if self.names is None else tuple(self.names),
            jsd_weight=self.jsd_weight,
        )


class MixedConfig(_Section):
    """One entry of ``objective.mixed``: see :class:`MixedComponent`."""

    kind: Literal["linf", "l2", "l1", "corruption"]
    weight: float = Field(default=1.0, ge=0)
    eps: float | None = Field(default=None, ge=0)
    severities: list[int] = Field(default_factory=lambda: [1, 2, 3])

    def build(self) -> MixedComponent:
        return MixedComponent(
            kind=self.kind, weight=self.weight, eps=self.eps, severities=tuple(self.severities)
        )


class AWPConfig(_Section):
    """``training.awp``: see :class:`AWPSettings`."""

    gamma: float = Field(default=0.005, gt=0)
    warmup_epochs: int = Field(default=0, ge=0)

    def build(self) -> AWPSettings:
        return AWPSettings(gamma=self.gamma, warmup_epochs=self.warmup_epochs)
