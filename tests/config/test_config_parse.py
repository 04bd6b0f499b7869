"""The YAML run configuration: the shipped example parses, every bad field is named."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from bastion.attacks import FGSM, PGD, build_attack
from bastion.config import RunConfig, load_config, parse_config
from bastion.errors import ConfigError
from bastion.threat import ThreatModel
from bastion.training import ObjectiveSettings, TrainSettings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "digits.yaml"


@pytest.fixture
def doc() -> dict[str, Any]:
    """The example config as a fresh, mutable document."""
    return yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))


def _minimal(**extra: Any) -> dict[str, Any]:
    return {"name": "run", "models": [{"name": "m"}], **extra}


def _error(d: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(d)
    return str(info.value)


# -- the shipped example --------------------------------------------------------------------------


def test_load_example_config() -> None:
    cfg, raw = load_config(EXAMPLE)
    assert isinstance(cfg, RunConfig)
    assert raw == yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert cfg.name == "digits"
    assert cfg.seed == 0
    assert cfg.data.name == "digits"
    assert cfg.threat_model() == ThreatModel("linf", 0.2, (0.0, 1.0))
    assert cfg.model.architecture == "small-cnn"
    assert [m.name for m in cfg.models] == ["baseline", "hardened"]
    assert [m.objective.name for m in cfg.models] == ["standard", "pgd-at"]
    assert cfg.evaluation.examples is None
    assert [a.key for a in cfg.evaluation.attacks] == ["fgsm", "pgd-50x5", "square"]
    assert cfg.evaluation.attacks[1].settings() == {"steps": 50, "restarts": 5}
    assert cfg.evaluation.eps_grid == [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    pgd = build_attack(cfg.evaluation.attacks[1].name, cfg.evaluation.attacks[1].settings())
    assert isinstance(pgd, PGD)
    assert (pgd.steps, pgd.restarts) == (50, 5)
    assert isinstance(build_attack("fgsm"), FGSM)


def test_example_train_settings_merge_overrides(doc: dict[str, Any]) -> None:
    cfg = parse_config(doc)
    baseline, hardened = (cfg.train_settings(m) for m in cfg.models)
    shared = {
        "epochs": 30,
        "batch_size": 64,
        "lr": 0.05,
        "schedule": "cyclic",
        "optimizer": "sgd",
        "val_examples": 180,
        "val_pgd_steps": 10,
    }
    for s in (baseline, hardened):
        assert isinstance(s, TrainSettings)
        for k, v in shared.items():
            assert getattr(s, k) == v, k
    assert baseline.eps_ramp_epochs == 0.0  # TrainSettings' default
    assert hardened.eps_ramp_epochs == 5.0  # the entry's override
    assert baseline.objective == ObjectiveSettings("standard")
    assert hardened.objective == ObjectiveSettings("pgd-at", steps=7, step_size=0.35)
    assert baseline.selection == "clean"
    assert hardened.selection == "robust"


def test_per_model_training_overrides_merge_over_shared(doc: dict[str, Any]) -> None:
    doc["training"]["weight_decay"] = 1e-3
    doc["models"][0]["training"] = {"epochs": 3, "lr": 0.2, "optimizer": "adam"}
    doc["models"][1]["training"] = {"batch_size": 16, "select": "last"}
    cfg = parse_config(doc)
    a, b = (cfg.train_settings(m) for m in cfg.models)
    assert (a.epochs, a.lr, a.optimizer, a.batch_size) == (3, 0.2, "adam", 64)
    assert (b.epochs, b.lr, b.optimizer, b.batch_size) == (30, 0.05, "sgd", 16)
    assert a.weight_decay == b.weight_decay == 1e-3
    assert b.select == "last" and b.selection == "last"
    assert b.eps_ramp_epochs == 0.0  # the example's override was replaced, not merged into
    # the shared section is untouched by an entry's override
    assert cfg.training.epochs == 30
    assert cfg.training.merged(None) == cfg.training.model_dump(exclude_none=True)


def test_per_model_architecture_override(doc: dict[str, Any]) -> None:
    doc["models"][1]["architecture"] = {"architecture": "mlp", "options": {"hidden": [32]}}
    cfg = parse_config(doc)
    assert cfg.architecture_for(cfg.models[0]).architecture == "small-cnn"
    assert cfg.architecture_for(cfg.models[1]).architecture == "mlp"
    assert cfg.architecture_for(cfg.models[1]).options == {"hidden": [32]}


def test_minimal_config_defaults() -> None:
    cfg = parse_config(_minimal())
    assert cfg.seed == 0
    assert cfg.threat_model() == ThreatModel()
    assert cfg.model.architecture == "mlp"
    assert [a.key for a in cfg.evaluation.attacks] == ["fgsm", "pgd"]
    assert cfg.evaluation.examples == 1000
    s = cfg.train_settings(cfg.models[0])
    assert s == TrainSettings()


def test_data_schema_alias() -> None:
    cfg = parse_config(_minimal(data={"name": "csv", "path": "x.csv", "schema": "x.yaml"}))
    assert cfg.data.schema_path == "x.yaml"
    assert cfg.model_dump(mode="json", by_alias=True)["data"]["schema"] == "x.yaml"


# -- errors ---------------------------------------------------------------------------------------


def _set(path: str, value: Any) -> Any:
    """A mutation of the example document: set the dotted ``path`` (list indices as numbers)."""

    def mutate(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = d
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "field", "expected"),
    [
        (_set("colour", "blue"), "colour", "Extra inputs are not permitted"),
        (_set("threat.radius", 3), "threat.radius", "Extra inputs are not permitted"),
        (_set("models.1.objective.beta_x", 1), "models.1.objective.beta_x", "Extra inputs"),
        (_set("seed", "abc"), "seed", "valid integer"),
        (_set("training.epochs", "ten"), "training.epochs", "valid integer"),
        (_set("threat", 5), "threat", "valid dictionary"),
        (_set("models", "baseline"), "models", "valid list"),
        (_set("threat.norm", "l3"), "threat.norm", "'linf', 'l2' or 'l1'"),
        (_set("threat.eps", -0.1), "threat.eps", "greater than or equal to 0"),
        (_set("threat.eps", 1.5), "threat.eps", "expected eps <= hi - lo"),
        (_set("threat.bounds", [1.0, 0.0]), "threat.bounds", "lo < hi"),
        (
            _set("models.1.objective.name", "madry"),
            "models.1.objective.name",
            "expected one of standard, pgd-at, fast-fgsm, n-fgsm, trades, mart, gaussian",
        ),
        (
            _set("models.1.objective.steps", 0),
            "models.1.objective.steps",
            "expected an integer >= 1, got 0",
        ),
        (
            _set("models.1.objective.step_size", 1.5),
            "models.1.objective",
            "step_size: 1.5 x eps is larger than eps for multi-step pgd-at",
        ),
        (
            _set("models.1.training", {"eps_ramp_epochs": 31}),
            "training.eps_ramp_epochs",
            "[0, epochs=30]",
        ),
        (
            _set("models.1.training", {"train_eps": 1.5}),
            "training.train_eps",
            "exceeds the threat eps 0.2",
        ),
        (_set("models", []), "models", "expected at least one model entry"),
        (_set("models.0.name", "has space"), "models.0.name", "pattern"),
        (_set("models.1.name", "baseline"), "models", "names must be unique"),
        (_set("training.lr", 0), "training.lr", "greater than 0"),
        (_set("training.schedule", "linear"), "training.schedule", "'cyclic', 'cosine'"),
        (_set("training.optimizer", "rmsprop"), "training.optimizer", "'sgd' or 'adam'"),
        (_set("training.momentum", 1.0), "training.momentum", "less than 1"),
        (
            _set("evaluation.attacks.0", {"name": "cw"}),
            "evaluation.attacks[0].name",
            "expected one of",
        ),
        (
            _set("evaluation.attacks.1", {"name": "pgd", "stepz": 3}),
            "evaluation.attacks[1]",
            "unknown setting(s) ['stepz']",
        ),
        (
            _set("evaluation.attacks.1", {"name": "pgd", "steps": 0}),
            "evaluation.attacks[1]",
            "evaluation.attacks[1] (pgd).steps: expected an integer >= 1, got 0",
        ),
        (
            _set("evaluation.attacks.1", {"name": "fgsm"}),
            "evaluation.attacks",
            "labels must be unique",
        ),
        (_set("evaluation.eps_grid", [0.1, -0.1]), "evaluation.eps_grid", ">= 0"),
        (
            _set("evaluation.eps_grid", [0.1, 2.0]),
            "evaluation.eps_grid[1]",
            "expected eps <= hi - lo",
        ),
        (_set("evaluation.examples", 0), "evaluation.examples", "greater than or equal to 1"),
    ],
)
def test_parse_errors_name_field_and_expectation(
    doc: dict[str, Any], mutate: Any, field: str, expected: str
) -> None:
    mutate(doc)
    msg = _error(doc)
    assert msg.startswith("config: ")
    assert f"{field}:" in msg or f"{field} (" in msg
    assert expected in msg


def test_missing_required_fields() -> None:
    msg = _error({"models": [{"name": "m"}]})
    assert "name: Field required" in msg
    msg = _error({"name": "run"})
    assert "expected at least one model entry (or a 'tabular' or 'text' section)" in msg


def test_several_errors_are_all_reported(doc: dict[str, Any]) -> None:
    doc["seed"] = "x"
    doc["threat"]["norm"] = "l0"
    lines = _error(doc).splitlines()
    assert len(lines) == 2
    assert any("seed:" in line for line in lines)
    assert any("threat.norm:" in line for line in lines)
    assert all(line.startswith("config: ") for line in lines)


def test_non_mapping_document() -> None:
    assert "expected a mapping at the top level, got list" in _error([1, 2])
    assert "expected a mapping at the top level, got NoneType" in _error(None)


def test_objective_outside_models() -> None:
    msg = _error({"name": "run", "objective": {"name": "pgd-at"}})
    assert "'objective' belongs to an entry of 'models'" in msg


def test_l2_threat_allows_eps_beyond_range() -> None:
    cfg = parse_config(_minimal(threat={"norm": "l2", "eps": 2.0}, evaluation={"eps_grid": [3.0]}))
    assert cfg.threat_model().eps == 2.0


def test_source_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("name: run\nmodels: []\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml: models: "):
        load_config(p)


def test_load_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_load_config_invalid_yaml(tmp_path: Path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_config(p)


def test_config_is_frozen(doc: dict[str, Any]) -> None:
    cfg = parse_config(copy.deepcopy(doc))
    with pytest.raises(Exception, match="frozen"):
        cfg.seed = 3  # type: ignore[misc]
