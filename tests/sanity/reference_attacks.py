"""Reference adaptive attacks, written independently of bastion's attacks and escalation: plain
PGD loops in torch (Madry et al. 2018) with the adaptive ingredient each planted defence needs,
straight-through gradients for a known non-differentiable step (BPDA, Athalye et al. 2018), the
margin loss for saturated logits (Carlini & Wagner 2017), and gradients averaged over draws for
randomness (EOT). The escalated figures are held to these."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Logits = Callable[[Tensor], Tensor]


def margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    """``max_{j != y} z_j - z_y`` per example (positive once misclassified)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other[torch.arange(len(y)), y] = -torch.inf
    return other.amax(1) - true


def pgd_reference(
    grad_logits: Logits,
    model: Logits,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    steps: int = 100,
    restarts: int = 3,
    seed: int = 0,
) -> Tensor:
    """``(N,)`` bool robust mask at linf ``eps``: an example is broken when any iterate of any
    restart fools ``model``; gradients are taken through ``grad_logits`` (the same outputs as
    ``model`` with an adaptive backward pass). Step ``eps / 8``, restart 0 from the clean point,
    the others from uniform random points; margin loss, then cross-entropy on odd restarts."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        robust = model(x).argmax(1) == y
    for r in range(restarts):
        idx = robust.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        x0, y0 = x[idx], y[idx]
        noise = (torch.rand(x0.shape, generator=gen) * 2 - 1) * eps
        xa = x0.clone() if r == 0 else (x0 + noise).clamp(0, 1)
        broken = torch.zeros(len(idx), dtype=torch.bool)
        for _ in range(steps):
            xg = xa.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = grad_logits(xg)
                if r % 2 == 0:
                    loss = margin_loss(logits, y0)
                else:
                    loss = torch.nn.functional.cross_entropy(logits, y0, reduction="none")
                (g,) = torch.autograd.grad(loss.sum(), xg)
            xa = torch.min(torch.max(xa + eps / 8 * g.sign(), x0 - eps), x0 + eps).clamp(0, 1)
            with torch.no_grad():
                broken |= model(xa).argmax(1) != y0
        robust[idx[broken]] = False
    return robust


def eot_reference(
    model: Logits, x: Tensor, y: Tensor, eps: float, *, samples: int, steps: int, draws: int
) -> tuple[float, float]:
    """EOT-PGD on a randomised ``model`` (gradient of the mean cross-entropy over ``samples``
    draws, step ``eps / 8``, from the clean point), then ``(mean, std)`` over ``draws`` draws of
    the accuracy on the final points, as fractions of all examples."""
    xa = x.clone()
    for _ in range(steps):
        xg = xa.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = sum(
                torch.nn.functional.cross_entropy(model(xg), y, reduction="sum")
                for _ in range(samples)
            )
            (g,) = torch.autograd.grad(loss, xg)  # type: ignore[arg-type]
        xa = torch.min(torch.max(xa + eps / 8 * g.sign(), x - eps), x + eps).clamp(0, 1)
    with torch.no_grad():
        accs = torch.tensor(
            [float((model(xa).argmax(1) == y).float().mean()) for _ in range(draws)]
        )
    return float(accs.mean()), float(accs.std())
