"""read_idx: round trips and every malformed-file error."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from bastion.data import read_idx
from bastion.errors import DataError

IdxBytes = Callable[[npt.NDArray[np.generic]], bytes]


def test_round_trip_plain_and_gzip(tmp_path: Path, idx_bytes: IdxBytes) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    plain = tmp_path / "a-idx3-ubyte"
    plain.write_bytes(idx_bytes(array))
    packed = tmp_path / "a-idx3-ubyte.gz"
    packed.write_bytes(gzip.compress(idx_bytes(array)))
    for path in (plain, packed):
        loaded = read_idx(path)
        assert loaded.dtype == np.uint8
        assert loaded.shape == (2, 3, 4)
        np.testing.assert_array_equal(loaded, array)
        assert loaded.flags.writeable


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_other_types_are_decoded_big_endian_into_native_order(
    tmp_path: Path, idx_bytes: IdxBytes, dtype: type[np.generic]
) -> None:
    array = (np.arange(12).reshape(3, 4) - 5).astype(dtype) * 3
    path = tmp_path / "values.idx"
    path.write_bytes(idx_bytes(array))
    loaded = read_idx(path)
    assert loaded.dtype == np.dtype(dtype)
    assert loaded.dtype.isnative
    np.testing.assert_array_equal(loaded, array)


def test_truncated_gzip_idx_names_file_and_byte_counts(tmp_path: Path) -> None:
    header = bytes([0, 0, 0x08, 3]) + b"".join(d.to_bytes(4, "big") for d in (60000, 28, 28))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + bytes(1000)))
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message
    assert "truncated" in message
    assert "expected 47040000 bytes of data after the header" in message
    assert "got 1000" in message


def test_trailing_bytes_are_rejected(tmp_path: Path, idx_bytes: IdxBytes) -> None:
    path = tmp_path / "labels.idx"
    path.write_bytes(idx_bytes(np.zeros(5, dtype=np.uint8)) + b"\x00\x01\x02")
    with pytest.raises(DataError, match=r"3 unexpected trailing bytes.*expected exactly 5 bytes"):
        read_idx(path)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", "too short to be an IDX file"),
        (b"\x00\x00", "too short to be an IDX file"),
        (b"\x01\x02\x08\x01" + (3).to_bytes(4, "big") + b"abc", "not an IDX file.*01 02 08 01"),
        (b"\x00\x00\x07\x01" + (1).to_bytes(4, "big") + b"a", r"type code 0x07.*0x08"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x03" + (1).to_bytes(4, "big"), "truncated header: expected 16 bytes"),
    ],
)
def test_malformed_headers(tmp_path: Path, payload: bytes, expected: str) -> None:
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(payload)
    with pytest.raises(DataError, match=expected) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_corrupt_gzip_is_a_data_error_naming_the_file(tmp_path: Path, idx_bytes: IdxBytes) -> None:
    good = gzip.compress(idx_bytes(np.arange(300, dtype=np.uint8) % 7))
    cut = tmp_path / "cut.gz"
    cut.write_bytes(good[: len(good) // 2])
    garbled = tmp_path / "garbled.gz"
    garbled.write_bytes(good[:10] + bytes(b ^ 0xFF for b in good[10:]))
    for path in (cut, garbled):
        with pytest.raises(DataError, match="not valid gzip data") as info:
            read_idx(path)
        assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as info:
        read_idx(tmp_path / "nope.gz")
    assert str(tmp_path / "nope.gz") in str(info.value)
