"""Schemas for tabular data: feature types, raw bounds, categories and which features may change.

A :class:`TabularSchema` maps raw rows (one value per feature; a categorical feature's value is
its category index) to the encoded unit space models see (numeric features min-max scaled into
[0, 1] by the schema's bounds, categorical features one-hot encoded) and back.

Schema files are YAML or JSON::

    target: label            # column holding the class
    classes: [legit, fraud]  # optional; else the sorted unique values of the target column
    features:
      - {name: amount, type: float, min: 0, max: 10000}
      - {name: n_items, type: integer, min: 1, max: 50}
      - {name: age, type: float, min: 18, max: 100, immutable: true}
      - {name: channel, type: categorical, categories: [web, store, phone]}
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import numpy as np
import numpy.typing as npt
import torch
import yaml  # type: ignore[import-untyped, unused-ignore]

from bastion.errors import DataError

FeatureType = Literal["float", "integer", "categorical"]
FEATURE_TYPES: tuple[FeatureType, ...] = ("float", "integer", "categorical")

_FEATURE_KEYS = ("name", "type", "min", "max", "immutable", "categories")
_SCHEMA_KEYS = ("target", "classes", "features")


def format_number(value: float) -> str:
    """Format a bound for messages: whole numbers without a trailing ``.0``."""
    if math.isfinite(value) and float(value).is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(float(value))


def _validate_feature(
    where: str,
    name: object,
    kind: object,
    low: float | None,
    high: float | None,
    immutable: object,
    categories: tuple[str, ...],
) -> None:
    """Check one feature's values; messages are prefixed with ``where`` (e.g. a field path)."""
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"{where}.name: expected a non-empty string, got {name!r}")
    if kind not in FEATURE_TYPES:
        raise DataError(f"{where}.type: expected one of {', '.join(FEATURE_TYPES)}, got {kind!r}")
    if not isinstance(immutable, bool):
        raise DataError(f"{where}.immutable: expected true or false, got {immutable!r}")
    if kind == "categorical":
        for key, value in (("min", low), ("max", high)):
            if value is not None:
                raise DataError(f"{where}.{key}: not allowed for a categorical feature")
        if not categories:
            raise DataError(f"{where}.categories: expected a non-empty list of category names")
        for position, category in enumerate(categories):
            if not isinstance(category, str) or not category:
                raise DataError(
                    f"{where}.categories[{position}]: expected a non-empty string, got {category!r}"
                )
        if len(set(categories)) != len(categories):
            duplicates = sorted({c for c in categories if categories.count(c) > 1})
            raise DataError(
                f"{where}.categories: expected distinct names, got duplicates {duplicates}"
            )
        return
    if categories:
        raise DataError(f"{where}.categories: only allowed for a categorical feature")
    for key, value in (("min", low), ("max", high)):
        if value is None:
            raise DataError(f"{where}.{key}: required for a {kind} feature")
        if not math.isfinite(value):
            raise DataError(f"{where}.{key}: expected a finite number, got {value!r}")
        if kind == "integer" and not float(value).is_integer():
            raise DataError(
                f"{where}.{key}: expected a whole number for an integer feature, got {value!r}"
            )
    assert low is not None and high is not None
    if not high > low:
        raise DataError(
            f"{where}.max: expected a number greater than min ({format_number(low)}), "
            f"got {format_number(high)}"
        )


@dataclass(frozen=True)
class FeatureSpec:
    """One raw feature (one CSV column).

    Attributes:
        name: column name in the CSV file.
        type: ``"float"``, ``"integer"`` (whole numbers) or ``"categorical"``.
        min, max: raw bounds of a numeric feature (``min < max``; whole numbers for integers);
            ``None`` for a categorical feature.
        immutable: whether an attacker (or a counterfactual) may not change this feature.
        categories: allowed values of a categorical feature, in one-hot column order; empty for
            numeric features.

    Construction validates all of the above and raises :class:`DataError` naming the field.
    """

    name: str
    type: FeatureType
    min: float | None = None
    max: float | None = None
    immutable: bool = False
    categories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        categories = self.categories
        if isinstance(categories, str) or not isinstance(categories, Sequence):
            raise DataError(
                f"features[{self.name!r}].categories: expected a list of names, got {categories!r}"
            )
        object.__setattr__(self, "categories", tuple(categories))
        for key in ("min", "max"):
            value = getattr(self, key)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise DataError(
                        f"features[{self.name!r}].{key}: expected a number, got {value!r}"
                    )
                object.__setattr__(self, key, float(value))
        _validate_feature(
            f"features[{self.name!r}]",
            self.name,
            self.type,
            self.min,
            self.max,
            self.immutable,
            self.categories,
        )

    @property
    def width(self) -> int:
        """Number of encoded columns: the number of categories, or 1 for a numeric feature."""
        return len(self.categories) if self.type == "categorical" else 1

    @property
    def columns(self) -> list[str]:
        """Encoded column names: ``name`` or ``name=category`` per category."""
        if self.type == "categorical":
            return [f"{self.name}={category}" for category in self.categories]
        return [self.name]

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable form, accepted back by :meth:`TabularSchema.from_dict`."""
        out: dict[str, object] = {"name": self.name, "type": self.type}
        if self.type == "categorical":
            out["categories"] = list(self.categories)
        else:
            out["min"] = self.min
            out["max"] = self.max
        out["immutable"] = self.immutable
        return out


@dataclass(frozen=True)
class TabularSchema:
    """The columns of a tabular data set and how they are encoded.

    Attributes:
        target: name of the CSV column holding the class label.
        classes: class names in index order; may be empty in a schema file (the loader then
            fills in the sorted unique target values); a loaded data set's schema always has them.
        features: the raw features, in encoded column order (at least one; distinct names, none
            equal to ``target``).

    Encoded (unit) space has ``len(columns)`` values per row, each in [0, 1]; a categorical
    feature occupies one 0/1 column per category.
    """

    target: str
    classes: tuple[str, ...]
    features: tuple[FeatureSpec, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "features", tuple(self.features))
        if not isinstance(self.target, str) or not self.target.strip():
            raise DataError(f"schema.target: expected a non-empty column name, got {self.target!r}")
        for position, name in enumerate(self.classes):
            if not isinstance(name, str) or not name:
                raise DataError(
                    f"schema.classes[{position}]: expected a non-empty string, got {name!r}"
                )
        if len(set(self.classes)) != len(self.classes):
            raise DataError(f"schema.classes: expected distinct names, got {list(self.classes)}")
        if len(self.classes) == 1:
            raise DataError(
                f"schema.classes: expected at least two classes, got {list(self.classes)}"
            )
        if not self.features:
            raise DataError("schema.features: expected at least one feature")
        seen: set[str] = set()
        for position, feature in enumerate(self.features):
            if not isinstance(feature, FeatureSpec):
                raise DataError(
                    f"schema.features[{position}]: expected a FeatureSpec, "
                    f"got {type(feature).__name__}"
                )
            if feature.name == self.target:
                raise DataError(
                    f"schema.features[{position}].name: {feature.name!r} is also the target "
                    "column; the target cannot be a feature"
                )
            if feature.name in seen:
                raise DataError(
                    f"schema.features[{position}].name: duplicate feature name {feature.name!r}"
                )
            seen.add(feature.name)

    # ----------------------------------------------------------------- encoded column layout

    @property
    def feature_names(self) -> list[str]:
        """Raw feature names in order (``len == n_features``)."""
        return [feature.name for feature in self.features]

    @property
    def columns(self) -> list[str]:
        """Encoded column names after one-hot expansion, e.g. ``["amount", "channel=web", ...]``."""
        return [column for feature in self.features for column in feature.columns]

    @property
    def n_features(self) -> int:
        """Number of raw features."""
        return len(self.features)

    def _expand(self, flags: list[bool]) -> torch.Tensor:
        """Repeat one flag per feature over that feature's encoded columns."""
        values = [
            flag
            for feature, flag in zip(self.features, flags, strict=True)
            for _ in range(feature.width)
        ]
        return torch.tensor(values, dtype=torch.bool)

    def immutable_mask(self) -> torch.Tensor:
        """Bool tensor of shape ``(len(columns),)``: True where the column must not change."""
        return self._expand([feature.immutable for feature in self.features])

    def integer_mask(self) -> torch.Tensor:
        """Bool tensor of shape ``(len(columns),)``: True for columns of integer features."""
        return self._expand([feature.type == "integer" for feature in self.features])

    def categorical_groups(self) -> list[list[int]]:
        """Encoded column indices of each categorical feature, in feature order."""
        groups: list[list[int]] = []
        start = 0
        for feature in self.features:
            if feature.type == "categorical":
                groups.append(list(range(start, start + feature.width)))
            start += feature.width
        return groups

    # ----------------------------------------------------------------------- conversions

    def to_unit(self, raw: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Encode raw rows into unit space.

        Args:
            raw: shape ``(N, n_features)`` or ``(n_features,)``: numeric features in raw units
                within ``[min, max]`` (whole numbers for integer features), categorical features
                as the category index (0-based, into ``categories``).

        Returns:
            float64 array of shape ``(N, len(columns))`` (or ``(len(columns),)``) with values in
            [0, 1]; categorical groups are one-hot.

        Raises:
            DataError: naming the row and feature of a value that is non-finite, out of bounds,
                not a whole number where one is required, or not a valid category index.
        """
        try:
            array = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"to_unit: expected numeric raw rows, got {exc}") from exc
        single = array.ndim == 1
        rows = array[None, :] if single else array
        if rows.ndim != 2 or rows.shape[1] != self.n_features:
            raise DataError(
                f"to_unit: expected raw rows of shape (N, {self.n_features}), "
                f"got {tuple(array.shape)}"
            )
        out = np.zeros((rows.shape[0], len(self.columns)), dtype=np.float64)
        start = 0
        for j, feature in enumerate(self.features):
            values = rows[:, j]
            _check_raw_column(feature, values)
            if feature.type == "categorical":
                out[np.arange(rows.shape[0]), start + values.astype(np.int64)] = 1.0
            else:
                low, high = _bounds(feature)
                out[:, start] = np.clip((values - low) / (high - low), 0.0, 1.0)
            start += feature.width
        return out[0] if single else out

    def from_unit(self, unit: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Decode unit-space rows back into raw rows (the inverse of :meth:`to_unit`).

        Args:
            unit: shape ``(N, len(columns))`` or ``(len(columns),)``; finite values.

        Returns:
            float64 array of shape ``(N, n_features)`` (or ``(n_features,)``). Unit values are
            clipped into [0, 1] first; integer features are rounded to the nearest whole number;
            a categorical feature decodes to the index of its largest column (first on ties).
            ``from_unit(to_unit(x))`` equals ``x`` up to float64 rounding (exactly for integer
            and categorical features).
        """
        try:
            array = np.asarray(unit, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"from_unit: expected numeric unit rows, got {exc}") from exc
        width = len(self.columns)
        single = array.ndim == 1
        rows = array[None, :] if single else array
        if rows.ndim != 2 or rows.shape[1] != width:
            raise DataError(
                f"from_unit: expected unit rows of shape (N, {width}), got {tuple(array.shape)}"
            )
        if not np.all(np.isfinite(rows)):
            bad_row = int(np.argwhere(~np.isfinite(rows))[0][0])
            raise DataError(f"from_unit: row {bad_row} holds a non-finite value")
        rows = np.clip(rows, 0.0, 1.0)
        out = np.zeros((rows.shape[0], self.n_features), dtype=np.float64)
        start = 0
        for j, feature in enumerate(self.features):
            if feature.type == "categorical":
                out[:, j] = np.argmax(rows[:, start : start + feature.width], axis=1)
            else:
                low, high = _bounds(feature)
                values = np.clip(low + rows[:, start] * (high - low), low, high)
                out[:, j] = np.rint(values) if feature.type == "integer" else values
            start += feature.width
        return out[0] if single else out

    # ----------------------------------------------------------------- (de)serialisation

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable form; ``TabularSchema.from_dict(s.to_dict()) == s``."""
        return {
            "target": self.target,
            "classes": list(self.classes),
            "features": [feature.to_dict() for feature in self.features],
        }

    @classmethod
    def from_dict(cls, data: object, *, source: str = "schema") -> TabularSchema:
        """Parse and validate a schema mapping (as read from YAML or JSON).

        Raises:
            DataError: naming ``source`` and the field path, e.g.
                ``"fraud.yaml: schema.features[2].max: expected a number greater than min (18),
                got 10"``.
        """
        try:
            return _parse_schema(data)
        except DataError as exc:
            raise DataError(f"{source}: {exc}") from None


def _bounds(feature: FeatureSpec) -> tuple[float, float]:
    assert feature.min is not None and feature.max is not None
    return feature.min, feature.max


def _check_raw_column(feature: FeatureSpec, values: npt.NDArray[np.float64]) -> None:
    """Raise DataError naming the first row where ``values`` is not valid for ``feature``."""
    where = f"to_unit: feature {feature.name!r}"
    finite = np.isfinite(values)
    if not np.all(finite):
        row = int(np.flatnonzero(~finite)[0])
        raise DataError(f"{where}, row {row}: value {float(values[row])!r} is not finite")
    if feature.type == "categorical":
        valid = (values == np.round(values)) & (values >= 0) & (values < feature.width)
        if not np.all(valid):
            row = int(np.flatnonzero(~valid)[0])
            raise DataError(
                f"{where}, row {row}: expected a category index in 0..{feature.width - 1}, "
                f"got {float(values[row])!r}"
            )
        return
    low, high = _bounds(feature)
    inside = (values >= low) & (values <= high)
    if not np.all(inside):
        row = int(np.flatnonzero(~inside)[0])
        raise DataError(
            f"{where}, row {row}: value {float(values[row])!r} is outside the schema bounds "
            f"[{format_number(low)}, {format_number(high)}]"
        )
    if feature.type == "integer":
        whole = values == np.round(values)
        if not np.all(whole):
            row = int(np.flatnonzero(~whole)[0])
            raise DataError(
                f"{where}, row {row}: expected a whole number, got {float(values[row])!r}"
            )


# --------------------------------------------------------------------------- parsing


def _parse_number(where: str, value: object) -> float:
    if isinstance(value, bool):
        raise DataError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise DataError(f"{where}: expected a number, got {value!r}")


def _parse_name_list(where: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list):
        raise DataError(f"{where}: expected a list of names, got {value!r}")
    names: list[str] = []
    for position, item in enumerate(value):
        if isinstance(item, bool):
            raise DataError(
                f"{where}[{position}]: expected a string, got {item!r} (quote YAML words such "
                "as yes, no, on and off)"
            )
        if not isinstance(item, str | int):
            raise DataError(f"{where}[{position}]: expected a string, got {item!r}")
        names.append(str(item))
    return tuple(names)


def _parse_feature(where: str, raw: object) -> FeatureSpec:
    if not isinstance(raw, Mapping):
        raise DataError(
            f"{where}: expected a mapping with name, type and bounds or categories, got {raw!r}"
        )
    for key in raw:
        if key not in _FEATURE_KEYS:
            raise DataError(
                f"{where}: unknown key {key!r} (expected some of {', '.join(_FEATURE_KEYS)})"
            )
    for key in ("name", "type"):
        if key not in raw:
            raise DataError(f"{where}.{key}: required")
    name = raw["name"]
    kind = raw["type"]
    low = _parse_number(f"{where}.min", raw["min"]) if raw.get("min") is not None else None
    high = _parse_number(f"{where}.max", raw["max"]) if raw.get("max") is not None else None
    immutable = raw.get("immutable", False)
    categories = (
        _parse_name_list(f"{where}.categories", raw["categories"])
        if raw.get("categories") is not None
        else ()
    )
    _validate_feature(where, name, kind, low, high, immutable, categories)
    return FeatureSpec(
        name=cast(str, name),
        type=cast(FeatureType, kind),
        min=low,
        max=high,
        immutable=cast(bool, immutable),
        categories=categories,
    )


def _parse_schema(data: object) -> TabularSchema:
    if not isinstance(data, Mapping):
        raise DataError(
            "schema: expected a mapping with keys target, features (and optional classes), "
            f"got {type(data).__name__}"
        )
    for key in data:
        if key not in _SCHEMA_KEYS:
            raise DataError(
                f"schema: unknown key {key!r} (expected some of {', '.join(_SCHEMA_KEYS)})"
            )
    if "target" not in data:
        raise DataError("schema.target: required (the column holding the class label)")
    target = data["target"]
    if not isinstance(target, str) or not target.strip():
        raise DataError(f"schema.target: expected a non-empty column name, got {target!r}")
    classes = (
        _parse_name_list("schema.classes", data["classes"])
        if data.get("classes") is not None
        else ()
    )
    if "features" not in data:
        raise DataError("schema.features: required (a list of feature descriptions)")
    raw_features = data["features"]
    if not isinstance(raw_features, list) or not raw_features:
        raise DataError(
            f"schema.features: expected a non-empty list of features, got {raw_features!r}"
        )
    features = tuple(
        _parse_feature(f"schema.features[{position}]", raw)
        for position, raw in enumerate(raw_features)
    )
    return TabularSchema(target=target, classes=classes, features=features)


def load_schema(path: str | os.PathLike[str]) -> TabularSchema:
    """Read and validate a schema file (JSON when the name ends in ``.json``, else YAML).

    Raises:
        DataError: naming the file when it is missing, unreadable or not valid YAML/JSON, and the
            field path when its content is invalid.
    """
    file = Path(path)
    try:
        raw_bytes = file.read_bytes()
    except FileNotFoundError:
        raise DataError(f"schema file {file} does not exist") from None
    except OSError as exc:
        raise DataError(f"schema file {file} cannot be read: {exc.strerror or exc}") from None
    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"schema file {file} is not valid UTF-8 (byte offset {exc.start})"
        ) from None
    try:
        if file.suffix.lower() == ".json":
            data: object = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"schema file {file} is not valid JSON: {exc.msg} (line {exc.lineno}, "
            f"column {exc.colno})"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        place = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise DataError(f"schema file {file} is not valid YAML: {problem}{place}") from None
    return TabularSchema.from_dict(data, source=str(file))
