"""The l1 threat model: Duchi et al.'s l1-ball projection, uniform random starts in the l1
ball, the l1 steepest-ascent step, and validation that lists l1 among the norms."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import ConfigError
from bastion.threat import NORMS, ThreatModel


def _reference_l1_projection(v: torch.Tensor, eps: float) -> torch.Tensor:
    """Projection onto the l1 ball by bisection on the soft threshold (no sorting): the
    independent reference for Duchi et al.'s sort-based algorithm."""
    if float(v.abs().sum()) <= eps:
        return v.clone()
    lo, hi = 0.0, float(v.abs().max())
    for _ in range(200):
        mid = (lo + hi) / 2
        if float((v.abs() - mid).clamp_min(0).sum()) > eps:
            lo = mid
        else:
            hi = mid
    return v.sign() * (v.abs() - hi).clamp_min(0)


def test_l1_is_a_norm_and_errors_list_it() -> None:
    assert "l1" in NORMS
    t = ThreatModel("l1", 12.0)  # any eps >= 0: no width limit as for linf
    assert (t.norm, t.eps) == ("l1", 12.0)
    assert ThreatModel.from_dict({"norm": "l1", "eps": 2}).norm == "l1"
    with pytest.raises(
        ConfigError, match=r"^threat\.norm: expected one of linf, l2, l1, got 'l0'$"
    ):
        ThreatModel(norm="l0", eps=1.0)  # type: ignore[arg-type]


def test_norm_of_and_distance_sum_absolute_values() -> None:
    t = ThreatModel("l1", 1.0)
    delta = torch.zeros(2, 1, 2, 2)
    delta[0, 0, 0, 0], delta[0, 0, 1, 1] = 0.25, -0.5
    delta[1] = 0.1
    torch.testing.assert_close(t.norm_of(delta), torch.tensor([0.75, 0.4]))
    torch.testing.assert_close(
        t.distance(delta + 0.3, torch.full_like(delta, 0.3)), torch.tensor([0.75, 0.4])
    )


def test_project_delta_matches_a_bisection_reference() -> None:
    g = torch.Generator().manual_seed(0)
    v = torch.randn(40, 3, 5, generator=g, dtype=torch.float64) * 2
    eps = torch.rand(40, generator=g, dtype=torch.float64) * 6  # some inside, most outside
    out = ThreatModel("l1", 1.0).project_delta(v, eps)
    for i in range(40):
        ref = _reference_l1_projection(v[i], float(eps[i]))
        torch.testing.assert_close(out[i], ref, atol=1e-9, rtol=0)
    norms = out.flatten(1).abs().sum(1)
    assert bool((norms <= eps + 1e-9).all())
    outside = v.flatten(1).abs().sum(1) > eps
    torch.testing.assert_close(norms[outside], eps[outside])  # lands on the sphere


def test_project_delta_keeps_inside_points_and_handles_zero_eps_and_ties() -> None:
    t = ThreatModel("l1", 1.0)
    inside = torch.tensor([[0.2, -0.3, 0.1]])
    assert torch.equal(t.project_delta(inside), inside)
    assert torch.equal(ThreatModel("l1", 0.0).project_delta(torch.ones(2, 3)), torch.zeros(2, 3))
    tied = t.project_delta(torch.tensor([[1.0, -1.0, 1.0, -1.0]]))
    torch.testing.assert_close(tied, torch.tensor([[0.25, -0.25, 0.25, -0.25]]))


def test_project_float32_stays_within_the_conformance_tolerance() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(64, 1, 28, 28, generator=g)
    x_adv = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    t = ThreatModel("l1", 10.0)
    out = t.project(x_adv, x)
    assert out.dtype == torch.float32
    assert float(t.distance(out, x).max()) <= 10.0 * (1 + 1e-6)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@settings(max_examples=40, deadline=None)
@given(
    shape=st.sampled_from([(1, 1), (2, 3), (3, 2, 2), (4, 9)]),
    eps=st.floats(0.0, 4.0),
    seed=st.integers(0, 2**31 - 1),
    spread=st.floats(0.0, 3.0),
)
def test_project_is_feasible_idempotent_and_never_farther(
    shape: tuple[int, ...], eps: float, seed: int, spread: float
) -> None:
    t = ThreatModel("l1", eps, (-1.0, 1.0))
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.rand(shape, generator=g, dtype=torch.float64) - 1
    x_adv = x + spread * torch.randn(shape, generator=g, dtype=torch.float64)
    out = t.project(x_adv, x)
    assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0
    assert bool((t.distance(out, x) <= eps * (1 + 1e-9) + 1e-12).all())
    assert bool((t.distance(out, x) <= t.distance(x_adv, x) + 1e-12).all())
    torch.testing.assert_close(t.project(out, x), out)


def test_random_init_is_uniform_in_the_l1_ball_and_reproducible() -> None:
    t = ThreatModel("l1", 2.0, (-10.0, 10.0))  # wide bounds: no clipping
    x = torch.zeros(4000, 3)
    a = t.random_init(x, generator=torch.Generator().manual_seed(0))
    b = t.random_init(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.dtype == x.dtype
    r = a.abs().sum(1) / 2.0
    assert float(r.max()) <= 1.0 + 1e-6
    # uniform in the 3-dim l1 ball: P(r <= s) = s^3, so E[r] = 3/4 and half lie within 0.79
    assert float(r.mean()) == pytest.approx(0.75, abs=0.02)
    assert float((r <= 0.5 ** (1 / 3)).float().mean()) == pytest.approx(0.5, abs=0.03)
    assert float(a.mean(0).abs().max()) < 0.05  # symmetric
    half = t.random_init(x, generator=torch.Generator().manual_seed(1), scale=0.5)
    assert float(half.abs().sum(1).max()) <= 1.0 + 1e-6


def test_random_init_clips_to_bounds() -> None:
    t = ThreatModel("l1", 3.0)
    x = torch.tensor([[0.0, 1.0, 0.5]]).repeat(100, 1)
    a = t.random_init(x, generator=torch.Generator().manual_seed(0))
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert bool((t.distance(a, x) <= 3.0 + 1e-6).all())


def test_steepest_step_moves_the_largest_coordinate_and_shares_ties() -> None:
    t = ThreatModel("l1", 1.0)
    g = torch.tensor([[0.1, -3.0, 2.0, 0.0], [2.0, -2.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    s = t.steepest_step(g)
    assert s.tolist() == [[0.0, -1.0, 0.0, 0.0], [0.5, -0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    w = torch.randn(1, 2, 5, generator=torch.Generator().manual_seed(3))
    step = t.steepest_step(w)
    assert step.shape == w.shape
    # on the unit l1 ball, <w, s> is maximal (= ||w||_inf) at the steepest step
    assert float((w * step).sum()) == pytest.approx(float(w.abs().max()), rel=1e-6)
