"""`bastion runs export RUN --mlflow URI`: a real run exported to a real MLflow tracking store
(SQLite, in a temporary folder) and read back through MlflowClient; secrets never leave."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml
from registry_fixtures import Project

from bastion.cli import main
from bastion.registry.mlflow_export import mask_secrets
from bastion.registry.record import run_record
from bastion.registry.stages import StageConfig, promote
from bastion.registry.store import Registry

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra (mlflow-skinny) is not installed")

pytestmark = [
    # MLflow's own SQLAlchemy store uses a loader strategy SQLAlchemy 2.1 deprecates
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
]

SECRET = "hunter2-not-for-logs"


def test_mask_secrets() -> None:
    doc = {
        "serve": {"audit_url": f"postgresql://bastion:{SECRET}@db:5432/audit", "rate": 5},
        "webhook": {"auth_token": SECRET, "api_key": 12345678, "max_tokens": 64, "tls": True},
        "hosts": [f"https://u:{SECRET}@h/x", "https://h/y"],
        "password": None,
    }
    masked = mask_secrets(doc)
    assert SECRET not in repr(masked) and "12345678" not in repr(masked)
    assert masked["serve"] == {"audit_url": "postgresql://bastion:***@db:5432/audit", "rate": 5}
    assert masked["webhook"] == {
        "auth_token": "***",
        "api_key": "***",
        "max_tokens": 64,
        "tls": True,
    }
    assert masked["hosts"][1] == "https://h/y" and masked["password"] is None


def test_export_a_run_and_read_it_back(
    project: Project,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a database tracking store puts a new experiment's artifacts under ./mlruns (MLflow's default)
    monkeypatch.chdir(tmp_path)
    # v1, with a credential in its config (a serve section naming the audit database)
    run = tmp_path / "runs" / project.runs["v1"].name
    shutil.copytree(project.runs["v1"], run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["serve"] = {"audit_url": f"postgresql://bastion:{SECRET}@db:5432/audit"}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    db = tmp_path / "registry.db"
    with Registry(db) as reg:
        run_id = reg.record(run_record(run))
        policy = tmp_path / "p.yaml"
        policy.write_text(yaml.safe_dump({"rules": [{"metric": "data.n_eval", "min": 1}]}))
        stages = {"production": StageConfig("production")}
        assert promote(reg, run_id, "production", stages=stages, policy=policy).promoted
        info = reg.get(run_id)
        digests = {a.path: a.sha256 for a in reg.artifacts(run_id)}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["runs", "export", run_id[:6], "--mlflow", uri, "--registry", str(db)]
    assert main(args) == 0
    said = capsys.readouterr()
    assert f"exported run {run_id} as MLflow run" in said.out and SECRET not in said.out + said.err

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tiny")
    (got,) = client.search_runs([experiment.experiment_id])
    tags, params, metrics = got.data.tags, got.data.params, got.data.metrics
    assert tags["bastion.run_id"] == run_id and tags["bastion.stages"] == "production"
    assert tags["bastion.config_hash"] == info.config_hash
    assert tags["bastion.data_fingerprint"] == info.data_fingerprint
    assert params["training.lr"] == "0.05" and params["training.epochs"] == "2"
    assert params["serve.audit_url"] == "postgresql://bastion:***@db:5432/audit"
    assert SECRET not in repr(params) + repr(tags)
    assert info.scorecard is not None
    baseline = info.scorecard["models"]["baseline"]
    assert metrics["models.baseline.clean_accuracy"] == pytest.approx(baseline["clean_accuracy"])
    assert metrics["models.baseline.worst_case_accuracy"] == pytest.approx(
        baseline["worst_case_accuracy"]
    )
    names = {a.path for a in client.list_artifacts(got.info.run_id)}
    assert {"scorecard.json", "report.html", "model", "bastion"} <= names
    model_files = {a.path for a in client.list_artifacts(got.info.run_id, "model")}
    assert {"model/baseline.safetensors", "model/baseline.json"} <= model_files
    # the exported model is the recorded one, byte for byte; the config has no secret
    down = Path(client.download_artifacts(got.info.run_id, "", str(tmp_path / "down")))
    weights = (down / "model" / "baseline.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() == digests["models/baseline.safetensors"]
    for f in down.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".md", ".html"):
            assert SECRET not in f.read_text(), f
    # a second export finds the first
    assert main(args) == 0
    assert "was already exported as MLflow run" in capsys.readouterr().out
    assert len(client.search_runs([experiment.experiment_id])) == 1


def test_export_errors_are_one_line_without_secrets(
    project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "registry.db"
    with Registry(db) as reg:
        run_id = reg.record(run_record(project.runs["v1"]))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["runs", "export", "feedbeef", "--mlflow", uri, "--registry", str(db)]) == 2
    assert "feedbeef" in capsys.readouterr().err
    bad = f"nosuchstore://bastion:{SECRET}@tracking.internal/x"
    assert main(["runs", "export", run_id, "--mlflow", bad, "--registry", str(db)]) == 2
    err = capsys.readouterr().err
    assert "MLflow at nosuchstore://bastion:***@tracking.internal/x refused" in err
    assert SECRET not in err
