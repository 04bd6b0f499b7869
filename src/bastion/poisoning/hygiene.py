"""Data hygiene before training: duplicates and likely label errors.

* :func:`exact_duplicates`: inputs whose bytes are identical (hash, then byte comparison).
* :func:`near_duplicates`: pairs whose root-mean-square pixel difference is at most ``tol``;
  candidates come from a PCA projection (a lower bound on the true distance, so no pair is
  missed) and are confirmed on the full inputs.
* :func:`label_issues`: confident learning (Northcutt, Jiang and Chuang 2021, "Confident
  learning: estimating uncertainty in dataset labels"): with out-of-sample predicted
  probabilities ``P`` (``(N, K)``, e.g. from :func:`cross_val_probs`), class ``j``'s threshold
  ``t_j`` is the mean of ``P[:, j]`` over examples labelled ``j``; an example labelled ``y`` is
  confidently of class ``j`` when ``P[i, j] >= t_j`` (the most probable such ``j``), and it
  is a likely label error when that ``j`` differs from ``y`` (an off-diagonal entry of the
  confident joint). Its score is the self-confidence margin ``max_j P[i, j] - P[i, y]``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bastion.errors import ConfigError, DataError
from bastion.poisoning.features import predict_proba
from bastion.poisoning.training import train_classifier


@dataclass(frozen=True)
class Duplicate:
    """Example ``index`` repeats example ``of`` (the earliest of its group); ``distance`` is
    the RMS difference (0 for exact copies); ``label_conflict``: their labels differ."""

    index: int
    of: int
    distance: float
    label_conflict: bool


def exact_duplicates(x: Tensor, y: Tensor) -> list[Duplicate]:
    """Every example (``x``: ``(N, ...)``, ``y``: ``(N,)``) whose input bytes equal those of
    an earlier one, paired with the earliest copy; sorted by index."""
    if len(x) != len(y):
        raise DataError(f"duplicates: {len(x)} inputs but {len(y)} labels")
    flat = x.detach().cpu().contiguous().numpy().reshape(len(x), -1)
    first: dict[bytes, list[int]] = {}
    out: list[Duplicate] = []
    labels = y.tolist()
    for i in range(len(flat)):
        row = flat[i].tobytes()
        key = hashlib.blake2b(row, digest_size=16).digest()
        group = first.setdefault(key, [])
        match = next((j for j in group if flat[j].tobytes() == row), None)
        if match is None:
            group.append(i)
        else:
            out.append(Duplicate(i, match, 0.0, labels[i] != labels[match]))
    return out


def near_duplicates(
    x: Tensor, y: Tensor, *, tol: float = 0.02, dims: int = 32, block: int = 2048
) -> list[Duplicate]:
    """Examples within RMS distance ``tol`` (``||a - b||_2 / sqrt(D) <= tol``) of an earlier
    example that are not exact copies, each paired with its nearest earlier such example.

    Candidates are found in the top-``dims`` PCA projection (distances there never exceed the
    true ones) in blocks of ``block`` rows, then confirmed on the full inputs. Cost: about
    ``N^2 * dims`` multiply-adds.
    """
    if tol < 0:
        raise ConfigError(f"hygiene.near_tol: expected a number >= 0, got {tol!r}")
    n = len(x)
    if n < 2:
        return []
    flat = x.detach().reshape(n, -1).float()
    d = flat.shape[1]
    radius = tol * d**0.5
    centred = flat - flat.mean(dim=0)
    k = min(dims, d, n)
    sample = centred[torch.linspace(0, n - 1, min(n, 5000)).long()]
    _, _, v = torch.linalg.svd(sample, full_matrices=False)
    z = centred @ v[:k].T
    sq = (z * z).sum(dim=1)
    labels = y.tolist()
    out: list[Duplicate] = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        zb = z[start:stop]
        # squared distances to all earlier rows (and the block's own earlier rows)
        dist2 = (sq[start:stop, None] + sq[None, :stop] - 2 * zb @ z[:stop].T).clamp_min(0)
        rows = torch.arange(start, stop)[:, None]
        dist2[torch.arange(stop)[None, :] >= rows] = float("inf")
        cand_r, cand_c = torch.nonzero(dist2 <= (radius + 1e-6) ** 2 * 1.0001, as_tuple=True)
        best: dict[int, tuple[float, int]] = {}
        for r, c in zip(cand_r.tolist(), cand_c.tolist(), strict=True):
            i = start + r
            true = float((flat[i] - flat[c]).norm())
            if 0 < true <= radius and (i not in best or true < best[i][0]):
                best[i] = (true, c)
        for i in sorted(best):
            true, c = best[i]
            out.append(Duplicate(i, c, true / d**0.5, labels[i] != labels[c]))
    return out


@dataclass(frozen=True, eq=False)
class LabelIssues:
    """Likely label errors found by confident learning.

    Attributes:
        flagged: bool ``(N,)``.
        suggested: int64 ``(N,)``, the confidently predicted class (``-1`` where none).
        margin: float64 ``(N,)``, ``max_j P[i, j] - P[i, y_i]`` (0 for a confident label).
        thresholds: float64 ``(K,)``, the per-class thresholds ``t_j``.
    """

    flagged: Tensor
    suggested: Tensor
    margin: Tensor
    thresholds: Tensor


def label_issues(probs: Tensor, y: Tensor) -> LabelIssues:
    """Confident learning's off-diagonal of the confident joint (Northcutt et al. 2021) for
    out-of-sample probabilities ``probs`` (``(N, K)``) and given labels ``y`` (``(N,)``)."""
    if probs.ndim != 2 or len(probs) != len(y):
        raise DataError(
            f"label_issues: expected probs (N, K) and labels (N,), got {tuple(probs.shape)} and "
            f"{tuple(y.shape)}"
        )
    p = probs.double()
    k = p.shape[1]
    thresholds = torch.zeros(k, dtype=torch.float64)
    for j in range(k):
        members = y == j
        thresholds[j] = p[members, j].mean() if bool(members.any()) else 1.0
    confident = p >= thresholds[None, :]
    masked = torch.where(confident, p, torch.full_like(p, -1.0))
    best = masked.argmax(dim=1)
    has = confident.any(dim=1)
    suggested = torch.where(has, best, torch.full_like(best, -1))
    flagged = has & (best != y)
    given = p.gather(1, y[:, None]).squeeze(1)
    margin = (p.max(dim=1).values - given).clamp_min(0)
    return LabelIssues(flagged, suggested, margin, thresholds)


def cross_val_probs(
    x: Tensor,
    y: Tensor,
    *,
    architecture: str,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    folds: int = 3,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 0.05,
    seed: int = 0,
) -> Tensor:
    """Out-of-sample softmax probabilities ``(N, K)``: ``x`` is cut into ``folds`` seeded
    random folds and each fold is scored by a model trained on the others
    (:func:`~bastion.poisoning.training.train_classifier`, seed ``seed + fold``)."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"hygiene.folds: expected an integer >= 2, got {folds!r}")
    if len(y) < folds:
        raise DataError(f"cross_val_probs: {len(y)} examples cannot fill {folds} folds")
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)).astype(np.int64))
    parts = order.tensor_split(folds)
    probs = torch.zeros(len(y), num_classes)
    for f, held in enumerate(parts):
        rest = torch.cat([parts[g] for g in range(folds) if g != f])
        model = train_classifier(
            x[rest],
            y[rest],
            x[held],
            y[held],
            architecture=architecture,
            num_classes=num_classes,
            mean=mean,
            std=std,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed + f,
        )
        probs[held] = predict_proba(model, x[held])
    return probs
