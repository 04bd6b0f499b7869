"""Cross-check bastion's PGD against an independent implementation (torchattacks).

An honest PGD at the same eps, steps and step size should leave no more robust accuracy than
torchattacks' PGD, up to the noise of random starts (a few examples out of 200).
"""

from __future__ import annotations

import pytest
import torch
from attack_toy import Toy
from torch import Tensor, nn

from bastion.attacks import PGD, predict
from bastion.threat import ThreatModel

torchattacks = pytest.importorskip("torchattacks")

SEEDS = (0, 1, 2)
TOLERANCE = 0.02  # robust accuracy, averaged over SEEDS


class _AsImage(nn.Module):
    """Presents the 6-feature toy model as a (1, 2, 3) image model (torchattacks' PGDL2 needs
    4-D inputs); an l2 norm over all non-batch dimensions is the same either way."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.flatten(1))  # type: ignore[no-any-return]


def _torchattacks_accuracy(
    attack_cls: type, model: nn.Module, x: Tensor, y: Tensor, *, eps: float, steps: int, seed: int
) -> float:
    with torch.random.fork_rng():  # torchattacks draws its random start from the global RNG
        torch.manual_seed(seed)
        atk = attack_cls(model, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=True)
        x_adv = atk(x, y)
    return float((predict(model, x_adv) == y).float().mean())


def _bastion_accuracy(
    model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, steps: int, seed: int
) -> float:
    res = PGD(steps=steps)(model, x, y, threat, generator=torch.Generator().manual_seed(seed))
    clean = predict(model, x) == y
    return float((clean & ~res.success).float().mean())


@pytest.mark.parametrize(("eps", "steps"), [(0.05, 10), (0.1, 10), (0.1, 20)])
def test_linf_pgd_is_at_least_as_strong_as_torchattacks(toy: Toy, eps: float, steps: int) -> None:
    threat = ThreatModel("linf", eps)
    ours = [_bastion_accuracy(toy.model, toy.x, toy.y, threat, steps=steps, seed=s) for s in SEEDS]
    theirs = [
        _torchattacks_accuracy(
            torchattacks.PGD, toy.model, toy.x, toy.y, eps=eps, steps=steps, seed=s
        )
        for s in SEEDS
    ]
    mean_ours, mean_theirs = sum(ours) / len(ours), sum(theirs) / len(theirs)
    assert mean_ours <= mean_theirs + TOLERANCE, (ours, theirs)
    assert mean_ours < toy.clean_accuracy - 0.2  # the comparison is not between two no-ops
    assert not toy.model.training


@pytest.mark.parametrize(("eps", "steps"), [(0.25, 10), (0.5, 20)])
def test_l2_pgd_is_at_least_as_strong_as_torchattacks(toy: Toy, eps: float, steps: int) -> None:
    model = _AsImage(toy.model).eval()
    x = toy.x.reshape(-1, 1, 2, 3)
    threat = ThreatModel("l2", eps)
    ours = [_bastion_accuracy(model, x, toy.y, threat, steps=steps, seed=s) for s in SEEDS]
    theirs = [
        _torchattacks_accuracy(torchattacks.PGDL2, model, x, toy.y, eps=eps, steps=steps, seed=s)
        for s in SEEDS
    ]
    mean_ours, mean_theirs = sum(ours) / len(ours), sum(theirs) / len(theirs)
    assert mean_ours <= mean_theirs + TOLERANCE, (ours, theirs)
    assert mean_ours < toy.clean_accuracy - 0.2
