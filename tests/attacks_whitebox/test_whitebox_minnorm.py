"""The minimum-norm attacks (CW-L2, DeepFool, FAB) on an undefended digits MLP: they fool it
almost everywhere with small perturbations, no larger than those of an independent
implementation (torchattacks), and their results count within a bounded budget exactly when
the smallest perturbation found fits in it."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn
from whitebox_digits import Digits

from bastion.attacks import Attack, predict
from bastion.attacks.cw import CarliniWagnerL2
from bastion.attacks.deepfool import DeepFool
from bastion.attacks.fab import FAB, FABTargeted
from bastion.errors import ConfigError
from bastion.threat import ThreatModel

# l2 radius 8 = the diameter of [0, 1]^64 and linf radius 1: the projection never binds, so the
# distances below are the attacks' own minimum norms.
UNBOUNDED = {"l2": ThreatModel("l2", 8.0), "linf": ThreatModel("linf", 1.0)}


def _cw() -> CarliniWagnerL2:
    # lr 0.05 rather than the paper's 0.01: digits have many pixels at exactly 0 or 1, where the
    # tanh change of variables flattens the gradient, and 100 steps of 0.01 barely move them.
    return CarliniWagnerL2(steps=100, binary_search_steps=5, initial_const=1e-2, lr=0.05)


def _norms(attack: Attack, d: Digits, threat: ThreatModel, **kw: Any) -> tuple[Tensor, Tensor]:
    res = attack(d.model, d.x, d.y, threat, generator=torch.Generator().manual_seed(0), **kw)
    return res.success, threat.distance(res.x_adv, d.x)


@pytest.mark.parametrize(
    ("attack", "max_median"),
    [(_cw(), 0.8), (DeepFool(), 0.7), (FAB(steps=50), 0.7)],
    ids=["cw-l2", "deepfool", "fab"],
)
def test_minimum_norm_attacks_fool_the_undefended_model(
    digits: Digits, attack: Attack, max_median: float
) -> None:
    success, dist = _norms(attack, digits, UNBOUNDED["l2"])
    assert float(success.float().mean()) >= 0.9
    assert float(dist[success].median()) <= max_median  # measured: CW 0.53, DF 0.50, FAB 0.49
    assert not digits.model.training


@pytest.mark.parametrize(
    "attack",
    [_cw(), DeepFool(), FAB(steps=50)],
    ids=["cw-l2", "deepfool", "fab"],
)
def test_targeted_minimum_norm_attacks_reach_the_target(digits: Digits, attack: Attack) -> None:
    targets = (digits.y + 1) % 10
    success, dist = _norms(attack, digits, UNBOUNDED["l2"], targets=targets)
    assert float(success.float().mean()) >= 0.85  # measured 1.0, 0.99, 0.95
    untargeted, dist_u = _norms(attack, digits, UNBOUNDED["l2"])
    both = success & untargeted
    assert float(dist[both].median()) >= float(dist_u[both].median())  # a harder task


def test_fab_t_is_close_to_untargeted_fab(digits: Digits) -> None:
    s_t, d_t = _norms(FABTargeted(steps=50, target_classes=3), digits, UNBOUNDED["linf"])
    s_u, d_u = _norms(FAB(steps=50), digits, UNBOUNDED["linf"])
    assert float(s_t.float().mean()) >= 0.9
    both = s_t & s_u
    assert float(d_t[both].median()) <= 1.25 * float(d_u[both].median())  # measured 1.11x


def test_fab_t_in_bf16_finds_points_as_close_as_in_float32(digits: Digits) -> None:
    s_h, d_h = _norms(
        FABTargeted(steps=30, target_classes=2, precision="bf16"), digits, UNBOUNDED["linf"]
    )
    s_f, d_f = _norms(FABTargeted(steps=30, target_classes=2), digits, UNBOUNDED["linf"])
    assert float(s_h.float().mean()) >= float(s_f.float().mean()) - 0.05
    both = s_h & s_f
    assert float(d_h[both].median()) <= 1.1 * float(d_f[both].median())
    with pytest.raises(ConfigError, match=r"fab-t\.precision"):
        FABTargeted(precision="fp16")


@pytest.mark.parametrize("attack", [DeepFool(), FAB(steps=30)], ids=["deepfool", "fab"])
def test_a_bounded_threat_counts_the_points_within_eps(digits: Digits, attack: Attack) -> None:
    success, dist = _norms(attack, digits, UNBOUNDED["l2"])
    eps = float(dist[success].median())
    bounded, _ = _norms(attack, digits, ThreatModel("l2", eps))
    inside = success & (dist < eps * 0.999)
    assert bool(bounded[inside].all())  # the attack is deterministic: same points, unprojected
    assert float(bounded.float().mean()) <= float((success & (dist <= eps * 1.5)).float().mean())


# -- against torchattacks -----------------------------------------------------------------------


def _median_ratio(ours: tuple[Tensor, Tensor], theirs: tuple[Tensor, Tensor]) -> float:
    both = ours[0] & theirs[0]
    assert int(both.sum()) >= 20
    return float(ours[1][both].median()) / float(theirs[1][both].median())


def _theirs(
    atk: Any, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel
) -> tuple[Tensor, Tensor]:
    with torch.random.fork_rng():  # torchattacks draws from the global RNG
        torch.manual_seed(0)
        x_adv = atk(x, y)
    return predict(model, x_adv) != y, threat.distance(x_adv, x)


def test_cw_is_no_weaker_than_torchattacks(digits: Digits) -> None:
    ta = pytest.importorskip("torchattacks")
    threat = UNBOUNDED["l2"]
    ours = _norms(_cw(), digits, threat)
    theirs = _theirs(
        ta.CW(digits.model, c=1, kappa=0, steps=100, lr=0.05),
        digits.model,
        digits.x,
        digits.y,
        threat,
    )
    assert float(ours[0].float().mean()) >= float(theirs[0].float().mean()) - 0.03
    assert _median_ratio(ours, theirs) <= 1.5  # measured 0.82: the binary search over c pays off


def test_deepfool_norms_match_torchattacks(digits: Digits) -> None:
    ta = pytest.importorskip("torchattacks")
    threat = UNBOUNDED["l2"]
    d = Digits(digits.model, digits.x[:40], digits.y[:40], digits.clean_accuracy)
    ours = _norms(DeepFool(steps=50, overshoot=0.02), d, threat)
    theirs = _theirs(ta.DeepFool(d.model, steps=50, overshoot=0.02), d.model, d.x, d.y, threat)
    assert float(ours[0].float().mean()) >= float(theirs[0].float().mean())
    assert _median_ratio(ours, theirs) <= 1.5


@pytest.mark.parametrize(("norm", "ta_norm"), [("l2", "L2"), ("linf", "Linf")])
def test_fab_norms_match_torchattacks(digits: Digits, norm: str, ta_norm: str) -> None:
    ta = pytest.importorskip("torchattacks")
    threat = UNBOUNDED[norm]
    ours = _norms(FAB(steps=50), digits, threat)
    atk = ta.FAB(digits.model, norm=ta_norm, eps=threat.eps, steps=50, n_restarts=1, n_classes=10)
    theirs = _theirs(atk, digits.model, digits.x, digits.y, threat)
    assert float(ours[0].float().mean()) >= float(theirs[0].float().mean()) - 0.02
    assert _median_ratio(ours, theirs) <= 1.05  # the same algorithm: measured 1.0000
