"""``bastion audit privacy`` and ``bastion audit extraction`` end to end, on a tiny digits run,
and their JSON judged by ``bastion gate``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bastion.cli import main

TINY = {
    "name": "tiny",
    "seed": 0,
    "data": {"name": "digits"},
    "threat": {"norm": "linf", "eps": 0.1},
    "model": {"architecture": "mlp", "options": {"hidden": [64]}},
    "training": {
        "epochs": 6,
        "batch_size": 64,
        "lr": 0.003,
        "optimizer": "adam",
        "schedule": "constant",
        "weight_decay": 0.0,
        "val_examples": 60,
    },
    "models": [{"name": "baseline", "objective": {"name": "standard"}}],
    "evaluation": {"examples": 40, "attacks": [{"name": "fgsm"}]},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("privacy-run")
    (run / "config.yaml").write_text(yaml.safe_dump(TINY))
    argv = ["train", str(run / "config.yaml"), "--out", str(run / "models" / "baseline")]
    assert main([*argv, "--quiet", "--threads", "1"]) == 0
    return run


def _gate(tmp_path: Path, doc: Path, rules: list[dict[str, object]]) -> int:
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"rules": rules}))
    return main(["gate", str(doc), "--policy", str(policy)])


def test_audit_privacy_writes_json_the_gate_reads_and_resumes(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["audit", "privacy", str(run_dir), "--shadows", "2", "--population", "120"]
    assert main([*argv, "--threads", "1"]) == 0
    captured = capsys.readouterr()
    assert "shadow 1 trained" in captured.err
    assert "lira-online" in captured.out and "inversion:" in captured.out
    assert "120 members, 120 non-members, 2 shadows (lowest measurable FPR 0.83%)" in captured.out
    doc = json.loads((run_dir / "privacy.json").read_text())
    assert doc["mia"]["population"] == 240 and doc["mia"]["split_verified"] is True
    assert set(doc["mia"]["attacks"]) == {"lira-online", "lira-offline", "threshold-loss"}
    assert doc["models"]["baseline"]["mia"]["shadows"] == 2
    assert Path(doc["inversion"]["grid"]).is_file()
    assert doc["inversion"]["identified"] > doc["inversion"]["chance"]
    assert main([*argv, "--threads", "1", "--no-inversion", "--out", str(tmp_path / "p.json")]) == 0
    captured = capsys.readouterr()
    assert "shadow 0 reused (1/2)" in captured.err and "trained" not in captured.err
    again = json.loads((tmp_path / "p.json").read_text())
    assert "inversion" not in again
    assert again["mia"]["attacks"]["lira-online"] == doc["mia"]["attacks"]["lira-online"]
    ok = [{"metric": "mia.tpr_at_0.1pct_fpr", "max": 1.0}, {"metric": "mia.auc", "min": 0.0}]
    assert _gate(tmp_path, run_dir / "privacy.json", ok) == 0
    strict = [{"metric": "inversion.identified", "max": -1.0}]
    assert _gate(tmp_path, run_dir / "privacy.json", strict) == 1


def test_audit_privacy_bad_input_is_one_line(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "privacy", str(run_dir), "--shadows", "1"]) == 2
    err = capsys.readouterr().err
    assert "lira.shadows: expected an integer >= 2, got 1" in err
    assert len(err.strip().splitlines()) <= 2  # the thread choice, then the error
    assert main(["audit", "privacy", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_audit_extraction_on_a_saved_model(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ex.json"
    model = str(run_dir / "models" / "baseline")
    argv = ["audit", "extraction", model, "--budgets", "40,120", "--method", "knockoff"]
    argv += ["--method", "knockoff-labels", "--student", "mlp", "--out", str(out)]
    assert main([*argv, "--threads", "1"]) == 0
    assert "fidelity" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    ex = doc["extraction"]
    assert set(ex["methods"]) == {"knockoff", "knockoff-labels"}
    assert ex["queries"] == 120
    assert ex["fidelity_at_budget"] > 0.7
    assert [p["queries"] for p in ex["methods"]["knockoff"]["curve"]] == [40, 120]
    assert ex["methods"]["knockoff"]["transfer"]["threat"]["eps"] == 0.1  # the model's threat
    assert _gate(tmp_path, out, [{"metric": "extraction.fidelity_at_budget", "max": 0.5}]) == 1
    assert main(["audit", "extraction", model, "--key", "k"]) == 2
    assert "--key" in capsys.readouterr().err
    assert main(["audit", "extraction", model, "--budgets", "ten"]) == 2
    assert "--budgets" in capsys.readouterr().err


def test_report_and_model_card_show_dp_and_the_audits(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bastion.data import load_dataset
    from bastion.evaluation.scorecard import SCHEMA_VERSION
    from bastion.models import build_model
    from bastion.models.zoo import ModelSpec
    from bastion.privacy.dp import DPSettings, fit_dp

    folder = tmp_path / "run"
    folder.mkdir()
    model = str(run_dir / "models" / "baseline")
    argv = ["audit", "extraction", model, "--budgets", "40,120", "--method", "knockoff"]
    argv += ["--student", "mlp", "--threads", "1", "--out", str(folder / "extraction.json")]
    assert main(argv) == 0
    argv = ["audit", "privacy", str(run_dir), "--shadows", "2", "--population", "120"]
    argv += ["--no-inversion", "--threads", "1", "--out", str(folder / "privacy.json")]
    assert main(argv) == 0
    capsys.readouterr()
    # a model trained with DP-SGD the way `bastion run` trains a model entry with a dp section
    ds = load_dataset("digits", seed=0)
    spec = ModelSpec("mlp", tuple(ds.input_shape), 10, tuple(ds.mean), tuple(ds.std), {})
    trained = fit_dp(
        build_model(spec),
        ds.train.x,
        ds.train.y,
        ds.val.x,
        ds.val.y,
        DPSettings(epochs=1, target_epsilon=None, noise_multiplier=1.0),
    )
    scorecard = {
        "schema_version": SCHEMA_VERSION,
        "run": {"name": "private"},
        "models": {"private": {"training": trained.summary()}},
    }
    (folder / "scorecard.json").write_text(json.dumps(scorecard))
    epsilon = trained.history[-1]["epsilon"]
    assert main(["report", str(folder / "scorecard.json")]) == 0
    page = (folder / "report.html").read_text()
    assert '<section id="privacy">' in page
    assert f"<td>private</td><td>{epsilon:.3g}</td>" in page
    privacy = json.loads((folder / "privacy.json").read_text())
    extraction = json.loads((folder / "extraction.json").read_text())["extraction"]
    online = privacy["mia"]["attacks"]["lira-online"]
    assert f"<td>lira-online</td><td>{online['tpr_at_0.1pct_fpr']:.2%}</td>" in page
    assert f"<td>{extraction['fidelity_at_budget']:.2%}</td>" in page
    capsys.readouterr()
    assert main(["report", str(folder / "scorecard.json"), "--card"]) == 0
    card = capsys.readouterr().out
    section = card[card.index("## Privacy") :]
    assert f"({epsilon:.3g}, " in section and "-differentially private" in section
    assert f"TPR {privacy['mia']['tpr_at_0.1pct_fpr']:.2%} at 0.1% FPR" in section
    assert f"{extraction['fidelity_at_budget']:.2%} of held-out inputs after 120 queries" in section
    (folder / "extraction.json").write_text('{"kind": "something else"}')
    assert main(["report", str(folder / "scorecard.json")]) == 2
    assert "extraction.json: expected a document with kind" in capsys.readouterr().err


def test_audit_reference_is_fitted_on_the_training_split_and_served(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bastion.data import load_dataset
    from bastion.serve import ServeSettings
    from bastion.serve.budget import CoverageReference
    from bastion.serve.runner import build_app_for_run

    assert main(["audit", "reference", str(run_dir), "--cells-per-class", "4"]) == 0
    path = run_dir / "guard" / "extraction-reference.safetensors"
    assert f"40 cells written to {path}" in capsys.readouterr().out
    reference = CoverageReference.load(path)
    ds = load_dataset("digits", seed=0)  # the split config.yaml's seed recorded
    cells = reference.assign(ds.train.x.reshape(len(ds.train.x), -1).numpy())
    assert float((reference.cell_class[cells] == ds.train.y.numpy()).mean()) > 0.9
    app = build_app_for_run(run_dir, settings=ServeSettings(extraction_budget_bits=500.0))
    service = app.state.service  # type: ignore[attr-defined]
    try:
        assert service.budget is not None and service.budget.reference is not None
        assert service.budget.reference.cells == 40
    finally:
        service.batcher.close()
        service.keys.close()
        service.audit.close()
    assert main(["audit", "reference", str(run_dir), "--cells-per-class", "0"]) == 2
    assert "coverage.cells_per_class" in capsys.readouterr().err
