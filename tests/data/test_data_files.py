"""A team's own data: image folders and .npz archives, split and fingerprinted like the rest,
through load_dataset, a run config and the split recorded with the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from bastion.cli import main
from bastion.data import load_dataset
from bastion.errors import DataError


def _folder(root: Path, *, sizes: tuple[int, int] = (10, 12), mode: str = "L") -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(["cat", "dog", "emu"]):
        (root / name).mkdir(parents=True)
        for i in range(12):
            shape = (sizes[0], sizes[1]) if mode == "L" else (sizes[0], sizes[1], 3)
            base = rng.integers(0, 60, size=shape) + 80 * c
            Image.fromarray(base.astype(np.uint8), mode=None).save(root / name / f"{i}.png")
    return root


def test_image_folder_loads_splits_and_fingerprints(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs")
    ds = load_dataset("image-folder", path=root, seed=0)
    assert ds.classes == ("cat", "dog", "emu") and ds.input_shape == (1, 10, 12)
    assert len(ds.train) + len(ds.val) + len(ds.test) == 36
    assert float(ds.train.x.min()) >= 0.0 and float(ds.train.x.max()) <= 1.0
    again = load_dataset("image-folder", path=root, seed=1)
    assert again.fingerprint == ds.fingerprint and again.split_digest() != ds.split_digest()
    resized = load_dataset("image-folder", path=root, image_size=(8, 8), channels=3)
    assert resized.input_shape == (3, 8, 8)


def test_image_folder_bad_input(tmp_path: Path) -> None:
    root = _folder(tmp_path / "imgs")
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(root / "cat" / "small.png")
    with pytest.raises(DataError, match=r"set data\.image_size"):
        load_dataset("image-folder", path=root)
    assert load_dataset("image-folder", path=root, image_size=(10, 12)).input_shape == (1, 10, 12)
    (root / "dog" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"broken\.png: not a readable image"):
        load_dataset("image-folder", path=root, image_size=(10, 12))
    with pytest.raises(DataError, match="path required"):
        load_dataset("image-folder")
    with pytest.raises(DataError, match="not a directory"):
        load_dataset("image-folder", path=tmp_path / "nope")


def test_npz_archives(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    x = (rng.random((60, 1, 6, 6)) * 255).astype(np.uint8)
    np.savez(tmp_path / "a.npz", x=x, y=y, classes=np.array(["a", "b", "c"]))
    ds = load_dataset("npz", path=tmp_path / "a.npz")
    assert ds.kind == "image" and ds.classes == ("a", "b", "c") and ds.input_shape == (1, 6, 6)
    np.savez(tmp_path / "t.npz", x=rng.random((60, 4)).astype(np.float32), y=y)
    assert load_dataset("npz", path=tmp_path / "t.npz").input_shape == (4,)
    np.savez(tmp_path / "wide.npz", x=rng.random((60, 4)) * 3, y=y)
    with pytest.raises(DataError, match=r"values in \[0, 1\]"):
        load_dataset("npz", path=tmp_path / "wide.npz")
    np.savez(tmp_path / "nox.npz", y=y)
    with pytest.raises(DataError, match="missing array 'x'"):
        load_dataset("npz", path=tmp_path / "nox.npz")
    objects = np.empty(60, dtype=object)
    np.savez(tmp_path / "pickled.npz", x=objects, y=y)
    with pytest.raises(DataError, match="without pickles"):
        load_dataset("npz", path=tmp_path / "pickled.npz")


def test_a_run_on_an_image_folder_and_an_attack_on_its_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _folder(tmp_path / "imgs")
    cfg = {
        "name": "folder",
        "threads": 1,
        "data": {"name": "image-folder", "path": str(root), "image_size": [8, 8]},
        "threat": {"norm": "linf", "eps": 0.1},
        "model": {"architecture": "mlp"},
        "training": {"epochs": 2, "batch_size": 16, "val_examples": 4, "val_pgd_steps": 1},
        "models": [{"name": "m", "objective": {"name": "standard"}}],
        "evaluation": {"attacks": [{"name": "fgsm"}], "calibration": None, "latency": None},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "runs"), "-q"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    capsys.readouterr()
    assert main(["attack", str(run / "models" / "m"), "--attack", "fgsm"]) == 0
    assert "test examples of image-folder" in " ".join(capsys.readouterr().out.split())


FACTORY = """
import torch
from torch.utils.data import Dataset


class Blobs(Dataset):
    classes = ["low", "high"]

    def __init__(self, n=60):
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 5, generator=g)
        self.y = (self.x[:, 0] > 0.5).long()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def build(n=60):
    return Blobs(n)
"""


def test_a_dataset_factory_in_a_run_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "teamdata.py").write_text(FACTORY)
    ds = load_dataset("factory", factory="teamdata:build", python_path=[tmp_path])
    assert ds.classes == ("low", "high") and ds.input_shape == (5,) and ds.kind == "tabular"
    with pytest.raises(DataError, match="factory: cannot import 'nope'"):
        load_dataset("factory", factory="nope:build")
    with pytest.raises(DataError, match="only used by the 'factory' data set"):
        load_dataset("digits", factory="teamdata:build")
    cfg = {
        "name": "factory",
        "threads": 1,
        "data": {"name": "factory", "factory": "teamdata:build", "kwargs": {"n": 80}},
        "threat": {"norm": "linf", "eps": 0.05},
        "model": {"architecture": "tabular-mlp"},
        "training": {"epochs": 2, "batch_size": 16, "val_examples": 4, "val_pgd_steps": 1},
        "models": [{"name": "m", "objective": {"name": "standard"}}],
        "evaluation": {
            "attacks": [{"name": "fgsm"}],
            "calibration": None,
            "latency": None,
            "sanity_checks": "off",
        },
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "runs"), "-q"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    capsys.readouterr()
    assert main(["attack", str(run / "models" / "m"), "--attack", "fgsm"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "on 16 test examples of factory" in out
