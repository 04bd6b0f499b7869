"""BPDA and EOT: adaptive attacks through gradient masking and randomness (Athalye et al. 2018)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from whitebox_digits import Digits

from bastion.attacks import PGD, input_gradient, predict
from bastion.attacks.adaptive import BPDAWrapper, EOTModel
from bastion.errors import ConfigError
from bastion.threat import ThreatModel


def quantise(x: Tensor) -> Tensor:
    """Round to 5 grey levels: a zero-gradient 'defence'."""
    return torch.round(x * 4) / 4


class Quantised(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(quantise(x))  # type: ignore[no-any-return]


class Noisy(nn.Module):
    """A randomised 'defence': Gaussian noise on the input, from the module's own generator."""

    def __init__(self, model: nn.Module, sigma: float, seed: int):
        super().__init__()
        self.model, self.sigma = model, sigma
        self.gen = torch.Generator().manual_seed(seed)

    def forward(self, x: Tensor) -> Tensor:
        noise = torch.randn(x.shape, generator=self.gen, dtype=x.dtype)
        return self.model(x + self.sigma * noise)  # type: ignore[no-any-return]


def test_bpda_breaks_a_quantised_model_that_plain_pgd_cannot(digits: Digits) -> None:
    defended = Quantised(digits.model).eval()
    x, y = digits.x, digits.y
    threat = ThreatModel("linf", 0.15)
    gen = torch.Generator
    clean_err = float((predict(defended, x) != y).float().mean())
    plain = PGD(steps=20)(defended, x, y, threat, generator=gen().manual_seed(0))
    grad, _ = input_gradient(defended, x, y)
    assert float(grad.abs().max()) == 0.0  # rounding has zero gradient: PGD is blind
    assert plain.success_rate <= clean_err + 0.05  # measured: no better than the clean error
    wrapped = BPDAWrapper(digits.model, quantise).eval()
    bpda = PGD(steps=20)(wrapped, x, y, threat, generator=gen().manual_seed(0))
    assert bpda.success_rate >= 0.9  # measured 1.0
    fooled = predict(defended, bpda.x_adv) != y  # judged by the real defended model
    assert torch.equal(fooled, bpda.success)


def test_bpda_forward_is_exact_and_backward_uses_the_approximation(digits: Digits) -> None:
    x = digits.x[:6]
    wrapped = BPDAWrapper(digits.model, quantise)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), digits.model(quantise(x)))
    xg = x.clone().requires_grad_(True)
    (g_id,) = torch.autograd.grad(wrapped(xg)[:, 0].sum(), xg)
    xq = quantise(x).requires_grad_(True)
    (g_ref,) = torch.autograd.grad(digits.model(xq)[:, 0].sum(), xq)
    torch.testing.assert_close(
        g_id, g_ref
    )  # identity backward: the gradient at g(x), passed through
    doubled = BPDAWrapper(digits.model, quantise, backward_fn=lambda v: 2 * v)
    (g_2,) = torch.autograd.grad(doubled(xg)[:, 0].sum(), xg)
    torch.testing.assert_close(g_2, 2 * g_ref)
    assert all(p.grad is None for p in digits.model.parameters())


def test_bpda_rejects_bad_arguments(digits: Digits) -> None:
    with pytest.raises(ConfigError, match=r"^bpda\.module: expected an nn\.Module"):
        BPDAWrapper("model", quantise)  # type: ignore[arg-type]
    shrink = BPDAWrapper(digits.model, lambda v: v[:, :, :4])
    with pytest.raises(ConfigError, match=r"^bpda\.forward_fn: expected a shape-preserving map"):
        shrink(digits.x[:2])


def _grad_spread(model: nn.Module, x: Tensor, y: Tensor, repeats: int) -> float:
    """Mean per-coordinate variance of the input gradient over repeated draws."""
    grads = torch.stack([input_gradient(model, x, y)[0] for _ in range(repeats)])
    return float(grads.var(dim=0).mean())


def test_eot_reduces_gradient_variance_on_a_randomised_model(digits: Digits) -> None:
    x, y = digits.x[:32], digits.y[:32]
    single = _grad_spread(Noisy(digits.model, 0.3, seed=0), x, y, repeats=12)
    eot = _grad_spread(EOTModel(Noisy(digits.model, 0.3, seed=0), samples=16), x, y, repeats=12)
    assert eot < single / 6  # an average of 16 draws: about 1/16 of the variance


def test_eot_averages_logits_over_the_transform(digits: Digits) -> None:
    x = digits.x[:5]
    calls: list[int] = []

    def shift(v: Tensor) -> Tensor:
        calls.append(1)
        return (v + 0.1 * len(calls)).clamp(0, 1)

    eot = EOTModel(digits.model, transform=shift, samples=3)
    with torch.no_grad():
        out = eot(x)
        ref = sum(digits.model((x + 0.1 * k).clamp(0, 1)) for k in (1, 2, 3)) / 3
    assert len(calls) == 3
    torch.testing.assert_close(out, ref)
    with torch.no_grad():
        torch.testing.assert_close(EOTModel(digits.model, samples=4)(x), digits.model(x))
    with pytest.raises(ConfigError, match=r"^eot\.samples: expected an integer >= 1, got 0$"):
        EOTModel(digits.model, samples=0)
    with pytest.raises(ConfigError, match=r"^eot\.transform: expected a callable or None"):
        EOTModel(digits.model, transform=3)  # type: ignore[arg-type]
