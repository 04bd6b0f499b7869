"""Shared fixtures for the training tests: the bundled digits set and tiny models."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch

from bastion.data import Dataset, load_dataset
from bastion.models import BastionModel, ModelSpec, build_model

ModelFactory = Callable[..., BastionModel]


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads: tiny models only lose to thread start-up and, on a
    shared machine, to oversubscription."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def digits() -> Dataset:
    """sklearn's 8x8 digits, split with seed 0 (no download)."""
    return load_dataset("digits", seed=0)


@pytest.fixture
def make_model(digits: Dataset) -> ModelFactory:
    """``make_model(seed=0, architecture="small-cnn", **options)``: a freshly initialised model
    for digits, initialised from ``seed`` without touching the global RNG."""

    def make(seed: int = 0, architecture: str = "small-cnn", **options: object) -> BastionModel:
        spec = ModelSpec(
            architecture,
            tuple(digits.input_shape),
            digits.num_classes,
            tuple(digits.mean),
            tuple(digits.std),
            dict(options),
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_model(spec)

    return make
