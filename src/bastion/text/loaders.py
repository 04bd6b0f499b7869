"""Loaders for labelled text: the SMS Spam Collection and Movie Review polarity (MR).

Each loader reads from a path the user gives, checks every line (encoding, empty text, label)
and raises :class:`~bastion.errors.DataError` naming the file and the 1-based line at fault.
:func:`split_texts` then makes a deterministic stratified train/val/test split from a seed and
fingerprints the raw data (sha256, independent of the seed).

Encodings. The SMS file must be UTF-8. The MR files of the original Cornell release (Pang and
Lee, 2005) are Windows-1252/latin-1 while redistributed copies are often re-encoded as UTF-8.
With ``encoding="auto"`` (the default) each MR file is decoded as UTF-8 when the whole file is
valid UTF-8 and otherwise as Windows-1252 (whole file, never mixed per line); a byte that
Windows-1252 does not define is then reported with its line. ``encoding="utf-8"`` rejects any
non-UTF-8 byte with its file and line. The encoding used is recorded in ``TextDataset.encodings``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from bastion.data.core import check_fractions, check_seed, fingerprint_arrays, stratified_indices
from bastion.errors import DataError

MREncoding = Literal["auto", "utf-8", "cp1252"]

SMS_FILE = "SMSSpamCollection"
MR_FILES = ("rt-polarity.neg", "rt-polarity.pos")


@dataclass(frozen=True)
class TextSplit:
    """One split: ``texts[i]`` has class index ``labels[i]``."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise DataError(f"TextSplit: {len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, n: int) -> TextSplit:
        """The first ``n`` examples (splits are stored in a seeded random order)."""
        return TextSplit(self.texts[:n], self.labels[:n])


@dataclass(frozen=True)
class TextDataset:
    """A loaded text data set with stratified splits.

    Attributes:
        name: ``"sms_spam"`` or ``"movie_review"`` (or a caller's name for :func:`split_texts`).
        classes: class names; labels index this tuple.
        train, val, test: the splits.
        fingerprint: sha256 hex digest of the raw texts and labels before splitting.
        encodings: file name -> encoding it was decoded with.
    """

    name: str
    classes: tuple[str, ...]
    train: TextSplit
    val: TextSplit
    test: TextSplit
    fingerprint: str
    encodings: tuple[tuple[str, str], ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def summary(self) -> dict[str, object]:
        """JSON-ready: name, fingerprint, split sizes, classes, encodings."""
        return {
            "name": self.name,
            "kind": "text",
            "fingerprint": self.fingerprint,
            "n_train": len(self.train),
            "n_val": len(self.val),
            "n_test": len(self.test),
            "classes": list(self.classes),
            "encodings": dict(self.encodings),
        }


def fingerprint_texts(name: str, texts: Sequence[str], labels: Sequence[int]) -> str:
    """sha256 hex digest of ``name``, the UTF-8 bytes of every text (in order) and the labels."""
    encoded = [t.encode("utf-8") for t in texts]
    blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    lengths = np.array([len(b) for b in encoded], dtype=np.int64)
    return fingerprint_arrays(name, [blob, lengths, np.asarray(labels, dtype=np.int64)])


def split_texts(
    name: str,
    texts: Sequence[str],
    labels: Sequence[int],
    classes: Sequence[str],
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    encodings: Sequence[tuple[str, str]] = (),
) -> TextDataset:
    """Deterministic stratified split (see :func:`bastion.data.core.stratified_indices`)."""
    check_seed(seed)
    check_fractions(val_fraction, test_fraction)
    if len(texts) != len(labels):
        raise DataError(f"{name}: {len(texts)} texts but {len(labels)} labels")
    y = np.asarray(labels, dtype=np.int64)
    if y.size and (y.min() < 0 or y.max() >= len(classes)):
        raise DataError(f"{name}: labels: expected class indices in 0..{len(classes) - 1}")
    tr, va, te = stratified_indices(
        y, len(classes), val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
    )

    def take(idx: npt.NDArray[np.int64]) -> TextSplit:
        return TextSplit(tuple(texts[i] for i in idx), tuple(int(y[i]) for i in idx))

    return TextDataset(
        name=name,
        classes=tuple(classes),
        train=take(tr),
        val=take(va),
        test=take(te),
        fingerprint=fingerprint_texts(name, texts, labels),
        encodings=tuple(encodings),
    )


def _lines(path: Path, encoding: str) -> list[str]:
    """Decode ``path`` line by line; a bad byte raises DataError naming file, line and byte."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    parts = raw.split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()
    lines: list[str] = []
    for number, part in enumerate(parts, start=1):
        try:
            lines.append(part.decode(encoding).rstrip("\r"))
        except UnicodeDecodeError as e:
            raise DataError(
                f"{path}: line {number}: byte 0x{part[e.start]:02x} at column {e.start + 1} is "
                f"not valid {encoding} (expected {encoding} text)"
            ) from e
    return lines


def _file_in(path: str | os.PathLike[str], filename: str) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / filename
    if not p.is_file():
        raise DataError(f"{p}: file not found (expected the {filename} file or its folder)")
    return p


def read_sms_spam(path: str | os.PathLike[str]) -> tuple[list[str], list[int]]:
    """Read ``SMSSpamCollection`` (``label<TAB>text`` per line, UTF-8); labels ham=0, spam=1.

    ``path`` is the file or the folder holding it.
    """
    p = _file_in(path, SMS_FILE)
    texts: list[str] = []
    labels: list[int] = []
    for number, line in enumerate(_lines(p, "utf-8"), start=1):
        label, tab, text = line.partition("\t")
        if not tab:
            raise DataError(f"{p}: line {number}: expected 'label<TAB>text', found no tab")
        if label not in ("ham", "spam"):
            raise DataError(f"{p}: line {number}: label: expected 'ham' or 'spam', got {label!r}")
        if not text.strip():
            raise DataError(f"{p}: line {number}: empty text (expected a message after the tab)")
        texts.append(text)
        labels.append(0 if label == "ham" else 1)
    if not texts:
        raise DataError(f"{p}: no messages found")
    return texts, labels


def read_movie_review(
    path: str | os.PathLike[str], *, encoding: MREncoding = "auto"
) -> tuple[list[str], list[int], list[tuple[str, str]]]:
    """Read ``rt-polarity.neg`` (label 0) and ``rt-polarity.pos`` (label 1) from folder ``path``.

    Returns texts, labels and ``(file name, encoding used)`` pairs; see the module docstring for
    the encoding rule.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: expected a folder holding {' and '.join(MR_FILES)}")
    texts: list[str] = []
    labels: list[int] = []
    used: list[tuple[str, str]] = []
    for label, filename in enumerate(MR_FILES):
        p = _file_in(folder, filename)
        chosen = encoding
        if encoding == "auto":
            try:
                p.read_bytes().decode("utf-8")
                chosen = "utf-8"
            except UnicodeDecodeError:
                chosen = "cp1252"
            except OSError as e:
                raise DataError(f"{p}: cannot read ({e.strerror or e})") from e
        lines = _lines(p, chosen)
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                raise DataError(f"{p}: line {number}: empty text (expected one sentence a line)")
        if not lines:
            raise DataError(f"{p}: no sentences found")
        texts.extend(lines)
        labels.extend([label] * len(lines))
        used.append((filename, chosen))
    return texts, labels, used


def load_sms_spam(
    path: str | os.PathLike[str],
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> TextDataset:
    """SMS Spam Collection (Almeida et al., 2011) split into train/val/test; classes ham, spam."""
    texts, labels = read_sms_spam(path)
    return split_texts(
        "sms_spam",
        texts,
        labels,
        ("ham", "spam"),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        encodings=((SMS_FILE, "utf-8"),),
    )


def load_movie_review(
    path: str | os.PathLike[str],
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    encoding: MREncoding = "auto",
) -> TextDataset:
    """Movie Review polarity v1.0 (Pang and Lee, 2005); classes negative, positive."""
    texts, labels, used = read_movie_review(path, encoding=encoding)
    return split_texts(
        "movie_review",
        texts,
        labels,
        ("negative", "positive"),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        encodings=used,
    )


TEXT_DATASETS = ("movie_review", "sms_spam")


def load_text_dataset(
    name: str,
    path: str | os.PathLike[str],
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> TextDataset:
    """Load ``name`` (one of :data:`TEXT_DATASETS`) from ``path``."""
    if name == "sms_spam":
        return load_sms_spam(
            path, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
        )
    if name == "movie_review":
        return load_movie_review(
            path, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
        )
    raise DataError(f"dataset: expected one of {TEXT_DATASETS}, got {name!r}")
