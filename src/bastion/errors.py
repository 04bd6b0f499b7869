"""Exceptions raised for input a user can get wrong.

Every error names the field, file or setting at fault and what was expected, so the command line
can print it as one line and exit non-zero without a traceback.
"""

from __future__ import annotations


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
