"""Tiny, quickly trained, undefended classifiers on the embedded digits for the universal
perturbation and patch tests: an MLP on the 8x8 images and a small CNN on a 16x16 bilinear
upsampling of them (room for a patch)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.data import load_dataset
from bastion.models import BastionModel, ModelSpec, build_model


@contextmanager
def single_thread() -> Iterator[None]:
    """Tiny tensors: intra-op threads only spin on a small shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Split:
    """A trained model, the training split it saw, and held-out test images it classifies
    correctly."""

    model: BastionModel
    x_train: Tensor
    y_train: Tensor
    x: Tensor  # held-out, correctly classified
    y: Tensor
    clean_accuracy: float  # on the whole test split


def upsample(x: Tensor, side: int) -> Tensor:
    """Bilinear resize of ``(N, 1, 8, 8)`` digits to ``side x side``, still in [0, 1]."""
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False).clamp(0, 1)


def _train(spec: ModelSpec, x: Tensor, y: Tensor, *, seed: int, steps: int) -> BastionModel:
    with torch.random.fork_rng(), single_thread():
        torch.manual_seed(seed)
        model = build_model(spec)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.train()
        for _ in range(steps):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    model.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _split(model: BastionModel, x_tr: Tensor, y_tr: Tensor, x_te: Tensor, y_te: Tensor) -> Split:
    with torch.no_grad():
        correct = model(x_te).argmax(1) == y_te
    acc = float(correct.float().mean())
    return Split(model, x_tr, y_tr, x_te[correct], y_te[correct], acc)


def train_mlp(*, seed: int = 0, steps: int = 300) -> Split:
    """A 64-64-10 MLP on the 8x8 digits, trained full-batch with Adam (about a second)."""
    ds = load_dataset("digits")
    spec = ModelSpec("mlp", (1, 8, 8), 10, (0.3,), (0.4,), {"hidden": [64]})
    model = _train(spec, ds.train.x, ds.train.y, seed=seed, steps=steps)
    return _split(model, ds.train.x, ds.train.y, ds.test.x, ds.test.y)


def train_cnn(*, side: int = 16, seed: int = 0, steps: int = 150) -> Split:
    """The small CNN on digits upsampled to ``side x side``, trained full-batch with Adam."""
    ds = load_dataset("digits")
    x_tr, x_te = upsample(ds.train.x, side), upsample(ds.test.x, side)
    spec = ModelSpec("small-cnn", (1, side, side), 10, (0.3,), (0.4,), {})
    model = _train(spec, x_tr, ds.train.y, seed=seed, steps=steps)
    return _split(model, x_tr, ds.train.y, x_te, ds.test.y)
