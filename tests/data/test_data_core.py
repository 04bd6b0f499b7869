"""Dataset/Split containers, fingerprints, statistics, stratified splits and the digits set."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from bastion.data import Dataset, Split, available_datasets, fingerprint_arrays, load_dataset
from bastion.data.core import feature_stats, stratified_indices
from bastion.errors import DataError

# ------------------------------------------------------------------------------- digits


def test_digits_shapes_values_and_summary() -> None:
    dataset = load_dataset("digits")
    assert dataset.name == "digits"
    assert dataset.kind == "image"
    assert dataset.input_shape == (1, 8, 8)
    assert dataset.classes == tuple(str(d) for d in range(10))
    assert dataset.num_classes == 10
    assert dataset.bounds == (0.0, 1.0)
    assert dataset.schema is None
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (1258, 180, 359)
    for split in (dataset.train, dataset.val, dataset.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (1, 8, 8)
        assert float(split.x.min()) >= 0.0 and float(split.x.max()) <= 1.0
        assert torch.all(split.x * 16 == torch.round(split.x * 16))  # intensities / 16
    summary = dataset.summary()
    assert json.loads(json.dumps(summary)) == {
        "name": "digits",
        "kind": "image",
        "fingerprint": dataset.fingerprint,
        "n_train": 1258,
        "n_val": 180,
        "n_test": 359,
        "input_shape": [1, 8, 8],
        "classes": [str(d) for d in range(10)],
    }


def test_digits_statistics_come_from_the_train_split() -> None:
    dataset = load_dataset("digits", seed=5)
    train = dataset.train.x.double()
    assert dataset.mean == pytest.approx((float(train.mean()),), rel=1e-9)
    assert dataset.std == pytest.approx((float(train.std(correction=0)),), rel=1e-9)


def test_digits_split_is_deterministic_by_seed() -> None:
    first = load_dataset("digits", seed=0)
    again = load_dataset("digits", seed=0)
    other = load_dataset("digits", seed=1)
    for name in ("train", "val", "test"):
        a, b = getattr(first, name), getattr(again, name)
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(first.test.x, other.test.x)
    assert first.fingerprint == again.fingerprint == other.fingerprint
    assert len(first.fingerprint) == 64


def test_digits_split_is_stratified() -> None:
    dataset = load_dataset("digits", val_fraction=0.15, test_fraction=0.25)
    totals = torch.zeros(10, dtype=torch.int64)
    for split in (dataset.train, dataset.val, dataset.test):
        totals += torch.bincount(split.y, minlength=10)
    test_counts = torch.bincount(dataset.test.y, minlength=10)
    for c in range(10):
        assert abs(int(test_counts[c]) - 0.25 * int(totals[c])) < 1.0 + 1e-9
    val_counts = torch.bincount(dataset.val.y, minlength=10).double()
    val_share = val_counts / (totals - test_counts).double()
    assert float(val_share.max() - val_share.min()) < 0.02


def test_loading_does_not_touch_global_rngs() -> None:
    torch_state = torch.random.get_rng_state().clone()
    numpy_state = np.random.get_state()[1].copy()  # type: ignore[index]
    load_dataset("digits", seed=11)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state)  # type: ignore[index]


@pytest.mark.parametrize(
    ("val_fraction", "test_fraction", "field"),
    [
        (-0.1, 0.2, "val_fraction"),
        (1.0, 0.2, "val_fraction"),
        (math.nan, 0.2, "val_fraction"),
        (0.1, 0.0, "test_fraction"),
        (0.1, 1.0, "test_fraction"),
        (0.1, -0.5, "test_fraction"),
        (0.5, 0.5, "val_fraction + test_fraction"),
        (0.7, 0.4, "val_fraction + test_fraction"),
    ],
)
def test_bad_fractions_name_the_field(
    val_fraction: float, test_fraction: float, field: str
) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("digits", val_fraction=val_fraction, test_fraction=test_fraction)
    assert str(info.value).startswith(f"{field}: expected")


def test_numpy_scalar_fractions_are_accepted() -> None:
    dataset = load_dataset("digits", val_fraction=np.float32(0.25), test_fraction=np.float64(0.25))
    assert (len(dataset.val), len(dataset.test)) == (449, 449)


def test_zero_val_fraction_gives_an_empty_val_split() -> None:
    dataset = load_dataset("digits", val_fraction=0.0)
    assert len(dataset.val) == 0
    assert dataset.val.x.shape == (0, 1, 8, 8)
    assert len(dataset.train) + len(dataset.test) == 1797


@pytest.mark.parametrize("seed", [-1, True, 1.5])
def test_bad_seed(seed: object) -> None:
    with pytest.raises(DataError, match="seed: expected a non-negative integer"):
        load_dataset("digits", seed=seed)  # type: ignore[arg-type]


def test_unknown_name_lists_available_sets() -> None:
    assert available_datasets() == (
        "breast-cancer",
        "csv",
        "digits",
        "factory",
        "image-folder",
        "mnist",
        "npz",
    )
    with pytest.raises(DataError) as info:
        load_dataset("cifar10")
    assert "'cifar10'" in str(info.value)
    assert "breast-cancer, csv, digits, factory, image-folder, mnist, npz" in str(info.value)


def test_csv_arguments_are_rejected_for_other_sets() -> None:
    with pytest.raises(DataError, match="path: only used by the csv, image-folder, npz"):
        load_dataset("digits", path="x.csv")
    with pytest.raises(DataError, match="schema: only used by the 'csv' data set"):
        load_dataset("npz", path="x.npz", schema="s.yaml")
    with pytest.raises(DataError, match="csv: schema required"):
        load_dataset("csv", path="x.csv")


# ------------------------------------------------------------------------- containers


def _split(n: int) -> Split:
    return Split(torch.rand(n, 3), torch.arange(n) % 2)


def test_split_subset() -> None:
    split = _split(10)
    assert len(split) == 10
    assert split.subset(10) is split
    assert split.subset(25) is split
    head = split.subset(4)
    assert len(head) == 4
    assert torch.equal(head.x, split.x[:4]) and torch.equal(head.y, split.y[:4])
    assert len(split.subset(0)) == 0
    with pytest.raises(DataError, match="non-negative integer"):
        split.subset(-1)


def test_split_validates_dtypes_and_lengths() -> None:
    with pytest.raises(DataError, match=r"Split\.x: expected a float32 tensor"):
        Split(torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(DataError, match=r"Split\.y: expected an int64 tensor"):
        Split(torch.zeros(3, 2), torch.zeros(3, dtype=torch.int32))
    with pytest.raises(DataError, match="to match 3 labels"):
        Split(torch.zeros(4, 2), torch.zeros(3, dtype=torch.int64))


def _dataset(train: Split, **overrides: object) -> Dataset:
    fields: dict[str, object] = {
        "name": "toy",
        "kind": "tabular",
        "train": train,
        "val": _split(0),
        "test": _split(2),
        "input_shape": (3,),
        "classes": ("a", "b"),
        "bounds": (0.0, 1.0),
        "mean": (0.5, 0.5, 0.5),
        "std": (0.3, 0.3, 0.3),
        "fingerprint": "0" * 64,
    }
    fields.update(overrides)
    return Dataset(**fields)  # type: ignore[arg-type]


def test_dataset_guarantees_are_checked() -> None:
    assert _dataset(_split(5)).num_classes == 2
    with pytest.raises(DataError, match=r"train.x: expected values inside the bounds"):
        _dataset(Split(torch.full((2, 3), 1.5), torch.zeros(2, dtype=torch.int64)))
    with pytest.raises(DataError, match=r"train.y: expected class indices in 0..1"):
        _dataset(Split(torch.zeros(2, 3), torch.tensor([0, 2])))
    with pytest.raises(DataError, match="std: expected positive values"):
        _dataset(_split(5), std=(0.3, 0.0, 0.3))
    with pytest.raises(DataError, match="mean: expected 3 finite values"):
        _dataset(_split(5), mean=(0.5,))
    with pytest.raises(DataError, match=r"test.x: expected shape \(N, 3\)"):
        _dataset(_split(5), test=Split(torch.zeros(2, 4), torch.zeros(2, dtype=torch.int64)))


# ----------------------------------------------------------------------- fingerprints


def test_fingerprint_covers_name_dtype_shape_and_content() -> None:
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    b = np.zeros(5, dtype=np.uint8)
    base = fingerprint_arrays("set", [a, b])
    assert base == fingerprint_arrays("set", [a.copy(), b.copy()])
    assert base != fingerprint_arrays("other", [a, b])
    assert base != fingerprint_arrays("set", [a.reshape(4, 3), b])
    assert base != fingerprint_arrays("set", [a.view(np.float32), b])
    changed = a.copy()
    changed[2, 3] += 1
    assert base != fingerprint_arrays("set", [changed, b])
    assert base != fingerprint_arrays("set", [b, a])
    assert base != fingerprint_arrays("set", [a])
    # Array boundaries matter: the same bytes split differently give a different digest.
    joined = np.arange(6, dtype=np.uint8)
    assert fingerprint_arrays("s", [joined[:2], joined[2:]]) != fingerprint_arrays(
        "s", [joined[:3], joined[3:]]
    )
    # Layout does not: a non-contiguous view hashes like its contiguous copy.
    assert fingerprint_arrays("s", [a.T]) == fingerprint_arrays("s", [np.ascontiguousarray(a.T)])


def test_fingerprint_rejects_object_arrays() -> None:
    with pytest.raises(DataError, match=r"arrays\[0\]: expected a numeric array"):
        fingerprint_arrays("s", [np.array(["a", None], dtype=object)])


# ------------------------------------------------------------------ stats and splits


def test_feature_stats_match_numpy_over_many_chunks() -> None:
    rng = np.random.default_rng(0)
    loc, scale = [[3.0], [-1.0], [0.0]], [[2.0], [0.5], [0.0]]
    x = rng.normal(loc=loc, scale=scale, size=(2000, 3, 700)).astype(np.float32)
    mean, std = feature_stats(torch.from_numpy(x))
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(axis=(0, 2)), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(std[:2], x64.std(axis=(0, 2))[:2], rtol=1e-10)
    assert std[2] == 1.0  # a constant channel gets std 1.0, never 0


def test_stratified_indices_are_disjoint_complete_and_proportional() -> None:
    y = np.repeat(np.arange(3), [50, 30, 7]).astype(np.int64)
    train, val, test = stratified_indices(y, 3, val_fraction=0.1, test_fraction=0.2, seed=4)
    assert len(test) == round(0.2 * 87) and len(val) == round(0.1 * 87)
    assert sorted([*train, *val, *test]) == list(range(87))
    for part, fraction in ((test, 0.2), (val, 0.1)):
        counts = np.bincount(y[part], minlength=3)
        assert np.all(np.abs(counts - fraction * np.array([50, 30, 7])) <= 1.0)
    again = stratified_indices(y, 3, val_fraction=0.1, test_fraction=0.2, seed=4)
    for one, two in zip((train, val, test), again, strict=True):
        np.testing.assert_array_equal(one, two)


def test_stratified_indices_need_training_data() -> None:
    y = np.array([0, 1, 0], dtype=np.int64)
    with pytest.raises(DataError, match="leave no training data"):
        stratified_indices(y, 2, val_fraction=0.4, test_fraction=0.5, seed=0)
