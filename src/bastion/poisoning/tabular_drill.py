"""The feature-pattern drill on a tabular data set: poison, train, scan, retrain, verify.

:func:`tabular_backdoor_drill` builds a :class:`~.tabular_backdoor.FeaturePattern` from the
clean training split, poisons it (:func:`~.tabular_backdoor.feature_pattern_poison`), trains
the tabular MLP of :mod:`bastion.tabular` (standard objective, Adam with a cosine schedule) on
it, measures clean accuracy and attack success, scans the training split (the feature-value
scan, and activation clustering, spectral signatures and SPECTRE on the penultimate features),
retrains from the same seed on the rows the scans in ``quarantine_by`` kept, and measures
again; a model trained on the clean split gives the attack's baseline and the feature-value
scan's false alarms on clean data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bastion.data.core import Dataset
from bastion.errors import ConfigError
from bastion.poisoning.features import penultimate_features
from bastion.poisoning.scans import (
    activation_clustering,
    detection_metrics,
    spectral_signatures,
    spectre,
)
from bastion.poisoning.tabular_backdoor import (
    feature_pattern_poison,
    feature_pattern_trigger,
    feature_value_scan,
    pattern_attack_success,
)
from bastion.tabular.threat import TabularThreat
from bastion.tabular.training import build_tabular_mlp, tabular_train_settings, train_tabular_mlp
from bastion.training.trainer import accuracy

TABULAR_SCANS = ("feature-value", "activation-clustering", "spectral-signatures", "spectre")


@dataclass(frozen=True)
class TabularDrillSettings:
    """Settings of :func:`tabular_backdoor_drill`: poison rate, target class, the number of
    trigger features ``k``, MLP training epochs, the scans that quarantine, and the spectral
    scans' ``eps`` (None: the true poison share of the target class, their best case)."""

    rate: float = 0.01
    target: int = 0
    k: int = 3
    epochs: int = 30
    quarantine_by: tuple[str, ...] = ("feature-value",)
    spectral_eps: float | None = None
    seed: int = 0


def train_mlp(data: Dataset, x: Tensor, y: Tensor, seed: int, epochs: int) -> nn.Module:
    """The drill's tabular MLP (64-64, seeded weights) trained on rows ``x`` ``(N, D)`` and
    labels ``y`` ``(N,)`` with the standard objective; ``data`` gives the schema, the
    normalisation and the validation split. Returned in eval mode."""
    if data.schema is None:
        raise ConfigError("data: expected a tabular data set with a schema")
    model = build_tabular_mlp(
        x.shape[1], len(data.classes), mean=tuple(data.mean), std=tuple(data.std), seed=seed
    )
    threat = TabularThreat(norm="linf", eps=0.05, schema=data.schema)
    settings = tabular_train_settings(adversarial=False, epochs=epochs)
    train_tabular_mlp(model, threat, settings, (x, y, data.val.x, data.val.y), seed=seed)
    return model.eval()


def tabular_backdoor_drill(
    data: Dataset,
    settings: TabularDrillSettings,
    *,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the drill on a tabular ``data`` set (with a schema). Returns a JSON-ready dict: the
    trigger, the clean model's and the undefended model's clean accuracy and attack success,
    per scan its detection metrics, the quarantine, and the retrained model's figures."""
    if data.schema is None:
        raise ConfigError("data: expected a tabular data set with a schema")
    if not set(settings.quarantine_by) <= set(TABULAR_SCANS):
        raise ConfigError(f"quarantine_by: expected names from {', '.join(TABULAR_SCANS)}")
    say = log or (lambda _m: None)
    t0 = time.perf_counter()
    train, test = data.train, data.test
    k = len(data.classes)
    pattern = feature_pattern_trigger(data.schema, train.x, k=settings.k)
    p = feature_pattern_poison(
        train.x, train.y, pattern, rate=settings.rate, num_classes=k,
        target=settings.target, seed=settings.seed,
    )  # fmt: skip

    def measure(model: nn.Module) -> dict[str, Any]:
        return {
            "clean_accuracy": round(accuracy(model, test.x, test.y), 4),
            **pattern_attack_success(model, test.x, test.y, pattern, target=settings.target),
        }

    say(f"trigger {pattern.to_dict()['values']}; {int(p.poisoned.sum())} poisoned rows")
    clean_model = train_mlp(data, train.x, train.y, settings.seed, settings.epochs)
    clean = measure(clean_model)
    on_clean = feature_value_scan(clean_model, train.x, train.y, data.schema)
    clean["value_scan_flagged"] = int(on_clean.flagged.sum())
    clean["value_scan_cells"] = on_clean.flagged_names
    victim = train_mlp(data, p.x, p.y, settings.seed, settings.epochs)
    undefended = measure(victim)
    say(f"clean model {clean}; undefended {undefended}")
    share = float(p.poisoned.sum()) / max(1, int((p.y == settings.target).sum()))
    eps = settings.spectral_eps or min(0.5, max(share, 0.005))
    feats = penultimate_features(victim, p.x)
    flags: dict[str, Tensor] = {}
    scans: dict[str, Any] = {}
    runs: list[tuple[str, Callable[[], Any]]] = [
        ("feature-value", lambda: feature_value_scan(victim, p.x, p.y, data.schema)),  # type: ignore[arg-type]
        ("activation-clustering", lambda: activation_clustering(feats, p.y, seed=settings.seed)),
        ("spectral-signatures", lambda: spectral_signatures(feats, p.y, eps=eps)),
        ("spectre", lambda: spectre(feats, p.y, eps=eps)),
    ]
    for name, run in runs:
        t = time.perf_counter()
        res = run()
        flags[name] = res.flagged
        scans[name] = {
            **detection_metrics(res.flagged, p.poisoned),
            "seconds": round(time.perf_counter() - t, 2),
        }
        if name == "feature-value":
            scans[name]["flagged_cells"] = res.flagged_names
        elif name != "activation-clustering":
            scans[name]["eps"] = round(eps, 4)
    say(f"scans: { {n: (s['recall'], s['clean_flagged_rate']) for n, s in scans.items()} }")
    removed = torch.zeros(len(p.y), dtype=torch.bool)
    for name in settings.quarantine_by:
        removed |= flags[name]
    kept = torch.nonzero(~removed).flatten()
    retrained = measure(train_mlp(data, p.x[kept], p.y[kept], settings.seed, settings.epochs))
    say(f"retrained on {len(kept)} rows: {retrained}")
    return {
        "data": data.name,
        "trigger": pattern.to_dict(),
        "attack": {k_: v for k_, v in p.record().items() if k_ != "indices"},
        "train_examples": len(p.y),
        "test_examples": len(test.y),
        "clean_model": clean,
        "undefended": undefended,
        "scans": scans,
        "quarantine_by": list(settings.quarantine_by),
        "quarantined": detection_metrics(removed, p.poisoned),
        "retrained": {"kept": len(kept), **retrained},
        "seconds": round(time.perf_counter() - t0, 1),
    }
