"""Saving and loading models: safetensors weights with a JSON sidecar.

``save_model(model, "dir/hardened")`` writes ``dir/hardened.safetensors`` and
``dir/hardened.json``; :func:`load_model` reads them back. :func:`load_any_model` (the public
``bastion.load_model``) also reads a transformer text model's directory.
The sidecar holds the :class:`ModelSpec` (architecture, input shape,
classes, normalisation) plus provenance (data fingerprint, config hash, threat model, metrics).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bastion.errors import ConfigError, ModelFileError
from bastion.models.external import is_reference, load_reference, reference_sidecar
from bastion.models.zoo import BastionModel, ModelSpec, build_model

if TYPE_CHECKING:
    from bastion.text.transformer import TransformerTextClassifier

FORMAT = "bastion-model/1"


def _paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    # append, not with_suffix: a stem such as "model-eps0.3" must keep its ".3"
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def save_model(
    model: BastionModel, path: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write weights and sidecar; returns the path of the ``.safetensors`` file.

    Each file is written to a temporary name and renamed, so a crash leaves no half file.
    """
    weights, sidecar = _paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp_w = weights.with_name(weights.name + ".tmp")
    save_file(state, str(tmp_w), metadata={"format": FORMAT})
    doc = {"format": FORMAT, "spec": model.spec.to_dict(), "metadata": dict(metadata or {})}
    tmp_s = sidecar.with_name(sidecar.name + ".tmp")
    tmp_s.write_text(json.dumps(doc, indent=2, sort_keys=True))
    os.replace(tmp_w, weights)
    os.replace(tmp_s, sidecar)
    return weights


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed JSON sidecar of a saved model (raises :class:`ModelFileError`); for a model
    reference file (:mod:`bastion.models.external`), the equivalent document it declares."""
    if is_reference(path):
        return reference_sidecar(path)
    _, sidecar = _paths(path)
    if not sidecar.is_file():
        raise ModelFileError(
            f"{sidecar}: model sidecar not found (expected the JSON file saved beside the "
            ".safetensors weights)"
        )
    try:
        doc = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{sidecar}: not a bastion model sidecar (invalid JSON: {e})") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "spec" not in doc:
        raise ModelFileError(f"{sidecar}: not a bastion model sidecar (expected format {FORMAT!r})")
    return doc


def load_model(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> BastionModel:
    """Load a model saved by :func:`save_model`, in eval mode, on ``device``.

    The returned module maps a float32 batch in the data's natural range (pixels in [0, 1],
    NCHW) to logits ``(N, num_classes)``. ``path`` may name the weights, the sidecar or their
    common stem, or a model reference file (``.yaml``) describing a model from outside the zoo
    (see :mod:`bastion.models.external`).
    """
    if is_reference(path):
        return load_reference(path).to(device)
    if Path(path).is_dir() and (Path(path) / "config.json").is_file():
        raise ModelFileError(
            f"{path}: a transformer text model (Hugging Face directory), not an array model: "
            "load it with bastion.load_model (a text classifier), serve it with 'bastion serve'"
        )
    weights, _ = _paths(path)
    doc = read_sidecar(path)
    if not weights.is_file():
        raise ModelFileError(f"{weights}: model weights not found")
    try:
        spec = ModelSpec.from_dict(doc["spec"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: sidecar 'spec' is incomplete ({e})") from e
    try:
        model = build_model(spec)
    except (ConfigError, RuntimeError) as e:
        raise ModelFileError(f"{path}: sidecar 'spec' cannot be built ({e})") from e
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{weights}: not a safetensors file ({e})") from e
    mismatch = state_dict_mismatch(model.state_dict(), state)
    if mismatch:
        raise ModelFileError(
            f"{weights}: weights do not match the architecture in the sidecar: {mismatch}"
        )
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def load_any_model(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> BastionModel | TransformerTextClassifier:
    """``bastion.load_model``: any saved model, by what ``path`` holds.

    - A transformer directory (a Hugging Face ``config.json`` inside: one written by
      :func:`bastion.text.transformer.save_transformer_model`, or a team's own
      ``*ForSequenceClassification`` checkpoint) gives a
      :class:`~bastion.text.TransformerTextClassifier`: a function from a list of ``N`` raw
      strings to probabilities ``(N, num_classes)`` float32 (texts truncated at the model's
      ``max_length`` tokens), in eval mode on ``device``, without the text guard's sanitiser
      (``bastion serve`` puts that in front).
    - Anything else is an array model (:func:`load_model`): a module from a float32 batch in
      the data's natural range to logits ``(N, num_classes)``.

    Check which one came back with ``isinstance(m, torch.nn.Module)`` (array model) or
    ``isinstance(m, TransformerTextClassifier)``. Errors are :class:`ModelFileError` naming
    the path (or ``model`` for a transformer directory) and the problem.
    """
    if Path(path).is_dir() and (Path(path) / "config.json").is_file():
        from bastion.text.transformer import TransformerTextClassifier as Classifier
        from bastion.text.transformer import load_transformer_model

        loaded = load_transformer_model(path, device=device)
        return Classifier(loaded.model, loaded.tokenizer)
    return load_model(path, device=device)


def state_dict_mismatch(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]
) -> str | None:
    """One line naming the first missing key, unexpected key or shape difference between a
    module's ``expected`` state dict and ``given`` weights; ``None`` when they fit."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    problems = []
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        problems.append(f"missing key {missing[0]!r}{more}")
    if unexpected:
        more = f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else ""
        problems.append(f"unexpected key {unexpected[0]!r}{more}")
    for k, v in expected.items():
        if k in given and tuple(given[k].shape) != tuple(v.shape):
            problems.append(
                f"{k!r} has shape {tuple(given[k].shape)}, the module expects {tuple(v.shape)}"
            )
            break
    return "; ".join(problems) or None
