"""Saving and loading scikit-learn estimators without pickle, through skops' secure format.

A pickle runs arbitrary code when it is loaded, so bastion never writes one and refuses to load
one. :func:`save_estimator` writes a ``.skops`` file (a zip of JSON and numpy arrays);
:func:`load_estimator` loads one only when every type it names comes from scikit-learn or numpy
(skops reports the types a file would construct before it constructs any).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bastion.errors import ModelFileError

__all__ = ["PICKLE_SUFFIXES", "load_estimator", "save_estimator"]

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth")
_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "builtins.")


def _refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelFileError(
            f"{path}: a pickle ({path.suffix}) can run arbitrary code when loaded, so bastion "
            "refuses it; save scikit-learn models with skops (bastion.models.save_estimator, "
            "a .skops file) and torch weights as safetensors"
        )


def save_estimator(estimator: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``estimator`` to ``path`` (suffix ``.skops``) atomically; returns the path."""
    import skops.io as sio

    p = Path(path)
    _refuse_pickle(p)
    if p.suffix != ".skops":
        p = p.with_name(p.name + ".skops")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    sio.dump(estimator, tmp)
    os.replace(tmp, p)
    return p


def load_estimator(path: str | os.PathLike[str]) -> Any:
    """Load a ``.skops`` estimator whose types all come from scikit-learn or numpy.

    Raises:
        ModelFileError: a pickle, a missing or unreadable file, or a file naming other types.
    """
    import skops.io as sio

    p = Path(path)
    _refuse_pickle(p)
    if not p.is_file():
        raise ModelFileError(f"{p}: estimator file not found")
    try:
        untrusted = sio.get_untrusted_types(file=p)
    except Exception as e:  # skops raises several kinds for a file that is not its format
        raise ModelFileError(f"{p}: not a skops file ({type(e).__name__}: {e})") from None
    foreign = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIXES)]
    if foreign:
        raise ModelFileError(
            f"{p}: refuses to load types outside scikit-learn and numpy: {', '.join(foreign)}"
        )
    return sio.load(p, trusted=untrusted)
