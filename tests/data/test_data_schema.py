"""TabularSchema: parsing and validating schema files, the encoded layout, to_unit/from_unit."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.data import FeatureSpec, TabularSchema, load_schema
from bastion.data.schema import Relation, parse_relation_expr
from bastion.errors import DataError

EXAMPLE = """\
target: label
classes: [legit, fraud]
features:
  - {name: amount, type: float, min: 0, max: 10000}
  - {name: n_items, type: integer, min: 1, max: 50}
  - {name: age, type: float, min: 18, max: 100, immutable: true}
  - {name: channel, type: categorical, categories: [web, store, phone], immutable: false}
"""


def example_dict() -> dict[str, object]:
    data = yaml.safe_load(EXAMPLE)
    assert isinstance(data, dict)
    return data


@pytest.fixture
def schema(tmp_path: Path) -> TabularSchema:
    path = tmp_path / "fraud.yaml"
    path.write_text(EXAMPLE, encoding="utf-8")
    return load_schema(path)


def test_example_schema_layout(schema: TabularSchema) -> None:
    assert schema.target == "label"
    assert schema.classes == ("legit", "fraud")
    assert schema.feature_names == ["amount", "n_items", "age", "channel"]
    assert schema.features[1] == FeatureSpec("n_items", "integer", 1.0, 50.0)
    assert schema.columns == [
        "amount",
        "n_items",
        "age",
        "channel=web",
        "channel=store",
        "channel=phone",
    ]
    assert schema.immutable_mask().tolist() == [False, False, True, False, False, False]
    assert schema.immutable_mask().dtype == torch.bool
    assert schema.integer_mask().tolist() == [False, True, False, False, False, False]
    assert schema.categorical_groups() == [[3, 4, 5]]


def test_immutable_categorical_marks_all_its_columns() -> None:
    schema = TabularSchema(
        "y",
        ("a", "b"),
        (
            FeatureSpec("c", "categorical", categories=("x", "y"), immutable=True),
            FeatureSpec("v", "float", 0, 1),
        ),
    )
    assert schema.immutable_mask().tolist() == [True, True, False]
    assert schema.categorical_groups() == [[0, 1]]


def test_to_dict_round_trips_through_json_and_yaml(schema: TabularSchema, tmp_path: Path) -> None:
    as_dict = schema.to_dict()
    assert TabularSchema.from_dict(as_dict) == schema
    json_path = tmp_path / "schema.json"
    json_path.write_text(json.dumps(as_dict), encoding="utf-8")
    assert load_schema(json_path) == schema
    yaml_path = tmp_path / "schema.yml"
    yaml_path.write_text(yaml.safe_dump(as_dict), encoding="utf-8")
    assert load_schema(yaml_path) == schema


def test_classes_are_optional() -> None:
    data = example_dict()
    del data["classes"]
    assert TabularSchema.from_dict(data).classes == ()


Mutation = Callable[[dict[str, object]], None]


def _feature(data: dict[str, object], index: int) -> dict[str, object]:
    features = data["features"]
    assert isinstance(features, list)
    feature = features[index]
    assert isinstance(feature, dict)
    return feature


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: _feature(d, 2).update(max=10),
            "schema.features[2].max: expected a number greater than min (18), got 10",
        ),
        (lambda d: _feature(d, 0).update(type="decimal"), "schema.features[0].type: expected one"),
        (lambda d: _feature(d, 0).pop("max"), "schema.features[0].max: required"),
        (lambda d: _feature(d, 0).update(min="low"), "schema.features[0].min: expected a number"),
        (lambda d: _feature(d, 0).update(max=float("inf")), "features[0].max: expected a finite"),
        (lambda d: _feature(d, 1).update(min=1.5), "schema.features[1].min: expected a whole"),
        (lambda d: _feature(d, 3).pop("categories"), "schema.features[3].categories: expected"),
        (lambda d: _feature(d, 3).update(min=0), "features[3].min: not allowed for a categorical"),
        (
            lambda d: _feature(d, 3).update(categories=["web", "web"]),
            "schema.features[3].categories: expected distinct names",
        ),
        (lambda d: _feature(d, 0).update(categories=["a"]), "features[0].categories: only allowed"),
        (lambda d: _feature(d, 2).update(immutable="yes"), "features[2].immutable: expected true"),
        (lambda d: _feature(d, 1).update(name="amount"), "features[1].name: duplicate feature"),
        (lambda d: _feature(d, 1).update(name="label"), "features[1].name: 'label' is also the"),
        (lambda d: _feature(d, 0).update(step=1), "schema.features[0]: unknown key 'step'"),
        (lambda d: _feature(d, 0).pop("name"), "schema.features[0].name: required"),
        (lambda d: d.pop("target"), "schema.target: required"),
        (lambda d: d.update(target=""), "schema.target: expected a non-empty column name"),
        (lambda d: d.update(classes=["a", "a"]), "schema.classes: expected distinct names"),
        (lambda d: d.update(classes=["only"]), "schema.classes: expected at least two"),
        (lambda d: d.update(features=[]), "schema.features: expected a non-empty list"),
        (lambda d: d.update(features="amount"), "schema.features: expected a non-empty list"),
        (lambda d: d.update(labels=[1]), "schema: unknown key 'labels'"),
        (
            lambda d: _feature(d, 3).update(categories=[True, "store"]),
            "schema.features[3].categories[0]: expected a string, got True (quote YAML words",
        ),
    ],
)
def test_invalid_schemas_name_the_field(tmp_path: Path, mutate: Mutation, expected: str) -> None:
    data = example_dict()
    mutate(data)
    path = tmp_path / "fraud.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_schema(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_schema_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_schema(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("target: label\nfeatures: [\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"is not valid YAML.*line \d+") as info:
        load_schema(broken)
    assert str(broken) in str(info.value)
    bad_json = tmp_path / "schema.json"
    bad_json.write_text("{'target': 1}", encoding="utf-8")
    with pytest.raises(DataError, match=r"is not valid JSON.*line 1"):
        load_schema(bad_json)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(DataError, match="schema: expected a mapping"):
        load_schema(listing)


def test_feature_spec_validates_on_construction() -> None:
    with pytest.raises(DataError, match=r"features\['age'\].max: expected a number greater"):
        FeatureSpec("age", "float", 18, 10)
    with pytest.raises(DataError, match=r"features\['c'\].categories: expected a non-empty"):
        FeatureSpec("c", "categorical")
    assert FeatureSpec("c", "categorical", categories=["a", "b"]).categories == ("a", "b")  # type: ignore[arg-type]


# ----------------------------------------------------------------------- conversions


def test_to_unit_and_back(schema: TabularSchema) -> None:
    raw = np.array([[2500.0, 1, 100, 2], [0.0, 50, 18, 0]])
    unit = schema.to_unit(raw)
    np.testing.assert_allclose(
        unit, [[0.25, 0.0, 1.0, 0, 0, 1], [0.0, 1.0, 0.0, 1, 0, 0]], atol=1e-15
    )
    np.testing.assert_allclose(schema.from_unit(unit), raw, rtol=1e-15)
    np.testing.assert_allclose(schema.to_unit(raw[0]), unit[0])  # a single row
    assert schema.from_unit(unit[1]).shape == (4,)


def test_from_unit_projects_onto_valid_rows(schema: TabularSchema) -> None:
    unit = np.array([[1.7, 0.3 / 49, -0.2, 0.2, 0.9, 0.3]])  # n_items 1.3
    raw = schema.from_unit(unit)
    assert raw[0, 0] == 10000.0  # clipped to max
    assert raw[0, 1] == 1.0  # 1.3 rounded to the nearest whole number
    assert raw[0, 2] == 18.0  # clipped to min
    assert raw[0, 3] == 1.0  # argmax category


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ([12000.0, 1, 20, 0], r"feature 'amount', row 0: value 12000.0 is outside .*\[0, 10000\]"),
        ([1.0, 2.5, 20, 0], "feature 'n_items', row 0: expected a whole number"),
        ([1.0, 2, 20, 3], r"feature 'channel', row 0: expected a category index in 0..2"),
        ([1.0, 2, float("nan"), 0], "feature 'age', row 0: value nan is not finite"),
    ],
)
def test_to_unit_rejects_invalid_raw_values(
    schema: TabularSchema, row: list[float], expected: str
) -> None:
    with pytest.raises(DataError, match=expected):
        schema.to_unit(np.array([row]))


def test_conversions_check_shapes(schema: TabularSchema) -> None:
    with pytest.raises(DataError, match=r"to_unit: expected raw rows of shape \(N, 4\)"):
        schema.to_unit(np.zeros((2, 6)))
    with pytest.raises(DataError, match=r"from_unit: expected unit rows of shape \(N, 6\)"):
        schema.from_unit(np.zeros((2, 4)))
    with pytest.raises(DataError, match="from_unit: row 1 holds a non-finite value"):
        schema.from_unit(np.array([[0.0] * 6, [0.0, np.inf, 0, 0, 0, 0]]))


# ------------------------------------------------------------------ property: round trip


@st.composite
def schemas_and_rows(draw: st.DrawFn) -> tuple[TabularSchema, np.ndarray]:
    count = draw(st.integers(min_value=1, max_value=5))
    features: list[FeatureSpec] = []
    for index in range(count):
        kind = draw(st.sampled_from(["float", "integer", "categorical"]))
        immutable = draw(st.booleans())
        if kind == "categorical":
            k = draw(st.integers(min_value=1, max_value=4))
            features.append(
                FeatureSpec(
                    f"f{index}",
                    "categorical",
                    immutable=immutable,
                    categories=tuple(f"c{j}" for j in range(k)),
                )
            )
            continue
        low = draw(st.integers(min_value=-10_000, max_value=10_000))
        width = draw(st.integers(min_value=1, max_value=100_000))
        if kind == "float":
            low_f = low + draw(st.floats(min_value=0, max_value=1))
            features.append(
                FeatureSpec(f"f{index}", "float", low_f, low_f + width / 7, immutable=immutable)
            )
        else:
            features.append(
                FeatureSpec(f"f{index}", "integer", low, low + width, immutable=immutable)
            )
    schema = TabularSchema("label", ("no", "yes"), tuple(features))
    n_rows = draw(st.integers(min_value=1, max_value=12))
    rows = []
    for _ in range(n_rows):
        row = []
        for feature in features:
            if feature.type == "categorical":
                row.append(float(draw(st.integers(0, len(feature.categories) - 1))))
            elif feature.type == "integer":
                assert feature.min is not None and feature.max is not None
                row.append(float(draw(st.integers(int(feature.min), int(feature.max)))))
            else:
                row.append(draw(st.floats(min_value=feature.min, max_value=feature.max)))
        rows.append(row)
    return schema, np.array(rows, dtype=np.float64)


@settings(max_examples=150, deadline=None, database=None)
@given(schemas_and_rows())
def test_property_unit_round_trip(case: tuple[TabularSchema, np.ndarray]) -> None:
    schema, raw = case
    unit = schema.to_unit(raw)
    assert unit.shape == (raw.shape[0], len(schema.columns))
    assert np.all((unit >= 0) & (unit <= 1))
    for group in schema.categorical_groups():
        np.testing.assert_array_equal(unit[:, group].sum(axis=1), 1.0)
    back = schema.from_unit(unit)
    for j, feature in enumerate(schema.features):
        if feature.type == "float":
            assert feature.min is not None and feature.max is not None
            span = feature.max - feature.min
            np.testing.assert_allclose(back[:, j], raw[:, j], rtol=0, atol=1e-12 * (span + 1e4))
        else:
            np.testing.assert_array_equal(back[:, j], raw[:, j])
    assert TabularSchema.from_dict(schema.to_dict()) == schema


# ----------------------------------------------------------------- relations and costs

RELATIONS = """\
target: label
features:
  - {name: amount, type: float, min: 0, max: 100, cost: 2}
  - {name: shipping, type: float, min: 0, max: 10}
  - {name: total, type: float, min: 0, max: 110}
  - {name: limit, type: float, min: 0, max: 100}
  - {name: n, type: integer, min: 1, max: 5}
  - {name: channel, type: categorical, categories: [web, app]}
relations:
  - expr: "amount <= limit"
  - {expr: "total == amount + shipping", name: basket}
  - {terms: {amount: 1, n: -50}, op: ">=", value: -100, tol: 0.5}
"""


def test_relations_and_costs_parse_into_canonical_form() -> None:
    schema = TabularSchema.from_dict(yaml.safe_load(RELATIONS))
    assert schema.features[0].cost == 2.0
    assert schema.features[1].cost == 1.0
    first, second, third = schema.relations
    assert first == Relation("amount <= limit", (("amount", 1.0), ("limit", -1.0)), "<=", 0.0)
    assert second.name == "basket" and second.op == "=="
    assert dict(second.terms) == {"total": 1.0, "amount": -1.0, "shipping": -1.0}
    # a >= form is flipped to <=
    assert dict(third.terms) == {"amount": -1.0, "n": 50.0}
    assert third.op == "<=" and third.value == 100.0 and third.tol == 0.5
    assert schema.cost_vector().tolist() == [2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert TabularSchema.from_dict(schema.to_dict()) == schema
    assert TabularSchema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema


def test_schemas_without_relations_or_costs_serialise_as_before(schema: TabularSchema) -> None:
    as_dict = schema.to_dict()
    assert "relations" not in as_dict
    assert all("cost" not in feature for feature in as_dict["features"])  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "terms", "op", "value"),
    [
        ("a <= b", {"a": 1.0, "b": -1.0}, "<=", 0.0),
        ("a >= 2*b + 3", {"a": -1.0, "b": 2.0}, "<=", -3.0),
        ("t == a + 0.5 * s - 2", {"t": 1.0, "a": -1.0, "s": -0.5}, "==", -2.0),
        ("-a + b * 3 <= 1e3", {"a": -1.0, "b": 3.0}, "<=", 1000.0),
    ],
)
def test_relation_expressions(text: str, terms: dict[str, float], op: str, value: float) -> None:
    assert parse_relation_expr(text) == (terms, op, value)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["relations"].append({"expr": "amount <= credit"}),
            "schema.relations[3] ('amount <= credit'): unknown feature 'credit' (features: amount,",
        ),
        (
            lambda d: d["relations"].append({"expr": "channel <= amount"}),
            "feature 'channel' is categorical; relations may only name float and integer",
        ),
        (
            lambda d: d["relations"].append({"expr": "amount <= limit <= total"}),
            "schema.relations[3].expr: expected exactly one of <=, >=, ==",
        ),
        (lambda d: d["relations"].append({"expr": "amount < limit"}), "relations[3].expr: cannot"),
        (lambda d: d["relations"].append({"expr": "amount <="}), "relations[3].expr: expected a"),
        (lambda d: d["relations"].append({"terms": {"amount": 1}}), "relations[3]: expected expr"),
        (
            lambda d: d["relations"].append({"terms": {"amount": 1}, "op": "<"}),
            "schema.relations[3].op: expected one of",
        ),
        (lambda d: d["relations"].append({"expr": "a<=b", "rhs": 1}), "unknown key 'rhs'"),
        (
            lambda d: d["relations"].append({"expr": "amount - amount <= 1"}),
            "expected at least one feature with a non-zero coefficient",
        ),
        (lambda d: d.update(relations="amount <= limit"), "schema.relations: expected a list"),
        (lambda d: d["features"][0].update(cost=0), "schema.features[0].cost: expected a finite"),
        (lambda d: d["features"][0].update(cost="high"), "schema.features[0].cost: expected a"),
        (
            lambda d: d["relations"].append({"expr": "amount <= limit"}),
            "duplicate relation name 'amount <= limit'",
        ),
    ],
)
def test_invalid_relations_name_the_relation_and_feature(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    data = yaml.safe_load(RELATIONS)
    mutate(data)
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_schema(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_to_unit_names_the_row_relation_and_columns_of_a_violation() -> None:
    schema = TabularSchema.from_dict(yaml.safe_load(RELATIONS))
    good = [10.0, 2.0, 12.0, 50.0, 1.0, 0.0]
    assert schema.to_unit([good]).shape == (1, 7)
    bad_sum = [10.0, 2.0, 13.0, 50.0, 1.0, 0.0]
    with pytest.raises(DataError, match=r"row 1: violates relation 'basket' \(columns total=13, "):
        schema.to_unit([good, bad_sum])
    over_limit = [60.0, 2.0, 62.0, 50.0, 5.0, 0.0]
    with pytest.raises(
        DataError, match=r"row 0: violates relation 'amount <= limit'.*lhs - rhs = 10"
    ):
        schema.to_unit([over_limit])
    # the third relation has tol 0.5: amount 150 - 50 n <= ... 10 - 50 = -40 >= -100 - 0.5 holds
    within_tol = [10.0, 2.0, 12.0, 50.0, 1.0, 1.0]
    assert schema.relation_violations([within_tol]).tolist() == [[False, False, False]]


def test_feature_spec_cost_is_validated() -> None:
    with pytest.raises(DataError, match=r"features\['a'\].cost: expected a finite number > 0"):
        FeatureSpec("a", "float", 0, 1, cost=-1.0)
    assert FeatureSpec("a", "float", 0, 1, cost=3).cost == 3.0
    with pytest.raises(DataError, match=r"unknown feature 'b'"):
        TabularSchema("y", (), (FeatureSpec("a", "float", 0, 1),), (Relation.parse("a <= b"),))
