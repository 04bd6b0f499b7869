"""MNIST: directory resolution, file validation, splitting, and checks on the real files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch

import shared_data
from bastion.data import Dataset, load_dataset
from bastion.data.mnist import load_mnist, resolve_mnist_dir
from bastion.errors import DataError

MnistWriter = Callable[..., Path]
REAL_MNIST = shared_data.MNIST


def image_ids(x: torch.Tensor) -> npt.NDArray[np.int64]:
    """Indices encoded in the first two pixels by the conftest's synthetic images."""
    pixels = np.rint(x[:, 0, 0, :2].numpy() * 255).astype(np.int64)
    return pixels[:, 0] + 256 * pixels[:, 1]


# ------------------------------------------------------------------ directory resolution


def test_no_directory_and_no_env_var_explains_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BASTION_DATA", raising=False)
    with pytest.raises(DataError) as info:
        load_dataset("mnist")
    message = str(info.value)
    assert "--data-dir" in message
    assert "BASTION_DATA" in message
    assert "bastion data download mnist --dest DIR" in message


def test_missing_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist") as info:
        load_dataset("mnist", data_dir=missing)
    assert str(missing) in str(info.value)


def test_missing_file_is_named(tmp_path: Path, write_mnist: MnistWriter) -> None:
    directory = write_mnist(tmp_path / "m")
    (directory / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir=directory)
    assert str(directory / "t10k-labels-idx1-ubyte.gz") in str(info.value)
    assert "bastion data download mnist" in str(info.value)


def test_env_var_is_used_when_no_data_dir(
    tmp_path: Path, write_mnist: MnistWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = write_mnist(tmp_path / "data")
    monkeypatch.setenv("BASTION_DATA", str(directory))
    assert resolve_mnist_dir(None) == directory
    other = write_mnist(tmp_path / "explicit")
    assert resolve_mnist_dir(other) == other  # data_dir wins over the env var


def test_mnist_subdirectory_rule(
    tmp_path: Path, write_mnist: MnistWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    write_mnist(root / "mnist")
    assert resolve_mnist_dir(root) == root / "mnist"
    monkeypatch.setenv("BASTION_DATA", str(root))
    assert resolve_mnist_dir(None) == root / "mnist"
    dataset = load_mnist(None, expect_official_counts=False)
    assert len(dataset.test) == 20


def test_files_in_the_directory_itself_win_over_the_subdirectory(
    tmp_path: Path, write_mnist: MnistWriter
) -> None:
    root = write_mnist(tmp_path / "data", n_train=30)
    write_mnist(root / "mnist", n_train=40)
    assert resolve_mnist_dir(root) == root
    assert len(load_mnist(root, val_fraction=0, expect_official_counts=False).train) == 30


def test_uncompressed_file_names_are_accepted(tmp_path: Path, write_mnist: MnistWriter) -> None:
    directory = write_mnist(tmp_path / "raw", compress=False)
    assert not list(directory.glob("*.gz"))
    dataset = load_mnist(directory, expect_official_counts=False)
    assert len(dataset.train) + len(dataset.val) == 50


# ------------------------------------------------------------------------- validation


def test_real_loader_rejects_an_unofficial_train_size(
    tmp_path: Path, write_mnist: MnistWriter
) -> None:
    directory = write_mnist(tmp_path / "small", n_train=1000, n_test=10)
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir=directory)
    message = str(info.value)
    assert "expected the official 60000 train images, got 1000" in message
    assert str(directory / "train-images-idx3-ubyte.gz") in message


def test_image_and_label_counts_must_match(tmp_path: Path, write_mnist: MnistWriter) -> None:
    labels = np.zeros(49, dtype=np.uint8)
    directory = write_mnist(tmp_path / "m", overrides={"train-labels-idx1-ubyte": labels})
    with pytest.raises(DataError, match=r"holds 50 images but .* holds 49 labels"):
        load_mnist(directory, expect_official_counts=False)


def test_labels_must_be_digits(tmp_path: Path, write_mnist: MnistWriter) -> None:
    labels = (np.arange(20) % 10).astype(np.uint8)
    labels[7] = 10
    directory = write_mnist(tmp_path / "m", overrides={"t10k-labels-idx1-ubyte": labels})
    with pytest.raises(DataError, match=r"expected labels in 0\.\.9, got 10 at index 7") as info:
        load_mnist(directory, expect_official_counts=False)
    assert "t10k-labels-idx1-ubyte.gz" in str(info.value)


def test_images_must_be_28_by_28(tmp_path: Path, write_mnist: MnistWriter) -> None:
    images = np.zeros((50, 28, 27), dtype=np.uint8)
    directory = write_mnist(tmp_path / "m", overrides={"train-images-idx3-ubyte": images})
    with pytest.raises(DataError, match=r"shape \(N, 28, 28\), got \(50, 28, 27\)"):
        load_mnist(directory, expect_official_counts=False)


def test_wrong_value_type_is_rejected(tmp_path: Path, write_mnist: MnistWriter) -> None:
    images = np.zeros((50, 28, 28), dtype=np.float32)
    directory = write_mnist(tmp_path / "m", overrides={"train-images-idx3-ubyte": images})
    with pytest.raises(DataError, match="expected unsigned byte values"):
        load_mnist(directory, expect_official_counts=False)


def test_truncated_file_error_is_prefixed_and_names_the_file(
    tmp_path: Path, write_mnist: MnistWriter
) -> None:
    directory = write_mnist(tmp_path / "m", compress=False)
    path = directory / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"^mnist: file .* is truncated") as info:
        load_mnist(directory, expect_official_counts=False)
    assert str(path) in str(info.value)


# -------------------------------------------------------------------------- splitting


def test_synthetic_split_contents(tmp_path: Path, write_mnist: MnistWriter) -> None:
    directory = write_mnist(tmp_path / "m", n_train=200, n_test=30)
    dataset = load_mnist(directory, seed=3, val_fraction=0.25, expect_official_counts=False)
    assert dataset.kind == "image"
    assert dataset.input_shape == (1, 28, 28)
    assert dataset.classes == tuple("0123456789")
    assert len(dataset.val) == 50
    assert len(dataset.train) == 150
    train_ids, val_ids = image_ids(dataset.train.x), image_ids(dataset.val.x)
    assert sorted([*train_ids, *val_ids]) == list(range(200))
    assert np.all(np.diff(train_ids) > 0) and np.all(np.diff(val_ids) > 0)  # official order
    np.testing.assert_array_equal(dataset.train.y.numpy(), train_ids % 10)
    np.testing.assert_array_equal(image_ids(dataset.test.x), np.arange(1000, 1030))
    np.testing.assert_array_equal(dataset.test.y.numpy(), (np.arange(30) * 3) % 10)
    assert float(dataset.test.x[0, 0, 14, 14]) == 1.0  # 255 / 255


def test_val_subset_is_seeded_and_fingerprint_is_not(
    tmp_path: Path, write_mnist: MnistWriter
) -> None:
    directory = write_mnist(tmp_path / "m", n_train=100)
    first = load_mnist(directory, seed=0, expect_official_counts=False)
    again = load_mnist(directory, seed=0, expect_official_counts=False)
    other = load_mnist(directory, seed=1, expect_official_counts=False)
    assert len(first.val) == 10
    assert image_ids(first.val.x).tolist() == image_ids(again.val.x).tolist()
    assert image_ids(first.val.x).tolist() != image_ids(other.val.x).tolist()
    assert first.fingerprint == again.fingerprint == other.fingerprint


def test_fingerprint_changes_with_the_data(tmp_path: Path, write_mnist: MnistWriter) -> None:
    base = load_mnist(write_mnist(tmp_path / "a"), expect_official_counts=False)
    labels = ((np.arange(20) * 3) % 10).astype(np.uint8)
    labels[0] = (labels[0] + 1) % 10
    changed_dir = write_mnist(tmp_path / "b", overrides={"t10k-labels-idx1-ubyte": labels})
    changed = load_mnist(changed_dir, expect_official_counts=False)
    assert base.fingerprint != changed.fingerprint


def test_test_fraction_is_ignored_for_mnist(tmp_path: Path, write_mnist: MnistWriter) -> None:
    directory = write_mnist(tmp_path / "m")
    with pytest.raises(DataError, match="val_fraction"):
        load_dataset("mnist", data_dir=directory, val_fraction=1.0)
    with pytest.raises(DataError, match="official 60000"):  # test_fraction=0.95 not rejected
        load_dataset("mnist", data_dir=directory, test_fraction=0.95)


# ------------------------------------------------------------------------ real MNIST


@pytest.fixture(scope="module")
def real_mnist() -> Dataset:
    if not all(
        (REAL_MNIST / f"{stem}.gz").is_file()
        for stem in (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        )
    ):
        pytest.skip(f"real MNIST files not found in {REAL_MNIST}")
    return load_dataset("mnist", data_dir=REAL_MNIST)


def test_real_mnist_shapes_and_values(real_mnist: Dataset) -> None:
    assert (len(real_mnist.train), len(real_mnist.val), len(real_mnist.test)) == (
        54000,
        6000,
        10000,
    )
    for split in (real_mnist.train, real_mnist.val, real_mnist.test):
        assert split.x.dtype == torch.float32
        assert split.y.dtype == torch.int64
        assert split.x.shape[1:] == (1, 28, 28)
        assert float(split.x.min()) == 0.0
        assert float(split.x.max()) == 1.0
    assert real_mnist.input_shape == (1, 28, 28)
    assert real_mnist.bounds == (0.0, 1.0)
    assert real_mnist.mean[0] == pytest.approx(0.1307, abs=1e-3)
    assert real_mnist.std[0] == pytest.approx(0.3081, abs=1e-3)


def test_real_mnist_official_test_set(real_mnist: Dataset) -> None:
    counts = torch.bincount(real_mnist.test.y, minlength=10).tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert real_mnist.test.y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    train_counts = torch.bincount(real_mnist.train.y, minlength=10)
    val_counts = torch.bincount(real_mnist.val.y, minlength=10)
    expected = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert (train_counts + val_counts).tolist() == expected


def test_real_mnist_fingerprint_is_stable_and_seed_independent(real_mnist: Dataset) -> None:
    other = load_dataset("mnist", data_dir=REAL_MNIST, seed=1)
    assert other.fingerprint == real_mnist.fingerprint
    assert torch.equal(other.test.x, real_mnist.test.x)
    assert not torch.equal(other.val.y, real_mnist.val.y)
