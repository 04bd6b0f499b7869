"""Faster input gradients through strided convolutions with few input channels.

The input gradient of a convolution is a transposed convolution. For a strided convolution
with one or a few input channels (the first layer of an MNIST or CIFAR network) oneDNN's CPU
kernel for it is slow: on the first layer of the benchmarks' small MNIST CNN it costs about 15x
the layer's forward pass, close to half of a whole forward-backward pass in bfloat16.

With few input channels the same gradient is cheap in its textbook form, col2im (Chellapilla,
Puri and Simard 2006, "High performance convolutional neural networks for document
processing"): one matrix product of the transposed weight ``(C_in*K*K, C_out)`` with the output
gradient gives every kernel tap's contribution, and ``K*K`` strided additions put them in place.
On that layer this is 3-5x faster than oneDNN's kernel (1.4-1.8 ms instead of 5.5-7.5 ms for
500 images, float32 or bfloat16 gradients); with 16 input channels it is not faster, so only
layers with at most :data:`MAX_IN_CHANNELS` input channels use it.

:func:`input_gradients_only` installs it, for the duration of a ``with`` block, on every
``nn.Conv2d`` of a model that qualifies (stride > 1 and equal in both directions, no dilation,
one group, zero padding, at most :data:`MAX_IN_CHANNELS` input channels). Inside the block the
convolutions' weights are treated as constants, which is what the attack engine needs: it
differentiates with respect to the input only. The forward pass is unchanged (the same
``F.conv2d`` call, under the same autocast); the gradient equals the transposed convolution up
to floating-point rounding (it is summed in float32 even under bfloat16 autocast).
:func:`set_fast_input_gradients` turns the substitution off process-wide. Only CPU tensors take
these routes (they were measured on oneDNN); on a GPU the layers run as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_IN_CHANNELS = 4
_state = {"enabled": True}
_active: set[int] = set()  # ids of the models inside an input_gradients_only block


def set_fast_input_gradients(enabled: bool) -> None:
    """Turn the faster convolution input gradients on or off for every later attack (default
    on)."""
    _state["enabled"] = bool(enabled)


def fast_input_gradients_enabled() -> bool:
    """Whether :func:`input_gradients_only` substitutes convolution gradients."""
    return _state["enabled"]


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv2d_input_grad(
    grad_out: Tensor,
    weight: Tensor,
    input_hw: tuple[int, int],
    stride: int,
    padding: tuple[int, int],
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Gradient of ``F.conv2d(x, weight, stride=stride, padding=padding)`` with respect to
    ``x`` ``(N, C_in, H, W)``, given ``grad_out`` ``(N, C_out, H_out, W_out)`` and ``weight``
    ``(C_out, C_in, K_h, K_w)``: one batched matrix product gives every kernel tap's
    contribution ``(N, C_in, K_h, K_w, H_out, W_out)``, and ``K_h * K_w`` strided additions
    put them in place (col2im). Computed and returned in ``dtype``."""
    c_out, c_in, k_h, k_w = weight.shape
    n, _, h_out, w_out = grad_out.shape
    h, w = input_hw
    p_h, p_w = padding
    s = stride
    with torch.autocast(grad_out.device.type, enabled=False):  # keep the dtypes under autocast
        # the product in the gradient's own dtype (bfloat16 matmuls accumulate in float32),
        # the additions in ``dtype``
        taps = (
            torch.matmul(
                weight.to(grad_out.dtype).reshape(c_out, c_in * k_h * k_w).t(),
                grad_out.reshape(n, c_out, h_out * w_out),
            )
            .to(dtype)
            .reshape(n, c_in, k_h, k_w, h_out, w_out)
        )
    # the padded input, large enough for every tap's strided window
    grad = taps.new_zeros(
        n, c_in, max(h + 2 * p_h, k_h + s * (h_out - 1)), max(w + 2 * p_w, k_w + s * (w_out - 1))
    )
    for k in range(k_h):
        rows = slice(k, k + s * (h_out - 1) + 1, s)
        for j in range(k_w):
            grad[:, :, rows, j : j + s * (w_out - 1) + 1 : s] += taps[:, :, k, j]
    return grad[:, :, p_h : p_h + h, p_w : p_w + w]


class _InputGradConv2d(torch.autograd.Function):
    """``F.conv2d`` whose backward returns the input gradient only (see the module docstring);
    the weight and bias get none."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
        groups: int,
    ) -> Tensor:
        ctx.save_for_backward(weight)
        ctx.geometry = (tuple(x.shape), stride, padding, dilation, groups, x.dtype)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        (weight,) = ctx.saved_tensors
        shape, stride, padding, dilation, groups, dtype = ctx.geometry
        if not ctx.needs_input_grad[0]:
            return (None,) * 7
        if _col2im_applies(weight.shape[1], stride, dilation, groups):
            # float32 at least: elementwise bfloat16 arithmetic is slow on CPUs and less exact
            work = torch.promote_types(dtype, torch.float32)
            grad = conv2d_input_grad(grad_out, weight, shape[-2:], stride[0], padding, work)
        else:
            # oneDNN's backward-data kernel is faster in channels-last layout in float32
            layout = torch.channels_last if grad_out.dtype == torch.float32 else None
            grad = torch.ops.aten.convolution_backward(
                grad_out.contiguous(memory_format=layout or torch.contiguous_format),
                grad_out.new_empty(1).expand(shape),  # only its shape is read
                weight.to(grad_out.dtype).contiguous(
                    memory_format=layout or torch.contiguous_format
                ),
                None,
                list(stride),
                list(padding),
                list(dilation),
                False,
                [0, 0],
                groups,
                [True, False, False],
            )[0]
        return grad.to(dtype), None, None, None, None, None, None


def _col2im_applies(
    in_channels: int, stride: tuple[int, int], dilation: tuple[int, int], groups: int
) -> bool:
    return (
        in_channels <= MAX_IN_CHANNELS
        and stride[0] == stride[1] > 1
        and dilation == (1, 1)
        and groups == 1
    )


def _qualifies(m: nn.Module) -> bool:
    return (
        type(m) is nn.Conv2d
        and "forward" not in m.__dict__
        and m.padding_mode == "zeros"
        and not isinstance(m.padding, str)
    )


def _fast_forward(m: nn.Conv2d) -> Any:
    stride, padding, dilation = _pair(m.stride), _pair(m.padding), _pair(m.dilation)  # type: ignore[arg-type]

    def forward(x: Tensor) -> Tensor:
        if not torch.is_grad_enabled() or x.dim() != 4:
            plain: Tensor = m._conv_forward(x, m.weight, m.bias)
            return plain
        weight = m.weight.detach()
        bias = m.bias.detach() if m.bias is not None else None
        out: Tensor = _InputGradConv2d.apply(  # type: ignore[no-untyped-call]
            x, weight, bias, stride, padding, dilation, m.groups
        )
        return out

    return forward


@contextmanager
def input_gradients_only(model: nn.Module) -> Iterator[None]:
    """Within the block, the ``nn.Conv2d`` layers of ``model`` (zero padding given as numbers)
    back-propagate to their input only, by col2im or in channels-last layout, and give their
    weights no gradient (see the module docstring). Restores the layers on exit, also on an
    exception. Nested use is harmless: an already patched layer is skipped."""
    if id(model) in _active:  # an enclosing block already patched this model
        yield
        return
    patched: list[nn.Module] = []
    first = next(model.parameters(), None)
    if _state["enabled"] and (first is None or first.device.type == "cpu"):
        for m in model.modules():
            if _qualifies(m):
                m.forward = _fast_forward(m)  # type: ignore[arg-type]
                patched.append(m)
    _active.add(id(model))
    try:
        yield
    finally:
        _active.discard(id(model))
        for m in patched:
            del m.forward
