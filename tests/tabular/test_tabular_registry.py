"""The ``tabular:`` section names its attacks through the registry's tabular channel: an
unknown name lists the channel's attacks, a registered plug-in runs like a built-in, and the
models each attack runs on follow from what it knows."""

from __future__ import annotations

from pathlib import Path

import pytest
from tabular_fixtures import FRAUD_CSV, FRAUD_SCHEMA

from bastion.attacks.registry import attack_knowledge, channel_attacks, register, unregister
from bastion.errors import ConfigError
from bastion.tabular import ConstrainedAPGD, ConstrainedRandomSearch
from bastion.tabular.blackbox import RandomSearchSettings
from bastion.tabular.experiment import (
    TabularConfig,
    _attack,
    attack_settings,
    parse_tabular_config,
    run_tabular_experiment,
)


def test_an_unknown_attack_lists_the_registry_s_tabular_attacks() -> None:
    with pytest.raises(ConfigError) as e:
        parse_tabular_config({"attacks": ["cpgd", "square"]})
    assert str(e.value) == (
        "tabular.attacks.1: Input should be 'cpgd', 'capgd', 'random-search' or 'hopskipjump' "
        "(the tabular attacks), got 'square'"
    )


def test_the_config_s_settings_reach_the_registered_attacks() -> None:
    cfg = TabularConfig(attack_steps=7, restarts=2, queries=11, hsj_iterations=3, hsj_probes=5)
    capgd = _attack("capgd", cfg)
    assert isinstance(capgd, ConstrainedAPGD) and (capgd.steps, capgd.restarts) == (7, 2)
    assert attack_settings("hopskipjump", cfg) == {"iterations": 3, "probes": 5}
    assert _attack("random-search", cfg).params() == {"queries": 11, "p_init": 0.3}
    knowledge = [attack_knowledge(a, channel="tabular") for a in cfg.attacks]
    assert knowledge == [["white-box"], ["white-box"], ["score-based"], ["label-only"]]


def test_a_registered_plug_in_runs_in_the_tabular_section(tmp_path: Path) -> None:
    @register(
        "test-only-search",
        knowledge="score-based",
        settings=RandomSearchSettings,
        channel="tabular",
    )
    class Search(ConstrainedRandomSearch):
        pass

    try:
        assert "test-only-search" in channel_attacks("tabular")
        cfg = {
            "attacks": ["cpgd", "test-only-search"],
            "eps": 0.05,
            "epochs": 1,
            "examples": 6,
            "attack_steps": 3,
            "train_attack_steps": 1,
            "gbm_estimators": 5,
        }
        card = run_tabular_experiment(cfg, FRAUD_CSV, FRAUD_SCHEMA, tmp_path / "run", seed=0)
    finally:
        unregister("test-only-search", channel="tabular")
    assert set(card["models"]["standard-mlp"]["attacks"]) == {"cpgd"}  # white-box: the MLPs
    gbm = card["models"]["gbm"]["attacks"]["test-only-search"]  # score-based: the GBM's scores
    assert gbm["feasible_rate"] == 1.0 and gbm["mean_queries"] > 1
