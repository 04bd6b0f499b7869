"""Every YAML block and the Python example of docs/registry.md, run against real runs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from registry_fixtures import TINY, Project

from bastion.config import load_config
from bastion.registry.canary import CanaryRule
from bastion.registry.record import run_record
from bastion.registry.risks import assess, parse_register
from bastion.registry.stages import current_runs, load_stages, promote, rollback
from bastion.registry.store import Registry

DOC = Path(__file__).resolve().parents[2] / "docs" / "registry.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), re.S)


def _yaml_blocks() -> dict[str, Any]:
    """The YAML blocks by what they are: stages, policy, config, risks."""
    out: dict[str, Any] = {}
    for text in _blocks("yaml"):
        doc = yaml.safe_load(text)
        kind = next(k for k in ("stages", "rules", "risks", "name") if k in doc)
        if kind == "stages" and any("demote_when" in (v or {}) for v in doc["stages"].values()):
            kind = "canary"
        assert kind not in out, f"two {kind} blocks: give each a test"
        out[kind] = doc
    return out


def test_every_yaml_block_is_known() -> None:
    assert set(_yaml_blocks()) == {"stages", "rules", "risks", "name", "canary"}


def canary_rules(folder: Path) -> tuple[CanaryRule, ...]:
    """The canary stage's rules of the docs' canary block, loaded as ``--stages`` loads them
    (``tests/registry/test_registry_canary.py`` serves a canary under them)."""
    (folder / "canary-stages.yaml").write_text(yaml.safe_dump(_yaml_blocks()["canary"]))
    return load_stages(folder / "canary-stages.yaml")["canary"].demote_when


def test_the_canary_block_loads(tmp_path: Path) -> None:
    rules = canary_rules(tmp_path)
    assert [r.metric for r in rules] == ["abstention_rate", "p99_latency_s"]
    # the first rule fires before the second can: fewer samples needed
    assert rules[0].min_samples < rules[1].min_samples


def test_the_config_block_is_the_one_the_tests_run(tmp_path: Path) -> None:
    doc = _yaml_blocks()["name"]
    assert doc == TINY  # the session fixture `project` runs exactly this config
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    cfg, _ = load_config(tmp_path / "c.yaml")
    assert [m.name for m in cfg.models] == ["baseline"]


def test_stages_and_policy_blocks_promote_and_roll_back(project: Project, tmp_path: Path) -> None:
    blocks = _yaml_blocks()
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "production.yaml").write_text(yaml.safe_dump(blocks["rules"]))
    (tmp_path / "stages.yaml").write_text(yaml.safe_dump(blocks["stages"]))
    stages = load_stages(tmp_path / "stages.yaml")
    assert stages["staging"].policy is None
    with Registry(tmp_path / "r.db") as reg:
        ids = {v: reg.record(run_record(d)) for v, d in project.runs.items()}
        assert promote(reg, ids["v1"], "production", stages=stages).promoted
        assert not promote(reg, ids["weak"], "production", stages=stages).promoted
        assert promote(reg, ids["better"], "production", stages=stages).promoted
        rollback(reg, "production", stages=stages)
        assert current_runs(reg) == {"production": ids["v1"]}


def test_risk_block_against_a_real_scorecard(project: Project) -> None:
    register = parse_register(_yaml_blocks()["risks"], source="docs")
    with Registry(project.db) as reg:
        sc = reg.get(project.runs["v1"].name).scorecard
    assert sc is not None
    cal = sc["models"]["baseline"]["calibration"]["clean"]
    gap_ok = cal["mean_confidence"] - cal["accuracy"] <= 0.05
    statuses = {s.risk.id: s.status for s in assess(register, sc)}
    assert statuses == {
        "EVA-1": "mitigated" if sc["models"]["baseline"]["clean_accuracy"] >= 0.8 else "at risk",
        "POI-1": "mitigated",
        "MIA-1": "mitigated" if gap_ok else "at risk",
        "PI-1": "no evidence",
    }


def test_python_example(project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (code,) = _blocks("python")
    run_name = re.search(r'run_record\("runs/([^"]+)"\)', code)
    assert run_name is not None
    shutil.copytree(project.runs["v1"], tmp_path / "runs" / run_name.group(1))
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "production.yaml").write_text(yaml.safe_dump(_yaml_blocks()["rules"]))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(DOC), "exec"), {})
    with Registry(tmp_path / ".bastion" / "registry.db") as reg:
        (run,) = reg.runs()
        assert current_runs(reg) == {"production": run.run_id}
