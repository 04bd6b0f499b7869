"""One settings language: every registered attack's settings model drives YAML validation,
``-p`` coercion, direct construction, the recorded params, ``bastion attacks list`` and the
generated reference in docs/config.md."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic.fields import FieldInfo
from torch import nn
from typer.testing import CliRunner

from bastion.attacks import ATTACKS, PGD, Square, build_attack
from bastion.attacks.reference import BEGIN, END, main, settings_markdown, updated
from bastion.attacks.registry import parse_attack_params, recorded_settings, settings_model
from bastion.attacks.settings import bounds_text, expectation, setting_rows
from bastion.cli import app
from bastion.cli import main as cli_main
from bastion.config import parse_config
from bastion.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DOC = ROOT / "docs" / "config.md"
NAMES = sorted(ATTACKS)


def _required(name: str) -> dict[str, Any]:
    """The settings an attack cannot do without (the transfer attack's surrogate)."""
    return {"surrogate": nn.Sequential(nn.Flatten(), nn.Linear(4, 3))} if name == "transfer" else {}


@pytest.mark.parametrize("name", NAMES)
def test_the_settings_model_matches_the_constructor(name: str) -> None:
    """Same keywords, same defaults, a one-line description each: the model is the one place
    the settings are declared, and the signature cannot drift from it."""
    model = settings_model(name)
    sig = inspect.signature(ATTACKS[name].__init__)
    params = {p: v for p, v in sig.parameters.items() if p != "self"}
    assert set(params) == set(model.model_fields)
    for field, info in model.model_fields.items():
        default = params[field].default
        if info.is_required():
            assert default is inspect.Parameter.empty, field
        else:
            assert default == info.get_default(call_default_factory=True), field
        assert info.description and "\n" not in info.description, field


def _below(info: FieldInfo) -> float | None:
    """A value just outside the field's lower bound (None when it has none)."""
    for m in info.metadata:
        if getattr(m, "ge", None) is not None:
            return m.ge - 1 if info.annotation is int else m.ge - 0.5
        if getattr(m, "gt", None) is not None:
            return m.gt
    return None


@pytest.mark.parametrize("name", NAMES)
def test_every_lower_bound_is_enforced_with_the_same_message_everywhere(name: str) -> None:
    """Just below each declared lower bound: the YAML path and the Python API refuse it, naming
    the attack, the field and the bound."""
    model = settings_model(name)
    checked = 0
    for field, info in model.model_fields.items():
        bad = _below(info)
        if bad is None:
            continue
        where = "evaluation.attacks[2]"
        with pytest.raises(ConfigError) as e:
            build_attack(name, {**_required(name), field: bad}, where=where)
        assert str(e.value) == (
            f"{where} ({name}).{field}: expected {expectation(info)}, got {bad!r}"
        )
        assert bounds_text(info) in str(e.value)
        with pytest.raises(ConfigError, match=rf"^{name}\.{field}: expected "):
            ATTACKS[name](**{**_required(name), field: bad})
        checked += 1
    no_bounds = {"transfer", "cascade"}
    assert checked > 0 or name in no_bounds


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("square", {"queries": 0}, "(square).queries: expected an integer >= 1, got 0"),
        ("pgd", {"steps": 5.0}, "(pgd).steps: expected an integer >= 1, got 5.0"),
        ("pgd", {"steps": True}, "(pgd).steps: expected an integer >= 1, got True"),
        ("pgd", {"early_stop": "yes"}, "(pgd).early_stop: expected true or false, got 'yes'"),
        ("cw-l2", {"lr": float("nan")}, "(cw-l2).lr: expected a finite number > 0, got nan"),
        ("square", {"p_init": 1.0}, "(square).p_init: expected a number in (0, 1), got 1.0"),
        ("apgd", {"loss": "mse"}, "(apgd).loss: expected one of ce, dlr, got 'mse'"),
        (
            "hopskipjump",
            {"init_evals": 50, "max_evals": 10},
            "(hopskipjump).max_evals: expected at least init_evals (50), got 10",
        ),
        ("patch", {"scale_range": [2, 1]}, "(patch).scale_range: expected [low, high] with"),
        ("cascade", {}, "(cascade).preset, attacks: expected exactly one of them, got neither"),
        (
            "cascade",
            {"preset": "x"},
            "(cascade).preset: expected one of quick, standard, black-box",
        ),
    ],
)
def test_strict_types_and_rules(name: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        build_attack(name, params, where="evaluation.attacks[2]")
    assert str(e.value).startswith("evaluation.attacks[2] " + message)


def test_a_yaml_entry_is_refused_naming_its_position_attack_and_field() -> None:
    doc = yaml.safe_load((ROOT / "examples" / "digits.yaml").read_text())
    doc["evaluation"]["attacks"][2]["queries"] = 0
    with pytest.raises(ConfigError) as e:
        parse_config(doc)
    assert "evaluation.attacks[2] (square).queries: expected an integer >= 1, got 0" in str(e.value)


def test_direct_construction_validates_through_the_model() -> None:
    with pytest.raises(ConfigError, match=r"^square\.queries: expected an integer >= 1, got 0$"):
        Square(queries=0)
    assert Square(queries=10).queries == 10


def test_command_line_values_are_coerced_by_the_field_type() -> None:
    got = parse_attack_params(
        "pgd", ["steps=7", "step_size=1e-3", "loss=cw", "early_stop=false"], where="--param"
    )
    assert got == {"steps": 7, "step_size": 0.001, "loss": "cw", "early_stop": False}
    assert parse_attack_params("pgd", ["step_size=null"], where="-p") == {"step_size": None}
    assert parse_attack_params("patch", ["scale_range=[0.8, 1.2]", "init=gray"], where="-p") == {
        "scale_range": [0.8, 1.2],
        "init": "gray",
    }
    pgd = build_attack("pgd", got)
    assert isinstance(pgd, PGD) and (pgd.steps, pgd.step_size) == (7, 0.001)
    with pytest.raises(ConfigError, match=r"^--param \(pgd\): unknown setting 'stepz'"):
        parse_attack_params("pgd", ["stepz=3"], where="--param")
    with pytest.raises(ConfigError, match=r"^--param: expected KEY=VALUE, got 'steps'"):
        parse_attack_params("pgd", ["steps"], where="--param")
    with pytest.raises(ConfigError, match=r"\(pgd\)\.steps: expected an integer >= 1, got 'x'"):
        build_attack("pgd", parse_attack_params("pgd", ["steps=x"], where="-p"))


def test_the_recorded_params_are_the_validated_defaulted_settings() -> None:
    assert recorded_settings("square", {"queries": 1000}) == {
        "queries": 1000,
        "p_init": 0.8,
        "restarts": 1,
    }
    for name in NAMES:
        if name in ("transfer", "cascade", "pgd"):  # a model, resolved specs, a derived step
            continue
        assert build_attack(name).params() == recorded_settings(name), name


def test_attacks_list_prints_every_setting_from_the_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = CliRunner().invoke(app, ["attacks", "list", "square"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "square (fixed-budget, score-based)"
    for row in setting_rows(settings_model("square")):
        line = next(ln for ln in result.output.splitlines() if ln.split()[:1] == [row[0]])
        assert line.split()[:3] == [row[0], row[1], row[2]]
        assert line.endswith(row[4])
    everything = CliRunner().invoke(app, ["attacks", "list"])
    assert all(f"\n{n} (" in "\n" + everything.output for n in NAMES)
    capsys.readouterr()
    assert cli_main(["attacks", "list", "nope"]) == 2
    assert "attack: expected one of apgd" in capsys.readouterr().err


def test_docs_config_md_holds_the_generated_reference() -> None:
    text = CONFIG_DOC.read_text(encoding="utf-8")
    assert settings_markdown() in text, "run: python -m bastion.attacks.reference"
    assert main(["--check", str(CONFIG_DOC)]) == 0
    for name in NAMES:
        for row in setting_rows(settings_model(name)):
            assert f"| `{row[0]}` | {row[1]} |" in text.replace("\\|", "|")


def test_the_reference_check_fails_on_a_stale_file_and_the_writer_fixes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "config.md"
    stale.write_text(f"# Config\n\n{BEGIN}\n| `queries` | old |\n{END}\n", encoding="utf-8")
    assert main(["--check", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().out
    assert main([str(stale)]) == 0
    assert main(["--check", str(stale)]) == 0
    assert stale.read_text(encoding="utf-8").startswith("# Config\n\n" + BEGIN)
    with pytest.raises(ConfigError, match="markers"):
        updated("no markers here")


def test_the_scorecard_records_each_attack_with_its_defaults_filled_in(tmp_path: Path) -> None:
    from bastion.evaluation.scorecard import read_scorecard
    from bastion.pipeline import run_pipeline

    doc = {
        "name": "settings",
        "seed": 0,
        "data": {"name": "digits"},
        "threat": {"norm": "linf", "eps": 0.2},
        "model": {"architecture": "mlp"},
        "training": {"epochs": 1, "batch_size": 64, "val_examples": 30},
        "models": [{"name": "baseline", "objective": {"name": "standard"}}],
        "evaluation": {
            "examples": 20,
            "attacks": [{"name": "fgsm"}, {"name": "square", "label": "sq", "queries": 20}],
            "sanity_checks": "off",
            "calibration": None,
            "latency": None,
        },
    }
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    run_dir = run_pipeline(config, out_dir=tmp_path / "runs", show_progress=False)
    recorded = read_scorecard(run_dir / "scorecard.json")["evaluation"]["attacks"]
    assert recorded == [
        {"label": "fgsm", "name": "fgsm", **recorded_settings("fgsm")},
        {"label": "sq", "name": "square", "queries": 20, "p_init": 0.8, "restarts": 1},
    ]


def test_numpy_scalars_count_as_numbers_and_targets_share_the_language() -> None:
    import numpy as np

    from bastion.attacks import HTTPTarget, ScoreTarget

    square = Square(queries=np.int64(7), p_init=np.float32(0.5))
    assert (square.queries, square.p_init) == (7, 0.5) and type(square.queries) is int
    bad_batch = r"^ScoreTarget\.batch_size: expected an integer >= 1, got True$"
    with pytest.raises(ConfigError, match=bad_batch):
        ScoreTarget(lambda a: a, 3, batch_size=True)
    bad_classes = r"^ScoreTarget\.num_classes: expected an integer >= 2, got 1$"
    with pytest.raises(ConfigError, match=bad_classes):
        ScoreTarget(lambda a: a, 1)
    bad_timeout = r"^HTTPTarget\.timeout: expected a finite number > 0, got 0$"
    with pytest.raises(ConfigError, match=bad_timeout):
        HTTPTarget("http://127.0.0.1:1/", num_classes=3, timeout=0)


def test_the_defaults_quoted_in_docs_attacks_md_are_the_models() -> None:
    """Every ``setting=value`` default the attacks table of docs/attacks.md quotes (a number
    or a flag) is the settings model's default of that row's attack(s)."""
    import re

    rows = [
        ln for ln in (ROOT / "docs" / "attacks.md").read_text().splitlines() if ln.startswith("| `")
    ]
    checked = 0
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        names = re.findall(r"`([a-z0-9-]+)`", cells[0])
        for key, raw in re.findall(r"`([a-z_]+)=([^`|\\]+)`", cells[-1]):
            value = yaml.safe_load(raw)
            if not isinstance(value, int | float | bool):
                continue  # a rule (2.5/steps) or a choice (ce|cw), not a default
            for name in names:
                fields = settings_model(name).model_fields
                if key in fields:
                    assert fields[key].get_default() == value, (name, key)
                    checked += 1
    assert checked >= 30
