"""Fixtures for the attack tests (the toy model itself lives in ``attack_toy``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from attack_toy import Toy, single_thread, train_toy


@pytest.fixture(scope="session")
def toy() -> Toy:
    """The trained toy classifier; tests must leave it in eval mode with no parameter grads."""
    t = train_toy()
    assert t.clean_accuracy >= 0.9, t.clean_accuracy
    return t


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    with single_thread():
        yield
