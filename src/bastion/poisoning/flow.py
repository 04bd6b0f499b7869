"""The training-time defence flow: poison (a drill) -> scan -> quarantine -> train -> verify.

* :func:`prepare_training_set`: the training tensors a ``poisoning:`` section describes (the
  first ``train_examples``, poisoned by the configured attack when there is one).
* :func:`scan_data`: train a scan model on the suspect set, read its latent features, run the
  configured scans (activation clustering, spectral signatures, SPECTRE) and the hygiene checks
  (exact and near duplicates, confident-learning label issues), and merge every flag into a
  :class:`~bastion.poisoning.quarantine.Quarantine`. With the poisoning record it also scores
  the detection (precision, recall, F1, share of clean data quarantined).
* :func:`backdoor_drill`: the whole flow on a data set: the scan model is the undefended
  victim; a second model is trained on the kept examples only; both are measured for clean
  accuracy and attack success, checked by Neural Cleanse, and the victim is guarded by STRIP.
  Everything is written as JSON (``poisoning.json``, ``quarantine.json``) and PNG (recovered
  triggers) into an output directory.

Every step is seeded from ``seed`` (attack draws, model initialisation and shuffling, k-means,
Neural Cleanse batches, STRIP overlays).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bastion.data import Dataset
from bastion.errors import ConfigError
from bastion.models import BastionModel
from bastion.poisoning.attacks import (
    PoisonedSet,
    Trigger,
    attack_success_rate,
    badnets,
    blended,
    label_flip,
)
from bastion.poisoning.config import PoisoningConfig, ScanConfig, VerifyConfig
from bastion.poisoning.features import penultimate_features
from bastion.poisoning.hygiene import (
    cross_val_probs,
    exact_duplicates,
    label_issues,
    near_duplicates,
)
from bastion.poisoning.neural_cleanse import CleanseSettings, neural_cleanse, save_trigger_png
from bastion.poisoning.quarantine import Quarantine, build_quarantine, write_quarantine
from bastion.poisoning.scans import (
    ScanResult,
    activation_clustering,
    detection_metrics,
    spectral_signatures,
    spectre,
)
from bastion.poisoning.strip import StripDetector
from bastion.poisoning.training import train_classifier
from bastion.training.trainer import accuracy

LogFn = Callable[[str], None]


def _quiet(message: str) -> None:
    return None


def prepare_training_set(
    cfg: PoisoningConfig, data: Dataset, *, seed: int = 0
) -> tuple[Tensor, Tensor, PoisonedSet | None]:
    """``(x, y, record)``: the first ``cfg.train_examples`` training examples, poisoned by
    ``cfg.attack`` (``record`` is None without an attack)."""
    n = cfg.train_examples or len(data.train)
    x, y = data.train.x[:n], data.train.y[:n]
    a = cfg.attack
    if a is None:
        return x, y, None
    if a.target >= data.num_classes:
        raise ConfigError(
            f"poisoning.attack.target: expected a class index in 0..{data.num_classes - 1}, "
            f"got {a.target}"
        )
    k = data.num_classes
    if a.name == "badnets":
        p = badnets(
            x,
            y,
            rate=a.rate,
            num_classes=k,
            size=a.size,
            location=a.location,
            mode=a.mode,
            target=a.target,
            seed=seed,
        )
    elif a.name == "blended":
        p = blended(
            x,
            y,
            rate=a.rate,
            num_classes=k,
            alpha=a.alpha,
            mode=a.mode,
            target=a.target,
            seed=seed,
        )
    else:
        p = label_flip(
            x,
            y,
            rate=a.rate,
            num_classes=k,
            source=a.source,
            target=a.target if a.source is not None else None,
            seed=seed,
        )
    return p.x, p.y, p


@dataclass(frozen=True, eq=False)
class DataScan:
    """The outcome of :func:`scan_data`.

    Attributes:
        quarantine: the merged quarantine.
        scans: each latent scan's result, by name.
        model: the scan model (trained on the whole suspect set).
        metrics: detection metrics against the poisoning record (None without one).
        seconds: wall time of the scan, including training the scan model.
    """

    quarantine: Quarantine
    scans: dict[str, ScanResult]
    model: BastionModel
    metrics: dict[str, Any] | None
    seconds: float


def scan_data(
    x: Tensor,
    y: Tensor,
    x_val: Tensor,
    y_val: Tensor,
    *,
    scan: ScanConfig,
    num_classes: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    truth: Tensor | None = None,
    seed: int = 0,
    log: LogFn = _quiet,
) -> DataScan:
    """Scan the suspect training set ``x`` (``(N, C, H, W)``), ``y`` (``(N,)``); ``x_val``,
    ``y_val`` are a clean validation split for the scan model's training loop. ``truth``
    (bool ``(N,)``, the poisoning record) adds detection metrics per scan and overall."""
    start = time.perf_counter()
    m = scan.model
    log(f"training the scan model ({m.architecture}, {m.epochs} epochs, {len(y)} examples)")
    model = train_classifier(
        x,
        y,
        x_val,
        y_val,
        architecture=m.architecture,
        num_classes=num_classes,
        mean=mean,
        std=std,
        epochs=m.epochs,
        batch_size=m.batch_size,
        lr=m.lr,
        seed=seed,
    )
    feats = penultimate_features(model, x)
    results: dict[str, ScanResult] = {}
    for method in scan.methods:
        log(f"scan: {method}")
        if method == "activation-clustering":
            results[method] = activation_clustering(
                feats,
                y,
                dims=scan.dims,
                max_relative_size=scan.max_relative_size,
                min_silhouette=scan.min_silhouette,
                seed=seed,
            )
        elif method == "spectral-signatures":
            results[method] = spectral_signatures(feats, y, eps=scan.eps, seed=seed)
        else:
            results[method] = spectre(feats, y, eps=scan.eps, seed=seed)
    flags: dict[str, tuple[Tensor, Tensor]] = {
        name: (r.flagged, r.scores) for name, r in results.items()
    }
    summaries: dict[str, Any] = {name: r.summary() for name, r in results.items()}
    details: dict[int, dict[str, Any]] = {}
    if scan.duplicates:
        log("hygiene: duplicates")
        for kind, dups in (
            ("exact-duplicate", exact_duplicates(x, y)),
            ("near-duplicate", near_duplicates(x, y, tol=scan.near_tol)),
        ):
            mask = torch.zeros(len(y), dtype=torch.bool)
            score = torch.zeros(len(y), dtype=torch.float64)
            for d in dups:
                mask[d.index] = True
                score[d.index] = d.distance
                details.setdefault(d.index, {})[kind] = {
                    "of": d.of,
                    "label_conflict": d.label_conflict,
                }
            flags[kind] = (mask, score)
            summaries[kind] = {
                "n_flagged": len(dups),
                "label_conflicts": sum(d.label_conflict for d in dups),
            }
    if scan.label_issues:
        log(f"hygiene: label issues ({scan.folds}-fold confident learning)")
        probs = cross_val_probs(
            x,
            y,
            architecture=m.architecture,
            num_classes=num_classes,
            mean=mean,
            std=std,
            folds=scan.folds,
            epochs=m.epochs,
            batch_size=m.batch_size,
            lr=m.lr,
            seed=seed,
        )
        issues = label_issues(probs, y)
        flags["label-issue"] = (issues.flagged, issues.margin)
        for i in torch.nonzero(issues.flagged).flatten().tolist():
            details.setdefault(i, {})["label-issue"] = {"suggested": int(issues.suggested[i])}
        summaries["label-issue"] = {
            "n_flagged": int(issues.flagged.sum()),
            "thresholds": [round(float(t), 4) for t in issues.thresholds],
        }
    quarantine = build_quarantine(y, flags, summaries=summaries, details=details)
    metrics: dict[str, Any] | None = None
    if truth is not None:
        metrics = {name: detection_metrics(f, truth) for name, (f, _) in flags.items()}
        metrics["quarantine"] = detection_metrics(quarantine.mask, truth)
    return DataScan(quarantine, results, model, metrics, time.perf_counter() - start)


def _write_json(doc: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def backdoor_drill(
    cfg: PoisoningConfig,
    data: Dataset,
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    log: LogFn = _quiet,
) -> dict[str, Any]:
    """Run poison -> scan -> quarantine -> retrain -> verify on ``data`` and write
    ``poisoning.json``, ``quarantine.json`` and ``trigger-<model>.png`` (the Neural Cleanse
    trigger of the smallest-norm class) into ``out_dir``; returns the ``poisoning.json``
    document. Needs image data; the test split measures clean accuracy and attack success,
    the validation split feeds Neural Cleanse and STRIP."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x, y, record = prepare_training_set(cfg, data, seed=seed)
    k = data.num_classes
    scan = scan_data(
        x,
        y,
        data.val.x,
        data.val.y,
        scan=cfg.scan,
        num_classes=k,
        mean=data.mean,
        std=data.std,
        truth=None if record is None else record.poisoned,
        seed=seed,
        log=log,
    )
    write_quarantine(
        scan.quarantine,
        out / "quarantine.json",
        extra={"poisoning": None if record is None else record.record()},
    )
    models: dict[str, BastionModel] = {"undefended": scan.model}
    if cfg.quarantine:
        kept = scan.quarantine.kept
        m = cfg.scan.model
        log(f"retraining on {len(kept)} kept examples")
        models["defended"] = train_classifier(
            x[kept],
            y[kept],
            data.val.x,
            data.val.y,
            architecture=m.architecture,
            num_classes=k,
            mean=data.mean,
            std=data.std,
            epochs=m.epochs,
            batch_size=m.batch_size,
            lr=m.lr,
            seed=seed,
        )
    v = cfg.verify
    test = data.test
    val = data.val
    report: dict[str, Any] = {
        "format": "bastion-poisoning/1",
        "seed": seed,
        "n_train": len(y),
        "attack": None
        if record is None
        else {k_: v_ for k_, v_ in record.record().items() if k_ != "indices"},
        "scan": {
            "seconds": round(scan.seconds, 2),
            "n_quarantined": len(scan.quarantine.entries),
            "quarantined_rate": round(len(scan.quarantine.entries) / max(1, len(y)), 4),
            "detection": scan.metrics,
            "suspect_classes": {n: r.suspect_classes for n, r in scan.scans.items()},
        },
        "models": {},
    }
    for name, model in models.items():
        entry: dict[str, Any] = {"clean_accuracy": round(accuracy(model, test.x, test.y), 4)}
        if record is not None and record.trigger is not None:
            entry["attack_success_rate"] = round(
                attack_success_rate(
                    model,
                    test.x,
                    test.y,
                    record.trigger,
                    mode=record.settings["mode"],
                    target=record.settings["target"],
                    num_classes=k,
                ),
                4,
            )
        if v.neural_cleanse:
            log(f"neural cleanse: {name}")
            nc = neural_cleanse(
                model,
                val.x[: v.cleanse_examples],
                num_classes=k,
                settings=CleanseSettings(steps=v.cleanse_steps),
                seed=seed,
            )
            png = save_trigger_png(nc.triggers[int(nc.norms.argmin())], out / f"trigger-{name}.png")
            entry["neural_cleanse"] = {**nc.summary(), "trigger_png": png.name}
        models_doc: dict[str, Any] = report["models"]
        models_doc[name] = entry
    if v.strip and record is not None and record.trigger is not None:
        log("strip: the undefended model")
        half = len(val) // 2
        strip = StripDetector(models["undefended"], val.x[:half], seed=seed).fit(
            val.x[half:], fpr=v.strip_fpr
        )
        target = record.settings["target"]
        keep = test.y != target if record.settings["mode"] == "all-to-one" else test.y >= 0
        triggered = record.trigger.apply(test.x[keep][: v.examples])
        report["strip"] = strip.evaluate(test.x[: v.examples], triggered)
    _write_json(report, out / "poisoning.json")
    return report


@dataclass(eq=False)
class RunPoisoning:
    """What the ``poisoning:`` hook of ``bastion run`` hands back: the data set to train on
    (``data``: the scanned training split, quarantined examples removed when configured), the
    scorecard section, and the drill's trigger (None without a backdoor drill)."""

    data: Dataset
    section: dict[str, Any]
    test: tuple[Tensor, Tensor]
    trigger: Trigger | None = None
    settings: dict[str, Any] | None = None
    checks: VerifyConfig | None = None
    run_dir: Path | None = None
    seed: int = 0
    log: LogFn = _quiet

    def verify(self, models: list[tuple[str, nn.Module]]) -> dict[str, Any]:
        """The section with, per trained model, what :func:`.verify.verify_model` measures
        (the drill's attack success rate; Neural Cleanse and STRIP when ``checks`` asks for
        them), and the gate's figures (:func:`.verify.gate_figures`)."""
        from bastion.poisoning.verify import gate_figures, verify_model

        out = dict(self.section)
        checks = self.checks or VerifyConfig(neural_cleanse=False, strip=False)
        if self.trigger is not None or checks.neural_cleanse or checks.strip:
            out["models"] = {
                name: verify_model(
                    model,
                    name,
                    verify=checks,
                    val=(self.data.val.x, self.data.val.y),
                    test=self.test,
                    num_classes=self.data.num_classes,
                    trigger=self.trigger,
                    settings=self.settings,
                    out_dir=self.run_dir or Path("."),
                    seed=self.seed,
                    log=self.log,
                )
                for name, model in models
            }
        out.update(gate_figures(out))
        return out


def prepare_run_training(
    cfg: PoisoningConfig,
    data: Dataset,
    run_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    log: LogFn = _quiet,
) -> RunPoisoning:
    """The ``poisoning:`` hook of ``bastion run``: poison the training split (a drill, when
    ``cfg.attack`` is set), scan it, write ``quarantine.json`` into ``run_dir`` and return the
    data set to *train* on (the kept examples when ``cfg.quarantine``, else the scanned set) and
    the section for the scorecard. Validation and test splits are untouched; the caller keeps
    the original data set for provenance and evaluation (sidecars record its split digest)."""
    from dataclasses import replace

    from bastion.data import Split
    from bastion.poisoning.verify import quarantine_table, score_histograms

    x, y, record = prepare_training_set(cfg, data, seed=seed)
    scan = scan_data(
        x,
        y,
        data.val.x,
        data.val.y,
        scan=cfg.scan,
        num_classes=data.num_classes,
        mean=data.mean,
        std=data.std,
        truth=None if record is None else record.poisoned,
        seed=seed,
        log=log,
    )
    write_quarantine(
        scan.quarantine,
        Path(run_dir) / "quarantine.json",
        extra={"poisoning": None if record is None else record.record()},
    )
    kept = scan.quarantine.kept if cfg.quarantine else torch.arange(len(y))
    train = Split(x[kept].contiguous(), y[kept].contiguous())
    section: dict[str, Any] = {
        "quarantine_file": "quarantine.json",
        "n_scanned": len(y),
        "n_quarantined": len(scan.quarantine.entries),
        "n_trained_on": len(kept),
        "quarantine_applied": cfg.quarantine,
        "suspect_classes": {n: r.suspect_classes for n, r in scan.scans.items()},
        "detection": scan.metrics,
        "attack": None
        if record is None
        else {k: v for k, v in record.record().items() if k != "indices"},
        "seconds": round(scan.seconds, 2),
        "score_histograms": score_histograms(scan.scans),
        "quarantine_table": quarantine_table(scan.quarantine),
    }
    if record is not None and record.trigger is not None:
        section["scan_model_attack_success_rate"] = round(
            attack_success_rate(
                scan.model,
                data.test.x,
                data.test.y,
                record.trigger,
                mode=record.settings["mode"],
                target=record.settings["target"],
                num_classes=data.num_classes,
            ),
            4,
        )
    return RunPoisoning(
        replace(data, train=train),
        section,
        (data.test.x, data.test.y),
        None if record is None else record.trigger,
        None if record is None else dict(record.settings),
        cfg.verify,
        Path(run_dir),
        seed,
        log,
    )
