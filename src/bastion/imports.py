"""Importing a user's function from a ``"package.module:function"`` string, as the model and
data factories of a config name them."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from bastion.errors import BastionError

__all__ = ["import_callable"]


def import_callable(
    spec: object,
    *,
    field: str,
    error: type[BastionError],
    python_path: Sequence[str | os.PathLike[str]] = (),
) -> Callable[..., Any]:
    """The callable ``spec`` names, with the ``python_path`` folders put first on the import
    path; every failure is one ``error`` naming ``field`` (the user's module may raise anything
    while it is imported)."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise error(f"{field}: expected 'package.module:function', got {spec!r}")
    module_name, attr = spec.split(":")
    for folder in reversed([os.fspath(p) for p in python_path]):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # anything the user's module raises while importing
        raise error(f"{field}: cannot import {module_name!r} ({type(e).__name__}: {e})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise error(f"{field}: {module_name!r} has no callable {attr!r}")
    return fn  # type: ignore[no-any-return]
