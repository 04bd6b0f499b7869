"""ROC figures of a membership-inference attack, as Carlini et al. 2022 ask them reported.

"Membership inference attacks from first principles" (Carlini, Chien, Nasr, Song, Terzis and
Tramer, IEEE S&P 2022) argues that an attack's average accuracy or AUC hides what matters: how
many members it identifies with *high confidence*. So every attack here reports the full ROC
curve (log-scale friendly), the true-positive rate at 0.1% and 1% false-positive rate, and the
AUC beside it.

Scores are "higher means more likely a member". ``tpr_at_fpr(f)`` is the largest TPR of any
threshold whose FPR is at most ``f`` (0.0 when no threshold reaches it, e.g. with fewer than
``1 / f`` non-members and a top-scored non-member).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from bastion.errors import ConfigError

__all__ = ["auc", "membership_report", "roc_curve", "tpr_at_fpr"]

FloatArray = npt.NDArray[np.float64]


def _check(scores: npt.ArrayLike, is_member: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    m = np.asarray(is_member).reshape(-1)
    if s.shape != m.shape:
        raise ConfigError(
            f"membership scores: expected one score per example, got {s.shape[0]} scores for "
            f"{m.shape[0]} membership labels"
        )
    if not np.isfinite(s).all():
        raise ConfigError("membership scores: expected finite scores, got NaN or infinity")
    mb = m.astype(bool)
    if mb.all() or not mb.any():
        raise ConfigError(
            "membership labels: expected both members and non-members, got only "
            + ("members" if mb.all() else "non-members")
        )
    return s, mb.astype(np.float64)


def roc_curve(scores: npt.ArrayLike, is_member: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """``(fpr, tpr)``, each ``(K,)``, one point per distinct score (ties form one point),
    from ``(0, 0)`` (threshold above every score) to ``(1, 1)``, FPR non-decreasing.

    Args:
        scores: ``(N,)`` membership scores, higher = more likely a member.
        is_member: ``(N,)`` booleans.
    """
    s, m = _check(scores, is_member)
    order = np.argsort(-s, kind="stable")
    s, m = s[order], m[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(m)[last_of_tie]
    fp = np.cumsum(1.0 - m)[last_of_tie]
    tpr = np.r_[0.0, tp / m.sum()]
    fpr = np.r_[0.0, fp / (1.0 - m).sum()]
    return fpr, tpr


def auc(fpr: FloatArray, tpr: FloatArray) -> float:
    """The area under a ROC curve by the trapezoid rule (ties count half, as in the
    Mann-Whitney statistic)."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def tpr_at_fpr(fpr: FloatArray, tpr: FloatArray, target: float) -> float:
    """The largest TPR over ROC points with FPR <= ``target``."""
    ok = fpr <= target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def _thin(fpr: FloatArray, tpr: FloatArray, points: int) -> tuple[list[float], list[float]]:
    """At most ``points`` ROC points, log-spaced in FPR (the low-FPR end is what matters),
    always keeping the first and last."""
    if fpr.shape[0] <= points:
        return [float(v) for v in fpr], [float(v) for v in tpr]
    grid = np.r_[0.0, np.logspace(-5, 0, points - 1)]
    idx = np.unique(np.searchsorted(fpr, grid, side="right") - 1)
    idx = np.unique(np.r_[0, idx, fpr.shape[0] - 1])
    return [float(v) for v in fpr[idx]], [float(v) for v in tpr[idx]]


def membership_report(
    scores: npt.ArrayLike, is_member: npt.ArrayLike, *, roc_points: int = 200
) -> dict[str, Any]:
    """The figures of one attack: ``auc``, ``tpr_at_0.1pct_fpr``, ``tpr_at_1pct_fpr``,
    ``balanced_accuracy`` (the best threshold's), the counts, and ``roc`` (``fpr``/``tpr``
    lists thinned to at most ``roc_points`` log-spaced points).

    ``min_fpr`` is ``1 / non-members``: a TPR at a smaller FPR than that rests on no evidence
    (the figure at 0.1% FPR then means "at zero false positives").
    """
    s, m = _check(scores, is_member)
    fpr, tpr = roc_curve(s, m)
    thin_f, thin_t = _thin(fpr, tpr, roc_points)
    negatives = int((1.0 - m).sum())
    return {
        "auc": auc(fpr, tpr),
        "tpr_at_0.1pct_fpr": tpr_at_fpr(fpr, tpr, 0.001),
        "tpr_at_1pct_fpr": tpr_at_fpr(fpr, tpr, 0.01),
        "balanced_accuracy": float(np.max(1.0 - (fpr + (1.0 - tpr)) / 2.0)),
        "members": int(m.sum()),
        "non_members": negatives,
        "min_fpr": 1.0 / negatives,
        "roc": {"fpr": thin_f, "tpr": thin_t},
    }
