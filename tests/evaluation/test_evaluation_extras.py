"""Calibration, latency, distribution shifts, the resumable evaluation state and the model card."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from bastion.attacks import FGSM, PGD
from bastion.data import Dataset
from bastion.errors import BastionError, ConfigError
from bastion.evaluation import NamedAttack, evaluate_model
from bastion.evaluation.calibration import (
    calibration_metrics,
    evaluate_calibration,
    expected_calibration_error,
    reliability_bins,
)
from bastion.evaluation.latency import measure_latency, percentile
from bastion.evaluation.shift import apply_shift, parse_shift, shift_accuracy
from bastion.evaluation.state import EvaluationState, weights_hash
from bastion.report.model_card import render_model_card
from bastion.threat import ThreatModel

# -- calibration --------------------------------------------------------------------------------


def test_ece_zero_for_perfectly_calibrated_bins() -> None:
    # two bins: confidence 0.75 with 3/4 right, confidence 1.0 with all right
    probs = torch.tensor([[0.75, 0.25]] * 4 + [[0.0, 1.0]] * 2)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    assert expected_calibration_error(probs, y, bins=10) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_overconfident_predictions() -> None:
    probs = torch.tensor([[0.9, 0.1]] * 10)
    y = torch.tensor([0] * 5 + [1] * 5)  # 50% right at 90% confidence
    assert expected_calibration_error(probs, y, bins=15) == pytest.approx(0.4)
    m = calibration_metrics(probs, y, bins=15)
    assert m["mce"] == pytest.approx(0.4)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.1)) / 2)
    assert sum(b["count"] for b in m["bins"]) == 10


def test_reliability_bins_edges_and_errors() -> None:
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    bins = reliability_bins(probs, torch.tensor([0, 0]), bins=2)
    assert [b["count"] for b in bins] == [1, 1]  # 0.5 falls in (0, 0.5], 1.0 in (0.5, 1]
    with pytest.raises(ConfigError, match="bins"):
        reliability_bins(probs, torch.tensor([0, 0]), bins=0)
    with pytest.raises(ConfigError, match="shapes"):
        reliability_bins(probs, torch.tensor([0]), bins=2)


def test_calibration_under_attack_is_worse(
    trained_digits_model: nn.Module, digits_eval: Dataset
) -> None:
    x, y = digits_eval.test.x[:150], digits_eval.test.y[:150]
    threat = ThreatModel("linf", 0.2)
    res = evaluate_calibration(
        trained_digits_model, x, y, threat, attack=PGD(steps=10), attack_label="pgd", seed=0
    )
    assert res["clean"]["n"] == 150 and res["adversarial"]["n"] == 150
    assert res["adversarial"]["accuracy"] < res["clean"]["accuracy"] - 0.3
    assert res["adversarial"]["ece"] > res["clean"]["ece"]
    again = evaluate_calibration(
        trained_digits_model, x, y, threat, attack=PGD(steps=10), attack_label="pgd", seed=0
    )
    assert again["adversarial"]["ece"] == res["adversarial"]["ece"]  # seeded
    hot = evaluate_calibration(trained_digits_model, x, y, threat, attack=None, temperature=5.0)
    assert hot["adversarial"] is None
    assert hot["clean"]["mean_confidence"] < res["clean"]["mean_confidence"]


# -- latency -------------------------------------------------------------------------------------


def test_percentile_interpolates() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([1.0, 2.0], 50) == 1.5
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ConfigError):
        percentile([], 50)


def test_latency_reports_each_batch_size(
    trained_digits_model: nn.Module, digits_eval: Dataset
) -> None:
    res = measure_latency(
        trained_digits_model, digits_eval.test.x[:10], batch_sizes=(1, 32), repeats=5, warmup=1
    )
    assert set(res["batch_sizes"]) == {"1", "32"}
    for v in res["batch_sizes"].values():
        assert 0 < v["p50_ms"] <= v["p99_ms"]
    with pytest.raises(ConfigError, match="batch_sizes"):
        measure_latency(trained_digits_model, digits_eval.test.x[:10], batch_sizes=(0,))


# -- shifts --------------------------------------------------------------------------------------


def test_shift_names_are_checked() -> None:
    assert parse_shift("rotate-15") == ("rotate", 15.0)
    assert parse_shift("zoom-0.8") == ("zoom", 0.8)
    for bad in ("spin-3", "rotate", "rotate--1", "zoom-9", "rotate-200"):
        with pytest.raises(ConfigError, match=r"evaluation\.shifts"):
            parse_shift(bad)


def test_image_shifts_move_pixels_and_stay_in_bounds() -> None:
    x = torch.zeros(4, 1, 9, 9)
    x[:, :, 4, 4] = 1.0  # one bright centre pixel
    moved = apply_shift("translate-2", x, generator=torch.Generator().manual_seed(0))
    for img in moved:
        r, c = divmod(int(img.flatten().argmax()), 9)
        assert abs(r - 4) + abs(c - 4) == 2  # moved exactly 2 pixels along one axis
    bar = torch.zeros(1, 1, 9, 9)
    bar[0, 0, :, 4] = 1.0  # a vertical bar
    turned = apply_shift("rotate-90", bar)
    assert turned[0, 0, 4, :].sum() > 6  # now horizontal
    noisy = apply_shift("noise-0.5", torch.rand(8, 5), bounds=(0.0, 1.0))
    assert noisy.min() >= 0 and noisy.max() <= 1
    with pytest.raises(ConfigError, match="needs images"):
        apply_shift("rotate-15", torch.rand(3, 5))


def test_shift_accuracy_drops_on_digits(
    trained_digits_model: nn.Module, digits_eval: Dataset
) -> None:
    x, y = digits_eval.test.x[:200], digits_eval.test.y[:200]
    res = shift_accuracy(trained_digits_model, x, y, names=["rotate-30", "translate-2"], seed=0)
    assert set(res["shifts"]) == {"rotate-30", "translate-2"}
    assert res["worst_accuracy"] < res["clean_accuracy"] - 0.05
    assert res == shift_accuracy(
        trained_digits_model, x, y, names=["rotate-30", "translate-2"], seed=0
    )


# -- resumable evaluation ----------------------------------------------------------------------


class _Stop(Exception):
    pass


def _attacks() -> list[NamedAttack]:
    return [NamedAttack("fgsm", FGSM()), NamedAttack("pgd", PGD(steps=5))]


def test_interrupted_evaluation_resumes_with_same_figures(
    tmp_path: Path, trained_digits_model: nn.Module, digits_eval: Dataset
) -> None:
    x, y = digits_eval.test.x[:80], digits_eval.test.y[:80]
    threat = ThreatModel("linf", 0.2)
    grid = [0.1, 0.2]
    full = evaluate_model(trained_digits_model, x, y, threat, _attacks(), eps_grid=grid, seed=3)

    binding = {"config": "c1", "n": 80}
    path = tmp_path / "eval.state.json"
    calls: list[int] = []

    def stop_after_two(_: str, done: int, total: int) -> None:
        calls.append(done)
        if done == 2:
            raise _Stop

    with pytest.raises(_Stop):
        evaluate_model(
            trained_digits_model,
            x,
            y,
            threat,
            _attacks(),
            eps_grid=grid,
            seed=3,
            progress=stop_after_two,
            state=EvaluationState(path, binding),
            model_id="m",
        )
    assert len(json.loads(path.read_text())["masks"]) == 2
    state = EvaluationState(path, binding)
    resumed = evaluate_model(
        trained_digits_model,
        x,
        y,
        threat,
        _attacks(),
        eps_grid=grid,
        seed=3,
        state=state,
        model_id="m",
    )
    assert state.resumed == 2
    assert resumed["attacks"] == full["attacks"]
    assert resumed["worst_case_accuracy"] == full["worst_case_accuracy"]
    with pytest.raises(ConfigError, match="another evaluation"):
        EvaluationState(path, {"config": "c2", "n": 80})
    state.remove()
    assert not path.exists()


def test_weights_hash_tracks_parameters() -> None:
    a = nn.Linear(3, 2)
    h = weights_hash(a)
    assert weights_hash(a) == h
    with torch.no_grad():
        a.weight[0, 0] += 1
    assert weights_hash(a) != h


def test_state_file_rejects_garbage(tmp_path: Path) -> None:
    p = tmp_path / "s.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        EvaluationState(p, {})
    p.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ConfigError, match="not a bastion evaluation state"):
        EvaluationState(p, {})


# -- model card ------------------------------------------------------------------------------


def _scorecard() -> dict[str, object]:
    return {
        "run": {"name": "demo", "seed": 1, "created": "2026", "command": "bastion run"},
        "data": {"name": "digits", "fingerprint": "abc", "classes": ["0", "1"]},
        "threat": {"norm": "linf", "eps": 0.2, "bounds": [0, 1]},
        "evaluation": {"examples": 50, "attacks": [{"label": "pgd"}]},
        "card": {"intended_use": "Reading postcodes.", "owners": ["ml-team"]},
        "models": {
            "hardened": {
                "objective": "pgd-at",
                "clean_accuracy": 0.9,
                "worst_case_accuracy": 0.6,
                "attacks": {"pgd": {"0.2": 0.6}},
                "n_eval": 50,
                "calibration": {
                    "clean": {"ece": 0.05},
                    "adversarial": {"ece": 0.2, "mean_confidence": 0.7, "accuracy": 0.6},
                    "attack": "pgd",
                },
            }
        },
        "warnings": [{"code": "non-monotonic-eps", "model": "hardened", "message": "odd"}],
        "versions": {"bastion": "0.1.0"},
    }


def test_model_card_states_use_results_and_limits() -> None:
    card = render_model_card(_scorecard())
    assert "Reading postcodes." in card
    assert "| pgd | 60.0% |" in card
    assert "ECE 0.050 clean, 0.200 under pgd" in card
    assert "non-monotonic-eps" in card
    assert "on 50 test examples" in card
    bare = render_model_card({"models": {}})
    assert "Not stated" in bare


def test_subset_option_limits_every_suite() -> None:
    from bastion.config import parse_config
    from bastion.pipeline import with_subset

    cfg = parse_config(
        {
            "name": "t",
            "models": [{"name": "m"}],
            "evaluation": {"examples": 500, "shifts": {}, "corruptions": {"examples": 300}},
        }
    )
    sub = with_subset(cfg, 20)
    assert sub.evaluation.examples == 20
    assert sub.evaluation.corruptions is not None and sub.evaluation.corruptions.examples == 20
    assert sub.evaluation.shifts is not None and sub.evaluation.shifts.examples == 20
    assert with_subset(cfg, None) is cfg
    with pytest.raises(BastionError, match="--subset"):
        with_subset(cfg, 0)
    with pytest.raises(ConfigError, match="shifts"):
        parse_config(
            {
                "name": "t",
                "models": [{"name": "m"}],
                "evaluation": {"shifts": {"names": ["spin-3"]}},
            }
        )
