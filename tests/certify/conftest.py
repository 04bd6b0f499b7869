"""Fixtures for the certify tests (the toy classifiers live in ``certify_toys``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from certify_toys import LinearBinary


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.fixture
def linear() -> LinearBinary:
    gen = torch.Generator().manual_seed(0)
    return LinearBinary(torch.randn(20, generator=gen, dtype=torch.float64), 0.3)
