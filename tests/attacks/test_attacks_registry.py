"""Attacks by name: ``build_attack`` and ``attack_params``."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.attacks import ATTACKS, FGSM, PGD, attack_params, build_attack
from bastion.errors import ConfigError


def test_registry_names() -> None:
    assert ATTACKS["fgsm"] is FGSM and ATTACKS["pgd"] is PGD
    assert {
        "apgd",
        "apgd-t",
        "fab-t",
        "square",
        "cw-l2",
        "deepfool",
        "hopskipjump",
        "cascade",
    } <= set(ATTACKS)
    for name, cls in ATTACKS.items():
        assert cls.name == name


def test_attack_params_lists_the_settings_model_fields() -> None:
    assert attack_params("fgsm") == ["step_size", "random_start", "loss", "precision"]
    assert attack_params("pgd") == [
        "steps",
        "step_size",
        "restarts",
        "random_start",
        "loss",
        "early_stop",
        "precision",
    ]


def test_build_with_defaults_and_settings() -> None:
    fgsm = build_attack("fgsm")
    assert isinstance(fgsm, FGSM) and fgsm.params() == FGSM().params()
    pgd = build_attack("pgd", {"steps": 7, "restarts": 3, "loss": "cw", "early_stop": False})
    assert isinstance(pgd, PGD)
    assert (pgd.steps, pgd.restarts, pgd.loss, pgd.early_stop) == (7, 3, "cw", False)
    assert pgd.step_size == pytest.approx(2.5 / 7)


def test_build_returns_a_fresh_object_and_does_not_keep_params() -> None:
    params: dict[str, Any] = {"steps": 3}
    a = build_attack("pgd", params)
    b = build_attack("pgd", params)
    assert a is not b
    params["steps"] = 9
    assert a.params()["steps"] == 3


def test_unknown_name_names_field_and_choices() -> None:
    with pytest.raises(ConfigError, match=r"^attack\.name: expected one of .*fgsm.*, got 'cw'$"):
        build_attack("cw")
    with pytest.raises(ConfigError, match=r"^evaluation\.attacks\[1\]\.name: "):
        build_attack("PGD", where="evaluation.attacks[1]")


def test_unknown_setting_is_named() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^attack \(pgd\): unknown setting\(s\) \['epsilon', 'iters'\]; "
        r"expected some of \['steps',",
    ):
        build_attack("pgd", {"iters": 3, "epsilon": 0.1, "steps": 2})
    with pytest.raises(ConfigError, match=r"\(fgsm\): unknown setting\(s\) \['steps'\]"):
        build_attack("fgsm", {"steps": 2})  # a PGD setting is not an FGSM one


@pytest.mark.parametrize(
    ("name", "params", "pattern"),
    [
        ("pgd", {"steps": 0}, r"^--attack \(pgd\)\.steps: expected an integer >= 1, got 0$"),
        ("pgd", {"restarts": -1}, r"^--attack \(pgd\)\.restarts: expected an integer >= 1"),
        ("pgd", {"loss": "mse"}, r"^--attack \(pgd\)\.loss: expected one of ce, cw, got 'mse'$"),
        (
            "fgsm",
            {"step_size": -0.5},
            r"^--attack \(fgsm\)\.step_size: expected a finite number > 0",
        ),
        (
            "pgd",
            {"steps": "many"},
            r"^--attack \(pgd\)\.steps: expected an integer >= 1, got 'many'$",
        ),
        (
            "pgd",
            {"step_size": "big"},
            r"^--attack \(pgd\)\.step_size: expected a finite number > 0 or null",
        ),
    ],
)
def test_invalid_values_are_config_errors_naming_where_and_field(
    name: str, params: dict[str, Any], pattern: str
) -> None:
    with pytest.raises(ConfigError, match=pattern):
        build_attack(name, params, where="--attack")


def test_register_declares_name_knowledge_and_kind_and_unregister_removes() -> None:
    from bastion.attacks import Attack, attack_knowledge, register, unregister

    @register("test-only-noop", knowledge="score-based", kind="minimum-norm")
    class NoOp(FGSM):
        pass

    try:
        assert ATTACKS["test-only-noop"] is NoOp
        assert (NoOp.name, NoOp.knowledge, NoOp.kind) == (
            "test-only-noop",
            "score-based",
            "minimum-norm",
        )
        assert attack_knowledge("test-only-noop") == ["score-based"]
        assert attack_knowledge(
            "cascade", {"attacks": [{"name": "test-only-noop"}, {"name": "transfer"}]}
        ) == ["score-based", "transfer"]
        assert isinstance(build_attack("test-only-noop"), NoOp)
        with pytest.raises(ValueError, match=r"the name is taken by .*NoOp"):
            register("test-only-noop", knowledge="white-box")(type("Other", (FGSM,), {}))
    finally:
        unregister("test-only-noop")
    assert "test-only-noop" not in ATTACKS
    assert ATTACKS["fgsm"] is FGSM and FGSM.kind == "fixed-budget"  # the parent is unchanged
    with pytest.raises(KeyError, match="no attack registered as 'test-only-noop'"):
        unregister("test-only-noop")
    with pytest.raises(ValueError, match=r"knowledge: expected one of white-box"):
        register("x", knowledge="grey-box")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"kind: expected one of fixed-budget, minimum-norm"):
        register("x", knowledge="white-box", kind="adaptive")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"None needs a class that overrides knowledge_in"):
        register("x", knowledge=None)(type("Plain", (FGSM,), {}))
    with pytest.raises(ValueError, match=r"expected an Attack subclass"):
        register("x", knowledge="white-box")(int)  # type: ignore[type-var]
    assert "x" not in ATTACKS and issubclass(NoOp, Attack)


def test_cascade_knowledge_comes_from_its_sub_attacks() -> None:
    from bastion.attacks import attack_knowledge

    assert attack_knowledge("cascade", {"preset": "standard"}) == ["white-box", "score-based"]
    assert attack_knowledge("cascade", {"preset": "black-box"}) == ["score-based"]
    assert attack_knowledge("hopskipjump") == ["label-only"]
    assert attack_knowledge("no-such-attack") == []
