"""Runs recorded by ``bastion run``, and ``bastion runs list|show|diff|lineage|add``."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from registry_fixtures import Project, run_version

from bastion.cli import main
from bastion.registry.db import ENV_URL, open_engine
from bastion.registry.diff import diff_runs, metric_direction
from bastion.registry.record import attack_library_version, file_sha256
from bastion.registry.store import Registry


def _reg(project: Project) -> list[str]:
    return ["--registry", str(project.db)]


def test_bastion_run_records_every_run(project: Project) -> None:
    with Registry(project.db) as reg:
        runs = {Path(r.run_dir or "").name: r for r in reg.runs()}
        for version, run_dir in project.runs.items():
            info = runs[run_dir.name]
            assert info.kind == "run" and info.name == "tiny", version
            assert info.run_dir == str(run_dir.resolve())
            scorecard = json.loads((run_dir / "scorecard.json").read_text())
            assert info.config_hash == scorecard["run"]["config_hash"]
            assert info.data_fingerprint == scorecard["data"]["fingerprint"]
            assert info.scorecard == scorecard
            model = scorecard["models"]["baseline"]
            assert info.summary == {
                "baseline": {
                    "clean_accuracy": model["clean_accuracy"],
                    "worst_case_accuracy": model["worst_case_accuracy"],
                }
            }
            assert info.seeds == {"seed": 0, "split": {"baseline": 0}}
            assert info.attack_library == attack_library_version()
            assert info.bastion_version == scorecard["versions"]["bastion"]
            assert info.git_commit is None or re.fullmatch(r"[0-9a-f]{40}", info.git_commit)
            assert info.recorded_by and info.created_at.endswith("Z")
            assert info.config is not None and info.config["training"]["epochs"] in (1, 2, 4)
            artifacts = {a.role: a for a in reg.artifacts(info.run_id)}
            weights = run_dir / "models" / "baseline.safetensors"
            assert artifacts["model"].sha256 == file_sha256(weights)
            assert artifacts["model"].path == "models/baseline.safetensors"
            assert artifacts["scorecard"].sha256 == file_sha256(run_dir / "scorecard.json")
        # each version's parent is the run of the same name recorded before it
        v1, weak, better = (runs[project.runs[v].name] for v in ("v1", "weak", "better"))
        assert v1.parent_id is None
        assert weak.parent_id == v1.run_id and better.parent_id == weak.run_id


def test_list_and_show(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "list", *_reg(project)]) == 0
    out = capsys.readouterr().out
    for run_dir in project.runs.values():
        assert run_dir.name in out
    assert out.splitlines()[0].split()[:3] == ["run", "kind", "name"]
    assert main(["runs", "list", *_reg(project), "--limit", "1"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2  # header and the newest run
    assert main(["runs", "list", *_reg(project), "--json"]) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(d["run_dir"]).name for d in docs] == [
        project.runs[v].name for v in ("better", "weak", "v1")
    ]
    assert docs[-1]["summary"]["baseline"]["clean_accuracy"] is not None
    v1 = project.runs["v1"]
    assert main(["runs", "show", v1.name, *_reg(project)]) == 0
    out = capsys.readouterr().out
    assert file_sha256(v1 / "models" / "baseline.safetensors") in out
    assert "attacks      " + attack_library_version() in out
    assert main(["runs", "show", str(v1), *_reg(project), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["run_dir"] == str(v1.resolve()) and doc["artifacts"][0]["role"] == "model"


def test_unknown_and_ambiguous_references_exit_2(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["runs", "show", "no-such-run", *_reg(project)]) == 2
    err = capsys.readouterr().err
    assert "not in the registry" in err and len(err.strip().splitlines()) == 1
    assert main(["runs", "show", "tiny-", *_reg(project)]) == 2  # every run dir ends like this
    assert "not in the registry" in capsys.readouterr().err


def test_diff_marks_the_regressed_metrics(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    v1, weak = project.runs["v1"].name, project.runs["weak"].name
    assert main(["runs", "diff", v1, weak, *_reg(project)]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip() and not ln.startswith("[")}
    assert lines["training.epochs"].split()[1:3] == ["2", "1"]
    assert lines["training.epochs"].endswith("changed")
    assert lines["models.baseline.clean_accuracy"].endswith("REGRESSED")
    assert (
        "models.baseline.calibration.clean.accuracy" in lines
    )  # every metric, not only the summary
    assert not any(ln.endswith("REGRESSED") for k, ln in lines.items() if "seconds" in k)
    assert re.search(r"^\d+ regressions?: .*models.baseline.clean_accuracy", out, re.M)
    assert main(["runs", "diff", v1, weak, *_reg(project), "--fail-on-regression"]) == 1
    capsys.readouterr()
    assert main(["runs", "diff", v1, v1, *_reg(project), "--changed", "--fail-on-regression"]) == 0
    out = capsys.readouterr().out
    assert "[metrics]" not in out and out.strip().endswith("0 regressions")


def test_diff_in_python(project: Project) -> None:
    with Registry(project.db) as reg:
        weak, better = reg.get(project.runs["weak"].name), reg.get(project.runs["better"].name)
    d = diff_runs(weak, better)
    clean = next(r for r in d.rows if r.key == "models.baseline.clean_accuracy")
    assert clean.improved and not clean.regressed and clean.delta is not None and clean.delta > 0
    assert metric_direction("baseline.calibration.clean.ece") == "lower"
    assert metric_direction("baseline.attacks.pgd.0.2") is None
    assert metric_direction("baseline.worst_case_accuracy") == "higher"
    assert metric_direction("baseline.latency.batch_sizes.1.p99_ms") is None


def test_lineage_of_a_model_digest(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    weights = project.runs["better"] / "models" / "baseline.safetensors"
    digest = file_sha256(weights)
    assert main(["runs", "lineage", digest[:16], *_reg(project)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"model sha256 {digest}"
    with Registry(project.db) as reg:
        lin = reg.lineage(digest)
        better = reg.get(project.runs["better"].name)
        weak = reg.get(project.runs["weak"].name)
        v1 = reg.get(project.runs["v1"].name)
    assert [r.run_id for r, _ in lin.produced_by] == [better.run_id]
    assert [r.run_id for r in lin.ancestors] == [weak.run_id, v1.run_id]
    assert f"produced by  {better.run_id}" in out and f"ancestor 2   {v1.run_id}" in out
    assert main(["runs", "lineage", "0" * 64, *_reg(project)]) == 2
    assert main(["runs", "lineage", "not-hex", *_reg(project)]) == 2


def test_runs_add_records_a_model_and_its_lineage(
    project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "other.db"
    weights = project.runs["v1"] / "models" / "baseline.safetensors"
    assert main(["runs", "add", str(project.runs["v1"]), "--registry", str(db)]) == 0
    assert main(["runs", "add", "--model", str(weights), "--registry", str(db)]) == 0
    capsys.readouterr()
    with Registry(db) as reg:
        run, model = reg.runs()[1], reg.runs()[0]
        assert model.kind == "train" and model.parent_id == run.run_id
        lin = reg.lineage(file_sha256(weights))
        assert {r.run_id for r, _ in lin.produced_by} == {run.run_id, model.run_id}
    assert main(["runs", "add", "--registry", str(db)]) == 2
    assert main(["runs", "add", str(tmp_path / "nothing"), "--registry", str(db)]) == 2


def test_a_run_is_kept_when_the_registry_cannot_record_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "future.db"
    open_engine(db).dispose()
    with sqlite3.connect(db) as c:
        c.execute("update alembic_version set version_num = '9999'")
    monkeypatch.setenv(ENV_URL, str(db))
    run_dir = run_version(tmp_path, "v1")
    assert (run_dir / "scorecard.json").is_file()
    err = capsys.readouterr().err
    assert "warning:" in err and "not recorded in the registry" in err
    assert f"bastion runs add {run_dir}" in " ".join(err.split())
    with sqlite3.connect(db) as c:
        assert c.execute("select count(*) from runs").fetchone() == (0,)
