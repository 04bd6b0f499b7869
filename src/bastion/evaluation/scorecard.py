"""The scorecard: one JSON document per run that a CI job can gate on.

It holds, per model, ``clean_accuracy`` and ``worst_case_accuracy`` (fractions in [0, 1]), the
accuracy per attack and eps, training history and timings, plus what is needed to reproduce the
run: seeds, package versions, the config hash and the data fingerprint. Its typed form, schema
versions and JSON Schema are in :mod:`bastion.evaluation.scorecard_model`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from bastion.evaluation.scorecard_model import (
    SCHEMA_VERSION,
    Scorecard,
    ScorecardError,
    load_scorecard,
)

__all__ = [
    "SCHEMA_VERSION",
    "Scorecard",
    "config_hash",
    "package_versions",
    "read_scorecard",
    "relative_paths",
    "sanitize",
    "write_json",
]


def package_versions() -> dict[str, str]:
    """Versions of Python, the platform and the packages a result depends on."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("bastion", "torch", "numpy", "scikit-learn", "safetensors"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a (validated) config."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def write_json(doc: Mapping[str, Any] | Scorecard, path: str | os.PathLike[str]) -> Path:
    """Write JSON atomically (temporary file, then rename); a :class:`Scorecard` is written as
    its JSON dump."""
    if isinstance(doc, Scorecard):
        doc = doc.to_json()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(
        json.dumps(doc, indent=2, sort_keys=False, allow_nan=False, default=_json_default)
    )
    os.replace(tmp, p)
    return p


def _json_default(o: object) -> object:
    if isinstance(o, tuple | set):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def sanitize(obj: Any) -> Any:
    """Replace NaN/inf floats by None so the document is strict JSON; numpy scalars and arrays
    and torch tensors become the Python numbers and lists they hold (then sanitised)."""
    if not isinstance(obj, float) and callable(getattr(obj, "tolist", None)):
        return sanitize(obj.tolist())
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, Mapping):
        return {str(k): sanitize(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [sanitize(v) for v in obj]
    return obj


def read_scorecard(path: str | os.PathLike[str]) -> Scorecard:
    """Load a scorecard file as a typed :class:`Scorecard` (a version-1 document is migrated).

    Raises:
        ScorecardError: the file is missing, not JSON, not a scorecard (no ``models``), of an
            unknown or newer ``schema_version`` (the message names it) or malformed (the message
            names the field). :class:`ScorecardError` is a ``ConfigError``.
    """
    p = Path(path)
    if not p.is_file():
        raise ScorecardError(f"{p}: scorecard not found")
    try:
        doc = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ScorecardError(f"{p}: not a scorecard (invalid JSON: {e})") from e
    if not isinstance(doc, dict) or "models" not in doc or "schema_version" not in doc:
        raise ScorecardError(
            f"{p}: not a bastion scorecard (expected schema_version {SCHEMA_VERSION} and 'models')"
        )
    try:
        return load_scorecard(doc, str(p))
    except ScorecardError as e:
        if str(e).startswith(str(p)):  # the version is named
            raise
        raise ScorecardError(f"{p}: malformed scorecard: {e}") from None


def relative_paths(doc: Any, root: Path) -> Any:
    """``doc`` with every string that names a path inside ``root`` rewritten relative to it
    (a run is written to a temporary folder and renamed; absolute paths would point to the
    temporary name)."""
    prefix = str(root).rstrip(os.sep) + os.sep
    if isinstance(doc, dict):
        return {k: relative_paths(v, root) for k, v in doc.items()}
    if isinstance(doc, list):
        return [relative_paths(v, root) for v in doc]
    if isinstance(doc, str) and doc.startswith(prefix):
        return doc[len(prefix) :]
    return doc
