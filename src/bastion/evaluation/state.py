"""A state file that lets a long evaluation resume where it stopped.

The evaluator records each finished (model, attack, eps) pair's robust mask; a rerun with the
same state file skips the pairs already done. The file is bound to what makes the masks valid:
the config hash, the data fingerprint, the number of examples and each model's weights (a hash of
its state dict, part of every key). A file written for anything else is refused, not silently
mixed in. Every update is written to a temporary file and renamed, so a kill at any moment leaves
the last complete state.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bastion.errors import ConfigError

__all__ = ["EvaluationState", "weights_hash"]

FORMAT = "bastion-eval-state/1"


def weights_hash(model: nn.Module) -> str:
    """A short sha256 of a model's parameters and buffers (names, shapes and bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _pack(mask: Tensor) -> str:
    return "".join("1" if b else "0" for b in mask.tolist())


def _unpack(bits: str, n: int, where: str) -> Tensor:
    if len(bits) != n or set(bits) - {"0", "1"}:
        raise ConfigError(f"{where}: a recorded mask does not have {n} entries of 0/1")
    return torch.tensor([c == "1" for c in bits], dtype=torch.bool)


class EvaluationState:
    """Robust masks of finished (model, attack, eps) pairs, persisted to ``path``.

    Args:
        path: the JSON state file (created on the first record).
        binding: what the masks depend on (config hash, data fingerprint, number of examples);
            an existing file with another binding raises :class:`ConfigError`.
    """

    def __init__(self, path: str | os.PathLike[str], binding: dict[str, Any]):
        self.path = Path(path)
        self.binding = dict(binding)
        self._masks: dict[str, str] = {}
        self.resumed = 0
        if self.path.exists():
            try:
                doc = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise ConfigError(f"{self.path}: unreadable evaluation state: {e}") from None
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ConfigError(f"{self.path}: not a bastion evaluation state ({FORMAT})")
            if doc.get("binding") != self.binding:
                raise ConfigError(
                    f"{self.path}: this state was written for another evaluation (config, data "
                    "or number of examples differ); delete it or pass another --state path"
                )
            masks = doc.get("masks", {})
            if not isinstance(masks, dict):
                raise ConfigError(f"{self.path}: masks: expected a mapping")
            self._masks = {str(k): str(v) for k, v in masks.items()}

    @staticmethod
    def key(model_id: str, label: str, eps: str) -> str:
        return f"{model_id}|{label}|{eps}"

    def get(self, key: str, n: int) -> Tensor | None:
        """The recorded mask ``(n,)`` for ``key``, or ``None``."""
        bits = self._masks.get(key)
        if bits is None:
            return None
        self.resumed += 1
        return _unpack(bits, n, f"{self.path}: {key}")

    def put(self, key: str, mask: Tensor) -> None:
        """Record ``mask`` and write the file atomically."""
        self._masks[key] = _pack(mask)
        doc = {"format": FORMAT, "binding": self.binding, "masks": self._masks}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(doc), encoding="utf-8")
        os.replace(tmp, self.path)

    def remove(self) -> None:
        """Delete the file (after the evaluation it served has been written)."""
        self.path.unlink(missing_ok=True)
