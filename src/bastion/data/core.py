"""Containers for loaded data sets and the helpers every loader shares.

A loader turns raw data into a :class:`Dataset`: three :class:`Split` objects (train, val,
test) holding float32 inputs scaled into ``bounds`` and int64 class indices, plus the metadata a
model, an attack or a report needs (input shape, class names, normalisation statistics from the
training split, and a fingerprint identifying the raw data).
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch

from bastion.data.schema import TabularSchema
from bastion.errors import DataError

DatasetKind = Literal["image", "tabular"]

#: A standard deviation below this is treated as a constant feature and replaced with 1.0.
MIN_STD = 1e-12

_FINGERPRINT_TAG = b"bastion.data.fingerprint/1\n"


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a data set: ``len(self)`` examples.

    Attributes:
        x: float32 tensor of shape ``(N, *input_shape)``; the loaders guarantee every value lies
            inside the data set's ``bounds``.
        y: int64 tensor of shape ``(N,)`` holding class indices into ``Dataset.classes``.

    The tensors are treated as read-only; :meth:`subset` returns views sharing their storage.
    Equality is identity (tensors have no single truth value).
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or self.x.dtype != torch.float32:
            raise DataError(f"Split.x: expected a float32 tensor, got {_describe(self.x)}")
        if not isinstance(self.y, torch.Tensor) or self.y.dtype != torch.int64:
            raise DataError(f"Split.y: expected an int64 tensor, got {_describe(self.y)}")
        if self.y.ndim != 1:
            raise DataError(f"Split.y: expected shape (N,), got {tuple(self.y.shape)}")
        if self.x.ndim < 2 or self.x.shape[0] != self.y.shape[0]:
            raise DataError(
                f"Split.x: expected shape ({self.y.shape[0]}, *input_shape) to match "
                f"{self.y.shape[0]} labels, got {tuple(self.x.shape)}"
            )

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, n: int) -> Split:
        """Return the first ``n`` examples (``self`` itself when ``n >= len(self)``).

        Loaders store every split in a seeded random (or, for MNIST, the official) order, so the
        first ``n`` examples are a usable sample.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise DataError(f"subset: n: expected a non-negative integer, got {n!r}")
        if n >= len(self):
            return self
        return Split(self.x[:n], self.y[:n])


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded data set with its train, validation and test splits.

    Attributes:
        name: the name it was loaded under (see :func:`bastion.data.available_datasets`).
        kind: ``"image"`` (inputs ``(C, H, W)``) or ``"tabular"`` (inputs ``(F,)``).
        train, val, test: the splits; ``x`` of each has shape ``(N, *input_shape)``.
        input_shape: shape of one example, e.g. ``(1, 28, 28)`` or ``(30,)``.
        classes: class names; ``y`` values index this tuple.
        bounds: ``(low, high)``, the natural range of every input value; every split's values
            lie inside it (checked on construction).
        mean, std: per channel (images) or per encoded column (tabular), computed from the
            train split; ``len == input_shape[0]``; every ``std`` is positive (1.0 for a constant
            channel or column).
        fingerprint: sha256 hex digest of the raw data before splitting (see
            :func:`fingerprint_arrays`); it does not depend on the seed or the fractions.
        schema: the tabular schema (tabular sets only) describing the encoded columns.
    """

    name: str
    kind: DatasetKind
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]
    classes: tuple[str, ...]
    bounds: tuple[float, float]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fingerprint: str
    schema: TabularSchema | None = None

    def __post_init__(self) -> None:
        where = f"dataset {self.name!r}"
        if self.kind not in ("image", "tabular"):
            raise DataError(f"{where}: kind: expected 'image' or 'tabular', got {self.kind!r}")
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise DataError(
                f"{where}: classes: expected at least two distinct names, got {self.classes!r}"
            )
        low, high = self.bounds
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise DataError(f"{where}: bounds: expected finite low < high, got {self.bounds!r}")
        width = self.input_shape[0] if self.input_shape else 0
        if self.kind == "image" and len(self.input_shape) != 3:
            raise DataError(
                f"{where}: input_shape: expected (C, H, W) for images, got {self.input_shape}"
            )
        if self.kind == "tabular" and len(self.input_shape) != 1:
            raise DataError(
                f"{where}: input_shape: expected (F,) for tabular data, got {self.input_shape}"
            )
        for split_name, split in (("train", self.train), ("val", self.val), ("test", self.test)):
            _check_split(where, split_name, split, self.input_shape, len(self.classes), low, high)
        if len(self.train) == 0:
            raise DataError(f"{where}: train: expected at least one example, got none")
        for field, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != width or not all(math.isfinite(v) for v in values):
                raise DataError(
                    f"{where}: {field}: expected {width} finite values (one per "
                    f"{'channel' if self.kind == 'image' else 'column'}), got {values!r}"
                )
        if any(v <= 0 for v in self.std):
            raise DataError(f"{where}: std: expected positive values, got {self.std!r}")
        if len(self.fingerprint) != 64 or any(
            c not in "0123456789abcdef" for c in self.fingerprint
        ):
            raise DataError(
                f"{where}: fingerprint: expected 64 lowercase hex digits, got {self.fingerprint!r}"
            )
        if self.kind == "image" and self.schema is not None:
            raise DataError(f"{where}: schema: only tabular data sets carry a schema")
        if self.schema is not None and len(self.schema.columns) != width:
            raise DataError(
                f"{where}: schema: describes {len(self.schema.columns)} encoded columns, "
                f"but input_shape is {self.input_shape}"
            )

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)

    def split_digest(self) -> str:
        """sha256 hex digest of the three splits' contents (``x`` and ``y`` of train, val and
        test, in that order): equal digests mean the same examples in the same splits, so a
        model's sidecar can prove that an evaluation uses the test split it was kept from."""
        h = hashlib.sha256(b"bastion.data.split/1\n")
        for part in (self.train, self.val, self.test):
            for t in (part.x, part.y):
                h.update(f"{t.dtype}{tuple(t.shape)}".encode())
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def summary(self) -> dict[str, object]:
        """A JSON-serialisable description: name, kind, fingerprint, split sizes, shape, classes."""
        return {
            "name": self.name,
            "kind": self.kind,
            "fingerprint": self.fingerprint,
            "n_train": len(self.train),
            "n_val": len(self.val),
            "n_test": len(self.test),
            "input_shape": list(self.input_shape),
            "classes": list(self.classes),
        }


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def _check_split(
    where: str,
    split_name: str,
    split: Split,
    input_shape: tuple[int, ...],
    num_classes: int,
    low: float,
    high: float,
) -> None:
    if tuple(split.x.shape[1:]) != input_shape:
        raise DataError(
            f"{where}: {split_name}.x: expected shape (N, {', '.join(map(str, input_shape))}), "
            f"got {tuple(split.x.shape)}"
        )
    if len(split) == 0:
        return
    y_min, y_max = int(split.y.min()), int(split.y.max())
    if y_min < 0 or y_max >= num_classes:
        raise DataError(
            f"{where}: {split_name}.y: expected class indices in 0..{num_classes - 1}, "
            f"got values in {y_min}..{y_max}"
        )
    x_min, x_max = float(split.x.min()), float(split.x.max())
    if not (low <= x_min and x_max <= high):
        raise DataError(
            f"{where}: {split_name}.x: expected values inside the bounds [{low}, {high}], "
            f"got values in [{x_min}, {x_max}]"
        )


def fingerprint_arrays(name: str, arrays: Sequence[npt.NDArray[np.generic]]) -> str:
    """Return a sha256 hex digest identifying ``name`` and the exact contents of ``arrays``.

    The digest covers the name, the number of arrays and, for each array in order, its dtype
    (including byte order), its shape and its bytes in C order. Every part is length-prefixed, so
    different inputs cannot collide by concatenation. Arrays of Python objects are rejected.
    """
    digest = hashlib.sha256(_FINGERPRINT_TAG)
    _update_bytes(digest, name.encode("utf-8"))
    digest.update(len(arrays).to_bytes(8, "little"))
    for position, array in enumerate(arrays):
        if not isinstance(array, np.ndarray):
            raise DataError(
                f"fingerprint_arrays: arrays[{position}]: expected a numpy array, "
                f"got {type(array).__name__}"
            )
        if array.dtype.hasobject:
            raise DataError(
                f"fingerprint_arrays: arrays[{position}]: expected a numeric array, "
                f"got dtype {array.dtype}"
            )
        contiguous = np.ascontiguousarray(array)
        _update_bytes(digest, contiguous.dtype.str.encode("ascii"))
        digest.update(contiguous.ndim.to_bytes(8, "little"))
        for dim in contiguous.shape:
            digest.update(int(dim).to_bytes(8, "little"))
        _update_bytes(digest, contiguous.reshape(-1).view(np.uint8).data)
    return digest.hexdigest()


def _update_bytes(digest: hashlib._Hash, payload: bytes | memoryview) -> None:
    size = payload.nbytes if isinstance(payload, memoryview) else len(payload)
    digest.update(size.to_bytes(8, "little"))
    digest.update(payload)


def check_seed(seed: int) -> None:
    """Raise :class:`DataError` unless ``seed`` is a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DataError(f"seed: expected a non-negative integer, got {seed!r}")


def check_fraction(field: str, value: float, *, allow_zero: bool) -> float:
    """Validate one split fraction: ``0 <= value < 1`` (or ``0 < value < 1``); return it."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
    ):
        raise DataError(f"{field}: expected a number, got {value!r}")
    lower_ok = value >= 0 if allow_zero else value > 0
    if not (lower_ok and value < 1):
        relation = "<=" if allow_zero else "<"
        raise DataError(f"{field}: expected 0 {relation} {field} < 1, got {value!r}")
    return float(value)


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Validate ``0 <= val_fraction < 1``, ``0 < test_fraction < 1`` and their sum ``< 1``."""
    val = check_fraction("val_fraction", val_fraction, allow_zero=True)
    test = check_fraction("test_fraction", test_fraction, allow_zero=False)
    if val + test >= 1:
        raise DataError(
            f"val_fraction + test_fraction: expected a sum below 1 so that training data is "
            f"left, got {val!r} + {test!r} = {val + test!r}"
        )


def share(fraction: float, total: int) -> int:
    """``fraction * total`` rounded half up, at least 1 when ``fraction > 0`` and ``total > 0``."""
    count = math.floor(fraction * total + 0.5)
    if fraction > 0 and total > 0:
        count = max(count, 1)
    return min(count, total)


def _apportion(total: int, sizes: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Split ``total`` over groups in proportion to ``sizes`` (largest remainder, exact integers).

    Guarantees: the result sums to ``total`` and no group gets more than its size, provided
    ``total <= sizes.sum()``. Ties go to the earlier group.
    """
    denominator = int(sizes.sum())
    if denominator == 0:
        return np.zeros_like(sizes)
    numerators = sizes.astype(np.int64) * total
    base = numerators // denominator
    remainders = numerators % denominator
    missing = total - int(base.sum())
    order = np.argsort(-remainders, kind="stable")
    base[order[:missing]] += 1
    return base


def stratified_indices(
    y: npt.NDArray[np.int64],
    num_classes: int,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Deterministic stratified train/val/test indices into ``y`` (shape ``(N,)``).

    The test split gets ``share(test_fraction, N)`` examples and the validation split
    ``share(val_fraction, N)``; each class contributes in proportion to its size (largest
    remainder). The three index arrays are disjoint, cover ``range(N)``, and each is in a random
    order drawn from ``numpy.random.default_rng(seed)`` (no global RNG is touched).
    """
    total = int(y.shape[0])
    n_test = share(test_fraction, total)
    n_val = share(val_fraction, total)
    if total - n_test - n_val < 1:
        raise DataError(
            f"split: {total} examples leave no training data with val_fraction={val_fraction} "
            f"and test_fraction={test_fraction} ({n_val} val + {n_test} test)"
        )
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(y == c)) for c in range(num_classes)]
    sizes = np.array([len(indices) for indices in per_class], dtype=np.int64)
    test_counts = _apportion(n_test, sizes)
    val_counts = _apportion(n_val, sizes - test_counts)
    train_parts: list[npt.NDArray[np.int64]] = []
    val_parts: list[npt.NDArray[np.int64]] = []
    test_parts: list[npt.NDArray[np.int64]] = []
    for indices, n_t, n_v in zip(per_class, test_counts, val_counts, strict=True):
        test_parts.append(indices[:n_t])
        val_parts.append(indices[n_t : n_t + n_v])
        train_parts.append(indices[n_t + n_v :])
    empty = np.zeros(0, dtype=np.int64)
    return (
        rng.permutation(np.concatenate([empty, *train_parts])).astype(np.int64),
        rng.permutation(np.concatenate([empty, *val_parts])).astype(np.int64),
        rng.permutation(np.concatenate([empty, *test_parts])).astype(np.int64),
    )


def feature_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and population standard deviation per channel of ``x`` (shape ``(N, C, ...)``).

    Computed in float64 in chunks (merged with Chan's parallel update), so memory stays small
    even for all of MNIST. A standard deviation below ``MIN_STD`` is replaced with 1.0.
    """
    if x.ndim < 2 or x.shape[0] == 0:
        raise DataError(f"statistics: expected a non-empty (N, C, ...) tensor, got {x.shape}")
    array = x.detach().cpu().numpy()
    count = array.shape[0]
    channels = array.shape[1]
    flat = array.reshape(count, channels, -1)
    per_example = flat.shape[1] * flat.shape[2]
    chunk = max(1, 2_000_000 // max(1, per_example))
    seen = 0
    mean = np.zeros(channels, dtype=np.float64)
    m2 = np.zeros(channels, dtype=np.float64)
    for start in range(0, count, chunk):
        block = flat[start : start + chunk].astype(np.float64)
        block_count = block.shape[0] * block.shape[2]
        block_mean = block.mean(axis=(0, 2))
        block_m2 = np.square(block - block_mean[None, :, None]).sum(axis=(0, 2))
        delta = block_mean - mean
        combined = seen + block_count
        mean = mean + delta * (block_count / combined)
        m2 = m2 + block_m2 + np.square(delta) * (seen * block_count / combined)
        seen = combined
    std = np.sqrt(m2 / seen)
    std = np.where(std < MIN_STD, 1.0, std)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def split_from_numpy(x: npt.NDArray[np.float32], y: npt.NDArray[np.int64]) -> Split:
    """Wrap arrays ``x`` (float32, ``(N, ...)``) and ``y`` (int64, ``(N,)``) in a :class:`Split`."""
    return Split(
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)),
    )


def assemble(
    *,
    name: str,
    kind: DatasetKind,
    train: Split,
    val: Split,
    test: Split,
    classes: tuple[str, ...],
    fingerprint: str,
    schema: TabularSchema | None = None,
) -> Dataset:
    """Build a :class:`Dataset` with bounds ``(0.0, 1.0)`` and statistics from ``train``."""
    input_shape = tuple(int(d) for d in train.x.shape[1:])
    stats_input = train.x if kind == "image" else train.x.unsqueeze(-1)
    mean, std = feature_stats(stats_input)
    return Dataset(
        name=name,
        kind=kind,
        train=train,
        val=val,
        test=test,
        input_shape=input_shape,
        classes=classes,
        bounds=(0.0, 1.0),
        mean=mean,
        std=std,
        fingerprint=fingerprint,
        schema=schema,
    )
