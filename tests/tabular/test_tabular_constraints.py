"""check_feasible, the relaxed projection, snapping and finalize of a TabularThreat."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from bastion.data.schema import FeatureSpec, Relation, TabularSchema
from bastion.errors import AttackInputError, ConfigError
from bastion.tabular import ConstraintSet, TabularThreat, check_feasible
from bastion.threat import ThreatModel


def _schema() -> TabularSchema:
    return TabularSchema(
        "label",
        ("a", "b"),
        (
            FeatureSpec("amount", "float", 0, 100),
            FeatureSpec("limit", "float", 0, 100),
            FeatureSpec("n", "integer", 0, 10),
            FeatureSpec("age", "float", 0, 1, immutable=True),
            FeatureSpec("channel", "categorical", categories=("web", "app", "phone"), cost=0.5),
        ),
        (Relation.parse("amount <= limit"),),
    )


def test_check_feasible_names_every_violation_per_row() -> None:
    schema = _schema()
    ok_row = [0.2, 0.5, 0.3, 0.5, 1.0, 0.0, 0.0]
    rows = torch.tensor(
        [
            ok_row,
            [0.9, 0.5, 0.3, 0.5, 1.0, 0.0, 0.0],  # amount > limit
            [0.2, 0.5, 0.35, 0.5, 1.0, 0.0, 0.0],  # 3.5 items
            [0.2, 0.5, 0.3, 0.5, 0.6, 0.4, 0.0],  # not one-hot
            [0.2, 1.5, 0.3, 0.7, 1.0, 0.0, 0.0],  # out of bounds, age moved
        ]
    )
    ref = torch.tensor([ok_row] * 5)
    report = check_feasible(schema, rows, x_ref=ref)
    assert report.ok.tolist() == [True, False, False, False, False]
    assert report.violations[0] == []
    assert report.violations[1] == ["relation: amount <= limit"]
    assert report.violations[2] == ["integer: n"]
    assert report.violations[3] == ["one-hot: channel"]
    assert report.violations[4] == ["bounds: limit", "immutable: age"]
    # without a reference, immutables are not compared
    assert check_feasible(schema, rows[4:]).violations[0] == ["bounds: limit"]
    with pytest.raises(AttackInputError, match=r"shape \(N, 7\)"):
        check_feasible(schema, rows[:, :3])


def test_float32_rounding_of_feasible_points_is_not_a_violation() -> None:
    schema = TabularSchema(
        "y",
        (),
        (
            FeatureSpec("amount", "float", 0, 5000),
            FeatureSpec("shipping", "float", 0, 100),
            FeatureSpec("total", "float", 0, 5100),
        ),
        (Relation.parse("total == amount + shipping"),),
    )
    rng = np.random.default_rng(0)
    amount = np.round(rng.uniform(0, 5000, 500), 2)
    shipping = np.round(rng.uniform(0, 100, 500), 2)
    raw = np.stack([amount, shipping, np.round(amount + shipping, 2)], axis=1)
    unit = torch.from_numpy(schema.to_unit(raw)).float()
    assert bool(check_feasible(schema, unit).ok.all())


def _qp_projection(
    z: np.ndarray, a: np.ndarray, b: float, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    res = minimize(
        lambda u: 0.5 * float(np.sum((u - z) ** 2)),
        np.clip(z, lo, hi),
        jac=lambda u: u - z,
        bounds=list(zip(lo, hi, strict=True)),
        constraints=[{"type": "ineq", "fun": lambda u: b - float(a @ u), "jac": lambda u: -a}],
        method="SLSQP",
        options={"ftol": 1e-12, "maxiter": 200},
    )
    return np.asarray(res.x)


def test_relaxed_projection_of_a_pair_is_the_euclidean_projection() -> None:
    schema = TabularSchema(
        "y",
        (),
        (FeatureSpec("a", "float", 0, 10), FeatureSpec("b", "float", 0, 20)),
        (Relation.parse("a <= b"),),
    )
    cs = ConstraintSet(schema)
    gen = torch.Generator().manual_seed(0)
    z = torch.rand(50, 2, generator=gen, dtype=torch.float64) * 1.4 - 0.2
    x = torch.tensor([[0.1, 0.5]], dtype=torch.float64).expand(50, 2)
    radius = torch.tensor([0.6, 0.6], dtype=torch.float64)
    out = cs.project(z, x, radius=radius, iterations=200)
    lo, hi = cs.box(x, radius)
    a = cs.relation_matrix[0].numpy()
    for i in range(50):
        expected = _qp_projection(
            z[i].numpy(), a, float(cs.relation_bound[0]), lo[i].numpy(), hi[i].numpy()
        )
        np.testing.assert_allclose(out[i].numpy(), expected, atol=1e-4)
    assert bool(cs.feasible(out).all())


def test_groups_go_onto_the_simplex_within_their_box() -> None:
    cs = ConstraintSet(_schema())
    x = torch.tensor([[0.2, 0.5, 0.3, 0.5, 1.0, 0.0, 0.0]])
    z = x.clone()
    z[0, 4:] = torch.tensor([0.1, 0.9, 0.8])
    out = cs.project(z, x, radius=torch.full((7,), 0.7))
    group = out[0, 4:]
    assert float(group.sum()) == pytest.approx(1.0, abs=1e-6)
    assert bool((group >= -1e-6).all())
    assert float(group[0]) >= 0.3 - 1e-6  # x_web = 1 may drop by at most the radius 0.7
    assert float(group[1]) == pytest.approx(float(group[2]) + 0.1, abs=1e-5)


def test_threat_projection_and_finalize_guarantees() -> None:
    schema = _schema()
    threat = TabularThreat(norm="linf", eps=0.2, schema=schema)
    gen = torch.Generator().manual_seed(1)
    x = torch.tensor([[0.2, 0.5, 0.3, 0.5, 1.0, 0.0, 0.0]]).repeat(64, 1)
    z = x + torch.randn(64, 7, generator=gen)
    relaxed = threat.project(z, x)
    assert bool((threat.distance(relaxed, x) <= 0.2 + 1e-6).all())
    assert torch.equal(relaxed[:, 3], x[:, 3])  # immutable
    final, ok = threat.finalize(relaxed, x)
    assert bool(threat.admissible(final, x).all())
    assert bool(check_feasible(schema, final, x_ref=x).ok.all())
    # channel has cost 0.5: radius 0.4 < 1, so the category can never change
    assert torch.equal(final[:, 4:], x[:, 4:])
    # a feasible point is a fixed point of the projection
    assert torch.equal(threat.project(final, x), final)
    assert torch.equal(final[~ok], x[~ok])


def test_cost_weighted_radius_and_cheap_categories() -> None:
    schema = _schema()
    threat = TabularThreat(norm="linf", eps=0.6, schema=schema)
    x = torch.tensor([[0.2, 0.5, 0.3, 0.5, 1.0, 0.0, 0.0]])
    assert threat.radius(x).tolist() == pytest.approx([0.6, 0.6, 0.6, 0.0, 1.2, 1.2, 1.2])
    # cost 0.5 and eps 0.6: a category change (distance 1, weighted 0.5) fits the budget
    target = x.clone()
    target[0, 4:] = torch.tensor([0.0, 0.0, 1.0])
    final, ok = threat.finalize(threat.project(target, x), x)
    assert bool(ok[0]) and final[0, 4:].tolist() == [0.0, 0.0, 1.0]
    step = threat.steepest_step(torch.ones(1, 7))
    assert step[0, 3] == 0 and step[0, 4] == pytest.approx(2.0)
    plain = TabularThreat(norm="linf", eps=0.6, schema=schema, use_costs=False)
    assert plain.radius(x)[4] == pytest.approx(0.6)


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_l2_l1_projection_stays_in_the_weighted_ball(norm: str) -> None:
    schema = _schema()
    threat = TabularThreat(norm=norm, eps=0.3, schema=schema)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(2)
    x = torch.tensor([[0.2, 0.5, 0.3, 0.5, 1.0, 0.0, 0.0]]).repeat(32, 1)
    out = threat.project(x + torch.randn(32, 7, generator=gen), x)
    assert bool((threat.distance(out, x) <= 0.3 * (1 + 1e-5)).all())
    final, _ = threat.finalize(out, x)
    assert bool(threat.admissible(final, x).all())


def test_threat_rejects_bad_settings_and_infeasible_inputs() -> None:
    schema = _schema()
    with pytest.raises(ConfigError, match=r"threat\.schema"):
        TabularThreat(norm="linf", eps=0.1)
    with pytest.raises(ConfigError, match=r"threat.bounds"):
        TabularThreat(norm="linf", eps=0.1, bounds=(0.0, 2.0), schema=schema)
    threat = TabularThreat(norm="linf", eps=0.1, schema=schema)
    bad = torch.tensor([[0.2, 0.5, 0.3, 0.5, 1.0, 0.0, 0.0], [0.9, 0.5, 0.3, 0.5, 1.0, 0.0, 0.0]])
    with pytest.raises(AttackInputError, match=r"row 1 violates .*amount <= limit"):
        threat.validate_inputs(bad)
    assert threat.with_eps(0.05).schema == schema
    assert isinstance(threat, ThreatModel)
    assert threat.to_dict()["schema"]["relations"][0]["name"] == "amount <= limit"
