"""Shared fixtures for the evaluation tests: a trained tiny digits model and a 1-D toy problem
whose robust accuracy is known in closed form."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from bastion.attacks import FGSM, PGD
from bastion.data import Dataset, load_dataset
from bastion.evaluation import NamedAttack, evaluate_model
from bastion.models import ModelSpec, build_model
from bastion.threat import ThreatModel
from bastion.training import Trainer, TrainSettings


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
def digits_eval() -> Dataset:
    return load_dataset("digits", seed=0)


@pytest.fixture(scope="session")
def trained_digits_model(digits_eval: Dataset) -> nn.Module:
    """A small CNN trained for a few epochs with the standard objective (about 95% clean)."""
    d = digits_eval
    spec = ModelSpec("small-cnn", tuple(d.input_shape), d.num_classes, tuple(d.mean), tuple(d.std))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(spec)
    settings = TrainSettings(epochs=4, batch_size=64, lr=0.05, val_examples=100)
    with torch_threads(1):
        Trainer(settings, ThreatModel("linf", 0.2), seed=0).fit(
            model, d.train.x, d.train.y, d.val.x, d.val.y
        )
    return model


class Threshold(nn.Module):
    """Class 0 when ``x > 0.5``, class 1 otherwise: an example at ``x`` is broken by any linf
    perturbation larger than ``|x - 0.5|``."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(1, 2)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[10.0], [-10.0]]))
            self.lin.bias.copy_(torch.tensor([-5.0, 5.0]))

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(x.reshape(x.shape[0], 1))  # type: ignore[no-any-return]


@pytest.fixture
def toy() -> tuple[nn.Module, Tensor, Tensor]:
    """``(model, x, y)``: 100 points ``x = 0.005 + 0.01 k`` with the true label of the threshold,
    except the 10 with ``k % 10 == 3`` whose labels are flipped (misclassified)."""
    x = (0.005 + 0.01 * torch.arange(100, dtype=torch.float32)).reshape(100, 1)
    y = (x[:, 0] <= 0.5).long()
    flip = torch.arange(100) % 10 == 3
    y[flip] = 1 - y[flip]
    return Threshold(), x, y


def _toy_robust_accuracy(x: Tensor, y: Tensor, eps: float) -> float:
    correct = (x[:, 0] <= 0.5).long() == y
    robust = correct & ((x[:, 0] - 0.5).abs() > eps)
    return float(robust.float().mean())


@pytest.fixture
def toy_robust_accuracy() -> Callable[[Tensor, Tensor, float], float]:
    """``f(x, y, eps)``: the closed-form linf robust accuracy of :class:`Threshold`."""
    return _toy_robust_accuracy


@pytest.fixture(scope="session")
def digits_result(trained_digits_model: nn.Module, digits_eval: Dataset) -> dict[str, Any]:
    """evaluate_model of the trained digits model at linf eps 0.2 against FGSM and PGD-10."""
    d = digits_eval
    attacks = [NamedAttack("fgsm", FGSM()), NamedAttack("pgd", PGD(steps=10))]
    with torch_threads(1):
        return evaluate_model(
            trained_digits_model,
            d.test.x,
            d.test.y,
            ThreatModel("linf", 0.2),
            attacks,
            eps_grid=[0.0, 0.05, 0.1, 0.15, 0.3],
            seed=0,
        )
