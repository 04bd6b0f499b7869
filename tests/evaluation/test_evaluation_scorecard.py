"""The scorecard helpers: atomic JSON writing, sanitising, reading back, hashing, versions."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import bastion
from bastion.errors import ConfigError
from bastion.evaluation import (
    SCHEMA_VERSION,
    Scorecard,
    ScorecardError,
    config_hash,
    load_scorecard,
    package_versions,
    read_scorecard,
    sanitize,
    scorecard_model,
    write_json,
)


def _scorecard(**extra: Any) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "models": {"m": {"clean_accuracy": 0.9}}, **extra}


# -- write_json -----------------------------------------------------------------------------------


def test_write_json_writes_valid_json_and_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "dir" / "scorecard.json"
    doc = _scorecard(eps=(0.1, 0.2), path=Path("runs/x"), nested={"a": [1, 2.5, None, True]})
    out = write_json(doc, target)
    assert out == target
    assert json.loads(target.read_text()) == {
        "schema_version": SCHEMA_VERSION,
        "models": {"m": {"clean_accuracy": 0.9}},
        "eps": [0.1, 0.2],
        "path": "runs/x",
        "nested": {"a": [1, 2.5, None, True]},
    }
    assert sorted(p.name for p in target.parent.iterdir()) == ["scorecard.json"]


def test_write_json_replaces_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "s.json"
    write_json({"v": 1}, target)
    write_json({"v": 2, "more": "x" * 1000}, target)
    write_json({"v": 3}, target)
    assert json.loads(target.read_text()) == {"v": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_write_json_failure_leaves_previous_file_intact(tmp_path: Path) -> None:
    target = tmp_path / "s.json"
    write_json({"v": 1}, target)
    with pytest.raises(ValueError):
        write_json({"v": float("nan")}, target)  # strict JSON: no NaN
    with pytest.raises(TypeError, match="not JSON-serialisable: object"):
        write_json({"v": object()}, target)
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_write_json_of_sanitized_document_is_strict_json(tmp_path: Path) -> None:
    doc = sanitize(
        _scorecard(
            curve=[1.0, float("nan"), float("inf")],
            t=torch.tensor([0.5, float("nan")]),
            n=np.float32("nan"),
        )
    )
    target = write_json(doc, tmp_path / "s.json")
    text = target.read_text()
    assert "NaN" not in text and "Infinity" not in text
    loaded = json.loads(text)
    assert loaded["curve"] == [1.0, None, None]
    assert loaded["t"] == [0.5, None]
    assert loaded["n"] is None


# -- sanitize -------------------------------------------------------------------------------------


def test_sanitize_replaces_non_finite_floats() -> None:
    doc = {
        "a": float("nan"),
        "b": float("inf"),
        "c": -math.inf,
        "d": 0.25,
        "e": 0.0,
        "f": [1.0, float("nan"), (2.0, float("-inf"))],
        "g": {"h": {"i": float("nan")}},
        "s": "nan",
        "n": None,
        "k": 3,
        "t": True,
    }
    assert sanitize(doc) == {
        "a": None,
        "b": None,
        "c": None,
        "d": 0.25,
        "e": 0.0,
        "f": [1.0, None, [2.0, None]],
        "g": {"h": {"i": None}},
        "s": "nan",
        "n": None,
        "k": 3,
        "t": True,
    }
    json.dumps(sanitize(doc), allow_nan=False)


def test_sanitize_keys_become_strings_and_input_is_not_modified() -> None:
    doc = {1: [float("nan")], 0.5: "x"}
    out = sanitize(doc)
    assert out == {"1": [None], "0.5": "x"}
    assert math.isnan(doc[1][0])


def test_sanitize_numpy_values() -> None:
    out = sanitize(
        {
            "f64": np.float64("nan"),
            "f32": np.float32("inf"),
            "ok": np.float32(0.5),
            "i": np.int64(7),
            "b": np.bool_(True),
            "arr": np.array([[1.0, np.nan], [np.inf, 2.0]]),
        }
    )
    assert out == {
        "f64": None,
        "f32": None,
        "ok": 0.5,
        "i": 7,
        "b": True,
        "arr": [[1.0, None], [None, 2.0]],
    }
    assert type(out["i"]) is int and type(out["ok"]) is float and type(out["b"]) is bool
    json.dumps(out, allow_nan=False)


def test_sanitize_torch_tensors() -> None:
    out = sanitize(
        {
            "scalar": torch.tensor(0.75),
            "nan": torch.tensor(float("nan")),
            "vec": torch.tensor([1, 2, 3]),
            "mat": torch.tensor([[0.5, float("inf")]], dtype=torch.float64),
        }
    )
    assert out == {"scalar": 0.75, "nan": None, "vec": [1, 2, 3], "mat": [[0.5, None]]}
    assert type(out["scalar"]) is float
    json.dumps(out, allow_nan=False)


# -- read_scorecard -------------------------------------------------------------------------------


def test_read_scorecard_round_trip(tmp_path: Path) -> None:
    doc = _scorecard(run={"name": "x"})
    sc = read_scorecard(write_json(doc, tmp_path / "s.json"))
    assert isinstance(sc, Scorecard) and sc.run.name == "x"
    assert sc.to_json() == doc
    assert read_scorecard(write_json(sc, tmp_path / "t.json")).to_json() == doc


@pytest.mark.parametrize(
    "doc",
    [
        {"schema_version": str(SCHEMA_VERSION), "models": {}},
        {"models": {}},
        {"schema_version": SCHEMA_VERSION},
        [1, 2, 3],
        "scorecard",
    ],
    ids=["version-as-string", "no-version", "no-models", "list", "string"],
)
def test_read_scorecard_rejects_wrong_schema(tmp_path: Path, doc: Any) -> None:
    p = tmp_path / "s.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as info:
        read_scorecard(p)
    msg = str(info.value)
    assert msg.startswith(str(p))
    assert f"expected schema_version {SCHEMA_VERSION}" in msg


def test_read_scorecard_names_a_newer_version(tmp_path: Path) -> None:
    p = write_json({"schema_version": SCHEMA_VERSION + 1, "models": {}}, tmp_path / "s.json")
    with pytest.raises(ScorecardError, match=f"schema_version {SCHEMA_VERSION + 1} is newer"):
        read_scorecard(p)


def test_read_scorecard_names_a_malformed_field(tmp_path: Path) -> None:
    doc = _scorecard()
    doc["models"]["m"]["clean_accuracy"] = "high"
    with pytest.raises(ScorecardError, match=r"models\.m\.clean_accuracy: expected a number"):
        read_scorecard(write_json(doc, tmp_path / "s.json"))


# -- version 1 (written before the scorecard was typed) ------------------------------------------

V1_FILES = sorted((Path(__file__).parent / "data").glob("scorecard_v1_*.json"))


@pytest.mark.parametrize("path", V1_FILES, ids=[p.stem for p in V1_FILES])
def test_version_1_scorecard_loads_migrated_and_unchanged(path: Path) -> None:
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == 1
    sc = read_scorecard(path)
    assert sc.schema_version == SCHEMA_VERSION == 2
    assert sc.to_json() == {**raw, "schema_version": 2}  # only the version moves


def test_version_1_digits_scorecard_reads_typed() -> None:
    sc = read_scorecard(Path(__file__).parent / "data" / "scorecard_v1_digits.json")
    hard = sc.models["hardened"]
    assert sc.threat.eps_key == "0.2" and sc.threat.bounds == (0.0, 1.0)
    assert hard.attacks["pgd-5"]["0.2"] == sc["models"]["hardened"]["attacks"]["pgd-5"]["0.2"]
    assert hard.training is not None and len(hard.training.history) == 2
    assert hard.calibration is not None and hard.calibration.clean is not None
    assert [a.label for a in sc.evaluation.attacks] == ["fgsm", "pgd-5", "square"]
    assert all(c.code for c in hard.sanity_checks)


def test_version_1_channel_scorecards_read_typed() -> None:
    data = Path(__file__).parent / "data"
    tab = read_scorecard(data / "scorecard_v1_tabular_poisoning.json")
    assert tab.tabular is not None and tab.poisoning is not None
    assert set(tab.tabular.models) == set(tab["tabular"]["models"])
    txt = read_scorecard(data / "scorecard_v1_text.json")
    assert txt.text is not None and txt.threat.channel == "text"
    figures = txt.text.attacks["homoglyph"].target("standard")
    assert figures is not None and 0.0 <= (figures.success_rate or 0.0) <= 1.0


def test_load_scorecard_rejects_unknown_versions() -> None:
    with pytest.raises(ScorecardError, match="schema_version 0 is not one"):
        load_scorecard({"schema_version": 0, "models": {}})
    with pytest.raises(ScorecardError, match="schema_version True is not one"):
        load_scorecard({"schema_version": True, "models": {}})


def test_curve_lengths_are_checked() -> None:
    curve = {"eps": [0.0, 0.1], "worst_case": [0.9], "per_attack": {}}
    with pytest.raises(ScorecardError, match=r"models\.m\.accuracy_vs_eps\.worst_case: expected 2"):
        load_scorecard({"models": {"m": {"accuracy_vs_eps": curve}}})


# -- the published JSON Schema --------------------------------------------------------------------


def test_published_json_schema_is_current() -> None:
    """docs/scorecard.schema.json is what the models generate (regenerate with
    ``python -m bastion.evaluation.scorecard_model --write``)."""
    assert scorecard_model.main(["--check"]) == 0, "docs/scorecard.schema.json is stale"


def test_schema_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "schema.json"
    stale.write_text("{}\n")
    assert scorecard_model.main(["--check", "--path", str(stale)]) == 1
    assert scorecard_model.main(["--write", "--path", str(stale)]) == 0
    assert scorecard_model.main(["--check", "--path", str(stale)]) == 0


def test_json_schema_validates_a_real_scorecard() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(scorecard_model.SCHEMA_PATH.read_text())
    for path in V1_FILES:
        doc = {**json.loads(path.read_text()), "schema_version": SCHEMA_VERSION}
        jsonschema.validate(doc, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"schema_version": 1, "models": {}}, schema)


@pytest.mark.parametrize(
    "content", [b"{not json", b"", b'{"schema_version": 1, "models":', b"\xff\xfe\x00"]
)
def test_read_scorecard_rejects_malformed_file(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "s.json"
    p.write_bytes(content)
    with pytest.raises(ConfigError, match=r"not a scorecard \(invalid JSON"):
        read_scorecard(p)


def test_read_scorecard_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="scorecard not found"):
        read_scorecard(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="scorecard not found"):
        read_scorecard(tmp_path)  # a directory is not a scorecard file


# -- config_hash ----------------------------------------------------------------------------------


def test_config_hash_is_stable_under_key_order() -> None:
    a = {"name": "x", "threat": {"eps": 0.3, "norm": "linf"}, "models": [{"name": "m", "lr": 0.1}]}
    b = {"models": [{"lr": 0.1, "name": "m"}], "threat": {"norm": "linf", "eps": 0.3}, "name": "x"}
    h = config_hash(a)
    assert re.fullmatch(r"[0-9a-f]{64}", h)
    assert config_hash(b) == h
    assert config_hash(json.loads(json.dumps(a))) == h


@pytest.mark.parametrize(
    "other",
    [
        {
            "name": "x",
            "threat": {"eps": 0.31, "norm": "linf"},
            "models": [{"name": "m", "lr": 0.1}],
        },
        {"name": "x", "threat": {"eps": 0.3, "norm": "l2"}, "models": [{"name": "m", "lr": 0.1}]},
        {"name": "x", "threat": {"eps": 0.3, "norm": "linf"}, "models": [{"name": "m"}]},
        {"name": "x", "threat": {"eps": 0.3, "norm": "linf"}, "models": []},
        {"name": "x", "threat": {"eps": 0.3, "norm": "linf"}},
    ],
)
def test_config_hash_differs_for_different_configs(other: dict[str, Any]) -> None:
    base = {
        "name": "x",
        "threat": {"eps": 0.3, "norm": "linf"},
        "models": [{"name": "m", "lr": 0.1}],
    }
    assert config_hash(other) != config_hash(base)


def test_config_hash_list_order_matters() -> None:
    assert config_hash({"grid": [0.1, 0.2]}) != config_hash({"grid": [0.2, 0.1]})


# -- package_versions -----------------------------------------------------------------------------


def test_package_versions() -> None:
    v = package_versions()
    assert {
        "python",
        "platform",
        "bastion",
        "torch",
        "numpy",
        "scikit-learn",
        "safetensors",
    } <= set(v)
    assert v["torch"] == torch.__version__
    assert v["bastion"] == bastion.__version__
    assert v["numpy"] == np.__version__
    assert all(isinstance(s, str) and s for s in v.values())
    json.dumps(v)
