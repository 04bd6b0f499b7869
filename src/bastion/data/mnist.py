"""MNIST: locating, validating, loading and downloading the four IDX files.

Files (gzip-compressed, or uncompressed without the ``.gz`` suffix)::

    train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz
    t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz

The directory is ``data_dir`` if given, else the ``BASTION_DATA`` environment variable; when it
does not hold the files but its ``mnist/`` subdirectory does, that subdirectory is used.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from bastion.data.core import (
    Dataset,
    Split,
    assemble,
    check_fraction,
    check_seed,
    fingerprint_arrays,
)
from bastion.data.idx import read_idx
from bastion.errors import DataError

#: Environment variable naming the data directory when ``data_dir`` is not given.
DATA_ENV_VAR = "BASTION_DATA"
DEFAULT_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
MNIST_STEMS = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
MNIST_FILES = tuple(f"{stem}.gz" for stem in MNIST_STEMS)

#: MD5 checksums of the original release's gzip files.
MNIST_MD5: Mapping[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

OFFICIAL_TRAIN_COUNT = 60_000
OFFICIAL_TEST_COUNT = 10_000
IMAGE_SIDE = 28
MNIST_CLASSES = tuple(str(digit) for digit in range(10))

_DOWNLOAD_HINT = "run `bastion data download mnist --dest DIR`"
_CHUNK = 1 << 16

MnistArrays = tuple[
    npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.uint8]
]


def _find(directory: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def resolve_mnist_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the directory holding the four MNIST files.

    Uses ``data_dir``, else ``$BASTION_DATA``; if that directory lacks the files but its
    ``mnist/`` subdirectory holds all four, returns the subdirectory.

    Raises:
        DataError: when neither is given, the directory does not exist, or a file is missing
            (naming the path and how to download the files).
    """
    if data_dir is not None:
        root, origin = Path(data_dir).expanduser(), "data_dir"
    else:
        env_value = os.environ.get(DATA_ENV_VAR, "")
        if not env_value.strip():
            raise DataError(
                f"mnist: no data directory given: pass --data-dir DIR or set {DATA_ENV_VAR}=DIR "
                f"to a directory holding the MNIST files; to fetch them, {_DOWNLOAD_HINT}"
            )
        root, origin = Path(env_value).expanduser(), DATA_ENV_VAR
    if not root.is_dir():
        raise DataError(
            f"mnist: data directory {root} (from {origin}) does not exist or is not a "
            f"directory; to fetch the files, {_DOWNLOAD_HINT}"
        )
    found = [_find(root, stem) for stem in MNIST_STEMS]
    if all(path is not None for path in found):
        return root
    nested = root / "mnist"
    if nested.is_dir():
        nested_found = [_find(nested, stem) for stem in MNIST_STEMS]
        if all(path is not None for path in nested_found):
            return nested
        if not any(path is not None for path in found):
            root, found = nested, nested_found
    missing = [f"{stem}.gz" for stem, path in zip(MNIST_STEMS, found, strict=True) if path is None]
    raise DataError(
        f"mnist: file {root / missing[0]} not found (missing from {root}: "
        f"{', '.join(missing)}; the uncompressed names without .gz are accepted too); "
        f"to fetch the files, {_DOWNLOAD_HINT}"
    )


def _read(path: Path) -> npt.NDArray[np.uint8]:
    try:
        array = read_idx(path)
    except DataError as exc:
        raise DataError(f"mnist: {exc}") from None
    if array.dtype != np.uint8:
        raise DataError(
            f"mnist: file {path}: expected unsigned byte values (IDX type 0x08), got {array.dtype}"
        )
    return array.astype(np.uint8, copy=False)


def load_mnist_arrays(directory: Path, *, expect_official_counts: bool = True) -> MnistArrays:
    """Read and validate the four files in ``directory``.

    Returns:
        ``(train_images, train_labels, test_images, test_labels)`` as uint8 arrays of shapes
        ``(N, 28, 28)``, ``(N,)``, ``(M, 28, 28)``, ``(M,)``, labels in 0..9.

    Raises:
        DataError: naming the file when it is missing or malformed, the images are not 28x28,
            image and label counts differ, a label is above 9, or (with
            ``expect_official_counts``) the counts are not 60,000 and 10,000.
    """
    arrays: list[npt.NDArray[np.uint8]] = []
    paths: list[Path] = []
    for stem in MNIST_STEMS:
        path = _find(directory, stem)
        if path is None:
            raise DataError(
                f"mnist: file {directory / (stem + '.gz')} not found (nor {directory / stem}); "
                f"to fetch the files, {_DOWNLOAD_HINT}"
            )
        paths.append(path)
        arrays.append(_read(path))
    train_x, train_y, test_x, test_y = arrays
    for split, images, labels, image_path, label_path, official in (
        ("train", train_x, train_y, paths[0], paths[1], OFFICIAL_TRAIN_COUNT),
        ("test", test_x, test_y, paths[2], paths[3], OFFICIAL_TEST_COUNT),
    ):
        if images.ndim != 3 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
            raise DataError(
                f"mnist: file {image_path}: expected {split} images of shape (N, 28, 28), "
                f"got {images.shape}"
            )
        if labels.ndim != 1:
            raise DataError(
                f"mnist: file {label_path}: expected {split} labels of shape (N,), "
                f"got {labels.shape}"
            )
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"mnist: {split} image and label counts differ: {image_path} holds "
                f"{images.shape[0]} images but {label_path} holds {labels.shape[0]} labels"
            )
        if expect_official_counts and images.shape[0] != official:
            raise DataError(
                f"mnist: file {image_path}: expected the official {official} {split} images, "
                f"got {images.shape[0]}"
            )
        if labels.size and int(labels.max()) > 9:
            row = int(np.argmax(labels > 9))
            raise DataError(
                f"mnist: file {label_path}: expected labels in 0..9, got {int(labels[row])} "
                f"at index {row}"
            )
    return train_x, train_y, test_x, test_y


def _to_split(images: npt.NDArray[np.uint8], labels: npt.NDArray[np.uint8]) -> Split:
    x = torch.from_numpy(images).to(torch.float32).div_(255.0).unsqueeze(1)
    return Split(x, torch.from_numpy(labels).to(torch.int64))


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    expect_official_counts: bool = True,
) -> Dataset:
    """Load MNIST as a :class:`Dataset` (see :func:`bastion.data.load_dataset`).

    ``x`` is pixels/255 as float32 of shape ``(N, 1, 28, 28)``. The test split is the official
    10,000 test images in the official order. The validation split is a seeded random subset of
    ``round(val_fraction * 60000)`` training images; train is the rest; both keep the official
    order. The fingerprint covers the four decoded arrays and does not depend on ``seed``.
    ``expect_official_counts=False`` accepts MNIST-format files of other sizes.
    """
    check_seed(seed)
    check_fraction("val_fraction", val_fraction, allow_zero=True)
    directory = resolve_mnist_dir(data_dir)
    train_x, train_y, test_x, test_y = load_mnist_arrays(
        directory, expect_official_counts=expect_official_counts
    )
    fingerprint = fingerprint_arrays("mnist", [train_x, train_y, test_x, test_y])
    n_train = train_x.shape[0]
    n_val = int(np.floor(val_fraction * n_train + 0.5))
    if n_val >= n_train:
        raise DataError(
            f"val_fraction: {val_fraction} of {n_train} training images leaves no training data"
        )
    rng = np.random.default_rng(seed)
    is_val = np.zeros(n_train, dtype=bool)
    is_val[rng.permutation(n_train)[:n_val]] = True
    return assemble(
        name="mnist",
        kind="image",
        train=_to_split(train_x[~is_val], train_y[~is_val]),
        val=_to_split(train_x[is_val], train_y[is_val]),
        test=_to_split(test_x, test_y),
        classes=MNIST_CLASSES,
        fingerprint=fingerprint,
    )


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(
    url: str,
    target: Path,
    expected_md5: str,
    *,
    timeout: float,
    progress: Callable[[str, int, int], None] | None,
) -> None:
    """Download ``url`` into ``target`` atomically, verifying its MD5 on the way."""
    name = target.name
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{name}.", suffix=".part")
    temp = Path(temp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(handle, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=timeout)
            except urllib.error.HTTPError as exc:
                exc.close()
                raise DataError(
                    f"mnist download: {url} answered HTTP {exc.code} {exc.reason}"
                ) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise DataError(f"mnist download: cannot fetch {url}: {reason}") from None
            with response:
                length = response.headers.get("Content-Length", "")
                total = int(length) if length.isdigit() else 0
                done = 0
                while True:
                    try:
                        chunk = response.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as exc:
                        raise DataError(
                            f"mnist download: reading {url} failed after {done} bytes: {exc!r}"
                        ) from None
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(name, done, total)
        actual = digest.hexdigest()
        if actual != expected_md5:
            raise DataError(
                f"mnist download: {name} from {url} failed its checksum: expected MD5 "
                f"{expected_md5}, got {actual}; the download was deleted"
            )
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def download_mnist(
    dest: str | os.PathLike[str],
    *,
    base_url: str = DEFAULT_MIRROR,
    timeout: float = 60.0,
    progress: Callable[[str, int, int], None] | None = None,
    checksums: Mapping[str, str] | None = None,
) -> Path:
    """Download the four MNIST gzip files into ``dest`` (created if needed) and return it.

    Each file is fetched from ``base_url + name`` into a temporary file inside ``dest``, its MD5
    compared with ``checksums`` (default: the original release's checksums, ``MNIST_MD5``), and
    only then moved into place with :func:`os.replace`, so ``dest`` never holds a partial file.
    A file already present whose checksum matches is not downloaded again.

    ``progress(name, bytes_done, bytes_total)`` is called after every chunk (``bytes_total`` is
    0 when the server sends no length) and once with ``done == total`` for a skipped file.

    Raises:
        DataError: naming the URL on a network or HTTP error, or naming the file with the
            expected and actual checksum on a mismatch (the bad download is deleted).
    """
    directory = Path(dest).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"mnist download: cannot create destination directory {directory}: "
            f"{exc.strerror or exc}"
        ) from None
    sums = MNIST_MD5 if checksums is None else checksums
    prefix = base_url if base_url.endswith("/") else base_url + "/"
    for name in MNIST_FILES:
        expected = sums.get(name)
        if expected is None:
            raise DataError(f"checksums: no MD5 given for {name}")
        expected = expected.strip().lower()
        target = directory / name
        if target.is_file() and _md5_of(target) == expected:
            if progress is not None:
                size = target.stat().st_size
                progress(name, size, size)
            continue
        _fetch(prefix + name, target, expected, timeout=timeout, progress=progress)
    return directory
