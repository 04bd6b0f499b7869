"""The risk register: examples/risks/digits.yaml judged against a real run (recorded, promoted, or a
scorecard file), statuses computed from the scorecard's figures, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from bastion.cli import main
from bastion.registry.risks import RiskError, assess, load_register, parse_register

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "risks" / "digits.yaml"

CONFIG: dict[str, Any] = {
    "name": "tiny-risks",
    "data": {"name": "digits"},
    "threat": {"norm": "linf", "eps": 0.2},
    "model": {"architecture": "mlp"},
    "training": {"epochs": 2, "batch_size": 64, "lr": 0.05, "val_examples": 40, "val_pgd_steps": 2},
    "models": [{"name": "hardened", "objective": {"name": "standard"}}],
    "evaluation": {
        "examples": 40,
        "attacks": [{"name": "pgd", "steps": 5}, {"name": "square", "queries": 50}],
        "corruptions": {"severities": [1], "examples": 40},
    },
}
"""A tiny stand-in for examples/digits.yaml with every field the example register reads."""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run directory, registry) of one tiny run recorded by ``bastion run``."""
    root = tmp_path_factory.mktemp("risks")
    (root / "cfg.yaml").write_text(yaml.safe_dump(CONFIG))
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("BASTION_REGISTRY_URL", raising=False)
        assert main(["run", str(root / "cfg.yaml"), "--out", str(root / "runs"), "-q"]) == 0
    (run_dir,) = (root / "runs").iterdir()
    return run_dir, root / ".bastion" / "registry.db"


def _expected(sc: dict[str, Any]) -> dict[str, str]:
    """The statuses the example register should give, computed here from the raw figures."""
    m = sc["models"]["hardened"]
    cal = m["calibration"]["clean"]

    def status(*holds: bool) -> str:
        return "mitigated" if all(holds) else "at risk"

    return {
        "EVA-1": status(m["worst_case_accuracy"] >= 0.5, m["clean_accuracy"] >= 0.9),
        "POI-1": status(sc["data"]["fingerprint"].startswith("a9ecc4200ea7")),
        "EXT-1": status(m["attacks"]["square"]["0.2"] >= 0.5),
        "INV-1": status(cal["ece"] <= 0.1),
        "MIA-1": status(cal["mean_confidence"] - cal["accuracy"] <= 0.05),
        "PI-1": "no evidence",
        "DRIFT-1": status(m["corruptions"]["mean_accuracy"] >= 0.8),
    }


def _statuses(out: str) -> dict[str, str]:
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] in {"EVA-1", "POI-1", "EXT-1", "INV-1", "MIA-1", "PI-1", "DRIFT-1"}:
            rows[parts[0]] = (
                " ".join(parts[-2:]) if parts[-1] in ("risk", "evidence") else parts[-1]
            )
    return rows


def test_example_register_against_a_scorecard(
    run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, _ = run
    sc = json.loads((run_dir / "scorecard.json").read_text())
    register = load_register(EXAMPLE)
    assert {r.threat for r in register.risks} == {
        "evasion", "poisoning", "extraction", "inversion", "membership-inference",
        "prompt-injection", "drift",
    }  # fmt: skip
    statuses = {s.risk.id: s.status for s in assess(register, sc)}
    assert statuses == _expected(sc)
    args = ["risks", "--register", str(EXAMPLE), "--scorecard", str(run_dir / "scorecard.json")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert _statuses(out) == _expected(sc)
    assert "FAIL" in out or "at risk" not in statuses.values()
    at_risk = "at risk" in statuses.values()
    assert main([*args, "--fail-on-risk"]) == (1 if at_risk else 0)


def test_register_against_the_run_in_production(
    run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, db = run
    reg = ["--registry", str(db)]
    assert main(["risks", "--register", str(EXAMPLE), *reg]) == 2
    assert "no run in stage 'production'" in capsys.readouterr().err
    policy = tmp_path / "p.yaml"
    policy.write_text(yaml.safe_dump({"rules": [{"metric": "data.n_eval", "min": 1}]}))
    assert main(["promote", run_dir.name, "--policy", str(policy), *reg]) == 0
    capsys.readouterr()
    assert main(["risks", "--register", str(EXAMPLE), *reg]) == 0
    out = capsys.readouterr().out
    sc = json.loads((run_dir / "scorecard.json").read_text())
    assert "(in production)" in out.splitlines()[0]
    assert _statuses(out) == _expected(sc)
    assert main(["risks", "--register", str(EXAMPLE), "--run", run_dir.name, *reg]) == 0
    assert _statuses(capsys.readouterr().out) == _expected(sc)


def test_a_field_the_scorecard_lacks_is_an_error(
    run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, _ = run
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["risks"][3]["evidence"][0]["metric"] = "models.hardened.calibration.clean.eec"
    bad = tmp_path / "risks.yaml"
    bad.write_text(yaml.safe_dump(doc))
    args = ["risks", "--register", str(bad), "--scorecard", str(run_dir / "scorecard.json")]
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "risks[3] (INV-1).evidence[0]" in err
    assert "no key 'eec' under 'models.hardened.calibration.clean'" in err
    doc["risks"][3]["evidence"][0] = {"metric": "data.name", "max": 1}  # a string, not a number
    bad.write_text(yaml.safe_dump(doc))
    assert main(args) == 2
    assert "expected a number, the scorecard has 'digits'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"likelihood": "very high"}, "risks[0] (EVA-1).likelihood: Input should be 'low'"),
        ({"threat": "sabotage"}, "risks[0] (EVA-1).threat"),
        (
            {"evidence": [{"metric": "a.b", "min": 1, "max": 2}]},
            "exactly one of min, max or equals",
        ),
        ({"evidence": [{"metric": "a.b"}]}, "exactly one of min, max or equals"),
        ({"evidence": [{"metric": "a.b", "minus": "c", "equals": 1}]}, "'minus' goes with min"),
        ({"evidence": [{"metric": "a..b", "min": 1}]}, "empty part"),
        ({"owner": ""}, "risks[0] (EVA-1).owner"),
        ({"colour": "red"}, "risks[0] (EVA-1).colour: Extra inputs are not permitted"),
    ],
)
def test_malformed_registers(change: dict[str, Any], message: str) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["risks"][0].update(change)
    with pytest.raises(RiskError, match=r"^risks: ") as info:
        parse_register(doc)
    assert message in str(info.value)


def test_duplicate_ids_and_empty_registers(tmp_path: Path) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["risks"][1]["id"] = "EVA-1"
    with pytest.raises(RiskError, match="risk id 'EVA-1' is used twice"):
        parse_register(doc)
    with pytest.raises(RiskError, match="risks: List should have at least 1 item"):
        parse_register({"risks": []})
    with pytest.raises(RiskError, match="risk register not found"):
        load_register(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("risks: [")
    with pytest.raises(RiskError, match="not valid YAML"):
        load_register(tmp_path / "bad.yaml")
