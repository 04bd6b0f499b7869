"""The ``tabular:`` section: config validation, the experiment end to end, data errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tabular_fixtures import FRAUD_CSV, FRAUD_SCHEMA

from bastion.errors import ConfigError, DataError
from bastion.models import load_model
from bastion.models.estimators import load_estimator
from bastion.tabular.experiment import TabularConfig, parse_tabular_config, run_tabular_experiment
from bastion.tabular.loading import load_constrained_csv

TINY = {
    "eps": 0.05,
    "epochs": 2,
    "examples": 10,
    "attack_steps": 5,
    "train_attack_steps": 2,
    "queries": 20,
    "hsj_iterations": 1,
    "hsj_probes": 8,
    "gbm_estimators": 10,
}


def test_config_is_strict_and_names_the_field() -> None:
    assert parse_tabular_config(None) == TabularConfig()
    with pytest.raises(ConfigError, match=r"tabular.epsilon: Extra inputs are not permitted"):
        parse_tabular_config({"epsilon": 0.1})
    with pytest.raises(ConfigError, match=r"tabular.eps: Input should be a valid number"):
        parse_tabular_config({"eps": "0.1"})
    with pytest.raises(ConfigError, match=r"tabular.eps: Input should be greater than 0"):
        parse_tabular_config({"eps": 0})
    with pytest.raises(ConfigError, match=r"tabular.attacks.0: Input should be 'cpgd'"):
        parse_tabular_config({"attacks": ["pgd"]})
    with pytest.raises(ConfigError, match=r"tabular.norm"):
        parse_tabular_config({"norm": "l3"})


def test_experiment_trains_attacks_scores_and_saves(tmp_path: Path) -> None:
    card = run_tabular_experiment(TINY, FRAUD_CSV, FRAUD_SCHEMA, tmp_path / "run", seed=1)
    assert json.loads(json.dumps(card)) == card  # JSON-ready
    assert set(card["models"]) == {"standard-mlp", "constrained-at-mlp", "gbm"}
    assert card["threat"]["relations"] == [
        "amount <= credit_limit",
        "total == amount + shipping",
        "unit price at most 250",
    ]
    for name, entry in card["models"].items():
        expected = {"cpgd", "capgd"} if name != "gbm" else {"random-search", "hopskipjump"}
        assert set(entry["attacks"]) == expected
        for figures in entry["attacks"].values():
            assert figures["feasible_rate"] == 1.0
            assert figures["robust_accuracy"] <= entry["clean_accuracy"]
            assert figures["mean_queries"] >= 1
        assert entry["robust_accuracy"] <= min(
            f["robust_accuracy"] for f in entry["attacks"].values()
        )
    model = load_model(card["models"]["standard-mlp"]["path"])
    data = load_constrained_csv(FRAUD_CSV, FRAUD_SCHEMA, seed=1)
    x = data.test.x[:10]
    clean = float((model(x).argmax(dim=1) == data.test.y[:10]).float().mean())
    assert clean == pytest.approx(card["models"]["standard-mlp"]["clean_accuracy"], abs=1e-4)
    assert card["models"]["gbm"]["path"].endswith(".skops")
    gbm = load_estimator(card["models"]["gbm"]["path"])
    assert gbm.predict(x.numpy()).shape == (10,)
    # the same seed gives the same scorecard figures
    again = run_tabular_experiment(
        {**TINY, "attacks": ["cpgd"]}, FRAUD_CSV, FRAUD_SCHEMA, tmp_path / "again", seed=1
    )
    assert (
        again["models"]["standard-mlp"]["attacks"]["cpgd"]["robust_accuracy"]
        == (card["models"]["standard-mlp"]["attacks"]["cpgd"]["robust_accuracy"])
    )
    assert torch.get_num_threads() == 1


def test_rows_breaking_a_relation_are_reported_with_file_row_and_columns(tmp_path: Path) -> None:
    lines = FRAUD_CSV.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    row = lines[3].split(",")
    row[header.index("total")] = f"{float(row[header.index('total')]) + 5:.2f}"
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "\n".join([lines[0], lines[1], lines[2], ",".join(row)]) + "\n", encoding="utf-8"
    )
    with pytest.raises(DataError) as info:
        load_constrained_csv(bad, FRAUD_SCHEMA)
    message = str(info.value)
    assert message.startswith(f"{bad}, row 3: violates relation 'total == amount + shipping'")
    assert "total=" in message and "amount=" in message and "shipping=" in message
    with pytest.raises(DataError, match="does not exist"):
        run_tabular_experiment(TINY, tmp_path / "missing.csv", FRAUD_SCHEMA, tmp_path / "o", seed=0)
