"""Fixtures of the tabular tests: one thread per test, the fraud example with fitted models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from tabular_fixtures import Fraud, load_fraud


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny float64 kernels crawl when two threads fight a busy CPU; restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fraud() -> Fraud:
    return load_fraud()
