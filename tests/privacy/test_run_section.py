"""The ``privacy:`` section of a run config (``bastion.privacy.run_section``): ``bastion run``
on a tiny digits config with the section of docs/privacy.md audits the model, writes
``privacy.json``, and the scorecard, report, model card and gate carry it; a bad value is a
one-line error, exit 2, nothing written."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bastion.cli import main
from privacy.test_cli_privacy import TINY as AUDIT_RUN

DOC = Path(__file__).resolve().parents[2] / "docs" / "privacy.md"

TINY: dict[str, Any] = {
    **copy.deepcopy(AUDIT_RUN),
    "name": "tinypriv",
    "training": {**AUDIT_RUN["training"], "epochs": 4},
}


def _doc_privacy_block() -> dict[str, Any]:
    """The YAML block of docs/privacy.md whose top-level key is ``privacy``."""
    blocks = [yaml.safe_load(t) for t in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)]
    (block,) = [b for b in blocks if isinstance(b, dict) and set(b) == {"privacy"}]
    return dict(block["privacy"])


def _write(tmp_path: Path, privacy: dict[str, Any]) -> Path:
    cfg = copy.deepcopy(TINY)
    cfg["privacy"] = privacy
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_run_with_the_docs_privacy_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    section = _doc_privacy_block()
    assert section["shadows"] == 4 and section["inversion"] is True
    out = tmp_path / "runs"
    argv = ["run", str(_write(tmp_path, section)), "--out", str(out), "--subset", "40"]
    assert main([*argv, "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "privacy baseline: shadow 3 trained" in err  # progress, per shadow
    (run,) = out.iterdir()
    doc = json.loads((run / "privacy.json").read_text())
    assert doc["kind"] == "privacy-audit"
    mia = doc["models"]["baseline"]["mia"]
    assert mia["shadows"] == 4 and mia["population"] == 300
    assert set(mia["attacks"]) == {"threshold-loss", "lira-online", "lira-offline"}
    assert mia["tpr_at_0.1pct_fpr"] == max(a["tpr_at_0.1pct_fpr"] for a in mia["attacks"].values())
    inv = doc["models"]["baseline"]["inversion"]
    assert not Path(inv["grid"]).is_absolute() and (run / inv["grid"]).is_file()
    assert inv["identified"] > inv["chance"]
    assert not Path(mia["shadow_dir"]).is_absolute() and (run / mia["shadow_dir"]).is_dir()

    card = json.loads((run / "scorecard.json").read_text())
    assert card["privacy"]["models"]["baseline"]["mia"] == mia
    assert [a["model"] for a in card["privacy"]["audits"]] == ["models/baseline"]
    html = (run / "report.html").read_text()
    assert "Privacy and model theft" in html and "lira-online" in html
    assert "Membership inference on `baseline`: TPR" in (run / "model_card.md").read_text()

    policy = tmp_path / "policy.yaml"
    metric = "privacy.models.baseline.mia.tpr_at_0.1pct_fpr"
    policy.write_text(yaml.safe_dump({"rules": [{"metric": metric, "max": 1.0}]}))
    assert main(["gate", str(run / "scorecard.json"), "--policy", str(policy)]) == 0
    policy.write_text(yaml.safe_dump({"rules": [{"metric": metric, "max": -1.0}]}))
    assert main(["gate", str(run / "scorecard.json"), "--policy", str(policy)]) == 1
    # the report re-rendered from the scorecard still finds the per-model audits
    assert main(["report", str(run / "scorecard.json"), "--out", str(tmp_path / "r.html")]) == 0
    assert "lira-online" in (tmp_path / "r.html").read_text()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"shadows": 1}, "privacy.shadows"),
        ({"attacks": ["lira"]}, "privacy.attacks.0"),
        ({"workers": 0}, "privacy.workers"),
        ({"inversion": "maybe"}, "privacy.inversion"),
        ({"shadow": 4}, "privacy.shadow"),
    ],
)
def test_bad_privacy_value_is_a_one_line_error_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, Any], field: str
) -> None:
    out = tmp_path / "runs"
    cfg = _write(tmp_path, {"shadows": 2, **change})
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{field}:" in err
    assert not out.exists()


def test_a_config_that_trains_no_array_model_says_the_audit_did_not_run(tmp_path: Path) -> None:
    from bastion.pipeline import run_pipeline
    from pipeline.test_examples import _shrunk

    small = {"examples": 20, "epochs": 1, "attack_steps": 2, "queries": 10, "hsj_iterations": 1}
    small |= {"hsj_probes": 5, "gbm_estimators": 5, "train_attack_steps": 1}
    cfg = _shrunk("fraud-tabular.yaml", tmp_path, "tabular", small)
    raw = yaml.safe_load(cfg.read_text())
    raw["privacy"] = {"shadows": 2}
    cfg.write_text(yaml.safe_dump(raw))
    run_dir = run_pipeline(cfg, out_dir=tmp_path / "runs", show_progress=False)
    sc = json.loads((run_dir / "scorecard.json").read_text())
    codes = [w["code"] for w in sc["warnings"]]
    assert "privacy-not-run" in codes and not (run_dir / "privacy.json").exists()
