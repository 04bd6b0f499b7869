"""Export a recorded run to MLflow, for teams that already track experiments there.

``bastion runs export RUN --mlflow TRACKING_URI`` (needs the ``mlflow`` extra,
``mlflow-skinny``) creates one MLflow run in the experiment named after the config's ``name``
(or ``--experiment``), with:

- tags ``bastion.run_id``, ``bastion.kind``, ``bastion.config_hash``,
  ``bastion.data_fingerprint``, ``bastion.git_commit``, ``bastion.git_dirty``,
  ``bastion.attack_library``, ``bastion.version``, ``bastion.parent_run``,
  ``bastion.recorded_by``, ``bastion.created_at`` and ``bastion.stages`` (the stages holding
  the run now);
- params: the config by dotted path (``training.lr``) and the seeds (``seeds.seed``);
- metrics: every number of the scorecard that ``bastion runs diff`` compares
  (:func:`bastion.registry.diff.scorecard_metrics`), as step 0;
- artifacts: ``scorecard.json``, the report and model card when the run has them, the config
  (with secrets masked) and the registry record as ``bastion/record.json``, and the model files
  under ``model/`` (``models/*.safetensors`` and their JSON sidecars, after checking them
  against their recorded digests; no pickle is ever written or read).

A run already exported to that experiment (same ``bastion.run_id`` tag) is not exported twice.

Secrets: nothing of the tracking URI but its scheme and host is ever printed (a password in it
is masked); config values that look like credentials (under a key that is or ends in
``password``, ``secret``, ``token``, ``api_key``, ``credentials``, e.g. ``auth_token``; or the
password of a URL) are logged masked, as ``***``.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bastion.registry.db import RegistryError, display_url, scrub
from bastion.registry.diff import flatten, scorecard_metrics
from bastion.registry.stages import check_run_files, current_runs
from bastion.registry.store import Registry, RunInfo

__all__ = ["ExportResult", "export_run", "mask_secrets"]

# MLflow's limits: keys of letters, digits, _ - . space / (250 chars); param values 6000 chars
_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-. /]")
_SECRET_KEY = re.compile(
    r"^(.*[_-])?(password|passwd|secret|token|api[_-]?key|credentials?)$", re.I
)
_URL_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@\s]*:[^/@\s]*@")
MAX_PARAM = 6000
MAX_KEY = 250
REPORT_FILES = ("report.html", "report.md", "model_card.md")


@dataclass(frozen=True)
class ExportResult:
    """What an export did: the MLflow run it created (or found: ``created`` false)."""

    run_id: str
    mlflow_run_id: str
    experiment_id: str
    experiment: str
    created: bool
    params: int = 0
    metrics: int = 0
    artifacts: tuple[str, ...] = ()


def _key(path: str) -> str:
    return _KEY_BAD.sub("_", path)[:MAX_KEY]


def mask_secrets(doc: Any, key: str = "") -> Any:
    """A copy of a JSON-like document with credential-looking values replaced by ``***``: the
    value (not a boolean) of a key that is or ends in ``password``, ``secret``, ``token``,
    ``api_key`` or ``credentials`` (``auth_token``, not ``max_tokens``), and the password of
    a URL (``postgresql://user:***@host/db``)."""
    if isinstance(doc, dict):
        return {k: mask_secrets(v, str(k)) for k, v in doc.items()}
    if isinstance(doc, list):
        return [mask_secrets(v, key) for v in doc]
    if doc is not None and not isinstance(doc, bool) and _SECRET_KEY.match(key):
        return "***"
    if isinstance(doc, str) and _URL_PASSWORD.match(doc):
        return display_url(doc)
    return doc


def _tags(run: RunInfo, stages: list[str]) -> dict[str, str]:
    values = {
        "bastion.run_id": run.run_id,
        "bastion.kind": run.kind,
        "bastion.config_hash": run.config_hash,
        "bastion.data_fingerprint": run.data_fingerprint,
        "bastion.git_commit": run.git_commit,
        "bastion.git_dirty": run.git_dirty,
        "bastion.attack_library": run.attack_library,
        "bastion.version": run.bastion_version,
        "bastion.parent_run": run.parent_id,
        "bastion.recorded_by": run.recorded_by,
        "bastion.created_at": run.created_at,
        "bastion.stages": ",".join(stages),
        "mlflow.runName": f"{run.name}-{run.run_id}",
    }
    return {k: str(v) for k, v in values.items() if v is not None and v != ""}


def _params(run: RunInfo) -> dict[str, str]:
    flat = flatten(mask_secrets(run.config or {}))
    flat.update({f"seeds.{k}": v for k, v in flatten(run.seeds).items()})
    out: dict[str, str] = {}
    for path, value in flat.items():
        text = value if isinstance(value, str) else json.dumps(value)
        out[_key(path)] = text[:MAX_PARAM]
    return out


def _metrics(run: RunInfo) -> dict[str, float]:
    out: dict[str, float] = {}
    for path, value in scorecard_metrics(run).items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(float(value)):
            out[_key(path)] = float(value)
    return out


def export_run(
    reg: Registry, ref: str, tracking_uri: str, *, experiment: str | None = None
) -> ExportResult:
    """Export run ``ref`` of ``reg`` to the MLflow tracking server or store at
    ``tracking_uri`` (``sqlite:///mlflow.db``, ``http://host:5000``, ...); see the module
    docstring for what is logged.

    Raises:
        RegistryError: an unknown run, a run directory or model file that is gone or changed
            since it was recorded, the ``mlflow`` extra missing, or MLflow refusing the export
            (its message, with any password of the URI masked).
    """
    try:
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param
    except ImportError as e:
        raise RegistryError(
            f"runs export --mlflow: needs the mlflow extra (pip install 'bastion[mlflow]'): {e}"
        ) from None
    with reg.session() as s:
        row = reg.resolve_in(s, ref)
        check_run_files(s, row)
        run_id = row.run_id
    run = reg.get(run_id)
    assert run.run_dir is not None
    run_dir = Path(run.run_dir)
    stages = sorted(stage for stage, held in current_runs(reg).items() if held == run_id)
    name = experiment or run.name
    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(name)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(name)
        earlier = client.search_runs(
            [experiment_id], filter_string=f"tags.`bastion.run_id` = '{run_id}'", max_results=1
        )
        if earlier:
            return ExportResult(run_id, earlier[0].info.run_id, experiment_id, name, False)
        tags = _tags(run, stages)
        created = client.create_run(experiment_id, tags=tags, run_name=tags["mlflow.runName"])
        mlflow_id = created.info.run_id
        params, metrics = _params(run), _metrics(run)
        items = list(params.items())
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(mlflow_id, params=[Param(k, v) for k, v in items[i : i + 100]])
        at = _millis(run.created_at)
        values = list(metrics.items())
        for i in range(0, len(values), 1000):
            batch = [Metric(k, v, at, 0) for k, v in values[i : i + 1000]]
            client.log_batch(mlflow_id, metrics=batch)
        logged = _log_files(client, mlflow_id, run, run_dir)
        client.set_terminated(mlflow_id)
    except RegistryError:
        raise
    except Exception as e:  # MLflow's own errors (a bad URI, a server that is down)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise RegistryError(
            f"runs export: MLflow at {display_url(tracking_uri)} refused: "
            f"{scrub(first, tracking_uri)}"
        ) from None
    return ExportResult(
        run_id, mlflow_id, experiment_id, name, True, len(params), len(metrics), logged
    )


def _millis(created_at: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp() * 1000)


def _log_files(client: Any, mlflow_id: str, run: RunInfo, run_dir: Path) -> tuple[str, ...]:
    """The run's files as artifacts; returns their artifact paths."""
    logged: list[str] = []
    for name in ("scorecard.json", *REPORT_FILES):
        f = run_dir / name
        if not f.is_file():
            continue
        client.log_artifact(mlflow_id, str(f))
        logged.append(name)
    with tempfile.TemporaryDirectory(prefix="bastion-mlflow-") as tmp:
        bastion_dir = Path(tmp) / "bastion"
        bastion_dir.mkdir()
        record = {k: v for k, v in asdict(run).items() if k not in ("scorecard", "config")}
        (bastion_dir / "record.json").write_text(
            json.dumps(mask_secrets(record), indent=2, sort_keys=True, default=str)
        )
        (bastion_dir / "config.json").write_text(
            json.dumps(mask_secrets(run.config or {}), indent=2, sort_keys=True)
        )
        client.log_artifacts(mlflow_id, str(bastion_dir), "bastion")
        logged += ["bastion/record.json", "bastion/config.json"]
    models = run_dir / "models"
    if models.is_dir():
        for f in sorted(models.iterdir()):
            if f.is_file() and f.suffix in (".safetensors", ".json", ".yaml", ".yml"):
                client.log_artifact(mlflow_id, str(f), "model")
                logged.append(f"model/{f.name}")
    return tuple(logged)
