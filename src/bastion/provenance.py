"""What a saved model records about the data it was trained on, and how a later command gets
the same test split back.

A model's sidecar (``models/<name>.json``) carries, beside the data fingerprint, a ``split``
record: the data set's name, the split seed and fractions, the CSV path and schema where there
are any, and :meth:`~bastion.data.Dataset.split_digest` of the three splits. ``bastion attack``
and ``bastion certify`` load their test examples through :func:`load_model_split`, so an attack's
own ``--seed`` never re-splits the data: drawing a new split would put training examples into
the "test" set (measured: 246 of 359 digits, clean accuracy 98.3% instead of 95.3%). When the
split cannot be proved (a sidecar written before the record existed, or a different data set),
the command says so loudly, or refuses.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bastion.data import Dataset, load_dataset
from bastion.errors import BastionError

__all__ = [
    "SplitSource",
    "check_declared_split",
    "check_model_split",
    "load_model_split",
    "split_record",
]


def split_record(
    data: Dataset,
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    path: str | None = None,
    schema: str | None = None,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
    factory: str | None = None,
    factory_kwargs: dict[str, Any] | None = None,
    python_path: list[str] | None = None,
) -> dict[str, Any]:
    """The sidecar's ``split`` record for a model trained on ``data``."""
    return {
        "factory": factory,
        "factory_kwargs": dict(factory_kwargs or {}),
        "python_path": list(python_path or []),
        "image_size": None if image_size is None else list(image_size),
        "channels": channels,
        "data": data.name,
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "path": None if path is None else os.path.abspath(path),
        "schema": None if schema is None else os.path.abspath(schema),
        "fingerprint": data.fingerprint,
        "digest": data.split_digest(),
    }


@dataclass(frozen=True)
class SplitSource:
    """The data set a command loaded for a model and whether its split is the model's own."""

    data: Dataset
    verified: bool
    note: str


def _record(sidecar: Mapping[str, Any]) -> Mapping[str, Any] | None:
    md = sidecar.get("metadata") or {}
    rec = md.get("split") if isinstance(md, Mapping) else None
    return rec if isinstance(rec, Mapping) else None


def load_model_split(
    sidecar: Mapping[str, Any],
    *,
    data: str | None = None,
    split_seed: int | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    where: str = "MODEL",
    warn: Callable[[str], None] | None = None,
) -> SplitSource:
    """Load the data set and split a saved model was trained on.

    With a ``split`` record in the sidecar, the data set, split seed and fractions come from it
    and the loaded splits must reproduce its digest (else :class:`BastionError`: the files
    differ). ``data`` or ``split_seed`` given explicitly and disagreeing with the record is an
    error too: it would evaluate on training examples. Without a record (an older sidecar), the
    split is drawn from ``split_seed`` (default 0) and ``warn`` is told that it cannot be
    verified.
    """
    rec = _record(sidecar)
    declared = (sidecar.get("metadata") or {}).get("declared_split")
    if rec is None and isinstance(declared, Mapping):
        name = str(declared.get("name"))
        if data is not None and data != name:
            raise BastionError(
                f"--data: the model's reference file declares {name!r}, got {data!r}"
            )
        seed = int(declared.get("seed", 0)) if split_seed is None else split_seed
        ds = load_dataset(
            name,
            data_dir=data_dir,
            seed=seed,
            val_fraction=float(declared.get("val_fraction", 0.1)),
            test_fraction=float(declared.get("test_fraction", 0.2)),
            path=declared.get("path"),
            schema=declared.get("schema"),
        )
        return SplitSource(ds, False, f"the split declared by {where} ({name!r}, seed {seed})")
    if rec is None:
        name = data or "digits"
        seed = 0 if split_seed is None else split_seed
        ds = load_dataset(name, data_dir=data_dir, seed=seed)
        note = (
            f"{where}: the model's sidecar records no data split; the test split of {name!r} "
            f"was drawn with split seed {seed} and may contain the model's training examples "
            "(retrain with this version of bastion to record the split)"
        )
        if warn is not None:
            warn(note)
        return SplitSource(ds, False, note)
    name = str(rec.get("data"))
    if data is not None and data != name:
        raise BastionError(
            f"--data: the model was trained on {name!r}, got {data!r}; evaluating it on another "
            "data set is not supported here"
        )
    seed = int(rec.get("seed", 0))
    if split_seed is not None and split_seed != seed:
        raise BastionError(
            f"--split-seed: the model was trained with split seed {seed}, got {split_seed}: "
            "another split would put its training examples in the test set"
        )
    ds = load_dataset(
        name,
        data_dir=data_dir,
        seed=seed,
        val_fraction=float(rec.get("val_fraction", 0.1)),
        test_fraction=float(rec.get("test_fraction", 0.2)),
        path=rec.get("path"),
        schema=rec.get("schema"),
        image_size=rec.get("image_size"),
        channels=rec.get("channels"),
        factory=rec.get("factory"),
        factory_kwargs=rec.get("factory_kwargs") or None,
        python_path=rec.get("python_path") or (),
    )
    check_model_split(sidecar, ds, where=where)
    return SplitSource(ds, True, f"the model's own split of {name!r} (seed {seed}), verified")


def check_model_split(sidecar: Mapping[str, Any], data: Dataset, *, where: str) -> bool:
    """Raise unless ``data`` has the fingerprint and split the sidecar records; ``False``
    when the sidecar records no split (nothing to check), ``True`` when it matched."""
    rec = _record(sidecar)
    md = sidecar.get("metadata") or {}
    fingerprint = (rec or {}).get("fingerprint") or md.get("data_fingerprint")
    if fingerprint and fingerprint != data.fingerprint:
        raise BastionError(
            f"{where}: the model was trained on data with fingerprint {str(fingerprint)[:12]}..., "
            f"the data loaded has {data.fingerprint[:12]}... (a different data set or files)"
        )
    if rec is None:
        return False
    if rec.get("digest") != data.split_digest():
        raise BastionError(
            f"{where}: the data's train/val/test split differs from the one the model was "
            f"trained with (split seed {rec.get('seed')}, val_fraction {rec.get('val_fraction')}, "
            f"test_fraction {rec.get('test_fraction')}); use the same seed and fractions"
        )
    return True


def check_declared_split(
    declared: Mapping[str, Any],
    *,
    name: str,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    where: str,
) -> None:
    """Raise unless the split a model reference file declares (``data:``) is the one given
    (else its training examples could be in the test set); fields it leaves out match."""
    given = {
        "name": name,
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
    }
    for key, value in given.items():
        if key in declared and declared[key] != value:
            raise BastionError(
                f"{where}: the model's reference file declares data {key} {declared[key]!r}, "
                f"the config has {value!r}: the split differs from the one it was trained on"
            )
