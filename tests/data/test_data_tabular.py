"""CSV data sets with a schema, and the breast cancer set."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.data import Dataset, FeatureSpec, TabularSchema, load_dataset
from bastion.data.tabular import read_csv_table
from bastion.errors import DataError

SCHEMA = """\
target: label
classes: [legit, fraud]
features:
  - {name: amount, type: float, min: 0, max: 10000}
  - {name: n_items, type: integer, min: 1, max: 50}
  - {name: age, type: float, min: 18, max: 100, immutable: true}
  - {name: channel, type: categorical, categories: [web, store, phone], immutable: false}
"""
HEADER = "id,amount,n_items,age,channel,label\n"
CHANNELS = ("web", "store", "phone")


def good_rows(count: int = 20) -> list[str]:
    assert count <= 33, "larger counts leave the schema bounds"
    rows = []
    for i in range(count):
        label = "fraud" if i % 4 == 0 else "legit"
        rows.append(f"{i},{i * 300.0},{1 + i},{18 + 2 * i},{CHANNELS[i % 3]},{label}\n")
    return rows


def write_set(
    directory: Path, rows: list[str], *, schema: str = SCHEMA, header: str = HEADER
) -> tuple[Path, Path]:
    csv_path = directory / "fraud.csv"
    csv_path.write_text(header + "".join(rows), encoding="utf-8")
    schema_path = directory / "fraud.yaml"
    schema_path.write_text(schema, encoding="utf-8")
    return csv_path, schema_path


def load(csv_path: Path, schema_path: Path, **kwargs: float) -> Dataset:
    return load_dataset("csv", path=csv_path, schema=schema_path, **kwargs)  # type: ignore[arg-type]


def all_rows(dataset: Dataset) -> torch.Tensor:
    return torch.cat([dataset.train.x, dataset.val.x, dataset.test.x])


def test_csv_loads_encodes_and_splits(tmp_path: Path) -> None:
    dataset = load(*write_set(tmp_path, good_rows(20)))
    assert dataset.name == "csv" and dataset.kind == "tabular"
    assert dataset.input_shape == (6,)
    assert dataset.classes == ("legit", "fraud")
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (14, 2, 4)
    assert dataset.schema is not None
    assert dataset.schema.columns == [
        "amount",
        "n_items",
        "age",
        "channel=web",
        "channel=store",
        "channel=phone",
    ]
    assert dataset.schema.immutable_mask().tolist() == [False, False, True, False, False, False]
    assert dataset.schema.integer_mask().tolist() == [False, True, False, False, False, False]
    x = all_rows(dataset)
    assert x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    onehot = x[:, 3:]
    assert set(onehot.unique().tolist()) == {0.0, 1.0}
    assert torch.all(onehot.sum(dim=1) == 1)
    # every written row comes back exactly once (as its encoding)
    expected = np.array(
        [
            [i * 300 / 10000, i / 49, (2 * i) / 82] + [float(i % 3 == j) for j in range(3)]
            for i in range(20)
        ],
        dtype=np.float32,
    )
    got = x.numpy()
    np.testing.assert_allclose(got[np.argsort(got[:, 0])], expected, atol=1e-6)
    # stratified: 5 fraud rows of 20 -> 1 in test (20% of 5)
    assert int((dataset.test.y == 1).sum()) == 1
    assert len(dataset.mean) == len(dataset.std) == 6


def test_csv_split_is_seeded_and_fingerprint_identifies_the_data(tmp_path: Path) -> None:
    paths = write_set(tmp_path, good_rows(30))
    first, again, other = load(*paths), load(*paths), load(*paths, seed=3)
    assert torch.equal(first.test.x, again.test.x)
    assert not torch.equal(first.test.x, other.test.x)
    assert first.fingerprint == again.fingerprint == other.fingerprint
    moved = tmp_path / "moved"
    moved.mkdir()
    assert load(*write_set(moved, good_rows(30))).fingerprint == first.fingerprint
    changed = good_rows(30)
    changed[5] = changed[5].replace("1500.0", "1501.0")
    elsewhere = tmp_path / "changed"
    elsewhere.mkdir()
    assert load(*write_set(elsewhere, changed)).fingerprint != first.fingerprint


def test_classes_default_to_sorted_target_values(tmp_path: Path) -> None:
    schema = SCHEMA.replace("classes: [legit, fraud]\n", "")
    rows = [r.replace("fraud", "z-fraud").replace("legit", "a-legit") for r in good_rows(12)]
    csv_path, schema_path = write_set(tmp_path, rows, schema=schema)
    dataset = load(csv_path, schema_path)
    assert dataset.classes == ("a-legit", "z-fraud")
    assert dataset.schema is not None and dataset.schema.classes == ("a-legit", "z-fraud")
    _, y, _ = read_csv_table(csv_path, TabularSchema.from_dict(yaml.safe_load(schema)))
    assert y.tolist() == [1 if i % 4 == 0 else 0 for i in range(12)]


def test_blank_lines_bom_and_whitespace_are_tolerated(tmp_path: Path) -> None:
    rows = good_rows(10)
    rows.insert(3, "\n")
    rows[5] = rows[5].replace(",", " , ")
    csv_path, _ = write_set(tmp_path, rows, header="\ufeff" + HEADER)
    raw, y, _ = read_csv_table(csv_path, TabularSchema.from_dict(yaml.safe_load(SCHEMA)))
    assert raw.shape == (10, 4)
    assert raw[:, 0].tolist() == [i * 300.0 for i in range(10)]
    assert raw[:, 3].tolist() == [float(i % 3) for i in range(10)]
    assert len(y) == 10


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (
            "16,12000.0,3,40,web,legit\n",
            "fraud.csv row 17, column 'amount': value 12000.0 is outside the schema bounds "
            "[0, 10000]",
        ),
        (
            "16,100,3,40,mail,legit\n",
            "fraud.csv row 17, column 'channel': unknown category 'mail' "
            "(expected one of web, store, phone)",
        ),
        ("16,abc,3,40,web,legit\n", "fraud.csv row 17, column 'amount': not a number: 'abc'"),
        ("16,100,3.5,40,web,legit\n", "fraud.csv row 17, column 'n_items': not a whole number"),
        ("16,100,0,40,web,legit\n", "row 17, column 'n_items': value 0.0 is outside"),
        ("16,nan,3,40,web,legit\n", "row 17, column 'amount': not a finite number: 'nan'"),
        ("16,100,3,,web,legit\n", "row 17, column 'age': missing value (empty field)"),
        (
            "16,100,3,40,web,spam\n",
            "fraud.csv row 17, column 'label': unknown class label 'spam' (expected one of legit, "
            "fraud)",
        ),
        ("16,100,3,40,web,\n", "row 17, column 'label': missing class label"),
        (
            "16,100,3,40,web\n",
            "fraud.csv row 17 (line 18): expected 6 fields as in the header, got 5",
        ),
    ],
)
def test_bad_rows_name_the_row_and_column(tmp_path: Path, row: str, expected: str) -> None:
    rows = [*good_rows(16), row, *good_rows(3)]
    with pytest.raises(DataError) as info:
        load(*write_set(tmp_path, rows))
    assert expected in str(info.value)


def test_missing_column_is_named(tmp_path: Path) -> None:
    rows = [",".join(r.split(",")[:3] + r.split(",")[4:]) for r in good_rows(5)]
    csv_path, schema_path = write_set(tmp_path, rows, header="id,amount,n_items,channel,label\n")
    with pytest.raises(DataError, match=r"column 'age' \(schema.features\[2\]\) is missing"):
        load(csv_path, schema_path)
    csv_path.write_text("id,amount,n_items,age,channel\n1,2,3,40,web\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"target column 'label' .* is missing from the header"):
        load(csv_path, schema_path)


def test_non_utf8_bytes_name_the_file_and_offset(tmp_path: Path) -> None:
    csv_path, schema_path = write_set(tmp_path, good_rows(5))
    data = csv_path.read_bytes()
    offset = len(HEADER) + 4
    csv_path.write_bytes(data[:offset] + b"\xff" + data[offset + 1 :])
    with pytest.raises(DataError) as info:
        load(csv_path, schema_path)
    message = str(info.value)
    assert str(csv_path) in message
    assert f"byte offset {offset}" in message
    assert "line 2" in message


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    csv_path, schema_path = write_set(tmp_path, [])
    csv_path.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match=r"fraud\.csv is empty: expected a header row"):
        load(csv_path, schema_path)
    csv_path.write_text(HEADER, encoding="utf-8")
    with pytest.raises(DataError, match=r"fraud\.csv has a header but no data rows"):
        load(csv_path, schema_path)


def test_other_file_errors(tmp_path: Path) -> None:
    csv_path, schema_path = write_set(tmp_path, good_rows(5))
    with pytest.raises(DataError, match=r"CSV file .*nope\.csv does not exist"):
        load(tmp_path / "nope.csv", schema_path)
    csv_path.write_text("a,a,b\n1,2,3\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"header names column\(s\) \['a'\] more than once"):
        load(csv_path, schema_path)
    single = SCHEMA.replace("classes: [legit, fraud]\n", "")
    csv_path, schema_path = write_set(
        tmp_path, [r.replace("fraud", "legit") for r in good_rows(5)], schema=single
    )
    with pytest.raises(DataError, match="holds only the class 'legit'"):
        load(csv_path, schema_path)


# ---------------------------------------------------------- property: CSV load round trip


@st.composite
def csv_cases(draw: st.DrawFn) -> tuple[dict[str, object], list[list[str]], np.ndarray]:
    """A random valid schema dict, CSV cells (strings) and the raw values they encode."""
    n_features = draw(st.integers(min_value=1, max_value=4))
    features: list[dict[str, object]] = []
    for index in range(n_features):
        kind = draw(st.sampled_from(["float", "integer", "categorical"]))
        if kind == "categorical":
            k = draw(st.integers(min_value=1, max_value=3))
            features.append(
                {
                    "name": f"f{index}",
                    "type": kind,
                    "categories": [f"v{j}" for j in range(k)],
                    "immutable": draw(st.booleans()),
                }
            )
        else:
            low = draw(st.integers(min_value=-500, max_value=500))
            high = low + draw(st.integers(min_value=1, max_value=1000))
            features.append({"name": f"f{index}", "type": kind, "min": low, "max": high})
    n_rows = draw(st.integers(min_value=6, max_value=25))
    cells: list[list[str]] = []
    raw = np.zeros((n_rows, n_features))
    for r in range(n_rows):
        row: list[str] = []
        for j, feature in enumerate(features):
            if feature["type"] == "categorical":
                categories = feature["categories"]
                assert isinstance(categories, list)
                index = draw(st.integers(0, len(categories) - 1))
                row.append(categories[index])
                raw[r, j] = index
            else:
                low, high = feature["min"], feature["max"]
                assert isinstance(low, int) and isinstance(high, int)
                if feature["type"] == "integer":
                    value = float(draw(st.integers(low, high)))
                    row.append(str(int(value)))
                else:
                    value = draw(st.floats(min_value=low, max_value=high))
                    row.append(repr(value))
                raw[r, j] = value
        row.append("yes" if r % 2 else "no")
        cells.append(row)
    schema = {"target": "label", "classes": ["no", "yes"], "features": features}
    return schema, cells, raw


@settings(max_examples=40, deadline=None, database=None)
@given(csv_cases())
def test_property_random_valid_csv_loads_and_round_trips(
    case: tuple[dict[str, object], list[list[str]], np.ndarray],
) -> None:
    schema_dict, cells, raw = case
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        schema_path = root / "schema.json"
        schema_path.write_text(json.dumps(schema_dict), encoding="utf-8")
        names = [str(f["name"]) for f in schema_dict["features"]]  # type: ignore[attr-defined]
        csv_path = root / "data.csv"
        csv_path.write_text(
            ",".join([*names, "label"]) + "\n" + "".join(",".join(r) + "\n" for r in cells),
            encoding="utf-8",
        )
        dataset = load_dataset("csv", path=csv_path, schema=schema_path, seed=1)
    schema = dataset.schema
    assert schema is not None
    n = len(cells)
    assert len(dataset.train) + len(dataset.val) + len(dataset.test) == n
    x = all_rows(dataset).numpy()
    assert x.shape == (n, len(schema.columns))
    assert np.all((x >= 0) & (x <= 1))
    expected = schema.to_unit(raw).astype(np.float32)
    np.testing.assert_array_equal(x[np.lexsort(x.T)], expected[np.lexsort(expected.T)])
    decoded = schema.from_unit(x)
    decoded_expected = schema.from_unit(expected)
    np.testing.assert_array_equal(
        decoded[np.lexsort(decoded.T)], decoded_expected[np.lexsort(decoded_expected.T)]
    )
    spans = np.array(
        [
            1.0 if f.min is None else f.max - f.min  # type: ignore[operator]
            for f in schema.features
        ]
    )
    assert np.all(np.abs(np.sort(decoded, axis=0) - np.sort(raw, axis=0)) <= 1e-6 * spans + 1e-9)
    y = torch.cat([dataset.train.y, dataset.val.y, dataset.test.y])
    assert int(y.sum()) == n // 2


# ---------------------------------------------------------------------- breast cancer


def test_breast_cancer_shapes_bounds_and_schema() -> None:
    from sklearn.datasets import load_breast_cancer

    dataset = load_dataset("breast-cancer")
    assert dataset.kind == "tabular"
    assert dataset.input_shape == (30,)
    assert dataset.classes == ("malignant", "benign")
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (398, 57, 114)
    x = all_rows(dataset)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.all(x.min(dim=0).values == 0) and torch.all(x.max(dim=0).values == 1)
    schema = dataset.schema
    assert schema is not None
    raw = load_breast_cancer().data
    assert schema.feature_names[0] == "mean radius"
    assert schema.features[0] == FeatureSpec(
        "mean radius", "float", raw[:, 0].min(), raw[:, 0].max()
    )
    np.testing.assert_allclose(schema.from_unit(schema.to_unit(raw)), raw, rtol=1e-12)
    assert not bool(schema.immutable_mask().any())
    test_malignant = int((dataset.test.y == 0).sum())
    assert test_malignant == round(0.2 * 212)  # stratified: 212 of 569 rows are malignant
