"""Reader for the IDX format used by MNIST (plain or gzip-compressed).

An IDX file is a 4-byte magic number (two zero bytes, a data type code, the number of
dimensions), one big-endian uint32 per dimension, then the values in C order, big-endian.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bastion.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"

#: IDX type code -> (name, big-endian dtype of the stored values).
IDX_TYPES: dict[int, tuple[str, np.dtype[np.generic]]] = {
    0x08: ("unsigned byte", np.dtype(np.uint8)),
    0x09: ("signed byte", np.dtype(np.int8)),
    0x0B: ("short", np.dtype(">i2")),
    0x0C: ("int", np.dtype(">i4")),
    0x0D: ("float", np.dtype(">f4")),
    0x0E: ("double", np.dtype(">f8")),
}


def read_idx(path: str | os.PathLike[str]) -> npt.NDArray[np.generic]:
    """Read an IDX file, gzip-compressed or not (detected by the magic bytes ``1f 8b``).

    Returns:
        A writable array in native byte order with the shape declared in the header, e.g.
        uint8 ``(60000, 28, 28)`` for MNIST training images.

    Raises:
        DataError: naming the file when it is missing or unreadable, is corrupt gzip, has a bad
            magic number, an unsupported type code, zero dimensions, a truncated header, fewer
            data bytes than its dimensions require (truncated) or more (trailing bytes).
    """
    file = Path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise DataError(f"file {file} does not exist") from None
    except OSError as exc:
        raise DataError(f"file {file} cannot be read: {exc.strerror or exc}") from None
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            reason = str(exc) or type(exc).__name__
            raise DataError(
                f"file {file} is not valid gzip data ({reason}); the download may be "
                "incomplete or corrupt"
            ) from None
    return decode_idx(raw, source=f"file {file}")


def decode_idx(data: bytes, *, source: str = "IDX data") -> npt.NDArray[np.generic]:
    """Decode uncompressed IDX bytes; see :func:`read_idx` (messages start with ``source``)."""
    if len(data) < 4:
        raise DataError(
            f"{source} is too short to be an IDX file: expected at least a 4-byte header, "
            f"got {len(data)} bytes"
        )
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{source} is not an IDX file: expected a magic number starting with two zero "
            f"bytes, got {data[:4].hex(' ')}"
        )
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_TYPES:
        known = ", ".join(f"0x{code:02x} ({name})" for code, (name, _) in IDX_TYPES.items())
        raise DataError(
            f"{source} has unsupported IDX data type code 0x{type_code:02x} "
            f"(expected one of {known})"
        )
    if ndim == 0:
        raise DataError(f"{source} declares 0 dimensions (expected at least 1)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{source} has a truncated header: expected {header} bytes for {ndim} "
            f"dimensions, got {len(data)}"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    type_name, stored = IDX_TYPES[type_code]
    expected = math.prod(dims) * stored.itemsize
    actual = len(data) - header
    shape_text = "x".join(map(str, dims))
    if actual < expected:
        raise DataError(
            f"{source} is truncated: expected {expected} bytes of data after the header "
            f"({shape_text} values of type {type_name}), got {actual}"
        )
    if actual > expected:
        raise DataError(
            f"{source} has {actual - expected} unexpected trailing bytes: expected exactly "
            f"{expected} bytes of data after the header ({shape_text} values of type "
            f"{type_name}), got {actual}"
        )
    values = np.frombuffer(data, dtype=stored, count=math.prod(dims), offset=header)
    return values.reshape(dims).astype(stored.newbyteorder("="), copy=True)
