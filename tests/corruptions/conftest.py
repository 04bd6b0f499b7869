"""Shared fixtures for the corruption tests: digits images and a small CNN trained on them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from bastion.data import Dataset, load_dataset
from bastion.models import ModelSpec, build_model


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors only lose to thread start-up and, on a shared machine, to oversubscription."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.fixture(scope="session")
def digits_corr() -> Dataset:
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="session")
def digit_images(digits_corr: Dataset) -> Tensor:
    """200 test digits ``(200, 1, 8, 8)`` in [0, 1]."""
    return digits_corr.test.x[:200]


@pytest.fixture(scope="session")
def digits_cnn(digits_corr: Dataset) -> nn.Module:
    """A small CNN trained for a few epochs of plain Adam on the digits (about 95% clean)."""
    d = digits_corr
    spec = ModelSpec("small-cnn", tuple(d.input_shape), d.num_classes, tuple(d.mean), tuple(d.std))
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_model(spec)
        g = torch.Generator().manual_seed(0)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(6):
            order = torch.randperm(len(d.train), generator=g)
            for i in range(0, len(order), 64):
                idx = order[i : i + 64]
                loss = nn.functional.cross_entropy(model(d.train.x[idx]), d.train.y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(old)
    model.eval()
    return model
