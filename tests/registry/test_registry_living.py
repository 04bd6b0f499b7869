"""A living attack library: stage runs evaluated with another attack library are listed as
stale, re-evaluated with today's attacks (recorded, linked to the run), and the risk register
of the stage is judged against the re-evaluation."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml
from registry_fixtures import Project

from bastion.cli import main
from bastion.registry.record import attack_library_version, file_sha256, run_record
from bastion.registry.store import Registry


def test_stale_reevaluate_and_risks(
    project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "r.db"
    with Registry(db) as reg:
        run_id = reg.record(run_record(project.runs["v1"]))
    reg_opt = ["--registry", str(db)]
    policy = tmp_path / "p.yaml"
    policy.write_text(yaml.safe_dump({"rules": [{"metric": "data.n_eval", "min": 1}]}))
    assert main(["promote", run_id, "--policy", str(policy), *reg_opt]) == 0
    assert main(["runs", "stale", "--fail", *reg_opt]) == 0
    assert "every stage run was evaluated with the current" in capsys.readouterr().out

    # the run was evaluated with yesterday's attacks
    with sqlite3.connect(db) as c:
        c.execute("update runs set attack_library = '0.0.9+attacks.000000000000'")
    assert main(["runs", "stale", "--fail", *reg_opt]) == 1
    out = capsys.readouterr().out
    assert f"production: run {run_id} last evaluated by {run_id} with 0.0.9+attacks" in out

    dest = tmp_path / "reeval"
    args = ["runs", "reevaluate", run_id, "--dest", str(dest), "--subset", "20", *reg_opt]
    assert main(args) == 0
    assert "re-evaluated as run" in capsys.readouterr().out
    with Registry(db) as reg:
        evaluation = reg.runs()[0]
        assert evaluation.kind == "evaluate" and evaluation.parent_id == run_id
        assert evaluation.attack_library == attack_library_version()
        assert evaluation.run_dir == str(dest.resolve())
        assert evaluation.scorecard is not None and evaluation.scorecard["data"]["n_eval"] == 20
        weights = project.runs["v1"] / "models" / "baseline.safetensors"
        lineage = reg.lineage(file_sha256(weights))
        assert [r.run_id for r, _ in lineage.evaluated_by] == [evaluation.run_id]
    assert main(["runs", "stale", "--fail", *reg_opt]) == 0
    capsys.readouterr()

    # the stage's risks are judged against the re-evaluation; --run judges the run itself
    register = tmp_path / "risks.yaml"
    register.write_text(
        yaml.safe_dump(
            {
                "risks": [
                    {
                        "id": "FRESH-1",
                        "threat": "evasion",
                        "asset": "digits",
                        "likelihood": "low",
                        "impact": "low",
                        "owner": "me",
                        "evidence": [{"metric": "data.n_eval", "equals": 20}],
                    }
                ]
            }
        )
    )
    assert main(["risks", "--register", str(register), *reg_opt]) == 0
    out = capsys.readouterr().out
    assert f"as re-evaluated by {evaluation.run_id}" in out.splitlines()[0]
    assert "mitigated" in out.splitlines()[2]
    assert main(["risks", "--register", str(register), "--run", run_id, *reg_opt]) == 0
    assert "at risk" in capsys.readouterr().out.splitlines()[2]  # the run itself: 40 examples
