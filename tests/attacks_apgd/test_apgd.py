"""APGD-CE, APGD-DLR and APGD-T: the contract, strength against PGD and a peer, bad settings."""

from __future__ import annotations

import pytest
import torch
from apgd_models import Trained

from bastion.attacks import PGD, check_attack
from bastion.attacks.apgd import (
    APGD,
    APGDTargeted,
    _checkpoint_lengths,
    dlr_loss,
    dlr_targeted_loss,
)
from bastion.errors import AttackInputError, ConfigError
from bastion.threat import ThreatModel


def _acc(
    model: torch.nn.Module, atk: object, t: Trained, threat: ThreatModel | None = None
) -> float:
    res = atk(model, t.x, t.y, threat or t.threat, generator=torch.Generator().manual_seed(0))  # type: ignore[operator]
    return float((~res.success).float().mean())


@pytest.mark.parametrize(
    "make",
    [lambda: APGD(steps=20), lambda: APGD(steps=20, loss="dlr")],
    ids=["apgd-ce", "apgd-dlr"],
)
def test_conformance(plain: Trained, make: object) -> None:
    passed = check_attack(make, plain.model, plain.x[:40], plain.y[:40], plain.threat)  # type: ignore[arg-type]
    assert "targeted" in passed and "feasible" in passed


def test_conformance_targeted_variant(plain: Trained) -> None:
    passed = check_attack(
        lambda: APGDTargeted(steps=10, target_classes=3),
        plain.model,
        plain.x[:40],
        plain.y[:40],
        plain.threat,
        targeted=False,
    )
    assert "repeatable" in passed


def test_apgd_t_refuses_given_targets(plain: Trained) -> None:
    with pytest.raises(AttackInputError, match="targets"):
        APGDTargeted(steps=5)(
            plain.model, plain.x[:4], plain.y[:4], plain.threat, targets=plain.y[:4]
        )


def test_checkpoints_follow_the_paper() -> None:
    lengths = _checkpoint_lengths(100)
    assert lengths[:4] == [22, 19, 16, 13]
    assert min(lengths) == 6 and sum(lengths) >= 100
    assert _checkpoint_lengths(1) == [1]


def test_dlr_is_shift_and_scale_invariant() -> None:
    z = torch.randn(6, 10, generator=torch.Generator().manual_seed(1))
    y = torch.arange(6)
    t = (y + 3) % 10
    assert torch.allclose(dlr_loss(3.0 * z + 7.0, y), dlr_loss(z, y), atol=1e-5)
    assert torch.allclose(
        dlr_targeted_loss(2.0 * z - 1.0, y, t), dlr_targeted_loss(z, y, t), atol=1e-5
    )
    # positive exactly when some other class beats the true one
    assert torch.equal(dlr_loss(z, y) > 0, z.argmax(1) != y)


@pytest.mark.parametrize("norm,eps", [("linf", 0.2), ("l2", 1.0)])
def test_apgd_at_least_as_strong_as_pgd_on_robust_model(
    robust: Trained, norm: str, eps: float
) -> None:
    threat = ThreatModel(norm, eps)  # type: ignore[arg-type]
    pgd = _acc(robust.model, PGD(steps=20), robust, threat)
    apgd = _acc(robust.model, APGD(steps=20), robust, threat)
    assert apgd <= pgd + 0.02


def test_apgd_t_at_least_as_strong_as_apgd_ce(robust: Trained) -> None:
    ce = _acc(robust.model, APGD(steps=30), robust)
    t = _acc(robust.model, APGDTargeted(steps=30, target_classes=3), robust)
    assert t <= ce + 0.02


def test_matches_torchattacks_apgd(robust: Trained) -> None:
    torchattacks = pytest.importorskip("torchattacks")
    ours = _acc(robust.model, APGD(steps=50), robust)
    peer = torchattacks.APGD(
        robust.model, norm="Linf", eps=robust.threat.eps, steps=50, loss="ce", seed=0
    )
    with torch.no_grad():
        theirs = float(
            (robust.model(peer(robust.x, robust.y)).argmax(1) == robust.y).float().mean()
        )
    assert ours <= theirs + 0.02


def test_queries_count_forward_passes(plain: Trained) -> None:
    res = APGD(steps=10)(
        plain.model, plain.x, plain.y, plain.threat, generator=torch.Generator().manual_seed(0)
    )
    # a start evaluation, the initial point, at most 10 steps and the final check
    assert int(res.queries.max()) <= 1 + 1 + 10 + 1
    assert int(res.queries.min()) >= 2


def test_eot_averages_gradients(plain: Trained) -> None:
    res = APGD(steps=5, eot_samples=3)(
        plain.model,
        plain.x[:8],
        plain.y[:8],
        plain.threat,
        generator=torch.Generator().manual_seed(0),
    )
    assert int(res.queries.max()) <= 1 + 3 * (1 + 5) + 1


def test_dlr_needs_three_classes() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    x = torch.rand(3, 4)
    with pytest.raises(AttackInputError, match="at least 3 classes"):
        APGD(steps=2, loss="dlr")(
            model, x, torch.zeros(3, dtype=torch.int64), ThreatModel("linf", 0.1)
        )


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"steps": 0}, "apgd.steps"),
        ({"restarts": 0}, "apgd.restarts"),
        ({"loss": "mse"}, "apgd.loss"),
        ({"rho": 1.5}, "apgd.rho"),
        ({"eot_samples": 0}, "apgd.eot_samples"),
    ],
)
def test_bad_settings(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        APGD(**kwargs)


@pytest.mark.parametrize(
    "make",
    [
        lambda p: APGD(steps=15, precision=p),
        lambda p: APGDTargeted(steps=10, target_classes=3, precision=p),
    ],
    ids=["apgd", "apgd-t"],
)
def test_bf16_is_close_and_every_success_holds_in_float32(robust: Trained, make: object) -> None:
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    half = make("bf16")(robust.model, robust.x, robust.y, robust.threat, generator=gen())  # type: ignore[operator]
    full = make("fp32")(robust.model, robust.x, robust.y, robust.threat, generator=gen())  # type: ignore[operator]
    with torch.no_grad():
        fooled = robust.model(half.x_adv).argmax(1) != robust.y
    assert torch.equal(half.success, fooled)
    assert abs(int(half.success.sum()) - int(full.success.sum())) <= 4
    assert half.queries.sum() >= 1


def test_bad_precision_names_the_attack() -> None:
    with pytest.raises(ConfigError, match=r"apgd\.precision"):
        APGD(precision="half")
    with pytest.raises(ConfigError, match=r"apgd-t\.precision"):
        APGDTargeted(precision="fp16")
