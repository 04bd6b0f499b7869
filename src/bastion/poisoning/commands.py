"""``bastion scan data CONFIG`` and ``bastion scan model MODEL``.

``scan data`` loads the config's data set, applies the ``poisoning.attack`` drill if there is
one, trains the scan model, runs the configured scans and hygiene checks and writes the
quarantine (every flagged example with its scores and reasons) as JSON. ``scan model`` runs
Neural Cleanse on a saved model with clean examples of its own validation split, writes the
verdict as JSON and the recovered trigger as PNG, and exits with status 1 when the model is
flagged (0 otherwise), so a CI job can gate on it. Bad input exits 2 with one line (the
command line's :class:`~bastion.errors.BastionError` handling).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from bastion.poisoning.flow import DataScan

scan_app = typer.Typer(
    no_args_is_help=True,
    help="Scan training data (before training) and trained models (after) for poisoning.",
)
_out = Console(soft_wrap=True)  # lines never wrap in a log file
_err = Console(stderr=True, soft_wrap=True)


def _threads(threads: str | None) -> None:
    from bastion.runtime import apply_threads, parse_threads

    choice = apply_threads(
        parse_threads(threads if threads is not None else "auto", where="--threads")
    )
    _err.print(choice.describe(), highlight=False)


@scan_app.command("data")
def scan_data_command(
    config: Annotated[Path, typer.Argument(help="Run config with a 'poisoning' section.")],
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Directory of the data set files.")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Where to write the quarantine JSON.")] = Path(
        "quarantine.json"
    ),
    train_examples: Annotated[
        int | None,
        typer.Option("--train-examples", min=1, help="Scan only the first N training examples."),
    ] = None,
    threads: Annotated[str | None, typer.Option("--threads", help="torch CPU threads.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
) -> None:
    """Scan a config's training data: activation clustering / spectral scans on a scan
    model's features, duplicates, label issues; write the quarantine JSON."""
    from bastion.config import load_config
    from bastion.errors import ConfigError
    from bastion.pipeline import load_run_data
    from bastion.poisoning.config import PoisoningConfig, run_channel
    from bastion.poisoning.flow import prepare_training_set, scan_data
    from bastion.poisoning.quarantine import write_quarantine

    _threads(threads)
    cfg, _ = load_config(config)
    if run_channel(cfg) != "image":
        raise ConfigError(
            f"{config}: poisoning: bastion scan data scans image data; the {run_channel(cfg)} "
            "channel's drill runs in bastion run"
        )
    pcfg = cfg.poisoning_config() or PoisoningConfig()
    if train_examples is not None:
        pcfg = pcfg.model_copy(update={"train_examples": train_examples})
    data = load_run_data(cfg, config_path=config, data_dir=data_dir)
    if data.kind != "image":
        raise ConfigError(f"{config}: poisoning: scans need image data, got {data.kind!r} data")
    x, y, record = prepare_training_set(pcfg, data, seed=cfg.seed)

    def log(message: str) -> None:
        if not quiet:
            _err.print(message, highlight=False)

    result = scan_data(
        x,
        y,
        data.val.x,
        data.val.y,
        scan=pcfg.scan,
        num_classes=data.num_classes,
        mean=data.mean,
        std=data.std,
        truth=None if record is None else record.poisoned,
        seed=cfg.seed,
        log=log,
    )
    extra: dict[str, Any] = {
        "config": str(config),
        "data": data.summary(),
        "seconds": round(result.seconds, 2),
        "poisoning": None if record is None else record.record(),
        "detection": result.metrics,
    }
    path = write_quarantine(result.quarantine, out, extra=extra)
    _print_scan(result)
    _out.print(f"quarantine written to {path}", highlight=False)


def _print_scan(result: DataScan) -> None:
    """The summary lines of ``bastion scan data``: counts by reason, suspect classes per
    latent scan, and detection against the drill's record when there is one."""
    q = result.quarantine
    by_reason: dict[str, int] = {}
    for e in q.entries:
        for reason in e.reasons:
            by_reason[reason] = by_reason.get(reason, 0) + 1
    _out.print(
        f"scanned {q.n} training examples: {len(q.entries)} quarantined "
        f"({len(q.entries) / max(1, q.n):.2%})"
        + "".join(f"; {k}: {v}" for k, v in sorted(by_reason.items())),
        highlight=False,
    )
    for name, r in result.scans.items():
        _out.print(f"  {name}: suspect classes {r.suspect_classes or 'none'}", highlight=False)
    if result.metrics is not None:
        m = result.metrics["quarantine"]
        _out.print(
            f"  against the drill's record: recall {m['recall']:.2%}, precision "
            f"{m['precision']:.2%}, clean quarantined {m['clean_flagged_rate']:.2%}",
            highlight=False,
        )


@scan_app.command("model")
def scan_model_command(
    model: Annotated[Path, typer.Argument(help="Model saved by bastion (.safetensors or stem).")],
    data: Annotated[
        str | None,
        typer.Option("--data", help="Data set name (default: the one the model was trained on)."),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Directory of the data set files.")
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Directory for neural-cleanse.json and trigger.png.")
    ] = Path("model-scan"),
    examples: Annotated[
        int, typer.Option("--examples", "-n", min=10, help="Clean validation examples used.")
    ] = 1000,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Optimisation steps.")] = 400,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the trigger search.")] = 0,
    threads: Annotated[str | None, typer.Option("--threads", help="torch CPU threads.")] = None,
) -> None:
    """Neural Cleanse on a saved model; exit status 1 when a backdoor is suspected.

    Reverse-engineers a trigger per class and flags the model when the smallest trigger's MAD
    anomaly index exceeds 2."""
    from bastion.errors import BastionError
    from bastion.models import load_model, read_sidecar
    from bastion.poisoning.neural_cleanse import CleanseSettings, neural_cleanse, save_trigger_png
    from bastion.provenance import load_model_split

    _threads(threads)
    net = load_model(model)
    meta = read_sidecar(model)
    source = load_model_split(
        meta,
        data=data,
        data_dir=data_dir,
        where=str(model),
        warn=lambda m: _err.print(f"[bold yellow]warning:[/] {m}", highlight=False),
    )
    ds = source.data
    if tuple(ds.input_shape) != tuple(net.spec.input_shape) or len(ds.input_shape) != 3:
        raise BastionError(
            f"{model}: Neural Cleanse needs image inputs matching the model "
            f"{tuple(net.spec.input_shape)}, got data of shape {tuple(ds.input_shape)}"
        )
    clean = ds.val if len(ds.val) else ds.test
    res = neural_cleanse(
        net,
        clean.x[:examples],
        num_classes=ds.num_classes,
        settings=CleanseSettings(steps=steps),
        seed=seed,
    )
    out.mkdir(parents=True, exist_ok=True)
    smallest = int(res.norms.argmin())
    png = save_trigger_png(res.triggers[smallest], out / "trigger.png")
    doc = {
        "model": str(model),
        **res.summary(),
        "trigger_png": png.name,
        "classes": list(ds.classes),
    }
    tmp = out / "neural-cleanse.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    os.replace(tmp, out / "neural-cleanse.json")
    verdict = (
        f"BACKDOOR SUSPECTED: target class {res.target} ({ds.classes[smallest]})"
        if res.flagged
        else "no backdoor found"
    )
    _out.print(
        f"{verdict}; anomaly index {res.max_anomaly:.2f} (flagged above "
        f"{res.settings['threshold']:g}); smallest trigger L1 {float(res.norms[smallest]):.1f} "
        f"for class {smallest}, median {float(res.norms.quantile(0.5)):.1f}",
        highlight=False,
    )
    _out.print(f"written {out / 'neural-cleanse.json'} and {png}", highlight=False)
    if res.flagged:
        raise typer.Exit(1)
