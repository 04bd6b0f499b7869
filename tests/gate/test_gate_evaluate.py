"""Judging scorecards: thresholds, baselines, warnings checks, failing closed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bastion.evaluation.gate import (
    GateError,
    evaluate_gate,
    read_gate_scorecard,
    run_gate,
)
from bastion.evaluation.scorecard import write_json

Make = Callable[..., dict[str, Any]]


def rules(*items: dict[str, Any]) -> dict[str, Any]:
    return {"rules": list(items)}


def test_passing_policy(scorecard: dict[str, Any]) -> None:
    result = evaluate_gate(
        scorecard,
        rules(
            {"metric": "models.hardened.worst_case_accuracy", "min": 0.5},
            {"metric": "models.hardened.attacks.pgd-50x5.0.2", "min": 0.604},  # equal passes
            {"metric": "timings.total_seconds", "max": 600},
            {"check": "no-warnings"},
        ),
    )
    assert result.passed and result.name == "digits"
    assert [r.passed for r in result.results] == [True] * 4
    first = result.results[0]
    assert (first.index, first.value, first.threshold) == (0, 0.604, 0.5)
    assert first.message == "0.604 >= min 0.5"


def test_failing_rule_fails_the_gate_and_every_rule_is_evaluated(
    scorecard: dict[str, Any],
) -> None:
    result = evaluate_gate(
        scorecard,
        rules(
            {"metric": "models.hardened.worst_case_accuracy", "min": 0.7},
            {"metric": "timings.total_seconds", "max": 100},
            {"metric": "models.hardened.clean_accuracy", "min": 0.9},
        ),
    )
    assert not result.passed
    assert [r.passed for r in result.results] == [False, False, True]
    assert result.results[0].message == "0.604 < min 0.7"
    assert result.results[1].message == "164.8 > max 100"
    assert [r.index for r in result.failures] == [0, 1]


@pytest.mark.parametrize(
    ("value", "passed"),
    [(0.604, True), (0.59, True), (0.584, True), (0.57, False)],
)
def test_max_drop_against_baseline(make_scorecard: Make, value: float, passed: bool) -> None:
    baseline = make_scorecard()
    current = make_scorecard(models__hardened__worst_case_accuracy=value)
    policy = rules({"metric": "models.hardened.worst_case_accuracy", "max_drop": 0.02})
    result = evaluate_gate(current, policy, baseline)
    r = result.results[0]
    assert result.passed is passed and r.passed is passed
    assert r.threshold == pytest.approx(0.584)
    assert "vs baseline 0.604" in r.message


def test_max_drop_needs_a_baseline(scorecard: dict[str, Any]) -> None:
    policy = rules(
        {"check": "no-warnings"},
        {"metric": "models.hardened.worst_case_accuracy", "max_drop": 0.02},
    )
    with pytest.raises(GateError, match=r"rules\[1\]\.max_drop: .*baseline"):
        evaluate_gate(scorecard, policy)


@pytest.mark.parametrize(
    ("metric", "match"),
    [
        ("models.hardend.worst_case_accuracy", "no key 'hardend' under 'models'"),
        ("models.hardened.certified.0.5", "no key 'certified'"),
        ("models.hardened.attacks", "is a dict in the scorecard, not a number"),
        ("run.name", "is a str in the scorecard, not a number"),
    ],
)
def test_missing_or_non_numeric_metric_fails_closed(
    scorecard: dict[str, Any], metric: str, match: str
) -> None:
    result = evaluate_gate(scorecard, rules({"metric": metric, "max": 1e9}))
    assert not result.passed
    r = result.results[0]
    assert not r.passed and r.value is None
    assert r.message.startswith(metric) and match in r.message


def test_null_metric_fails_closed(make_scorecard: Make) -> None:
    sc = make_scorecard(models__hardened__worst_case_accuracy=None)
    r = evaluate_gate(
        sc, rules({"metric": "models.hardened.worst_case_accuracy", "min": 0})
    ).results
    assert not r[0].passed and "null" in r[0].message


def test_metric_missing_from_baseline_fails(make_scorecard: Make) -> None:
    baseline = make_scorecard()
    del baseline["models"]["hardened"]
    result = evaluate_gate(
        make_scorecard(),
        rules({"metric": "models.hardened.worst_case_accuracy", "max_drop": 0.1}),
        baseline,
    )
    assert not result.passed
    assert "not in the baseline scorecard" in result.results[0].message


def test_baseline_from_another_data_set_is_an_error(make_scorecard: Make) -> None:
    baseline = make_scorecard(data__fingerprint="0" * 64, data__name="mnist")
    policy = rules({"metric": "models.hardened.worst_case_accuracy", "max_drop": 0.02})
    with pytest.raises(GateError, match=r"different data set \(data\.fingerprint 000000000000"):
        evaluate_gate(make_scorecard(), policy, baseline)


def test_baseline_under_another_threat_is_an_error(make_scorecard: Make) -> None:
    baseline = make_scorecard(threat__eps=0.3)
    with pytest.raises(GateError, match=r"threat\.eps 0\.3 vs 0\.2"):
        evaluate_gate(make_scorecard(), rules({"check": "no-warnings"}), baseline)


def test_newer_schema_is_an_error(make_scorecard: Make) -> None:
    policy = rules({"check": "no-warnings"})
    with pytest.raises(GateError, match="schema_version 3, newer than this bastion reads"):
        evaluate_gate(make_scorecard(schema_version=3), policy)
    with pytest.raises(GateError, match="baseline: written with scorecard schema_version 4"):
        evaluate_gate(make_scorecard(), policy, make_scorecard(schema_version=4))


@pytest.mark.parametrize(
    "doc", [[], {"models": {}}, {"schema_version": "1", "models": {}}, {"schema_version": 1}]
)
def test_not_a_scorecard_is_an_error(doc: Any) -> None:
    with pytest.raises(GateError, match="scorecard"):
        evaluate_gate(doc, rules({"check": "no-warnings"}))


def test_warning_checks(make_scorecard: Make) -> None:
    warning = {"code": "single-step-beats-iterative", "model": "baseline", "message": "masking"}
    sc = make_scorecard(warnings=[warning])
    policy = rules(
        {"check": "no-warnings"},
        {"check": "no-warnings", "model": "hardened"},
        {"check": "warning-absent", "code": "single-step-beats-iterative"},
        {"check": "warning-absent", "code": "single-step-beats-iterative", "model": "hardened"},
        {"check": "warning-absent", "code": "non-monotonic-eps"},
        {"check": "no-warnings", "model": "hardend"},
    )
    result = evaluate_gate(sc, policy)
    assert [r.passed for r in result.results] == [False, True, False, True, True, False]
    assert result.results[0].value == 1
    assert "single-step-beats-iterative (baseline): masking" in result.results[0].message
    assert "model 'hardend' is not in the scorecard" in result.results[5].message


def test_missing_warnings_list_fails_closed(make_scorecard: Make) -> None:
    sc = make_scorecard()
    del sc["warnings"]
    result = evaluate_gate(sc, rules({"check": "no-warnings"}))
    assert not result.passed and "no 'warnings' list" in result.results[0].message


def test_read_gate_scorecard(tmp_path: Path, scorecard: dict[str, Any]) -> None:
    path = write_json(scorecard, tmp_path / "scorecard.json")
    assert read_gate_scorecard(path).to_json() == {**scorecard, "schema_version": 2}
    with pytest.raises(GateError, match="scorecard not found"):
        read_gate_scorecard(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(GateError, match="invalid JSON"):
        read_gate_scorecard(tmp_path / "bad.json")


def test_run_gate_exit_codes_and_reports(tmp_path: Path, make_scorecard: Make) -> None:
    good = write_json(make_scorecard(), tmp_path / "a" / "scorecard.json")
    worse = write_json(
        make_scorecard(models__hardened__worst_case_accuracy=0.5), tmp_path / "b" / "scorecard.json"
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "rules:\n"
        "  - {metric: models.hardened.worst_case_accuracy, min: 0.55}\n"
        "  - {metric: models.hardened.worst_case_accuracy, max_drop: 0.02}\n"
    )
    ok = run_gate([good], policy, baseline=good, junit=tmp_path / "ok.xml")
    assert ok.passed and ok.exit_code == 0 and (tmp_path / "ok.xml").is_file()
    both = run_gate([good, worse], policy, baseline=good, markdown=tmp_path / "gate.md")
    assert not both.passed and both.exit_code == 1
    assert [r.passed for r in both.results] == [True, False]
    assert both.results[1].source == str(worse)
    assert "FAILED" in (tmp_path / "gate.md").read_text()


def test_run_gate_bad_input_raises_and_reports(tmp_path: Path, make_scorecard: Make) -> None:
    sc = write_json(make_scorecard(schema_version=3), tmp_path / "scorecard.json")
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules: [{check: no-warnings}]\n")
    junit = tmp_path / "gate.xml"
    with pytest.raises(GateError, match="newer"):
        run_gate([sc], policy, junit=junit)
    assert "GateError" in junit.read_text()
    with pytest.raises(GateError, match="no scorecard given"):
        run_gate([], policy)
