"""A small undefended MLP on the embedded digits set, shared by the black-box attack tests."""

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
    """One torch thread: the tensors are tiny and the machine is small and shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Digits:
    model: BastionModel  # (N, 1, 8, 8) in [0, 1] -> logits (N, 10), eval mode
    x_train: Tensor  # (N, 1, 8, 8) float32, for fitting the scikit-learn targets
    y_train: Tensor
    x: Tensor  # (100, 1, 8, 8) test inputs
    y: Tensor  # (100,) int64
    clean_accuracy: float


def train_digits_mlp() -> Digits:
    """Train the MLP (deterministic: fixed seeds, the global RNG state is restored)."""
    data = load_dataset("digits", seed=0)
    spec = ModelSpec(
        "mlp",
        tuple(data.input_shape),
        data.num_classes,
        tuple(data.mean),
        tuple(data.std),
        {"hidden": [64]},
    )
    x, y = data.train.x, data.train.y
    with torch.random.fork_rng(devices=[]), single_thread():
        torch.manual_seed(0)
        model = build_model(spec)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.train()
        for _epoch in range(10):
            perm = torch.randperm(len(y))
            for i in range(0, len(y), 64):
                b = perm[i : i + 64]
                loss = F.cross_entropy(model(x[b]), y[b])
                opt.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
    model.eval()
    model.zero_grad(set_to_none=True)
    xt, yt = data.test.x[:100], data.test.y[:100]
    with torch.no_grad():
        acc = float((model(xt).argmax(dim=1) == yt).float().mean())
    return Digits(model, x, y, xt, yt, acc)
