"""Scans of a training set for poisons, run on the latent features of a model trained on it.

Each scan takes features ``(N, D)`` (see :func:`~bastion.poisoning.features.penultimate_features`)
and labels ``(N,)`` and returns a :class:`ScanResult`: a score per example (higher = more
suspect), the examples it flags, and a per-class summary. Nothing is dropped here: flagged
examples go to the quarantine (:mod:`bastion.poisoning.quarantine`) with their scores.

* :func:`activation_clustering` (Chen, Carvalho, Baracaldo, Ludwig, Edwards, Lee, Molloy and
  Srivastava 2018, "Detecting backdoor attacks on deep neural networks by activation
  clustering"): per class, reduce the activations to a few dimensions, split them in two with
  k-means and call a class poisoned when the smaller cluster is small and well separated
  (relative size and silhouette score); the smaller cluster of a poisoned class is flagged.
* :func:`spectral_signatures` (Tran, Li and Madry 2018, "Spectral signatures in backdoor
  attacks"): per class, score each example by its squared projection on the top singular
  vector of the centred features and flag the ``1.5 * eps * n`` highest.
* :func:`spectre` (Hayase, Kong, Somani and Oh 2021, "SPECTRE: defending against backdoor
  attacks using robust statistics"): per class, project on the top ``k`` singular directions,
  whiten with a robustly estimated mean and covariance (spectral filtering), and score by
  QUantum Entropy (QUE) outlier scores; flag the ``1.5 * eps * n`` highest.

All three are deterministic given their ``seed`` (k-means and the silhouette sample use it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bastion.errors import ConfigError, DataError


@dataclass(frozen=True, eq=False)
class ScanResult:
    """What a scan found.

    Attributes:
        method: the scan's name.
        scores: float64 ``(N,)``, higher is more suspect; comparable within one class only for
            the spectral scans.
        flagged: bool ``(N,)``, the examples the scan would quarantine.
        classes: per class index, a JSON-serialisable summary (sizes, statistics, verdict).
        settings: the scan's settings.
    """

    method: str
    scores: Tensor
    flagged: Tensor
    classes: dict[int, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def suspect_classes(self) -> list[int]:
        """Classes the scan judged poisoned (those with any flagged example)."""
        return sorted(c for c, s in self.classes.items() if s.get("flagged", 0) > 0)

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable: method, settings, number flagged, suspect classes, per class."""
        return {
            "method": self.method,
            "settings": dict(self.settings),
            "n_flagged": int(self.flagged.sum()),
            "suspect_classes": self.suspect_classes,
            "classes": {str(c): s for c, s in sorted(self.classes.items())},
        }


def _check(features: Tensor, labels: Tensor) -> tuple[np.ndarray, np.ndarray]:
    if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels):
        raise DataError(
            f"scan: expected features (N, D) and labels (N,), got {tuple(features.shape)} and "
            f"{tuple(labels.shape)}"
        )
    return features.detach().double().cpu().numpy(), labels.detach().cpu().numpy()


def _project(centred: np.ndarray, k: int) -> np.ndarray:
    """``centred`` (``(n, D)``) projected on its top-``k`` principal directions, from the
    eigenvectors of the ``(D, D)`` scatter matrix (cheap when ``n >> D``)."""
    _, evecs = np.linalg.eigh(centred.T @ centred)
    top = evecs[:, ::-1][:, :k]
    signs = np.sign(top.sum(axis=0))
    signs[signs == 0] = 1.0
    out: np.ndarray = centred @ (top * signs)
    return out


def _top_directions(centred: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` right singular vectors ``(D, k)`` and singular values of ``centred``."""
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    # a fixed sign per direction, so results do not depend on the LAPACK build
    signs = np.sign(vt[:k].sum(axis=1))
    signs[signs == 0] = 1.0
    return (vt[:k] * signs[:, None]).T, s[:k]


def _reduce(
    centred: np.ndarray,
    k: int,
    *,
    method: str,
    seed: int,
    fit_sample: int = 3000,
    projected: bool = False,
) -> np.ndarray:
    """``(n, k)``: ``centred`` (``(n, D)``) reduced by PCA or by FastICA (on the top-``k``
    principal subspace, whitened, so the independent components are unit-variance and a
    direction along which a small cluster sits apart stands out as strongly non-Gaussian)."""
    reduced = centred if projected else _project(centred, k)
    if method == "pca":
        return reduced
    scale = reduced.std(axis=0)
    scale[scale == 0] = 1.0
    white = reduced / scale  # PCA scores are uncorrelated: dividing by the spread whitens
    rng = np.random.default_rng(seed)
    fit_on = white
    if len(white) > fit_sample:  # the unmixing is learnt on a seeded sample, applied to all
        fit_on = white[np.sort(rng.choice(len(white), fit_sample, replace=False))]
    unmix = _fast_ica(fit_on, rng)
    out: np.ndarray = white @ unmix.T
    return out


def _fast_ica(
    white: np.ndarray, rng: np.random.Generator, iters: int = 200, tol: float = 1e-4
) -> np.ndarray:
    """Symmetric FastICA with the log-cosh contrast (Hyvarinen 1999) on whitened data
    ``(n, k)``; returns the orthogonal unmixing matrix ``(k, k)``, started from a random
    orthogonal matrix drawn from ``rng``."""

    def decorrelate(w: np.ndarray) -> np.ndarray:
        evals, evecs = np.linalg.eigh(w @ w.T)
        out: np.ndarray = evecs @ np.diag(1.0 / np.sqrt(np.clip(evals, 1e-12, None))) @ evecs.T @ w
        return out

    k = white.shape[1]
    w = decorrelate(rng.normal(size=(k, k)))
    for _ in range(iters):
        g = np.tanh(white @ w.T)  # (n, k)
        new = (g.T @ white) / len(white) - np.diag((1 - g**2).mean(axis=0)) @ w
        new = decorrelate(new)
        converged = float(np.max(np.abs(np.abs(np.einsum("ij,ij->i", new, w)) - 1))) < tol
        w = new
        if converged:
            break
    return w


def _silhouette(z: np.ndarray, assign: np.ndarray, rng: np.random.Generator, sample: int) -> float:
    """Mean silhouette (Rousseeuw 1987) of a two-cluster ``assign`` over a seeded sample of at
    most ``sample`` points of ``z`` (``(n, k)``)."""
    if len(z) > sample:
        pick = np.sort(rng.choice(len(z), sample, replace=False))
        z, assign = z[pick], assign[pick]
    sq = (z * z).sum(axis=1)
    dist = np.sqrt(np.clip(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0, None))
    values = np.zeros(len(z))
    for c in (0, 1):
        own = assign == c
        if own.sum() < 2 or (~own).sum() == 0:
            return 0.0
        a = dist[np.ix_(own, own)].sum(axis=1) / (own.sum() - 1)
        b = dist[np.ix_(own, ~own)].mean(axis=1)
        values[own] = (b - a) / np.maximum(np.maximum(a, b), 1e-12)
    return float(values.mean())


def _kmeans2(z: np.ndarray, rng: np.random.Generator, inits: int = 10) -> np.ndarray:
    """Two centroids ``(2, k)`` of ``z`` (``(n, k)``): Lloyd's algorithm from ``inits``
    k-means++ starts (Arthur and Vassilvitskii 2007) drawn from ``rng``; the lowest inertia
    wins."""
    best, best_inertia = z[:2].copy(), np.inf
    for _ in range(inits):
        first = z[rng.integers(len(z))]
        d2 = ((z - first) ** 2).sum(axis=1)
        total = d2.sum()
        second = z[rng.choice(len(z), p=d2 / total)] if total > 0 else z[rng.integers(len(z))]
        centres = np.stack([first, second])
        for _ in range(100):
            assign = (
                ((z - centres[1]) ** 2).sum(axis=1) < ((z - centres[0]) ** 2).sum(axis=1)
            ).astype(np.int64)
            moved = np.stack(
                [z[assign == j].mean(axis=0) if (assign == j).any() else centres[j] for j in (0, 1)]
            )
            if np.allclose(moved, centres):
                break
            centres = moved
        inertia = ((z - centres[assign]) ** 2).sum()
        if inertia < best_inertia:
            best, best_inertia = centres, inertia
    return best


@dataclass(frozen=True, eq=False)
class _Split:
    small: np.ndarray  # bool (n,): members of the smaller cluster
    relative: float
    silhouette: float
    scores: np.ndarray


def _two_means(
    reduced: np.ndarray, seed: int, silhouette_sample: int, fit_sample: int = 3000
) -> _Split:
    """2-means on ``reduced`` (``(n, k)``): the smaller cluster, its relative size, the
    silhouette score (on a seeded sample) and each point's normalised margin towards it."""
    rng = np.random.default_rng(seed)
    fit_on = reduced
    if len(reduced) > fit_sample:  # centroids from a seeded sample, assignments for all
        fit_on = reduced[np.sort(rng.choice(len(reduced), fit_sample, replace=False))]
    centres = _kmeans2(fit_on, rng)
    assign = np.argmin(
        ((reduced[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2), axis=1
    ).astype(np.int64)
    sizes = np.bincount(assign, minlength=2)
    small = int(np.argmin(sizes))
    sil = 0.0 if sizes.min() == 0 else _silhouette(reduced, assign, rng, silhouette_sample)
    c_small, c_big = centres[small], centres[1 - small]
    gap = float(np.linalg.norm(c_small - c_big)) or 1.0
    d_small = np.linalg.norm(reduced - c_small, axis=1)
    d_big = np.linalg.norm(reduced - c_big, axis=1)
    return _Split(assign == small, float(sizes[small] / len(reduced)), sil, (d_big - d_small) / gap)


def _class_views(
    feats: np.ndarray, dims: int, views: tuple[str, ...], seed: int, silhouette_sample: int
) -> list[_Split]:
    """One class's features ``(n, D)``, centred and reduced to ``min(dims, D, n - 1)``
    dimensions per view (``pca``, ``ica``), each split by :func:`_two_means`."""
    centred = feats - feats.mean(axis=0)
    k = min(dims, centred.shape[1], len(feats) - 1)
    projected = _project(centred, k)
    return [
        _two_means(
            _reduce(projected, k, method=v, seed=seed, projected=True), seed, silhouette_sample
        )
        for v in views
    ]


def _class_record(n: int, pick: _Split, views: dict[str, _Split], poisoned: bool) -> dict[str, Any]:
    """A class's JSON record in :func:`activation_clustering`'s result."""
    return {
        "n": n,
        "relative_size": round(pick.relative, 4),
        "silhouette": round(pick.silhouette, 4),
        "views": {
            view: {"relative_size": round(v.relative, 4), "silhouette": round(v.silhouette, 4)}
            for view, v in views.items()
        },
        "poisoned": poisoned,
        "flagged": int(pick.small.sum()) if poisoned else 0,
    }


def activation_clustering(
    features: Tensor,
    labels: Tensor,
    *,
    dims: int = 10,
    reduction: str = "both",
    max_relative_size: float = 0.35,
    min_silhouette: float = 0.25,
    seed: int = 0,
    silhouette_sample: int = 1000,
) -> ScanResult:
    """Activation clustering (Chen et al. 2018).

    For every class with at least 10 examples: centre its features and reduce them to
    ``dims`` dimensions, split them with 2-means (``random_state=seed``, 10 inits) and compute
    the smaller cluster's relative size and the silhouette score (on at most
    ``silhouette_sample`` points). The class is judged poisoned when the smaller cluster holds
    at most ``max_relative_size`` of the class and the silhouette is at least
    ``min_silhouette``; its smaller cluster is flagged.

    ``reduction``: ``"ica"`` (the paper's FastICA on the top principal subspace: a small,
    distant cluster is a strongly non-Gaussian direction and dominates once the components are
    whitened; this finds a poison share of ~10% of a class), ``"pca"`` (the top principal
    directions unwhitened: a large poison share, ~30% of a class, is a top variance direction
    but a weak non-Gaussian one), or ``"both"`` (the default: a class is poisoned when either
    view passes both tests; the passing view with the higher silhouette is reported and
    flags). ``scores`` is, for each example, how much closer it lies to the smaller centroid
    than to the larger one, divided by the centroid distance (positive = on the small
    cluster's side).
    """
    if reduction not in ("ica", "pca", "both"):
        raise ConfigError(f"scan.reduction: expected ica, pca or both, got {reduction!r}")
    if not 0 < max_relative_size <= 0.5:
        raise ConfigError(
            f"scan.max_relative_size: expected a number in (0, 0.5], got {max_relative_size!r}"
        )
    if dims < 1:
        raise ConfigError(f"scan.dims: expected an integer >= 1, got {dims!r}")
    feats, ys = _check(features, labels)
    n = len(ys)
    scores = np.zeros(n)
    flagged = np.zeros(n, dtype=bool)
    classes: dict[int, dict[str, Any]] = {}
    views = ("pca", "ica") if reduction == "both" else (reduction,)
    for c in np.unique(ys):
        idx = np.flatnonzero(ys == c)
        if len(idx) < 10:
            classes[int(c)] = {"n": len(idx), "skipped": "fewer than 10 examples", "flagged": 0}
            continue
        verdicts = _class_views(feats[idx], dims, views, seed, silhouette_sample)
        # the view with the best-separated small cluster speaks for the class
        passing = [
            v
            for v in verdicts
            if v.relative <= max_relative_size and v.silhouette >= min_silhouette
        ]
        pick = max(passing or verdicts, key=lambda v: v.silhouette)
        scores[idx] = pick.scores
        poisoned = bool(passing)
        if poisoned:
            flagged[idx[pick.small]] = True
        classes[int(c)] = _class_record(
            len(idx), pick, dict(zip(views, verdicts, strict=True)), poisoned
        )
    settings = {
        "dims": dims,
        "reduction": reduction,
        "max_relative_size": max_relative_size,
        "min_silhouette": min_silhouette,
        "seed": seed,
    }
    return ScanResult(
        "activation-clustering",
        torch.from_numpy(scores),
        torch.from_numpy(flagged),
        classes,
        settings,
    )


def _check_eps(eps: float) -> float:
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 < eps <= 0.5:
        raise ConfigError(
            f"scan.eps: expected an upper bound on the poison rate in (0, 0.5], got {eps!r}"
        )
    return float(eps)


def _flag_top(
    method: str,
    scores: np.ndarray,
    ys: np.ndarray,
    eps: float,
    classes_to_scan: set[int] | None,
    extra: dict[int, dict[str, Any]],
    settings: dict[str, Any],
) -> ScanResult:
    flagged = np.zeros(len(ys), dtype=bool)
    classes: dict[int, dict[str, Any]] = {}
    for c in np.unique(ys):
        idx = np.flatnonzero(ys == c)
        info = {"n": len(idx), **extra.get(int(c), {})}
        if classes_to_scan is not None and int(c) not in classes_to_scan:
            info["flagged"] = 0
            classes[int(c)] = info
            continue
        count = min(len(idx), math.floor(1.5 * eps * len(idx) + 0.5))
        top = idx[np.argsort(-scores[idx], kind="stable")[:count]]
        flagged[top] = True
        info["flagged"] = count
        classes[int(c)] = info
    return ScanResult(
        method, torch.from_numpy(scores), torch.from_numpy(flagged), classes, settings
    )


def spectral_signatures(
    features: Tensor,
    labels: Tensor,
    *,
    eps: float = 0.05,
    classes: list[int] | None = None,
    seed: int = 0,
) -> ScanResult:
    """Spectral signatures (Tran et al. 2018).

    Per class ``c`` with ``n_c >= 2`` examples: centre the features, take the top right
    singular vector ``v``, score each example by ``((f - mean) . v)^2`` and flag the
    ``round(1.5 * eps * n_c)`` highest (``eps``: an upper bound on the poison rate of a class).
    ``classes`` restricts flagging to those classes (scores are computed for all). The summary
    holds, per class, the share of variance along ``v``. ``seed`` is unused (the method is
    deterministic) and recorded for uniformity.
    """
    eps = _check_eps(eps)
    feats, ys = _check(features, labels)
    scores = np.zeros(len(ys))
    extra: dict[int, dict[str, Any]] = {}
    for c in np.unique(ys):
        idx = np.flatnonzero(ys == c)
        if len(idx) < 2:
            continue
        centred = feats[idx] - feats[idx].mean(axis=0)
        direction, sv = _top_directions(centred, 1)
        scores[idx] = (centred @ direction[:, 0]) ** 2
        total = float((centred**2).sum()) or 1.0
        extra[int(c)] = {"top_variance_share": round(float(sv[0] ** 2) / total, 4)}
    settings = {"eps": eps, "classes": classes, "seed": seed}
    return _flag_top(
        "spectral-signatures",
        scores,
        ys,
        eps,
        None if classes is None else set(classes),
        extra,
        settings,
    )


def _robust_mean_cov(z: np.ndarray, eps: float, rounds: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of ``z`` (``(n, k)``) by spectral filtering (in the spirit of the
    robust estimators SPECTRE builds on, Diakonikolas et al. 2017): over ``rounds`` rounds,
    drop in all a ``1.5 * eps`` share of the points, each round those with the largest squared
    projection on the top eigenvector of the current covariance (where a cluster of outliers
    inflates the variance)."""
    keep = np.ones(len(z), dtype=bool)
    n_drop = math.floor(1.5 * eps * len(z))
    per_round = [n_drop // rounds + (1 if r < n_drop % rounds else 0) for r in range(rounds)]
    for count in per_round:
        if count == 0:
            continue
        kept = np.flatnonzero(keep)
        centred = z[kept] - z[kept].mean(axis=0)
        _, evecs = np.linalg.eigh(centred.T @ centred)
        proj = (centred @ evecs[:, -1]) ** 2
        keep[kept[np.argsort(-proj, kind="stable")[:count]]] = False
    mean = z[keep].mean(axis=0)
    cov = np.cov(z[keep], rowvar=False).reshape(z.shape[1], z.shape[1])
    return mean, cov + 1e-6 * np.eye(z.shape[1])


def spectre(
    features: Tensor,
    labels: Tensor,
    *,
    eps: float = 0.05,
    dims: int = 32,
    alpha: float = 4.0,
    classes: list[int] | None = None,
    seed: int = 0,
) -> ScanResult:
    """SPECTRE-style scan (Hayase et al. 2021).

    Per class: centre, project on the top ``dims`` singular directions, estimate mean and
    covariance robustly (spectral filtering of a ``1.5 * eps`` share, in place of the paper's
    robust estimator), whiten, and score each whitened point ``h`` by QUE,
    ``h^T Q h / tr(Q)`` with ``Q = exp(alpha (S - I) / (||S||_2 - 1))`` and ``S`` the
    covariance of the whitened points (the paper's ``alpha = 4``). Flags the
    ``round(1.5 * eps * n_c)`` highest per class (or per class of ``classes``). The summary
    holds, per class, ``||S||_2`` (about 1 for a clean class).
    """
    eps = _check_eps(eps)
    if dims < 1 or alpha <= 0:
        raise ConfigError(f"scan: expected dims >= 1 and alpha > 0, got {dims!r}, {alpha!r}")
    feats, ys = _check(features, labels)
    scores = np.zeros(len(ys))
    extra: dict[int, dict[str, Any]] = {}
    for c in np.unique(ys):
        idx = np.flatnonzero(ys == c)
        k = min(dims, feats.shape[1], len(idx) - 2)
        if k < 1:
            continue
        centred = feats[idx] - feats[idx].mean(axis=0)
        directions, _ = _top_directions(centred, k)
        z = centred @ directions
        mean, cov = _robust_mean_cov(z, eps)
        evals, evecs = np.linalg.eigh(cov)
        evals = np.clip(evals, 1e-9, None)
        whiten = evecs @ np.diag(evals**-0.5) @ evecs.T
        h = (z - mean) @ whiten
        s = np.cov(h, rowvar=False).reshape(k, k)
        top = float(np.linalg.eigvalsh(s)[-1])
        q = torch.linalg.matrix_exp(
            torch.from_numpy(alpha * (s - np.eye(k)) / max(top - 1.0, 1e-6))
        ).numpy()
        scores[idx] = np.einsum("ij,jk,ik->i", h, q, h) / float(np.trace(q))
        extra[int(c)] = {"whitened_top_eigenvalue": round(top, 4)}
    settings = {"eps": eps, "dims": dims, "alpha": alpha, "classes": classes, "seed": seed}
    return _flag_top(
        "spectre", scores, ys, eps, None if classes is None else set(classes), extra, settings
    )


def detection_metrics(flagged: Tensor, truth: Tensor) -> dict[str, float]:
    """Precision, recall, F1 of ``flagged`` against the poisoned mask ``truth`` (both bool
    ``(N,)``), and the share of clean examples flagged (``clean_flagged_rate``)."""
    f, t = flagged.bool(), truth.bool()
    tp = int((f & t).sum())
    fp = int((f & ~t).sum())
    fn = int((~f & t).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n_clean = int((~t).sum())
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "clean_flagged_rate": round(fp / n_clean, 4) if n_clean else 0.0,
        "n_flagged": tp + fp,
        "n_poisoned": tp + fn,
    }
