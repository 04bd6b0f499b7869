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


def test_attack_params_lists_constructor_keywords() -> None:
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
        match=r"^attack: unknown setting\(s\) \['epsilon', 'iters'\] "
        r"for 'pgd'; expected some of \['steps',",
    ):
        build_attack("pgd", {"iters": 3, "epsilon": 0.1, "steps": 2})
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['steps'\] for 'fgsm'"):
        build_attack("fgsm", {"steps": 2})  # a PGD setting is not an FGSM one


@pytest.mark.parametrize(
    ("name", "params", "pattern"),
    [
        ("pgd", {"steps": 0}, r"^--attack: pgd\.steps: expected an integer >= 1, got 0$"),
        ("pgd", {"restarts": -1}, r"^--attack: pgd\.restarts: expected an integer >= 1"),
        ("pgd", {"loss": "mse"}, r"^--attack: pgd\.loss: expected one of ce, cw"),
        ("fgsm", {"step_size": -0.5}, r"^--attack: fgsm\.step_size: expected a positive"),
        ("pgd", {"steps": "many"}, r"^--attack: invalid settings for 'pgd': "),
        ("pgd", {"step_size": "big"}, r"^--attack: invalid settings for 'pgd': "),
    ],
)
def test_invalid_values_are_config_errors_naming_where_and_field(
    name: str, params: dict[str, Any], pattern: str
) -> None:
    with pytest.raises(ConfigError, match=pattern):
        build_attack(name, params, where="--attack")
