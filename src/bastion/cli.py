"""The ``bastion`` command line.

``bastion run CONFIG`` runs the whole pipeline; ``train``, ``attack``, ``evaluate`` and
``report`` run one stage each; ``data`` fetches and inspects data sets. Bad input exits with
status 2 and one line naming the field or file at fault.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from bastion.errors import BastionError
from bastion.poisoning.commands import scan_app

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Harden machine-learning models against malicious input.",
)
data_app = typer.Typer(no_args_is_help=True, help="Fetch and inspect data sets.")
app.add_typer(data_app, name="data")
app.add_typer(scan_app, name="scan")  # bastion scan data CONFIG / scan model MODEL

_err = Console(stderr=True, soft_wrap=True)  # lines never wrap in a log file


class Interrupted(Exception):
    """Ctrl-C during a command: ``main`` prints the message (what was kept, how to resume) and
    exits with status 130."""


_out = Console(soft_wrap=True)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Directory holding the data set files (else BASTION_DATA)."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]
SavedModel = Annotated[
    Path,
    typer.Argument(
        help="Model saved by bastion (.safetensors or stem), or a reference file (.yaml) for "
        "a model from outside the zoo."
    ),
]
ModelData = Annotated[
    str | None,
    typer.Option("--data", help="Data set name (default: the one the model was trained on)."),
]
ModelNorm = Annotated[
    str | None,
    typer.Option("--norm", help="linf, l2 or l1 (default: the model's threat model)."),
]
SplitSeed = Annotated[
    int | None,
    typer.Option(
        "--split-seed",
        help="Seed of the train/val/test split (default: the one recorded with the model; "
        "needed only for models saved without it).",
    ),
]
Threads = Annotated[
    str | None,
    typer.Option(
        "--threads",
        help="torch CPU threads: an integer, or auto (the cores the load leaves free; the "
        "default, else the config's 'threads').",
    ),
]
Device = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps (default: the config's "
        "'device', else auto).",
    ),
]
Subset = Annotated[
    int | None,
    typer.Option("--subset", min=1, help="Evaluate only the first N test examples (a quick look)."),
]


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="YAML threat-model and run config.")],
    data_dir: DataDir = None,
    out: Annotated[Path, typer.Option("--out", help="Parent directory of run directories.")] = Path(
        "runs"
    ),
    quiet: Quiet = False,
    subset: Subset = None,
    threads: Threads = None,
    device: Device = None,
) -> None:
    """Train a baseline and hardened model(s), evaluate them, write scorecard and report."""
    from bastion.pipeline import run_pipeline

    try:
        run_pipeline(
            config,
            data_dir=data_dir,
            out_dir=out,
            subset=subset,
            console=_err,
            show_progress=not quiet,
            command="bastion " + " ".join(sys.argv[1:]),
            threads=threads,
            device=device,
        )
    except KeyboardInterrupt:
        raise Interrupted("interrupted; nothing written (the partial run was removed)") from None


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="YAML run config.")],
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Which entry of 'models' (default: the last)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Model path stem (writes .safetensors and .json).")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue an interrupted run from its checkpoint folder (STEM.checkpoint) "
            "or checkpoint.pt.",
        ),
    ] = None,
    data_dir: DataDir = None,
    quiet: Quiet = False,
    threads: Threads = None,
    device: Device = None,
) -> None:
    """Train one model entry of a config and save it (checkpoints in STEM.checkpoint while it
    runs, removed once the model is saved; --resume continues an interrupted run)."""
    from bastion.config import load_config
    from bastion.models import save_model
    from bastion.pipeline import load_run_data
    from bastion.progress import ProgressReporter
    from bastion.stages import (
        TrainInputs,
        check_resume,
        default_checkpoint_dir,
        remove_checkpoints,
        resume_folder,
        train_stage,
    )

    cfg, _ = load_config(config)
    names = [m.name for m in cfg.models]
    if model is not None and model not in names:
        raise BastionError(f"--model: expected one of {', '.join(names)}, got {model!r}")
    entry = cfg.models[names.index(model)] if model is not None else cfg.models[-1]
    resume_from = resume_folder(resume) if resume is not None else None
    if resume_from is not None:
        check_resume(resume_from, cfg, entry)
    path = out or Path(f"{cfg.name}-{entry.name}")
    ckpt = resume_from or default_checkpoint_dir(path)
    dev, dp = _train_processes(device, cfg.device, threads, cfg.threads, quiet)
    main_process = dp is None or dp.is_main
    data = load_run_data(cfg, config_path=config, data_dir=data_dir)
    reporter = ProgressReporter(_err, enabled=not quiet and main_process)
    inputs = TrainInputs(cfg, entry, data, config, ckpt, resume_from, reporter, dp, dev)
    try:
        with reporter.session():
            trained = train_stage(inputs)
    except KeyboardInterrupt:
        if dp is not None:
            dp.close(wait=False)
        raise Interrupted(
            f"interrupted; no model written (checkpoint kept in {ckpt}: continue with "
            f"bastion train {config} --resume {ckpt})"
        ) from None
    except BaseException:
        if dp is not None:
            dp.close(wait=False)
        raise
    if dp is not None:
        dp.close()
    if not main_process:
        return  # rank 0 saves the (identical) model
    written = save_model(trained.model, path, trained.metadata)
    remove_checkpoints(ckpt)
    _print_trained(written, trained.result)
    from bastion.registry.hooks import record_model_file

    record_model_file(written, console=_err, command="bastion " + " ".join(sys.argv[1:]))


def _train_processes(
    device: str | None, config_device: str, threads: str | None, config_threads: Any, quiet: bool
) -> tuple[Any, Any]:
    """The device and, under torchrun, this process's :class:`DataParallel` place for
    ``bastion train``; sets the thread count (each process takes its share of the cores)."""
    import os

    import torch

    from bastion.training.distributed import DataParallel

    dev = _resolve_device(device, config_device)
    if dev.type == "cuda" and dev.index is None and "LOCAL_RANK" in os.environ:
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))  # one GPU per torchrun process
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # NCCL's collectives run on the current GPU
    dp = DataParallel.from_env(device=dev)  # under torchrun: this process's rank
    main_process = dp is None or dp.is_main
    if dp is not None and threads is None and config_threads == "auto":
        from bastion.runtime import available_cores

        threads = str(max(1, available_cores() // dp.world))  # the processes share the cores
    _use_threads(threads, config_threads, quiet=not main_process)
    if dp is not None and main_process:
        _err.print(f"data-parallel training on {dp.world} processes", highlight=False)
    return dev, dp


def _print_trained(written: Path, result: Any) -> None:
    best = result.history[result.best_epoch - 1] if result.best_epoch else result.history[-1]
    val_robust = best["val_robust_accuracy"]  # NaN: not measured (standard training)
    robust_text = "not measured" if val_robust != val_robust else f"{val_robust:.1%}"
    _out.print(
        f"saved {written} (epoch {result.best_epoch}: val clean {best['val_clean_accuracy']:.1%}, "
        f"val robust {robust_text}, {result.seconds:.0f} s)"
    )


@app.command()
def attack(
    model: SavedModel,
    data: ModelData = None,
    attack_name: Annotated[
        str,
        typer.Option(
            "--attack",
            help="Attack name: fgsm, pgd, apgd, apgd-t, square, cascade, transfer with -p "
            "surrogate=MODEL, patch, ... ('bastion attacks list' shows every attack).",
        ),
    ] = "pgd",
    norm: ModelNorm = None,
    eps: Annotated[
        float | None,
        typer.Option(
            "--eps",
            help="Perturbation budget (default: the model's threat model; for patch, the "
            "smallest ball that holds every patch).",
        ),
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Iterations (pgd).")] = None,
    restarts: Annotated[
        int | None, typer.Option("--restarts", help="Random restarts (pgd).")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            help="Attack setting KEY=VALUE, typed by the attack's settings ('bastion attacks "
            "list NAME' shows them, with types, defaults and bounds); repeat, e.g. -p "
            "preset=standard -p queries=1000.",
        ),
    ] = None,
    examples: Annotated[
        int, typer.Option("--examples", "-n", min=1, help="First N test examples.")
    ] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="The attack's seed (not the split's).")] = 0,
    split_seed: SplitSeed = None,
    save: Annotated[
        Path | None,
        typer.Option("--save", help="Write x_adv, y and success to this .safetensors file."),
    ] = None,
    data_dir: DataDir = None,
    threads: Threads = None,
    device: Device = "auto",
) -> None:
    """Attack a saved model on the first N examples of its own test split and report its
    accuracy under attack."""
    import torch
    from safetensors.torch import save_file

    from bastion.attacks import build_attack, predict
    from bastion.attacks.registry import parse_attack_params
    from bastion.runtime import resolve_device

    params: dict[str, Any] = {}
    if steps is not None:
        params["steps"] = steps
    if restarts is not None:
        params["restarts"] = restarts
    params.update(parse_attack_params(attack_name, param or [], where="--param"))
    atk = build_attack(attack_name, params, where="--attack")
    _use_threads(threads)
    dev = resolve_device(device)
    net, meta, ds = _model_and_split(model, data, split_seed, data_dir)
    net = net.to(dev)
    threat = _threat_for(meta, norm, eps, atk, ds.input_shape)
    test = ds.test.subset(examples)
    x, y = test.x.to(dev), test.y.to(dev)
    clean = predict(net, x) == y
    res = atk(net, x, y, threat, generator=torch.Generator(device=dev).manual_seed(seed))
    robust = clean & ~res.success
    _out.print(
        f"{atk!r} at {threat.norm} eps {threat.eps:g} on {len(test)} test examples of "
        f"{ds.name} ({dev}): clean accuracy {float(clean.float().mean()):.1%}, "
        f"accuracy under attack {float(robust.float().mean()):.1%}, "
        f"mean queries {float(res.queries.float().mean()):.1f}"
    )
    if save is not None:
        save.parent.mkdir(parents=True, exist_ok=True)
        save_file(
            {
                "x_adv": res.x_adv.cpu().contiguous(),
                "y": test.y.contiguous(),
                "success": res.success.cpu().to(torch.uint8),
            },
            str(save),
        )
        _out.print(f"adversarial examples written to {save}")


def _check_black_box_evaluation(cfg: Any, *, where: str) -> None:
    """A model without gradients (ONNX) can only be evaluated by black-box attacks, and
    without the gradient-based sanity checks: say so up front, naming what to change."""
    from bastion.attacks.registry import attack_knowledge

    white = [
        a.key
        for a in cfg.evaluation.attacks
        if "white-box" in attack_knowledge(a.name, a.settings())
    ]
    if white:
        raise BastionError(
            f"{where}: the model has no gradients (ONNX, run by onnxruntime), so "
            f"evaluation.attacks {white} cannot run; use score-based or label-only attacks "
            "(square, hopskipjump) or transfer"
        )
    if cfg.evaluation.sanity_checks != "off":
        raise BastionError(
            f"{where}: the model has no gradients (ONNX), so the gradient-masking checks cannot "
            "run; set evaluation.sanity_checks: off (the figures are then black-box only)"
        )


def _use_threads(
    threads: str | None, config_value: object = "auto", *, quiet: bool = False
) -> dict[str, object]:
    """Set torch's thread count from ``--threads`` (else the config's), print the choice on
    stderr (unless ``quiet``: a torchrun process other than rank 0) and return it for the
    scorecard."""
    from bastion.runtime import apply_threads, parse_threads

    setting = parse_threads(threads if threads is not None else config_value, where="--threads")
    choice = apply_threads(setting)
    if not quiet:
        _err.print(choice.describe(), highlight=False)
    return choice.to_dict()


def _resolve_device(device: str | None, config_value: str = "auto") -> Any:
    """The ``torch.device`` of ``--device`` when given, else of the config's ``device``; an
    error names whichever of the two was at fault."""
    from bastion.runtime import resolve_device

    if device is not None:
        return resolve_device(device, where="--device")
    return resolve_device(config_value, where="device")


def _model_and_split(
    model: Path, data: str | None, split_seed: int | None, data_dir: Path | None
) -> tuple[Any, dict[str, Any], Any]:
    """Load a saved model and the data set and test split it was trained on (see
    :mod:`bastion.provenance`); warns loudly when the sidecar cannot prove the split."""
    from bastion.models import load_model, read_sidecar
    from bastion.provenance import load_model_split

    net = load_model(model)
    meta = read_sidecar(model)
    source = load_model_split(
        meta,
        data=data,
        split_seed=split_seed,
        data_dir=data_dir,
        where=str(model),
        warn=lambda m: _err.print(f"[bold yellow]warning:[/] {m}", highlight=False),
    )
    ds = source.data
    if tuple(ds.input_shape) != tuple(net.spec.input_shape):
        raise BastionError(
            f"--data: {ds.name!r} has input shape {tuple(ds.input_shape)}, the model expects "
            f"{tuple(net.spec.input_shape)}"
        )
    return net, meta, ds


def _threat_for(
    meta: dict[str, Any],
    norm: str | None,
    eps: float | None,
    atk: object,
    input_shape: tuple[int, ...],
) -> Any:
    """The model's recorded threat model with ``--norm``/``--eps`` applied; a patch attack
    without ``--eps`` gets the smallest ball that contains every patch."""
    from bastion.threat import ThreatModel

    recorded = (meta.get("metadata") or {}).get("threat")
    base = ThreatModel.from_dict(recorded) if isinstance(recorded, dict) else ThreatModel()
    threat = ThreatModel(
        norm=norm if norm is not None else base.norm,  # type: ignore[arg-type]
        eps=base.eps if eps is None else eps,
        bounds=base.bounds,
    )
    from bastion.attacks.patch import PatchAttack, patch_covering_eps, patch_side

    if isinstance(atk, PatchAttack) and eps is None and len(input_shape) == 3:
        h, w = patch_side(atk.size, input_shape[1], input_shape[2])
        threat = threat.with_eps(patch_covering_eps(threat, (input_shape[0], h, w)))
    return threat


attacks_app = typer.Typer(no_args_is_help=True, help="The registered attacks and their settings.")
app.add_typer(attacks_app, name="attacks")


@attacks_app.command("list")
def attacks_list(
    name: Annotated[
        str | None, typer.Argument(help="One attack's settings only (default: every attack).")
    ] = None,
    channel: Annotated[
        str | None,
        typer.Option(help="Only this channel's attacks: image, tabular or text (NAME: image)."),
    ] = None,
) -> None:
    """Every registered attack with its channel, kind, the knowledge it assumes and its
    settings (type, default, bounds, description), as the YAML and -p take them."""
    from bastion.attacks.reference import settings_text

    _out.print(settings_text(name, channel=channel), end="", markup=False, highlight=False)


def _saved_model_for_evaluation(p: Path, cfg: Any, data: Any, dev: Any) -> Any:
    """A saved model of ``bastion evaluate --model P`` as a pipeline TrainedModel: its input
    shape checked against the data, its recorded split against the config's (a warning when
    it records none), placed on ``dev`` unless it is a black-box (gradient-free) graph."""
    from bastion.models import load_model, read_sidecar
    from bastion.pipeline import TrainedModel
    from bastion.provenance import check_declared_split, check_model_split
    from bastion.runtime import place_on_device

    net = load_model(p)
    meta = read_sidecar(p)
    if tuple(net.spec.input_shape) != tuple(data.input_shape):
        raise BastionError(
            f"--model {p}: expects input shape {tuple(net.spec.input_shape)}, "
            f"the data set has {tuple(data.input_shape)}"
        )
    declared = (meta.get("metadata") or {}).get("declared_split")
    if isinstance(declared, dict):
        check_declared_split(
            declared,
            name=cfg.data.name,
            seed=cfg.seed,
            val_fraction=cfg.data.val_fraction,
            test_fraction=cfg.data.test_fraction,
            where=f"--model {p}",
        )
    elif not check_model_split(meta, data, where=f"--model {p}"):
        _err.print(
            f"[bold yellow]warning:[/] --model {p}: its sidecar records no data split; "
            f"the config's split (seed {cfg.seed}) may contain its training examples",
            highlight=False,
        )
    md = meta.get("metadata", {})
    name = str(md.get("name") or Path(p).with_suffix("").name)
    objective = (
        md.get("objective", {}).get("name", "unknown")
        if isinstance(md.get("objective"), dict)
        else "unknown"
    )
    source = net.spec.options.get("source")
    if net.spec.options.get("gradients") is False:
        _check_black_box_evaluation(cfg, where=f"--model {p}")
    else:  # an ONNX graph runs in onnxruntime on the CPU
        place_on_device(net, dev)
    return TrainedModel(
        name,
        net,
        objective,
        f"{net.spec.architecture}: {source}" if source else net.spec.architecture,
        md.get("training"),
        temperature=float(md.get("temperature") or 1.0),
    )


@app.command()
def evaluate(
    config: Annotated[
        Path,
        typer.Argument(help="YAML run config (its data, threat and evaluation sections are used)."),
    ],
    models: Annotated[
        list[Path],
        typer.Option("--model", "-m", help="Model file(s) to evaluate; repeat the option."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Scorecard path.")] = Path("scorecard.json"),
    data_dir: DataDir = None,
    quiet: Quiet = False,
    subset: Subset = None,
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            help="Resume file: finished attacks are recorded there and skipped on a rerun "
            "(default: the scorecard path + .state.json; removed once the scorecard is written).",
        ),
    ] = None,
    no_state: Annotated[
        bool, typer.Option("--no-state", help="Do not record or resume progress.")
    ] = False,
    threads: Threads = None,
    ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="Spread the attack batches over Ray workers (the distributed extra); the "
            "scorecard is the one a single process writes.",
        ),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="A Ray cluster to join (default: start one here)."),
    ] = None,
    ray_workers: Annotated[
        int | None, typer.Option("--ray-workers", help="CPUs of a local Ray instance.")
    ] = None,
    device: Device = None,
) -> None:
    """Evaluate saved models under a config's threat model and write a scorecard.

    A long evaluation that is interrupted resumes from its state file when run again with the
    same arguments."""
    import time

    from bastion.config import load_config
    from bastion.evaluation.scorecard import config_hash, write_json
    from bastion.evaluation.state import EvaluationState
    from bastion.pipeline import (
        build_scorecard,
        collect_warnings,
        evaluate_models,
        load_run_data,
        summary_table,
        with_subset,
    )
    from bastion.progress import ProgressReporter

    cfg, _ = load_config(config, evaluate_only=True)
    cfg = with_subset(cfg, subset)
    runtime = _use_threads(threads, cfg.threads)
    dev = _resolve_device(device, cfg.device)
    if (ray or ray_address is not None) and dev.type != "cpu":
        if device is not None:
            raise BastionError(f"--device: {device!r} with --ray; Ray workers run on the CPU")
        dev = _resolve_device("cpu")
    data = load_run_data(cfg, config_path=config, data_dir=data_dir)
    eval_state = (
        None
        if no_state
        else EvaluationState(
            state or out.with_name(out.name + ".state.json"),
            {
                "config_hash": config_hash(cfg.model_dump(mode="json", by_alias=True)),
                "data": data.fingerprint,
            },
        )
    )
    trained = [_saved_model_for_evaluation(p, cfg, data, dev) for p in models]
    runtime["device"] = str(dev)
    reporter = ProgressReporter(_err, enabled=not quiet)
    t0 = time.perf_counter()
    runner = None
    if ray or ray_address is not None:
        from bastion.evaluation.ray_runner import RayBatchRunner

        runner = RayBatchRunner(ray_address, workers=ray_workers)
        runtime["engine"] = runner.describe()
        _err.print(f"attack batches on Ray: {runner.workers} CPU(s)", highlight=False)
    try:
        with reporter.session():
            results = evaluate_models(
                cfg, trained, data, reporter=reporter, state=eval_state, runner=runner
            )
    except KeyboardInterrupt:
        if eval_state is None:
            raise Interrupted("interrupted; nothing written") from None
        raise Interrupted(
            f"interrupted; no scorecard written; finished attacks are kept in {eval_state.path}: "
            "resume by running the same command again"
        ) from None
    finally:
        if runner is not None:
            runner.close()
    if eval_state is not None and eval_state.resumed:
        _err.print(f"resumed {eval_state.resumed} finished attack runs from {eval_state.path}")
    n_eval = (
        len(data.test)
        if cfg.evaluation.examples is None
        else min(cfg.evaluation.examples, len(data.test))
    )
    sc = build_scorecard(
        cfg,
        data,
        results,
        timings={"evaluation_seconds": time.perf_counter() - t0},
        command="bastion " + " ".join(sys.argv[1:]),
        n_eval=n_eval,
        warnings=collect_warnings(cfg, results),
        runtime=runtime,
    )
    write_json(sc, out)
    if eval_state is not None:
        eval_state.remove()
    _out.print(summary_table(sc))
    from bastion.evaluation.escalation import summary_lines

    for line in summary_lines(sc):  # warnings and escalations
        _out.print(line, highlight=False, markup=False)
    _out.print(f"scorecard written to {out}")
    from bastion.registry.hooks import record_evaluation

    record_evaluation(
        out, models, config=config, console=_err, command="bastion " + " ".join(sys.argv[1:])
    )


@app.command()
def report(
    scorecard: Annotated[Path, typer.Argument(help="scorecard.json of a run.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="HTML path (default: report.html beside the scorecard)."),
    ] = None,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print a Markdown summary instead.")
    ] = False,
    card: Annotated[
        bool, typer.Option("--card", help="Print the Markdown model card instead.")
    ] = False,
) -> None:
    """Render the HTML report (or a Markdown summary, or the model card) of a scorecard."""
    from bastion.evaluation.scorecard import read_scorecard
    from bastion.report import render_markdown, write_report
    from bastion.report.model_card import render_model_card
    from bastion.report.privacy_section import attach_privacy_audits

    sc = attach_privacy_audits(read_scorecard(scorecard), scorecard.parent)
    if card:
        typer.echo(render_model_card(sc))
        return
    if markdown:
        typer.echo(render_markdown(sc))
        return
    path = write_report(sc, out or scorecard.with_name("report.html"))
    _out.print(f"report written to {path}")


@app.command()
def gate(
    scorecards: Annotated[list[Path], typer.Argument(help="scorecard.json file(s) to judge.")],
    policy: Annotated[Path, typer.Option("--policy", help="Gate policy YAML (rules on metrics).")],
    baseline: Annotated[
        Path | None, typer.Option("--baseline", help="Earlier scorecard for max_drop rules.")
    ] = None,
    junit: Annotated[Path | None, typer.Option("--junit", help="Write a JUnit XML report.")] = None,
    markdown: Annotated[
        Path | None, typer.Option("--markdown", help="Write a Markdown summary.")
    ] = None,
) -> None:
    """Fail a build when robustness regresses: exit 0 if every rule holds, 1 if one fails,
    2 if an input cannot be judged (the gate fails closed)."""
    from bastion.evaluation.gate import render_gate_markdown, run_gate

    outcome = run_gate(scorecards, policy, baseline=baseline, junit=junit, markdown=markdown)
    typer.echo(render_gate_markdown(outcome.results))
    if not outcome.passed:
        raise typer.Exit(1)


def _show_certified(stage: str, done: int, total: int) -> None:
    """Progress of ``bastion certify`` on stderr (a line a tenth of the way without a terminal)."""
    if _err.is_terminal:
        _err.print(f"  certified {done}/{total}", end="\r")
    elif done == total or done % max(1, total // 10) == 0:
        _err.print(f"  certified {done}/{total}")


def _print_certified(summary: dict[str, Any]) -> None:
    _err.print()
    for r, acc in summary["certified_accuracy"].items():
        _out.print(f"radius {r}: certified accuracy {acc:.1%}")
    _out.print(
        f"abstained {summary['abstain_rate']:.1%}, {summary['images_per_second']:.2f} images/s"
    )


@app.command()
def certify(
    model: SavedModel,
    data: ModelData = None,
    sigma: Annotated[float, typer.Option("--sigma", help="Gaussian noise level (l2).")] = 0.25,
    n0: Annotated[int, typer.Option("--n0", help="Samples to select the class.")] = 100,
    n: Annotated[int, typer.Option("--n", help="Samples to bound its probability.")] = 10000,
    alpha: Annotated[float, typer.Option("--alpha", help="Failure probability.")] = 0.001,
    examples: Annotated[
        int, typer.Option("--examples", "-n", min=1, help="First N test examples.")
    ] = 500,
    seed: Annotated[int, typer.Option("--seed", help="The noise's seed (not the split's).")] = 0,
    split_seed: SplitSeed = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the results as JSON.")] = None,
    data_dir: DataDir = None,
    precision: Annotated[
        str,
        typer.Option(
            "--precision", help="fp32, or bf16 (faster; certifies the bf16 base classifier)."
        ),
    ] = "fp32",
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Noisy inputs per forward pass.")
    ] = 1000,
    threads: Threads = None,
    device: Device = "auto",
) -> None:
    """Certified l2 robustness by randomized smoothing (Cohen, Rosenfeld & Kolter 2019)."""
    import torch

    from bastion.certify import certify_dataset, summarize_certification
    from bastion.evaluation.scorecard import write_json
    from bastion.runtime import resolve_device

    runtime = _use_threads(threads)
    dev = resolve_device(device)
    runtime["device"] = str(dev)
    net, _, ds = _model_and_split(model, data, split_seed, data_dir)
    net = net.to(dev)
    test = ds.test.subset(examples)

    gen = torch.Generator(device=dev).manual_seed(seed)
    res = certify_dataset(
        net, test.x.to(dev), test.y.to(dev), sigma, n0, n, alpha, gen, _show_certified,
        batch_size=batch_size, precision=precision,
    )  # fmt: skip
    summary = summarize_certification(res)
    _print_certified(summary)
    if out is not None:
        write_json(
            {
                "model": str(model),
                "data": ds.name,
                "runtime": runtime,
                "sigma": sigma,
                "n0": n0,
                "n": n,
                "alpha": alpha,
                "examples": len(test),
                "seed": seed,
                **summary,
            },
            out,
        )
        _out.print(f"results written to {out}")


@data_app.command("download")
def data_download(
    name: Annotated[str, typer.Argument(help="Data set to download (mnist).")],
    dest: Annotated[Path, typer.Option("--dest", help="Directory to write the files to.")] = Path(
        "data/mnist"
    ),
) -> None:
    """Download a data set's files, verifying the original release checksums."""
    from bastion.data import download_mnist

    if name != "mnist":
        raise BastionError(
            "name: only 'mnist' is downloadable (digits and breast-cancer ship with "
            f"scikit-learn), got {name!r}"
        )

    def show(file: str, done: int, total: int) -> None:
        _err.print(f"  {file}: {done}/{total} bytes" if total > 0 else f"  {file}: {done} bytes")

    path = download_mnist(dest, progress=show)
    _out.print(f"mnist ready in {path}; use --data-dir {path}")


@data_app.command("info")
def data_info(
    name: Annotated[str, typer.Argument(help="Data set name.")],
    data_dir: DataDir = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split.")] = 0,
    path: Annotated[Path | None, typer.Option("--path", help="The CSV file (csv only).")] = None,
    schema: Annotated[
        Path | None, typer.Option("--schema", help="The CSV file's schema (csv only).")
    ] = None,
) -> None:
    """Load a data set and print its summary (sizes, shape, classes, fingerprint)."""
    from bastion.data import load_dataset

    ds = load_dataset(
        name,
        data_dir=data_dir,
        seed=seed,
        path=None if path is None else str(path),
        schema=None if schema is None else str(schema),
    )
    typer.echo(json.dumps(ds.summary(), indent=2))


audit_app = typer.Typer(no_args_is_help=True, help="Audit a saved model's evaluation.")
app.add_typer(audit_app, name="audit")


@audit_app.command("masking")
def audit_masking(
    model: SavedModel,
    data: ModelData = None,
    norm: ModelNorm = None,
    eps: Annotated[
        float | None,
        typer.Option("--eps", help="Perturbation budget (default: the model's threat model)."),
    ] = None,
    examples: Annotated[
        int, typer.Option("--examples", "-n", min=1, help="First N test examples.")
    ] = 500,
    budget: Annotated[
        str, typer.Option("--budget", help="quick or full (checks and escalation).")
    ] = "quick",
    escalate: Annotated[
        bool, typer.Option("--escalate/--no-escalate", help="Run the remedies of fired checks.")
    ] = True,
    seed: Annotated[int, typer.Option("--seed", help="The attacks' seed.")] = 0,
    split_seed: SplitSeed = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the checks and escalation as JSON.")
    ] = None,
    data_dir: DataDir = None,
    threads: Threads = None,
) -> None:
    """Run only the gradient-masking checks, and the adaptive attacks that answer the ones that
    fire, on a saved model (exit status 1 when an escalation could not finish)."""
    from bastion.evaluation import evaluate_model
    from bastion.evaluation.escalation import summary_lines
    from bastion.evaluation.scorecard import sanitize, write_json

    if budget not in ("quick", "full"):
        raise BastionError(f"--budget: expected quick or full, got {budget!r}")
    _use_threads(threads)
    net, meta, ds = _model_and_split(model, data, split_seed, data_dir)
    threat = _threat_for(meta, norm, eps, None, ds.input_shape)
    test = ds.test.subset(examples)
    res = evaluate_model(
        net,
        test.x,
        test.y,
        threat,
        [],
        seed=seed,
        sanity=budget,  # type: ignore[arg-type]
        escalate=escalate,
        model_name=model.stem,
    )
    for c in res["sanity_checks"]:
        mark = "ok  " if c["passed"] else "FIRE"
        _out.print(f"{mark} {c['code']}: {c['message']}", highlight=False, markup=False)
    # no first-pass attacks here: only the escalation's figure means anything
    entry = {k: v for k, v in res.items() if k != "worst_case_basis"}
    for line in summary_lines({"models": {model.stem: entry}, "warnings": res["sanity_warnings"]}):
        _out.print(line, highlight=False, markup=False)
    found = (
        f"the escalation leaves {res['worst_case_accuracy']:.1%} accuracy"
        if res["escalation"].get("status") in ("complete", "incomplete")
        else "no escalation ran"
        if res["escalation"].get("fired")
        else "no check fired, nothing to escalate"
    )
    _out.print(
        f"{threat.norm} eps {threat.eps:g}, {len(test)} test examples of {ds.name}: clean "
        f"{res['clean_accuracy']:.1%}; {found}",
        highlight=False,
        markup=False,
    )
    if out is not None:
        write_json(sanitize({"threat": threat.to_dict(), "n_eval": len(test), **res}), out)
        _out.print(f"audit written to {out}")
    if res["escalation"].get("status") == "incomplete":
        raise typer.Exit(1)


def _print_privacy_audit(doc: dict[str, Any]) -> None:
    """The privacy audit's figures: members, shadows, per-attack AUC and TPR at low FPR, and
    the inversion's result when it ran."""
    mia = doc["mia"]
    first = next(iter(mia["attacks"].values()))
    _out.print(
        f"{first['members']} members, {first['non_members']} non-members, {mia['shadows']} "
        f"shadows (lowest measurable FPR {first['min_fpr']:.2%})",
        highlight=False,
        markup=False,
    )
    for name, rep in mia["attacks"].items():
        _out.print(
            f"{name:<16} AUC {rep['auc']:.3f}  TPR@0.1%FPR {rep['tpr_at_0.1pct_fpr']:.2%}  "
            f"TPR@1%FPR {rep['tpr_at_1pct_fpr']:.2%}",
            highlight=False,
            markup=False,
        )
    if "inversion" in doc:
        inv = doc["inversion"]
        _out.print(
            f"inversion: {inv['identified']:.0%} of classes identified (chance "
            f"{inv['chance']:.0%}), cosine to own class mean {inv['cosine_own']:.2f}",
            highlight=False,
            markup=False,
        )


@audit_app.command("privacy")
def audit_privacy(
    run_dir: Annotated[
        Path, typer.Argument(help="Run directory (or a model file in its models/ folder).")
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Which model of the run (default: the only one, else baseline)."
        ),
    ] = None,
    shadows: Annotated[int, typer.Option("--shadows", help="Shadow models for LiRA (>= 2).")] = 8,
    workers: Annotated[
        int, typer.Option("--workers", help="Processes training shadows at once.")
    ] = 1,
    population: Annotated[
        int | None,
        typer.Option("--population", help="At most N training and N test examples (quicker)."),
    ] = None,
    shadow_dir: Annotated[
        Path | None,
        typer.Option("--shadow-dir", help="Where shadows are kept (default RUN_DIR/privacy/)."),
    ] = None,
    inversion: Annotated[
        bool, typer.Option("--inversion/--no-inversion", help="Also run model inversion.")
    ] = True,
    seed: Annotated[int, typer.Option("--seed", help="The shadows' seed.")] = 0,
    out: Annotated[
        Path | None, typer.Option("--out", help="JSON results (default RUN_DIR/privacy.json).")
    ] = None,
    data_dir: DataDir = None,
    quiet: Quiet = False,
    threads: Threads = None,
) -> None:
    """Membership inference (LiRA online/offline, loss threshold) and model inversion against
    a run's model; writes JSON that `bastion gate` reads (e.g. mia.tpr_at_0.1pct_fpr)."""
    from bastion.evaluation.scorecard import sanitize, write_json
    from bastion.privacy.audit import privacy_audit

    _use_threads(threads)

    def shadow_done(e: dict[str, Any]) -> None:
        if not quiet:
            how = "reused" if e["reused"] else f"trained in {e['seconds']:.1f} s"
            _err.print(f"shadow {e['shadow']} {how} ({e['done']}/{e['total']})", highlight=False)

    try:
        doc = privacy_audit(
            run_dir,
            model=model,
            shadows=shadows,
            workers=workers,
            seed=seed,
            shadow_dir=shadow_dir,
            population=population,
            inversion=inversion,
            data_dir=data_dir,
            progress=shadow_done,
            warn=lambda m: _err.print(f"[bold yellow]warning:[/] {m}", highlight=False),
        )
    except KeyboardInterrupt:
        raise Interrupted(
            "interrupted; finished shadows are kept, run the same command again to resume"
        ) from None
    _print_privacy_audit(doc)
    root = run_dir if run_dir.is_dir() else run_dir.parent.parent
    path = out or root / "privacy.json"
    write_json(sanitize(doc), path)
    _out.print(f"audit written to {path}")


@audit_app.command("reference")
def audit_reference(
    run_dir: Annotated[
        Path, typer.Argument(help="Run directory (or a model file in its models/ folder).")
    ],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Whose training split (default as privacy).")
    ] = None,
    cells_per_class: Annotated[
        int, typer.Option("--cells-per-class", help="k-means cells per class.")
    ] = 10,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Default RUN_DIR/guard/extraction-reference.safetensors."),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Fit the coverage reference of the service's information-budget extraction monitor on the
    model's training split (`bastion serve` then finds it; set serve.extraction_budget_bits)."""
    from bastion.privacy.audit import extraction_reference

    path, reference = extraction_reference(
        run_dir,
        model=model,
        cells_per_class=cells_per_class,
        data_dir=data_dir,
        out=out,
        warn=lambda m: _err.print(f"[bold yellow]warning:[/] {m}", highlight=False),
    )
    _out.print(f"{reference.cells} cells written to {path}", highlight=False, markup=False)


def _extraction_victim(
    target: str,
    data: Any,
    split_seed: Any,
    data_dir: Any,
    key: str | None,
    eps: float | None,
) -> tuple[Any, Any, Any, str, str]:
    """The extraction audit's victim (a service URL or a saved model), its query data, the
    threat of the transfer check, the note on the query pool and the victim's name."""
    from bastion.data import load_dataset
    from bastion.threat import ThreatModel

    threat = None
    if target.startswith(("http://", "https://")):
        from bastion.privacy.targets import ServedModelTarget

        ds = load_dataset(data or "digits", data_dir=data_dir, seed=split_seed or 0)
        victim: Any = ServedModelTarget(target, num_classes=ds.num_classes, api_key=key)
        note = (
            "remote target: its training data are unknown, so the query pool (the test split "
            f"of {ds.name!r}, split seed {split_seed or 0}) may overlap them"
        )
        name = target
    else:
        if key is not None:
            raise BastionError("--key: only a service URL takes an API key")
        victim, meta, ds = _model_and_split(Path(target), data, split_seed, data_dir)
        rec = (meta.get("metadata") or {}).get("threat")
        if isinstance(rec, dict) and eps is None:
            threat = ThreatModel.from_dict(rec)
        note = "queries from the model's own test split: disjoint from its training data"
        name = Path(target).with_suffix("").name
    if eps is not None:
        threat = ThreatModel("linf", eps, ds.bounds)
    return victim, ds, threat, note, name


def _print_extraction(ex: dict[str, Any]) -> None:
    """Fidelity and accuracy of each stealing method at its budget, and the transfer rate."""
    for m, r in ex["methods"].items():
        _out.print(
            f"{m:<16} fidelity {r['fidelity_at_budget']:.1%} at {r['queries']} queries, "
            f"accuracy {r['accuracy_at_budget']:.1%} (victim {r['victim_accuracy']:.1%})",
            highlight=False,
            markup=False,
        )
    _out.print(
        f"transfer from the stolen copy ({ex['best_method']}): "
        f"{ex['transfer_success_rate']:.1%} of the victim's correct answers flipped",
        highlight=False,
        markup=False,
    )


@audit_app.command("extraction")
def audit_extraction(
    target: Annotated[
        str, typer.Argument(help="A saved model (path) or a bastion service (http(s) URL).")
    ],
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            envvar="BASTION_API_KEY",
            help="API key of the service (else $BASTION_API_KEY); never printed.",
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", help="Data set (default: the model's; for a URL: digits)."),
    ] = None,
    method: Annotated[
        list[str] | None,
        typer.Option("--method", help="knockoff, knockoff-labels, jacobian (repeat; default all)."),
    ] = None,
    budgets: Annotated[
        str | None, typer.Option("--budgets", help="Query budgets, e.g. 50,100,200.")
    ] = None,
    student: Annotated[
        str | None, typer.Option("--student", help="The stolen copy's architecture.")
    ] = None,
    eps: Annotated[
        float | None, typer.Option("--eps", help="linf eps of the transfer check.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the queries and students.")] = 0,
    split_seed: SplitSeed = None,
    out: Annotated[Path, typer.Option("--out", help="JSON results.")] = Path("extraction.json"),
    data_dir: DataDir = None,
    threads: Threads = None,
) -> None:
    """Steal TARGET's functionality (Knockoff Nets, label-only, Jacobian augmentation) and
    report fidelity against queries and transfer of attacks; JSON for `bastion gate`
    (e.g. extraction.fidelity_at_budget)."""
    from bastion.evaluation.scorecard import sanitize, write_json
    from bastion.privacy.audit import extraction_audit

    _use_threads(threads)
    try:
        plan = [int(b) for b in budgets.split(",")] if budgets else None
    except ValueError:
        raise BastionError(
            f"--budgets: expected integers such as 50,100,200, got {budgets!r}"
        ) from None
    victim, ds, threat, note, name = _extraction_victim(
        target, data, split_seed, data_dir, key, eps
    )

    def point(m: str, p: dict[str, Any]) -> None:
        _err.print(
            f"{m}: {int(p['queries'])} queries, fidelity {p['fidelity']:.1%}",
            highlight=False,
            markup=False,
        )

    doc = extraction_audit(
        victim,
        ds,
        target_name=name,
        methods=method or ("knockoff", "knockoff-labels", "jacobian"),
        budgets=plan,
        student=student,
        threat=threat,
        seed=seed,
        note=note,
        progress=point,
    )
    _print_extraction(doc["extraction"])
    write_json(sanitize(doc), out)
    _out.print(f"audit written to {out}")


keys_app = typer.Typer(no_args_is_help=True, help="API keys of the guarded service.")
app.add_typer(keys_app, name="keys")


def _keys_db(run_dir: Path | None, db: Path | None) -> Path:
    if db is not None:
        return db
    if run_dir is None:
        raise BastionError("keys: give --run RUN_DIR or --db PATH (where the key store lives)")
    if not run_dir.is_dir():
        raise BastionError(f"--run: not a directory: {run_dir}")
    return run_dir / "keys.db"


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who the key is for (unique).")],
    run_dir: Annotated[Path | None, typer.Option("--run", help="Run directory served.")] = None,
    db: Annotated[Path | None, typer.Option("--db", help="Key store path.")] = None,
    rate: Annotated[
        float | None, typer.Option("--rate", help="Requests per second for this key.")
    ] = None,
    burst: Annotated[int | None, typer.Option("--burst", help="Burst size for this key.")] = None,
    tier: Annotated[
        str, typer.Option("--tier", help="Output tier (serve.output_policies) of this key.")
    ] = "default",
) -> None:
    """Create an API key and print it once (only a salted hash is stored)."""
    from bastion.serve import create_key

    key = create_key(_keys_db(run_dir, db), name, rate=rate, burst=burst, tier=tier)
    _err.print(f"key for {name} (shown once; send it as the X-API-Key header):")
    typer.echo(key)


@keys_app.command("list")
def keys_list(
    run_dir: Annotated[Path | None, typer.Option("--run", help="Run directory served.")] = None,
    db: Annotated[Path | None, typer.Option("--db", help="Key store path.")] = None,
) -> None:
    """List the keys (names, ids, limits; never the secrets)."""
    from bastion.serve import KeyStore

    store = KeyStore(_keys_db(run_dir, db))
    try:
        for r in store.list():
            state = "revoked" if r.revoked else "active"
            typer.echo(
                f"{r.name}\t{r.key_id}\t{state}\trate={r.rate}\tburst={r.burst}\ttier={r.tier}"
            )
    finally:
        store.close()


@keys_app.command("revoke")
def keys_revoke(
    name: Annotated[str, typer.Argument(help="Name of the key to revoke.")],
    run_dir: Annotated[Path | None, typer.Option("--run", help="Run directory served.")] = None,
    db: Annotated[Path | None, typer.Option("--db", help="Key store path.")] = None,
) -> None:
    """Revoke a key (a running service stops accepting it within seconds)."""
    from bastion.serve import KeyStore

    store = KeyStore(_keys_db(run_dir, db))
    try:
        if not store.revoke(name):
            raise BastionError(f"keys revoke: no key named {name!r}")
    finally:
        store.close()
    _out.print(f"revoked {name}")


def _parse_sets(values: list[str] | None, where: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in values or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise BastionError(f"{where}: expected KEY=VALUE, got {item!r}")
        try:
            out[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise BastionError(f"{where}: {key}: cannot parse {raw!r}") from None
    return out


@app.command()
def serve(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (models, optional guard/).")],
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="YAML file whose 'serve' section sets the service."),
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="A service setting KEY=VALUE (repeat), e.g. rate=50."),
    ] = None,
    device: Device = None,
) -> None:
    """Serve a run's model behind its guard over HTTP (POST /v1/predict, /v1/health,
    /metrics, /docs). Needs the service extra."""
    from bastion.serve import ServeSettings
    from bastion.serve import serve as run_server

    if not run_dir.is_dir():
        raise BastionError(f"RUN_DIR: not a directory: {run_dir}")
    section: dict[str, object] = {}
    if config is not None:
        if not config.is_file():
            raise BastionError(f"--config: file not found: {config}")
        doc = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        raw = doc.get("serve", {}) if isinstance(doc, dict) else {}
        if not isinstance(raw, dict):
            raise BastionError(f"{config}: serve: expected a mapping")
        section.update(raw)
    section.update(_parse_sets(sets, "--set"))
    settings = ServeSettings.from_mapping(section)
    from bastion.runtime import resolve_device

    resolve_device(device)  # an absent device fails here, before anything is loaded
    _err.print(f"serving {run_dir} on http://{host}:{port} (docs at /docs)")
    run_server(run_dir, host=host, port=port, settings=settings, device=device)


@app.command()
def monitor(
    run_dir: Annotated[Path, typer.Argument(help="Run directory being served.")],
) -> None:
    """Print the drift monitor's state (windows tested, alerts, latest p-values) of a served
    run."""
    from bastion.monitor import MonitorState, format_state
    from bastion.serve.runner import MONITOR_STATE

    path = run_dir / MONITOR_STATE
    if not path.is_file():
        if not (run_dir / "guard" / "drift-reference.json").is_file():
            raise BastionError(
                f"{run_dir}: no drift reference (guard/drift-reference.json); add a 'guard' "
                "section to the run config"
            )
        raise BastionError(
            f"{path}: no monitor state yet; it is written once `bastion serve` has answered a "
            "full window of inputs"
        )
    typer.echo(format_state(MonitorState.load(path)))


from bastion.registry.commands import add_commands  # noqa: E402  (runs, promote, rollback, risks)

add_commands(app)


@app.command()
def version() -> None:
    """Print the version."""
    from bastion import __version__

    typer.echo(__version__)


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the app, turning bastion's input errors into one line and exit 2.

    Usage errors (a missing argument, an unknown option) are reported by typer with exit 2 too.
    """

    def _terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds, so a half-written run directory is removed

    signal.signal(signal.SIGTERM, _terminate)
    try:
        app(args=argv, standalone_mode=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BastionError as e:
        _err.print(f"[red]error:[/red] {e}", markup=True, highlight=False, soft_wrap=True)
        return 2
    except Interrupted as e:
        _err.print(str(e), highlight=False, soft_wrap=True)
        return 130
    except KeyboardInterrupt:
        _err.print("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
