"""Guard layers, thresholds, save/load and evaluation on a tiny digits CNN."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from guard_fixtures import make_run

from bastion.attacks.gradient import PGD
from bastion.data.core import Dataset
from bastion.data.schema import FeatureSpec, TabularSchema
from bastion.errors import ConfigError, DataError
from bastion.guard import (
    AdaptiveGuardAttack,
    Guard,
    GuardConfig,
    evaluate_guard,
    fit_guard,
    load_guard,
    save_guard,
)
from bastion.guard.calibration import fit_temperature, joint_thresholds
from bastion.guard.fit import run_threat
from bastion.guard.squeezing import median_filter, reduce_bit_depth
from bastion.guard.validation import InputValidator
from bastion.models.io import load_model

CONFIG = {"squeezing": {"median_size": 1}, "adversarial": {"steps": 10}}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Dataset, Guard]:
    torch.set_num_threads(1)
    run, data = make_run(tmp_path_factory.mktemp("run"))
    guard = fit_guard(run, GuardConfig.from_dict(CONFIG), data.val.x, data.val.y, seed=0)
    return run, data, guard


def test_decisions_follow_the_contract(fitted: tuple[Path, Dataset, Guard]) -> None:
    _, data, guard = fitted
    decisions = guard.decide(data.test.x[:20])
    assert len(decisions) == 20
    answered = [d for d in decisions if d.answered]
    assert answered
    for d in answered:
        assert d.label is not None and d.probabilities is not None
        assert abs(sum(d.probabilities) - 1.0) < 1e-4
        assert set(d.scores) >= {"squeezing", "ood", "adversarial", "confidence"}
    accuracy = sum(d.label == int(y) for d, y in zip(decisions, data.test.y[:20], strict=True))
    assert accuracy >= 16


def test_validation_rejects_bad_rows_with_reasons(fitted: tuple[Path, Dataset, Guard]) -> None:
    _, data, guard = fitted
    x = data.test.x[:3].clone()
    x[0, 0, 0, 0] = float("nan")
    x[1, 0, 2, 2] = 1.7
    d = guard.decide(x)
    assert d[0].verdict == "reject" and "NaN" in d[0].reasons[0]
    assert d[1].verdict == "reject" and "out of range [0, 1]" in d[1].reasons[0]
    assert d[2].verdict != "reject" or not d[2].reasons[0].startswith("validation")
    with pytest.raises(DataError, match=r"expected shape \(N, 1, 8, 8\)"):
        guard.decide(torch.zeros(2, 64))


def test_tabular_schema_checks() -> None:
    schema = TabularSchema(
        target="y",
        classes=("a", "b"),
        features=(
            FeatureSpec("amount", "float", 0, 10),
            FeatureSpec("items", "integer", 0, 4),
            FeatureSpec("age", "float", 18, 100, immutable=True),
            FeatureSpec("channel", "categorical", categories=("web", "store")),
        ),
    )
    v = InputValidator(input_shape=(5,), bounds=(0.0, 1.0), schema=schema)
    good = torch.tensor([0.5, 0.25, 0.3, 1.0, 0.0])
    rows = torch.stack(
        [
            good,
            torch.tensor([0.5, 0.25, 0.3, 1.0, 1.0]),  # two categories
            torch.tensor([0.5, 0.3, 0.3, 1.0, 0.0]),  # 1.2 items
            torch.tensor([0.5, 0.25, 0.9, 1.0, 0.0]),  # age changed
        ]
    )
    _, reasons = v.validate(rows, reference=good)
    assert reasons[0] is None
    assert reasons[1] is not None and "'channel' is not one-hot" in reasons[1]
    assert reasons[2] is not None and "integer" in reasons[2]
    assert reasons[3] is not None and "immutable" in reasons[3] and "age" in reasons[3]


def test_detectors_fire_more_on_attacked_inputs(fitted: tuple[Path, Dataset, Guard]) -> None:
    run, data, guard = fitted
    model = load_model(run / "models" / "hardened")
    x, y = data.test.x[:150], data.test.y[:150]
    x_adv = PGD(steps=10)(model, x, y, run_threat(run), generator=torch.Generator().manual_seed(1))
    _, _, clean = guard.scorer(x)
    _, _, attacked = guard.scorer(x_adv.x_adv)
    for name in ("squeezing", "ood", "adversarial"):
        assert float(attacked[name].median()) > float(clean[name].median()), name
    det_clean, _, _ = guard.outcome(x, y)
    det_adv, _, _ = guard.outcome(x_adv.x_adv, y)
    assert float(det_adv.float().mean()) > float(det_clean.float().mean()) + 0.2


@pytest.mark.parametrize("fpr", [0.05, 0.2])
def test_thresholds_meet_the_target_fpr_on_held_out_data(
    fitted: tuple[Path, Dataset, Guard], fpr: float
) -> None:
    _, data, guard = fitted
    g = guard.with_fpr(fpr)
    detected, _, _ = g.outcome(data.test.x, data.test.y)
    rate = float(detected.float().mean())
    n = data.test.x.shape[0]
    m = guard.cal_scores.shape[0]  # the held-out clean rows the thresholds came from
    tolerance = 3 * (fpr * (1 - fpr) / n) ** 0.5 + 3 * (fpr * (1 - fpr) / m) ** 0.5
    assert abs(rate - fpr) <= tolerance, (rate, fpr)


def test_joint_thresholds_bound_the_union_rate() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(2000, 3, generator=gen)
    th = joint_thresholds(scores, 0.05)
    union = (scores > torch.tensor(th)).any(dim=1).float().mean()
    assert 0.04 <= float(union) <= 0.05


def test_temperature_recovers_a_known_scale() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, 5, generator=gen) * 2
    y = torch.multinomial(logits.softmax(1), 1, generator=gen).squeeze(1)
    t = fit_temperature(logits * 3, y)
    assert 2.5 < t < 3.5


def test_squeezers() -> None:
    x = torch.tensor([[[[0.0, 0.26, 0.74, 1.0]]]])
    assert reduce_bit_depth(x, 1).flatten().tolist() == [0.0, 0.0, 1.0, 1.0]
    img = torch.zeros(1, 1, 5, 5)
    img[0, 0, 2, 2] = 1.0  # an isolated spike is removed by a 3x3 median
    assert float(median_filter(img, 3).abs().max()) == 0.0


def test_save_load_round_trip_gives_identical_decisions(
    fitted: tuple[Path, Dataset, Guard], tmp_path: Path
) -> None:
    _, data, guard = fitted
    save_guard(guard, tmp_path / "guard")
    loaded = load_guard(tmp_path / "guard")
    x = data.test.x[:64]
    assert [d.to_dict() for d in guard.decide(x)] == [d.to_dict() for d in loaded.decide(x)]
    assert not any(p.suffix == ".pkl" for p in (tmp_path / "guard").rglob("*"))


def test_adaptive_attack_stops_no_more_than_the_standard_one(
    fitted: tuple[Path, Dataset, Guard],
) -> None:
    run, data, guard = fitted
    model = load_model(run / "models" / "hardened")
    result = evaluate_guard(
        guard,
        model,
        data.test.x[:100],
        data.test.y[:100],
        run_threat(run),
        attacks=[PGD(steps=10)],
        adaptive=True,
        seed=0,
        adaptive_attack=AdaptiveGuardAttack(steps=20),
    )
    for key in ("0.01", "0.05"):
        entry = result["fpr"][key]
        assert entry["adaptive"]["stopped"] <= entry["standard"]["pgd"]["stopped"]
        assert entry["worst_case_stopped"] <= entry["adaptive"]["stopped"]
    clean = result["fpr"]["0.05"]["clean"]
    assert clean["fired"] <= 0.15 and 0.9 <= clean["answered_accuracy"] <= 1.0


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"guard\.squeezing\.bit_depth"):
        GuardConfig.from_dict({"squeezing": {"bit_depth": 0}})
    with pytest.raises(ConfigError, match=r"guard\.ood\.nope"):
        GuardConfig.from_dict({"ood": {"nope": 1}})
    with pytest.raises(ConfigError, match="ensemble needs at least two"):
        GuardConfig.from_dict({"prediction": {"kind": "ensemble", "models": ["a"]}})


def test_ensemble_and_smoothing_predictions(fitted: tuple[Path, Dataset, Guard]) -> None:
    run, data, _ = fitted
    x, y = data.val.x[:200], data.val.y[:200]
    ens = fit_guard(
        run,
        GuardConfig.from_dict(
            {
                **CONFIG,
                "adversarial": {"enabled": False},
                "prediction": {"kind": "ensemble", "models": ["hardened", "baseline"]},
            }
        ),
        x,
        y,
        seed=0,
    )
    d = ens.decide(data.test.x[:10])
    assert all("disagreement" in e.scores for e in d)
    smooth = fit_guard(
        run,
        GuardConfig.from_dict(
            {
                "squeezing": {"enabled": False},
                "ood": {"enabled": False},
                "adversarial": {"enabled": False},
                "postcheck": {"min_confidence": 0.0},
                "prediction": {"kind": "smoothing", "sigma": 1.0, "samples": 50},
            }
        ),
        x,
        y,
        seed=0,
    )
    noise = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    verdicts = [e.verdict for e in smooth.decide(noise)]
    assert "abstain" in verdicts
    assert smooth.decide(noise) == smooth.decide(noise)
