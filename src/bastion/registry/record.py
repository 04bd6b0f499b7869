"""What the registry records about a run, read from its run directory (or a model file).

:func:`run_record` reads a finished run directory (``config.yaml``, ``scorecard.json``,
``models/*.safetensors`` and their sidecars) and adds where the code came from (bastion's
version, the git commit of its source tree when there is one), the attack library version,
who recorded it and when.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from bastion.registry.db import RegistryError

__all__ = [
    "ArtifactRecord",
    "RunRecord",
    "attack_library_version",
    "code_version",
    "current_user",
    "evaluation_record",
    "file_sha256",
    "model_record",
    "now_utc",
    "run_record",
    "scorecard_summary",
]

ENV_USER = "BASTION_USER"
"""Overrides who is recorded as having run, promoted or rolled back (else the login name)."""


@dataclass(frozen=True)
class ArtifactRecord:
    """A file and its SHA-256 digest; ``path`` is relative to the run directory when inside it."""

    role: str
    name: str
    path: str
    sha256: str
    size: int


def now_utc() -> str:
    """The current time, ISO 8601 in UTC to the microsecond (sorts as text)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def current_user() -> str:
    """Who is acting: ``$BASTION_USER``, else the login name."""
    user = os.environ.get(ENV_USER, "").strip()
    if user:
        return user
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@lru_cache(maxsize=1)
def code_version() -> tuple[str, str | None, bool | None]:
    """bastion's version, and the git commit of the tree its source lives in with whether that
    source has uncommitted changes (``None`` for both outside a git checkout)."""
    import bastion

    src = Path(bastion.__file__).resolve().parent
    commit = _git(["rev-parse", "HEAD"], src)
    if commit is None or len(commit) != 40:
        return bastion.__version__, None, None
    status = _git(["status", "--porcelain", "--untracked-files=no", "--", "."], src)
    return bastion.__version__, commit, (bool(status) if status is not None else None)


@lru_cache(maxsize=1)
def attack_library_version() -> str:
    """The attack library's version: bastion's version and a digest of the attack code
    (``bastion/attacks/**/*.py``), so two runs with the same string attacked with the same
    code."""
    import bastion
    import bastion.attacks

    root = Path(bastion.attacks.__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(p.read_bytes() + b"\0")
    return f"{bastion.__version__}+attacks.{h.hexdigest()[:12]}"


@dataclass(frozen=True)
class RunRecord:
    """Everything the registry stores about one run (see
    :class:`bastion.registry.models.RunRow`)."""

    kind: str
    name: str
    run_dir: str | None
    command: str | None
    config_hash: str | None
    config: dict[str, Any] | None
    data_fingerprint: str | None
    data: dict[str, Any]
    seeds: dict[str, Any]
    summary: dict[str, Any]
    scorecard: dict[str, Any] | None
    artifacts: tuple[ArtifactRecord, ...] = ()
    created_at: str = field(default_factory=lambda: now_utc())
    recorded_by: str = field(default_factory=lambda: current_user())
    host: str = field(default_factory=socket.gethostname)
    bastion_version: str = field(default_factory=lambda: code_version()[0])
    git_commit: str | None = field(default_factory=lambda: code_version()[1])
    git_dirty: bool | None = field(default_factory=lambda: code_version()[2])
    attack_library: str = field(default_factory=lambda: attack_library_version())
    parent_id: str | None = None


def scorecard_summary(scorecard: Mapping[str, Any] | None) -> dict[str, Any]:
    """Per model, ``clean_accuracy`` and ``worst_case_accuracy`` (``None`` where missing)."""
    out: dict[str, Any] = {}
    models = (scorecard or {}).get("models")
    if not isinstance(models, Mapping):
        return out
    for name, m in models.items():
        if isinstance(m, Mapping):
            out[str(name)] = {
                "clean_accuracy": m.get("clean_accuracy"),
                "worst_case_accuracy": m.get("worst_case_accuracy"),
            }
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RegistryError(f"{path}: cannot read: {e}") from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{path}: expected a JSON object")
    return doc


def _sidecar(weights: Path) -> dict[str, Any]:
    side = weights.with_suffix(".json")
    if not side.is_file():
        return {}
    meta = _read_json(side).get("metadata")
    return meta if isinstance(meta, dict) else {}


def _model_artifact(weights: Path, root: Path | None, role: str = "model") -> ArtifactRecord:
    try:
        rel = weights.resolve().relative_to(root.resolve()) if root else weights.resolve()
    except ValueError:
        rel = weights.resolve()
    return ArtifactRecord(
        role, weights.stem, rel.as_posix(), file_sha256(weights), weights.stat().st_size
    )


def _models_data(sidecars: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, meta in sidecars.items():
        split = meta.get("split") if isinstance(meta.get("split"), Mapping) else {}
        out[name] = {
            "fingerprint": meta.get("data_fingerprint"),
            "split_digest": (split or {}).get("digest"),
            "split_seed": (split or {}).get("seed"),
        }
    return out


def run_record(
    run_dir: str | os.PathLike[str],
    *,
    kind: str = "run",
    command: str | None = None,
    inputs: tuple[Path, ...] = (),
) -> RunRecord:
    """Read a finished run directory into a :class:`RunRecord`.

    ``inputs`` are model files the run read (an evaluation's models), recorded with role
    ``input`` so that lineage finds the evaluations of a model.

    Raises:
        RegistryError: not a directory, or no ``scorecard.json`` and no model in it.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise RegistryError(f"{root}: not a run directory")
    sc_path = root / "scorecard.json"
    scorecard = _read_json(sc_path) if sc_path.is_file() else None
    weights = sorted((root / "models").glob("*.safetensors"))
    if scorecard is None and not weights:
        raise RegistryError(f"{root}: not a run directory (no scorecard.json, no models/)")
    cfg_path = root / "config.yaml"
    config: dict[str, Any] | None = None
    if cfg_path.is_file():
        try:
            loaded = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise RegistryError(f"{cfg_path}: not valid YAML: {e}") from None
        config = loaded if isinstance(loaded, dict) else None
    artifacts = [_model_artifact(w, root) for w in weights]
    artifacts += [_model_artifact(p, root, role="input") for p in inputs]
    if scorecard is not None:
        artifacts.append(
            ArtifactRecord(
                "scorecard",
                "scorecard",
                "scorecard.json",
                file_sha256(sc_path),
                sc_path.stat().st_size,
            )
        )
    sidecars = {w.stem: _sidecar(w) for w in weights}
    run = (scorecard or {}).get("run") or {}
    data_doc = (scorecard or {}).get("data") or {}
    fingerprint = data_doc.get("fingerprint") if isinstance(data_doc, Mapping) else None
    if fingerprint is None:
        fingerprint = next(
            (m.get("data_fingerprint") for m in sidecars.values() if m.get("data_fingerprint")),
            None,
        )
    config_hash = run.get("config_hash") or next(
        (m.get("config_hash") for m in sidecars.values() if m.get("config_hash")), None
    )
    name = run.get("name") or (config or {}).get("name") or root.name
    seed = run.get("seed", (config or {}).get("seed"))
    models_data = _models_data(sidecars)
    split_seeds = {
        k: v["split_seed"] for k, v in models_data.items() if v["split_seed"] is not None
    }
    return RunRecord(
        kind=kind,
        name=str(name),
        run_dir=str(root.resolve()),
        command=command or run.get("command"),
        config_hash=config_hash,
        config=config,
        data_fingerprint=fingerprint,
        data={
            "name": data_doc.get("name") if isinstance(data_doc, Mapping) else None,
            "fingerprint": fingerprint,
            "models": models_data,
        },
        seeds={"seed": seed, "split": split_seeds},
        summary=scorecard_summary(scorecard),
        scorecard=scorecard,
        artifacts=tuple(artifacts),
    )


def model_record(weights: str | os.PathLike[str], *, command: str | None = None) -> RunRecord:
    """A record of one saved model (``bastion train``): its digest, sidecar data and config."""
    w = Path(weights)
    if w.suffix != ".safetensors":
        w = w.with_name(w.name + ".safetensors")
    if not w.is_file():
        raise RegistryError(f"{w}: model file not found")
    meta = _sidecar(w)
    models_data = _models_data({w.stem: meta})
    split_seed = models_data[w.stem]["split_seed"]
    return RunRecord(
        kind="train",
        name=str(meta.get("name") or w.stem),
        run_dir=str(w.resolve().parent),
        command=command,
        config_hash=meta.get("config_hash"),
        config=None,
        data_fingerprint=meta.get("data_fingerprint"),
        data={"name": None, "fingerprint": meta.get("data_fingerprint"), "models": models_data},
        seeds={"seed": split_seed, "split": {w.stem: split_seed} if split_seed is not None else {}},
        summary={},
        scorecard=None,
        artifacts=(_model_artifact(w, w.resolve().parent),),
    )


def _weights_file(p: Path) -> Path:
    # a model from outside the zoo is named by its reference file, whose digest is recorded
    if p.suffix in (".safetensors", ".yaml", ".yml"):
        return p
    return p.with_name(p.name + ".safetensors")


def evaluation_record(
    scorecard: str | os.PathLike[str],
    models: tuple[Path, ...],
    *,
    config: str | os.PathLike[str] | None = None,
    command: str | None = None,
) -> RunRecord:
    """A record of a ``bastion evaluate``: its scorecard, the config, and the model files it
    read (role ``input``, by absolute path, so lineage finds the evaluations of a model).

    Raises:
        RegistryError: the scorecard or a model file cannot be read.
    """
    sc_path = Path(scorecard)
    sc = _read_json(sc_path)
    cfg_doc: dict[str, Any] | None = None
    if config is not None and Path(config).is_file():
        try:
            loaded = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise RegistryError(f"{config}: not valid YAML: {e}") from None
        cfg_doc = loaded if isinstance(loaded, dict) else None
    weights = tuple(_weights_file(Path(m)) for m in models)
    for w in weights:
        if not w.is_file():
            raise RegistryError(f"{w}: model file not found")
    artifacts = [_model_artifact(w, None, role="input") for w in weights]
    artifacts.append(
        ArtifactRecord(
            "scorecard",
            "scorecard",
            sc_path.resolve().as_posix(),
            file_sha256(sc_path),
            sc_path.stat().st_size,
        )
    )
    run = sc.get("run") or {}
    data_doc = sc.get("data") or {}
    sidecars = {w.stem: _sidecar(w) for w in weights}
    fingerprint = data_doc.get("fingerprint") if isinstance(data_doc, Mapping) else None
    return RunRecord(
        kind="evaluate",
        name=str(run.get("name") or sc_path.stem),
        run_dir=str(sc_path.resolve().parent),
        command=command or run.get("command"),
        config_hash=run.get("config_hash"),
        config=cfg_doc,
        data_fingerprint=fingerprint,
        data={
            "name": data_doc.get("name") if isinstance(data_doc, Mapping) else None,
            "fingerprint": fingerprint,
            "models": _models_data(sidecars),
        },
        seeds={"seed": run.get("seed"), "split": {}},
        summary=scorecard_summary(sc),
        scorecard=sc,
        artifacts=tuple(artifacts),
    )
