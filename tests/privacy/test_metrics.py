from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bastion.errors import ConfigError
from bastion.privacy.metrics import auc, membership_report, roc_curve, tpr_at_fpr


def test_roc_points_of_a_small_example() -> None:
    fpr, tpr = roc_curve([4.0, 3.0, 2.0, 1.0], [True, False, True, False])
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert auc(fpr, tpr) == pytest.approx(0.75)
    assert tpr_at_fpr(fpr, tpr, 0.0) == 0.5
    assert tpr_at_fpr(fpr, tpr, 0.5) == 1.0


def test_ties_form_one_point_and_count_half() -> None:
    fpr, tpr = roc_curve([1.0, 1.0, 1.0, 1.0], [True, False, True, False])
    assert fpr.tolist() == [0.0, 1.0] and tpr.tolist() == [0.0, 1.0]
    assert auc(fpr, tpr) == pytest.approx(0.5)


def test_auc_agrees_with_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    labels = rng.random(2000) < 0.4
    scores = rng.normal(size=2000) + labels * 0.7
    scores[:200] = np.round(scores[:200])  # some ties
    report = membership_report(scores, labels)
    assert report["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert report["members"] == int(labels.sum())
    assert report["min_fpr"] == pytest.approx(1 / int((~labels).sum()))
    assert 0 <= report["tpr_at_0.1pct_fpr"] <= report["tpr_at_1pct_fpr"] <= 1
    assert len(report["roc"]["fpr"]) <= 200
    assert report["roc"]["fpr"][0] == 0.0 and report["roc"]["tpr"][-1] == 1.0


def test_perfect_and_reversed_attacks() -> None:
    labels = np.r_[np.ones(1000, bool), np.zeros(1000, bool)]
    scores = np.r_[np.linspace(2, 3, 1000), np.linspace(0, 1, 1000)]
    good = membership_report(scores, labels)
    assert good["auc"] == 1.0 and good["tpr_at_0.1pct_fpr"] == 1.0
    assert good["balanced_accuracy"] == 1.0
    bad = membership_report(-scores, labels)
    assert bad["auc"] == 0.0 and bad["tpr_at_1pct_fpr"] == 0.0


def test_bad_input_names_what_is_wrong() -> None:
    with pytest.raises(ConfigError, match="both members and non-members"):
        membership_report([1.0, 2.0], [True, True])
    with pytest.raises(ConfigError, match="one score per example"):
        membership_report([1.0, 2.0, 3.0], [True, False])
    with pytest.raises(ConfigError, match="finite"):
        membership_report([1.0, float("nan")], [True, False])
