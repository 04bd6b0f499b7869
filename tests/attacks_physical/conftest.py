"""Fixtures for the universal perturbation and patch tests: one torch thread, two tiny models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from physical_digits import Split, single_thread, train_canvas_cnn, train_mlp


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="session")
def mlp() -> Split:
    """The undefended 8x8 digits MLP (tests must leave it in eval mode without grads)."""
    d = train_mlp()
    assert d.clean_accuracy >= 0.9, d.clean_accuracy
    return d


@pytest.fixture(scope="session")
def canvas() -> Split:
    """The global-pooling CNN on 16x16 canvases holding an 8x8 digit at a random position."""
    d = train_canvas_cnn()
    assert d.clean_accuracy >= 0.88, d.clean_accuracy
    return d
