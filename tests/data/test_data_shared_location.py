"""The tests find the real data sets through ``$BASTION_DATA`` as the product does."""

from __future__ import annotations

from pathlib import Path

from shared_data import ROOT, datasets_root, mnist_dir


def test_bastion_data_is_honoured(tmp_path: Path) -> None:
    assert datasets_root({"BASTION_DATA": str(tmp_path)}) == tmp_path
    assert mnist_dir({"BASTION_DATA": str(tmp_path)}) == tmp_path / "mnist"
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"")
    assert mnist_dir({"BASTION_DATA": str(tmp_path)}) == tmp_path  # the MNIST files themselves


def test_default_is_the_shared_folder_beside_the_project() -> None:
    assert datasets_root({}) == ROOT.parent / "shared" / "datasets"
    assert mnist_dir({}) == ROOT.parent / "shared" / "datasets" / "mnist"
