"""Attacks on a CUDA device: the same contract as on the CPU (skipped without a GPU).

Run on a GPU machine with ``pytest tests/attacks/test_cuda.py tests/corruptions``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bastion.attacks import build_attack, check_attack
from bastion.attacks.fast_grad import input_gradients_only
from bastion.errors import AttackInputError
from bastion.models.zoo import ModelSpec, build_model
from bastion.threat import ThreatModel

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

ATTACKS = [
    ("fgsm", {}),
    ("pgd", {"steps": 10}),
    ("pgd", {"steps": 10, "precision": "bf16"}),
    ("apgd", {"steps": 20}),
    ("apgd-t", {"steps": 20, "target_classes": 3}),
    ("fab-t", {"steps": 20, "target_classes": 3}),
    ("square", {"queries": 200}),
    ("cw-l2", {"steps": 50, "binary_search_steps": 2, "initial_const": 10.0}),
    ("deepfool", {}),
    ("cascade", {"preset": "quick"}),
]


def _trained(device: str = "cuda") -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small CNN fitted to a separable toy task (class = brightest quadrant) on ``device``."""
    torch.manual_seed(0)
    spec = ModelSpec("small-cnn", (1, 28, 28), 4, (0.5,), (0.5,))
    model = build_model(spec).to(device)
    x = torch.rand(512, 1, 28, 28, device=device) * 0.5
    y = torch.randint(0, 4, (512,), device=device)
    for i in range(4):
        r, c = divmod(i, 2)
        x[y == i, :, r * 14 : (r + 1) * 14, c * 14 : (c + 1) * 14] += 0.5
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(60):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval(), x[:64], y[:64]


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    return _trained()


@pytest.mark.parametrize(("name", "params"), ATTACKS)
def test_attack_contract_on_cuda(
    trained: tuple[nn.Module, torch.Tensor, torch.Tensor], name: str, params: dict[str, object]
) -> None:
    model, x, y = trained
    l2 = name in ("cw-l2", "deepfool")
    # moving a 14x14 quadrant by 0.25 takes an l2 norm of 3.5 per quadrant
    threat = ThreatModel(norm="l2", eps=10.0) if l2 else ThreatModel(norm="linf", eps=0.3)
    res = build_attack(name, params)(
        model, x, y, threat, generator=torch.Generator(device="cuda").manual_seed(0)
    )
    assert res.x_adv.is_cuda and res.success.is_cuda
    assert torch.isfinite(res.x_adv).all()
    assert (threat.distance(res.x_adv, x) <= threat.eps * (1 + 1e-5)).all()
    assert res.x_adv.min() >= 0.0 and res.x_adv.max() <= 1.0
    with torch.no_grad():
        fooled = model(res.x_adv).argmax(dim=1) != y
    assert torch.equal(fooled, res.success)
    assert res.success.any()  # the toy model is not robust at these budgets


def test_conformance_suite_on_cuda(trained: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, y = trained
    threat = ThreatModel(norm="linf", eps=0.3)
    passed = check_attack(lambda: build_attack("pgd", {"steps": 10}), model, x, y, threat)
    assert passed


def test_cpu_generator_with_cuda_inputs_is_a_clear_error(
    trained: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x, y = trained
    with pytest.raises(AttackInputError, match="generator: expected one on the inputs' device"):
        build_attack("pgd", {"steps": 2})(
            model, x, y, ThreatModel(norm="linf", eps=0.1), generator=torch.Generator()
        )


def test_convolutions_are_left_alone_on_cuda(
    trained: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x, _ = trained
    xg = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(model(xg).logsumexp(dim=1).sum(), xg)
    with input_gradients_only(model):
        out = model(xg)
        (patched,) = torch.autograd.grad(out.logsumexp(dim=1).sum(), xg)
    torch.testing.assert_close(patched, plain)
