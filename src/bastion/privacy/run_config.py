"""The settings of the ``privacy:`` section of a run config, apart from the code that runs it
(:mod:`bastion.privacy.run_section`), so that :mod:`bastion.config` validates the section
without importing the audit (which imports the pipeline, which imports the config)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bastion.errors import ConfigError

__all__ = ["ATTACK_NAMES", "PrivacySection"]

#: The config's attack names and the keys :func:`bastion.privacy.membership.run_lira` reports.
ATTACK_NAMES = {
    "threshold": "threshold-loss",
    "lira-online": "lira-online",
    "lira-offline": "lira-offline",
}

AttackName = Literal["threshold", "lira-online", "lira-offline"]
_ALL_ATTACKS: tuple[AttackName, ...] = ("threshold", "lira-online", "lira-offline")


class PrivacySection(BaseModel):
    """The validated ``privacy:`` mapping (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shadows: int = Field(default=8, ge=2)
    attacks: list[AttackName] = Field(default_factory=lambda: list(_ALL_ATTACKS), min_length=1)
    inversion: bool = True
    workers: int = Field(default=1, ge=1)
    population: int | None = Field(default=None, ge=2)
    seed: int | None = None
    models: list[str] | None = Field(default=None, min_length=1)

    @classmethod
    def from_dict(cls, doc: Any, *, where: str = "privacy") -> PrivacySection:
        """Validate a parsed ``privacy:`` mapping; :class:`ConfigError` names the field
        (``privacy.shadows: ...``) and what was expected."""
        if not isinstance(doc, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(doc).__name__}")
        try:
            return cls.model_validate(doc)
        except ValidationError as e:
            bad = [
                f"{where}.{'.'.join(map(str, err['loc']))}: {err['msg']} (got {err['input']!r})"
                for err in e.errors()
            ]
            raise ConfigError("; ".join(bad)) from None
