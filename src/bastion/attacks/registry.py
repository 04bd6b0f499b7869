"""Attacks by name and channel, as the YAML config and the command line refer to them.

An attack enters the registry where it is defined, with the :func:`register` decorator, which
also declares its threat channel (``image``: Lp-bounded arrays under a
:class:`~bastion.threat.ThreatModel`, the default; ``tabular``: encoded rows under a
:class:`~bastion.tabular.threat.TabularThreat`; ``text``: texts under a
:class:`~bastion.text.threat.TextThreat`), what the attacker knows (``white-box``,
``score-based``, ``label-only``, ``transfer``), the attack's kind (``fixed-budget`` or
``minimum-norm``) and its settings model (:mod:`bastion.attacks.settings`), from which YAML
validation, ``bastion attack -p`` parsing, the ``bastion attacks`` listing, the scorecard's
params and the config reference derive::

    class MySettings(AttackSettings):
        steps: int = Field(default=10, ge=1, description="iterations")

    @register("my-attack", knowledge="white-box", settings=MySettings)
    class MyAttack(Attack):
        def __init__(self, *, steps: int = 10):
            self.steps = MySettings.of(locals(), where=self.name).steps

        def _run(self, model, x, y, threat, *, targets, generator, opening): ...

A name is unique within its channel (the tabular ``hopskipjump`` is not the image one): look an
attack up by ``(channel, name)``. :data:`ATTACKS` is the image channel's table. An image or
tabular attack subclasses :class:`~bastion.attacks.base.Attack`; a text attack subclasses
:class:`~bastion.text.attack_base.TextAttackBase` (:data:`CHANNEL_BASES`).

This module imports only the attack contract (:mod:`bastion.attacks.base`), never an attack, so
attack modules can import it without a cycle. The built-in image attacks are registered when
the package :mod:`bastion.attacks` is imported, which Python does before this module is loaded;
the tabular and text ones when a lookup first asks for their channel, which imports the modules
of :data:`CHANNEL_MODULES` (a plug-in channel adds its modules there).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, cast

from pydantic_core import PydanticCustomError

from bastion.attacks.base import ATTACK_KINDS, KNOWLEDGE_ORDER, Attack, AttackKind, Knowledge
from bastion.attacks.settings import AttackSettings, check_settings, parse_setting
from bastion.errors import ConfigError

A = TypeVar("A", bound=type[Any])

#: The threat channels: what an attack's inputs are and which threat model bounds them.
Channel = Literal["image", "tabular", "text"]
CHANNELS: tuple[Channel, ...] = ("image", "tabular", "text")

#: Each channel's inputs and threat model, in words (the ``bastion attacks list`` headings).
CHANNEL_INPUTS: dict[str, str] = {
    "image": "Lp-bounded arrays and images (bastion.threat.ThreatModel)",
    "tabular": "encoded rows under a schema's constraints (bastion.tabular.TabularThreat)",
    "text": "texts under an edit budget (bastion.text.threat.TextThreat)",
}

#: The class every attack of a channel subclasses, as ``"module:name"`` (resolved when an
#: attack registers, by which time its module has imported the class).
CHANNEL_BASES: dict[str, str] = {
    "image": "bastion.attacks.base:Attack",
    "tabular": "bastion.attacks.base:Attack",
    "text": "bastion.text.attack_base:TextAttackBase",
}

#: The modules whose import registers a channel's built-in attacks; imported on the first
#: lookup in the channel (by name, so that this module imports no attack).
CHANNEL_MODULES: dict[str, tuple[str, ...]] = {
    "image": ("bastion.attacks",),
    "tabular": ("bastion.tabular.whitebox", "bastion.tabular.blackbox"),
    "text": ("bastion.text.char_attacks", "bastion.text.word_attacks"),
}

#: Every registered image attack class by name, in the order of registration.
ATTACKS: dict[str, type[Attack]] = {}

#: Every registered attack class, per channel, by name, in the order of registration.
REGISTRY: dict[str, dict[str, type[Any]]] = {"image": ATTACKS, "tabular": {}, "text": {}}

_loaded: set[str] = set()


def _check_channel(channel: str) -> None:
    if channel not in REGISTRY:
        raise ConfigError(f"channel: expected one of {', '.join(REGISTRY)}, got {channel!r}")


def add_channel(channel: str, *, base: str, inputs: str, modules: tuple[str, ...] = ()) -> None:
    """Declare a threat channel of a plug-in (the next ones: poisoning, privacy, extraction):
    ``base``, the class its attacks subclass as ``"module:name"``; ``inputs``, its inputs and
    threat model in words (the listing's heading); ``modules``, those whose import registers
    its built-in attacks. A channel already declared is a ``ValueError``."""
    if channel in REGISTRY:
        raise ValueError(f"add_channel({channel!r}): the channel is declared already")
    if not channel or ":" not in base:
        raise ValueError(f"add_channel({channel!r}): expected a name and base 'module:name'")
    REGISTRY[channel] = {}
    CHANNEL_BASES[channel] = base
    CHANNEL_INPUTS[channel] = inputs
    CHANNEL_MODULES[channel] = tuple(modules)


def remove_channel(channel: str) -> None:
    """Withdraw a channel :func:`add_channel` declared, with its attacks (the built-in
    channels stay)."""
    if channel in CHANNELS:
        raise ValueError(f"remove_channel({channel!r}): a built-in channel stays")
    _check_channel(channel)
    for table in (REGISTRY, CHANNEL_BASES, CHANNEL_INPUTS, CHANNEL_MODULES):
        del table[channel]
    _loaded.discard(channel)


def channel_attacks(channel: str = "image") -> dict[str, type[Any]]:
    """The registered attacks of ``channel`` by name, in the order of registration (its
    built-in modules imported first)."""
    _check_channel(channel)
    if channel not in _loaded:
        _loaded.add(channel)
        for module in CHANNEL_MODULES.get(channel, ()):
            importlib.import_module(module)
    return REGISTRY[channel]


def _channel_base(channel: str) -> type:
    module, _, name = CHANNEL_BASES[channel].partition(":")
    base: type = getattr(importlib.import_module(module), name)
    return base


def register(
    name: str,
    *,
    knowledge: Knowledge | None,
    kind: AttackKind = "fixed-budget",
    settings: type[AttackSettings] | None = None,
    channel: str = "image",
) -> Callable[[A], A]:
    """Class decorator: enter an attack class in the registry under ``(channel, name)``.

    Args:
        name: how configs and the command line refer to the attack (also set as ``cls.name``).
        knowledge: what the attacker knows; None for a composite attack whose knowledge comes
            from its settings (it must override ``knowledge_in``, as the cascade does).
        kind: ``"fixed-budget"`` (one run per eps or edit budget) or ``"minimum-norm"`` (one run
            answers every eps through :meth:`Attack.search`).
        settings: the attack's settings model (an :class:`AttackSettings` subclass whose
            fields are the constructor's keywords); None keeps the class's ``settings_model``
            (a subclass inherits its parent's).
        channel: ``"image"`` (default), ``"tabular"``, ``"text"`` or a channel declared with
            :func:`add_channel` (set as ``cls.channel``).

    Raises ``ValueError`` for a name already taken in the channel by another class, an unknown
    channel, knowledge or kind, a class that is not an attack of the channel, or one without a
    settings model.
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
    if channel not in REGISTRY:
        raise ValueError(
            f"register({name!r}).channel: expected one of {', '.join(REGISTRY)}, got {channel!r}"
        )

    def decorate(cls: A) -> A:
        base = _channel_base(channel)
        if not (isinstance(cls, type) and issubclass(cls, base)):
            article = "an" if base.__name__[0] in "AEIOU" else "a"
            raise ValueError(
                f"register({name!r}): expected {article} {base.__name__} subclass, got {cls!r}"
            )
        table = REGISTRY[channel]
        taken = table.get(name)
        if taken is not None and taken is not cls:
            raise ValueError(
                f"register({name!r}): the name is taken by {taken.__module__}.{taken.__qualname__}"
            )
        if knowledge is None and not _overrides_knowledge(cls, base):
            raise ValueError(
                f"register({name!r}).knowledge: None needs a class that overrides knowledge_in"
            )
        model = settings if settings is not None else getattr(cls, "settings_model", None)
        if not (isinstance(model, type) and issubclass(model, AttackSettings)):
            raise ValueError(
                f"register({name!r}).settings: expected an AttackSettings model, got {model!r}"
            )
        for attr, value in (
            ("name", name),
            ("knowledge", knowledge),
            ("kind", kind),
            ("settings_model", model),
            ("channel", channel),
        ):
            setattr(cls, attr, value)
        table[name] = cls
        return cls

    return decorate


def _overrides_knowledge(cls: type[Any], base: type) -> bool:
    return any("knowledge_in" in vars(k) for k in cls.__mro__ if k is not base)


def unregister(name: str, *, channel: str = "image") -> None:
    """Remove ``(channel, name)`` from the registry (a plug-in or a test that registered it);
    unknown names are an error."""
    _check_channel(channel)
    table = REGISTRY[channel]
    if name not in table:
        where = "" if channel == "image" else f"{channel} "
        raise KeyError(f"unregister: no {where}attack registered as {name!r}")
    del table[name]


def _choices(channel: str) -> str:
    names = sorted(channel_attacks(channel))
    if channel == "image":
        return ", ".join(names)
    return f"the {channel} attacks {', '.join(names)}"


def attack_class(name: str, *, channel: str = "image", where: str = "attack") -> type[Any]:
    """The class registered as ``(channel, name)``; a :class:`ConfigError` naming ``where``
    and listing the channel's attacks otherwise."""
    table = channel_attacks(channel)
    if name not in table:
        raise ConfigError(f"{where}.name: expected one of {_choices(channel)}, got {name!r}")
    return table[name]


def registered_name(channel: str) -> Callable[[str], str]:
    """A pydantic after-validator for a config entry that names an attack of ``channel`` (the
    ``tabular:`` and ``text:`` sections' ``attacks``): the name as given, or pydantic's
    ``literal_error`` listing the channel's attacks in registration order, e.g. ``Input should
    be 'cpgd', 'capgd', 'random-search' or 'hopskipjump' (the tabular attacks), got 'pgd'``."""
    _check_channel(channel)

    def check(name: str) -> str:
        names = [repr(n) for n in channel_attacks(channel)]
        if name not in channel_attacks(channel):
            listing = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
            raise PydanticCustomError(
                "literal_error",
                "Input should be {expected} (the {channel} attacks), got {name}",
                {"expected": listing, "channel": channel, "name": repr(name)},
            )
        return name

    return check


def attack_knowledge(
    name: str, settings: Mapping[str, Any] | None = None, *, channel: str = "image"
) -> list[str]:
    """The kinds of attacker knowledge an attack specification exercises, in a fixed order
    (``white-box``, ``score-based``, ``label-only``, ``transfer``); a cascade contributes those
    of its preset or sub-attacks, a text attack ranking words by gradient ``white-box``; an
    unknown name contributes nothing."""
    cls = channel_attacks(channel).get(name)
    found = cls.knowledge_in(dict(settings or {})) if cls is not None else set()
    return [k for k in KNOWLEDGE_ORDER if k in found]


def attack_params(name: str, *, channel: str = "image") -> list[str]:
    """The settings an attack accepts (its settings model's fields, in order)."""
    return list(settings_model(name, channel=channel).model_fields)


def settings_model(name: str, *, channel: str = "image") -> type[AttackSettings]:
    """The settings model of the registered attack ``(channel, name)``."""
    model = channel_attacks(channel)[name].settings_model
    assert model is not None  # register() refuses an attack without one
    return cast(type[AttackSettings], model)


def parse_attack_params(
    name: str, items: list[str], *, where: str, channel: str = "image"
) -> dict[str, Any]:
    """``KEY=VALUE`` strings (``bastion attack -p``) as settings of the attack ``name``, each
    value coerced by its field's type (:func:`bastion.attacks.settings.parse_setting`); an
    unknown attack or setting, or a malformed item, is a :class:`ConfigError` naming
    ``where``. Validation is left to :func:`build_attack`."""
    if name not in channel_attacks(channel):
        raise ConfigError(f"{where}: unknown attack {name!r}; expected one of {_choices(channel)}")
    model = settings_model(name, channel=channel)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{where}: expected KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_setting(model, key.strip(), raw, where=f"{where} ({name})")
    return out


def recorded_settings(
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    where: str = "attack",
    channel: str = "image",
) -> dict[str, Any]:
    """An attack specification's settings validated by its settings model, defaults filled in:
    what the scorecard records (errors as :func:`build_attack`)."""
    attack_class(name, channel=channel, where=where)
    model = settings_model(name, channel=channel)
    return check_settings(model, dict(params or {}), where=f"{where} ({name})").recorded()


def build_channel_attack(
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    channel: str,
    where: str = "attack",
) -> Any:
    """A fresh attack of any channel from its registered name and settings (an instance of
    the channel's base class, :data:`CHANNEL_BASES`); errors name ``where`` and the field."""
    cls = attack_class(name, channel=channel, where=where)
    model = settings_model(name, channel=channel)
    checked = check_settings(model, dict(params or {}), where=f"{where} ({name})")
    try:
        return cls(**dict(checked))
    except ConfigError as e:
        raise ConfigError(f"{where} ({name}): {e}") from e


def build_attack(
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    where: str = "attack",
    channel: Literal["image", "tabular"] = "image",
) -> Attack:
    """A fresh image (or tabular) attack from its registered name and settings; errors name
    ``where`` and the field. Text attacks: :func:`bastion.text.attack_base.build_text_attack`."""
    attack: Attack = build_channel_attack(name, params, channel=channel, where=where)
    return attack
