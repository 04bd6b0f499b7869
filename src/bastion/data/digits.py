"""The embedded default data set: sklearn's 8x8 handwritten digits (1,797 images, 10 classes)."""

from __future__ import annotations

import numpy as np

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

DIGITS_CLASSES = tuple(str(digit) for digit in range(10))


def load_digits_dataset(
    *, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2
) -> Dataset:
    """Load sklearn's digits as a :class:`Dataset`.

    ``x`` is the 0..16 pixel intensities divided by 16, float32 of shape ``(N, 1, 8, 8)``;
    classes are ``"0"`` .. ``"9"``. The 1,797 images are split by a seeded stratified split
    (test ``round(test_fraction * 1797)``, val ``round(val_fraction * 1797)``, train the rest).
    The fingerprint covers the raw images and labels and does not depend on ``seed``.
    """
    check_seed(seed)
    check_fractions(val_fraction, test_fraction)
    from sklearn.datasets import load_digits  # deferred: sklearn is slow to import

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)
    labels = np.asarray(bunch.target, dtype=np.int64)
    if images.ndim != 3 or images.shape[1:] != (8, 8) or images.shape[0] != labels.shape[0]:
        raise DataError(f"digits: expected (N, 8, 8) images with N labels, got {images.shape}")
    if images.min() < 0 or images.max() > 16:
        raise DataError("digits: expected pixel intensities in 0..16")
    fingerprint = fingerprint_arrays("digits", [images, labels])
    x = (images / 16.0).astype(np.float32)[:, None, :, :]
    train, val, test = stratified_indices(
        labels,
        len(DIGITS_CLASSES),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
    )
    return assemble(
        name="digits",
        kind="image",
        train=split_from_numpy(x[train], labels[train]),
        val=split_from_numpy(x[val], labels[val]),
        test=split_from_numpy(x[test], labels[test]),
        classes=DIGITS_CLASSES,
        fingerprint=fingerprint,
    )
