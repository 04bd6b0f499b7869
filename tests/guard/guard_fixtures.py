"""A tiny digits CNN trained in seconds, saved as a run directory, for the guard tests."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from bastion.data.core import Dataset
from bastion.data.digits import load_digits_dataset
from bastion.models.io import save_model
from bastion.models.zoo import BastionModel, ModelSpec, build_model


def train_digits_model(data: Dataset, *, seed: int, epochs: int = 60) -> BastionModel:
    """A small CNN on the digits train split (full-batch Adam; ~95% test accuracy)."""
    spec = ModelSpec("small-cnn", data.input_shape, 10, data.mean, data.std)
    gen = torch.Generator().manual_seed(seed)
    model = build_model(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / max(p.shape[-1], 1)) ** 0.5)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = data.train.x, data.train.y
    for _ in range(epochs):
        for i in range(0, x.shape[0], 256):
            opt.zero_grad()
            loss = F.cross_entropy(model(x[i : i + 256]), y[i : i + 256])
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    return model.eval()


def make_run(root: Path, *, seed: int = 0) -> tuple[Path, Dataset]:
    """Write ``root/models/hardened`` and ``root/models/baseline`` and a ``config.yaml``."""
    data = load_digits_dataset(seed=seed, val_fraction=0.3, test_fraction=0.2)
    for i, name in enumerate(("hardened", "baseline")):
        save_model(train_digits_model(data, seed=seed + i), root / "models" / name)
    (root / "config.yaml").write_text("threat:\n  norm: linf\n  eps: 0.2\n")
    return root, data
