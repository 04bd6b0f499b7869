"""Exceptions raised for input a user can get wrong.

Every error names the field, file or setting at fault and what was expected, so the command line
can print it as one line and exit non-zero without a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class BastionError(Exception):
    """Base class of every error bastion raises for bad input."""


class ConfigError(BastionError, ValueError):
    """A configuration file or setting is invalid (names the field and what was expected)."""


class DataError(BastionError, ValueError):
    """A data set is missing, truncated or malformed (names the file and what was expected)."""


class ModelFileError(BastionError, ValueError):
    """A model file is missing, of the wrong kind or inconsistent with its sidecar."""


class AttackInputError(BastionError, ValueError):
    """Inputs given to an attack have the wrong shape, dtype or range."""


def yaml_error_line(e: Exception) -> str:
    """A YAML parse error as one line: ``line L, column C: problem (context)``."""
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = e.problem or e.context or "syntax error"
        context = f" ({e.context})" if e.context and e.problem else ""
        return f"{where}{what}{context}"
    return " ".join(str(e).split())


def read_yaml_file(path: Path, error: type[Exception], missing: str) -> Any:
    """The parsed YAML document of the file ``path``; raises ``error`` with one line naming
    the file: ``"{path}: {missing}"`` when it is not a file, ``"{path}: not valid YAML: ..."``
    (line and column) when it cannot be parsed or is not UTF-8."""
    if not path.is_file():
        raise error(f"{path}: {missing}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise error(f"{path}: not valid YAML: {yaml_error_line(e)}") from None
