"""Tiny, quickly trained, undefended classifiers on the embedded 8x8 digits (``(1, 8, 8)``
inputs in [0, 1], 10 classes), shared by the white-box attack tests."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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
class Digits:
    model: BastionModel
    x: Tensor  # (N, 1, 8, 8) test images the model classifies correctly
    y: Tensor  # (N,) int64
    clean_accuracy: float  # on the whole test split


def train_mlp(*, seed: int = 0, hidden: Sequence[int] = (64,), steps: int = 300) -> BastionModel:
    """An MLP trained full-batch with Adam on the digits training split (about a second;
    deterministic; the global RNG state is restored). Eval mode, parameters frozen."""
    ds = load_dataset("digits")
    spec = ModelSpec("mlp", (1, 8, 8), 10, (0.3,), (0.4,), {"hidden": list(hidden)})
    with torch.random.fork_rng(), single_thread():
        torch.manual_seed(seed)
        model = build_model(spec)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.train()
        for _ in range(steps):
            loss = F.cross_entropy(model(ds.train.x), ds.train.y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    model.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def train_digits(n_eval: int = 100) -> Digits:
    """The 64-64-10 MLP and the first ``n_eval`` test images it classifies correctly."""
    model = train_mlp()
    ds = load_dataset("digits")
    with torch.no_grad():
        correct = model(ds.test.x).argmax(1) == ds.test.y
    acc = float(correct.float().mean())
    return Digits(model, ds.test.x[correct][:n_eval], ds.test.y[correct][:n_eval], acc)
