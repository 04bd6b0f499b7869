"""Property: on random schemas, models and points, every attack output is feasible.

Hypothesis draws the structure of a schema (how many float, integer and categorical features,
which are immutable, their costs, which relations hold: ``a <= b`` pairs, sums ``c == a + b``
and general linear inequalities), the threat (norm, eps) and a seed from which the rows and a
random linear model are generated; the rows satisfy the relations by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from bastion.attacks.targets import LabelTarget
from bastion.data.schema import FeatureSpec, Relation, TabularSchema
from bastion.tabular import (
    ConstrainedAPGD,
    ConstrainedHopSkipJump,
    ConstrainedPGD,
    ConstrainedRandomSearch,
    TabularThreat,
    check_feasible,
)


@dataclass
class Case:
    schema: TabularSchema
    x: torch.Tensor
    threat: TabularThreat
    model: nn.Module
    seed: int


@st.composite
def cases(draw: st.DrawFn) -> Case:
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    n_rows = 6
    n_float = draw(st.integers(2, 4))
    n_int = draw(st.integers(0, 2))
    n_cat = draw(st.integers(0, 2))
    costs = st.sampled_from([0.25, 1.0, 2.0])
    features: list[FeatureSpec] = []
    columns: list[np.ndarray] = []
    span = draw(st.sampled_from([1.0, 10.0, 1000.0]))
    low = draw(st.sampled_from([0.0, -5.0]))
    for i in range(n_float):  # shared bounds, so that a <= b pairs fit both ranges
        features.append(
            FeatureSpec(f"f{i}", "float", low, low + span, draw(st.booleans()), cost=draw(costs))
        )
        columns.append(rng.uniform(low, low + span, n_rows))
    for i in range(n_int):
        top = draw(st.sampled_from([3, 20]))
        features.append(
            FeatureSpec(f"i{i}", "integer", 0, top, draw(st.booleans()), cost=draw(costs))
        )
        columns.append(rng.integers(0, top + 1, n_rows).astype(float))
    relations: list[Relation] = []
    if draw(st.booleans()):  # f0 <= f1
        columns[0], columns[1] = (
            np.minimum(columns[0], columns[1]),
            np.maximum(columns[0], columns[1]),
        )
        relations.append(Relation.parse("f0 <= f1"))
    if draw(st.booleans()):  # a total: total == f0 + f1
        features.append(
            FeatureSpec(
                "total", "float", 2 * low, 2 * (low + span), draw(st.booleans()), cost=draw(costs)
            )
        )
        columns.append(columns[0] + columns[1])
        relations.append(Relation.parse("total == f0 + f1"))
    if draw(st.booleans()):  # a general inequality over two numeric features
        names = [f.name for f in features]
        j, k = rng.choice(len(names), 2, replace=False)
        coef = rng.normal(size=2).round(2)
        coef[coef == 0] = 1.0
        lhs = coef[0] * columns[j] + coef[1] * columns[k]
        relations.append(
            Relation(
                name="linear",
                terms=((names[j], float(coef[0])), (names[k], float(coef[1]))),
                op="<=",
                value=float(lhs.max() + draw(st.sampled_from([0.0, 0.1])) * span),
            )
        )
    for i in range(n_cat):
        k = draw(st.integers(2, 3))
        cats = tuple(f"c{m}" for m in range(k))
        features.append(
            FeatureSpec(
                f"cat{i}", "categorical", None, None, draw(st.booleans()), cats, draw(costs)
            )
        )
        columns.append(rng.integers(0, k, n_rows).astype(float))
    schema = TabularSchema("y", ("a", "b"), tuple(features), tuple(relations))
    x = torch.from_numpy(schema.to_unit(np.stack(columns, axis=1))).float()
    norm = draw(st.sampled_from(["linf", "l2"]))
    eps = draw(st.sampled_from([0.05, 0.3, 1.0] if norm == "linf" else [0.05, 0.5, 2.0]))
    threat = TabularThreat(norm=norm, eps=eps, schema=schema)
    gen = torch.Generator().manual_seed(seed)
    model = nn.Linear(x.shape[1], 2)
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, x.shape[1], generator=gen) * 4)
        model.bias.copy_(-model(x).mean(dim=0))  # put the boundary through the data
    return Case(schema, x, threat, model.eval(), seed)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_every_attack_output_is_feasible(case: Case) -> None:
    y = case.model(case.x).argmax(dim=1).detach()
    labels = LabelTarget(lambda b: case.model(torch.from_numpy(b)).argmax(dim=1).detach(), 2)
    runs = [
        (ConstrainedPGD(steps=3), case.model),
        (ConstrainedAPGD(steps=3), case.model),
        (ConstrainedRandomSearch(queries=8), case.model),
        (ConstrainedHopSkipJump(iterations=1, probes=6, init_tries=10, binary_steps=4), labels),
    ]
    for attack, model in runs:
        res = attack(
            model, case.x, y, case.threat, generator=torch.Generator().manual_seed(case.seed)
        )
        report = check_feasible(case.schema, res.x_adv, x_ref=case.x)
        assert bool(report.ok.all()), (attack.name, report.violations)
        assert bool(case.threat.in_ball(res.x_adv, case.x).all()), attack.name
        pred = case.model(res.x_adv).argmax(dim=1)
        assert torch.equal(res.success, pred != y), attack.name
