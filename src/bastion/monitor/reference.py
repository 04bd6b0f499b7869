"""Reference statistics the drift monitor compares each window against.

Inputs are summarised by a feature view: low-dimensional inputs (at most ``max_ks_features``
values, e.g. tabular rows) are kept as they are and tested per feature with KS; larger inputs
(images) are average-pooled to at most 16x16, flattened and mapped by a seeded Gaussian random
projection to ``projection_dim`` values, then compared with an MMD test. The projection is
rebuilt from its seed, so the saved reference is plain JSON.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.errors import DataError
from bastion.monitor.stats import median_bandwidth

FORMAT = "bastion-drift-reference/1"


def _pool(x: Tensor) -> Tensor:
    if x.dim() == 4 and max(x.shape[2], x.shape[3]) > 16:
        size = (min(16, x.shape[2]), min(16, x.shape[3]))
        x = F.adaptive_avg_pool2d(x, size)
    return x.reshape(x.shape[0], -1)


@dataclass
class ReferenceStats:
    """Reference sample summaries.

    Attributes:
        input_shape: the shape of one input.
        mode: ``"ks"`` (per-feature KS) or ``"mmd"`` (random projection + MMD).
        features: reference feature view ``(M, D)`` (raw features or projections).
        confidences: reference max probabilities ``(M,)``.
        class_share: reference predicted-class shares ``(C,)``.
        projection_seed, projection_dim: how the projection is rebuilt (``mmd`` mode).
        bandwidth: the RBF bandwidth (median heuristic on the reference; ``mmd`` mode).
    """

    input_shape: tuple[int, ...]
    mode: str
    features: Tensor
    confidences: Tensor
    class_share: Tensor
    projection_seed: int = 0
    projection_dim: int = 32
    bandwidth: float = 1.0

    def __post_init__(self) -> None:
        self._projection: Tensor | None = None
        if self.mode == "mmd":
            probe = torch.zeros(1, *self.input_shape)
            d = _pool(probe).shape[1]
            gen = torch.Generator().manual_seed(self.projection_seed)
            self._projection = torch.randn(d, self.projection_dim, generator=gen) / math.sqrt(d)

    @classmethod
    def from_data(
        cls,
        x: Tensor,
        probs: Tensor,
        *,
        seed: int,
        max_samples: int = 1000,
        max_ks_features: int = 64,
        projection_dim: int = 32,
    ) -> ReferenceStats:
        """Summarise reference inputs ``x`` ``(N, *input_shape)`` and the model's probabilities
        on them ``(N, C)`` (a seeded subsample of at most ``max_samples`` rows is kept)."""
        if x.shape[0] != probs.shape[0] or x.shape[0] < 10:
            raise DataError(
                f"monitor reference: expected >= 10 inputs with one probability row each, got "
                f"x {tuple(x.shape)} and probs {tuple(probs.shape)}"
            )
        gen = torch.Generator().manual_seed(seed)
        keep = torch.randperm(x.shape[0], generator=gen)[:max_samples]
        xs, ps = x[keep].float(), probs[keep].float()
        shape = tuple(int(s) for s in x.shape[1:])
        d = int(torch.tensor(shape).prod())
        mode = "ks" if d <= max_ks_features else "mmd"
        share = torch.bincount(probs.argmax(dim=1), minlength=probs.shape[1]).double()
        ref = cls(
            input_shape=shape,
            mode=mode,
            features=torch.zeros(0),
            confidences=ps.amax(dim=1),
            class_share=(share / share.sum()).float(),
            projection_seed=seed,
            projection_dim=projection_dim,
        )
        ref.features = ref.view(xs)
        if mode == "mmd":
            ref.bandwidth = median_bandwidth(ref.features)
        return ref

    def view(self, x: Tensor) -> Tensor:
        """The feature view ``(N, D)`` of inputs ``(N, *input_shape)``."""
        flat = x.reshape(x.shape[0], -1).float()
        if self._projection is None:
            return flat
        return _pool(x.float()) @ self._projection

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "input_shape": list(self.input_shape),
            "mode": self.mode,
            "features": self.features.tolist(),
            "confidences": self.confidences.tolist(),
            "class_share": self.class_share.tolist(),
            "projection_seed": self.projection_seed,
            "projection_dim": self.projection_dim,
            "bandwidth": self.bandwidth,
        }

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "reference") -> ReferenceStats:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise DataError(f"{source}: not a drift reference (expected format {FORMAT!r})")
        try:
            return cls(
                input_shape=tuple(int(s) for s in d["input_shape"]),
                mode=str(d["mode"]),
                features=torch.tensor(d["features"], dtype=torch.float32),
                confidences=torch.tensor(d["confidences"], dtype=torch.float32),
                class_share=torch.tensor(d["class_share"], dtype=torch.float32),
                projection_seed=int(d["projection_seed"]),
                projection_dim=int(d["projection_dim"]),
                bandwidth=float(d["bandwidth"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{source}: incomplete drift reference ({e})") from e

    def save(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict()))
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ReferenceStats:
        p = Path(path)
        if not p.is_file():
            raise DataError(f"{p}: drift reference not found")
        try:
            doc = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{p}: invalid JSON ({e})") from e
        return cls.from_dict(doc, source=str(p))
