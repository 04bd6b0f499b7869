from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bastion.data import Dataset
from bastion.errors import ConfigError
from bastion.models.zoo import ModelSpec
from bastion.privacy.dp import DPSettings, train_dp
from bastion.privacy.membership import ShadowRecipe, build_seeded, train_shadows

pytest.importorskip("opacus")


def _spec(ds: Dataset, arch: str = "mlp") -> ModelSpec:
    opts = {"hidden": [32]} if arch == "mlp" else {}
    return ModelSpec(arch, (1, 8, 8), 10, tuple(ds.mean), tuple(ds.std), opts)


def test_dp_sgd_reaches_its_epsilon_learns_and_is_reproducible(digits: Dataset) -> None:
    x, y = digits.train.x[:600], digits.train.y[:600]
    settings = DPSettings(epochs=3, batch_size=64, lr=0.5, target_epsilon=3.0)
    a = build_seeded(_spec(digits), 0)
    res = train_dp(a, x, y, settings, seed=0)
    assert res.delta == pytest.approx(1 / 6000)
    assert 2.5 < res.epsilon <= 3.0 + 1e-6  # calibrated to the target, never above it
    assert res.noise_multiplier > 0.5 and res.steps >= 3 * (600 // 64)
    assert [h["epsilon"] for h in res.history] == sorted(h["epsilon"] for h in res.history)
    acc = float((a(digits.test.x).argmax(1) == digits.test.y).float().mean())
    assert acc > 0.5  # chance is 10%
    b = build_seeded(_spec(digits), 0)
    train_dp(b, x, y, settings, seed=0)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    # Opacus's wrapper is gone: plain modules, no per-sample gradients, no hooks
    assert type(a).__name__ == "BastionModel" and not a.training
    assert all(not hasattr(p, "grad_sample") for p in a.parameters())
    assert all(not m._forward_hooks for m in a.modules())


def test_less_noise_costs_more_privacy(digits: Dataset) -> None:
    x, y = digits.train.x[:300], digits.train.y[:300]
    eps = []
    for sigma in (0.7, 2.0):
        net = build_seeded(_spec(digits), 1)
        r = train_dp(net, x, y, DPSettings(epochs=1, target_epsilon=None, noise_multiplier=sigma))
        eps.append(r.epsilon)
        assert r.noise_multiplier == sigma
    assert eps[0] > 2 * eps[1]


def test_dp_settings_and_refused_architectures(digits: Dataset) -> None:
    with pytest.raises(ConfigError, match="exactly one of target_epsilon and noise_multiplier"):
        DPSettings(target_epsilon=None)
    with pytest.raises(ConfigError, match=r"dp\.delta"):
        DPSettings(delta=2.0)
    with pytest.raises(ConfigError, match=r"dp\.epochs"):
        DPSettings(epochs=0)
    resnet = build_seeded(_spec(digits, "preact-resnet18"), 0)
    with pytest.raises(ConfigError, match="Opacus cannot train this model"):
        train_dp(
            resnet,
            digits.train.x[:10],
            digits.train.y[:10],
            DPSettings(epochs=1, target_epsilon=None, noise_multiplier=1.0),
        )


def test_dp_shadows_for_lira(recipe: ShadowRecipe, digits: Dataset, tmp_path: Path) -> None:
    dp = ShadowRecipe(
        recipe.spec,
        recipe.settings,
        recipe.threat,
        DPSettings(epochs=1, target_epsilon=None, noise_multiplier=1.0),
    )
    assert dp.fingerprint() != recipe.fingerprint()
    x, y = digits.train.x[:200], digits.train.y[:200]
    got = train_shadows(dp, x, y, shadows=2, directory=tmp_path)
    assert got.trained == 2 and torch.isfinite(got.confidences).all()


def test_a_dp_model_entry_trains_through_the_cli_and_its_audit_uses_dp_shadows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    import yaml

    from bastion.cli import main

    doc = {
        "name": "dp",
        "data": {"name": "digits"},
        "threat": {"norm": "linf", "eps": 0.1},
        "model": {"architecture": "mlp", "options": {"hidden": [32]}},
        "training": {"epochs": 1, "val_examples": 40},
        "models": [
            {"name": "private", "dp": {"epochs": 2, "noise_multiplier": 1.0, "lr": 0.5}},
        ],
        "evaluation": {"examples": 40, "attacks": [{"name": "fgsm"}]},
    }
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(doc))
    argv = ["train", str(run / "config.yaml"), "--out", str(run / "models" / "private")]
    assert main([*argv, "--quiet", "--threads", "1"]) == 0
    meta = json.loads((run / "models" / "private.json").read_text())["metadata"]
    (note,) = meta["training"]["warnings"]
    assert "differentially private" in note and "noise multiplier 1" in note
    assert meta["training"]["history"][-1]["epsilon"] > 0
    assert meta["training"]["history"][-1]["val_clean_accuracy"] > 0.3
    audit = ["audit", "privacy", str(run), "--shadows", "2", "--population", "60"]
    assert main([*audit, "--no-inversion", "--threads", "1"]) == 0
    shadow = next((run / "privacy" / "shadows-private").iterdir())
    from safetensors import safe_open

    with safe_open(str(shadow), framework="pt") as f:
        recipe_fp = (f.metadata() or {})["recipe"]
    from bastion.config import load_config
    from bastion.models import load_model
    from bastion.privacy.audit import run_recipe

    recipe = run_recipe(run, "private", load_model(run / "models" / "private").spec)
    assert recipe.dp is not None and recipe.fingerprint() == recipe_fp
    assert load_config(run / "config.yaml")[0].models[0].dp is not None
    capsys.readouterr()
    doc["models"][0]["dp"] = {"noise": 1.0}
    (run / "bad.yaml").write_text(yaml.safe_dump(doc))
    assert main(["train", str(run / "bad.yaml")]) == 2
    assert "models.private.dp.noise: not a DP-SGD setting" in capsys.readouterr().err
