"""Loading data sets by name."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from bastion.data.core import Dataset, check_fraction, check_fractions, check_seed
from bastion.data.digits import load_digits_dataset
from bastion.data.files import load_factory, load_image_folder, load_npz
from bastion.data.mnist import load_mnist
from bastion.data.tabular import load_breast_cancer_dataset, load_csv
from bastion.errors import DataError

_NAMES = ("breast-cancer", "csv", "digits", "factory", "image-folder", "mnist", "npz")
_WITH_PATH = ("csv", "image-folder", "npz")


def available_datasets() -> tuple[str, ...]:
    """Names :func:`load_dataset` accepts, sorted: breast-cancer, csv, digits, factory,
    image-folder, mnist, npz."""
    return _NAMES


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    path: str | os.PathLike[str] | None = None,
    schema: str | os.PathLike[str] | None = None,
    image_size: Sequence[int] | None = None,
    channels: int | None = None,
    factory: str | None = None,
    factory_kwargs: dict[str, Any] | None = None,
    python_path: Sequence[str | os.PathLike[str]] = (),
) -> Dataset:
    """Load a data set by name, split deterministically by ``seed``.

    Args:
        name: one of :func:`available_datasets`:

            * ``"digits"`` (the embedded default): sklearn's 8x8 digits, ``(1, 8, 8)`` inputs.
            * ``"mnist"``: the four IDX files from ``data_dir`` (else ``$BASTION_DATA``, or its
              ``mnist/`` subdirectory), ``(1, 28, 28)`` inputs; test is the official test set.
            * ``"breast-cancer"``: sklearn's breast cancer set, ``(30,)`` inputs.
            * ``"csv"``: the CSV file ``path`` described by the schema file ``schema``.
            * ``"image-folder"``: images under ``path/<class>/`` (PNG/JPEG), converted to
              ``channels`` and resized to ``image_size`` (see
              :func:`bastion.data.files.load_image_folder`).
            * ``"npz"``: the NumPy archive ``path`` with ``x``, ``y`` and optionally
              ``classes`` (see :func:`bastion.data.files.load_npz`).
            * ``"factory"``: the ``torch.utils.data.Dataset`` that ``factory``
              (``"package.module:function"``, called with ``factory_kwargs``, with
              ``python_path`` on the import path) returns (see
              :func:`bastion.data.files.load_factory`).
        data_dir: directory holding MNIST (ignored by the other sets).
        seed: seeds the split (``numpy.random.default_rng(seed)``; global RNGs are untouched).
        val_fraction: share of the examples (MNIST: of the 60,000 training images) held out
            for validation; ``0 <= val_fraction < 1``.
        test_fraction: share held out for testing, ``0 < test_fraction < 1`` with
            ``val_fraction + test_fraction < 1``; ignored (and not validated) for MNIST, whose
            test split is the official one.
        path, schema: the CSV file and its schema file (``"csv"`` only; both required there).

    Returns:
        A :class:`Dataset` whose splits are disjoint; the sets without an official split are
        split stratified by class. Inputs lie in ``bounds == (0.0, 1.0)``.

    Raises:
        DataError: for an unknown name (listing the available ones), a bad seed or fraction
            (naming the field), misplaced or missing ``path``/``schema``, or any problem with
            the data itself (naming the file, and the row and column where relevant).
    """
    _check_arguments(
        name,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        path=path,
        schema=schema,
        image_size=image_size,
        channels=channels,
        factory=factory,
    )
    if factory is not None:
        return load_factory(
            factory,
            kwargs=factory_kwargs,
            python_path=python_path,
            seed=seed,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
        )
    if name in ("image-folder", "npz"):
        return _load_file_set(name, path, seed, val_fraction, test_fraction, image_size, channels)
    if name in ("digits", "breast-cancer"):
        builtin = load_digits_dataset if name == "digits" else load_breast_cancer_dataset
        return builtin(seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    if name == "mnist":
        return load_mnist(data_dir, seed=seed, val_fraction=val_fraction)
    return _load_csv_set(path, schema, seed, val_fraction, test_fraction)


def _load_csv_set(
    path: str | os.PathLike[str] | None,
    schema: str | os.PathLike[str] | None,
    seed: int,
    val_fraction: float,
    test_fraction: float,
) -> Dataset:
    """The ``csv`` data set; :class:`DataError` naming ``path`` and/or ``schema`` when
    either is missing."""
    if path is None or schema is None:
        missing = " and ".join(f for f, v in (("path", path), ("schema", schema)) if v is None)
        raise DataError(
            f"csv: {missing} required: the CSV file and its YAML or JSON schema file "
            "(data.path and data.schema in a config, --path and --schema on the command line, "
            "path= and schema= in Python)"
        )
    return load_csv(path, schema, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)


def _check_arguments(
    name: str,
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    path: str | os.PathLike[str] | None,
    schema: str | os.PathLike[str] | None,
    image_size: Sequence[int] | None,
    channels: int | None,
    factory: str | None,
) -> None:
    """:class:`DataError` naming the field for an unknown data set name, a bad seed or
    fraction, or an argument the named set does not use (or a ``factory`` it lacks)."""
    if name not in _NAMES:
        raise DataError(
            f"unknown data set {name!r} (expected one of {', '.join(available_datasets())})"
        )
    check_seed(seed)
    if name == "mnist":
        check_fraction("val_fraction", val_fraction, allow_zero=True)
    else:
        check_fractions(val_fraction, test_fraction)
    if name not in _WITH_PATH and path is not None:
        raise DataError(f"path: only used by the {', '.join(_WITH_PATH)} data sets, not {name!r}")
    if name != "csv" and schema is not None:
        raise DataError(f"schema: only used by the 'csv' data set, not {name!r}")
    if name != "image-folder" and (image_size is not None or channels is not None):
        raise DataError(f"image_size, channels: only used by 'image-folder', not {name!r}")
    if (factory is not None) != (name == "factory"):
        raise DataError(
            "factory: required by the 'factory' data set and used by no other"
            if factory is None
            else f"factory: only used by the 'factory' data set, not {name!r}"
        )


def _load_file_set(
    name: str,
    path: str | os.PathLike[str] | None,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    image_size: Sequence[int] | None,
    channels: int | None,
) -> Dataset:
    if path is None:
        raise DataError(
            f"{name}: path required (data.path in a config, --path on the command line)"
        )
    if name == "npz":
        return load_npz(path, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    return load_image_folder(
        path,
        image_size=image_size,
        channels=channels,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )
