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

from torch import Tensor, nn

from bastion.data.core import Dataset
from bastion.errors import ConfigError
from bastion.poisoning.attacks import PoisonedSet
from bastion.poisoning.drill import ScanOutcome, run_drill
from bastion.poisoning.features import penultimate_features
from bastion.poisoning.scans import (
    activation_clustering,
    spectral_signatures,
    spectre,
)
from bastion.poisoning.tabular_backdoor import (
    FeaturePattern,
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


@dataclass(eq=False)
class TabularDrillChannel:
    """The tabular channel's hooks for :func:`~.drill.run_drill`: ``p`` is the poisoned
    training split of ``data`` (validation picks the best epoch, test measures), ``pattern``
    the trigger. Scans: the feature-value scan on the rows, and activation clustering,
    spectral signatures and SPECTRE on the penultimate features (``eps``: the settings', else
    the true poison share of the target class, their best case). ``scan_names`` selects scans
    (all when None)."""

    data: Dataset
    p: PoisonedSet
    pattern: FeaturePattern
    settings: TabularDrillSettings
    scan_names: tuple[str, ...] | None = None

    @property
    def labels(self) -> Tensor:
        return self.p.y

    @property
    def truth(self) -> Tensor:
        return self.p.poisoned

    def train(self, kept: Tensor | None) -> nn.Module:
        x, y = (self.p.x, self.p.y) if kept is None else (self.p.x[kept], self.p.y[kept])
        return train_mlp(self.data, x, y, self.settings.seed, self.settings.epochs)

    def measure(self, trained: nn.Module) -> dict[str, Any]:
        test = self.data.test
        return {
            "clean_accuracy": round(accuracy(trained, test.x, test.y), 4),
            **pattern_attack_success(
                trained, test.x, test.y, self.pattern, target=self.settings.target
            ),
        }

    def eps(self) -> float:
        """The spectral scans' poison-share bound."""
        p, target = self.p, self.settings.target
        share = float(p.poisoned.sum()) / max(1, int((p.y == target).sum()))
        return self.settings.spectral_eps or min(0.5, max(share, 0.005))

    def scans(self, trained: nn.Module) -> list[tuple[str, Callable[[], ScanOutcome]]]:
        p, seed, eps = self.p, self.settings.seed, self.eps()
        schema = self.data.schema
        assert schema is not None
        feats = penultimate_features(trained, p.x)

        def value() -> ScanOutcome:
            r = feature_value_scan(trained, p.x, p.y, schema)
            return ScanOutcome(r.flagged, r.scores, r.summary(), {"flagged_cells": r.flagged_names})

        def latent(name: str) -> Callable[[], ScanOutcome]:
            def run() -> ScanOutcome:
                if name == "activation-clustering":
                    r = activation_clustering(feats, p.y, seed=seed)
                    return ScanOutcome(r.flagged, r.scores, r.summary())
                scan = spectral_signatures if name == "spectral-signatures" else spectre
                r = scan(feats, p.y, eps=eps)
                return ScanOutcome(r.flagged, r.scores, r.summary(), {"eps": round(eps, 4)})

            return run

        runs = [("feature-value", value), *((n, latent(n)) for n in TABULAR_SCANS[1:])]
        return [(n, r) for n, r in runs if self.scan_names is None or n in self.scan_names]


def poison_tabular_split(
    data: Dataset, settings: TabularDrillSettings, features: list[str] | None = None
) -> tuple[FeaturePattern, PoisonedSet]:
    """The drill's trigger (built from the clean training split: ``features``, else the
    ``settings.k`` rarest eligible ones) and the poisoned training split."""
    if data.schema is None:
        raise ConfigError("data: expected a tabular data set with a schema")
    pattern = feature_pattern_trigger(data.schema, data.train.x, k=settings.k, features=features)
    p = feature_pattern_poison(
        data.train.x, data.train.y, pattern, rate=settings.rate, num_classes=len(data.classes),
        target=settings.target, seed=settings.seed,
    )  # fmt: skip
    return pattern, p


def tabular_backdoor_drill(
    data: Dataset,
    settings: TabularDrillSettings,
    *,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the drill on a tabular ``data`` set (with a schema) with :func:`~.drill.run_drill`
    and :class:`TabularDrillChannel`. Returns a JSON-ready dict: the trigger, the clean model's
    and the undefended model's clean accuracy and attack success, per scan its detection
    metrics, the quarantine, and the retrained model's figures."""
    if data.schema is None:
        raise ConfigError("data: expected a tabular data set with a schema")
    if not set(settings.quarantine_by) <= set(TABULAR_SCANS):
        raise ConfigError(f"quarantine_by: expected names from {', '.join(TABULAR_SCANS)}")
    say = log or (lambda _m: None)
    t0 = time.perf_counter()
    pattern, p = poison_tabular_split(data, settings)
    channel = TabularDrillChannel(data, p, pattern, settings)
    say(f"trigger {pattern.to_dict()['values']}; {int(p.poisoned.sum())} poisoned rows")
    train = data.train
    clean_model = train_mlp(data, train.x, train.y, settings.seed, settings.epochs)
    clean = channel.measure(clean_model)
    on_clean = feature_value_scan(clean_model, train.x, train.y, data.schema)
    clean["value_scan_flagged"] = int(on_clean.flagged.sum())
    clean["value_scan_cells"] = on_clean.flagged_names
    say(f"clean model {clean}")
    out = run_drill(channel, settings.quarantine_by, log=say)
    return {
        "data": data.name,
        "trigger": pattern.to_dict(),
        "attack": {k_: v for k_, v in p.record().items() if k_ != "indices"},
        "train_examples": len(p.y),
        "test_examples": len(data.test.y),
        "clean_model": clean,
        "undefended": out.undefended,
        "scans": out.scans,
        "quarantine_by": list(settings.quarantine_by),
        "quarantined": out.quarantined,
        "retrained": out.retrained,
        "seconds": round(time.perf_counter() - t0, 1),
    }
