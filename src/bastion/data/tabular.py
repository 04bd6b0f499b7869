"""Tabular data sets: a generic CSV file described by a schema, and sklearn's breast cancer set.

Both encode features into [0, 1] with :meth:`TabularSchema.to_unit` (numeric features min-max
scaled by the schema's bounds, categorical features one-hot) and split train/val/test with a
seeded stratified split.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bastion.data.core import (
    Dataset,
    assemble,
    check_fractions,
    check_seed,
    fingerprint_arrays,
    split_from_numpy,
    stratified_indices,
)
from bastion.data.schema import FeatureSpec, TabularSchema, format_number, load_schema
from bastion.errors import DataError

_BOM = "\ufeff"


def _parse_cell(feature: FeatureSpec, text: str, lookup: dict[str, int] | None) -> float:
    """Parse one raw cell; raise DataError with the reason (no location) when invalid."""
    value = text.strip()
    if not value:
        raise DataError("missing value (empty field)")
    if lookup is not None:
        index = lookup.get(value)
        if index is None:
            raise DataError(
                f"unknown category {value!r} (expected one of {', '.join(feature.categories)})"
            )
        return float(index)
    try:
        number = float(value)
    except ValueError:
        raise DataError(f"not a number: {value!r}") from None
    if not math.isfinite(number):
        raise DataError(f"not a finite number: {value!r}")
    if feature.type == "integer" and not number.is_integer():
        raise DataError(f"not a whole number: {value!r} (the feature's type is integer)")
    assert feature.min is not None and feature.max is not None
    if not feature.min <= number <= feature.max:
        raise DataError(
            f"value {number!r} is outside the schema bounds "
            f"[{format_number(feature.min)}, {format_number(feature.max)}]"
        )
    return number


def _decode(file: Path) -> str:
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise DataError(f"CSV file {file} does not exist") from None
    except OSError as exc:
        raise DataError(f"CSV file {file} cannot be read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{file}: not valid UTF-8: byte 0x{data[exc.start]:02x} at byte offset {exc.start} "
            f"(line {line}) cannot be decoded; save the file as UTF-8"
        ) from None
    return text.removeprefix(_BOM)


def read_csv_table(
    path: str | os.PathLike[str], schema: TabularSchema
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], TabularSchema]:
    """Parse and validate a CSV file against ``schema``.

    The first row is the header naming the columns; columns not named in the schema are
    ignored; blank lines are skipped; fields are stripped of surrounding whitespace. Data rows
    are numbered from 1 (the first row after the header) in error messages.

    Returns:
        ``(raw, y, schema)``: raw rows, float64 of shape ``(N, n_features)`` (a categorical value
        as its category index); class indices, int64 of shape ``(N,)``; and the schema with
        ``classes`` filled in (the sorted unique target values when the schema lists none).

    Raises:
        DataError: naming the file, and the row and column where relevant, for a missing file,
            non-UTF-8 bytes (with the byte offset), an empty file, a missing column, a row with
            the wrong number of fields, an empty, non-numeric, non-finite, non-whole (integer
            feature) or out-of-bounds value, an unknown category or an unknown class label.
    """
    file = Path(path)
    reader = csv.reader(io.StringIO(_decode(file), newline=""))
    try:
        names = _read_header(file, reader, schema)
        rows, labels = _read_rows(file, reader, schema, names)
    except csv.Error as exc:
        raise DataError(f"{file} line {reader.line_num}: malformed CSV: {exc}") from None
    if not rows:
        raise DataError(f"{file} has a header but no data rows")
    class_index = {name: i for i, name in enumerate(schema.classes)}
    if not class_index:
        classes = tuple(sorted(set(labels)))
        if len(classes) < 2:
            raise DataError(
                f"{file}: column {schema.target!r} holds only the class {classes[0]!r}; "
                "expected at least two classes (or list them in schema.classes)"
            )
        schema = TabularSchema(target=schema.target, classes=classes, features=schema.features)
        class_index = {name: i for i, name in enumerate(classes)}
    raw = np.asarray(rows, dtype=np.float64).reshape(len(rows), schema.n_features)
    y = np.asarray([class_index[label] for label in labels], dtype=np.int64)
    return raw, y, schema


def _read_header(file: Path, reader: Any, schema: TabularSchema) -> list[str]:
    """The header's column names, stripped; :class:`DataError` for an empty file, a blank
    header, a repeated name, or a schema feature or target the header lacks."""
    header = next(reader, None)
    if header is None:
        raise DataError(f"{file} is empty: expected a header row naming the columns")
    if not header:
        raise DataError(f"{file}: line 1 is blank: expected a header row naming the columns")
    names = [name.strip() for name in header]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DataError(f"{file}: header names column(s) {duplicates} more than once")
    for index, feature in enumerate(schema.features):
        if feature.name not in names:
            raise DataError(
                f"{file}: column {feature.name!r} (schema.features[{index}]) is missing from "
                f"the header (columns: {', '.join(names)})"
            )
    if schema.target not in names:
        raise DataError(
            f"{file}: target column {schema.target!r} (schema.target) is missing from the "
            f"header (columns: {', '.join(names)})"
        )
    return names


def _read_rows(
    file: Path, reader: Any, schema: TabularSchema, names: list[str]
) -> tuple[list[list[float]], list[str]]:
    """The data rows after the header (blank lines skipped): each row's feature values (a
    category as its index) and its class label; :class:`DataError` naming the row and column
    for a wrong number of fields, a bad value, or a missing or unknown label."""
    position = {name: index for index, name in enumerate(names)}
    lookups = [
        {category: i for i, category in enumerate(feature.categories)}
        if feature.type == "categorical"
        else None
        for feature in schema.features
    ]
    feature_columns = [position[feature.name] for feature in schema.features]
    target_column = position[schema.target]
    rows: list[list[float]] = []
    labels: list[str] = []
    for record in reader:
        if not record:
            continue
        where = f"{file} row {len(rows) + 1}"
        if len(record) != len(names):
            raise DataError(
                f"{where} (line {reader.line_num}): expected {len(names)} fields as in the "
                f"header, got {len(record)}"
            )
        values: list[float] = []
        for feature, column, lookup in zip(schema.features, feature_columns, lookups, strict=True):
            try:
                values.append(_parse_cell(feature, record[column], lookup))
            except DataError as exc:
                raise DataError(f"{where}, column {feature.name!r}: {exc}") from None
        label = record[target_column].strip()
        if not label:
            raise DataError(f"{where}, column {schema.target!r}: missing class label")
        if schema.classes and label not in schema.classes:
            raise DataError(
                f"{where}, column {schema.target!r}: unknown class label {label!r} "
                f"(expected one of {', '.join(schema.classes)})"
            )
        rows.append(values)
        labels.append(label)
    return rows, labels


def tabular_dataset(
    name: str,
    raw: npt.NDArray[np.float64],
    y: npt.NDArray[np.int64],
    schema: TabularSchema,
    *,
    fingerprint: str,
    seed: int,
    val_fraction: float,
    test_fraction: float,
) -> Dataset:
    """Encode ``raw`` (``(N, n_features)``) with ``schema`` and split it (stratified, seeded)."""
    unit = np.clip(schema.to_unit(raw), 0.0, 1.0).astype(np.float32)
    train, val, test = stratified_indices(
        y,
        len(schema.classes),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
    )
    return assemble(
        name=name,
        kind="tabular",
        train=split_from_numpy(unit[train], y[train]),
        val=split_from_numpy(unit[val], y[val]),
        test=split_from_numpy(unit[test], y[test]),
        classes=schema.classes,
        fingerprint=fingerprint,
        schema=schema,
    )


def load_csv(
    path: str | os.PathLike[str],
    schema: str | os.PathLike[str] | TabularSchema,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> Dataset:
    """Load a CSV file described by a schema (file path or :class:`TabularSchema`).

    ``x`` has shape ``(N, len(schema.columns))`` with values in [0, 1]. The fingerprint covers
    the parsed raw rows, the labels and the schema (not the file's path or formatting).
    """
    check_seed(seed)
    check_fractions(val_fraction, test_fraction)
    spec = schema if isinstance(schema, TabularSchema) else load_schema(schema)
    raw, y, spec = read_csv_table(path, spec)
    schema_bytes = json.dumps(spec.to_dict(), sort_keys=True).encode("utf-8")
    fingerprint = fingerprint_arrays("csv", [raw, y, np.frombuffer(schema_bytes, dtype=np.uint8)])
    return tabular_dataset(
        "csv",
        raw,
        y,
        spec,
        fingerprint=fingerprint,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )


def breast_cancer_schema(raw: npt.NDArray[np.float64], feature_names: list[str]) -> TabularSchema:
    """Schema for the breast cancer set: float features bounded by the full data's min/max."""
    features = tuple(
        FeatureSpec(name=name, type="float", min=float(low), max=float(high))
        for name, low, high in zip(feature_names, raw.min(axis=0), raw.max(axis=0), strict=True)
    )
    return TabularSchema(target="target", classes=("malignant", "benign"), features=features)


def load_breast_cancer_dataset(
    *, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2
) -> Dataset:
    """sklearn's Wisconsin breast cancer set: 569 rows, 30 float features, 2 classes.

    Features are min-max scaled into [0, 1] with bounds from the full data (recorded in the
    schema, so ``schema.from_unit`` recovers raw values); classes are ``("malignant",
    "benign")`` in sklearn's order; the split is stratified.
    """
    check_seed(seed)
    check_fractions(val_fraction, test_fraction)
    from sklearn.datasets import load_breast_cancer  # deferred: sklearn is slow to import

    bunch = load_breast_cancer()
    raw = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    names = [str(name) for name in bunch.feature_names]
    if tuple(str(name) for name in bunch.target_names) != ("malignant", "benign"):
        raise DataError(
            "breast-cancer: expected sklearn's classes ('malignant', 'benign'), "
            f"got {tuple(bunch.target_names)}"
        )
    schema = breast_cancer_schema(raw, names)
    fingerprint = fingerprint_arrays("breast-cancer", [raw, y])
    return tabular_dataset(
        "breast-cancer",
        raw,
        y,
        schema,
        fingerprint=fingerprint,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )
