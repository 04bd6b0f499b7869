"""The one place that wires the stages together: config -> data -> training -> evaluation ->
scorecard -> report, into a run directory that appears only once the run is complete.

Each stage is also a function of its own (:func:`train_entry`, :func:`evaluate_models`), which
the one-stage commands of the CLI call.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from rich.table import Table
from torch import nn

from bastion.attacks.base import predict
from bastion.attacks.registry import attack_knowledge, build_attack, recorded_settings
from bastion.config import ModelEntry, RunConfig, load_config
from bastion.data import Dataset, Split, load_dataset
from bastion.errors import BastionError
from bastion.evaluation.escalation import summary_lines, worst_case_cell
from bastion.evaluation.evaluator import BatchRunner, NamedAttack, eps_key, evaluate_model
from bastion.evaluation.scorecard import (
    SCHEMA_VERSION,
    config_hash,
    package_versions,
    relative_paths,
    sanitize,
    write_json,
)
from bastion.evaluation.scorecard_model import load_scorecard
from bastion.evaluation.state import EvaluationState, weights_hash
from bastion.models import BastionModel, ModelSpec, build_model, save_model
from bastion.progress import ProgressReporter
from bastion.provenance import split_record
from bastion.runtime import apply_threads, parse_threads, place_on_device, resolve_device
from bastion.text.config import attack_settings as text_attack_settings
from bastion.training.distributed import DataParallel
from bastion.training.trainer import Trainer, TrainResult


@dataclass
class TrainedModel:
    """A model with what the scorecard says about it."""

    name: str
    model: nn.Module
    objective: str
    architecture: str
    training: dict[str, Any] | None = None
    temperature: float = 1.0  # softmax temperature for calibration (temperature scaling)


def resolve_data_dir(
    cfg: RunConfig, config_path: Path | None, data_dir: str | os.PathLike[str] | None
) -> str | None:
    """``--data-dir`` wins; else the config's ``data.data_dir`` relative to the config file."""
    if data_dir is not None:
        return str(data_dir)
    if cfg.data.data_dir is None:
        return None
    p = Path(cfg.data.data_dir).expanduser()
    if not p.is_absolute() and config_path is not None:
        p = config_path.parent / p
    return str(p)


def _relative_to_config(value: str | None, config_path: Path | None) -> str | None:
    if value is None:
        return None
    p = Path(value).expanduser()
    if not p.is_absolute() and config_path is not None and not p.exists():
        p = config_path.parent / p
    return str(p)


def load_run_data(
    cfg: RunConfig,
    *,
    config_path: Path | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> Dataset:
    """The data set a config names, split by the config's seed."""
    return load_dataset(
        cfg.data.name,
        data_dir=resolve_data_dir(cfg, config_path, data_dir),
        seed=cfg.seed,
        val_fraction=cfg.data.val_fraction,
        test_fraction=cfg.data.test_fraction,
        path=_relative_to_config(cfg.data.path, config_path),
        schema=_relative_to_config(cfg.data.schema_path, config_path),
        image_size=cfg.data.image_size,
        channels=cfg.data.channels,
        factory=cfg.data.factory,
        factory_kwargs=cfg.data.kwargs,
        python_path=[config_path.parent] if config_path is not None else [],
    )


def model_spec(cfg: RunConfig, entry: ModelEntry, data: Dataset) -> ModelSpec:
    arch = cfg.architecture_for(entry)
    return ModelSpec(
        architecture=arch.architecture,
        input_shape=tuple(data.input_shape),
        num_classes=data.num_classes,
        mean=tuple(data.mean),
        std=tuple(data.std),
        options=dict(arch.options),
    )


def train_entry(
    cfg: RunConfig,
    entry: ModelEntry,
    data: Dataset,
    *,
    reporter: ProgressReporter | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume_from: str | os.PathLike[str] | None = None,
    data_parallel: DataParallel | None = None,
    device: torch.device | None = None,
) -> tuple[BastionModel, TrainResult]:
    """Build and train the model a config entry describes (seeded from the config).

    ``checkpoint_dir``: write training checkpoints there; ``resume_from``: continue an
    interrupted run from its checkpoint directory (same config), ending with the weights an
    uninterrupted run would have; ``data_parallel``: this process's place in a ``torchrun``
    job (see :mod:`bastion.training.distributed`); ``device``: where the forward and backward
    passes run (:func:`bastion.runtime.place_on_device`; the model stays there, taking CPU
    tensors; default the CPU). The result carries ``warnings``
    (catastrophic overfitting) and, with ``training.calibrate``, the fitted ``temperature``.
    """
    settings = cfg.train_settings(entry)
    spec = model_spec(cfg, entry, data)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(cfg.seed)
        model = build_model(spec)
    if device is not None:
        place_on_device(model, device)
    if entry.dp is not None:  # DP-SGD through Opacus replaces the trainer (bastion.privacy.dp)
        from bastion.privacy.dp import dp_settings_from, fit_dp

        dp = dp_settings_from(entry.dp, where=f"models.{entry.name}.dp")
        tr, va = data.train, data.val
        return model, fit_dp(model, tr.x, tr.y, va.x, va.y, dp, seed=cfg.seed)
    trainer = Trainer(
        settings,
        cfg.threat_model(),
        seed=cfg.seed,
        progress=reporter.training(entry.name) if reporter else None,
        data_parallel=data_parallel,
    )
    result = trainer.fit(
        model,
        data.train.x,
        data.train.y,
        data.val.x,
        data.val.y,
        checkpoint_dir=checkpoint_dir,
        resume_from=resume_from,
    )
    return model, result


def model_metadata(
    cfg: RunConfig,
    entry: ModelEntry,
    data: Dataset,
    result: TrainResult,
    *,
    config_path: Path | None = None,
) -> dict[str, Any]:
    """The sidecar metadata of a trained entry: objective, classes, the data fingerprint and
    split record (:mod:`bastion.provenance`), config hash, threat, best epoch, temperature and
    the training summary. ``bastion run`` and ``bastion train`` write the same record."""
    return {
        "name": entry.name,
        "objective": entry.objective.model_dump(),
        "classes": list(data.classes),
        "data_fingerprint": data.fingerprint,
        "split": split_record(
            data,
            seed=cfg.seed,
            val_fraction=cfg.data.val_fraction,
            test_fraction=cfg.data.test_fraction,
            path=_relative_to_config(cfg.data.path, config_path),
            schema=_relative_to_config(cfg.data.schema_path, config_path),
            image_size=cfg.data.image_size,
            channels=cfg.data.channels,
            factory=cfg.data.factory,
            factory_kwargs=cfg.data.kwargs,
            python_path=[str(config_path.parent.resolve())] if config_path is not None else [],
        ),
        "config_hash": config_hash(cfg.model_dump(mode="json", by_alias=True)),
        "threat": cfg.threat_model().to_dict(),
        "best_epoch": result.best_epoch,
        "temperature": result.temperature,
        "training": result.summary(),
    }


def evaluation_attacks(cfg: RunConfig) -> list[NamedAttack]:
    """Fresh attack objects for the evaluation list."""
    return [
        NamedAttack(a.key, build_attack(a.name, a.settings(), where=f"evaluation.attacks[{i}]"))
        for i, a in enumerate(cfg.evaluation.attacks)
    ]


def evaluate_models(
    cfg: RunConfig,
    models: list[TrainedModel],
    data: Dataset,
    *,
    reporter: ProgressReporter | None = None,
    state: EvaluationState | None = None,
    runner: BatchRunner | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluate each model on the first ``evaluation.examples`` test examples; with a
    ``state``, attack results already recorded there are reused (see
    :mod:`bastion.evaluation.state`); ``runner`` runs the attack batches (here by default, or
    on Ray workers: :class:`bastion.evaluation.ray_runner.RayBatchRunner`)."""
    test = (
        data.test if cfg.evaluation.examples is None else data.test.subset(cfg.evaluation.examples)
    )
    out: dict[str, dict[str, Any]] = {}
    for tm in models:
        tm.model.eval()
        full_correct = torch.cat(
            [
                predict(tm.model, data.test.x[i : i + 1000]) == data.test.y[i : i + 1000]
                for i in range(0, len(data.test), 1000)
            ]
        )
        res = evaluate_model(
            tm.model,
            test.x,
            test.y,
            cfg.threat_model(),
            evaluation_attacks(cfg),
            eps_grid=cfg.evaluation.eps_grid,
            seed=cfg.seed,
            batch_size=cfg.evaluation.batch_size,
            progress=reporter.evaluation(tm.name) if reporter else None,
            state=state,
            model_id=f"{tm.name}:{weights_hash(tm.model)}" if state is not None else tm.name,
            sanity=cfg.evaluation.sanity_checks,  # checks and escalation run inside
            escalate=cfg.evaluation.escalate,
            model_name=tm.name,
            runner=runner,
        )
        entry: dict[str, Any] = {
            "objective": tm.objective,
            "architecture": tm.architecture,
            **res,
            "test_clean_accuracy": float(full_correct.float().mean()),
            "n_test": len(data.test),
        }
        if tm.training is not None:
            entry["training"] = tm.training
        out[tm.name] = entry
    if cfg.evaluation.corruptions is not None:
        _evaluate_corruptions(cfg, models, data, out)
    _evaluate_extras(cfg, models, data, test, out, reporter=reporter)
    return out


def _evaluate_extras(
    cfg: RunConfig,
    models: list[TrainedModel],
    data: Dataset,
    test: Split,
    out: dict[str, dict[str, Any]],
    *,
    reporter: ProgressReporter | None = None,
) -> None:
    """Calibration (clean and under attack), distribution shifts and latency per model."""
    from bastion.evaluation.calibration import evaluate_calibration
    from bastion.evaluation.latency import measure_latency
    from bastion.evaluation.shift import shift_accuracy

    ev = cfg.evaluation
    threat = cfg.threat_model()
    for tm in models:
        if ev.calibration is not None:
            if reporter:
                reporter.log(f"calibration of {tm.name}")
            cal = ev.calibration
            split = test if cal.examples is None else data.test.subset(cal.examples)
            attack = (
                build_attack(cal.attack.name, cal.attack.settings(), where="calibration.attack")
                if cal.attack is not None
                else None
            )
            out[tm.name]["calibration"] = evaluate_calibration(
                tm.model,
                split.x,
                split.y,
                threat,
                attack=attack,
                attack_label=cal.attack.key if cal.attack is not None else "none",
                bins=cal.bins,
                temperature=tm.temperature,
                seed=cfg.seed,
                batch_size=ev.batch_size,
            )
        if ev.shifts is not None:
            split = (
                data.test if ev.shifts.examples is None else data.test.subset(ev.shifts.examples)
            )
            out[tm.name]["shifts"] = shift_accuracy(
                tm.model,
                split.x,
                split.y,
                names=ev.shifts.names,
                bounds=cfg.threat.bounds,
                seed=cfg.seed,
            )
        if ev.latency is not None:
            out[tm.name]["latency"] = measure_latency(
                tm.model,
                test.x[:256],
                batch_sizes=ev.latency.batch_sizes,
                repeats=ev.latency.repeats,
                warmup=ev.latency.warmup,
            )


def _evaluate_corruptions(
    cfg: RunConfig, models: list[TrainedModel], data: Dataset, out: dict[str, dict[str, Any]]
) -> None:
    """Add ``corruptions`` (accuracy per corruption and severity) to each model's results, and
    ``mce``/``relative_mce`` against the first model (Hendrycks & Dietterich 2019)."""
    from bastion.corruptions import (
        available_corruptions,
        corruption_accuracy,
        mean_corruption_error,
        relative_mean_corruption_error,
    )

    cc = cfg.evaluation.corruptions
    assert cc is not None
    test = data.test if cc.examples is None else data.test.subset(cc.examples)
    images = test.x.dim() == 4
    names = cc.names or available_corruptions(images=images)
    results = {}
    for tm in models:
        results[tm.name] = corruption_accuracy(
            tm.model,
            test.x,
            test.y,
            names=names,
            severities=cc.severities,
            seed=cfg.seed,
            bounds=cfg.threat.bounds,
        )
        out[tm.name]["corruptions"] = results[tm.name].to_dict()
    reference = models[0].name
    for tm in models:
        r = results[tm.name]
        out[tm.name]["corruptions"]["reference"] = reference
        try:
            out[tm.name]["corruptions"]["mce"] = mean_corruption_error(r, results[reference])
            out[tm.name]["corruptions"]["relative_mce"] = relative_mean_corruption_error(
                r, results[reference]
            )
        except BastionError:  # undefined, e.g. a reference that makes no corruption errors
            out[tm.name]["corruptions"]["mce"] = None
            out[tm.name]["corruptions"]["relative_mce"] = None


def fit_run_guard(
    cfg: RunConfig, data: Dataset, run_dir: Path, *, reporter: ProgressReporter | None = None
) -> dict[str, Any]:
    """Fit the runtime guard of the config's ``guard`` section on the validation split, save
    it (and the drift monitor's reference statistics) to ``run_dir/guard``, and evaluate it
    against standard and adaptive attacks on test examples; returns the scorecard section."""
    from bastion.guard import evaluate_guard, fit_guard, save_guard
    from bastion.models import load_model
    from bastion.monitor import ReferenceStats

    gcfg = cfg.guard_config()
    assert gcfg is not None
    if len(data.val) < 20:
        raise BastionError(
            "guard: needs a validation split of at least 20 examples to fit its thresholds "
            f"(got {len(data.val)}); raise data.val_fraction"
        )
    if reporter:
        reporter.log(f"guard: fitting on {len(data.val)} validation examples")
    guard = fit_guard(run_dir, gcfg, data.val.x, data.val.y, seed=cfg.seed)
    save_guard(guard, run_dir / "guard")
    name = gcfg.prediction.models[0]
    model = load_model(run_dir / "models" / name)
    with torch.no_grad():
        probs = torch.softmax(model(data.train.x[:1000]), dim=1)
    ReferenceStats.from_data(data.train.x[:1000], probs, seed=cfg.seed).save(
        run_dir / "guard" / "drift-reference.json"
    )
    n = min(cfg.evaluation.examples or len(data.test), 500, len(data.test))
    if reporter:
        reporter.log(f"guard: standard and adaptive attacks on {n} test examples")
    section = evaluate_guard(
        guard, model, data.test.x[:n], data.test.y[:n], cfg.threat_model(), seed=cfg.seed
    )
    return {"model": name, "layers": guard.describe(), **section}


def run_channels(
    cfg: RunConfig,
    run_dir: Path,
    *,
    config_path: Path | None,
    data_dir: str | os.PathLike[str] | None,
    reporter: ProgressReporter | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Run the config's ``tabular`` and ``text`` sections into ``run_dir``; returns their
    scorecard sections by name (empty when the config has neither)."""
    out: dict[str, Any] = {}
    if cfg.tabular is not None:
        from bastion.tabular.experiment import run_tabular_experiment

        if reporter:
            reporter.log("tabular: constrained attacks and constrained adversarial training")
        t0 = time.perf_counter()
        path = _relative_to_config(cfg.data.path, config_path)
        schema = _relative_to_config(cfg.data.schema_path, config_path)
        assert path is not None and schema is not None  # checked by RunConfig
        out["tabular"] = run_tabular_experiment(
            cfg.tabular, path, schema, run_dir / "tabular", seed=cfg.seed
        )
        if timings is not None:
            timings["tabular_seconds"] = time.perf_counter() - t0
    if cfg.text is not None:
        from bastion.text.experiment import run_text_experiment

        if cfg.text.file is not None:  # a csv or jsonl file, relative to the config file
            folder = _relative_to_config(cfg.text.file.path, config_path)
        else:
            folder = resolve_data_dir(cfg, config_path, data_dir)
        if folder is None:
            raise BastionError(
                f"text: give the folder of the {cfg.text.dataset} files with --data-dir or "
                "data.data_dir"
            )
        if reporter:
            reporter.log(f"text: {cfg.text.dataset}, standard and hardened models, attacks")

        def show(event: dict[str, Any]) -> None:
            if reporter and event.get("stage") == "attack":
                reporter.log(f"text: {event.get('attack')} on {event.get('target')}")

        t0 = time.perf_counter()
        out["text"] = run_text_experiment(
            cfg.text, Path(folder), run_dir, seed=cfg.seed, progress=show
        )
        if timings is not None:
            timings["text_seconds"] = time.perf_counter() - t0
    return out


def build_scorecard(
    cfg: RunConfig,
    data: Dataset | None,
    model_results: dict[str, dict[str, Any]],
    *,
    timings: dict[str, float],
    command: str,
    n_eval: int,
    warnings: list[dict[str, str]] | None = None,
    channels: dict[str, Any] | None = None,
    runtime: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the scorecard document (see :mod:`bastion.evaluation.scorecard`), validated
    by :class:`bastion.evaluation.scorecard_model.Scorecard` (its JSON dump is returned).

    ``channels`` holds the ``tabular`` and ``text`` sections; without image/tabular models
    (``data is None``) the ``data`` section is the first channel's data summary."""
    channels = channels or {}
    if data is not None:
        data_doc: dict[str, Any] = {**data.summary(), "n_eval": n_eval}
    elif "text" in channels:
        data_doc = {**channels["text"].get("dataset", {}), "n_eval": n_eval}
    elif "tabular" in channels:
        data_doc = {
            "name": Path(cfg.data.path or "tabular").name,
            **channels["tabular"].get("data", {}),
            "n_eval": n_eval,
        }
    else:
        data_doc = {"n_eval": n_eval}
    cfg_doc = cfg.model_dump(mode="json", by_alias=True)
    threat_doc, attacks_doc = _evaluated_threat_and_attacks(cfg, data)
    doc: dict[str, Any] = sanitize(
        {
            "schema_version": SCHEMA_VERSION,
            "run": {
                "name": cfg.name,
                "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "seed": cfg.seed,
                "config_hash": config_hash(cfg_doc),
                "command": command,
            },
            "data": data_doc,
            "threat": threat_doc,
            "evaluation": {"attacks": attacks_doc, "examples": n_eval},
            "versions": package_versions(),
            "runtime": runtime_record(runtime),
            "models": model_results,
            "timings": {k: round(v, 3) for k, v in timings.items()},
            "warnings": list(warnings or []),
            **({"card": cfg.card.model_dump()} if cfg.card is not None else {}),
            **channels,
        }
    )
    return load_scorecard(doc).to_json()


def _evaluated_threat_and_attacks(
    cfg: RunConfig, data: Dataset | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The scorecard's top-level ``threat`` and ``evaluation.attacks``: the image/array
    models' when there are any, else what the tabular or text channel actually ran (never the
    config's unused defaults)."""
    if data is not None or (cfg.tabular is None and cfg.text is None):
        return cfg.threat_model().to_dict(), [
            {"label": a.key, "name": a.name, **recorded_settings(a.name, a.settings())}
            for a in cfg.evaluation.attacks
        ]
    if cfg.tabular is not None:
        tab = cfg.tabular
        threat = {"channel": "tabular", "norm": tab.norm, "eps": tab.eps, "bounds": [0.0, 1.0]}
        attacks = [
            {"label": a, "name": a, "channel": "tabular", **_knowledge(a, {}, "tabular")}
            for a in tab.attacks
        ]
        return threat, attacks
    assert cfg.text is not None
    text = cfg.text
    threat = {
        "channel": "text",
        "edits": "character, homoglyph, invisible-character and word substitutions",
        "word_share": text.attack.max_share,
        "char_share": text.attack.char_max_share,
        "invisible_share": text.attack.invisible_max_share,
    }
    attacks = [
        {
            "label": a,
            "name": str(a),
            "channel": "text",
            **_knowledge(a, text_attack_settings(text.attack, a), "text"),
        }
        for a in text.attacks
    ]
    return threat, attacks


def _knowledge(name: str, settings: dict[str, Any], channel: str) -> dict[str, str]:
    """``{"knowledge": ...}``: what a channel attack knows with ``settings``, from the
    registry (white-box first when it exercises several kinds)."""
    return {"knowledge": attack_knowledge(name, settings, channel=channel)[0]}


def _channel_examples(channels: Mapping[str, Any]) -> int:
    """How many test examples a channel-only run attacked (tabular first, then text)."""
    if "tabular" in channels:
        return int((channels["tabular"].get("data") or {}).get("attacked") or 0)
    if "text" in channels:
        return int(channels["text"].get("n_attacked") or 0)
    return 0


def runtime_record(threads: Mapping[str, Any] | None) -> dict[str, Any]:
    """The scorecard's ``runtime`` section: the device the models ran on (``threads["device"]``
    when the caller put it there, else ``cpu``), torch threads (and how they were chosen),
    cores available."""
    from bastion.runtime import available_cores

    choice = {k: v for k, v in (threads or {}).items() if k != "device"}
    return {
        "device": str((threads or {}).get("device", "cpu")),
        "cores": available_cores(),
        "threads": torch.get_num_threads(),
        **({"thread_choice": choice} if choice else {}),
    }


def collect_warnings(cfg: RunConfig, results: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """Simple sanity checks on the results, recorded in the scorecard (Carlini et al. 2019)."""
    out: list[dict[str, str]] = []
    for r in results.values():  # the gradient-masking checks of bastion.evaluation.sanity
        out += r.get("sanity_warnings", [])
    key = eps_key(cfg.threat.eps)
    for name, r in results.items():
        attacks = r.get("attacks", {})
        single = [v[key] for lbl, v in attacks.items() if lbl.startswith("fgsm") and key in v]
        multi = [v[key] for lbl, v in attacks.items() if lbl.startswith("pgd") and key in v]
        if single and multi and min(multi) > min(single) + 1e-9:
            out.append(
                {
                    "code": "single-step-beats-iterative",
                    "model": name,
                    "message": f"FGSM ({min(single):.1%}) is stronger than PGD "
                    f"({min(multi):.1%}): a sign of "
                    "gradient masking or a too-weak PGD; do not trust this robust accuracy without "
                    "stronger and black-box attacks.",
                }
            )
        curve = r.get("accuracy_vs_eps", {}).get("worst_case", [])
        if any(b > a + 0.02 for a, b in itertools.pairwise(curve)):
            out.append(
                {
                    "code": "non-monotonic-eps",
                    "model": name,
                    "message": "Accuracy rises with a larger eps somewhere on the curve: the "
                    "attacks are not "
                    "converging; raise steps or restarts.",
                }
            )
    from bastion.evaluation.latency import implausible_gaps

    timed = {
        name: (str(r.get("architecture")), r["latency"])
        for name, r in results.items()
        if isinstance(r.get("latency"), dict)
    }
    for model, message in implausible_gaps(timed):
        out.append({"code": "latency-implausible", "model": model, "message": message})
    seen: set[tuple[str, str]] = set()  # one warning per (code, model): the first, most detailed
    unique = []
    for w in out:
        if (w["code"], w["model"]) not in seen:
            seen.add((w["code"], w["model"]))
            unique.append(w)
    return unique


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(out: Path) -> list[Path]:
    """Delete hidden ``.<name>.partial-<pid>`` directories left by runs whose process is gone
    (killed with SIGKILL, or a machine that lost power); return what was removed."""
    removed = []
    for p in out.glob(".*.partial-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if p.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _unique_dir(parent: Path, stem: str) -> Path:
    p = parent / stem
    i = 1
    while p.exists():
        i += 1
        p = parent / f"{stem}-{i}"
    return p


def summary_tables(scorecard: dict[str, Any]) -> list[Table]:
    """The run's summary tables: models (if any), then the tabular and text channels."""
    out = [summary_table(scorecard)] if scorecard.get("models") else []
    tab = scorecard.get("tabular")
    if tab:
        th = tab.get("threat", {})
        t = Table(title=f"tabular: {th.get('norm')} eps {th.get('eps')}, constraints enforced")
        for col in ["model", "objective", "clean", "robust (worst)"]:
            t.add_column(col, justify="left" if col in ("model", "objective") else "right")
        for name, m in tab.get("models", {}).items():
            t.add_row(
                name,
                str(m.get("objective")),
                f"{m['clean_accuracy']:.1%}",
                f"{m['robust_accuracy']:.1%}",
            )
        out.append(t)
    txt = scorecard.get("text")
    if txt:
        t = Table(title=f"text: {txt.get('dataset', {}).get('name')}, attack success rate")
        targets = ["standard", "hardened", "hardened+sanitizer"]
        for col in ["attack", *targets]:
            t.add_column(col, justify="left" if col == "attack" else "right")
        for name, per in txt.get("attacks", {}).items():
            t.add_row(
                name,
                *[
                    "-"
                    if per.get(x, {}).get("success_rate") is None  # none correct: no rate
                    else f"{per[x]['success_rate']:.1%}"
                    for x in targets
                ],
            )
        out.append(t)
    return out


def summary_table(scorecard: dict[str, Any]) -> Table:
    key = eps_key(scorecard["threat"]["eps"])
    labels: list[str] = []
    for r in scorecard["models"].values():
        labels += [lbl for lbl in r.get("attacks", {}) if lbl not in labels]
    t = Table(
        title=f"{scorecard['run']['name']}: {scorecard['threat']['norm']} eps {key}, "
        f"{scorecard['data']['n_eval']} test examples"
    )
    for col in ["model", "objective", "clean", *labels, "worst case", "train s"]:
        t.add_column(col, justify="left" if col in ("model", "objective") else "right")
    for name, r in scorecard["models"].items():
        cells = [name, r["objective"], f"{r['clean_accuracy']:.1%}"]
        cells += [
            f"{r['attacks'][lbl][key]:.1%}" if lbl in r.get("attacks", {}) else "-"
            for lbl in labels
        ]
        cells.append(worst_case_cell(r))
        cells.append(f"{r['training']['seconds']:.0f}" if "training" in r else "-")
        t.add_row(*cells)
    return t


def with_subset(cfg: RunConfig, subset: int | None) -> RunConfig:
    """``cfg`` evaluating only the first ``subset`` test examples (every suite of the
    evaluation section), or ``cfg`` itself when ``subset`` is ``None``."""
    if subset is None:
        return cfg
    if subset < 1:
        raise BastionError(f"--subset: expected an integer >= 1, got {subset}")
    ev = cfg.evaluation
    update: dict[str, Any] = {"examples": subset}
    for name in ("corruptions", "calibration", "shifts"):
        part = getattr(ev, name)
        if part is not None:
            update[name] = part.model_copy(update={"examples": subset})
    return cfg.model_copy(update={"evaluation": ev.model_copy(update=update)})


def train_models(
    cfg: RunConfig,
    data: Dataset,
    train_data: Dataset,
    run_dir: Path,
    reporter: ProgressReporter,
    device: torch.device,
    config_path: Path,
    timings: dict[str, float],
) -> tuple[list[TrainedModel], list[dict[str, str]]]:
    """The run's train stage: train every model entry on ``train_data`` (the data, or its
    quarantined copy under a poisoning section), save each under ``run_dir/models`` with its
    metadata (fingerprinted on ``data``), record ``train_<name>_seconds`` in ``timings``; returns
    the trained models and the catastrophic-overfitting warnings."""
    trained: list[TrainedModel] = []
    warnings: list[dict[str, str]] = []
    for entry in cfg.models:
        reporter.log(f"training {entry.name} ({entry.objective.name})")
        model, result = train_entry(cfg, entry, train_data, reporter=reporter, device=device)
        timings[f"train_{entry.name}_seconds"] = result.seconds
        meta = model_metadata(cfg, entry, data, result, config_path=config_path)
        save_model(model, run_dir / "models" / entry.name, meta)
        trained.append(
            TrainedModel(
                entry.name,
                model,
                entry.objective.name,
                cfg.architecture_for(entry).architecture,
                result.summary(),
                temperature=result.temperature or 1.0,
            )
        )
        warnings += [
            {"code": "catastrophic-overfitting", "model": entry.name, "message": w}
            for w in result.warnings
        ]
    return trained, warnings


def _privacy_stage(
    cfg: RunConfig,
    run_dir: Path,
    trained: list[TrainedModel],
    data: Dataset | None,
    data_dir: str | None,
    reporter: ProgressReporter,
    timings: dict[str, float],
) -> list[dict[str, str]]:
    """The run's privacy stage (:mod:`bastion.privacy.run_section`): audit the trained models
    when the config has a privacy section; returns the warning when there is nothing to audit
    (said, never skipped silently)."""
    privacy_section = cfg.privacy_config()
    if privacy_section is None:
        return []
    if data is None:
        message = (
            "privacy: the section audits the image and array models this run trains; "
            "this config trains none (text and tabular channels are not audited yet)"
        )
        reporter.log(message)
        return [{"code": "privacy-not-run", "message": message}]
    from bastion.privacy.run_section import run_privacy_section

    t0 = time.perf_counter()
    run_privacy_section(
        privacy_section,
        run_dir,
        [t.name for t in trained],
        seed=cfg.seed,
        data_dir=data_dir,
        log=reporter.log,
    )
    timings["privacy_seconds"] = time.perf_counter() - t0
    return []


def _channel_stage(
    cfg: RunConfig,
    run_dir: Path,
    config_path: Path,
    data_dir: str | os.PathLike[str] | None,
    reporter: ProgressReporter,
    timings: dict[str, float],
) -> dict[str, Any]:
    """The run's channel stage: the text or tabular channel's poisoning drill (a poisoning
    section in a config without array models) and the tabular/text channels
    (:func:`run_channels`); returns their scorecard sections, paths relative to ``run_dir``."""
    drill = None
    pcfg = cfg.poisoning_config()
    if pcfg is not None and not cfg.models:
        from bastion.poisoning.channel_run import run_channel_poisoning

        drill = run_channel_poisoning(
            pcfg,
            cfg,
            run_dir,
            data_dir=resolve_data_dir(cfg, config_path, data_dir),
            config_dir=config_path.parent,
            log=reporter.log,
        )
    channels: dict[str, Any] = relative_paths(
        run_channels(
            cfg,
            run_dir,
            config_path=config_path,
            data_dir=data_dir,
            reporter=reporter,
            timings=timings,
        ),
        run_dir,
    )
    if drill is not None:
        channels["poisoning"] = drill
    return channels


def _examples_evaluated(cfg: RunConfig, data: Dataset | None, channels: dict[str, Any]) -> int:
    """How many test examples the run evaluated (the channels' count without array data)."""
    if data is None:
        return _channel_examples(channels)
    if cfg.evaluation.examples is None:
        return len(data.test)
    return min(cfg.evaluation.examples, len(data.test))


def _write_run_files(scorecard: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The run's report stage: attach the privacy audit, write ``scorecard.json``,
    ``report.html`` and ``model_card.md``; returns the scorecard written."""
    from bastion.report import write_report
    from bastion.report.model_card import render_model_card

    if (run_dir / "privacy.json").is_file():
        from bastion.privacy.run_section import attach_run_privacy

        scorecard = attach_run_privacy(scorecard, run_dir)
    write_json(scorecard, run_dir / "scorecard.json")
    write_report(scorecard, run_dir / "report.html")
    (run_dir / "model_card.md").write_text(render_model_card(scorecard), encoding="utf-8")
    return scorecard


def _run_runtime(
    cfg: RunConfig, device: str | None, threads: int | str | None, console: Console
) -> tuple[torch.device, Any]:
    """The run's device (``--device``, else the config's) and thread choice (applied, said)."""
    dev = resolve_device(
        device if device is not None else cfg.device,
        where="--device" if device is not None else "device",
    )
    thread_choice = apply_threads(
        parse_threads(threads if threads is not None else cfg.threads, where="threads")
    )
    console.print(thread_choice.describe(), highlight=False)
    return dev, thread_choice


def _partial_run_dir(out: Path, name: str, console: Console) -> tuple[str, Path]:
    """Create ``out`` and the run's hidden partial directory in it (after removing those of
    killed runs); returns the run's time stamp and the partial directory."""
    out.mkdir(parents=True, exist_ok=True)
    for p in remove_stale_partials(out):
        console.print(f"removed {p.name}, left by a run that was killed")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    tmp = out / f".{name}-{stamp}.partial-{os.getpid()}"
    tmp.mkdir()
    return stamp, tmp


def _prepare_poisoning(
    cfg: RunConfig, data: Dataset | None, run_dir: Path, reporter: ProgressReporter
) -> Any:
    """The poisoning section's scan and quarantine before training (:mod:`bastion.poisoning`),
    or ``None`` without a poisoning section or array data."""
    pcfg = cfg.poisoning_config()
    if pcfg is None or data is None:
        return None
    from bastion.poisoning.flow import prepare_run_training

    return prepare_run_training(pcfg, data, run_dir, seed=cfg.seed, log=reporter.log)


def _poisoning_section(poisoning: Any, trained: list[TrainedModel]) -> dict[str, Any]:
    """The poisoning section's check of the trained models (none without the section)."""
    if poisoning is None:
        return {}
    return {"poisoning": poisoning.verify([(t.name, t.model) for t in trained])}


def _guard_stage(
    cfg: RunConfig, data: Dataset | None, run_dir: Path, reporter: ProgressReporter
) -> dict[str, Any]:
    """The run's guard stage: fit and evaluate the guard of a ``guard`` section on array data
    (:func:`fit_run_guard`); returns its scorecard section, or nothing."""
    if cfg.guard is None or data is None:
        return {}
    return {"guard": fit_run_guard(cfg, data, run_dir, reporter=reporter)}


def _print_summary(scorecard: dict[str, Any], final: Path, console: Console) -> None:
    """The summary tables, warnings and escalations, and where the run was written."""
    for table in summary_tables(scorecard):
        console.print(table)
    for line in summary_lines(scorecard):  # warnings and escalations
        console.print(line, highlight=False, markup=False)
    console.print(f"run written to {final}")


def run_pipeline(
    config_path: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] = "runs",
    console: Console | None = None,
    show_progress: bool = True,
    command: str = "bastion run",
    subset: int | None = None,
    threads: int | str | None = None,
    device: str | None = None,
) -> Path:
    """Run the whole pipeline for a config; return the completed run directory.

    ``device`` (``--device``; else the config's ``device``; ``auto`` picks CUDA, then MPS, then
    the CPU) is where the models train and are evaluated; it is recorded in the scorecard's
    ``runtime`` section. A device that is not present is a ConfigError before anything runs.

    The run is written to a hidden temporary directory beside the final one and renamed once
    complete: a run that fails or is interrupted leaves no partial run directory behind.
    """
    t_start = time.perf_counter()
    config_path = Path(config_path)
    cfg, raw = load_config(config_path)
    cfg = with_subset(cfg, subset)
    console = console or Console(stderr=True)
    dev, thread_choice = _run_runtime(cfg, device, threads, console)
    reporter = ProgressReporter(console, enabled=show_progress)
    t0 = time.perf_counter()
    data = load_run_data(cfg, config_path=config_path, data_dir=data_dir) if cfg.models else None
    timings: dict[str, float] = {"data_seconds": time.perf_counter() - t0}
    out = Path(out_dir)
    created_out = not out.exists()
    stamp, tmp = _partial_run_dir(out, cfg.name, console)
    try:
        (tmp / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        trained: list[TrainedModel] = []
        training_warnings: list[dict[str, str]] = []
        with reporter.session():
            poisoning = _prepare_poisoning(cfg, data, tmp, reporter)
            if data is not None:
                train_data = data if poisoning is None else poisoning.data
                trained, training_warnings = train_models(
                    cfg, data, train_data, tmp, reporter, dev, config_path, timings
                )
            t0 = time.perf_counter()
            results = evaluate_models(cfg, trained, data, reporter=reporter) if data else {}
            timings["evaluation_seconds"] = time.perf_counter() - t0
            dirs = resolve_data_dir(cfg, config_path, data_dir)
            training_warnings += _privacy_stage(cfg, tmp, trained, data, dirs, reporter, timings)
            results_guard = _guard_stage(cfg, data, tmp, reporter)
            channels = _channel_stage(cfg, tmp, config_path, data_dir, reporter, timings)
        timings["total_seconds"] = time.perf_counter() - t_start
        scorecard = build_scorecard(
            cfg,
            data,
            results,
            timings=timings,
            command=command,
            n_eval=_examples_evaluated(cfg, data, channels),
            warnings=training_warnings + collect_warnings(cfg, results),
            channels={**channels, **results_guard, **_poisoning_section(poisoning, trained)},
            runtime={**thread_choice.to_dict(), "device": str(dev)},
        )
        scorecard = _write_run_files(scorecard, tmp)
        final = _unique_dir(out, f"{cfg.name}-{stamp}")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created_out and not any(out.iterdir()):
            out.rmdir()  # nothing of this run is left behind, not even the folder it made
        raise
    _print_summary(scorecard, final, console)
    from bastion.registry.hooks import record_run_dir

    record_run_dir(final, out_dir=out, console=console, command=command)
    return final
