"""One settings language for attacks: each attack declares its settings once, as a pydantic model.

An attack's settings model (a subclass of :class:`AttackSettings`, attached with
``@register(..., settings=Model)``) states every setting's type, default, bounds (``ge``,
``gt``, ``le``, ``lt``) and a one-line description. Everything else derives from it:

* validation of YAML ``evaluation.attacks`` entries, of ``bastion attack -p`` values and of
  direct construction in Python (:func:`check_settings`); errors name the attack, the field
  and what was expected, e.g. ``evaluation.attacks[2] (square).queries: expected an integer
  >= 1, got 0``;
* the coercion of ``-p KEY=VALUE`` strings by the field's type (:func:`parse_setting`);
* the settings text of ``bastion attacks`` and the generated reference in ``docs/config.md``
  (:func:`setting_rows`);
* the params recorded in the scorecard (:meth:`AttackSettings.recorded`): the validated values,
  defaults filled in.

Validation is strict (pydantic strict mode): an integer setting takes an integer, not ``5.0``
or ``true``; a number setting takes an int or a float, finite; a flag takes ``true`` or
``false`` only. This module imports nothing of bastion but its errors, so every attack module
can import it without a cycle.
"""

from __future__ import annotations

import numbers
import types
from collections.abc import Mapping
from typing import Any, Literal, Self, TypeVar, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic.fields import FieldInfo

from bastion.errors import ConfigError

S = TypeVar("S", bound="Settings")


class Settings(BaseModel):
    """Base of a settings model (an attack's, a training objective's): strict, frozen, no
    unknown fields, finite numbers.

    A field's ``description`` is its one-line help. A field whose type or bounds have no plain
    name (a model or a path, a fraction or a pixel count) states them in ``json_schema_extra``:
    ``type`` (the reference's type column), ``bounds`` (its bounds column) and ``expected``
    (what an error message says was expected). A rule of one field is a ``field_validator``
    raising ``ValueError("expected ..., got ...")``; a rule across fields a ``model_validator``
    raising ``ValueError("<field>: expected ..., got ...")``.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        allow_inf_nan=False,
        arbitrary_types_allowed=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _plain_numbers(cls, data: Any) -> Any:
        """NumPy scalars (``np.int64(3)``, ``np.float32(0.5)``) as the Python numbers they
        are; bools and every other value are left to the strict field validation."""
        if not isinstance(data, dict):
            return data
        return {k: _plain(v) for k, v in data.items()}

    @classmethod
    def of(cls, given: Mapping[str, Any], *, where: str) -> Self:
        """Validate an attack constructor's keywords: pass ``locals()`` as the first line of
        ``__init__`` (``self`` and ``__class__`` are left out); errors name ``where`` (the
        attack's name) and the field, as :func:`check_settings`."""
        params = {k: v for k, v in given.items() if k not in ("self", "__class__")}
        return check_settings(cls, params, where=where)

    def recorded(self) -> dict[str, Any]:
        """The validated settings, defaults filled in, as the scorecard records them."""
        return dict(self)


class AttackSettings(Settings):
    """Base of every attack's settings model (see :class:`Settings`)."""


def _plain(v: Any) -> Any:
    if isinstance(v, int | float):  # bool included
        return v
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        return float(v)
    return v


def check_settings(model: type[S], params: Mapping[str, Any], *, where: str) -> S:
    """``params`` validated by ``model``; a :class:`ConfigError` naming ``where``, the field and
    what was expected otherwise (unknown settings are listed with the allowed ones)."""
    unknown = sorted(set(params) - set(model.model_fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting(s) {unknown}; expected some of {list(model.model_fields)}"
        )
    try:
        return model.model_validate(dict(params))
    except ValidationError as e:
        raise ConfigError(_first_error(model, params, e, where)) from None


def _first_error(
    model: type[Settings], params: Mapping[str, Any], e: ValidationError, where: str
) -> str:
    err = e.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"]]
    field = loc[0] if loc else ""
    if err["type"] == "value_error":  # a rule of the model's own: its message says it all
        cause = err.get("ctx", {}).get("error")
        text = str(cause) if cause is not None else err["msg"]
        return f"{where}.{text}" if not field else f"{where}.{field}: {text}"
    if field in model.model_fields:
        expected = expectation(model.model_fields[field])
        return f"{where}.{field}: expected {expected}, got {params.get(field)!r}"
    return f"{where}: {err['msg']}"


# -- describing a field --------------------------------------------------------------------
def _bounds(info: FieldInfo) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in info.metadata:
        for key in ("ge", "gt", "le", "lt"):
            v = getattr(m, key, None)
            if v is not None and isinstance(m, annotated_types.BaseMetadata):
                out[key] = float(v)
    return out


def _parts(annotation: Any) -> tuple[list[Any], bool]:
    """The non-None members of ``annotation`` and whether None is allowed."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = list(get_args(annotation))
        return [a for a in args if a is not type(None)], type(None) in args
    return [annotation], False


def _kind(tp: Any) -> str:
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(tp))
    if get_origin(tp) is tuple:
        return f"[{', '.join(_kind(a) for a in get_args(tp))}]"
    return getattr(tp, "__name__", str(tp))


def _interval(b: dict[str, float]) -> str:
    lo = f"({b['gt']:g}" if "gt" in b else f"[{b['ge']:g}"
    hi = f"{b['lt']:g})" if "lt" in b else f"{b['le']:g}]"
    return f"in {lo}, {hi}"


def _extra(info: FieldInfo, key: str) -> str | None:
    extra = info.json_schema_extra
    value = extra.get(key) if isinstance(extra, dict) else None
    return value if isinstance(value, str) else None


def bounds_text(info: FieldInfo) -> str:
    """The field's bounds as text: ``>= 1``, ``> 0``, ``in (0, 1]``; empty when unbounded."""
    stated = _extra(info, "bounds")
    if stated is not None:
        return stated
    b = _bounds(info)
    if ("ge" in b or "gt" in b) and ("le" in b or "lt" in b):
        return _interval(b)
    for key, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if key in b:
            return f"{sign} {b[key]:g}"
    return ""


def type_text(info: FieldInfo) -> str:
    """The field's type in words: ``integer``, ``number or null``, ``one of ce, cw``."""
    stated = _extra(info, "type")
    if stated is not None:
        return stated
    members, nullable = _parts(info.annotation)
    words = " or ".join(
        "bool" if m is bool else _kind(m).removeprefix("an ").removeprefix("a ") for m in members
    )
    return f"{words} or null" if nullable else words


def expectation(info: FieldInfo) -> str:
    """What a valid value of the field is, as an error message says it: ``an integer >= 1``,
    ``a finite number > 0``, ``a number in (0, 1)``, ``one of ce, cw``, ``... or null``."""
    stated = _extra(info, "expected")
    if stated is not None:
        return stated
    members, nullable = _parts(info.annotation)
    bounds = bounds_text(info)
    words = []
    for m in members:
        word = _kind(m)
        if m is float and not bounds.startswith("in"):
            word = "a finite number"
        if m in (int, float) and bounds:
            word = f"{word} {bounds}"
        words.append(word)
    text = " or ".join(words)
    return f"{text} or null" if nullable else text


def default_text(info: FieldInfo) -> str:
    """The default as YAML writes it (``required`` when there is none)."""
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, tuple):
        value = list(value)
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def setting_rows(model: type[Settings]) -> list[tuple[str, str, str, str, str]]:
    """``(setting, type, default, bounds, description)`` per field, in declaration order."""
    return [
        (name, type_text(info), default_text(info), bounds_text(info), info.description or "")
        for name, info in model.model_fields.items()
    ]


# -- errors of a larger document -----------------------------------------------------------
def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``annotation`` (itself, or inside a list, tuple or union)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def settings_error(root: type[BaseModel], err: Mapping[str, Any]) -> str | None:
    """For one pydantic error of a document validated by ``root`` (a run config), the
    ``expected ..., got ...`` text of :func:`expectation` when the field at the error's
    location belongs to a :class:`Settings` model (a training objective's, say), so that a YAML
    error reads as the same field's error from the Python API; None for any other error."""
    if err.get("type") in ("value_error", "missing", "extra_forbidden"):
        return None
    model: type[BaseModel] | None = root
    owner, info = None, None
    for part in err.get("loc", ()):
        if isinstance(part, int):
            continue  # an item of a list
        if model is None or part not in model.model_fields:
            return None
        owner, info = model, model.model_fields[part]
        model = _model_in(info.annotation)
    if owner is None or info is None or not issubclass(owner, Settings):
        return None
    return f"expected {expectation(info)}, got {err.get('input')!r}"


# -- the command line ----------------------------------------------------------------------
def parse_setting(model: type[Settings], key: str, raw: str, *, where: str) -> Any:
    """The value of ``-p key=raw`` coerced by the field's type: a string-valued field (a string,
    a choice) takes ``raw`` as written; any other field takes its YAML value (``1000``,
    ``0.5``, ``1e-3``, ``true``, ``null``, ``[1.0, 1.2]``). Validation is left to
    :func:`check_settings`."""
    if key not in model.model_fields:
        raise ConfigError(
            f"{where}: unknown setting {key!r}; expected one of {list(model.model_fields)}"
        )
    members, nullable = _parts(model.model_fields[key].annotation)
    if all(m is str or get_origin(m) is Literal for m in members) and not (
        nullable and raw.strip().lower() in ("null", "none", "~", "")
    ):
        return raw
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"{where}.{key}: cannot parse {raw!r}") from None
    if isinstance(value, str) and float in members:
        try:
            return float(value)  # YAML 1.1 reads 1e-3 as a string
        except ValueError:
            return value
    return value
