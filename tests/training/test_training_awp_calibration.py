"""Adversarial weight perturbation and temperature scaling."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bastion.data import Dataset
from bastion.errors import ConfigError
from bastion.threat import ThreatModel
from bastion.training import (
    AWPSettings,
    ObjectiveSettings,
    TemperatureScaled,
    Trainer,
    TrainSettings,
    apply_temperature,
    calibrate,
    expected_calibration_error,
    fit_temperature,
    prepare_loss,
)
from bastion.training.awp import perturbed, weight_perturbation

THREAT = ThreatModel("linf", 0.2)


def _mlp() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))


def test_weight_perturbation_has_relative_size_gamma_and_is_undone_exactly() -> None:
    model = _mlp()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(20, 16, generator=g), torch.randint(0, 3, (20,), generator=g)
    fn = prepare_loss(ObjectiveSettings("pgd-at", steps=2), model, x, y, THREAT, generator=g)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss0, _ = fn(model)
    pairs = weight_perturbation(model, fn, 0.01)
    assert len(pairs) == 2  # the two weight matrices; biases are left alone
    for p, v in pairs:
        assert float(v.norm()) == pytest.approx(0.01 * float(p.detach().norm()), rel=1e-5)
    assert all(p.grad is None for p in model.parameters())
    with perturbed(pairs):
        loss1, _ = fn(model)
    assert float(loss1.detach()) > float(loss0.detach())  # an ascent step on the loss
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_awp_changes_training_only_after_warmup(digits: Dataset, make_model: Any) -> None:
    tr = digits.train.subset(256)
    args = (tr.x, tr.y, digits.val.x, digits.val.y)

    def run(awp: AWPSettings | None) -> list[float]:
        s = TrainSettings(
            epochs=2,
            batch_size=64,
            lr=0.05,
            objective=ObjectiveSettings("pgd-at", steps=2),
            val_examples=20,
            val_pgd_steps=1,
            awp=awp,
        )
        return [
            h["train_loss"] for h in Trainer(s, THREAT, seed=0).fit(make_model(0), *args).history
        ]

    plain, warm = run(None), run(AWPSettings(gamma=0.02, warmup_epochs=1))
    assert warm[0] == plain[0]  # epoch 1 is warmup: identical
    assert warm[1] != plain[1]  # AWP in epoch 2


def test_ece_of_calibrated_and_overconfident_predictions() -> None:
    g = torch.Generator().manual_seed(0)
    n, c = 20000, 4
    logits = 2.0 * torch.randn(n, c, generator=g)
    y = torch.multinomial(logits.softmax(1), 1, generator=g).squeeze(1)  # labels drawn from p
    assert expected_calibration_error(logits, y) < 0.02
    assert expected_calibration_error(5 * logits, y) > 0.15
    assert expected_calibration_error(logits[:0], y[:0]) == 0.0
    with pytest.raises(ConfigError, match="bins"):
        expected_calibration_error(logits, y, bins=0)


@pytest.mark.parametrize("t_true", [0.5, 1.0, 3.0])
def test_fit_temperature_recovers_the_generating_temperature(t_true: float) -> None:
    g = torch.Generator().manual_seed(1)
    z = 3.0 * torch.randn(20000, 5, generator=g)
    y = torch.multinomial((z / t_true).softmax(1), 1, generator=g).squeeze(1)
    t = fit_temperature(z, y)
    assert t == pytest.approx(t_true, rel=0.05)
    nll = [float(F.cross_entropy(z / s, y)) for s in (t * 0.9, t, t * 1.1)]
    assert nll[1] <= min(nll[0], nll[2])


def test_calibrate_report_and_applying_the_temperature() -> None:
    g = torch.Generator().manual_seed(2)
    z_clean, z_adv = 4 * torch.randn(500, 3, generator=g), 4 * torch.randn(300, 3, generator=g)
    y_clean = torch.multinomial((z_clean / 4).softmax(1), 1, generator=g).squeeze(1)
    y_adv = torch.multinomial((z_adv / 4).softmax(1), 1, generator=g).squeeze(1)
    rep = calibrate(z_clean, y_clean, z_adv, y_adv)
    assert rep.n_clean == 500 and rep.n_adversarial == 300
    assert rep.temperature > 2.0 and rep.nll_after < rep.nll_before
    assert rep.ece_after < rep.ece_before
    assert torch.allclose(apply_temperature(z_clean, rep.temperature), z_clean / rep.temperature)
    wrapped = TemperatureScaled(nn.Identity(), rep.temperature)
    assert torch.equal(wrapped(z_clean).argmax(1), z_clean.argmax(1))
    with pytest.raises(ConfigError, match="temperature"):
        apply_temperature(z_clean, -1.0)


def test_trainer_fits_a_temperature_on_clean_and_adversarial_validation(
    digits: Dataset, make_model: Any
) -> None:
    s = TrainSettings(
        epochs=2,
        batch_size=64,
        lr=0.05,
        objective=ObjectiveSettings("pgd-at", steps=2),
        val_examples=100,
        val_pgd_steps=3,
        calibrate=True,
    )
    tr = digits.train.subset(400)
    res = Trainer(s, THREAT, seed=0).fit(make_model(0), tr.x, tr.y, digits.val.x, digits.val.y)
    assert res.temperature is not None and res.calibration is not None
    assert res.calibration["n_clean"] == 100 and res.calibration["n_adversarial"] == 100
    assert res.calibration["nll_after"] <= res.calibration["nll_before"] + 1e-9
    summary = res.summary()
    assert summary["temperature"] == res.temperature
    assert summary["calibration"]["ece_after"] == res.calibration["ece_after"]
