"""Shared helpers for the bastion.data tests: writing IDX files and small synthetic MNIST sets."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

IdxBytes = Callable[[npt.NDArray[np.generic]], bytes]
MnistWriter = Callable[..., Path]

_TYPE_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def encode_idx(array: npt.NDArray[np.generic]) -> bytes:
    """IDX bytes for ``array``: magic, big-endian dims, big-endian values (written by hand)."""
    code = _TYPE_CODES[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(dim).to_bytes(4, "big") for dim in array.shape
    )
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.fixture
def idx_bytes() -> IdxBytes:
    """Function turning an array into IDX file bytes (uncompressed)."""
    return encode_idx


def synthetic_images(count: int, offset: int = 0) -> npt.NDArray[np.uint8]:
    """``(count, 28, 28)`` uint8 images whose first two pixels encode their index."""
    images = np.zeros((count, 28, 28), dtype=np.uint8)
    index = np.arange(offset, offset + count)
    images[:, 0, 0] = index % 256
    images[:, 0, 1] = index // 256
    images[:, 14, 14] = 255
    return images


@pytest.fixture
def write_mnist() -> MnistWriter:
    """Function writing a small MNIST-format set (4 files) into a directory; returns it.

    Keyword arguments: ``n_train``, ``n_test``, ``compress`` (gzip, default True), and
    ``overrides`` mapping a file stem to an array written instead of the synthetic one.
    """

    def write(
        directory: Path,
        *,
        n_train: int = 50,
        n_test: int = 20,
        compress: bool = True,
        overrides: dict[str, npt.NDArray[np.generic]] | None = None,
    ) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, npt.NDArray[np.generic]] = {
            "train-images-idx3-ubyte": synthetic_images(n_train),
            "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
            "t10k-images-idx3-ubyte": synthetic_images(n_test, offset=1000),
            "t10k-labels-idx1-ubyte": ((np.arange(n_test) * 3) % 10).astype(np.uint8),
        }
        arrays.update(overrides or {})
        for stem, array in arrays.items():
            payload = encode_idx(array)
            if compress:
                (directory / f"{stem}.gz").write_bytes(gzip.compress(payload))
            else:
                (directory / stem).write_bytes(payload)
        return directory

    return write
