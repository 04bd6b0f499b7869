"""Confident learning on real digits with labels flipped at random: cross-validated
probabilities from real models find most flipped labels and few correct ones."""

from __future__ import annotations

import torch

from bastion.data import load_dataset
from bastion.poisoning import detection_metrics, label_flip
from bastion.poisoning.hygiene import cross_val_probs, label_issues


def test_confident_learning_finds_flipped_digit_labels():
    ds = load_dataset("digits", seed=0)
    p = label_flip(ds.train.x, ds.train.y, rate=0.05, num_classes=10, seed=3)
    probs = cross_val_probs(
        p.x,
        p.y,
        architecture="mlp",
        num_classes=10,
        mean=ds.mean,
        std=ds.std,
        folds=2,
        epochs=10,
        batch_size=64,
        lr=0.05,
        seed=0,
    )
    assert probs.shape == (len(p.y), 10)
    assert torch.allclose(probs.sum(dim=1), torch.ones(len(p.y)), atol=1e-5)
    issues = label_issues(probs, p.y)
    m = detection_metrics(issues.flagged, p.poisoned)
    assert m["recall"] >= 0.7 and m["precision"] >= 0.5, m
    # where a flipped label is caught, the suggested class is mostly the true one
    caught = issues.flagged & p.poisoned
    agree = (issues.suggested[caught] == p.original_y[caught]).float().mean()
    assert float(agree) >= 0.8
