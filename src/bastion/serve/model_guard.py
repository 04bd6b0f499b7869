"""The simplest real guard: validate each input, then predict with the saved model.

:class:`ModelGuard` is the service's fallback when a run has no fitted guard. It has two
layers: ``validation`` (shape, finiteness, range) and ``model`` (softmax of the logits). It
never raises for a bad value inside a well-shaped batch; that input is rejected with a reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from bastion.errors import ModelFileError
from bastion.guard.decision import Decision
from bastion.models import BastionModel, load_model, read_sidecar


def pick_model(run_dir: str | os.PathLike[str], name: str | None = None) -> Path:
    """The model stem ``<run_dir>/models/<name>`` to serve (or its reference file
    ``<name>.yaml`` for a model from outside the zoo).

    ``name=None`` picks the last model of the run's ``scorecard.json`` (the pipeline writes
    them in config order, the hardened one last), else the only model in ``models/``.
    """
    run = Path(run_dir)
    models = run / "models"
    if not models.is_dir():
        raise ModelFileError(f"{run}: not a run directory (no models/ folder)")
    # a team's own model is served from a reference file (bastion.models.external)
    refs = {p.stem: p for suffix in ("*.yaml", "*.yml") for p in models.glob(suffix)}
    available = sorted({p.stem for p in models.glob("*.safetensors")} | set(refs))
    if name is None:
        card = run / "scorecard.json"
        if card.is_file():
            try:
                listed = list(json.loads(card.read_text()).get("models", {}))
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
                raise ModelFileError(f"{card}: not a readable scorecard ({e})") from e
            listed = [m for m in listed if m in available]
            if listed:
                name = listed[-1]
        if name is None:
            if len(available) != 1:
                raise ModelFileError(
                    f"{models}: cannot tell which model to serve; name one of "
                    f"{', '.join(available) or '(none found)'}"
                )
            name = available[0]
    if name not in available:
        raise ModelFileError(
            f"model: {name!r} not found in {models}; expected one of "
            f"{', '.join(available) or '(none found)'}"
        )
    if name in refs and not (models / f"{name}.json").is_file():  # no bastion sidecar
        return refs[name]
    return models / name


class ModelGuard:
    """Validate ``(N, *input_shape)`` float32 inputs in [0, 1], then answer with the model.

    Attributes:
        input_shape: the model's input shape, e.g. ``(1, 28, 28)``.
        classes: class names, from the sidecar's ``metadata.classes`` (else ``"0"``, ``"1"``...).
        layers: ``("validation", "model")``.
        name: the model's name (the file stem).
    """

    layers: tuple[str, ...] = ("validation", "model")

    def __init__(
        self,
        model: BastionModel,
        *,
        classes: Sequence[str] | None = None,
        name: str = "model",
        bounds: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        self.model = model.eval()
        self.input_shape: tuple[int, ...] = tuple(model.spec.input_shape)
        n = model.spec.num_classes
        self.classes: tuple[str, ...] = (
            tuple(str(c) for c in classes) if classes is not None else tuple(map(str, range(n)))
        )
        if len(self.classes) != n:
            raise ModelFileError(
                f"{name}: metadata.classes has {len(self.classes)} names, the model {n} outputs"
            )
        self.name = name
        self.bounds = (float(bounds[0]), float(bounds[1]))

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike[str], *, model: str | None = None) -> ModelGuard:
        """Load ``<run_dir>/models/<model>`` (see :func:`pick_model`) on the CPU."""
        stem = pick_model(run_dir, model)
        return cls.from_file(stem)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ModelGuard:
        """Load a model saved by :func:`bastion.models.save_model` (weights, sidecar or stem)."""
        loaded = load_model(path)
        meta = read_sidecar(path).get("metadata", {})
        classes = meta.get("classes") if isinstance(meta, dict) else None
        if classes is not None and not isinstance(classes, list):
            raise ModelFileError(f"{path}: sidecar metadata.classes must be a list of names")
        threat = meta.get("threat") if isinstance(meta, dict) else None
        bounds = (0.0, 1.0)
        if isinstance(threat, dict) and isinstance(threat.get("bounds"), list):
            lo, hi = threat["bounds"]
            bounds = (float(lo), float(hi))
        stem = Path(path).name
        for suffix in (".safetensors", ".json", ".yaml", ".yml"):
            stem = stem.removesuffix(suffix)
        return cls(loaded, classes=classes, name=stem, bounds=bounds)

    def _invalid(self, x: Tensor) -> tuple[Tensor, list[str]]:
        """Per-row validity mask ``(N,)`` and the reason for each invalid row."""
        flat = x.reshape(x.shape[0], -1)
        finite = torch.isfinite(flat).all(dim=1)
        lo, hi = self.bounds
        safe = torch.where(torch.isfinite(flat), flat, torch.zeros_like(flat))
        in_range = ((safe >= lo) & (safe <= hi)).all(dim=1)
        ok = finite & in_range
        reasons = []
        for i in torch.nonzero(~ok).flatten().tolist():
            if not bool(finite[i]):
                reasons.append("validation: value not finite (NaN or infinity)")
            else:
                reasons.append(f"validation: value out of range [{lo:g}, {hi:g}]")
        return ok, reasons

    def decide(self, x: Tensor) -> list[Decision]:
        """Decisions for a batch ``(N, *input_shape)``: ``reject`` for a non-finite or
        out-of-range input, else ``accept`` with the softmax probabilities."""
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            return [
                Decision(
                    verdict="reject",
                    reasons=(
                        f"validation: expected shape {self.input_shape}, got {tuple(x.shape[1:])}",
                    ),
                )
            ] * (int(x.shape[0]) if x.ndim > 0 else 1)
        x = x.to(torch.float32)
        ok, reasons = self._invalid(x)
        out: list[Decision | None] = [None] * int(x.shape[0])
        bad = torch.nonzero(~ok).flatten().tolist()
        for i, reason in zip(bad, reasons, strict=True):
            out[i] = Decision(verdict="reject", reasons=(reason,))
        good = torch.nonzero(ok).flatten()
        if good.numel():
            with torch.inference_mode():
                probs = torch.softmax(self.model(x[good]), dim=1)
            conf, label = probs.max(dim=1)
            rows = probs.tolist()
            for j, i in enumerate(good.tolist()):
                out[i] = Decision(
                    verdict="accept",
                    label=int(label[j]),
                    confidence=float(conf[j]),
                    probabilities=tuple(rows[j]),
                )
        return [d for d in out if d is not None]
