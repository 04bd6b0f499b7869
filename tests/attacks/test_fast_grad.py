"""The attack engine's convolution input gradients (col2im and channels-last) equal autograd's."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bastion.attacks import PGD
from bastion.attacks.fast_grad import (
    conv2d_input_grad,
    fast_input_gradients_enabled,
    input_gradients_only,
    set_fast_input_gradients,
)
from bastion.threat import ThreatModel

CONFIGS = [
    c
    for c in itertools.product(
        (1, 3),  # in channels
        (2, 5),  # out channels
        (1, 2, 3, 4, 5),  # kernel
        (2, 3),  # stride
        (0, 1, 2),  # padding
        (9, 10, 28),  # height
        (7, 12),  # width
    )
    if c[4] <= c[2] and c[5] + 2 * c[4] >= c[2] and c[6] + 2 * c[4] >= c[2]
]


@pytest.mark.parametrize("cin,cout,k,s,p,h,w", CONFIGS[::7])
def test_col2im_gradient_equals_autograd(
    cin: int, cout: int, k: int, s: int, p: int, h: int, w: int
) -> None:
    g = torch.Generator().manual_seed(k * 100 + s * 10 + p)
    x = torch.randn(3, cin, h, w, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(cout, cin, k, k, dtype=torch.float64, generator=g)
    out = F.conv2d(x, weight, stride=s, padding=p)
    grad_out = torch.randn(out.shape, dtype=torch.float64, generator=g)
    (expected,) = torch.autograd.grad(out, x, grad_out)
    got = conv2d_input_grad(grad_out, weight, (h, w), s, (p, p), torch.float64)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 4, stride=2, padding=1),  # col2im
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, padding=1),  # channels-last backward
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2),  # grouped, dilated
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding="same"),  # string padding: left alone
        nn.Flatten(),
        nn.Linear(8 * 7 * 7, 10),
    )


def _grad(model: nn.Module, x: torch.Tensor, fast: bool) -> torch.Tensor:
    xg = x.clone().requires_grad_(True)
    if fast:
        with input_gradients_only(model):
            loss = model(xg).logsumexp(dim=1).sum()
            (g,) = torch.autograd.grad(loss, xg)
    else:
        loss = model(xg).logsumexp(dim=1).sum()
        (g,) = torch.autograd.grad(loss, xg)
    return g


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_model_gradient_unchanged(dtype: torch.dtype) -> None:
    model = _net().to(dtype)
    x = torch.rand(5, 1, 28, 28, dtype=dtype, generator=torch.Generator().manual_seed(1))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(_grad(model, x, True), _grad(model, x, False), rtol=tol, atol=tol)


def test_forward_outputs_identical_and_weights_untouched() -> None:
    model = _net()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain = model(x)
    with input_gradients_only(model):
        patched = model(x.requires_grad_(True))
        patched.sum().backward()
    assert torch.equal(patched.detach(), plain)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.weight.grad is None for m in convs[:3])  # constants inside the block
    assert convs[3].weight.grad is not None  # the string-padded layer is not patched


def test_bf16_autocast_gradient_close_and_float32() -> None:
    model = _net()
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    reference = _grad(model, x, False)
    xg = x.clone().requires_grad_(True)
    with input_gradients_only(model), torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(xg).float().logsumexp(dim=1).sum()
        (g,) = torch.autograd.grad(loss, xg)
    assert g.dtype == torch.float32
    cosine = F.cosine_similarity(g.flatten(), reference.flatten(), dim=0)
    assert cosine > 0.99


def test_restored_on_exit_and_on_error_and_nested() -> None:
    model = _net()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    with input_gradients_only(model):
        assert all("forward" in m.__dict__ for m in convs[:3])
        assert "forward" not in convs[3].__dict__
        with input_gradients_only(model):  # nested: nothing patched twice
            pass
        assert all("forward" in m.__dict__ for m in convs[:3])
    assert all("forward" not in m.__dict__ for m in convs)
    with pytest.raises(RuntimeError, match="boom"), input_gradients_only(model):
        raise RuntimeError("boom")
    assert all("forward" not in m.__dict__ for m in convs)


def test_switch_off_leaves_layers_alone() -> None:
    model = _net()
    assert fast_input_gradients_enabled()
    set_fast_input_gradients(False)
    try:
        with input_gradients_only(model):
            assert all("forward" not in m.__dict__ for m in model.modules())
    finally:
        set_fast_input_gradients(True)


def test_unbatched_input_takes_the_plain_path() -> None:
    conv = nn.Conv2d(1, 3, 4, stride=2, padding=1)
    x = torch.rand(1, 12, 12, requires_grad=True)
    with input_gradients_only(conv):
        out = conv(x)
        out.sum().backward()
    assert out.shape == (3, 6, 6)
    assert conv.weight.grad is not None  # the ordinary convolution, weights and all


def test_pgd_result_same_with_and_without() -> None:
    model = _net().eval()
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    threat = ThreatModel(norm="linf", eps=0.1)
    attack = PGD(steps=5, random_start=False, early_stop=False)
    fast = attack(model, x, y, threat)
    set_fast_input_gradients(False)
    try:
        plain = attack(model, x, y, threat)
    finally:
        set_fast_input_gradients(True)
    # identical up to sign flips of gradient entries within float rounding of zero
    assert (fast.x_adv - plain.x_adv).abs().gt(1e-6).float().mean() < 0.01
