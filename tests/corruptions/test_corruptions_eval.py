"""Accuracy on the corruption suite and the mean corruption error."""

from __future__ import annotations

import json

import pytest
import torch
from torch import Tensor, nn

from bastion.corruptions import (
    CORRUPTIONS,
    CorruptionAccuracy,
    corruption_accuracy,
    corruption_errors,
    mean_corruption_error,
    relative_corruption_errors,
    relative_mean_corruption_error,
)
from bastion.data import Dataset
from bastion.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def suite(digits_cnn: nn.Module, digits_corr: Dataset) -> CorruptionAccuracy:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return corruption_accuracy(
            digits_cnn, digits_corr.test.x, digits_corr.test.y, seed=0, batch_size=128
        )
    finally:
        torch.set_num_threads(old)


def test_accuracy_table_covers_every_cell(suite: CorruptionAccuracy) -> None:
    assert set(suite.accuracy) == set(CORRUPTIONS)
    for row in suite.accuracy.values():
        assert sorted(row) == [1, 2, 3, 4, 5]
        assert all(0.0 <= a <= 1.0 for a in row.values())
    assert suite.clean_accuracy > 0.85
    cells = [a for row in suite.accuracy.values() for a in row.values()]
    assert suite.mean_accuracy == pytest.approx(sum(cells) / len(cells))
    assert suite.per_corruption["rotation"] == pytest.approx(
        sum(suite.accuracy["rotation"].values()) / 5
    )
    assert suite.errors["shift"][2] == pytest.approx(1 - suite.accuracy["shift"][2])
    assert suite.clean_error == pytest.approx(1 - suite.clean_accuracy)
    d = suite.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["params"]["rotation"]["5"] == {"degrees": 30.0}


def test_accuracy_falls_with_severity(suite: CorruptionAccuracy) -> None:
    by_sev = suite.per_severity
    assert by_sev[5] < by_sev[3] < by_sev[1] <= suite.clean_accuracy + 0.01
    assert suite.mean_accuracy < suite.clean_accuracy
    falling = sum(row[5] < row[1] for row in suite.accuracy.values())
    assert falling >= len(suite.accuracy) - 2  # mild corruptions of 8x8 digits may tie


def test_cells_are_reproducible_and_independent(
    suite: CorruptionAccuracy, digits_cnn: nn.Module, digits_corr: Dataset
) -> None:
    x, y = digits_corr.test.x, digits_corr.test.y
    alone = corruption_accuracy(
        digits_cnn, x, y, names=["gaussian_noise", "elastic"], severities=[2, 5], batch_size=7
    )
    for name in ("gaussian_noise", "elastic"):
        for s in (2, 5):
            assert alone.accuracy[name][s] == suite.accuracy[name][s]
    other = corruption_accuracy(digits_cnn, x, y, names=["gaussian_noise"], seed=1)
    assert other.accuracy["gaussian_noise"] != suite.accuracy["gaussian_noise"]
    assert other.seed == 1


def test_model_mode_is_restored(digits_cnn: nn.Module, digit_images: Tensor) -> None:
    y = torch.zeros(digit_images.shape[0], dtype=torch.int64)
    digits_cnn.train()
    try:
        corruption_accuracy(digits_cnn, digit_images, y, names=["contrast"], severities=[1])
        assert digits_cnn.training
    finally:
        digits_cnn.eval()


def test_flat_inputs_run_the_noise_corruptions() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(300, 5, generator=g)
    y = (x[:, 0] > 0.5).long()
    model = nn.Linear(5, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0, 0, 0, 0], [-1.0, 0, 0, 0, 0]]))
        model.bias.copy_(torch.tensor([-0.5, 0.5]))
    y = 1 - y  # class 0 when x0 > 0.5
    res = corruption_accuracy(model, x, y)
    assert res.clean_accuracy == 1.0
    assert sorted(res.accuracy) == [
        "gaussian_noise",
        "impulse_noise",
        "shot_noise",
        "speckle_noise",
    ]
    assert res.accuracy["gaussian_noise"][5] < res.accuracy["gaussian_noise"][1] < 1.0
    with pytest.raises(ConfigError, match="needs images"):
        corruption_accuracy(model, x, y, names=["rotation"])


def test_bad_arguments(digits_cnn: nn.Module, digit_images: Tensor) -> None:
    x = digit_images
    y = torch.zeros(x.shape[0], dtype=torch.int64)
    with pytest.raises(ConfigError, match=r"corruption\.names\[1\]: unknown corruption 'snow'"):
        corruption_accuracy(digits_cnn, x, y, names=["shift", "snow"])
    with pytest.raises(ConfigError, match=r"corruption\.severities\[0\]: expected an integer"):
        corruption_accuracy(digits_cnn, x, y, severities=[0])
    with pytest.raises(ConfigError, match=r"corruption\.batch_size"):
        corruption_accuracy(digits_cnn, x, y, batch_size=0)
    with pytest.raises(ConfigError, match=r"corruption\.seed"):
        corruption_accuracy(digits_cnn, x, y, seed=-1)
    with pytest.raises(ConfigError, match="no examples"):
        corruption_accuracy(digits_cnn, x[:0], y[:0])
    with pytest.raises(DataError, match=r"y: expected integer labels of shape \(200,\)"):
        corruption_accuracy(digits_cnn, x, y[:10])


# -- mCE --------------------------------------------------------------------------------------
MODEL = {"a": {1: 0.2, 2: 0.4}, "b": {1: 0.1, 2: 0.3}}
BASE = {"a": {1: 0.4, 2: 0.6}, "b": {1: 0.2, 2: 0.2}}


def test_mce_by_hand() -> None:
    # CE_a = (0.2 + 0.4) / (0.4 + 0.6) = 0.6; CE_b = (0.1 + 0.3) / (0.2 + 0.2) = 1.0
    ce = corruption_errors(MODEL, BASE)
    assert ce == pytest.approx({"a": 0.6, "b": 1.0})
    assert mean_corruption_error(MODEL, BASE) == pytest.approx(0.8)
    # relative, clean errors 0.05 (model) and 0.1 (baseline):
    # a: (0.15 + 0.35) / (0.3 + 0.5) = 0.625; b: (0.05 + 0.25) / (0.1 + 0.1) = 1.5
    rel = relative_corruption_errors(MODEL, BASE, clean_error_model=0.05, clean_error_baseline=0.1)
    assert rel == pytest.approx({"a": 0.625, "b": 1.5})
    got = relative_mean_corruption_error(
        MODEL, BASE, clean_error_model=0.05, clean_error_baseline=0.1
    )
    assert got == pytest.approx(1.0625)


def test_model_against_itself_scores_one(suite: CorruptionAccuracy) -> None:
    assert mean_corruption_error(suite, suite) == pytest.approx(1.0)
    assert mean_corruption_error(suite.errors, suite.errors) == pytest.approx(1.0)
    degrading = {
        n: row for n, row in suite.errors.items() if sum(row.values()) > 5 * suite.clean_error
    }
    assert relative_mean_corruption_error(
        degrading,
        degrading,
        clean_error_model=suite.clean_error,
        clean_error_baseline=suite.clean_error,
    ) == pytest.approx(1.0)


def test_mce_errors() -> None:
    with pytest.raises(ConfigError, match=r"errors_baseline: corruptions \['a'\] do not match"):
        mean_corruption_error(MODEL, {"a": BASE["a"]})
    with pytest.raises(ConfigError, match=r"errors_baseline\['b'\]: severities \[1\]"):
        mean_corruption_error(MODEL, {"a": BASE["a"], "b": {1: 0.2}})
    with pytest.raises(ConfigError, match="no error on this corruption"):
        mean_corruption_error(MODEL, {"a": BASE["a"], "b": {1: 0.0, 2: 0.0}})
    with pytest.raises(ConfigError, match="clean_error_model: required"):
        relative_mean_corruption_error(MODEL, BASE)
    with pytest.raises(ConfigError, match="does not rise above its clean error"):
        relative_mean_corruption_error(MODEL, BASE, clean_error_model=0.0, clean_error_baseline=0.5)
    with pytest.raises(ConfigError, match="at least one corruption"):
        mean_corruption_error({}, {})
