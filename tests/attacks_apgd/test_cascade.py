"""The cascade: worst case over attacks, run on survivors only, sub-attacks never mutated."""

from __future__ import annotations

import pytest
import torch
from apgd_models import Trained

from bastion.attacks import FGSM, PGD, build_attack, check_attack
from bastion.attacks.apgd import APGD
from bastion.attacks.cascade import PRESETS, Cascade
from bastion.errors import ConfigError


def test_conformance(plain: Trained) -> None:
    make = lambda: Cascade(attacks=[{"name": "fgsm"}, {"name": "pgd", "steps": 10}])  # noqa: E731
    check_attack(make, plain.model, plain.x[:40], plain.y[:40], plain.threat)


def test_worst_case_is_the_union_of_breaks(robust: Trained) -> None:
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    fgsm = FGSM()(robust.model, robust.x, robust.y, robust.threat, generator=gen())
    apgd = APGD(steps=20)(robust.model, robust.x, robust.y, robust.threat, generator=gen())
    casc = Cascade(attacks=[{"name": "fgsm"}, {"name": "apgd", "steps": 20}])
    res = casc(robust.model, robust.x, robust.y, robust.threat, generator=gen())
    acc = float((~res.success).float().mean())
    assert acc <= float((~fgsm.success).float().mean())
    assert acc <= float((~apgd.success).float().mean()) + 0.02
    breakdown = res.broken_by()
    assert list(breakdown) == ["0:fgsm", "1:apgd"]
    assert sum(breakdown.values()) == int(res.success.sum()) - int(
        (robust.model(robust.x).argmax(1) != robust.y).sum()
    )


def test_later_attacks_only_see_survivors(plain: Trained) -> None:
    seen: list[int] = []

    class Spy(PGD):
        def _run(self, model, x, y, threat, *, targets, generator, opening):  # type: ignore[no-untyped-def]
            seen.append(x.shape[0])
            assert opening.robust.all()  # only survivors reach a later attack
            return super()._run(
                model, x, y, threat, targets=targets, generator=generator, opening=opening
            )

    from bastion.attacks import registry

    registry.register("spy", knowledge="white-box")(Spy)
    try:
        casc = Cascade(attacks=[{"name": "pgd", "steps": 20}, {"name": "spy", "steps": 5}])
        res = casc(
            plain.model, plain.x, plain.y, plain.threat, generator=torch.Generator().manual_seed(0)
        )
    finally:
        registry.unregister("spy")
    assert "spy" not in registry.ATTACKS
    robust_after_first = int((~res.success).sum()) + res.broken_by()["1:spy"]
    assert seen == ([robust_after_first] if robust_after_first else [])


def test_sub_attacks_are_fresh_each_call(plain: Trained) -> None:
    casc = Cascade(preset="quick")
    a1 = casc.sub_attacks()[0][1]
    a2 = casc.sub_attacks()[0][1]
    assert a1 is not a2 and repr(a1) == repr(a2)
    before = repr(casc)
    first = casc(plain.model, plain.x[:10], plain.y[:10], plain.threat)
    assert repr(casc) == before
    assert not hasattr(casc, "last_breakdown")  # the breakdown is in each call's result only
    second = casc(plain.model, plain.x[10:12], plain.y[10:12], plain.threat)
    assert sum(first.broken_by().values()) <= 10 and sum(second.broken_by().values()) <= 2


def test_presets_exist_and_standard_matches_autoattack() -> None:
    assert set(PRESETS) >= {"quick", "standard", "black-box"}
    names = [s["name"] for s in PRESETS["standard"]]
    assert names[:2] == ["apgd", "apgd-t"] and "square" in names
    assert all(s.get("steps", 100) == 100 for s in PRESETS["standard"] if s["name"] != "square")


def test_reachable_from_registry() -> None:
    atk = build_attack("cascade", {"preset": "quick"})
    assert isinstance(atk, Cascade)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({}, "exactly one"),
        ({"preset": "x"}, "cascade.preset"),
        ({"attacks": []}, "at least one"),
        ({"attacks": [{"name": "nope"}]}, "cascade.attacks[0].name"),
        (
            {"attacks": [{"name": "pgd", "steps": 0}]},
            "cascade.attacks[0] (pgd).steps: expected an integer >= 1, got 0",
        ),
    ],
)
def test_bad_settings(kwargs: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        Cascade(**kwargs)
    assert needle in str(e.value)


def test_bf16_cascade_reaches_gradient_attacks_and_never_claims_a_false_success(
    robust: Trained,
) -> None:
    specs = [
        {"name": "apgd", "steps": 10},
        {"name": "apgd-t", "steps": 10, "target_classes": 2},
        {"name": "fab-t", "steps": 10, "target_classes": 2, "precision": "fp32"},
        {"name": "square", "queries": 50},
    ]
    casc = Cascade(attacks=specs, precision="bf16")
    assert [s.get("precision") for s in casc.params()["attacks"]] == ["bf16", "bf16", "fp32", None]
    assert casc.params()["precision"] == "bf16"
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    half = casc(robust.model, robust.x, robust.y, robust.threat, generator=gen())
    full = Cascade(attacks=specs)(robust.model, robust.x, robust.y, robust.threat, generator=gen())
    with torch.no_grad():
        fooled = robust.model(half.x_adv).argmax(1) != robust.y  # float32 truth
    assert torch.equal(half.success, fooled)
    assert abs(int(half.success.sum()) - int(full.success.sum())) <= 4
    assert (
        list(half.seconds_by())
        == list(half.broken_by())
        == ["0:apgd", "1:apgd-t", "2:fab-t", "3:square"]
    )
    assert all(t >= 0.0 for t in half.seconds_by().values())
    with pytest.raises(ConfigError, match=r"cascade\.precision"):
        Cascade(preset="quick", precision="fp16")
