"""Attack batches spread over Ray workers give the single process's per-example results."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from bastion.attacks import build_attack
from bastion.data import load_dataset
from bastion.errors import ConfigError
from bastion.evaluation.evaluator import NamedAttack, evaluate_model, robust_mask
from bastion.threat import ThreatModel

ray = pytest.importorskip("ray", reason="Ray is not installed (the distributed extra)")


@pytest.fixture(scope="module")
def runner() -> Iterator[object]:
    from bastion.evaluation.ray_runner import RayBatchRunner

    r = RayBatchRunner(workers=2)
    yield r
    r.close()


@pytest.fixture(scope="module")
def digits_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    ds = load_dataset("digits", seed=0)
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for p in model.parameters():
            nn.init.normal_(p, std=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = ds.train.x, ds.train.y
    for _ in range(150):
        idx = torch.randint(0, len(y), (64,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), ds.test.x[:200], ds.test.y[:200]


def test_ray_gives_the_same_per_example_results(
    runner: object, digits_model: tuple[nn.Module, torch.Tensor, torch.Tensor]
) -> None:
    model, x, y = digits_model
    threat = ThreatModel("linf", 0.1)
    attacks = [
        NamedAttack("fgsm", build_attack("fgsm")),
        NamedAttack("pgd", build_attack("pgd", {"steps": 5})),
        NamedAttack("square", build_attack("square", {"queries": 40})),
    ]
    correct = model(x).argmax(1) == y
    for na in attacks:
        here = robust_mask(
            model, na.attack, x, y, threat, candidates=correct, seed=7, batch_size=30
        )
        there = robust_mask(
            model,
            na.attack,
            x,
            y,
            threat,
            candidates=correct,
            seed=7,
            batch_size=30,
            runner=runner,  # type: ignore[arg-type]
        )
        assert torch.equal(here, there), na.label
    kwargs = {"eps_grid": [0.05, 0.1], "seed": 1, "batch_size": 40, "sanity": "off"}
    single = evaluate_model(model, x, y, threat, attacks, **kwargs)  # type: ignore[arg-type]
    spread = evaluate_model(model, x, y, threat, attacks, runner=runner, **kwargs)  # type: ignore[arg-type]
    assert spread["attacks"] == single["attacks"]
    assert spread["worst_case_accuracy"] == single["worst_case_accuracy"]
    assert single["worst_case_accuracy"] < single["clean_accuracy"]


def test_every_pass_is_timed_per_shard(
    runner: object, digits_model: tuple[nn.Module, torch.Tensor, torch.Tensor]
) -> None:
    from bastion.evaluation.ray_runner import RayBatchRunner

    assert isinstance(runner, RayBatchRunner)
    model, x, y = digits_model
    before = len(runner.calls)
    correct = model(x).argmax(1) == y
    attack = build_attack("pgd", {"steps": 3})
    threat = ThreatModel("linf", 0.1)
    robust_mask(
        model, attack, x, y, threat, candidates=correct, seed=0, batch_size=50, runner=runner
    )
    (call,) = runner.calls[before:]
    assert sum(call.shard_examples) == int(correct.sum())
    assert len(call.shard_seconds) == len(call.shard_examples) == -(-int(correct.sum()) // 50)
    assert all(0 < s <= call.wall_seconds for s in call.shard_seconds)


def test_bad_workers_are_refused() -> None:
    from bastion.evaluation.ray_runner import RayBatchRunner

    with pytest.raises(ConfigError, match="--ray-workers"):
        RayBatchRunner(workers=0)
