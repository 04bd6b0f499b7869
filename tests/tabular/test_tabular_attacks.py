"""The constrained attacks: conformance, feasibility of every output, black-box query counts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from tabular_fixtures import Fraud
from torch import nn

from bastion.attacks.base import Attack, predict
from bastion.attacks.conformance import check_attack
from bastion.attacks.targets import LabelTarget, SklearnTarget
from bastion.errors import AttackInputError, ConfigError
from bastion.tabular import (
    ConstrainedAPGD,
    ConstrainedHopSkipJump,
    ConstrainedPGD,
    ConstrainedRandomSearch,
    TabularThreat,
    check_feasible,
)
from bastion.threat import ThreatModel

WHITE: dict[str, Callable[[], Attack]] = {
    "cpgd": lambda: ConstrainedPGD(steps=10),
    "capgd": lambda: ConstrainedAPGD(steps=10),
}


def _threat(fraud: Fraud, norm: str = "linf", eps: float = 0.1) -> TabularThreat:
    return TabularThreat(norm=norm, eps=eps, schema=fraud.data.schema)  # type: ignore[arg-type]


def _assert_feasible(threat: TabularThreat, x_adv: torch.Tensor, x: torch.Tensor) -> None:
    assert threat.schema is not None
    report = check_feasible(threat.schema, x_adv, x_ref=x)
    assert bool(report.ok.all()), [v for v in report.violations if v][:3]
    assert bool(threat.in_ball(x_adv, x).all())
    # a feature of cost c moves at most eps / c (the linf bound holds for every norm)
    moved = (x_adv - x).abs() * threat.cost(x)
    assert float(moved.max()) <= threat.eps * (1 + 1e-5) + 1e-6


@pytest.mark.parametrize("name", list(WHITE))
def test_white_box_attacks_pass_the_conformance_suite(fraud: Fraud, name: str) -> None:
    x, y = fraud.data.test.x[:40], fraud.data.test.y[:40]
    passed = check_attack(WHITE[name], fraud.mlp, x, y, _threat(fraud), seed=3)
    assert "feasible" in passed and "repeatable" in passed and "stronger-than-clean" in passed


def test_black_box_attacks_pass_the_conformance_suite(fraud: Fraud) -> None:
    x, y = fraud.data.test.x[:12], fraud.data.test.y[:12]
    threat = _threat(fraud)
    passed = check_attack(
        lambda: ConstrainedRandomSearch(queries=40), SklearnTarget(fraud.gbm), x, y, threat
    )
    assert "stronger-than-clean" in passed
    labels = LabelTarget(fraud.gbm.predict, 2)
    passed = check_attack(
        lambda: ConstrainedHopSkipJump(iterations=2, probes=12, init_tries=30),
        labels,
        x,
        y,
        threat,
        targeted=False,
    )
    assert "repeatable" in passed


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", list(WHITE))
def test_white_box_outputs_are_feasible(fraud: Fraud, name: str, norm: str) -> None:
    x, y = fraud.data.test.x[:60], fraud.data.test.y[:60]
    threat = _threat(fraud, norm, 0.1 if norm == "linf" else 0.3)
    res = WHITE[name]()(fraud.mlp, x, y, threat, generator=torch.Generator().manual_seed(0))
    _assert_feasible(threat, res.x_adv, x)
    clean = predict(fraud.mlp, x) == y
    assert float((~res.success).float().mean()) < float(clean.float().mean())


@pytest.mark.parametrize("model", ["gbm", "forest"])
def test_black_box_outputs_are_feasible_and_queries_are_counted(fraud: Fraud, model: str) -> None:
    x, y = fraud.data.test.x[:12], fraud.data.test.y[:12]
    estimator = getattr(fraud, model)
    threat = _threat(fraud)
    scores = SklearnTarget(estimator)
    res = ConstrainedRandomSearch(queries=60)(
        scores, x, y, threat, generator=torch.Generator().manual_seed(0)
    )
    _assert_feasible(threat, res.x_adv, x)
    # the target saw one row for the class count, the attack's rows, and the final check
    assert scores.queries == int(res.queries.sum()) + 1
    assert bool((res.queries <= 60 + 2).all())
    labels = LabelTarget(estimator.predict, 2)
    hsj = ConstrainedHopSkipJump(iterations=2, probes=12, init_tries=30)
    res = hsj(labels, x[:8], y[:8], threat, generator=torch.Generator().manual_seed(0))
    _assert_feasible(threat, res.x_adv, x[:8])
    assert labels.queries == int(res.queries.sum()) + 1
    clean = torch.from_numpy(estimator.predict(x[:8].numpy()) == y[:8].numpy())
    assert float((~res.success).float().mean()) < float(clean.float().mean())


def test_immutable_only_schema_leaves_inputs_alone(fraud: Fraud) -> None:
    x, y = fraud.data.test.x[:10], fraud.data.test.y[:10]
    threat = _threat(fraud, eps=1e-4)  # too small to move any integer or category
    res = ConstrainedPGD(steps=5)(
        fraud.mlp, x, y, threat, generator=torch.Generator().manual_seed(0)
    )
    _assert_feasible(threat, res.x_adv, x)
    assert torch.equal(res.success, predict(fraud.mlp, x) != y)


def test_attacks_reject_plain_threats_and_infeasible_rows(fraud: Fraud) -> None:
    x, y = fraud.data.test.x[:4], fraud.data.test.y[:4]
    with pytest.raises(AttackInputError, match="cpgd: expected a TabularThreat"):
        ConstrainedPGD(steps=2)(fraud.mlp, x, y, ThreatModel(norm="linf", eps=0.1))
    bad = x.clone()
    bad[2, 0] = 1.0  # amount 5000 > credit limit and total != amount + shipping
    with pytest.raises(AttackInputError, match=r"x: row 2 violates .*amount <= credit_limit"):
        ConstrainedAPGD(steps=2)(fraud.mlp, bad, y, _threat(fraud))
    with pytest.raises(ConfigError, match=r"cpgd\.steps"):
        ConstrainedPGD(steps=0)
    with pytest.raises(ConfigError, match=r"random-search\.p_init"):
        ConstrainedRandomSearch(p_init=0.0)


def test_a_gradient_free_target_cannot_be_attacked_with_gradients(fraud: Fraud) -> None:
    target: nn.Module = SklearnTarget(fraud.gbm)
    x, y = fraud.data.test.x[:4], fraud.data.test.y[:4]
    with pytest.raises(AttackInputError, match="no gradients"):
        ConstrainedPGD(steps=2)(target, x, y, _threat(fraud))
