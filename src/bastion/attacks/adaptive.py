"""Tools for adaptive attacks on defences that break gradients (Athalye, Carlini and Wagner
2018, "Obfuscated gradients give a false sense of security").

* :class:`BPDAWrapper` (Backward Pass Differentiable Approximation): a model whose forward pass
  applies a non-differentiable preprocessing ``g`` (quantisation, JPEG, denoising) exactly, while
  its backward pass differentiates a smooth approximation ``h`` of ``g`` instead (by default
  the identity, ``h(x) = x``, right for any ``g(x) ~ x``). Any gradient attack run on the wrapper
  attacks the real defended model, since the wrapper computes the same outputs.
* :class:`EOTModel` (Expectation over Transformation): a model whose logits are averaged over
  ``samples`` random transformations, so that the gradient a white-box attack sees estimates
  the gradient of the expected logits of a randomised defence, not of one random draw.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

from bastion.attacks.settings import AttackSettings, check_settings
from bastion.errors import ConfigError

Transform = Callable[[Tensor], Tensor]


def _identity(x: Tensor) -> Tensor:
    return x


class _BPDA(torch.autograd.Function):
    """``forward_fn(x)`` forward; the vector-Jacobian product of ``backward_fn`` at ``x`` back."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, forward_fn: Transform, backward_fn: Transform) -> Tensor:
        ctx.save_for_backward(x)
        ctx.backward_fn = backward_fn
        with torch.no_grad():
            out = forward_fn(x)
        if out.shape != x.shape:
            raise ConfigError(
                f"bpda.forward_fn: expected a shape-preserving map of {tuple(x.shape)}, "
                f"got {tuple(out.shape)}"
            )
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, None, None]:
        (x,) = ctx.saved_tensors
        if ctx.backward_fn is _identity:
            return grad_out, None, None
        with torch.enable_grad():
            xd = x.detach().requires_grad_(True)
            approx = ctx.backward_fn(xd)
            (grad_in,) = torch.autograd.grad(approx, xd, grad_out)
        return grad_in, None, None


class BPDAWrapper(nn.Module):
    """``module(forward_fn(x))`` with gradients through ``backward_fn`` instead of
    ``forward_fn`` (Athalye et al. 2018, BPDA).

    Args:
        module: the classifier behind the preprocessing.
        forward_fn: the (possibly non-differentiable) preprocessing, shape-preserving.
        backward_fn: a differentiable approximation of ``forward_fn`` used for gradients
            (default: the identity, the usual choice for quantisation and denoisers).

    Inputs ``(N, *input_shape)``, logits ``(N, C)``: exactly those of ``module(forward_fn(x))``.
    """

    def __init__(
        self, module: nn.Module, forward_fn: Transform, backward_fn: Transform = _identity
    ):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise ConfigError(f"bpda.module: expected an nn.Module, got {type(module).__name__}")
        if not callable(forward_fn) or not callable(backward_fn):
            raise ConfigError("bpda.forward_fn, bpda.backward_fn: expected callables on tensors")
        self.module = module
        self.forward_fn = forward_fn
        self.backward_fn = backward_fn

    def forward(self, x: Tensor) -> Tensor:
        pre = _BPDA.apply(x, self.forward_fn, self.backward_fn)  # type: ignore[no-untyped-call]
        out: Tensor = self.module(pre)
        return out


class EOTSettings(AttackSettings):
    """Settings of :class:`EOTModel` beyond its model and transform."""

    samples: int = Field(default=8, ge=1, description="draws averaged per forward pass")


class EOTModel(nn.Module):
    """Logits averaged over random transformations (Athalye et al. 2018, EOT).

    Args:
        model: the classifier (possibly randomised itself, e.g. noise inside its forward).
        transform: a random, differentiable map applied before ``model`` at each sample, or
            None when the randomness is inside ``model``.
        samples: how many draws to average (each one forward pass of ``model``).

    ``forward(x)`` with ``x`` ``(N, *input_shape)`` returns ``(1/S) sum_s model(t_s(x))``,
    ``(N, C)``: an unbiased estimate of the expected logits whose gradient has ``1/S`` the
    variance of a single draw's. The randomness is whatever ``transform`` and ``model`` use.
    """

    def __init__(self, model: nn.Module, transform: Transform | None = None, samples: int = 8):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ConfigError(f"eot.model: expected an nn.Module, got {type(model).__name__}")
        if transform is not None and not callable(transform):
            raise ConfigError(
                f"eot.transform: expected a callable or None, got {type(transform).__name__}"
            )
        self.model = model
        self.transform = transform
        self.samples = check_settings(EOTSettings, {"samples": samples}, where="eot").samples

    def forward(self, x: Tensor) -> Tensor:
        total: Tensor = self.model(self._draw(x))
        for _ in range(self.samples - 1):
            total = total + self.model(self._draw(x))
        return total / self.samples

    def _draw(self, x: Tensor) -> Tensor:
        return self.transform(x) if self.transform is not None else x
