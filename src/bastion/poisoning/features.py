"""Latent representations a data scan looks at: the input of a classifier's last linear layer.

Activation clustering and spectral signatures both read the "penultimate layer" of a network
trained on the suspect data; for every model of the zoo that is the input of the final
``nn.Linear``, which :func:`penultimate_features` captures with a forward hook.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bastion.errors import ModelFileError


def last_linear(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` module of ``model`` in registration order (the logit layer)."""
    found: nn.Linear | None = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            found = module
    if found is None:
        raise ModelFileError("model: expected a final nn.Linear layer to read features from")
    return found


def penultimate_features(model: nn.Module, x: Tensor, *, batch_size: int = 1024) -> Tensor:
    """float32 ``(N, D)``: the input of ``model``'s last linear layer for each row of ``x``
    (``(N, *input_shape)``), computed in eval mode without gradients."""
    layer = last_linear(model)
    captured: list[Tensor] = []

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        captured.append(inputs[0].detach().flatten(1).float().cpu())

    handle = layer.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                model(x[i : i + batch_size])
    finally:
        handle.remove()
        model.train(was_training)
    if not captured:
        return torch.zeros(0, layer.in_features)
    return torch.cat(captured)


def predict_proba(model: nn.Module, x: Tensor, *, batch_size: int = 1024) -> Tensor:
    """Softmax probabilities ``(N, K)`` of ``model`` on ``x``, in eval mode, no gradients."""
    was_training = model.training
    model.eval()
    out: list[Tensor] = []
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                out.append(torch.softmax(model(x[i : i + batch_size]).float(), dim=1))
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)
