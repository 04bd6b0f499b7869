"""Data sets for bastion: loading, validating, splitting and fingerprinting.

``load_dataset(name, ...)`` returns a :class:`Dataset` with float32 inputs in ``bounds`` and
int64 labels, split deterministically by seed. Available: ``digits`` (embedded default),
``mnist`` (IDX files; see :func:`download_mnist`), ``breast-cancer`` and ``csv`` (a CSV file
described by a :class:`TabularSchema`).
"""

from __future__ import annotations

from bastion.data.core import Dataset, Split, fingerprint_arrays
from bastion.data.idx import read_idx
from bastion.data.mnist import download_mnist
from bastion.data.registry import available_datasets, load_dataset
from bastion.data.schema import FeatureSpec, TabularSchema, load_schema

__all__ = [
    "Dataset",
    "FeatureSpec",
    "Split",
    "TabularSchema",
    "available_datasets",
    "download_mnist",
    "fingerprint_arrays",
    "load_dataset",
    "load_schema",
    "read_idx",
]
