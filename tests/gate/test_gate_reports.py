"""Gate outputs: JUnit XML for CI test reporters and a Markdown summary."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from bastion.evaluation.gate import (
    GateResult,
    evaluate_gate,
    render_gate_markdown,
    write_junit_error,
    write_junit_xml,
)

POLICY = {
    "rules": [
        {"metric": "models.hardened.worst_case_accuracy", "min": 0.5},
        {"metric": "models.hardened.clean_accuracy", "min": 0.99, "name": "clean | strict"},
        {"metric": "models.missing.clean_accuracy", "min": 0.1},
        {"check": "no-warnings"},
    ]
}


def _result(scorecard: dict[str, Any]) -> GateResult:
    return evaluate_gate(scorecard, POLICY, source="runs/digits/scorecard.json")


def test_junit_xml_has_one_testcase_per_rule(tmp_path: Path, scorecard: dict[str, Any]) -> None:
    path = write_junit_xml(_result(scorecard), tmp_path / "out" / "gate.xml")
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("4", "2", "0")
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "digits (runs/digits/scorecard.json)"
    assert (suite.get("tests"), suite.get("failures")) == ("4", "2")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [
        "rules[0] models.hardened.worst_case_accuracy >= 0.5",
        "rules[1] clean | strict",
        "rules[2] models.missing.clean_accuracy >= 0.1",
        "rules[3] no warnings",
    ]
    assert {c.get("classname") for c in cases} == {"bastion.gate.digits"}
    failures = [c.find("failure") for c in cases]
    assert [f is not None for f in failures] == [False, True, True, False]
    assert failures[1] is not None and failures[1].get("message") == "0.953 < min 0.99"
    assert failures[2] is not None
    assert "models.missing.clean_accuracy: not in the scorecard" in str(failures[2].get("message"))


def test_junit_xml_with_several_scorecards(tmp_path: Path, make_scorecard: Any) -> None:
    results = [_result(make_scorecard()), _result(make_scorecard(run__name="other"))]
    root = ET.parse(write_junit_xml(results, tmp_path / "gate.xml")).getroot()
    assert (root.get("tests"), root.get("failures")) == ("8", "4")
    assert len(root.findall("testsuite")) == 2


def test_junit_error_report(tmp_path: Path) -> None:
    root = ET.parse(write_junit_error("baseline: <different> data", tmp_path / "e.xml")).getroot()
    assert root.get("errors") == "1"
    error = root.find("testsuite/testcase/error")
    assert error is not None and error.get("message") == "baseline: <different> data"


def test_markdown_lists_every_rule(scorecard: dict[str, Any]) -> None:
    md = render_gate_markdown(_result(scorecard))
    assert md.startswith("## Robustness gate: FAILED (2/4 rules hold)")
    assert "### digits (runs/digits/scorecard.json): failed" in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 4
    assert "models.hardened.worst_case_accuracy >= 0.5" in rows[0] and "| pass |" in rows[0]
    assert "clean \\| strict" in rows[1] and "**FAIL**" in rows[1]
    assert "models.missing.clean_accuracy" in rows[2] and "**FAIL**" in rows[2]
    assert "no warnings" in rows[3]


def test_markdown_when_passing(scorecard: dict[str, Any]) -> None:
    result = evaluate_gate(scorecard, {"rules": [POLICY["rules"][0]]})
    assert render_gate_markdown(result).startswith("## Robustness gate: PASSED (1/1 rules hold)")
