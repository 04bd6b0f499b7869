"""Saving a fitted guard to a directory and loading it back (JSON + safetensors, no pickle).

Layout of ``path/``::

    guard.json            format, config, classes, bounds, temperature, score names, seed, schema
    guard.safetensors     calibration scores, Mahalanobis statistics, detector weights
    models/<name>.*       the predicting models (bastion model files), so the folder stands alone

Loading rebuilds every part once, so :meth:`Guard.decide` has nothing left to prepare.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bastion.data.schema import TabularSchema
from bastion.errors import ConfigError, ModelFileError
from bastion.guard.config import GuardConfig
from bastion.guard.core import Guard
from bastion.guard.fit import guard_parts
from bastion.guard.ood import Mahalanobis
from bastion.guard.scorer import AdversarialDetector
from bastion.guard.validation import Sanitizer
from bastion.models.io import load_model, save_model
from bastion.models.zoo import BastionModel

FORMAT = "bastion-guard/1"


def save_guard(guard: Guard, path: str | os.PathLike[str]) -> Path:
    """Write ``guard`` to the directory ``path`` (replaced atomically if it exists)."""
    out = Path(path)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "models").mkdir(parents=True)
    names = guard.config.prediction.models
    for name, model in zip(names, guard.models, strict=True):
        if not isinstance(model, BastionModel):
            raise ModelFileError(f"guard: model {name!r} is not a BastionModel; cannot save it")
        save_model(model, tmp / "models" / name)
    scorer = guard.scorer
    tensors: dict[str, torch.Tensor] = {"cal_scores": guard.cal_scores.contiguous()}
    if scorer.mahalanobis is not None:
        tensors["mahalanobis.means_w"] = scorer.mahalanobis.means_w.contiguous()
        tensors["mahalanobis.whiten"] = scorer.mahalanobis.whiten.contiguous()
    detector: dict[str, Any] | None = None
    if scorer.detector is not None:
        detector = {"n_features": scorer.detector.n_features, "hidden": scorer.detector.hidden}
        for k, v in scorer.detector.state_dict().items():
            tensors[f"detector.{k}"] = v.contiguous()
    schema = guard.validator.schema
    doc = {
        "format": FORMAT,
        "config": guard.config.model_dump(mode="json"),
        "classes": list(guard.classes),
        "input_shape": list(guard.input_shape),
        "bounds": list(guard.validator.bounds),
        "temperature": scorer.temperature,
        "firing": list(guard.firing),
        "fpr": guard.fpr,
        "seed": guard.seed,
        "detector": detector,
        "schema": schema.to_dict() if schema is not None else None,
    }
    save_file(tensors, str(tmp / "guard.safetensors"), metadata={"format": FORMAT})
    (tmp / "guard.json").write_text(json.dumps(doc, indent=2, sort_keys=True))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def load_guard(path: str | os.PathLike[str], *, sanitize: Sanitizer | None = None) -> Guard:
    """Load a guard written by :func:`save_guard`; raises :class:`ModelFileError` or
    :class:`ConfigError` naming the file and what was wrong."""
    root = Path(path)
    doc = _read_meta(root / "guard.json")
    config = GuardConfig.from_dict(doc["config"], where=f"{root / 'guard.json'}: config")
    try:
        tensors = load_file(str(root / "guard.safetensors"))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{root / 'guard.safetensors'}: cannot read ({e})") from e
    models = []
    for name in config.prediction.models:
        model = load_model(root / "models" / name)
        for p in model.parameters():
            p.requires_grad_(False)
        models.append(model)
    maha = None
    if "mahalanobis.means_w" in tensors:
        maha = Mahalanobis(tensors["mahalanobis.means_w"], tensors["mahalanobis.whiten"])
    scorer, validator = guard_parts(
        models,
        config,
        (float(doc["bounds"][0]), float(doc["bounds"][1])),
        input_shape=tuple(int(s) for s in doc["input_shape"]),
        schema=TabularSchema.from_dict(doc["schema"]) if doc.get("schema") else None,
        sanitize=sanitize,
        temperature=float(doc["temperature"]),
        mahalanobis=maha,
        detector=_load_detector(root, doc, tensors),
    )
    firing = tuple(str(f) for f in doc["firing"])
    cal = tensors["cal_scores"]
    if cal.dim() != 2 or cal.shape[1] != len(firing):
        raise ConfigError(
            f"{root}: cal_scores has shape {tuple(cal.shape)}, expected (M, {len(firing)})"
        )
    guard = Guard(
        config=config,
        scorer=scorer,
        validator=validator,
        classes=tuple(str(c) for c in doc["classes"]),
        cal_scores=cal,
        firing=firing,
        fpr=float(doc["fpr"]),
        models=models,
        seed=int(doc["seed"]),
    )
    return guard


def _read_meta(meta_path: Path) -> dict[str, Any]:
    """``guard.json`` as a dict; :class:`ModelFileError` if it is missing, not JSON or not of
    this format."""
    if not meta_path.is_file():
        raise ModelFileError(f"{meta_path}: guard metadata not found (expected a saved guard)")
    try:
        doc = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{meta_path}: invalid JSON ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelFileError(f"{meta_path}: not a bastion guard (expected format {FORMAT!r})")
    return doc


def _load_detector(
    root: Path, doc: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> AdversarialDetector | None:
    """The saved adversarial-input detector, frozen and in eval mode (``None`` if the guard
    has none); :class:`ModelFileError` if its weights do not match its recorded size."""
    if not doc.get("detector"):
        return None
    info = doc["detector"]
    detector = AdversarialDetector(int(info["n_features"]), int(info["hidden"]))
    state = {k[len("detector.") :]: v for k, v in tensors.items() if k.startswith("detector.")}
    try:
        detector.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelFileError(f"{root}: detector weights do not match ({e})") from e
    for p in detector.parameters():
        p.requires_grad_(False)
    detector.eval()
    return detector
