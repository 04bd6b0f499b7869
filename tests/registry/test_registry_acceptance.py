"""The registry end to end, through the command line only: three versions of a tiny digits
config run by ``bastion run`` (recorded automatically), the first promoted, a deliberately
weakened second refused by the gate (naming the regressed metric), a better third promoted
against the first as baseline, then a rollback; the registry's rows are checked at each step."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml
from registry_fixtures import Project

from bastion.cli import main


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as c:
        return list(c.execute(sql))


def test_run_promote_refuse_promote_rollback(
    project: Project,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = project.db
    monkeypatch.chdir(project.root)  # the default registry: .bastion/registry.db, beside runs/
    monkeypatch.setenv("BASTION_USER", "release-bot")
    runs = {
        Path(d).name: (rid, clean)
        for rid, d, clean in _rows(
            db,
            "select run_id, run_dir, json_extract(summary, '$.baseline.clean_accuracy') "
            "from runs where kind = 'run' order by seq",
        )
    }
    v1, weak, better = (runs[project.runs[v].name] for v in ("v1", "weak", "better"))
    assert weak[1] < 0.5 < v1[1] <= better[1] + 0.02  # the three versions are what they claim
    stages = tmp_path / "stages.yaml"
    policy = tmp_path / "production.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "rules": [
                    {"metric": "models.baseline.clean_accuracy", "min": 0.5},
                    {"metric": "models.baseline.clean_accuracy", "max_drop": 0.02},
                ]
            }
        )
    )
    stages.write_text(yaml.safe_dump({"stages": {"production": {"policy": str(policy)}}}))
    common = ["--stages", str(stages)]
    events = "select action, run_id, previous_run_id, user, reason from stage_events order by id"
    assert _rows(db, events) == []

    # 1. the first version goes to production (no baseline yet: max_drop rules skipped)
    assert main(["promote", project.runs["v1"].name, *common, "--reason", "first release"]) == 0
    assert f"promoted {v1[0]} to production (was empty)" in capsys.readouterr().out
    assert _rows(db, events) == [("promote", v1[0], None, "release-bot", "first release")]

    # 2. the weakened version is refused; the gate names the metric; production is unchanged
    assert main(["promote", weak[0], *common]) == 1
    captured = capsys.readouterr()
    assert "refused" in captured.err and "models.baseline.clean_accuracy" in captured.err
    assert "| **FAIL** |" in captured.out
    rows = _rows(db, events)
    assert len(rows) == 2 and rows[1][:4] == ("refused", weak[0], v1[0], "release-bot")
    assert "models.baseline.clean_accuracy drops at most 0.02" in str(rows[1][4])
    assert main(["runs", "list"]) == 0
    listing = capsys.readouterr().out
    assert [ln.split()[0] for ln in listing.splitlines() if " production " in ln] == [v1[0]]

    # 3. the better version passes against the first as baseline
    assert main(["promote", better[0], *common, "--reason", "more epochs"]) == 0
    assert f"promoted {better[0]} to production (was {v1[0]})" in capsys.readouterr().out
    assert _rows(db, events)[2] == ("promote", better[0], v1[0], "release-bot", "more epochs")

    # 4. roll back: production returns to the first version
    assert main(["rollback", *common, "--reason", "alert fired"]) == 0
    assert f"rolled back production: {better[0]} -> {v1[0]}" in capsys.readouterr().out
    assert _rows(db, events)[3] == ("rollback", v1[0], better[0], "release-bot", "alert fired")
    assert main(["runs", "show", v1[0]]) == 0
    shown = capsys.readouterr().out
    assert "production rollback" in shown and "production promote" in shown

    assert main(["runs", "history", "--stage", "production"]) == 0
    history = capsys.readouterr().out.splitlines()
    assert history[0] == f"production: run {v1[0]}"
    assert [ln.split()[3] for ln in history[2:]] == ["promote", "refused", "promote", "rollback"]
    assert history[-1].endswith("release-bot  alert fired")

    # nothing else changed: three runs, four events, every event stamped with a time
    assert _rows(db, "select count(*) from runs") == [(3,)]
    assert all(str(at).endswith("Z") for (at,) in _rows(db, "select at from stage_events"))
