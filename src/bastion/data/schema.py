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
      - {name: channel, type: categorical, categories: [web, store, phone], cost: 0.2}
      - {name: credit_limit, type: float, min: 0, max: 20000}
    relations:               # optional: linear relations between raw feature values
      - expr: "amount <= credit_limit"
      - {name: basket, terms: {amount: 1, n_items: -50}, op: "<=", value: 0}

``cost`` (optional, default 1, a positive number) is how expensive a feature is for an attacker
to change: under a cost-aware threat model a feature of cost ``c`` moves at most ``eps / c``
(in unit space). A relation is either ``expr``, a linear (in)equality over feature names such as
``"total == amount + 0.5 * shipping"`` (operators ``<=``, ``>=``, ``==``), or the structured
form ``terms`` (feature -> coefficient), ``op`` and ``value``, meaning
``sum(coef * feature) op value`` over raw values. Either form takes an optional ``name`` (used
in messages) and ``tol`` (absolute tolerance in raw units; default ``1e-6`` times the
relation's scale). Categorical features cannot appear in relations.
"""

from __future__ import annotations

import json
import math
import os
import re
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

_FEATURE_KEYS = ("name", "type", "min", "max", "immutable", "categories", "cost")
_SCHEMA_KEYS = ("target", "classes", "features", "relations")
_RELATION_KEYS = ("name", "expr", "terms", "op", "value", "tol")

RelationOp = Literal["<=", "=="]
RELATION_TOLERANCE = 1e-6


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
        cost: how expensive the feature is for an attacker to change (a finite number > 0,
            default 1); a cost-aware threat lets a feature of cost ``c`` move ``eps / c``.

    Construction validates all of the above and raises :class:`DataError` naming the field.
    """

    name: str
    type: FeatureType
    min: float | None = None
    max: float | None = None
    immutable: bool = False
    categories: tuple[str, ...] = ()
    cost: float = 1.0

    def __post_init__(self) -> None:
        cost = self.cost
        if (
            isinstance(cost, bool)
            or not isinstance(cost, int | float)
            or not math.isfinite(cost)
            or cost <= 0
        ):
            raise DataError(
                f"features[{self.name!r}].cost: expected a finite number > 0, got {cost!r}"
            )
        object.__setattr__(self, "cost", float(cost))
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
        if self.cost != 1.0:
            out["cost"] = self.cost
        return out


_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_.]*)|(?P<op><=|>=|==)|(?P<sym>[-+*]))"
)


def _parse_side(where: str, tokens: list[tuple[str, str]]) -> tuple[dict[str, float], float]:
    """Parse ``term (+|- term)*`` where a term is ``[number [*]] name``, ``name [* number]`` or
    ``number``; returns (coefficient per name, constant)."""
    coefs: dict[str, float] = {}
    constant = 0.0
    i = 0
    if not tokens:
        raise DataError(f"{where}: expected a linear expression on both sides of the operator")
    while i < len(tokens):
        sign = 1.0
        while i < len(tokens) and tokens[i] in (("sym", "+"), ("sym", "-")):
            sign = -sign if tokens[i][1] == "-" else sign
            i += 1
        factor, name = 1.0, None
        if i < len(tokens) and tokens[i][0] == "num":
            factor = float(tokens[i][1])
            i += 1
            if i < len(tokens) and tokens[i] == ("sym", "*"):
                i += 1
                if i >= len(tokens) or tokens[i][0] != "name":
                    raise DataError(f"{where}: expected a feature name after '*'")
            if i < len(tokens) and tokens[i][0] == "name":
                name = tokens[i][1]
                i += 1
        elif i < len(tokens) and tokens[i][0] == "name":
            name = tokens[i][1]
            i += 1
            if i < len(tokens) and tokens[i] == ("sym", "*"):
                i += 1
                if i >= len(tokens) or tokens[i][0] != "num":
                    raise DataError(f"{where}: expected a number after '{name} *'")
                factor = float(tokens[i][1])
                i += 1
        else:
            got = tokens[i][1] if i < len(tokens) else "the end"
            raise DataError(f"{where}: expected a number or a feature name, got {got!r}")
        if name is None:
            constant += sign * factor
        else:
            coefs[name] = coefs.get(name, 0.0) + sign * factor
        if i < len(tokens) and tokens[i] not in (("sym", "+"), ("sym", "-")):
            raise DataError(f"{where}: expected '+' or '-' between terms, got {tokens[i][1]!r}")
    return coefs, constant


def parse_relation_expr(
    text: str, *, where: str = "relation"
) -> tuple[dict[str, float], RelationOp, float]:
    """Parse a linear relation such as ``"total == amount + 0.5 * shipping - 2"``.

    Returns ``(terms, op, value)`` with the relation in the canonical form
    ``sum(terms[name] * name) op value`` and ``op`` in ``{"<=", "=="}`` (``a >= b`` becomes
    ``b - a <= 0``). Raises :class:`DataError` prefixed with ``where`` for a malformed text.
    """
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}.expr: expected a relation such as 'a <= b', got {text!r}")
    tokens: list[tuple[str, str]] = []
    pos = 0
    stripped = text.rstrip()
    while pos < len(stripped):
        match = _TOKEN.match(stripped, pos)
        if match is None or match.end() == pos:
            raise DataError(
                f"{where}.expr: cannot read {stripped[pos:].strip()!r} in {text!r} (expected "
                "numbers, feature names, + - * and one of <= >= ==)"
            )
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    ops = [i for i, (kind, _) in enumerate(tokens) if kind == "op"]
    if len(ops) != 1:
        raise DataError(
            f"{where}.expr: expected exactly one of <=, >=, == in {text!r}, got {len(ops)}"
        )
    split = ops[0]
    left, lconst = _parse_side(f"{where}.expr", tokens[:split])
    right, rconst = _parse_side(f"{where}.expr", tokens[split + 1 :])
    op_text = tokens[split][1]
    terms = dict(left)
    for name, coef in right.items():
        terms[name] = terms.get(name, 0.0) - coef
    value = rconst - lconst
    if op_text == ">=":
        terms = {name: -coef for name, coef in terms.items()}
        value = -value
    op: RelationOp = "==" if op_text == "==" else "<="
    return terms, op, value


@dataclass(frozen=True)
class Relation:
    """A linear relation between raw feature values: ``sum(coef * feature) op value``.

    Attributes:
        name: names the relation in messages (the source text for ``expr`` relations).
        terms: ``(feature name, coefficient)`` pairs (distinct names, non-zero coefficients).
        op: ``"<="`` or ``"=="``.
        value: the right-hand side, in raw units.
        tol: absolute tolerance in raw units; ``None`` means ``1e-6`` times the relation's
            scale (see :meth:`tolerance`).
    """

    name: str
    terms: tuple[tuple[str, float], ...]
    op: RelationOp = "<="
    value: float = 0.0
    tol: float | None = None

    def __post_init__(self) -> None:
        where = f"relation {self.name!r}"
        if not isinstance(self.name, str) or not self.name.strip():
            raise DataError(f"relation.name: expected a non-empty string, got {self.name!r}")
        if self.op not in ("<=", "=="):
            raise DataError(f"{where}.op: expected '<=' or '==', got {self.op!r}")
        terms = tuple((str(name), float(coef)) for name, coef in self.terms)
        terms = tuple((name, coef) for name, coef in terms if coef != 0.0)
        if not terms:
            raise DataError(f"{where}: expected at least one feature with a non-zero coefficient")
        names = [name for name, _ in terms]
        if len(set(names)) != len(names):
            raise DataError(f"{where}.terms: a feature appears more than once: {names}")
        for name, coef in terms:
            if not math.isfinite(coef):
                raise DataError(f"{where}.terms[{name!r}]: expected a finite coefficient")
        object.__setattr__(self, "terms", terms)
        if not math.isfinite(float(self.value)):
            raise DataError(f"{where}.value: expected a finite number, got {self.value!r}")
        object.__setattr__(self, "value", float(self.value))
        if self.tol is not None:
            if not math.isfinite(float(self.tol)) or float(self.tol) < 0:
                raise DataError(f"{where}.tol: expected a finite number >= 0, got {self.tol!r}")
            object.__setattr__(self, "tol", float(self.tol))

    @classmethod
    def parse(cls, text: str, *, name: str | None = None, tol: float | None = None) -> Relation:
        """A relation from its text, e.g. ``Relation.parse("amount <= credit_limit")``."""
        terms, op, value = parse_relation_expr(text, where=f"relation {name or text!r}")
        return cls(
            name=name or text.strip(), terms=tuple(terms.items()), op=op, value=value, tol=tol
        )

    @property
    def feature_names(self) -> list[str]:
        return [name for name, _ in self.terms]

    def tolerance(self, features: Mapping[str, FeatureSpec]) -> float:
        """The absolute slack allowed when checking raw values: ``tol`` when set, else
        ``1e-6 * (sum |coef| * max(|min|, |max|) + |value|)`` (at least ``1e-9``)."""
        if self.tol is not None:
            return self.tol
        scale = abs(self.value)
        for name, coef in self.terms:
            spec = features[name]
            scale += abs(coef) * max(abs(spec.min or 0.0), abs(spec.max or 0.0))
        return max(RELATION_TOLERANCE * scale, 1e-9)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "name": self.name,
            "terms": dict(self.terms),
            "op": self.op,
            "value": self.value,
        }
        if self.tol is not None:
            out["tol"] = self.tol
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
        relations: linear relations every row must satisfy (raw values; default none). Each
            names only numeric features of this schema.

    Encoded (unit) space has ``len(columns)`` values per row, each in [0, 1]; a categorical
    feature occupies one 0/1 column per category.
    """

    target: str
    classes: tuple[str, ...]
    features: tuple[FeatureSpec, ...]
    relations: tuple[Relation, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "relations", tuple(self.relations))
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
        by_name = {feature.name: feature for feature in self.features}
        relation_names: set[str] = set()
        for position, relation in enumerate(self.relations):
            where = f"schema.relations[{position}] ({relation.name!r})"
            if not isinstance(relation, Relation):
                raise DataError(
                    f"schema.relations[{position}]: expected a Relation, "
                    f"got {type(relation).__name__}"
                )
            if relation.name in relation_names:
                raise DataError(f"{where}.name: duplicate relation name {relation.name!r}")
            relation_names.add(relation.name)
            for name in relation.feature_names:
                if name not in by_name:
                    raise DataError(
                        f"{where}: unknown feature {name!r} (features: "
                        f"{', '.join(self.feature_names)})"
                    )
                if by_name[name].type == "categorical":
                    raise DataError(
                        f"{where}: feature {name!r} is categorical; relations may only name "
                        "float and integer features"
                    )

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

    def cost_vector(self) -> torch.Tensor:
        """Float tensor ``(len(columns),)``: each column's attack cost (its feature's ``cost``)."""
        values = [feature.cost for feature in self.features for _ in range(feature.width)]
        return torch.tensor(values, dtype=torch.float64)

    def relation_slack(self, raw: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """``(N, len(relations))``: ``lhs - value`` per row and relation in raw units (<= 0,
        or 0 for ``==``, when satisfied); ``raw`` as for :meth:`to_unit`, shape
        ``(N, n_features)``."""
        rows = np.atleast_2d(np.asarray(raw, dtype=np.float64))
        index = {name: j for j, name in enumerate(self.feature_names)}
        out = np.zeros((rows.shape[0], len(self.relations)), dtype=np.float64)
        for r, relation in enumerate(self.relations):
            lhs = np.zeros(rows.shape[0], dtype=np.float64)
            for name, coef in relation.terms:
                lhs += coef * rows[:, index[name]]
            out[:, r] = lhs - relation.value
        return out

    def relation_violations(self, raw: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """``(N, len(relations))`` bool: True where a raw row breaks a relation beyond its
        tolerance."""
        slack = self.relation_slack(raw)
        by_name = {feature.name: feature for feature in self.features}
        bad = np.zeros(slack.shape, dtype=bool)
        for r, relation in enumerate(self.relations):
            tol = relation.tolerance(by_name)
            column = slack[:, r]
            bad[:, r] = (np.abs(column) > tol) if relation.op == "==" else (column > tol)
            bad[:, r] |= ~np.isfinite(column)
        return bad

    def check_relations(
        self, raw: npt.ArrayLike, *, where: str = "to_unit", row_offset: int = 0
    ) -> None:
        """Raise :class:`DataError` naming the first row (``row_offset`` + its index) that breaks
        a relation, the relation and the values of the columns it names; ``where`` prefixes the
        message (a file name, say)."""
        if not self.relations:
            return
        rows = np.atleast_2d(np.asarray(raw, dtype=np.float64))
        bad = self.relation_violations(rows)
        if not bad.any():
            return
        row, r = (int(v) for v in np.argwhere(bad)[0])
        relation = self.relations[r]
        index = {name: j for j, name in enumerate(self.feature_names)}
        values = ", ".join(
            f"{name}={format_number(float(rows[row, index[name]]))}"
            for name in relation.feature_names
        )
        slack = float(self.relation_slack(rows[row : row + 1])[0, r])
        raise DataError(
            f"{where}, row {row + row_offset}: violates relation {relation.name!r} "
            f"(columns {values}; lhs - rhs = {slack:.6g}, expected "
            f"{'0' if relation.op == '==' else '<= 0'})"
        )

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
                not a whole number where one is required, or not a valid category index, and the
                row, relation and columns of a row that breaks one of :attr:`relations`.
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
        self.check_relations(rows)
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
        out: dict[str, object] = {
            "target": self.target,
            "classes": list(self.classes),
            "features": [feature.to_dict() for feature in self.features],
        }
        if self.relations:
            out["relations"] = [relation.to_dict() for relation in self.relations]
        return out

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
    cost = _parse_number(f"{where}.cost", raw["cost"]) if raw.get("cost") is not None else 1.0
    if not math.isfinite(cost) or cost <= 0:
        raise DataError(f"{where}.cost: expected a finite number > 0, got {raw['cost']!r}")
    return FeatureSpec(
        name=cast(str, name),
        type=cast(FeatureType, kind),
        min=low,
        max=high,
        immutable=cast(bool, immutable),
        categories=categories,
        cost=cost,
    )


def _parse_relation(where: str, raw: object) -> Relation:
    if isinstance(raw, str):
        raw = {"expr": raw}
    if not isinstance(raw, Mapping):
        raise DataError(f"{where}: expected a mapping with expr (or terms, op, value), got {raw!r}")
    for key in raw:
        if key not in _RELATION_KEYS:
            raise DataError(
                f"{where}: unknown key {key!r} (expected some of {', '.join(_RELATION_KEYS)})"
            )
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise DataError(f"{where}.name: expected a non-empty string, got {name!r}")
    tol = _parse_number(f"{where}.tol", raw["tol"]) if raw.get("tol") is not None else None
    if tol is not None and (not math.isfinite(tol) or tol < 0):
        raise DataError(f"{where}.tol: expected a finite number >= 0, got {raw['tol']!r}")
    op: RelationOp
    if "expr" in raw:
        for key in ("terms", "op", "value"):
            if key in raw:
                raise DataError(f"{where}.{key}: not allowed together with expr")
        expr = raw["expr"]
        if not isinstance(expr, str):
            raise DataError(f"{where}.expr: expected a relation such as 'a <= b', got {expr!r}")
        terms, op, value = parse_relation_expr(expr, where=where)
        label = name if name is not None else expr.strip()
    else:
        if "terms" not in raw or "op" not in raw:
            raise DataError(f"{where}: expected expr, or terms and op (and value)")
        raw_terms = raw["terms"]
        if not isinstance(raw_terms, Mapping) or not raw_terms:
            raise DataError(
                f"{where}.terms: expected a mapping of feature name to coefficient, "
                f"got {raw_terms!r}"
            )
        terms = {
            str(key): _parse_number(f"{where}.terms[{key!r}]", coef)
            for key, coef in raw_terms.items()
        }
        op_text = raw["op"]
        if op_text not in ("<=", ">=", "=="):
            raise DataError(f"{where}.op: expected one of '<=', '>=', '==', got {op_text!r}")
        value = _parse_number(f"{where}.value", raw.get("value", 0.0))
        if op_text == ">=":
            terms = {key: -coef for key, coef in terms.items()}
            value = -value
        op = "==" if op_text == "==" else "<="
        label = (
            name
            if name is not None
            else " + ".join(f"{coef:g}*{key}" for key, coef in terms.items()) + f" {op} {value:g}"
        )
    try:
        return Relation(name=label, terms=tuple(terms.items()), op=op, value=value, tol=tol)
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None


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
    raw_relations = data.get("relations")
    if raw_relations is None:
        raw_relations = []
    if not isinstance(raw_relations, list):
        raise DataError(f"schema.relations: expected a list of relations, got {raw_relations!r}")
    relations = tuple(
        _parse_relation(f"schema.relations[{position}]", raw)
        for position, raw in enumerate(raw_relations)
    )
    return TabularSchema(target=target, classes=classes, features=features, relations=relations)


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
