"""Tests for bastion.threat.ThreatModel: validation, serialisation and the norm geometry."""

from __future__ import annotations

import json
import math
from dataclasses import FrozenInstanceError
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import AttackInputError, BastionError, ConfigError
from bastion.threat import NORMS, ThreatModel

# -- validation ---------------------------------------------------------------------------------


def test_defaults_are_linf_in_unit_range() -> None:
    t = ThreatModel()
    assert (t.norm, t.eps, t.bounds) == ("linf", 0.3, (0.0, 1.0))


@pytest.mark.parametrize("norm", ["l0", "Linf", "L2", "", "inf"])
def test_unknown_norm_names_field_and_choices(norm: str) -> None:
    with pytest.raises(ConfigError, match=r"threat\.norm: expected one of linf, l2") as info:
        ThreatModel(norm=norm, eps=0.1)  # type: ignore[arg-type]
    assert repr(norm) in str(info.value)


@pytest.mark.parametrize("eps", [-0.1, -1e-9, float("nan"), float("inf"), float("-inf")])
def test_bad_eps_value_names_field(eps: float) -> None:
    with pytest.raises(ConfigError, match=r"threat\.eps: expected a finite number >= 0"):
        ThreatModel(eps=eps)


@pytest.mark.parametrize("eps", ["0.1", None, True, [0.1]])
def test_non_numeric_eps_names_field(eps: Any) -> None:
    with pytest.raises(ConfigError, match=r"threat\.eps: expected a number"):
        ThreatModel(eps=eps)


def test_zero_eps_is_allowed_and_makes_the_ball_a_point() -> None:
    # eps = 0 is documented as valid (">= 0"): the clean-accuracy point of an eps sweep.
    t = ThreatModel(norm="l2", eps=0)
    assert t.eps == 0.0 and isinstance(t.eps, float)
    x = torch.full((2, 3), 0.5)
    assert torch.equal(t.project(x + 0.2, x), x)


def test_linf_eps_wider_than_the_range_is_rejected_but_l2_is_not() -> None:
    with pytest.raises(ConfigError, match=r"threat\.eps: .*expected eps <= hi - lo"):
        ThreatModel(norm="linf", eps=1.5)
    assert ThreatModel(norm="linf", eps=1.0).eps == 1.0
    assert ThreatModel(norm="l2", eps=3.0).eps == 3.0  # an l2 ball of radius 3 fits in [0, 1]^784


@pytest.mark.parametrize(
    "bounds",
    [(1.0, 0.0), (0.5, 0.5), (0.0, float("nan")), (float("-inf"), 1.0), (0.0, float("inf"))],
)
def test_bad_bounds_name_field(bounds: tuple[float, float]) -> None:
    with pytest.raises(ConfigError, match=r"threat\.bounds: expected \[lo, hi\] with lo < hi"):
        ThreatModel(eps=0.1, bounds=bounds)


@pytest.mark.parametrize("bounds", [(0.0, 1.0, 2.0), (0.0,), ("a", 1.0), None])
def test_malformed_bounds_name_field(bounds: Any) -> None:
    with pytest.raises(ConfigError, match=r"threat\.bounds"):
        ThreatModel(eps=0.1, bounds=bounds)


def test_config_error_is_a_value_error_and_bastion_error() -> None:
    with pytest.raises(ValueError):
        ThreatModel(eps=-1)
    assert issubclass(ConfigError, BastionError)


def test_values_are_normalised_to_floats_and_frozen() -> None:
    t = ThreatModel(norm="l2", eps=2, bounds=(-1, 1))
    assert isinstance(t.eps, float) and t.bounds == (-1.0, 1.0)
    assert all(isinstance(b, float) for b in t.bounds)
    with pytest.raises(FrozenInstanceError):
        t.eps = 0.5  # type: ignore[misc]


# -- dict round trip ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "threat",
    [ThreatModel(), ThreatModel("l2", 1.5, (-1.0, 2.0)), ThreatModel("linf", 8 / 255, (0.0, 1.0))],
)
def test_to_dict_from_dict_round_trip(threat: ThreatModel) -> None:
    d = threat.to_dict()
    assert set(d) == {"norm", "eps", "bounds"}
    assert isinstance(d["bounds"], list)
    again = ThreatModel.from_dict(json.loads(json.dumps(d)))  # survives JSON too
    assert again == threat


def test_from_dict_defaults_and_int_values() -> None:
    assert ThreatModel.from_dict({}) == ThreatModel()
    t = ThreatModel.from_dict({"norm": "l2", "eps": 2, "bounds": [0, 255]})
    assert t == ThreatModel("l2", 2.0, (0.0, 255.0))


def test_from_dict_unknown_key_names_it() -> None:
    with pytest.raises(ConfigError, match=r"threat: unknown field\(s\) \['epsilon'\]"):
        ThreatModel.from_dict({"norm": "linf", "epsilon": 0.1})


@pytest.mark.parametrize("bounds", [0.5, [0.0], [0.0, 0.5, 1.0], "01", ["lo", "hi"]])
def test_from_dict_bad_bounds_names_field(bounds: Any) -> None:
    with pytest.raises(ConfigError, match=r"threat\.bounds"):
        ThreatModel.from_dict({"bounds": bounds})


def test_from_dict_validates_like_the_constructor() -> None:
    with pytest.raises(ConfigError, match=r"threat\.eps"):
        ThreatModel.from_dict({"eps": -0.5})
    with pytest.raises(ConfigError, match=r"threat\.norm"):
        ThreatModel.from_dict({"norm": "l0"})


def test_with_eps_keeps_norm_and_bounds_and_validates() -> None:
    t = ThreatModel("l2", 0.5, (-1.0, 1.0))
    u = t.with_eps(1.25)
    assert (u.norm, u.eps, u.bounds) == ("l2", 1.25, (-1.0, 1.0))
    assert t.eps == 0.5
    with pytest.raises(ConfigError, match=r"threat\.eps"):
        t.with_eps(float("nan"))


# -- norms and distances ------------------------------------------------------------------------


def test_norm_of_is_per_example_over_all_non_batch_dims() -> None:
    delta = torch.zeros(2, 2, 3, 3)
    delta[0, 1, 2, 0] = -0.3
    delta[0, 0, 0, 0] = 0.2
    delta[1] = 0.1
    linf = ThreatModel("linf", 0.1).norm_of(delta)
    l2 = ThreatModel("l2", 0.1).norm_of(delta)
    assert linf.shape == l2.shape == (2,)
    torch.testing.assert_close(linf, torch.tensor([0.3, 0.1]))
    torch.testing.assert_close(l2, torch.tensor([math.sqrt(0.13), math.sqrt(18 * 0.01)]))


def test_distance_is_norm_of_difference() -> None:
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    x_adv = torch.tensor([[0.3, 0.4], [1.0, 0.5]])
    torch.testing.assert_close(ThreatModel("l2", 1.0).distance(x_adv, x), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(
        ThreatModel("linf", 1.0).distance(x_adv, x), torch.tensor([0.4, 0.5])
    )


def test_clip_clamps_to_bounds() -> None:
    t = ThreatModel("l2", 1.0, (-1.0, 2.0))
    out = t.clip(torch.tensor([-5.0, -1.0, 0.3, 2.0, 7.0]))
    assert out.tolist() == pytest.approx([-1.0, -1.0, 0.3, 2.0, 2.0])


# -- projection ---------------------------------------------------------------------------------


def test_project_delta_linf_clamps_each_coordinate() -> None:
    t = ThreatModel("linf", 0.1)
    d = torch.tensor([[0.5, -0.5, 0.05, -0.02]])
    assert t.project_delta(d)[0].tolist() == pytest.approx([0.1, -0.1, 0.05, -0.02])


def test_project_delta_l2_scales_only_long_perturbations() -> None:
    t = ThreatModel("l2", 1.0)
    d = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    out = t.project_delta(d)
    torch.testing.assert_close(out[0], torch.tensor([0.6, 0.8]))  # radial scaling to norm 1
    torch.testing.assert_close(out[1], d[1])  # already inside: untouched


def test_project_delta_per_example_eps_tensor() -> None:
    eps = torch.tensor([0.1, 0.5])
    d = torch.ones(2, 4)
    lin = ThreatModel("linf", 0.3).project_delta(d, eps)
    assert lin[0].tolist() == pytest.approx([0.1] * 4) and lin[1].tolist() == pytest.approx(
        [0.5] * 4
    )
    l2 = ThreatModel("l2", 0.3).project_delta(d, eps)
    torch.testing.assert_close(l2.norm(dim=1), eps)


def test_project_delta_of_zero_is_zero() -> None:
    z = torch.zeros(3, 5)
    for norm in NORMS:
        assert torch.equal(ThreatModel(norm, 0.2).project_delta(z), z)


def test_project_l2_then_clip_stays_feasible_at_the_corner() -> None:
    # x at the corner of the box; the ball projection alone would leave the range.
    t = ThreatModel("l2", 0.5)
    x = torch.tensor([[1.0, 0.0]])
    out = t.project(torch.tensor([[3.0, -2.0]]), x)
    assert torch.equal(out, x)
    out = t.project(torch.tensor([[0.0, 3.0]]), x)
    assert float(t.distance(out, x)[0]) <= 0.5 + 1e-6
    assert out.min() >= 0 and out.max() <= 1


_shapes = st.sampled_from([(1, 1), (2, 3), (3, 2, 2), (2, 1, 3, 3), (4, 5)])


@settings(max_examples=60, deadline=None)
@given(
    shape=_shapes,
    norm=st.sampled_from(NORMS),
    eps_frac=st.floats(0.0, 1.0),
    lo=st.floats(-2.0, 1.0),
    width=st.floats(0.1, 3.0),
    seed=st.integers(0, 2**31 - 1),
    spread=st.floats(0.0, 5.0),
)
def test_project_is_feasible_idempotent_and_optimal_for_linf(
    shape: tuple[int, ...],
    norm: str,
    eps_frac: float,
    lo: float,
    width: float,
    seed: int,
    spread: float,
) -> None:
    hi = lo + width
    eps = eps_frac * width if norm == "linf" else eps_frac * 2 * width
    t = ThreatModel(norm, eps, (lo, hi))  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(seed)
    x = lo + width * torch.rand(shape, generator=g, dtype=torch.float64)
    x_adv = x + spread * torch.randn(shape, generator=g, dtype=torch.float64)
    out = t.project(x_adv, x)
    assert out.shape == x.shape
    assert float(out.min()) >= lo and float(out.max()) <= hi
    assert bool((t.distance(out, x) <= eps * (1 + 1e-6) + 1e-9).all())
    torch.testing.assert_close(t.project(out, x), out)  # feasible points are fixed points
    # project_delta alone respects the ball
    d = t.project_delta(x_adv - x)
    assert bool((t.norm_of(d) <= eps * (1 + 1e-6) + 1e-9).all())
    if norm == "linf":
        # the exact nearest feasible point: coordinate-wise clamp into the box-ball intersection
        lower = torch.clamp(x - eps, min=lo)
        upper = torch.clamp(x + eps, max=hi)
        torch.testing.assert_close(out, torch.maximum(torch.minimum(x_adv, upper), lower))
    else:
        # never moves a point that is already feasible, and never increases the distance to x
        assert bool((t.distance(out, x) <= t.distance(x_adv, x) + 1e-9).all())


# -- random starts ------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", NORMS)
def test_random_init_is_feasible_and_reproducible(norm: str) -> None:
    t = ThreatModel(norm, 0.2)  # type: ignore[arg-type]
    x = torch.rand(16, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    a = t.random_init(x, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(999)  # the global RNG must not matter when a generator is given
    b = t.random_init(x, generator=torch.Generator().manual_seed(7))
    c = t.random_init(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert bool((t.distance(a, x) <= 0.2 * (1 + 1e-6)).all())
    assert not torch.equal(a, x)


def test_random_init_linf_fills_the_cube() -> None:
    t = ThreatModel("linf", 0.1, (-10.0, 10.0))  # wide bounds: no clipping
    x = torch.zeros(200, 50)
    d = t.random_init(x, generator=torch.Generator().manual_seed(0)) - x
    assert float(d.abs().max()) <= 0.1
    assert float(d.max()) > 0.099 and float(d.min()) < -0.099
    assert abs(float(d.mean())) < 0.005  # centred
    assert float(d.abs().mean()) == pytest.approx(0.05, abs=0.005)  # uniform: E|U(-e, e)| = e/2


def test_random_init_l2_is_uniform_in_the_ball() -> None:
    t = ThreatModel("l2", 0.5, (-10.0, 10.0))
    x = torch.zeros(4000, 3)
    d = t.random_init(x, generator=torch.Generator().manual_seed(0)) - x
    r = d.norm(dim=1) / 0.5
    assert float(r.max()) <= 1.0 + 1e-6
    # uniform in the 3-ball: P(r <= s) = s^3, so E[r] = 3/4 and a quarter of points lie within 0.63
    assert float(r.mean()) == pytest.approx(0.75, abs=0.02)
    assert float((r <= 0.5 ** (1 / 3)).float().mean()) == pytest.approx(0.5, abs=0.03)
    # direction isotropic: the mean is near the centre
    assert float(d.mean(dim=0).norm()) < 0.02


@pytest.mark.parametrize("norm", NORMS)
def test_random_init_scale_shrinks_the_ball(norm: str) -> None:
    t = ThreatModel(norm, 0.4, (-10.0, 10.0))  # type: ignore[arg-type]
    x = torch.zeros(64, 8)
    a = t.random_init(x, generator=torch.Generator().manual_seed(1), scale=0.25)
    assert bool((t.distance(a, x) <= 0.1 + 1e-6).all())


def test_random_init_clips_to_bounds() -> None:
    t = ThreatModel("linf", 0.3)
    x = torch.tensor([[0.0, 1.0, 0.0, 1.0]]).repeat(50, 1)
    a = t.random_init(x, generator=torch.Generator().manual_seed(0))
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert float(a[:, 0].max()) > 0.0  # moved inwards where it could


# -- steepest ascent ----------------------------------------------------------------------------


def test_steepest_step_linf_is_sign() -> None:
    g = torch.tensor([[0.3, -2.0, 0.0, 1e-20], [-1e-30, 5.0, -0.1, 0.0]])
    out = ThreatModel("linf", 0.1).steepest_step(g)
    assert torch.equal(out, g.sign())


@pytest.mark.parametrize("scale", [1e3, 1.0, 1e-8, 1e-17, 1e-30])
def test_steepest_step_l2_is_unit_per_example_and_parallel(scale: float) -> None:
    # Tiny gradients (a confident model saturates its softmax) must still give a unit step,
    # otherwise an l2 attack stalls; regression test for a ``grad / (norm + 1e-12)`` step.
    g = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0)) * scale
    step = ThreatModel("l2", 1.0).steepest_step(g)
    assert step.shape == g.shape
    torch.testing.assert_close(step.flatten(1).norm(dim=1), torch.ones(5))
    g64 = g.flatten(1).double() / scale  # cosine_similarity floors tiny norms, so rescale first
    cos = torch.nn.functional.cosine_similarity(step.flatten(1).double(), g64)
    torch.testing.assert_close(cos, torch.ones(5, dtype=torch.float64))


def test_steepest_step_l2_zero_gradient_gives_zero_step() -> None:
    g = torch.zeros(2, 4)
    g[1, 2] = -3.0
    step = ThreatModel("l2", 1.0).steepest_step(g)
    assert torch.equal(step[0], torch.zeros(4))
    assert step[1].tolist() == pytest.approx([0.0, 0.0, -1.0, 0.0])
    assert bool(torch.isfinite(step).all())


@pytest.mark.parametrize("norm", NORMS)
def test_steepest_step_increases_a_linear_objective_most(norm: str) -> None:
    # For f(x) = <w, x>, the steepest step in the unit ball of the norm maximises <w, s>.
    w = torch.randn(1, 10, generator=torch.Generator().manual_seed(3))
    t = ThreatModel(norm, 1.0)  # type: ignore[arg-type]
    s = t.steepest_step(w)
    gain = float((w * s).sum())
    dual = {"linf": float(w.abs().sum()), "l2": float(w.norm()), "l1": float(w.abs().max())}[norm]
    assert gain == pytest.approx(dual, rel=1e-5)
    others = torch.randn(200, 10, generator=torch.Generator().manual_seed(4))
    others = others / t.norm_of(others)[:, None]
    assert float((others @ w.T).max()) <= gain + 1e-5


# -- input validation ---------------------------------------------------------------------------


def test_validate_inputs_accepts_in_range_floats_and_empty() -> None:
    t = ThreatModel("linf", 0.1)
    t.validate_inputs(torch.rand(3, 4))
    t.validate_inputs(torch.tensor([[1.0 + 5e-7, -5e-7]]))  # within atol
    t.validate_inputs(torch.zeros(0, 4))


@pytest.mark.parametrize(
    ("x", "pattern"),
    [
        (torch.tensor([[0, 1]]), r"x: expected a floating-point tensor, got dtype torch\.int64"),
        ([[0.0, 1.0]], r"x: expected a torch\.Tensor, got list"),
        (
            torch.tensor([[0.0, 1.1]]),
            r"x: values must lie in the threat model's bounds \[0\.0, 1\.0\]",
        ),
        (torch.tensor([[-0.01, 0.5]]), r"x: values must lie in the threat model's bounds"),
        (torch.tensor([[float("nan"), 0.5]]), r"x: values must lie in the threat model's bounds"),
    ],
)
def test_validate_inputs_rejects(x: Any, pattern: str) -> None:
    with pytest.raises(AttackInputError, match=pattern):
        ThreatModel("linf", 0.1).validate_inputs(x)


def test_validate_inputs_uses_the_given_name() -> None:
    with pytest.raises(AttackInputError, match=r"^images: "):
        ThreatModel("linf", 0.1).validate_inputs(torch.tensor([2.0]), name="images")
