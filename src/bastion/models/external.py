"""Models from outside bastion's zoo: a team's own PyTorch module, TorchScript, ``torch.export``
programs and ONNX files, described by a small YAML reference file.

A reference file (``model.yaml``) says where the model comes from and what bastion cannot
infer from a foreign model: the input shape, the classes, the valid input range and the
normalisation::

    factory: "mypkg.nets:build"     # import path of a function (or class) returning an nn.Module
    kwargs: {width: 32}             # keyword arguments for it
    weights: model.safetensors      # or a state dict file loaded with torch.load(weights_only=True)
    # instead of factory + weights, exactly one of:
    #   torchscript: model.ts       (torch.jit.load)
    #   export: model.pt2           (torch.export.load; run as a module)
    #   onnx: model.onnx            (onnxruntime; black-box: score-based and label-only attacks)
    input_shape: [1, 8, 8]
    classes: ["0", "1", ...]        # or num_classes: 10
    bounds: [0.0, 1.0]
    normalize: {mean: [0.5], std: [0.25]}   # optional: applied before the model, per channel
    threat: {norm: linf, eps: 0.2}          # optional: the threat the model is meant to face
    data: {name: digits, seed: 0, val_fraction: 0.1, test_fraction: 0.2}   # optional: its split

Paths are relative to the reference file. The result is a :class:`~bastion.models.BastionModel`
whose body is the user's module, so every command that takes a bastion model takes it
(``bastion attack model.yaml``, ``evaluate -m model.yaml``, ``certify model.yaml``). Pickles are
refused: a ``.pkl`` file, and any state dict that ``torch.load(weights_only=True)`` rejects.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from bastion.errors import ModelFileError, yaml_error_line
from bastion.imports import import_callable
from bastion.models.zoo import BastionModel, ModelSpec

__all__ = ["REFERENCE_SUFFIXES", "is_reference", "load_reference", "reference_sidecar"]

REFERENCE_SUFFIXES = (".yaml", ".yml")
_SOURCES = ("factory", "torchscript", "export", "onnx")
_KNOWN = {
    *_SOURCES,
    "kwargs",
    "weights",
    "input_shape",
    "classes",
    "num_classes",
    "bounds",
    "normalize",
    "threat",
    "data",
    "name",
    "python_path",
}


def is_reference(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a model reference file (``.yaml``/``.yml``)."""
    return Path(path).suffix.lower() in REFERENCE_SUFFIXES


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelFileError(f"{path}: model reference file not found")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path}: not valid YAML: {yaml_error_line(e)}") from None
    if not isinstance(doc, dict):
        raise ModelFileError(f"{path}: expected a mapping with 'factory', 'torchscript', ...")
    unknown = sorted(set(doc) - _KNOWN)
    if unknown:
        raise ModelFileError(
            f"{path}: unknown field(s) {unknown}; expected some of {sorted(_KNOWN)}"
        )
    sources = [s for s in _SOURCES if s in doc]
    if len(sources) != 1:
        raise ModelFileError(
            f"{path}: expected exactly one of {', '.join(_SOURCES)}, got {sources or 'none'}"
        )
    return doc


def _num_classes(path: Path, doc: Mapping[str, Any]) -> tuple[int, list[str]]:
    classes = doc.get("classes")
    if classes is not None:
        if not isinstance(classes, list) or len(classes) < 2:
            raise ModelFileError(f"{path}: classes: expected a list of at least two names")
        return len(classes), [str(c) for c in classes]
    n = doc.get("num_classes")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ModelFileError(f"{path}: num_classes: expected an integer >= 2 (or 'classes')")
    return n, [str(i) for i in range(n)]


def _shape(path: Path, doc: Mapping[str, Any]) -> tuple[int, ...]:
    shape = doc.get("input_shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
    ):
        raise ModelFileError(
            f"{path}: input_shape: expected a list of positive integers, e.g. [1, 28, 28], "
            f"got {shape!r}"
        )
    return tuple(shape)


def _resolve(path: Path, value: object, field: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ModelFileError(f"{path}: {field}: expected a file path")
    p = Path(value).expanduser()
    p = p if p.is_absolute() else path.parent / p
    if p.suffix.lower() in (".pkl", ".pickle", ".joblib"):
        raise ModelFileError(
            f"{path}: {field}: {p.name} is a pickle, which can run arbitrary code when loaded; "
            "save weights as safetensors (or a torch state dict)"
        )
    if not p.is_file():
        raise ModelFileError(f"{path}: {field}: file not found: {p}")
    return p


def _load_state(path: Path, weights: Path) -> dict[str, Tensor]:
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(weights))
        except Exception as e:  # safetensors raises its own error types
            raise ModelFileError(f"{path}: weights: not a safetensors file ({e})") from None
    try:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    except Exception as e:  # an unpickler refusal or a corrupt file
        raise ModelFileError(
            f"{path}: weights: {weights.name} is not a plain state dict that loads with "
            f"weights_only=True ({type(e).__name__})"
        ) from None
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelFileError(f"{path}: weights: expected a mapping of names to tensors")
    return dict(state)


class _ExportedModule(nn.Module):
    """A ``torch.export`` program run as a module. The program is fixed (its ``train()``
    raises), so it is held outside the module tree and ``eval()``/``train()`` leave it alone."""

    def __init__(self, program_module: Any):
        super().__init__()
        self.__dict__["program"] = program_module

    def forward(self, x: Tensor) -> Tensor:
        return self.__dict__["program"](x)  # type: ignore[no-any-return]


def _body(path: Path, doc: Mapping[str, Any], num_classes: int) -> tuple[nn.Module, str, bool]:
    """The user's module, a description of its source, and whether it has gradients."""
    from bastion.models.io import state_dict_mismatch

    if "factory" in doc:
        extra = doc.get("python_path") or []
        if not isinstance(extra, list):
            raise ModelFileError(f"{path}: python_path: expected a list of folders")
        folders = [path.parent, *(path.parent / str(p) for p in extra)]
        fn = import_callable(
            doc["factory"], field=f"{path}: factory", error=ModelFileError, python_path=folders
        )
        kwargs = doc.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise ModelFileError(f"{path}: kwargs: expected a mapping")
        try:
            module = fn(**kwargs)
        except Exception as e:  # the user's factory may raise anything
            raise ModelFileError(
                f"{path}: factory: {doc['factory']}(**kwargs) failed ({type(e).__name__}: {e})"
            ) from None
        if not isinstance(module, nn.Module):
            raise ModelFileError(f"{path}: factory: returned {type(module).__name__}, not a module")
        if "weights" in doc:
            state = _load_state(path, _resolve(path, doc["weights"], "weights"))
            mismatch = state_dict_mismatch(module.state_dict(), state)
            if mismatch:
                raise ModelFileError(f"{path}: weights do not fit the module: {mismatch}")
            module.load_state_dict(state, strict=True)
        return module, f"factory {doc['factory']}", True
    if "torchscript" in doc:
        file = _resolve(path, doc["torchscript"], "torchscript")
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated upstream, still in use
                warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated")
                scripted = torch.jit.load(str(file), map_location="cpu")  # type: ignore[no-untyped-call]
            return scripted, f"torchscript {file.name}", True
        except Exception as e:  # torch raises RuntimeError and others for a bad archive
            raise ModelFileError(f"{path}: torchscript: cannot load {file} ({e})") from None
    if "export" in doc:
        file = _resolve(path, doc["export"], "export")
        try:
            program = torch.export.load(str(file))
        except Exception as e:  # torch raises several kinds for a bad archive
            raise ModelFileError(f"{path}: export: cannot load {file} ({e})") from None
        return _ExportedModule(program.module()), f"torch.export {file.name}", True
    from bastion.attacks.targets import OnnxTarget

    file = _resolve(path, doc["onnx"], "onnx")
    try:
        target = OnnxTarget(str(file), num_classes)
    except Exception as e:  # ConfigError/AttackInputError with a message naming the file
        raise ModelFileError(f"{path}: onnx: {e}") from None
    return target, f"onnx {file.name}", False


def load_reference(path: str | os.PathLike[str]) -> BastionModel:
    """Load the model a reference file describes, in eval mode on the CPU.

    ``spec.architecture`` is ``"external"``; ``spec.options`` holds ``source`` (where the model
    came from), ``gradients`` (False for ONNX: only black-box attacks apply) and ``bounds``.
    Raises :class:`ModelFileError` naming the file and field for every problem.
    """
    p = Path(path)
    doc = _read(p)
    num_classes, _ = _num_classes(p, doc)
    shape = _shape(p, doc)
    norm = doc.get("normalize") or {}
    channels = shape[0]
    mean = tuple(float(v) for v in norm.get("mean", [0.0] * channels))
    std = tuple(float(v) for v in norm.get("std", [1.0] * channels))
    if len(mean) != channels or len(std) != channels or any(s <= 0 for s in std):
        raise ModelFileError(
            f"{p}: normalize: expected {channels} means and {channels} positive stds (one per "
            f"input channel), got {list(mean)} and {list(std)}"
        )
    body, source, gradients = _body(p, doc, num_classes)
    bounds = doc.get("bounds", [0.0, 1.0])
    spec = ModelSpec(
        architecture="external",
        input_shape=shape,
        num_classes=num_classes,
        mean=mean,
        std=std,
        options={"source": source, "gradients": gradients, "bounds": list(bounds)},
    )
    model = BastionModel(spec, body).eval()
    with torch.no_grad():
        try:
            out = model(torch.zeros(2, *shape))
        except Exception as e:  # a shape the module cannot take
            raise ModelFileError(
                f"{p}: input_shape: the model fails on inputs of shape {list(shape)} "
                f"({type(e).__name__}: {e})"
            ) from None
    if tuple(out.shape) != (2, num_classes):
        raise ModelFileError(
            f"{p}: the model returns shape {tuple(out.shape)[1:]} per example, expected "
            f"({num_classes},) logits for {num_classes} classes"
        )
    return model


def reference_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A sidecar-like document for a reference file (the form :func:`read_sidecar` returns),
    so that commands find the classes, threat and data split where they look for them."""
    p = Path(path)
    doc = _read(p)
    _, classes = _num_classes(p, doc)
    meta: dict[str, Any] = {
        "name": doc.get("name") or p.stem,
        "classes": classes,
        "objective": {"name": "external"},
    }
    threat = doc.get("threat")
    if isinstance(threat, dict):
        meta["threat"] = {"bounds": doc.get("bounds", [0.0, 1.0]), **threat}
    data = doc.get("data")
    if isinstance(data, dict) and "name" in data:
        # a declared split cannot be proved by a digest, so it is recorded as declared
        meta["declared_split"] = dict(data)
    return {"format": "bastion-model-reference/1", "spec": None, "metadata": meta}
