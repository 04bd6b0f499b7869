"""Latent-space scans, hygiene and the quarantine on data whose truth is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bastion.errors import ConfigError, DataError
from bastion.poisoning import (
    activation_clustering,
    build_quarantine,
    detection_metrics,
    spectral_signatures,
    spectre,
    write_quarantine,
)
from bastion.poisoning.hygiene import exact_duplicates, label_issues, near_duplicates
from bastion.poisoning.quarantine import read_kept


def _latents(
    poison_share: float, *, seed: int = 0, n_per_class: int = 200, dims: int = 32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features of 4 classes, each a broad Gaussian around its own centre; in class 0 a
    ``poison_share`` of the examples sit in a tight cluster far off (what a trigger looks
    like to the penultimate layer)."""
    rng = np.random.default_rng(seed)
    feats, labels, truth = [], [], []
    for c in range(4):
        centre = rng.normal(0, 5, dims)
        block = centre + rng.normal(0, 1, (n_per_class, dims))
        bad = np.zeros(n_per_class, dtype=bool)
        if c == 0 and poison_share > 0:
            k = round(poison_share * n_per_class)
            block[:k] = (
                centre
                + 6 * rng.normal(0, 1, dims) / np.sqrt(dims) * 3
                + rng.normal(0, 0.3, (k, dims))
            )
            bad[:k] = True
        feats.append(block)
        labels.append(np.full(n_per_class, c))
        truth.append(bad)
    return (
        torch.from_numpy(np.concatenate(feats)).float(),
        torch.from_numpy(np.concatenate(labels)).long(),
        torch.from_numpy(np.concatenate(truth)),
    )


@pytest.mark.parametrize("share", [0.1, 0.3])
def test_activation_clustering_finds_the_poisoned_cluster_and_only_it(share):
    f, y, truth = _latents(share)
    res = activation_clustering(f, y, seed=0)
    m = detection_metrics(res.flagged, truth)
    assert m["recall"] >= 0.95 and m["precision"] >= 0.95, m
    assert res.suspect_classes == [0]
    assert res.classes[0]["poisoned"] and not res.classes[1]["poisoned"]
    again = activation_clustering(f, y, seed=0)
    assert torch.equal(res.flagged, again.flagged)


def test_activation_clustering_flags_nothing_on_clean_latents():
    f, y, truth = _latents(0.0)
    assert not bool(truth.any())
    res = activation_clustering(f, y, seed=0)
    assert int(res.flagged.sum()) == 0 and res.suspect_classes == []


@pytest.mark.parametrize("scan", [spectral_signatures, spectre])
def test_spectral_scans_put_the_poisons_on_top(scan):
    f, y, truth = _latents(0.1)
    res = scan(f, y, eps=0.1, classes=[0])
    m = detection_metrics(res.flagged, truth)
    # 1.5 * eps * n = 30 flagged in class 0, which holds 20 poisons: all of them found
    assert m["recall"] == 1.0 and m["n_flagged"] == 30, m
    assert res.suspect_classes == [0]
    # without a class restriction every class loses its top 15%
    assert int(scan(f, y, eps=0.1).flagged.sum()) == 4 * 30


def test_scans_reject_bad_settings_and_shapes():
    f, y, _ = _latents(0.1)
    with pytest.raises(ConfigError, match=r"scan\.eps"):
        spectral_signatures(f, y, eps=0.9)
    with pytest.raises(ConfigError, match=r"scan\.max_relative_size"):
        activation_clustering(f, y, max_relative_size=0.7)
    with pytest.raises(DataError, match="expected features"):
        spectre(f, y[:-1])


def test_detection_metrics_by_hand():
    flagged = torch.tensor([True, True, False, False, True])
    truth = torch.tensor([True, False, True, False, False])
    m = detection_metrics(flagged, truth)
    assert m["precision"] == pytest.approx(1 / 3, abs=1e-4)
    assert m["recall"] == 0.5 and m["clean_flagged_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["f1"] == pytest.approx(0.4, abs=1e-4)


def test_exact_and_near_duplicates():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((50, 1, 8, 8), dtype=np.float32))
    y = torch.arange(50) % 10
    x[20] = x[3]  # exact copy, same label
    y[20] = y[3]
    x[30] = x[7]
    y[30] = (y[7] + 1) % 10  # exact copy, conflicting label
    x[40] = (x[11] + 0.005).clamp(0, 1)  # near copy (RMS 0.005)
    exact = exact_duplicates(x, y)
    assert [(d.index, d.of, d.label_conflict) for d in exact] == [(20, 3, False), (30, 7, True)]
    near = near_duplicates(x, y, tol=0.02)
    assert [(d.index, d.of) for d in near] == [(40, 11)]
    assert 0 < near[0].distance <= 0.0051
    assert near_duplicates(x, y, tol=0.001) == []


def test_confident_learning_flags_off_diagonal_examples():
    # 3 classes; example 0 is labelled 0 but confidently class 2; example 1 is unsure
    probs = torch.tensor(
        [
            [0.05, 0.05, 0.90],
            [0.40, 0.30, 0.30],
            [0.90, 0.05, 0.05],
            [0.80, 0.10, 0.10],
            [0.10, 0.80, 0.10],
            [0.10, 0.70, 0.20],
            [0.05, 0.05, 0.90],
            [0.10, 0.10, 0.80],
        ]
    )
    y = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    issues = label_issues(probs, y)
    assert issues.flagged.tolist() == [True, False, False, False, False, False, False, False]
    assert int(issues.suggested[0]) == 2
    assert float(issues.margin[0]) == pytest.approx(0.85)
    assert float(issues.thresholds[0]) == pytest.approx((0.05 + 0.4 + 0.9 + 0.8) / 4)


def test_quarantine_merges_reasons_and_round_trips_as_json(tmp_path):
    y = torch.tensor([0, 1, 2, 0, 1])
    a = (
        torch.tensor([True, False, True, False, False]),
        torch.tensor([0.9, 0, 0.7, 0, 0], dtype=torch.float64),
    )
    b = (torch.tensor([True, False, False, False, True]), torch.tensor([2.0, 0, 0, 0, 3.0]))
    q = build_quarantine(y, {"ac": a, "dup": b}, details={4: {"dup": {"of": 1}}})
    assert [e.index for e in q.entries] == [0, 2, 4]
    assert q.entries[0].reasons == ("ac", "dup") and q.entries[0].scores == {"ac": 0.9, "dup": 2.0}
    assert q.kept.tolist() == [1, 3]
    path = write_quarantine(q, tmp_path / "q.json", extra={"note": "drill"})
    doc = json.loads(path.read_text())
    assert doc["n_quarantined"] == 3 and doc["entries"][2]["details"] == {"dup": {"of": 1}}
    assert list(read_kept(path)) == [1, 3]
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataError, match="not a bastion quarantine file"):
        read_kept(tmp_path / "bad.json")
