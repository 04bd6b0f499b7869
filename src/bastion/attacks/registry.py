"""Attacks by name, as the YAML config and the command line refer to them.

An attack enters the registry where it is defined, with the :func:`register` decorator, which
also declares what the attacker knows (``white-box``, ``score-based``, ``label-only``,
``transfer``), the attack's kind (``fixed-budget`` or ``minimum-norm``) and its settings model
(:mod:`bastion.attacks.settings`), from which YAML validation, ``bastion attack -p`` parsing,
the ``bastion attacks`` listing, the scorecard's params and the config reference derive::

    class MySettings(AttackSettings):
        steps: int = Field(default=10, ge=1, description="iterations")

    @register("my-attack", knowledge="white-box", settings=MySettings)
    class MyAttack(Attack):
        def __init__(self, *, steps: int = 10):
            self.steps = MySettings.of(locals(), where=self.name).steps

        def _run(self, model, x, y, threat, *, targets, generator, opening): ...

This module imports only the attack contract (:mod:`bastion.attacks.base`), never an attack, so
attack modules can import it without a cycle. The built-in attacks are registered when the
package :mod:`bastion.attacks` is imported, which Python does before this module is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from bastion.attacks.base import ATTACK_KINDS, KNOWLEDGE_ORDER, Attack, AttackKind, Knowledge
from bastion.attacks.settings import AttackSettings, check_settings, parse_setting
from bastion.errors import ConfigError

A = TypeVar("A", bound=type[Attack])

#: Every registered attack class by name, in the order of registration.
ATTACKS: dict[str, type[Attack]] = {}


def register(
    name: str,
    *,
    knowledge: Knowledge | None,
    kind: AttackKind = "fixed-budget",
    settings: type[AttackSettings] | None = None,
) -> Callable[[A], A]:
    """Class decorator: enter an :class:`Attack` subclass in the registry under ``name``.

    Args:
        name: how configs and the command line refer to the attack (also set as ``cls.name``).
        knowledge: what the attacker knows; None for a composite attack whose knowledge comes
            from its settings (it must override :meth:`Attack.knowledge_in`, as the cascade
            does).
        kind: ``"fixed-budget"`` (one run per eps) or ``"minimum-norm"`` (one run answers every
            eps through :meth:`Attack.search`).
        settings: the attack's settings model (an :class:`AttackSettings` subclass whose
            fields are the constructor's keywords); None keeps the class's ``settings_model``
            (a subclass inherits its parent's).

    Raises ``ValueError`` for a name already taken by another class, an unknown knowledge or
    kind, a class that is not an attack, or one without a settings model.
    """
    if knowledge is not None and knowledge not in KNOWLEDGE_ORDER:
        raise ValueError(
            f"register({name!r}).knowledge: expected one of {', '.join(KNOWLEDGE_ORDER)} or "
            f"None, got {knowledge!r}"
        )
    if kind not in ATTACK_KINDS:
        raise ValueError(
            f"register({name!r}).kind: expected one of {', '.join(ATTACK_KINDS)}, got {kind!r}"
        )

    def decorate(cls: A) -> A:
        if not (isinstance(cls, type) and issubclass(cls, Attack)):
            raise ValueError(f"register({name!r}): expected an Attack subclass, got {cls!r}")
        taken = ATTACKS.get(name)
        if taken is not None and taken is not cls:
            raise ValueError(
                f"register({name!r}): the name is taken by {taken.__module__}.{taken.__qualname__}"
            )
        if knowledge is None and not _overrides_knowledge(cls):
            raise ValueError(
                f"register({name!r}).knowledge: None needs a class that overrides knowledge_in"
            )
        model = settings if settings is not None else cls.settings_model
        if not (isinstance(model, type) and issubclass(model, AttackSettings)):
            raise ValueError(
                f"register({name!r}).settings: expected an AttackSettings model, got {model!r}"
            )
        cls.name = name
        cls.knowledge = knowledge
        cls.kind = kind
        cls.settings_model = model
        ATTACKS[name] = cls
        return cls

    return decorate


def _overrides_knowledge(cls: type[Attack]) -> bool:
    return any("knowledge_in" in vars(k) for k in cls.__mro__ if k is not Attack)


def unregister(name: str) -> None:
    """Remove ``name`` from the registry (a plug-in or a test that registered it); unknown
    names are an error."""
    if name not in ATTACKS:
        raise KeyError(f"unregister: no attack registered as {name!r}")
    del ATTACKS[name]


def attack_knowledge(name: str, settings: Mapping[str, Any] | None = None) -> list[str]:
    """The kinds of attacker knowledge an attack specification exercises, in a fixed order
    (``white-box``, ``score-based``, ``label-only``, ``transfer``); a cascade contributes those
    of its preset or sub-attacks; an unknown name contributes nothing."""
    cls = ATTACKS.get(name)
    found = cls.knowledge_in(dict(settings or {})) if cls is not None else set()
    return [k for k in KNOWLEDGE_ORDER if k in found]


def attack_params(name: str) -> list[str]:
    """The settings an attack accepts (its settings model's fields, in order)."""
    return list(settings_model(name).model_fields)


def settings_model(name: str) -> type[AttackSettings]:
    """The settings model of the registered attack ``name``."""
    model = ATTACKS[name].settings_model
    assert model is not None  # register() refuses an attack without one
    return model


def parse_attack_params(name: str, items: list[str], *, where: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings (``bastion attack -p``) as settings of the attack ``name``, each
    value coerced by its field's type (:func:`bastion.attacks.settings.parse_setting`); an
    unknown attack or setting, or a malformed item, is a :class:`ConfigError` naming
    ``where``. Validation is left to :func:`build_attack`."""
    if name not in ATTACKS:
        raise ConfigError(
            f"{where}: unknown attack {name!r}; expected one of {', '.join(sorted(ATTACKS))}"
        )
    model = settings_model(name)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{where}: expected KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_setting(model, key.strip(), raw, where=f"{where} ({name})")
    return out


def recorded_settings(
    name: str, params: Mapping[str, Any] | None = None, *, where: str = "attack"
) -> dict[str, Any]:
    """An attack specification's settings validated by its settings model, defaults filled in:
    what the scorecard records (errors as :func:`build_attack`)."""
    if name not in ATTACKS:
        raise ConfigError(
            f"{where}.name: expected one of {', '.join(sorted(ATTACKS))}, got {name!r}"
        )
    model = settings_model(name)
    return check_settings(model, dict(params or {}), where=f"{where} ({name})").recorded()


def build_attack(
    name: str, params: Mapping[str, Any] | None = None, *, where: str = "attack"
) -> Attack:
    """A fresh attack from its registered name and settings; errors name ``where`` and the field."""
    if name not in ATTACKS:
        raise ConfigError(
            f"{where}.name: expected one of {', '.join(sorted(ATTACKS))}, got {name!r}"
        )
    cls = ATTACKS[name]
    checked = check_settings(settings_model(name), dict(params or {}), where=f"{where} ({name})")
    try:
        return cls(**dict(checked))
    except ConfigError as e:
        raise ConfigError(f"{where} ({name}): {e}") from e
