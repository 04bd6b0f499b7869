"""A team's own labelled text: a CSV file or a JSON Lines file with a text and a label column.

``text.dataset: csv`` or ``jsonl`` with a ``text.file`` section (see
:class:`bastion.text.config.TextFileConfig`) feeds the text channel from such a file instead of
a registered data set. Rules, each checked with the 1-based line at fault in the error:

* the file is UTF-8 (a leading byte-order mark is allowed); any other byte is an error naming
  the line, the column and the byte;
* CSV: the first row is the header and must hold ``text_column`` and ``label_column``; fields
  follow RFC 4180 quoting (a quoted text may hold the delimiter or a line break; the line given
  in an error is the one where the row ends);
* JSONL: one JSON object a line (blank lines are skipped); the label may be a string or an
  integer and is compared by its text (``1`` matches the declared label ``"1"``);
* every text is non-empty after stripping white space; every label is among ``labels`` when
  they are declared (the order there gives the class indices), otherwise the classes are the
  distinct labels found, sorted; at least two classes and one row each.

The examples are then split like the registered sets (stratified, seeded, see
:func:`bastion.text.loaders.split_texts`). The fingerprint is the sha256 of the class names,
the texts and the class indices in file order: the same rows in a CSV or a JSONL file give the
same fingerprint, while renaming, reordering or relabelling a row changes it.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

from bastion.errors import DataError
from bastion.text.loaders import TextDataset, fingerprint_texts, split_texts

__all__ = ["TextFileFormat", "load_text_file", "read_text_file"]

TextFileFormat = Literal["csv", "jsonl"]

_FIELD = "text.file"


def _decode(path: Path) -> str:
    """The whole file as text; a non-UTF-8 byte is a DataError naming its line and column."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{_FIELD}.path: cannot read {path} ({e.strerror or e})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(
            f"{_FIELD}.path: {path}: line {line}: byte 0x{raw[e.start]:02x} at column {column} "
            "is not valid UTF-8 (expected UTF-8 text)"
        ) from None


def _csv_rows(
    path: Path, text: str, text_column: str, label_column: str, delimiter: str
) -> list[tuple[int, str, str]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{_FIELD}.path: {path} is empty (expected a header row and rows)")
        header = [h.strip() for h in header]
        for field, column in (("text_column", text_column), ("label_column", label_column)):
            if column not in header:
                raise DataError(
                    f"{_FIELD}.{field}: column {column!r} not in the header of {path} "
                    f"(found {header})"
                )
        ti, li = header.index(text_column), header.index(label_column)
        rows: list[tuple[int, str, str]] = []
        for row in reader:
            if not row or row == [""]:
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{_FIELD}.path: {path}: line {reader.line_num}: {len(row)} fields, "
                    f"expected {len(header)} as in the header"
                )
            rows.append((reader.line_num, row[ti], row[li].strip()))
    except csv.Error as e:
        raise DataError(
            f"{_FIELD}.path: {path}: line {reader.line_num}: malformed CSV ({e})"
        ) from None
    return rows


def _jsonl_rows(
    path: Path, text: str, text_column: str, label_column: str
) -> list[tuple[int, str, str]]:
    rows: list[tuple[int, str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{_FIELD}.path: {path}: line {number}: not JSON ({e.msg}); expected one object "
                "a line"
            ) from None
        if not isinstance(doc, dict):
            raise DataError(f"{_FIELD}.path: {path}: line {number}: expected a JSON object")
        for field, key in (("text_column", text_column), ("label_column", label_column)):
            if key not in doc:
                raise DataError(
                    f"{_FIELD}.{field}: key {key!r} missing on line {number} of {path} "
                    f"(found {sorted(doc)})"
                )
        value, label = doc[text_column], doc[label_column]
        if not isinstance(value, str):
            raise DataError(
                f"{_FIELD}.text_column: line {number} of {path}: expected a string, got "
                f"{type(value).__name__}"
            )
        if isinstance(label, bool) or not isinstance(label, str | int):
            raise DataError(
                f"{_FIELD}.label_column: line {number} of {path}: expected a string or an "
                f"integer label, got {type(label).__name__}"
            )
        rows.append((number, value, str(label).strip()))
    return rows


def read_text_file(
    path: str | os.PathLike[str],
    *,
    format: TextFileFormat,
    text_column: str = "text",
    label_column: str = "label",
    labels: Sequence[str] | None = None,
    delimiter: str = ",",
) -> tuple[list[str], list[int], tuple[str, ...]]:
    """Read ``(texts, class indices, class names)`` from a CSV or JSONL file; see the module
    docstring for the rules. ``len(texts) == len(indices)``; every index is in
    ``0..len(classes) - 1``. Raises :class:`DataError` naming the ``text.file`` field at fault.
    """
    p = Path(path)
    if format not in ("csv", "jsonl"):
        raise DataError(f"text.dataset: expected 'csv' or 'jsonl', got {format!r}")
    if not p.is_file():
        raise DataError(f"{_FIELD}.path: file not found: {p}")
    if labels is not None and (len(labels) < 2 or len(set(labels)) != len(labels)):
        raise DataError(f"{_FIELD}.labels: expected at least two distinct names, got {labels}")
    content = _decode(p)
    if format == "csv":
        if len(delimiter) != 1:
            raise DataError(f"{_FIELD}.delimiter: expected one character, got {delimiter!r}")
        rows = _csv_rows(p, content, text_column, label_column, delimiter)
    else:
        rows = _jsonl_rows(p, content, text_column, label_column)
    if not rows:
        raise DataError(f"{_FIELD}.path: {p} has no rows (expected labelled texts)")
    for number, value, _ in rows:
        if not value.strip():
            raise DataError(
                f"{_FIELD}.text_column: line {number} of {p}: empty text (expected a non-empty "
                f"{text_column!r})"
            )
    classes = tuple(labels) if labels is not None else tuple(sorted({r[2] for r in rows}))
    index = {name: i for i, name in enumerate(classes)}
    y: list[int] = []
    for number, _, label in rows:
        if label not in index:
            raise DataError(
                f"{_FIELD}.labels: line {number} of {p}: label {label!r} is not among the "
                f"declared labels {list(classes)}"
            )
        y.append(index[label])
    if len(classes) < 2:
        raise DataError(
            f"{_FIELD}.label_column: {p}: one label {classes[0]!r} only (expected two or more)"
        )
    missing = [c for i, c in enumerate(classes) if i not in set(y)]
    if missing:
        raise DataError(f"{_FIELD}.labels: {p}: no row has the label(s) {missing}")
    return [r[1] for r in rows], y, classes


def load_text_file(
    path: str | os.PathLike[str],
    *,
    format: TextFileFormat,
    text_column: str = "text",
    label_column: str = "label",
    labels: Sequence[str] | None = None,
    delimiter: str = ",",
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> TextDataset:
    """:func:`read_text_file`, then a stratified seeded split. The data set is named after the
    file (``reviews.csv``); its fingerprint does not depend on the seed, the format or the path.
    """
    texts, y, classes = read_text_file(
        path,
        format=format,
        text_column=text_column,
        label_column=label_column,
        labels=labels,
        delimiter=delimiter,
    )
    data = split_texts(
        Path(path).name,
        texts,
        y,
        classes,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        encodings=((Path(path).name, "utf-8"),),
    )
    return replace(data, fingerprint=fingerprint_texts("text-file:" + "|".join(classes), texts, y))
