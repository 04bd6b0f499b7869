"""Policy files: validation with errors that name the rule and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion.errors import BastionError
from bastion.evaluation.gate import (
    CheckRule,
    GateError,
    MetricRule,
    evaluate_gate,
    load_policy,
    parse_policy,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policies" / "digits-gate.yaml"


def test_load_policy_from_yaml(tmp_path: Path) -> None:
    p = tmp_path / "policy.yaml"
    p.write_text(
        "rules:\n"
        "  - {metric: models.hardened.worst_case_accuracy, min: 0.5}\n"
        "  - {metric: timings.total_seconds, max: 600, name: fast enough}\n"
        "  - {metric: models.hardened.clean_accuracy, max_drop: 0.02}\n"
        "  - {check: no-warnings}\n"
        "  - {check: warning-absent, code: single-step-beats-iterative, model: hardened}\n"
    )
    policy = load_policy(p)
    assert policy.source == str(p)
    kinds = [r.kind if isinstance(r, MetricRule) else r.check for r in policy.rules]
    assert kinds == ["min", "max", "max_drop", "no-warnings", "warning-absent"]
    assert policy.rules[1].name == "fast enough"
    assert policy.needs_baseline
    assert isinstance(policy.rules[4], CheckRule) and policy.rules[4].model == "hardened"


def test_example_policy_is_valid_and_passes_the_reference_run(scorecard: dict[str, Any]) -> None:
    policy = load_policy(EXAMPLE)
    assert len(policy.rules) >= 5 and not policy.needs_baseline
    result = evaluate_gate(scorecard, policy)
    assert result.passed, [r.message for r in result.failures]


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ([1, 2], "expected a mapping with a 'rules' list"),
        ({}, "rules: expected a non-empty list"),
        ({"rules": []}, "rules: expected a non-empty list"),
        ({"rules": [], "thresholds": 1}, "unknown top-level key"),
        ({"version": 2, "rules": [{"check": "no-warnings"}]}, "version: expected 1"),
        ({"rules": ["min 0.5"]}, r"rules\[0\]: expected a mapping"),
        ({"rules": [{"min": 0.5}]}, r"rules\[0\]: expected a 'metric' rule"),
        (
            {"rules": [{"check": "no-warnings"}, {"metric": "a", "check": "no-warnings"}]},
            r"rules\[1\]: a rule has either",
        ),
        ({"rules": [{"metric": "a.b"}]}, r"rules\[0\]: expected exactly one of min, max"),
        ({"rules": [{"metric": "a", "min": 0.1, "max": 0.9}]}, r"rules\[0\]: .*got min, max"),
        ({"rules": [{"metric": "a", "mni": 0.5}]}, r"rules\[0\]\.mni: Extra inputs"),
        ({"rules": [{"metric": "a", "min": "high"}]}, r"rules\[0\]\.min: .*\(got 'high'\)"),
        ({"rules": [{"metric": "a", "min": float("nan")}]}, r"rules\[0\]\.min: "),
        ({"rules": [{"metric": "a", "max_drop": -0.1}]}, r"rules\[0\]\.max_drop: .*greater"),
        ({"rules": [{"metric": "models..x", "min": 0}]}, r"rules\[0\]\.metric: empty part"),
        ({"rules": [{"check": "warning-absent"}]}, r"rules\[0\]: check 'warning-absent' needs"),
        ({"rules": [{"check": "no-warnings", "code": "x"}]}, r"rules\[0\]: .*takes no 'code'"),
        ({"rules": [{"check": "no-warning"}]}, r"rules\[0\]\.check: Input should be"),
    ],
)
def test_bad_policies_name_the_rule_and_field(doc: Any, match: str) -> None:
    with pytest.raises(GateError, match=match) as info:
        parse_policy(doc, source="p.yaml")
    assert str(info.value).startswith("p.yaml")
    assert isinstance(info.value, BastionError)  # the CLI turns it into exit status 2


def test_policy_file_problems(tmp_path: Path) -> None:
    with pytest.raises(GateError, match="policy file not found"):
        load_policy(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [unclosed\n")
    with pytest.raises(GateError, match="not valid YAML"):
        load_policy(bad)
