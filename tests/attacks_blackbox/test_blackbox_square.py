"""Square Attack: the attack contract, strength, query accounting, and a cross-check against
torchattacks' implementation on the same model."""

from __future__ import annotations

from typing import Any, cast

import pytest
import torch
from blackbox_digits import Digits
from torch import Tensor, nn

from bastion.attacks.base import predict
from bastion.attacks.conformance import check_attack
from bastion.attacks.square import (
    Square,
    as_grid,
    margin,
    p_schedule,
    pseudo_gaussian,
    window_shape,
)
from bastion.attacks.targets import ScoreTarget
from bastion.errors import AttackInputError, ConfigError
from bastion.threat import ThreatModel


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _robust_accuracy(model: nn.Module, x: Tensor, y: Tensor, success: Tensor) -> float:
    return float(((predict(model, x) == y) & ~success).float().mean())


class _Flat(nn.Module):
    """The digits model taking flat ``(N, 64)`` inputs (1-D windows)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.reshape(-1, 1, 8, 8))  # type: ignore[no-any-return]


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.3), ("l2", 1.5)])
def test_square_passes_the_conformance_suite(digits: Digits, norm: str, eps: float) -> None:
    passed = check_attack(
        lambda: Square(queries=200),
        digits.model,
        digits.x[:40],
        digits.y[:40],
        ThreatModel(norm, eps),  # type: ignore[arg-type]
    )
    assert "targeted" in passed and "repeatable" in passed


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.3), ("l2", 1.5)])
def test_square_on_flat_inputs_uses_1d_windows(digits: Digits, norm: str, eps: float) -> None:
    model = _Flat(digits.model).eval()
    check_attack(
        lambda: Square(queries=200),
        model,
        digits.x[:30].flatten(1),
        digits.y[:30],
        ThreatModel(norm, eps),  # type: ignore[arg-type]
    )


def test_square_drives_an_undefended_model_to_near_zero_accuracy(digits: Digits) -> None:
    res = Square(queries=300)(
        digits.model, digits.x, digits.y, ThreatModel("linf", 0.3), generator=_gen(0)
    )
    assert _robust_accuracy(digits.model, digits.x, digits.y, res.success) <= 0.02
    assert not digits.model.training


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_square_stays_in_the_ball_and_odd_bounds(digits: Digits, norm: str) -> None:
    # the model sees inputs in [-1, 1]; a budget too small to fool everything
    model = nn.Sequential(_Shift(), digits.model).eval()
    x = digits.x[:30] * 2 - 1
    threat = ThreatModel(norm, 0.05 if norm == "linf" else 0.3, bounds=(-1.0, 1.0))  # type: ignore[arg-type]
    res = Square(queries=60)(model, x, digits.y[:30], threat, generator=_gen(3))
    assert float(res.x_adv.min()) >= -1 and float(res.x_adv.max()) <= 1
    assert bool((threat.distance(res.x_adv, x) <= threat.eps * (1 + 1e-5)).all())
    assert 0 < float(res.success.float().mean()) < 1


class _Shift(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return (x + 1) / 2


def test_square_is_reproducible_from_the_generator_seed(digits: Digits) -> None:
    threat = ThreatModel("l2", 0.8)
    x, y = digits.x[:20], digits.y[:20]
    a = Square(queries=50)(digits.model, x, y, threat, generator=_gen(7))
    b = Square(queries=50)(digits.model, x, y, threat, generator=_gen(7))
    c = Square(queries=50)(digits.model, x, y, threat, generator=_gen(8))
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    assert not torch.equal(a.x_adv, c.x_adv)


@pytest.mark.parametrize(("budget", "restarts"), [(80, 1), (81, 3)])
def test_square_counts_queries_honestly_and_stops_on_fooled_examples(
    digits: Digits, budget: int, restarts: int
) -> None:
    counter = ScoreTarget(digits.model, 10, kind="logits", inputs="torch", name="counter")
    x, y = digits.x[:40], digits.y[:40]
    res = Square(queries=budget, restarts=restarts)(
        counter, x, y, ThreatModel("linf", 0.1), generator=_gen(0)
    )
    # every forward pass is accounted for: the base class's one-row class probe, plus the
    # per-example counts (which include the final check)
    assert counter.queries == int(res.queries.sum()) + 1
    assert int(res.queries.max()) <= budget + 1
    wrong = predict(digits.model, x) != y
    assert bool((res.queries[wrong] == 2).all())  # clean check + final check only
    fooled = res.success & ~wrong
    assert bool(fooled.any()) and bool((~res.success).any())
    assert bool((res.queries[fooled] <= budget + 1).all())
    assert float(res.queries[fooled].float().mean()) < 0.6 * budget
    assert bool((res.queries[~res.success] == budget + 1).all())  # the robust spend it all


def test_square_targeted_reaches_its_targets(digits: Digits) -> None:
    targets = (digits.y[:30] + 3) % 10
    res = Square(queries=300)(
        digits.model,
        digits.x[:30],
        digits.y[:30],
        ThreatModel("linf", 0.3),
        targets=targets,
        generator=_gen(0),
    )
    assert float(res.success.float().mean()) >= 0.8
    assert torch.equal(res.success, predict(digits.model, res.x_adv) == targets)


def test_square_linf_is_at_least_as_strong_as_torchattacks(digits: Digits) -> None:
    torchattacks = pytest.importorskip("torchattacks")
    x, y, model = digits.x, digits.y, digits.model
    ours, theirs = [], []
    for seed in (0, 1):
        res = Square(queries=200)(model, x, y, ThreatModel("linf", 0.1), generator=_gen(seed))
        ours.append(_robust_accuracy(model, x, y, res.success))
        with torch.random.fork_rng(devices=[]):  # torchattacks reseeds the global RNG
            atk = torchattacks.Square(model, norm="Linf", eps=0.1, n_queries=200, seed=seed)
            x_adv = atk(x, y)
        theirs.append(float((predict(model, x_adv) == y).float().mean()))
    assert sum(ours) / 2 <= sum(theirs) / 2 + 0.05, (ours, theirs)
    assert sum(ours) / 2 < digits.clean_accuracy - 0.2  # not a comparison of two no-ops
    assert not model.training


def test_square_rejects_bad_settings_with_clear_messages() -> None:
    with pytest.raises(ConfigError, match=r"square\.queries: expected an integer >= 1, got 0"):
        Square(queries=0)
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(ConfigError, match=r"square\.p_init: expected a number in \(0, 1\)"):
            Square(p_init=bad)
    with pytest.raises(ConfigError, match=r"square\.restarts: expected an integer >= 1"):
        Square(restarts=0)
    with pytest.raises(ConfigError, match=r"square\.queries"):
        Square(queries=True)


def test_square_rejects_a_model_with_one_score_column(digits: Digits) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 1)).eval()
    with pytest.raises(AttackInputError, match=r"scores of shape \(N, C\) with C >= 2"):
        Square(queries=5)(model, digits.x[:3], torch.zeros(3, dtype=torch.int64), ThreatModel())


def test_square_schedule_windows_and_pattern() -> None:
    # p halves at the paper's milestones, rescaled to the budget
    assert p_schedule(0.8, 0, 10000) == 0.8
    assert p_schedule(0.8, 11, 10000) == 0.4
    assert p_schedule(0.8, 8001, 10000) == pytest.approx(0.8 / 512)
    assert p_schedule(0.8, 6, 1000) == 0.2  # 6 of 1,000 is iteration 60 of the paper's 10,000
    assert window_shape(0.8, 8, 8) == (7, 7)
    assert window_shape(0.001, 8, 8) == (1, 1)
    assert window_shape(0.5, 1, 64) == (1, 32)
    assert window_shape(0.001, 8, 8, min_side=3) == (3, 3)
    pat = pseudo_gaussian(5, 5, split_rows=True)
    assert float(pat.norm()) == pytest.approx(1.0)
    assert bool((pat[:2] > 0).all()) and bool((pat[2:] < 0).all())
    assert as_grid(torch.zeros(2, 7)).shape == (2, 1, 1, 7)
    assert as_grid(torch.zeros(2, 3, 4)).shape == (2, 1, 3, 4)
    scores = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    y = torch.tensor([0, 0])
    assert margin(scores, y, None).tolist() == [1.0, -3.0]
    assert margin(scores, y, torch.tensor([2, 2])).tolist() == [2.0, 2.0]


def test_square_rejects_norms_it_does_not_implement(digits: Digits) -> None:
    try:
        threat = ThreatModel(cast(Any, "l1"), 1.0)
    except ConfigError:
        pytest.skip("this ThreatModel has no l1 norm")
    with pytest.raises(AttackInputError, match=r"square supports linf and l2, got 'l1'"):
        Square(queries=5)(digits.model, digits.x[:2], digits.y[:2], threat)
