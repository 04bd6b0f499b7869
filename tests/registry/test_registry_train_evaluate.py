"""``bastion train`` and ``bastion evaluate`` are recorded too: the model file by its digest, the
evaluation with the models it read, so lineage links them; an evaluation can be promoted."""

from __future__ import annotations

import pytest
import yaml
from registry_fixtures import tiny_config

from bastion.cli import main
from bastion.registry.record import file_sha256
from bastion.registry.store import Registry


def test_train_then_evaluate_then_promote(
    tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path_factory.mktemp("train-evaluate")
    cfg = tiny_config(root)
    stem = root / "models" / "tiny-baseline"
    stem.parent.mkdir()
    assert main(["train", str(cfg), "--out", str(stem), "-q"]) == 0
    db = root / "models" / ".bastion" / "registry.db"  # beside the model file
    assert "recorded as run" in capsys.readouterr().err and db.is_file()
    score = root / "models" / "scorecard.json"
    assert main(["evaluate", str(cfg), "-m", str(stem), "--out", str(score), "-q"]) == 0
    capsys.readouterr()
    weights = stem.with_name(stem.name + ".safetensors")
    digest = file_sha256(weights)
    with Registry(db) as reg:
        evaluation, trained = reg.runs()
        assert (trained.kind, evaluation.kind) == ("train", "evaluate")
        assert evaluation.parent_id == trained.run_id
        assert evaluation.config is not None and evaluation.config["name"] == "tiny"
        assert evaluation.summary["baseline"]["clean_accuracy"] is not None
        lin = reg.lineage(digest)
        assert [r.run_id for r, _ in lin.produced_by] == [trained.run_id]
        assert [r.run_id for r, _ in lin.evaluated_by] == [evaluation.run_id]
        assert {a.role for a in reg.artifacts(evaluation.run_id)} == {"input", "scorecard"}
    assert main(["runs", "lineage", digest, "--registry", str(db)]) == 0
    assert f"evaluated by {evaluation.run_id}" in capsys.readouterr().out
    policy = root / "p.yaml"
    policy.write_text(yaml.safe_dump({"rules": [{"metric": "data.n_eval", "min": 1}]}))
    for record in (trained, evaluation):  # a stage holds runs: models and scorecard together
        args = ["promote", record.run_id, "--policy", str(policy), "--registry", str(db)]
        assert main(args) == 2
        assert f"is a `bastion {record.kind}` record" in capsys.readouterr().err
