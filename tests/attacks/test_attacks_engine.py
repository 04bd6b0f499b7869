"""The shared gradient loop: losses, input gradients and ``gradient_attack``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from attack_toy import Toy
from torch import Tensor, nn

from bastion.attacks import (
    LOSSES,
    ce_loss,
    cw_margin_loss,
    gradient_attack,
    input_gradient,
    predict,
)
from bastion.threat import ThreatModel

LINF = ThreatModel("linf", 0.1)


def test_losses_registry() -> None:
    assert set(LOSSES) == {"ce", "cw"}
    assert LOSSES["ce"] is ce_loss and LOSSES["cw"] is cw_margin_loss


def test_ce_loss_is_per_example_cross_entropy() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, 2])
    out = ce_loss(logits, y)
    assert out.shape == (2,)
    torch.testing.assert_close(out, F.cross_entropy(logits, y, reduction="none"))
    assert float(out[1]) == pytest.approx(torch.log(torch.tensor(3.0)).item())


def test_cw_margin_is_best_other_minus_true() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0], [1.0, 1.0, 1.0]])
    y = torch.tensor([0, 0, 2])
    assert cw_margin_loss(logits, y).tolist() == pytest.approx([-1.5, 3.0, 0.0])


def test_cw_margin_positive_iff_misclassified() -> None:
    logits = torch.randn(100, 5, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 5, (100,), generator=torch.Generator().manual_seed(1))
    m = cw_margin_loss(logits, y)
    assert torch.equal(m > 0, logits.argmax(dim=1) != y)


def test_input_gradient_matches_autograd_and_spares_parameters(toy: Toy) -> None:
    x, y = toy.x[:20], toy.y[:20]
    grad, logits = input_gradient(toy.model, x, y)
    xr = x.clone().requires_grad_(True)
    F.cross_entropy(toy.model(xr), y, reduction="sum").backward()
    toy.model.zero_grad(set_to_none=True)
    assert xr.grad is not None
    torch.testing.assert_close(grad, xr.grad)
    torch.testing.assert_close(logits, toy.model(x).detach())
    assert not logits.requires_grad and not grad.requires_grad
    assert all(p.grad is None for p in toy.model.parameters())


def test_input_gradient_targeted_descends_towards_the_target(toy: Toy) -> None:
    x, y = toy.x[:20], toy.y[:20]
    t = (y + 1) % 3
    g_t, _ = input_gradient(toy.model, x, y, targets=t)
    g_ce, _ = input_gradient(toy.model, x, t)
    torch.testing.assert_close(g_t, -g_ce)  # maximise minus the loss towards the target
    g_cw, _ = input_gradient(toy.model, x, y, loss=cw_margin_loss)
    xr = x.clone().requires_grad_(True)
    cw_margin_loss(toy.model(xr), y).sum().backward()
    toy.model.zero_grad(set_to_none=True)
    assert xr.grad is not None
    torch.testing.assert_close(g_cw, xr.grad)


def test_input_gradient_works_under_no_grad(toy: Toy) -> None:
    with torch.no_grad():
        grad, _ = input_gradient(toy.model, toy.x[:4], toy.y[:4])
    assert float(grad.abs().sum()) > 0


def test_gradient_attack_climbs_the_loss(toy: Toy) -> None:
    x, y = toy.x, toy.y
    x_adv, queries = gradient_attack(
        toy.model, x, y, LINF, steps=10, step_size=0.025, random_start=False, early_stop=False
    )
    with torch.no_grad():
        before = ce_loss(toy.model(x), y)
        after = ce_loss(toy.model(x_adv), y)
    assert float(after.mean()) > float(before.mean())
    assert float((after >= before - 1e-4).float().mean()) > 0.95
    assert queries.tolist() == [10] * len(x)
    assert bool((LINF.distance(x_adv, x) <= 0.1 + 1e-6).all())


def test_gradient_attack_zero_steps_is_the_start(toy: Toy) -> None:
    x_adv, _ = gradient_attack(
        toy.model, toy.x, toy.y, LINF, steps=0, step_size=0.1, random_start=False, early_stop=False
    )
    assert torch.equal(x_adv, toy.x)
    x_rs, _ = gradient_attack(
        toy.model,
        toy.x,
        toy.y,
        LINF,
        steps=0,
        step_size=0.1,
        random_start=True,
        early_stop=False,
        generator=torch.Generator().manual_seed(0),
    )
    expected = LINF.random_init(toy.x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x_rs, expected)


def test_init_scale_shrinks_the_random_start(toy: Toy) -> None:
    x_adv, _ = gradient_attack(
        toy.model,
        toy.x,
        toy.y,
        LINF,
        steps=0,
        step_size=0.1,
        random_start=True,
        early_stop=False,
        init_scale=0.5,
        generator=torch.Generator().manual_seed(0),
    )
    d = LINF.distance(x_adv, toy.x)
    assert float(d.max()) <= 0.05 + 1e-6 and float(d.max()) > 0.04


def test_gradient_attack_early_stop_result_fools_the_model(toy: Toy) -> None:
    x_adv, queries = gradient_attack(
        toy.model,
        toy.x,
        toy.y,
        LINF,
        steps=10,
        step_size=0.025,
        random_start=True,
        early_stop=True,
        generator=torch.Generator().manual_seed(0),
    )
    fooled = predict(toy.model, x_adv) != toy.y
    assert float(fooled.float().mean()) > 0.3
    assert int(queries.min()) == 1  # misclassified clean examples cost only the first check
    assert int(queries.max()) == 12


def test_gradient_attack_leaves_train_mode_alone() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))
    model.train()
    x = torch.rand(6, 4)
    y = torch.zeros(6, dtype=torch.int64)
    x_adv, _ = gradient_attack(
        model,
        x,
        y,
        LINF,
        steps=3,
        step_size=0.05,
        random_start=True,
        early_stop=False,
        generator=torch.Generator().manual_seed(0),
    )
    assert model.training
    assert bool((LINF.distance(x_adv, x) <= 0.1 + 1e-6).all())
    assert all(p.grad is None for p in model.parameters())


class _Linear2(nn.Module):
    """logits = (w.x, -w.x): class 0 iff w.x > 0; the loss gradient is known in closed form."""

    def __init__(self, w: Tensor):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x: Tensor) -> Tensor:
        s = x.flatten(1) @ self.w
        return torch.stack([s, -s], dim=1)


def test_linf_pgd_on_a_linear_model_reaches_the_optimal_corner() -> None:
    w = torch.tensor([1.0, -2.0, 0.5, 0.0])
    model = _Linear2(w)
    x = torch.full((1, 4), 0.5)
    y = torch.tensor([1])  # w.x = -0.25 < 0: class 1
    threat = ThreatModel("linf", 0.2)
    x_adv, _ = gradient_attack(
        model, x, y, threat, steps=20, step_size=0.05, random_start=False, early_stop=False
    )
    # the loss of class 1 grows with w.x: the best linf point is x + eps * sign(w)
    expected = x + 0.2 * torch.sign(w)
    torch.testing.assert_close(x_adv, expected)


def test_l2_pgd_on_a_linear_model_moves_along_w() -> None:
    w = torch.tensor([3.0, 0.0, -4.0])
    model = _Linear2(w)
    x = torch.full((1, 3), 0.5)
    y = torch.tensor([1])
    threat = ThreatModel("l2", 0.3)
    x_adv, _ = gradient_attack(
        model, x, y, threat, steps=10, step_size=0.1, random_start=False, early_stop=False
    )
    torch.testing.assert_close(x_adv, x + 0.3 * w / w.norm())
