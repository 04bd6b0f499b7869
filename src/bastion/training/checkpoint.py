"""Training checkpoints: everything needed to continue a run bit for bit.

A checkpoint is one file, ``<dir>/checkpoint.pt``, written to a temporary name, flushed to disk
and renamed over the previous one, so a run killed at any moment leaves either the old or the
new checkpoint, never a torn one. It holds plain tensors and Python scalars only and is read
back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from bastion.errors import ModelFileError

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "bastion-train-checkpoint/1"


def checkpoint_path(directory: str | os.PathLike[str]) -> Path:
    return Path(directory) / CHECKPOINT_NAME


def save_checkpoint(directory: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Atomically write ``state`` to ``directory/checkpoint.pt`` (the directory is created)."""
    path = checkpoint_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{CHECKPOINT_NAME}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; raises :class:`ModelFileError`
    naming the file when it is missing or not a bastion training checkpoint."""
    path = checkpoint_path(directory)
    if not path.is_file():
        raise ModelFileError(f"{path}: training checkpoint not found (resume_from={directory})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file
        raise ModelFileError(f"{path}: not a readable training checkpoint: {e}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ModelFileError(f"{path}: expected a {FORMAT} checkpoint")
    return state
