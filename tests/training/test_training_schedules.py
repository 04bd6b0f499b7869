"""Learning-rate and eps schedules: shapes, end points and monotonicity."""

from __future__ import annotations

import itertools
import math

import pytest

from bastion.errors import ConfigError
from bastion.training.schedules import SCHEDULES, learning_rate, ramped_eps

GRID = [i / 200 for i in range(201)]


def _curve(schedule: str, lr_max: float = 0.2, **kw: float) -> list[float]:
    return [learning_rate(schedule, lr_max, p, **kw) for p in GRID]


def test_schedule_names() -> None:
    assert set(SCHEDULES) == {"cyclic", "cosine", "constant", "step"}


def test_cyclic_rises_to_peak_then_falls_to_zero() -> None:
    lr_max, peak = 0.2, 0.4
    curve = _curve("cyclic", lr_max, peak=peak)
    top = curve.index(max(curve))
    assert GRID[top] == pytest.approx(peak)
    assert max(curve) == pytest.approx(lr_max)
    assert curve[0] == pytest.approx(0.0)
    assert curve[-1] == pytest.approx(0.0, abs=1e-12)
    rising, falling = curve[: top + 1], curve[top:]
    assert all(b > a for a, b in itertools.pairwise(rising))
    assert all(b < a for a, b in itertools.pairwise(falling))
    # triangular: linear on each side
    assert learning_rate("cyclic", lr_max, peak / 2, peak=peak) == pytest.approx(lr_max / 2)
    assert learning_rate("cyclic", lr_max, (1 + peak) / 2, peak=peak) == pytest.approx(lr_max / 2)


def test_cyclic_custom_peak() -> None:
    curve = _curve("cyclic", 1.0, peak=0.25)
    assert GRID[curve.index(max(curve))] == pytest.approx(0.25)
    assert learning_rate("cyclic", 1.0, 0.999, peak=0.25) < 0.01


def test_cosine_decays_monotonically_from_lr_max_to_zero() -> None:
    curve = _curve("cosine", 0.1)
    assert curve[0] == pytest.approx(0.1)
    assert curve[-1] == pytest.approx(0.0, abs=1e-12)
    assert learning_rate("cosine", 0.1, 0.5) == pytest.approx(0.05)
    assert all(b < a for a, b in itertools.pairwise(curve))


def test_step_divides_by_ten_at_half_and_three_quarters() -> None:
    lr = 0.3
    assert learning_rate("step", lr, 0.0) == pytest.approx(lr)
    assert learning_rate("step", lr, 0.49) == pytest.approx(lr)
    assert learning_rate("step", lr, 0.5) == pytest.approx(lr / 10)
    assert learning_rate("step", lr, 0.74) == pytest.approx(lr / 10)
    assert learning_rate("step", lr, 0.75) == pytest.approx(lr / 100)
    assert learning_rate("step", lr, 1.0) == pytest.approx(lr / 100)
    curve = _curve("step", lr)
    assert all(b <= a for a, b in itertools.pairwise(curve))
    assert len(set(curve)) == 3


def test_constant_is_flat() -> None:
    assert set(_curve("constant", 0.07)) == {0.07}


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_progress_is_clamped_to_unit_interval(schedule: str) -> None:
    assert learning_rate(schedule, 0.1, -0.5) == learning_rate(schedule, 0.1, 0.0)
    assert learning_rate(schedule, 0.1, 1.7) == learning_rate(schedule, 0.1, 1.0)
    for p in GRID:
        v = learning_rate(schedule, 0.1, p)
        assert math.isfinite(v)
        assert 0.0 <= v <= 0.1 + 1e-12


def test_unknown_schedule_raises_config_error_naming_field() -> None:
    with pytest.raises(ConfigError, match=r"training\.schedule.*cyclic.*'linear'"):
        learning_rate("linear", 0.1, 0.5)


def test_ramped_eps_reaches_target_after_ramp_and_is_monotone() -> None:
    eps, ramp = 0.3, 5.0
    xs = [i / 10 for i in range(0, 101)]  # 0 .. 10 epochs
    vals = [ramped_eps(eps, x, ramp) for x in xs]
    assert vals[0] == pytest.approx(0.0)
    assert ramped_eps(eps, 2.5, ramp) == pytest.approx(eps / 2)
    assert all(b >= a for a, b in itertools.pairwise(vals))
    assert all(v <= eps for v in vals)
    assert all(v < eps for x, v in zip(xs, vals, strict=True) if x < ramp)
    assert all(v == eps for x, v in zip(xs, vals, strict=True) if x >= ramp)


def test_ramped_eps_start_fraction() -> None:
    eps = 0.2
    assert ramped_eps(eps, 0.0, 4.0, start_fraction=0.5) == pytest.approx(0.1)
    assert ramped_eps(eps, 2.0, 4.0, start_fraction=0.5) == pytest.approx(0.15)
    assert ramped_eps(eps, 4.0, 4.0, start_fraction=0.5) == pytest.approx(eps)


def test_ramped_eps_without_ramp_is_constant() -> None:
    assert ramped_eps(0.3, 0.0, 0.0) == 0.3
    assert ramped_eps(0.3, 7.5, 0.0) == 0.3
