"""Every YAML block of docs/poisoning.md, run: the ``poisoning:`` section drives a drill and a
scan on the digits, the gate policy is loaded here and judged in ``test_run.py``."""

from __future__ import annotations

from poisoning_docs import yaml_blocks

from bastion.data import load_dataset
from bastion.evaluation.gate import parse_policy
from bastion.poisoning.config import PoisoningConfig
from bastion.poisoning.flow import prepare_training_set, scan_data


def test_every_yaml_block_is_known():
    assert set(yaml_blocks()) == {"poisoning", "rules"}


def test_the_poisoning_block_runs_on_the_digits():
    cfg = PoisoningConfig.from_dict(yaml_blocks()["poisoning"]["poisoning"])
    data = load_dataset("digits", seed=0)
    x, y, record = prepare_training_set(cfg, data, seed=0)
    assert record is not None and record.attack == "badnets"
    scan = scan_data(
        x, y, data.val.x, data.val.y, scan=cfg.scan, num_classes=10,
        mean=data.mean, std=data.std, truth=record.poisoned, seed=0,
    )  # fmt: skip
    assert scan.metrics is not None
    assert set(scan.scans) == {"activation-clustering"}
    assert len(scan.quarantine.entries) >= 1


def test_the_gate_block_is_a_valid_policy():
    policy = parse_policy(yaml_blocks()["rules"], source="docs/poisoning.md")
    metrics = [r.metric for r in policy.rules]  # type: ignore[union-attr]
    assert metrics == ["poisoning.poison_fraction_quarantined", "poisoning.backdoor_attack_success"]
