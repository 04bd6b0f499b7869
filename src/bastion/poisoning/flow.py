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
from bastion.poisoning.drill import ScanOutcome, merge_outcomes, run_drill
from bastion.poisoning.features import penultimate_features
from bastion.poisoning.hygiene import (
    cross_val_probs,
    exact_duplicates,
    label_issues,
    near_duplicates,
)
from bastion.poisoning.neural_cleanse import CleanseSettings, neural_cleanse, save_trigger_png
from bastion.poisoning.quarantine import Quarantine, write_quarantine
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


def _latent_run(
    method: str, feats: Tensor, y: Tensor, scan: ScanConfig, seed: int, log: LogFn
) -> Callable[[], ScanOutcome]:
    def run() -> ScanOutcome:
        log(f"scan: {method}")
        if method == "activation-clustering":
            r = activation_clustering(
                feats,
                y,
                dims=scan.dims,
                max_relative_size=scan.max_relative_size,
                min_silhouette=scan.min_silhouette,
                seed=seed,
            )
        elif method == "spectral-signatures":
            r = spectral_signatures(feats, y, eps=scan.eps, seed=seed)
        elif method == "spectre":
            r = spectre(feats, y, eps=scan.eps, seed=seed)
        else:
            raise ConfigError(f"poisoning.scan.methods: {method!r} does not scan images")
        doc = {"suspect_classes": r.suspect_classes}
        return ScanOutcome(r.flagged, r.scores, r.summary(), doc, result=r)

    return run


def _duplicate_run(kind: str, x: Tensor, y: Tensor, scan: ScanConfig) -> Callable[[], ScanOutcome]:
    def run() -> ScanOutcome:
        if kind == "exact-duplicate":
            dups = exact_duplicates(x, y)
        else:
            dups = near_duplicates(x, y, tol=scan.near_tol)
        mask = torch.zeros(len(y), dtype=torch.bool)
        score = torch.zeros(len(y), dtype=torch.float64)
        details: dict[int, dict[str, Any]] = {}
        for d in dups:
            mask[d.index] = True
            score[d.index] = d.distance
            details[d.index] = {kind: {"of": d.of, "label_conflict": d.label_conflict}}
        summary = {"n_flagged": len(dups), "label_conflicts": sum(d.label_conflict for d in dups)}
        return ScanOutcome(mask, score, summary, details=details)

    return run


@dataclass(eq=False)
class ImageDrillChannel:
    """The image channel's hooks for :func:`~.drill.run_drill` (and the scans of
    :func:`scan_data`): the suspect training set ``x`` ``(N, C, H, W)``, ``y`` ``(N,)``,
    poisoned as ``record`` says (None: no drill); ``val`` (a clean split) feeds the training
    loop, ``test`` (when given) measures clean accuracy and attack success. Models are
    ``scan.model`` classifiers seeded from ``seed``; scans are ``scan``'s latent scans on the
    model's penultimate features, then the hygiene checks (duplicates, confident-learning
    label issues)."""

    scan: ScanConfig
    x: Tensor
    y: Tensor
    val: tuple[Tensor, Tensor]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    test: tuple[Tensor, Tensor] | None = None
    record: PoisonedSet | None = None
    seed: int = 0
    log: LogFn = _quiet

    @classmethod
    def of(
        cls,
        cfg: PoisoningConfig,
        data: Dataset,
        *,
        seed: int = 0,
        log: LogFn = _quiet,
    ) -> ImageDrillChannel:
        """The channel of a ``poisoning:`` section on ``data`` (:func:`prepare_training_set`)."""
        x, y, record = prepare_training_set(cfg, data, seed=seed)
        return cls(
            cfg.scan, x, y, (data.val.x, data.val.y), data.num_classes, data.mean, data.std,
            (data.test.x, data.test.y), record, seed, log,
        )  # fmt: skip

    @property
    def labels(self) -> Tensor:
        return self.y

    @property
    def truth(self) -> Tensor:
        if self.record is None:
            return torch.zeros_like(self.y, dtype=torch.bool)
        return self.record.poisoned

    def train(self, kept: Tensor | None) -> BastionModel:
        m = self.scan.model
        x, y = (self.x, self.y) if kept is None else (self.x[kept], self.y[kept])
        if kept is None:
            self.log(
                f"training the scan model ({m.architecture}, {m.epochs} epochs, {len(y)} examples)"
            )
        return train_classifier(
            x, y, *self.val, architecture=m.architecture, num_classes=self.num_classes,
            mean=self.mean, std=self.std, epochs=m.epochs, batch_size=m.batch_size, lr=m.lr,
            seed=self.seed,
        )  # fmt: skip

    def measure(self, trained: BastionModel) -> dict[str, Any]:
        assert self.test is not None
        (tx, ty), r = self.test, self.record
        entry: dict[str, Any] = {"clean_accuracy": round(accuracy(trained, tx, ty), 4)}
        if r is not None and r.trigger is not None:
            entry["attack_success_rate"] = round(
                attack_success_rate(
                    trained, tx, ty, r.trigger, mode=r.settings["mode"],
                    target=r.settings["target"], num_classes=self.num_classes,
                ),
                4,
            )  # fmt: skip
        return entry

    def scans(self, trained: BastionModel) -> list[tuple[str, Callable[[], ScanOutcome]]]:
        scan, x, y, log = self.scan, self.x, self.y, self.log
        feats = penultimate_features(trained, x)
        runs: list[tuple[str, Callable[[], ScanOutcome]]] = [
            (m, _latent_run(m, feats, y, scan, self.seed, log)) for m in scan.methods
        ]
        if scan.duplicates:
            log("hygiene: duplicates")
            runs += [
                (k, _duplicate_run(k, x, y, scan)) for k in ("exact-duplicate", "near-duplicate")
            ]
        if scan.label_issues:
            runs.append(("label-issue", self._label_issue_run))
        return runs

    def _label_issue_run(self) -> ScanOutcome:
        scan, m = self.scan, self.scan.model
        self.log(f"hygiene: label issues ({scan.folds}-fold confident learning)")
        probs = cross_val_probs(
            self.x, self.y, architecture=m.architecture, num_classes=self.num_classes,
            mean=self.mean, std=self.std, folds=scan.folds, epochs=m.epochs,
            batch_size=m.batch_size, lr=m.lr, seed=self.seed,
        )  # fmt: skip
        issues = label_issues(probs, self.y)
        details = {
            i: {"label-issue": {"suggested": int(issues.suggested[i])}}
            for i in torch.nonzero(issues.flagged).flatten().tolist()
        }
        summary = {
            "n_flagged": int(issues.flagged.sum()),
            "thresholds": [round(float(t), 4) for t in issues.thresholds],
        }
        return ScanOutcome(issues.flagged, issues.margin, summary, details=details)


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
    (bool ``(N,)``, the poisoning record) adds detection metrics per scan and overall. The
    scan model and the scans are :class:`ImageDrillChannel`'s."""
    start = time.perf_counter()
    channel = ImageDrillChannel(
        scan, x, y, (x_val, y_val), num_classes, mean, std, seed=seed, log=log
    )
    model = channel.train(None)
    outcomes = {name: run() for name, run in channel.scans(model)}
    quarantine = merge_outcomes(y, outcomes)
    metrics: dict[str, Any] | None = None
    if truth is not None:
        metrics = {name: detection_metrics(o.flagged, truth) for name, o in outcomes.items()}
        metrics["quarantine"] = detection_metrics(quarantine.mask, truth)
    scans = {n: o.result for n, o in outcomes.items() if isinstance(o.result, ScanResult)}
    return DataScan(quarantine, scans, model, metrics, time.perf_counter() - start)


def _write_json(doc: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _strip_doc(
    model: BastionModel, record: PoisonedSet, v: VerifyConfig, data: Dataset, seed: int
) -> dict[str, Any]:
    """STRIP on the undefended model: threshold on half the validation split at
    ``v.strip_fpr``, evaluated on clean and triggered test inputs."""
    assert record.trigger is not None
    val, test = data.val, data.test
    half = len(val) // 2
    strip = StripDetector(model, val.x[:half], seed=seed).fit(val.x[half:], fpr=v.strip_fpr)
    target = record.settings["target"]
    keep = test.y != target if record.settings["mode"] == "all-to-one" else test.y >= 0
    triggered = record.trigger.apply(test.x[keep][: v.examples])
    return strip.evaluate(test.x[: v.examples], triggered)


def backdoor_drill(
    cfg: PoisoningConfig,
    data: Dataset,
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    log: LogFn = _quiet,
) -> dict[str, Any]:
    """Run poison -> scan -> quarantine -> retrain -> verify on ``data`` with
    :func:`~.drill.run_drill` and :class:`ImageDrillChannel` (quarantine by every scan) and
    write ``poisoning.json``, ``quarantine.json`` and ``trigger-<model>.png`` (the Neural
    Cleanse trigger of the smallest-norm class) into ``out_dir``; returns the
    ``poisoning.json`` document. Needs image data; the test split measures clean accuracy and
    attack success, the validation split feeds Neural Cleanse and STRIP. ``scan.seconds`` is
    the scans' time (the victim's training apart)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    channel = ImageDrillChannel.of(cfg, data, seed=seed, log=log)
    y, record = channel.y, channel.record
    res = run_drill(channel, None, retrain=cfg.quarantine, log=log)
    rec_doc = None if record is None else record.record()
    write_quarantine(res.quarantine, out / "quarantine.json", extra={"poisoning": rec_doc})
    detection: dict[str, Any] | None = None
    if record is not None:
        detection = {
            n: detection_metrics(o.flagged, record.poisoned) for n, o in res.outcomes.items()
        }
        detection["quarantine"] = res.quarantined
    n_q = len(res.quarantine.entries)
    report: dict[str, Any] = {
        "format": "bastion-poisoning/1",
        "seed": seed,
        "n_train": len(y),
        "attack": None if rec_doc is None else {k: v for k, v in rec_doc.items() if k != "indices"},
        "scan": {
            "seconds": round(sum(s["seconds"] for s in res.scans.values()), 2),
            "n_quarantined": n_q,
            "quarantined_rate": round(n_q / max(1, len(y)), 4),
            "detection": detection,
            "suspect_classes": {
                n: s["suspect_classes"] for n, s in res.scans.items() if "suspect_classes" in s
            },
        },
        "models": {"undefended": res.undefended},
    }
    models = {"undefended": res.victim}
    if res.defended is not None and res.retrained is not None:
        models["defended"] = res.defended
        report["models"]["defended"] = {k: v for k, v in res.retrained.items() if k != "kept"}
    v = cfg.verify
    for name, model in models.items():
        if v.neural_cleanse:
            log(f"neural cleanse: {name}")
            nc = neural_cleanse(
                model, data.val.x[: v.cleanse_examples], num_classes=data.num_classes,
                settings=CleanseSettings(steps=v.cleanse_steps), seed=seed,
            )  # fmt: skip
            png = save_trigger_png(nc.triggers[int(nc.norms.argmin())], out / f"trigger-{name}.png")
            report["models"][name]["neural_cleanse"] = {**nc.summary(), "trigger_png": png.name}
    if v.strip and record is not None and record.trigger is not None:
        log("strip: the undefended model")
        report["strip"] = _strip_doc(res.victim, record, v, data, seed)
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
