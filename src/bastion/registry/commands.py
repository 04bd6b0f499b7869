"""The registry's commands: ``bastion runs list|show|diff|lineage|add``, ``promote``,
``rollback``, ``risks`` and ``serve-stage``.

:func:`add_commands` attaches them to the main typer app. Database code is imported inside each
command, so ``bastion --help`` stays fast. Bad input raises :class:`bastion.errors.BastionError`
(one line, exit 2); a refused promotion exits 1 (like a failing gate).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from bastion.registry.canary import CanaryRule
    from bastion.registry.store import Registry, RunInfo

__all__ = ["add_commands", "runs_app"]

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)

runs_app = typer.Typer(
    no_args_is_help=True,
    help="The run registry: list, show, diff, lineage, add, export, history, stale, reevaluate.",
)

RegistryOpt = Annotated[
    str | None,
    typer.Option(
        "--registry",
        help="Registry database URL or SQLite path (default: $BASTION_REGISTRY_URL, else "
        ".bastion/registry.db beside --out).",
    ),
]
OutOpt = Annotated[
    Path,
    typer.Option("--out", help="The runs folder whose registry to use (default: runs)."),
]
StagesOpt = Annotated[
    Path | None,
    typer.Option(
        "--stages", help="Stages file (default: $BASTION_STAGES, else staging, production)."
    ),
]


def _open(registry: str | None, out: Path, *, create: bool = False) -> Registry:
    """The registry named by --registry, $BASTION_REGISTRY_URL or beside --out. A SQLite file
    that does not exist is an error (a typo must not create an empty registry) unless
    ``create``."""
    from sqlalchemy.engine import make_url

    from bastion.registry.db import RegistryError, resolve_registry_url
    from bastion.registry.store import Registry

    url = resolve_registry_url(registry, out_dir=out)
    if url is None:
        raise RegistryError("registry: turned off (BASTION_REGISTRY_URL=off); give --registry")
    if not create and url.startswith("sqlite:///"):
        database = make_url(url).database
        if database and not Path(database).exists():
            raise RegistryError(
                f"registry {database}: not found (bastion run creates it; give --registry or "
                "--out for another one)"
            )
    return Registry(url)


def _pct(v: Any) -> str:
    return f"{v:.1%}" if isinstance(v, int | float) and not isinstance(v, bool) else "-"


def _summary_text(run: RunInfo) -> str:
    parts = [
        f"{name} {_pct(m.get('clean_accuracy'))}/{_pct(m.get('worst_case_accuracy'))}"
        for name, m in run.summary.items()
        if isinstance(m, dict)
    ]
    return ", ".join(parts) or "-"


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


@runs_app.command("list")
def runs_list(
    registry: RegistryOpt = None,
    out: OutOpt = Path("runs"),
    name: Annotated[
        str | None, typer.Option("--name", help="Only runs of this config name.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most N runs.")] = 20,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line (for scripts).")
    ] = False,
) -> None:
    """List recorded runs, newest first: id, kind, name, when, who, clean/worst-case accuracy
    per model, the stages that hold the run now."""
    from bastion.registry.stages import current_runs

    with _open(registry, out) as reg:
        runs = reg.runs(name=name, limit=limit, docs=False)
        held: dict[str, list[str]] = {}
        for stage, run_id in current_runs(reg).items():
            held.setdefault(run_id, []).append(stage)
        _err.print(f"registry {reg.url}: {len(runs)} run(s) shown")
    if as_json:
        for r in runs:
            doc = {
                k: getattr(r, k)
                for k in (
                    "run_id", "kind", "name", "created_at", "recorded_by", "run_dir",
                    "parent_id", "config_hash", "data_fingerprint", "attack_library", "summary",
                )
            }  # fmt: skip
            typer.echo(json.dumps({**doc, "stages": sorted(held.get(r.run_id, []))}))
        return
    if not runs:
        return
    rows: list[tuple[str, ...]] = [
        ("run", "kind", "name", "created (UTC)", "user", "clean/worst case", "stage", "dir")
    ]
    for r in runs:
        rows.append(
            (
                r.run_id,
                r.kind,
                r.name,
                r.created_at[:19].replace("T", " "),
                r.recorded_by,
                _summary_text(r),
                ",".join(sorted(held.get(r.run_id, []))) or "-",
                Path(r.run_dir).name if r.run_dir else "-",
            )
        )
    typer.echo(_table(rows))


@runs_app.command("show")
def runs_show(
    run: Annotated[
        str, typer.Argument(help="Run id, unique id prefix, run directory or its name.")
    ],
    registry: RegistryOpt = None,
    out: OutOpt = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """Everything recorded about one run: provenance, data, seeds, models and their digests,
    scorecard summary, stage history."""
    from dataclasses import asdict

    with _open(registry, out) as reg:
        info = reg.get(run)
        artifacts = reg.artifacts(info.run_id)
        events = [e for e in reg.stage_events() if info.run_id in (e.run_id, e.previous_run_id)]
    if as_json:
        doc = asdict(info) | {
            "artifacts": [asdict(a) for a in artifacts],
            "stage_events": [asdict(e) for e in events],
        }
        doc.pop("scorecard", None)
        typer.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    commit = info.git_commit or "-"
    if info.git_dirty:
        commit += " (uncommitted changes)"
    lines = [
        f"run          {info.run_id} ({info.kind})",
        f"name         {info.name}",
        f"created      {info.created_at} by {info.recorded_by} on {info.host}",
        f"directory    {info.run_dir or '-'}",
        f"command      {info.command or '-'}",
        f"parent       {info.parent_id or '-'}",
        f"config hash  {info.config_hash or '-'}",
        f"data         {info.data.get('name') or '-'} {info.data_fingerprint or '-'}",
        f"code         bastion {info.bastion_version}, git {commit}",
        f"attacks      {info.attack_library or '-'}",
        f"seeds        {json.dumps(info.seeds, sort_keys=True)}",
        "",
        "models:",
    ]
    for name, m in info.summary.items():
        lines.append(
            f"  {name}: clean {_pct(m.get('clean_accuracy'))}, worst case "
            f"{_pct(m.get('worst_case_accuracy'))}"
        )
    if not info.summary:
        lines.append("  (no scorecard)")
    lines += ["", "files:"]
    lines += [f"  {a.role:<9} {a.path}  sha256 {a.sha256}  {a.size} bytes" for a in artifacts]
    if events:
        lines += ["", "stage events:"]
        lines += [
            f"  {e.at[:19]} {e.stage} {e.action} -> {e.run_id or '(empty)'} "
            f"(was {e.previous_run_id or '-'}) "
            f"by {e.user}: {e.reason or ''}"
            for e in events
        ]
    typer.echo("\n".join(lines))


@runs_app.command("diff")
def runs_diff(
    run_a: Annotated[str, typer.Argument(help="The earlier run (the reference).")],
    run_b: Annotated[str, typer.Argument(help="The later run.")],
    registry: RegistryOpt = None,
    out: OutOpt = Path("runs"),
    changed: Annotated[bool, typer.Option("--changed", help="Only values that differ.")] = False,
    fail_on_regression: Annotated[
        bool, typer.Option("--fail-on-regression", help="Exit 1 if a metric regressed.")
    ] = False,
) -> None:
    """Config, data, code and every metric of two runs side by side; metrics that got worse
    from A to B are marked REGRESSED."""
    from bastion.registry.diff import diff_runs, render_diff

    with _open(registry, out) as reg:
        a, b = reg.get(run_a), reg.get(run_b)
    d = diff_runs(a, b)
    typer.echo(render_diff(d, changed_only=changed))
    if fail_on_regression and d.regressions:
        raise typer.Exit(1)


@runs_app.command("lineage")
def runs_lineage(
    digest: Annotated[
        str, typer.Argument(help="SHA-256 of a .safetensors file (or 8+ hex digits).")
    ],
    registry: RegistryOpt = None,
    out: OutOpt = Path("runs"),
) -> None:
    """Where a model file came from: the run that wrote it, its config and data, its ancestors,
    the evaluations that read it and its promotions and rollbacks."""
    with _open(registry, out) as reg:
        lin = reg.lineage(digest)
    lines = [f"model sha256 {lin.digest}"]
    for run, art in lin.produced_by:
        lines += [
            f"produced by  {run.run_id} ({run.kind} {run.name}, {run.created_at[:19]}, "
            f"{run.recorded_by}) as {art.path}",
            f"  config {run.config_hash or '-'}; data {run.data_fingerprint or '-'}; "
            f"bastion {run.bastion_version} git {run.git_commit or '-'}",
            f"  directory {run.run_dir or '-'}",
        ]
    for run, _ in lin.evaluated_by:
        lines.append(
            f"evaluated by {run.run_id} ({run.name}, {run.created_at[:19]}): {_summary_text(run)}"
        )
    for i, run in enumerate(lin.ancestors, 1):
        lines.append(f"ancestor {i}   {run.run_id} ({run.kind} {run.name}, {run.created_at[:19]})")
    for e in lin.stage_events:
        lines.append(
            f"stage        {e.at[:19]} {e.stage} {e.action} -> {e.run_id or '(empty)'} by "
            f"{e.user}: "
            f"{e.reason or ''}"
        )
    typer.echo("\n".join(lines))


@runs_app.command("add")
def runs_add(
    run_dir: Annotated[
        Path | None, typer.Argument(help="A run directory to record (bastion run's output).")
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="Record a model file (bastion train) instead.")
    ] = None,
    parent: Annotated[str | None, typer.Option("--parent", help="The parent run.")] = None,
    registry: RegistryOpt = None,
    out: OutOpt = Path("runs"),
) -> None:
    """Record a run directory (or a saved model) that is not in the registry yet."""
    from bastion.errors import BastionError
    from bastion.registry.record import model_record, run_record

    if (run_dir is None) == (model is None):
        raise BastionError("runs add: give a RUN_DIR or --model FILE (one of them)")
    rec = run_record(run_dir) if run_dir is not None else model_record(model or Path())
    with _open(registry, out, create=True) as reg:
        run_id = reg.record(rec, parent=parent)
        _out.print(f"recorded as run {run_id} in {reg.url}")


@runs_app.command("export")
def runs_export(
    run: Annotated[
        str, typer.Argument(help="Run id, unique id prefix, run directory or its name.")
    ],
    mlflow: Annotated[
        str,
        typer.Option(
            "--mlflow",
            help="MLflow tracking URI (sqlite:///mlflow.db, http://host:5000); needs the mlflow "
            "extra.",
        ),
    ],
    experiment: Annotated[
        str | None,
        typer.Option("--experiment", help="MLflow experiment (default: the config's name)."),
    ] = None,
    registry: RegistryOpt = None,
    out: OutOpt = Path("runs"),
) -> None:
    """Export a run to MLflow: tags, config as params, scorecard metrics, report, scorecard and
    model files as artifacts (once per experiment)."""
    from bastion.registry.db import display_url
    from bastion.registry.mlflow_export import export_run

    with _open(registry, out) as reg:
        res = export_run(reg, run, mlflow, experiment=experiment)
    where = f"experiment {res.experiment!r} ({res.experiment_id}) at {display_url(mlflow)}"
    if not res.created:
        _out.print(
            f"run {res.run_id} was already exported as MLflow run {res.mlflow_run_id} in {where}"
        )
        return
    _out.print(
        f"exported run {res.run_id} as MLflow run {res.mlflow_run_id} in {where}: "
        f"{res.params} params, {res.metrics} metrics, {len(res.artifacts)} artifacts"
    )


@runs_app.command("history")
def runs_history(
    stage: Annotated[
        str | None, typer.Option("--stage", help="Only this stage (default: every stage).")
    ] = None,
    registry: RegistryOpt = None,
    out: OutOpt = Path("runs"),
) -> None:
    """Every promotion, refused promotion, rollback and canary demotion, oldest first, with
    who, when and why, and the run each stage holds now."""
    from bastion.registry.stages import current_runs

    with _open(registry, out) as reg:
        events = reg.stage_events(stage)
        held = current_runs(reg)
    for name, run_id in sorted(held.items()):
        if stage is None or name == stage:
            typer.echo(f"{name}: run {run_id}")
    if not events:
        typer.echo("no stage events" + (f" for {stage!r}" if stage else ""))
        return
    rows: list[tuple[str, ...]] = [("when (UTC)", "stage", "action", "run", "was", "who", "why")]
    for e in events:
        rows.append(
            (
                e.at[:19].replace("T", " "),
                e.stage,
                e.action,
                e.run_id or "-",
                e.previous_run_id or "-",
                e.user,
                e.reason or "",
            )
        )
    typer.echo(_table(rows))


@runs_app.command("stale")
def runs_stale(
    registry: RegistryOpt = None,
    out: OutOpt = Path("runs"),
    fail: Annotated[bool, typer.Option("--fail", help="Exit 1 if a stage run is stale.")] = False,
) -> None:
    """Stage runs whose newest evaluation used another attack library than this bastion's
    (re-evaluate them with `bastion runs reevaluate RUN`)."""
    from bastion.registry.living import stale_runs
    from bastion.registry.record import attack_library_version

    with _open(registry, out) as reg:
        stale = stale_runs(reg)
    typer.echo(f"attack library now: {attack_library_version()}")
    for st in stale:
        typer.echo(
            f"{st.stage}: run {st.run.run_id} last evaluated by {st.evaluation.run_id} with "
            f"{st.evaluation.attack_library or 'an unknown library'}"
        )
    if not stale:
        typer.echo("every stage run was evaluated with the current attack library")
    elif fail:
        raise typer.Exit(1)


@runs_app.command("reevaluate")
def runs_reevaluate(
    run: Annotated[str, typer.Argument(help="The run whose models to evaluate again.")],
    dest: Annotated[
        Path | None,
        typer.Option("--dest", help="Folder of the new scorecard (default: beside the run)."),
    ] = None,
    subset: Annotated[
        int | None, typer.Option("--subset", min=1, help="Only the first N test examples.")
    ] = None,
    registry: RegistryOpt = None,
    out: OutOpt = Path("runs"),
) -> None:
    """Evaluate a run's models again under its recorded config with the current attack
    library, and record the evaluation (its parent: the run)."""
    import os
    import sys

    from bastion.cli import main
    from bastion.errors import BastionError
    from bastion.registry.db import ENV_URL
    from bastion.registry.living import plan_reevaluation, record_reevaluation

    with _open(registry, out) as reg:
        plan = plan_reevaluation(reg, run, out=dest)
        args = ["evaluate", str(plan.config), "--out", str(plan.scorecard), "-q"]
        for m in plan.models:
            args += ["-m", str(m.with_suffix(""))]
        if subset is not None:
            args += ["--subset", str(subset)]
        before = os.environ.get(ENV_URL)
        os.environ[ENV_URL] = "off"  # recorded below, in this registry, with its parent
        try:
            code = main(args)
        finally:
            if before is None:
                os.environ.pop(ENV_URL, None)
            else:
                os.environ[ENV_URL] = before
        if code != 0:
            raise BastionError(f"runs reevaluate: the evaluation failed (exit {code})")
        evaluation = record_reevaluation(reg, plan, command="bastion " + " ".join(sys.argv[1:]))
    _out.print(
        f"re-evaluated as run {evaluation.run_id} ({evaluation.attack_library}): "
        f"{_summary_text(evaluation)}"
    )


def promote_command(
    run: Annotated[str, typer.Argument(help="Run id, unique prefix, run directory or its name.")],
    stage: Annotated[str, typer.Option("--stage", help="The stage to promote to.")] = "production",
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Gate policy (default: the stage's).")
    ] = None,
    risks: Annotated[
        Path | None,
        typer.Option(
            "--risks",
            help="Risk register no risk of which may be at risk (default: the stage's, if any).",
        ),
    ] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded).")] = None,
    stages: StagesOpt = None,
    registry: RegistryOpt = None,
    out: OutOpt = Path("runs"),
) -> None:
    """Promote a run to a stage if the robustness gate passes, with the run now in the stage as
    baseline for max_drop rules (and, with a risk register, no risk is at risk). Exit 0
    promoted, 1 refused (recorded), 2 bad input (nothing recorded)."""
    from bastion.evaluation.gate import render_gate_markdown
    from bastion.registry.risks import render_risks
    from bastion.registry.stages import load_stages, promote

    conf = load_stages(stages)
    with _open(registry, out) as reg:
        res = promote(reg, run, stage, stages=conf, policy=policy, risks=risks, reason=reason)
    for note in res.notes:
        _err.print(f"note: {note}")
    typer.echo(render_gate_markdown(res.gate))
    if res.risks:
        typer.echo(render_risks(res.risks, title="risk register:"))
    if res.promoted:
        _out.print(f"promoted {res.run_id} to {res.stage} (was {res.previous_run_id or 'empty'})")
        return
    failed = [r.label for r in res.gate.failures]
    failed += [f"risk {r.risk.id} at risk" for r in res.risks_at_risk]
    _err.print(f"refused: {res.run_id} not promoted to {res.stage}; failed: {', '.join(failed)}")
    raise typer.Exit(1)


def rollback_command(
    stage: Annotated[str, typer.Option("--stage", help="The stage to roll back.")] = "production",
    reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded).")] = None,
    stages: StagesOpt = None,
    registry: RegistryOpt = None,
    out: OutOpt = Path("runs"),
) -> None:
    """Return a stage to the run it held before the current one (recorded with who, when,
    why)."""
    from bastion.registry.stages import load_stages, rollback

    conf = load_stages(stages)
    with _open(registry, out) as reg:
        event = rollback(reg, stage, stages=conf, reason=reason)
    _out.print(f"rolled back {stage}: {event.previous_run_id} -> {event.run_id}")


def risks_command(
    register: Annotated[
        Path, typer.Option("--register", help="Risk register YAML (default: risks.yaml).")
    ] = Path("risks.yaml"),
    run: Annotated[
        str | None, typer.Option("--run", help="Judge this recorded run's scorecard.")
    ] = None,
    stage: Annotated[
        str, typer.Option("--stage", help="Else the run now in this stage.")
    ] = "production",
    scorecard: Annotated[
        Path | None,
        typer.Option("--scorecard", help="Or a scorecard.json file (no registry needed)."),
    ] = None,
    fail_on_risk: Annotated[
        bool, typer.Option("--fail-on-risk", help="Exit 1 if a risk is at risk.")
    ] = False,
    registry: RegistryOpt = None,
    out: OutOpt = Path("runs"),
) -> None:
    """Each risk of the register with its status (mitigated, at risk, no evidence), computed
    from the scorecard of the run now in production (its newest re-evaluation, if any), or of
    --run, or --scorecard."""
    from bastion.errors import BastionError
    from bastion.evaluation.gate import GateError, read_gate_scorecard
    from bastion.registry.risks import assess, load_register, render_risks

    reg_doc = load_register(register)
    if scorecard is not None:
        if run is not None:
            raise BastionError("risks: give --run or --scorecard, not both")
        try:
            doc = read_gate_scorecard(scorecard).to_json()
        except GateError as e:
            raise BastionError(f"risks: {e}") from None
        title = f"risks of {register} against {scorecard}"
    else:
        from bastion.registry.stages import current_runs

        from_stage = run is None
        with _open(registry, out) as reg:
            if run is None:
                held = current_runs(reg).get(stage)
                if held is None:
                    raise BastionError(
                        f"risks: no run in stage {stage!r} of {reg.url}; give --run or --scorecard"
                    )
                run = held
            info = reg.get(run)
            judged = info
            if from_stage:
                from bastion.registry.living import latest_evaluation

                judged = latest_evaluation(reg, info.run_id)
        if judged.scorecard is None:
            raise BastionError(f"risks: run {info.run_id} ({info.kind}) has no scorecard")
        doc = judged.scorecard
        where = f"run {info.run_id}" + (f" (in {stage})" if from_stage else "")
        if judged.run_id != info.run_id:
            where += f", as re-evaluated by {judged.run_id} ({judged.attack_library})"
        title = f"risks of {register} against {where}"
    statuses = assess(reg_doc, doc, source=str(register))
    typer.echo(render_risks(statuses, title=title))
    if fail_on_risk and any(s.status == "at risk" for s in statuses):
        raise typer.Exit(1)


def serve_stage_command(
    stage: Annotated[str, typer.Option("--stage", help="The stage to serve.")] = "production",
    poll: Annotated[
        float, typer.Option("--poll", min=0.1, help="Seconds between registry checks.")
    ] = 5.0,
    canary: Annotated[
        str | None, typer.Option("--canary", help="A stage answering a share of the inputs.")
    ] = None,
    canary_fraction: Annotated[
        float, typer.Option("--canary-fraction", min=0.0, max=1.0, help="That share.")
    ] = 0.1,
    shadow: Annotated[
        str | None,
        typer.Option("--shadow", help="A stage judging every input on the side (never answers)."),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            help="Key store and audit log (default: serve-STAGE/ beside the registry).",
        ),
    ] = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="A service setting KEY=VALUE (repeat), e.g. rate=50."),
    ] = None,
    registry: RegistryOpt = None,
    out: OutOpt = Path("runs"),
    stages: StagesOpt = None,
) -> None:
    """Serve the run a stage holds over HTTP (like `bastion serve`), switching to the new run
    within --poll seconds of a promotion or rollback; optionally a canary stage answering a
    share of the inputs (demoted when a rule of its `demote_when` in the stages file fires)
    and a shadow stage judged on all of them. Needs the service extra."""
    import uvicorn

    from bastion.cli import _parse_sets
    from bastion.registry.serving import build_stage_app
    from bastion.serve import ServeSettings
    from bastion.serve.runner import uvicorn_options

    settings = ServeSettings.from_mapping(_parse_sets(sets, "--set"))
    rules = _canary_rules(canary, stages)
    reg = _open(registry, out)
    app, guard = build_stage_app(
        reg,
        stage,
        settings=settings,
        state_dir=state_dir,
        canary=canary,
        canary_fraction=canary_fraction if canary else 0.0,
        shadow=shadow,
        on_event=lambda message: _err.print(message, markup=False),
        rules=rules,
    )
    primary = guard.current()
    assert primary is not None
    _err.print(
        f"serving stage {stage} (run {primary.run_id}) on http://{host}:{port}; checking "
        f"{reg.url} every {poll:g} s"
        + "".join(f"; demote the canary when {r.describe()}" for r in rules)
    )
    guard.start(poll)
    try:
        uvicorn.run(app, **uvicorn_options(settings, host=host, port=port))
    finally:
        guard.close()
        reg.close()


def _canary_rules(canary: str | None, stages: Path | None) -> tuple[CanaryRule, ...]:
    """The ``demote_when`` rules of the canary stage (none without a canary or a stage not
    configured); :class:`RegistryError` if a stages file is given but lacks the canary."""
    from bastion.registry.db import RegistryError
    from bastion.registry.stages import ENV_STAGES, load_stages

    configured = load_stages(stages)
    from_file = stages or os.environ.get(ENV_STAGES, "").strip()
    if canary is not None and from_file and canary not in configured:
        raise RegistryError(
            f"--canary: stage {canary!r} is not configured in {from_file} (configured: "
            f"{', '.join(configured)}), so its demote_when rules cannot be read"
        )
    return configured[canary].demote_when if canary is not None and canary in configured else ()


def add_commands(app: typer.Typer) -> None:
    """Attach ``runs``, ``promote``, ``rollback``, ``risks`` and ``serve-stage`` to the main
    app."""
    app.add_typer(runs_app, name="runs")
    app.command("promote")(promote_command)
    app.command("rollback")(rollback_command)
    app.command("risks")(risks_command)
    app.command("serve-stage")(serve_stage_command)
