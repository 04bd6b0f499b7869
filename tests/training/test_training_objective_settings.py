"""The training objectives' settings are declared once (``ObjectiveFields``): the Python API
(``ObjectiveSettings``), the YAML section (``ObjectiveConfig``) and the generated reference in
docs/config.md all derive from it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from bastion.attacks.reference import objective_markdown
from bastion.attacks.settings import expectation
from bastion.config import ObjectiveConfig, parse_config
from bastion.errors import ConfigError
from bastion.training import ObjectiveSettings
from bastion.training.objectives import OBJECTIVES, ObjectiveFields

ROOT = Path(__file__).resolve().parents[2]


def test_the_python_api_and_the_yaml_section_take_the_declared_fields() -> None:
    declared = ObjectiveFields.model_fields
    api = {f.name: f for f in dataclasses.fields(ObjectiveSettings)}
    assert set(declared) <= set(api) and set(api) - set(declared) == {"augmix", "mixed"}
    for name, info in declared.items():
        assert api[name].default == info.get_default(call_default_factory=True), name
        assert info.description and "\n" not in info.description, name
    assert set(ObjectiveConfig.model_fields) == set(declared) | {"augmix", "mixed"}
    assert ObjectiveFields.model_fields["name"].annotation.__args__ == OBJECTIVES  # type: ignore[union-attr]


@pytest.mark.parametrize("field", [f for f in ObjectiveFields.model_fields if f != "name"])
def test_each_lower_bound_is_refused_naming_the_field(field: str) -> None:
    info = ObjectiveFields.model_fields[field]
    bounds = [m for m in info.metadata if hasattr(m, "ge") or hasattr(m, "gt")]
    bound = bounds[0] if bounds else None
    if bound is None:
        assert info.annotation is bool
        with pytest.raises(ConfigError, match=rf"^objective\.{field}: expected true or false"):
            ObjectiveSettings(**{field: "yes"})  # type: ignore[arg-type]
        return
    ge = getattr(bound, "ge", None)
    bad = (ge - 1 if "int" in str(info.annotation) else ge - 0.5) if ge is not None else bound.gt
    with pytest.raises(ConfigError) as e:
        ObjectiveSettings(**{field: bad})  # type: ignore[arg-type]
    assert str(e.value) == f"objective.{field}: expected {expectation(info)}, got {bad!r}"


def test_yaml_objective_rules_come_from_the_same_model() -> None:
    doc = yaml.safe_load((ROOT / "examples" / "digits.yaml").read_text())
    doc["models"][1]["objective"]["step_size"] = 1.5
    with pytest.raises(ConfigError, match=r"models\.1\.objective: step_size: 1\.5 x eps"):
        parse_config(doc)
    doc["models"][1]["objective"] = {"name": "pgd-at", "steps": True}
    with pytest.raises(ConfigError, match=r"models\.1\.objective\.steps"):
        parse_config(doc)  # strict: a flag is not a step count
    good = yaml.safe_load((ROOT / "examples" / "digits.yaml").read_text())
    built = parse_config(good).models[1].objective.build()
    assert (built.name, built.steps, built.step_size) == ("pgd-at", 7, 0.35)


def test_docs_config_md_holds_the_generated_objective_table() -> None:
    text = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert objective_markdown() in text, "run: python -m bastion.attacks.reference"
    for name in ObjectiveFields.model_fields:
        assert f"| `objective.{name}` |" in text


@pytest.mark.parametrize(
    ("field", "value"), [("steps", 0), ("steps", True), ("beta", -1.0), ("name", "madry")]
)
def test_a_yaml_objective_error_reads_as_the_python_api_error(field: str, value: object) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "digits.yaml").read_text())
    doc["models"][1]["objective"][field] = value
    with pytest.raises(ConfigError) as yaml_error:
        parse_config(doc)
    with pytest.raises(ConfigError) as api_error:
        ObjectiveSettings(**{"name": "pgd-at", field: value})  # type: ignore[arg-type]
    assert str(api_error.value).startswith("objective.")
    assert str(yaml_error.value) == "config: models.1." + str(api_error.value)
