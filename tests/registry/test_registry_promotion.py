"""Promotion through the gate and rollback, on SQLite and PostgreSQL: bad input changes nothing,
a refused promotion is recorded and leaves the stage as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from registry_fixtures import Project

from bastion.cli import main
from bastion.evaluation.gate import GateError
from bastion.registry.db import RegistryError
from bastion.registry.record import run_record
from bastion.registry.risks import RiskError
from bastion.registry.stages import current_runs, load_stages, promote, rollback
from bastion.registry.store import Registry

RULES = [
    {"metric": "models.baseline.clean_accuracy", "min": 0.5},
    {"metric": "models.baseline.clean_accuracy", "max_drop": 0.02},
    {"metric": "models.baseline.worst_case_accuracy", "max_drop": 0.02},
]


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    p = tmp_path / "production.yaml"
    p.write_text(yaml.safe_dump({"version": 1, "rules": RULES}))
    return p


@pytest.fixture
def reg(registry_url: str, project: Project) -> Registry:
    """A fresh registry holding the project's three runs (ids in ``reg.ids``)."""
    r = Registry(registry_url)
    r.ids = {v: r.record(run_record(d)) for v, d in project.runs.items()}  # type: ignore[attr-defined]
    return r


def _events(reg: Registry) -> list[tuple[str, str, str | None, str | None]]:
    return [(e.stage, e.action, e.run_id, e.previous_run_id) for e in reg.stage_events()]


def test_promote_refuse_promote_rollback(
    reg: Registry, policy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = reg.ids  # type: ignore[attr-defined]
    monkeypatch.setenv("BASTION_USER", "carol")
    first = promote(reg, ids["v1"], "production", policy=policy, reason="first release")
    assert first.promoted and first.previous_run_id is None
    assert first.notes == ("no run in 'production' yet: 2 max_drop rule(s) not applied",)
    assert current_runs(reg) == {"production": ids["v1"]}
    refused = promote(reg, ids["weak"], "production", policy=policy)
    assert not refused.promoted
    failed = {r.label for r in refused.gate.failures}
    assert failed == {
        "models.baseline.clean_accuracy >= 0.5",
        "models.baseline.clean_accuracy drops at most 0.02",
    }
    assert current_runs(reg) == {"production": ids["v1"]}
    better = promote(reg, ids["better"], "production", policy=policy)
    assert better.promoted and better.previous_run_id == ids["v1"]
    back = rollback(reg, "production", reason="pager at 3am")
    assert (back.run_id, back.previous_run_id) == (ids["v1"], ids["better"])
    assert current_runs(reg) == {"production": ids["v1"]}
    events = reg.stage_events()
    assert _events(reg) == [
        ("production", "promote", ids["v1"], None),
        ("production", "refused", ids["weak"], ids["v1"]),
        ("production", "promote", ids["better"], ids["v1"]),
        ("production", "rollback", ids["v1"], ids["better"]),
    ]
    assert {e.user for e in events} == {"carol"}
    assert events[0].reason == "first release" and events[3].reason == "pager at 3am"
    assert events[1].reason is not None and "clean_accuracy" in events[1].reason
    assert events[0].policy_sha256 is not None and len(events[0].policy_sha256) == 64
    gate_rows = events[1].gate or []
    assert [row["passed"] for row in gate_rows] == [False, False, True, True]
    with pytest.raises(RegistryError, match="no earlier run"):
        rollback(reg, "production")
    assert len(reg.stage_events()) == 4
    reg.close()


def test_bad_input_changes_nothing(reg: Registry, policy: Path, tmp_path: Path) -> None:
    ids = reg.ids  # type: ignore[attr-defined]
    with pytest.raises(RegistryError, match="not in the registry"):
        promote(reg, "feedbeef", "production", policy=policy)
    with pytest.raises(RegistryError, match="stage 'prod': not configured"):
        promote(reg, ids["v1"], "prod", policy=policy)
    with pytest.raises(RegistryError, match="no policy configured"):
        promote(reg, ids["v1"], "production")
    with pytest.raises(GateError, match="policy file not found"):
        promote(reg, ids["v1"], "production", policy=tmp_path / "missing.yaml")
    with pytest.raises(RegistryError, match="not configured"):
        rollback(reg, "qa")
    with pytest.raises(RegistryError, match="it is empty"):
        rollback(reg, "production")
    assert promote(reg, ids["v1"], "production", policy=policy).promoted
    with pytest.raises(RegistryError, match="already in 'production'"):
        promote(reg, ids["v1"], "production", policy=policy)
    assert len(reg.stage_events()) == 1
    reg.close()


def test_promotion_refuses_changed_or_missing_model_files(
    project: Project, tmp_path: Path, policy: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(project.runs["v1"], copy)
    with Registry(tmp_path / "r.db") as reg:
        run_id = reg.record(run_record(copy))
        weights = copy / "models" / "baseline.safetensors"
        weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
        with pytest.raises(RegistryError, match="changed since the run was recorded"):
            promote(reg, run_id, "production", policy=policy)
        shutil.rmtree(copy)
        with pytest.raises(RegistryError, match="is gone"):
            promote(reg, run_id, "production", policy=policy)
        assert reg.stage_events() == []


def test_stages_file(tmp_path: Path, project: Project) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "canary.yaml").write_text(
        yaml.safe_dump({"rules": [{"metric": "models.baseline.clean_accuracy", "min": 0.5}]})
    )
    stages_file = tmp_path / "stages.yaml"
    stages_file.write_text(
        yaml.safe_dump({"stages": {"canary": {"policy": "policies/canary.yaml"}, "prod": None}})
    )
    stages = load_stages(stages_file)
    assert list(stages) == ["canary", "prod"]
    with Registry(tmp_path / "r.db") as reg:
        run_id = reg.record(run_record(project.runs["v1"]))
        assert promote(reg, run_id, "canary", stages=stages).promoted
        with pytest.raises(RegistryError, match="stage 'production': not configured"):
            promote(reg, run_id, "production", stages=stages)
    for bad, message in [
        ("stages: []", "non-empty mapping"),
        ("stagez: {}", "one top-level key 'stages'"),
        ("stages: {a: {policy: 3}}", "stages.a.policy: expected a file path"),
        ("stages: {a: {gate: x}}", "stages.a: expected a mapping"),
        ("stages: [", "not valid YAML"),
    ]:
        stages_file.write_text(bad)
        with pytest.raises(RegistryError, match=message):
            load_stages(stages_file)


def test_command_line_exit_codes(
    project: Project, tmp_path: Path, policy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "r.db")
    with Registry(db) as reg:
        ids = {v: reg.record(run_record(d)) for v, d in project.runs.items()}
    base = ["--registry", db, "--policy", str(policy)]
    assert main(["promote", "nope", *base]) == 2
    assert main(["promote", ids["v1"], "--stage", "qa", *base]) == 2
    assert main(["rollback", "--registry", db]) == 2
    err = capsys.readouterr().err
    assert [ln.split(":")[0] for ln in err.strip().splitlines()] == ["error"] * 3
    assert main(["promote", ids["v1"], *base, "--reason", "go"]) == 0
    assert f"promoted {ids['v1']} to production (was empty)" in capsys.readouterr().out
    assert main(["promote", ids["weak"][:6], *base]) == 1
    captured = capsys.readouterr()
    assert "**FAIL**" in captured.out
    assert "failed: models.baseline.clean_accuracy >= 0.5" in captured.err
    assert main(["promote", project.runs["better"].name, *base]) == 0
    assert main(["rollback", "--registry", db, "--reason", "bad canary"]) == 0
    assert f"rolled back production: {ids['better']} -> {ids['v1']}" in capsys.readouterr().out
    assert main(["runs", "list", "--registry", db]) == 0
    listing = capsys.readouterr().out
    (v1_line,) = [ln for ln in listing.splitlines() if ln.startswith(ids["v1"])]
    assert " production " in v1_line


def test_concurrent_promotions_are_serialised(
    registry_url: str, project: Project, policy: Path
) -> None:
    """Two promotions into an empty stage at once: the second one judged sees the first as
    the run in production (its baseline), never an empty stage."""
    import threading

    with Registry(registry_url) as reg:
        ids = {v: reg.record(run_record(d)) for v, d in project.runs.items()}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def go(version: str) -> None:
        try:
            with Registry(registry_url) as own:
                barrier.wait()
                promote(own, ids[version], "production", policy=policy)
        except BaseException as e:  # collected and re-raised below
            errors.append(e)

    threads = [threading.Thread(target=go, args=(v,), daemon=True) for v in ("v1", "better")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "concurrent promotions deadlocked"
    assert errors == []
    with Registry(registry_url) as reg:
        first, second = reg.stage_events("production")
    assert first.action == "promote" and first.previous_run_id is None
    assert second.previous_run_id == first.run_id


def _register(path: Path, evidence: list[dict[str, object]]) -> Path:
    risk = {
        "id": "EVA-1",
        "threat": "evasion",
        "asset": "digits",
        "likelihood": "high",
        "impact": "high",
        "owner": "ml",
        "evidence": evidence,
    }
    future = {**risk, "id": "PI-1", "threat": "prompt-injection", "evidence": []}
    path.write_text(yaml.safe_dump({"risks": [risk, future]}))
    return path


def test_a_stage_register_blocks_candidates_at_risk(
    project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    register = _register(
        tmp_path / "risks.yaml", [{"metric": "models.baseline.clean_accuracy", "min": 0.8}]
    )
    lenient = tmp_path / "lenient.yaml"  # the gate alone would let the weak run through
    lenient.write_text(yaml.safe_dump({"rules": [{"metric": "data.n_eval", "min": 1}]}))
    stages_file = tmp_path / "stages.yaml"
    stages_file.write_text(
        yaml.safe_dump(
            {"stages": {"production": {"policy": "lenient.yaml", "risks": "risks.yaml"}}}
        )
    )
    stages = load_stages(stages_file)
    assert stages["production"].risks == register
    db = tmp_path / "r.db"
    with Registry(db) as reg:
        ids = {v: reg.record(run_record(d)) for v, d in project.runs.items()}
        ok = promote(reg, ids["v1"], "production", stages=stages)
        assert ok.promoted and [r.status for r in ok.risks] == ["mitigated", "no evidence"]
        weak = promote(reg, ids["weak"], "production", stages=stages)
        assert weak.gate.passed and not weak.promoted
        assert [r.risk.id for r in weak.risks_at_risk] == ["EVA-1"]
        event = reg.stage_events()[-1]
        assert event.action == "refused" and event.reason == "refused: risk EVA-1 (evasion) at risk"
        assert event.gate is not None and event.gate[-2]["rule"] == "risk EVA-1 (evasion)"
        # a register that does not fit the run: an error, nothing recorded
        bad = _register(
            tmp_path / "bad.yaml", [{"metric": "models.hardened.clean_accuracy", "min": 0}]
        )
        with pytest.raises(RiskError, match=r"risks\[0\] \(EVA-1\)\.evidence\[0\]"):
            promote(reg, ids["better"], "production", stages=stages, risks=bad)
        assert len(reg.stage_events()) == 2
    args = ["promote", ids["weak"], "--stages", str(stages_file), "--registry", str(db)]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert (
        "risk register:" in captured.out and "FAIL models.baseline.clean_accuracy" in captured.out
    )
    assert "failed: risk EVA-1 at risk" in captured.err
