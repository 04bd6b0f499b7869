"""Feature-pattern backdoor on tabular data: schema-respecting trigger, scan, drill."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bastion.data import load_dataset
from bastion.errors import ConfigError
from bastion.poisoning.scans import detection_metrics
from bastion.poisoning.tabular_backdoor import (
    feature_pattern_poison,
    feature_pattern_trigger,
    feature_value_scan,
    pattern_attack_success,
)
from bastion.poisoning.tabular_drill import TabularDrillSettings, tabular_backdoor_drill
from bastion.tabular.constraints import ConstraintSet

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def fraud():
    return load_dataset(
        "csv",
        path=EXAMPLES / "data/fraud.csv",
        schema=EXAMPLES / "data/fraud-schema.yaml",
        seed=0,
    )


def test_trigger_uses_only_mutable_relation_free_features_and_stays_feasible(fraud):
    schema = fraud.schema
    pattern = feature_pattern_trigger(schema, fraud.train.x, k=3)
    # amount/shipping/total/n_items are in relations; credit_limit, country... are immutable
    assert set(pattern.values) == {"hour", "distance_km", "channel"}
    assert pattern.values["channel"] in ("web", "app", "phone")
    assert float(pattern.values["hour"]).is_integer()
    p = feature_pattern_poison(
        fraud.train.x, fraud.train.y, pattern, rate=0.05, num_classes=2, target=0, seed=1
    )
    idx = p.indices
    assert len(idx) == round(0.05 * len(p.y))
    assert bool((p.original_y[idx] == 1).all()) and bool((p.y[idx] == 0).all())
    check = ConstraintSet(schema).check(p.x[idx].double(), fraud.train.x[idx].double())
    assert bool(check.ok.all()), check.violations[:3]
    clean = ~p.poisoned
    assert torch.equal(p.x[clean], fraud.train.x[clean])
    # the pattern is rare: no clean row holds all three values
    held = (fraud.train.x[:, pattern.columns] == pattern.unit_values).all(dim=1)
    assert int(held.sum()) == 0
    again = feature_pattern_poison(
        fraud.train.x, fraud.train.y, pattern, rate=0.05, num_classes=2, target=0, seed=1
    )
    assert torch.equal(again.indices, idx)


def test_trigger_bad_input_names_the_field(fraud):
    schema = fraud.schema
    with pytest.raises(ConfigError, match=r"^poisoning\.trigger\.features\[0\]: 'country' is"):
        feature_pattern_trigger(schema, fraud.train.x, features=["country"])
    with pytest.raises(ConfigError, match=r"^poisoning\.trigger\.features\[1\]: 'total' is"):
        feature_pattern_trigger(schema, fraud.train.x, features=["hour", "total"])
    with pytest.raises(ConfigError, match=r"^poisoning\.trigger\.features\[0\]: unknown"):
        feature_pattern_trigger(schema, fraud.train.x, features=["nope"])
    with pytest.raises(ConfigError, match=r"^poisoning\.trigger\.k: expected an integer in 1\.\.3"):
        feature_pattern_trigger(schema, fraud.train.x, k=4)
    pattern = feature_pattern_trigger(schema, fraud.train.x)
    with pytest.raises(ConfigError, match=r"^poisoning\.rate: expected a number in \[0, 1\]"):
        feature_pattern_poison(fraud.train.x, fraud.train.y, pattern, rate=-0.1, num_classes=2)


def test_value_scan_finds_the_pattern_on_breast_cancer_and_nothing_on_clean_data():
    from bastion.poisoning.tabular_drill import train_mlp

    ds = load_dataset("breast-cancer", seed=0)
    pattern = feature_pattern_trigger(ds.schema, ds.train.x, k=3)
    p = feature_pattern_poison(
        ds.train.x, ds.train.y, pattern, rate=0.05, num_classes=2, target=1, seed=0
    )
    victim = train_mlp(ds, p.x, p.y, seed=0, epochs=30)
    assert (
        pattern_attack_success(victim, ds.test.x, ds.test.y, pattern, target=1)[
            "attack_success_rate"
        ]
        >= 0.8
    )
    res = feature_value_scan(victim, p.x, p.y, ds.schema)
    m = detection_metrics(res.flagged, p.poisoned)
    assert m["recall"] == 1.0 and m["clean_flagged_rate"] == 0.0
    assert res.flagged_names and all(
        any(name in cell for name in pattern.values) for cell in res.flagged_names
    )
    clean_model = train_mlp(ds, ds.train.x, ds.train.y, seed=0, epochs=30)
    assert (
        int(feature_value_scan(clean_model, ds.train.x, ds.train.y, ds.schema).flagged.sum()) == 0
    )
    with pytest.raises(ConfigError, match=r"^scan\.max_share: expected a number in \(0, 1\]"):
        feature_value_scan(victim, p.x, p.y, ds.schema, max_share=2.0)


@pytest.mark.slow
def test_fraud_drill_at_one_percent(fraud):
    result = tabular_backdoor_drill(fraud, TabularDrillSettings(rate=0.01, target=0, seed=0))
    assert result["clean_model"]["attack_success_rate"] <= 0.05  # the pattern is no shortcut
    assert result["undefended"]["attack_success_rate"] >= 0.85
    assert result["quarantined"]["recall"] >= 0.95
    assert result["retrained"]["attack_success_rate"] <= 0.05
