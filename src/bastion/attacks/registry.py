"""Attacks by name, as the YAML config and the command line refer to them.

An attack enters the registry where it is defined, with the :func:`register` decorator, which
also declares what the attacker knows (``white-box``, ``score-based``, ``label-only``,
``transfer``) and the attack's kind (``fixed-budget`` or ``minimum-norm``)::

    @register("my-attack", knowledge="white-box")
    class MyAttack(Attack):
        def _run(self, model, x, y, threat, *, targets, generator, opening): ...

This module imports only the attack contract (:mod:`bastion.attacks.base`), never an attack, so
attack modules can import it without a cycle. The built-in attacks are registered when the
package :mod:`bastion.attacks` is imported, which Python does before this module is loaded.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from bastion.attacks.base import ATTACK_KINDS, KNOWLEDGE_ORDER, Attack, AttackKind, Knowledge
from bastion.errors import ConfigError

A = TypeVar("A", bound=type[Attack])

#: Every registered attack class by name, in the order of registration.
ATTACKS: dict[str, type[Attack]] = {}


def register(
    name: str, *, knowledge: Knowledge | None, kind: AttackKind = "fixed-budget"
) -> Callable[[A], A]:
    """Class decorator: enter an :class:`Attack` subclass in the registry under ``name``.

    Args:
        name: how configs and the command line refer to the attack (also set as ``cls.name``).
        knowledge: what the attacker knows; None for a composite attack whose knowledge comes
            from its settings (it must override :meth:`Attack.knowledge_in`, as the cascade
            does).
        kind: ``"fixed-budget"`` (one run per eps) or ``"minimum-norm"`` (one run answers every
            eps through :meth:`Attack.search`).

    Raises ``ValueError`` for a name already taken by another class, an unknown knowledge or
    kind, or a class that is not an attack.
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
        cls.name = name
        cls.knowledge = knowledge
        cls.kind = kind
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
