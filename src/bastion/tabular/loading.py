"""Loading a CSV file whose schema has relations, with file-level error messages."""

from __future__ import annotations

import json
import os

import numpy as np

from bastion.data.core import Dataset, check_fractions, check_seed, fingerprint_arrays
from bastion.data.schema import TabularSchema, load_schema
from bastion.data.tabular import read_csv_table, tabular_dataset


def load_constrained_csv(
    path: str | os.PathLike[str],
    schema: str | os.PathLike[str] | TabularSchema,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> Dataset:
    """As :func:`bastion.data.tabular.load_csv`, but a row that breaks one of the schema's
    relations raises :class:`~bastion.errors.DataError` naming the file, the data row (numbered
    from 1, as the CSV reader numbers them), the relation and its columns' values.

    Returns a tabular :class:`Dataset` with ``x`` ``(N, len(schema.columns))`` in [0, 1].
    """
    check_seed(seed)
    check_fractions(val_fraction, test_fraction)
    spec = schema if isinstance(schema, TabularSchema) else load_schema(schema)
    raw, y, spec = read_csv_table(path, spec)
    spec.check_relations(raw, where=os.fspath(path), row_offset=1)
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
