"""A tiny, quickly trained, non-robust classifier shared by the attack tests.

The task: 3 classes of 6-feature inputs in [0, 1], labelled by the argmax of a fixed linear map,
so the classes are linearly separable and a small MLP reaches high clean accuracy. Many points lie
close to a decision boundary, so an honest attack at ``eps = 0.1`` (linf) fools the model often.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.models import BastionModel, ModelSpec, build_model

FEATURES = 6
CLASSES = 3


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread: these tensors are tiny, and on a small shared machine intra-op
    threads only spin (a 2 s training run took a minute with two threads under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Toy:
    model: BastionModel
    x: Tensor  # (N, FEATURES) float32 test inputs in [0, 1]
    y: Tensor  # (N,) int64 true labels
    clean_accuracy: float


def _make_data(n: int, generator: torch.Generator, w: Tensor) -> tuple[Tensor, Tensor]:
    x = torch.rand(n, FEATURES, generator=generator)
    y = ((x - 0.5) @ w).argmax(dim=1)
    return x, y


def train_toy() -> Toy:
    """Train the toy classifier (deterministic: fixed seeds; the global RNG state is restored)."""
    g = torch.Generator().manual_seed(1234)
    w = torch.randn(FEATURES, CLASSES, generator=g)
    x_train, y_train = _make_data(1024, g, w)
    x_test, y_test = _make_data(200, g, w)
    spec = ModelSpec(
        "tabular-mlp",
        (FEATURES,),
        CLASSES,
        (0.5,) * FEATURES,
        (0.29,) * FEATURES,
        {"hidden": [32, 32]},
    )
    with torch.random.fork_rng(), single_thread():
        torch.manual_seed(0)
        model = build_model(spec)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.train()
        for step in range(300):
            i = (step * 128) % 1024
            loss = F.cross_entropy(model(x_train[i : i + 128]), y_train[i : i + 128])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        acc = float((model(x_test).argmax(dim=1) == y_test).float().mean())
    return Toy(model, x_test, y_test, acc)
