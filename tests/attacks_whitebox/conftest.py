"""Fixtures for the white-box attack tests: one torch thread, the digits models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from whitebox_digits import Digits, single_thread, train_digits, train_mlp

from bastion.models import BastionModel


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="session")
def digits() -> Digits:
    """The trained digits MLP and 100 correctly classified test images (trained once per
    session, about a second; tests must leave it in eval mode without parameter grads)."""
    d = train_digits()
    assert d.clean_accuracy >= 0.9, d.clean_accuracy
    return d


@pytest.fixture(scope="session")
def surrogate() -> BastionModel:
    """An independently trained digits MLP (another seed and width), for transfer attacks."""
    return train_mlp(seed=1, hidden=(48,), steps=200)
