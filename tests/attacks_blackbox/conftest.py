"""Fixtures for the black-box attack tests (the model itself lives in ``blackbox_digits``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from blackbox_digits import Digits, single_thread, train_digits_mlp


@pytest.fixture(scope="session")
def digits() -> Digits:
    """The trained digits MLP; tests must leave it in eval mode with no parameter grads."""
    d = train_digits_mlp()
    assert d.clean_accuracy >= 0.9, d.clean_accuracy
    return d


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    with single_thread():
        yield
