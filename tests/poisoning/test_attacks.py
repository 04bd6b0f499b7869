"""Poisoning attacks: counts, labels, triggers, reproducibility and one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

from bastion.data import load_dataset
from bastion.errors import ConfigError
from bastion.poisoning import (
    badnets,
    blend_trigger,
    blended,
    clean_label,
    label_flip,
    patch_trigger,
)
from bastion.poisoning.attacks import attack_success_rate, backdoor_labels


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    ds = load_dataset("digits", seed=0)
    return ds.train.x, ds.train.y


def test_badnets_all_to_one_poisons_the_stated_share_and_records_it(digits):
    x, y = digits
    p = badnets(x, y, rate=0.1, num_classes=10, size=2, target=3, seed=7)
    idx = p.indices
    assert len(idx) == round(0.1 * len(y))
    assert bool((p.y[idx] == 3).all())
    assert bool((p.original_y[idx] != 3).all()), "all-to-one poisons only other classes"
    # the 2x2 patch sits one pixel from the bottom-right corner, white
    assert bool((p.x[idx][:, :, 5:7, 5:7] == 1.0).all())
    clean = ~p.poisoned
    assert torch.equal(p.x[clean], x[clean]) and torch.equal(p.y[clean], y[clean])
    assert p.x.min() >= 0 and p.x.max() <= 1
    record = json.loads(json.dumps(p.record()))
    assert record["indices"] == idx.tolist() and record["n_poisoned"] == len(idx)
    assert record["attack"] == "badnets" and record["settings"]["target"] == 3


def test_badnets_is_reproducible_from_its_seed_alone(digits):
    x, y = digits
    torch.manual_seed(123)  # the global generator must not matter
    a = badnets(x, y, rate=0.05, num_classes=10, seed=1)
    torch.manual_seed(999)
    b = badnets(x, y, rate=0.05, num_classes=10, seed=1)
    c = badnets(x, y, rate=0.05, num_classes=10, seed=2)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.x, b.x)
    assert not torch.equal(a.indices, c.indices)


def test_badnets_all_to_all_shifts_each_label_by_one(digits):
    x, y = digits
    p = badnets(x, y, rate=0.2, num_classes=10, mode="all-to-all", seed=0)
    idx = p.indices
    assert torch.equal(p.y[idx], (y[idx] + 1) % 10)
    assert torch.equal(
        backdoor_labels(y, mode="all-to-all", target=0, num_classes=10), (y + 1) % 10
    )


def test_blended_trigger_mixes_a_seeded_pattern(digits):
    x, y = digits
    p = blended(x, y, rate=0.1, num_classes=10, alpha=0.2, seed=4)
    assert p.trigger is not None
    pattern = blend_trigger((1, 8, 8), alpha=0.2, seed=4).pattern
    assert torch.equal(p.trigger.pattern, pattern)
    idx = p.indices
    expected = (0.8 * x[idx] + 0.2 * pattern).clamp(0, 1)
    assert torch.allclose(p.x[idx], expected, atol=1e-6)
    assert bool((p.y[idx] == 0).all())


def test_label_flip_random_and_targeted(digits):
    x, y = digits
    r = label_flip(x, y, rate=0.1, num_classes=10, seed=0)
    idx = r.indices
    assert len(idx) == round(0.1 * len(y))
    assert bool((r.y[idx] != y[idx]).all()) and torch.equal(r.x, x)
    assert torch.equal(r.y[~r.poisoned], y[~r.poisoned])
    t = label_flip(x, y, rate=0.5, num_classes=10, source=1, target=7, seed=0)
    assert bool((y[t.indices] == 1).all()) and bool((t.y[t.indices] == 7).all())
    assert len(t.indices) == round(0.5 * int((y == 1).sum()))


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_rate_outside_unit_interval_names_the_field(digits, rate):
    x, y = digits
    with pytest.raises(ConfigError, match=r"^poisoning\.rate: expected a number in \[0, 1\]"):
        badnets(x, y, rate=rate, num_classes=10)


def test_trigger_larger_than_the_image_names_the_field():
    with pytest.raises(ConfigError, match=r"^poisoning\.trigger\.size: a 9x9 patch .* 8x8 image"):
        patch_trigger((1, 8, 8), size=9)
    with pytest.raises(ConfigError, match=r"poisoning\.trigger\.size"):
        patch_trigger((1, 8, 8), size=8, margin=1)
    with pytest.raises(ConfigError, match=r"poisoning\.target"):
        badnets(
            torch.zeros(4, 1, 8, 8),
            torch.zeros(4, dtype=torch.int64),
            rate=0.5,
            num_classes=3,
            target=5,
        )


def test_rate_asking_for_more_than_can_be_poisoned_is_an_error():
    x = torch.zeros(10, 1, 8, 8)
    y = torch.tensor([0] * 8 + [1] * 2)
    with pytest.raises(ConfigError, match="only 2 can be poisoned"):
        badnets(x, y, rate=0.5, num_classes=2, target=0)


def test_clean_label_keeps_labels_and_poisons_only_the_target_class(digits):
    x, y = digits
    torch.manual_seed(0)
    surrogate = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    p = clean_label(x, y, surrogate, rate=0.5, num_classes=10, target=2, eps=0.1, steps=3, size=2)
    assert torch.equal(p.y, y)
    assert bool((y[p.indices] == 2).all())
    assert len(p.indices) == round(0.5 * int((y == 2).sum()))
    # stamped, and elsewhere within eps of the original
    assert bool((p.x[p.indices][:, :, 5:7, 5:7] == 1.0).all())
    off = p.x[p.indices].clone()
    off[:, :, 5:7, 5:7] = x[p.indices][:, :, 5:7, 5:7]
    assert float((off - x[p.indices]).abs().max()) <= 0.1 + 1e-6


def test_attack_success_rate_counts_the_backdoor_label():
    trigger = patch_trigger((1, 8, 8), size=2)

    class Detects(torch.nn.Module):
        """Answers class 4 when the bottom-right patch is white, else class 0."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hit = (x[:, 0, 5:7, 5:7].flatten(1).min(dim=1).values == 1.0).float()
            out = torch.zeros(len(x), 5)
            out[:, 4] = hit
            out[:, 0] = 1 - hit
            return out

    x = torch.zeros(6, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 3, 4, 4])
    # all-to-one, target 4: the four examples not of class 4 are all sent to 4
    assert attack_success_rate(Detects(), x, y, trigger, target=4, num_classes=5) == 1.0
    # target 1: the model answers 4, not 1
    assert attack_success_rate(Detects(), x, y, trigger, target=1, num_classes=5) == 0.0
