"""HopSkipJump: the attack contract, label-only operation, query accounting and strength."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pytest
import torch
from blackbox_digits import Digits
from torch import Tensor

from bastion.attacks.base import predict
from bastion.attacks.conformance import check_attack
from bastion.attacks.hopskipjump import HopSkipJump
from bastion.attacks.targets import LabelTarget, ScoreTarget
from bastion.errors import AttackInputError, ConfigError
from bastion.threat import ThreatModel


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.3), ("l2", 2.0)])
def test_hopskipjump_passes_the_conformance_suite(digits: Digits, norm: str, eps: float) -> None:
    passed = check_attack(
        lambda: HopSkipJump(queries=300),
        digits.model,
        digits.x[:30],
        digits.y[:30],
        ThreatModel(norm, eps),  # type: ignore[arg-type]
    )
    assert "targeted" in passed


def test_hopskipjump_uses_only_the_predicted_label(digits: Digits) -> None:
    model = digits.model

    def labels(a: npt.NDArray[np.float32]) -> Tensor:
        with torch.no_grad():
            out: Tensor = model(torch.from_numpy(a)).argmax(dim=1)
        return out

    target = LabelTarget(labels, 10, batch_size=1 << 20)
    x, y, threat = digits.x[:20], digits.y[:20], ThreatModel("l2", 1.0)
    direct = HopSkipJump(queries=200)(model, x, y, threat, generator=_gen(1))
    label_only = HopSkipJump(queries=200)(target, x, y, threat, generator=_gen(1))
    assert torch.equal(direct.x_adv, label_only.x_adv)
    assert torch.equal(direct.queries, label_only.queries)
    assert torch.equal(direct.success, label_only.success)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_hopskipjump_counts_queries_and_respects_the_budget(digits: Digits, norm: str) -> None:
    counter = ScoreTarget(digits.model, 10, kind="logits", inputs="torch", name="counter")
    x, y = digits.x[:30], digits.y[:30]
    threat = ThreatModel(norm, 0.1 if norm == "linf" else 0.7)  # type: ignore[arg-type]
    res = HopSkipJump(queries=150)(counter, x, y, threat, generator=_gen(0))
    assert counter.queries == int(res.queries.sum()) + 1
    assert int(res.queries.max()) <= 151
    wrong = predict(digits.model, x) != y
    assert bool((res.queries[wrong] == 2).all())
    assert bool(res.success.any()) and bool((~res.success).any())
    assert bool((threat.distance(res.x_adv, x) <= threat.eps * (1 + 1e-5)).all())


def test_hopskipjump_gets_stronger_with_more_queries(digits: Digits) -> None:
    x, y, threat = digits.x[:40], digits.y[:40], ThreatModel("linf", 0.15)
    few = HopSkipJump(queries=60)(digits.model, x, y, threat, generator=_gen(0))
    many = HopSkipJump(queries=600)(digits.model, x, y, threat, generator=_gen(0))
    assert float(many.success.float().mean()) > float(few.success.float().mean())


def test_hopskipjump_breaks_an_undefended_model_at_eps_03(digits: Digits) -> None:
    res = HopSkipJump(queries=500)(
        digits.model, digits.x[:50], digits.y[:50], ThreatModel("linf", 0.3), generator=_gen(0)
    )
    assert float(res.success.float().mean()) >= 0.9
    assert not digits.model.training


def test_hopskipjump_without_any_adversarial_start_returns_the_input() -> None:
    never = LabelTarget(lambda a: np.zeros(len(a), dtype=np.int64), 3, name="constant")
    x = torch.rand(4, 5, generator=_gen(0))
    y = torch.zeros(4, dtype=torch.int64)
    res = HopSkipJump(queries=100, init_tries=7)(never, x, y, ThreatModel("linf", 0.3))
    assert torch.equal(res.x_adv, x) and not bool(res.success.any())
    assert res.queries.tolist() == [1 + 7 + 1] * 4


def test_hopskipjump_rejects_bad_settings_with_clear_messages() -> None:
    with pytest.raises(ConfigError, match=r"hopskipjump\.queries: expected an integer >= 1, got 0"):
        HopSkipJump(queries=0)
    with pytest.raises(ConfigError, match=r"hopskipjump\.init_evals"):
        HopSkipJump(init_evals=0)
    with pytest.raises(ConfigError, match=r"hopskipjump\.max_evals: expected at least init_evals"):
        HopSkipJump(init_evals=100, max_evals=10)
    with pytest.raises(ConfigError, match=r"hopskipjump\.gamma: expected a finite number > 0"):
        HopSkipJump(gamma=0.0)
    with pytest.raises(ConfigError, match=r"hopskipjump\.init_tries"):
        HopSkipJump(init_tries=-1)


def test_hopskipjump_rejects_norms_it_does_not_implement(digits: Digits) -> None:
    try:
        threat = ThreatModel(cast(Any, "l1"), 1.0)
    except ConfigError:
        pytest.skip("this ThreatModel has no l1 norm")
    with pytest.raises(AttackInputError, match=r"hopskipjump supports linf and l2, got 'l1'"):
        HopSkipJump(queries=5)(digits.model, digits.x[:2], digits.y[:2], threat)
