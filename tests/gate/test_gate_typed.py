"""The gate reads the typed scorecard: a real version-1 scorecard is migrated and judged on the
same metric paths, a malformed field is named, and audit documents are still judged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bastion.evaluation.gate import (
    GateError,
    evaluate_gate,
    read_gate_scorecard,
    typed_scorecard,
)
from bastion.evaluation.scorecard import write_json
from bastion.evaluation.scorecard_model import AuditDocument, Scorecard

V1 = Path(__file__).resolve().parents[1] / "evaluation" / "data" / "scorecard_v1_digits.json"


def _rules(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"rules": list(rules)}


def test_a_version_1_scorecard_is_judged_on_the_same_paths() -> None:
    raw = json.loads(V1.read_text())
    sc = read_gate_scorecard(V1)
    assert isinstance(sc, Scorecard) and sc.schema_version == 2
    pgd = raw["models"]["hardened"]["attacks"]["pgd-5"]["0.2"]
    policy = _rules(
        {"metric": "models.hardened.attacks.pgd-5.0.2", "min": pgd},
        {"metric": "models.hardened.attacks.pgd-5.0.2", "max": pgd - 0.01},
        {"metric": "data.n_eval", "min": raw["data"]["n_eval"]},
    )
    for doc in (sc, raw):  # typed or its JSON document: the same verdicts and values
        result = evaluate_gate(doc, policy)
        assert [r.passed for r in result.results] == [True, False, True, True]
        assert result.results[-1].label == "escalation finished (implicit)"
        assert result.results[0].value == pgd
        assert result.title.startswith(raw["run"]["name"])


def test_a_malformed_field_is_named(tmp_path: Path) -> None:
    raw = json.loads(V1.read_text())
    raw["models"]["hardened"]["worst_case_accuracy"] = "high"
    path = write_json(raw, tmp_path / "scorecard.json")
    with pytest.raises(GateError, match=r"models\.hardened\.worst_case_accuracy: expected a num"):
        read_gate_scorecard(path)
    with pytest.raises(GateError, match=r"models\.hardened\.worst_case_accuracy"):
        evaluate_gate(raw, _rules({"check": "no-warnings"}))


def test_an_audit_document_is_judged_as_written() -> None:
    doc = {
        "schema_version": 1,
        "kind": "extraction-audit",
        "target": "baseline",
        "data": "digits",
        "extraction": {"fidelity_at_budget": 0.8},
        "models": {"baseline": {"extraction": {"fidelity_at_budget": 0.8}}},
    }
    typed = typed_scorecard(doc)
    assert isinstance(typed, AuditDocument) and typed.to_json() == doc
    result = evaluate_gate(doc, _rules({"metric": "extraction.fidelity_at_budget", "max": 0.5}))
    assert not result.passed and result.results[0].value == 0.8
    with pytest.raises(GateError, match="audit documents are not compared"):
        evaluate_gate(
            doc, _rules({"metric": "extraction.fidelity_at_budget", "max_drop": 0.1}), doc
        )
