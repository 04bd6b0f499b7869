"""A team's own data from files: a folder of images (one sub-folder per class) and NumPy
``.npz`` archives.

Both are split like the bundled sets (stratified by class, seeded) and fingerprinted over the
decoded arrays and labels, so a model trained on them records the split it was kept from.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

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
from bastion.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "load_factory", "load_image_folder", "load_npz"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _split(
    name: str,
    kind: str,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    classes: tuple[str, ...],
    fingerprint: str,
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
) -> Dataset:
    train, val, test = stratified_indices(
        y, len(classes), val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
    )
    return assemble(
        name=name,
        kind="image" if kind == "image" else "tabular",
        train=split_from_numpy(x[train], y[train]),
        val=split_from_numpy(x[val], y[val]),
        test=split_from_numpy(x[test], y[test]),
        classes=classes,
        fingerprint=fingerprint,
    )


def load_image_folder(
    path: str | os.PathLike[str],
    *,
    image_size: Sequence[int] | None = None,
    channels: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> Dataset:
    """Images under ``path/<class name>/*.png|jpg|jpeg``, read with Pillow.

    Classes are the sub-folder names, sorted. Each image is converted to grey (``channels=1``)
    or RGB (``3``; default: grey when the first image is grey, else RGB), resized to
    ``image_size`` ``(H, W)`` (default: the first image's size, which every image must then
    share) and scaled to [0, 1]: ``x`` has shape ``(N, channels, H, W)``.
    """
    from PIL import Image, UnidentifiedImageError

    check_seed(seed)
    check_fractions(val_fraction, test_fraction)
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"image-folder: path: {root} is not a directory")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) < 2:
        raise DataError(
            f"image-folder: {root}: expected one sub-folder per class (at least two), "
            f"found {len(folders)}"
        )
    if channels is not None and channels not in (1, 3):
        raise DataError(f"image-folder: channels: expected 1 or 3, got {channels!r}")
    size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
    images: list[npt.NDArray[np.float32]] = []
    labels: list[int] = []
    for label, folder in enumerate(folders):
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"image-folder: {folder}: no .png or .jpg images")
        for f in files:
            try:
                with Image.open(f) as opened:
                    if channels is None:
                        channels = 1 if opened.mode in ("1", "L", "I", "I;16", "F") else 3
                    im = opened.convert("L" if channels == 1 else "RGB")
                    if size is None:
                        size = (im.height, im.width)
                    elif (im.height, im.width) != size:
                        if image_size is None:
                            raise DataError(
                                f"image-folder: {f}: size {im.height}x{im.width} differs from "
                                f"{size[0]}x{size[1]}; set data.image_size to resize"
                            )
                        im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                    arr = np.asarray(im, dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError) as e:
                raise DataError(f"image-folder: {f}: not a readable image ({e})") from None
            images.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
            labels.append(label)
    x = np.stack(images).astype(np.float32)
    y = np.asarray(labels, dtype=np.int64)
    fingerprint = fingerprint_arrays("image-folder", [x, y])
    classes = tuple(p.name for p in folders)
    return _split(
        "image-folder",
        "image",
        x,
        y,
        classes,
        fingerprint,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )


def load_npz(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> Dataset:
    """A NumPy archive with ``x`` (images ``(N, C, H, W)`` or features ``(N, F)``; uint8 is
    scaled by 1/255, floats must lie in [0, 1]), ``y`` (integer labels ``0..K-1``) and
    optionally ``classes`` (``K`` names). Loaded with ``allow_pickle=False``."""
    check_seed(seed)
    check_fractions(val_fraction, test_fraction)
    p = Path(path)
    if not p.is_file():
        raise DataError(f"npz: path: file not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (ValueError, OSError) as e:
        raise DataError(f"npz: {p}: not a readable .npz archive without pickles ({e})") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"npz: {p}: missing array {key!r} (has {sorted(arrays)})")
    raw_x, raw_y = arrays["x"], arrays["y"]
    if raw_x.ndim not in (2, 4) or raw_x.shape[0] != raw_y.shape[0] or raw_y.ndim != 1:
        raise DataError(
            f"npz: {p}: expected x of shape (N, C, H, W) or (N, F) and y of shape (N,), got "
            f"{raw_x.shape} and {raw_y.shape}"
        )
    if not np.issubdtype(raw_y.dtype, np.integer) or raw_y.min() < 0:
        raise DataError(f"npz: {p}: y: expected non-negative integer labels")
    x = raw_x.astype(np.float32) / 255.0 if raw_x.dtype == np.uint8 else raw_x.astype(np.float32)
    if not np.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0:
        raise DataError(f"npz: {p}: x: expected values in [0, 1] (or uint8), got a wider range")
    y = raw_y.astype(np.int64)
    k = int(y.max()) + 1
    if "classes" in arrays:
        classes = tuple(str(c) for c in arrays["classes"].tolist())
        if len(classes) < k:
            raise DataError(f"npz: {p}: classes: {len(classes)} names for labels up to {k - 1}")
    else:
        classes = tuple(str(i) for i in range(k))
    fingerprint = fingerprint_arrays("npz", [x, y])
    return _split(
        "npz",
        "image" if x.ndim == 4 else "tabular",
        x,
        y,
        classes,
        fingerprint,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )


def load_factory(
    spec: str,
    *,
    kwargs: dict[str, object] | None = None,
    python_path: Sequence[str | os.PathLike[str]] = (),
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> Dataset:
    """The examples of a ``torch.utils.data.Dataset`` returned by the user's function ``spec``
    (``"package.module:function"``, called with ``kwargs``; ``python_path`` folders are put on
    the import path first).

    Each item must be ``(x, label)``: ``x`` a float tensor (or array) in [0, 1] of one shape,
    ``(C, H, W)`` for images or ``(F,)`` for features, and ``label`` an integer. Class names
    come from the data set's ``classes`` attribute when it has one. All examples are read into
    memory once and split like the bundled sets.
    """
    import torch

    from bastion.imports import import_callable

    check_seed(seed)
    check_fractions(val_fraction, test_fraction)
    fn = import_callable(spec, field="factory", error=DataError, python_path=python_path)
    try:
        dataset = fn(**(kwargs or {}))
        items = [dataset[i] for i in range(len(dataset))]
    except Exception as e:  # the user's code may raise anything
        raise DataError(f"factory: {spec} failed ({type(e).__name__}: {e})") from None
    if len(items) < 4:
        raise DataError(f"factory: {spec} returned {len(items)} examples; expected at least 4")
    try:
        xs = [torch.as_tensor(item[0], dtype=torch.float32) for item in items]
        ys = [int(item[1]) for item in items]
    except (TypeError, ValueError, IndexError) as e:
        raise DataError(f"factory: items must be (x, integer label) pairs ({e})") from None
    if len({tuple(t.shape) for t in xs}) != 1 or xs[0].dim() not in (1, 3):
        raise DataError(
            f"factory: every x must have one shape, (C, H, W) or (F,); got {tuple(xs[0].shape)} "
            "and others"
        )
    x = torch.stack(xs).numpy().astype(np.float32)
    if not np.isfinite(x).all() or x.min() < 0.0 or x.max() > 1.0:
        raise DataError("factory: x: expected values in [0, 1]")
    y = np.asarray(ys, dtype=np.int64)
    if y.min() < 0:
        raise DataError("factory: labels must be non-negative integers")
    k = int(y.max()) + 1
    names = getattr(dataset, "classes", None)
    classes = tuple(str(c) for c in names) if names is not None else tuple(map(str, range(k)))
    if len(classes) < k:
        raise DataError(f"factory: classes: {len(classes)} names for labels up to {k - 1}")
    return _split(
        "factory",
        "image" if x.ndim == 4 else "tabular",
        x,
        y,
        classes,
        fingerprint_arrays("factory", [x, y]),
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )
