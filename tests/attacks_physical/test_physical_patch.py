"""Adversarial patches (Brown et al. 2017) on a small global-pooling CNN that reads 8x8 digits
placed at random on a 16x16 canvas (90.8% clean test accuracy).

Measured while writing these tests (seeded, so they repeat): a 5x5 targeted patch (30% of the
side, 10% of the area) fitted for 8 epochs on 640 training images, pasted at random positions on
the 326 correctly classified held-out images, reaches its target on 28-60% of them depending on
the class (54% for class 7), against 0-10% for a random patch. On frames the digit fills (8x8
digits upsampled to 16x16), the same patch size reached the target on under 10% of images for
the MLP, the small CNN, LeNet and this CNN alike (and a per-image patch on about a third): the
strokes left visible outvote the patch. So the tests use the canvas, Brown et al.'s setting of
an object that does not fill the frame.
"""

from __future__ import annotations

import math

import pytest
import torch
from physical_digits import Split

from bastion.attacks.base import predict
from bastion.attacks.patch import (
    AdversarialPatch,
    PatchAttack,
    PatchResult,
    apply_patch,
    paste,
    paste_affine,
    patch_covering_eps,
    patch_side,
    patch_success_rate,
)
from bastion.errors import AttackInputError, ConfigError
from bastion.threat import ThreatModel

TARGET = 7


@pytest.fixture(scope="module")
def targeted(canvas: Split) -> PatchResult:
    return AdversarialPatch(size=0.3, epochs=8).fit(
        canvas.model,
        canvas.x_train[:640],
        canvas.y_train[:640],
        target=TARGET,
        generator=torch.Generator().manual_seed(0),
    )


def test_targeted_patch_takes_heldout_images_to_the_target(
    canvas: Split, targeted: PatchResult
) -> None:
    assert targeted.patch.shape == (1, 5, 5)
    assert targeted.target == TARGET
    held = patch_success_rate(
        canvas.model,
        canvas.x,
        canvas.y,
        targeted.patch,
        target=TARGET,
        generator=torch.Generator().manual_seed(1),
    )
    noise = [
        patch_success_rate(
            canvas.model,
            canvas.x,
            canvas.y,
            torch.rand((1, 5, 5), generator=torch.Generator().manual_seed(s)),
            target=TARGET,
            generator=torch.Generator().manual_seed(1),
        )
        for s in range(3)
    ]
    # measured: 0.54 held out vs at most 0.01 for random patches of the same size
    assert held >= 0.35, held
    assert held >= max(noise) + 0.3, (held, noise)
    assert targeted.success_rate >= 0.35
    assert len(targeted.history) == 8


def test_patch_pixels_stay_in_bounds(canvas: Split, targeted: PatchResult) -> None:
    assert float(targeted.patch.min()) >= 0.0 and float(targeted.patch.max()) <= 1.0
    # other bounds: images in [-1, 1]
    x = canvas.x_train[:64] * 2 - 1
    model = torch.nn.Sequential(_Affine(0.5, 0.5), canvas.model)
    res = AdversarialPatch(size=4, epochs=2, init="gray").fit(
        model, x, canvas.y_train[:64], bounds=(-1.0, 1.0), generator=torch.Generator()
    )
    assert res.patch.shape == (1, 4, 4)
    assert float(res.patch.min()) >= -1.0 and float(res.patch.max()) <= 1.0
    assert float(res.patch.min()) < 0.0  # the range was used, not [0, 1]


class _Affine(torch.nn.Module):
    def __init__(self, scale: float, shift: float):
        super().__init__()
        self.scale, self.shift = scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def test_untargeted_patch_beats_a_random_one(canvas: Split) -> None:
    res = AdversarialPatch(size=0.3, epochs=4).fit(
        canvas.model,
        canvas.x_train[:640],
        canvas.y_train[:640],
        generator=torch.Generator().manual_seed(0),
    )
    g = torch.Generator
    held = patch_success_rate(
        canvas.model, canvas.x, canvas.y, res.patch, generator=g().manual_seed(1)
    )
    rand = patch_success_rate(
        canvas.model,
        canvas.x,
        canvas.y,
        torch.rand((1, 5, 5), generator=g().manual_seed(2)),
        generator=g().manual_seed(1),
    )
    assert held >= rand + 0.2, (held, rand)  # measured: 0.71 vs 0.35 (occlusion alone)
    assert res.target is None


def test_eot_with_scale_and_rotation_fits_a_working_patch(canvas: Split) -> None:
    res = AdversarialPatch(size=0.3, epochs=4, scale_range=(0.8, 1.2), max_rotation=20.0).fit(
        canvas.model,
        canvas.x_train[:512],
        canvas.y_train[:512],
        target=TARGET,
        generator=torch.Generator().manual_seed(0),
    )
    assert float(res.patch.min()) >= 0.0 and float(res.patch.max()) <= 1.0
    held = patch_success_rate(
        canvas.model, canvas.x, canvas.y, res.patch, target=TARGET, generator=torch.Generator()
    )
    assert held >= 0.2, held


def test_fit_is_repeatable_and_leaves_the_model_alone(canvas: Split) -> None:
    def fit() -> PatchResult:
        return AdversarialPatch(size=0.25, epochs=2, max_rotation=10.0).fit(
            canvas.model,
            canvas.x_train[:128],
            canvas.y_train[:128],
            target=1,
            generator=torch.Generator().manual_seed(3),
        )

    a, b = fit(), fit()
    assert torch.equal(a.patch, b.patch) and a.history == b.history
    assert not canvas.model.training
    assert all(p.grad is None for p in canvas.model.parameters())


def test_apply_patch_places_it_where_asked() -> None:
    x = torch.rand(3, 2, 10, 12)
    patch = torch.rand(2, 3, 4)
    out = apply_patch(x, patch, location=(5, 7))
    assert torch.equal(out[:, :, 5:8, 7:11], patch.expand(3, -1, -1, -1))
    outside = torch.ones(10, 12, dtype=torch.bool)
    outside[5:8, 7:11] = False
    assert torch.equal(out[:, :, outside], x[:, :, outside])
    assert not torch.equal(out, x) and torch.equal(x, x.clone())  # x itself unchanged

    centred = apply_patch(x, patch)  # None: centred, top-left ((10 - 3) // 2, (12 - 4) // 2)
    assert torch.equal(centred[:, :, 3:6, 4:8], patch.expand(3, -1, -1, -1))
    assert torch.equal(apply_patch(x, patch, location="center"), centred)

    per_image = torch.tensor([[0, 0], [7, 8], [2, 3]])
    out = apply_patch(x, patch, location=per_image)
    for i, (r, c) in enumerate(per_image.tolist()):
        assert torch.equal(out[i, :, r : r + 3, c : c + 4], patch)


def test_random_locations_are_whole_and_seeded() -> None:
    x = torch.zeros(50, 1, 9, 9)
    patch = torch.ones(1, 3, 3)
    a = apply_patch(x, patch, location="random", generator=torch.Generator().manual_seed(0))
    b = apply_patch(x, patch, location="random", generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert bool((a.sum(dim=(1, 2, 3)) == 9).all())  # always the whole patch
    corners = {tuple((img[0] > 0).nonzero()[0].tolist()) for img in a}
    assert len(corners) > 10  # really spread out


def test_bad_locations_and_patches_are_rejected() -> None:
    x = torch.rand(2, 1, 8, 8)
    patch = torch.rand(1, 3, 3)
    for loc in [(6, 0), (0, -1), (1.5, 2), "top", torch.tensor([[0, 0]])]:
        with pytest.raises(AttackInputError, match="location"):
            apply_patch(x, patch, location=loc)  # type: ignore[arg-type]
    with pytest.raises(AttackInputError, match="patch"):
        apply_patch(x, torch.rand(3, 3, 3))  # channels differ
    with pytest.raises(AttackInputError, match="patch"):
        apply_patch(x, torch.rand(1, 9, 2))  # taller than the image
    with pytest.raises(AttackInputError, match="x"):
        apply_patch(torch.rand(2, 64), patch)


def test_affine_paste_matches_exact_paste_and_stays_in_bounds() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 2, 12, 12, generator=g)
    patch = torch.rand(2, 5, 3, generator=g)
    rows, cols = torch.tensor([0, 3, 7, 2]), torch.tensor([1, 9, 0, 5])
    centers = torch.stack([rows + 2.5, cols + 1.5], dim=1)
    exact = paste(x, patch, rows, cols)
    resampled = paste_affine(x, patch, centers, torch.ones(4), torch.zeros(4))
    assert torch.allclose(exact, resampled, atol=1e-5)

    turned = paste_affine(x, patch, centers, torch.full((4,), 1.3), torch.full((4,), 0.7))
    assert float(turned.min()) >= 0.0 and float(turned.max()) <= 1.0 + 1e-6
    # a quarter turn takes the patch's top row to its left column (counter-clockwise)
    bar = torch.zeros(1, 5, 5)
    bar[0, 0] = 1.0
    quarter = paste_affine(
        torch.zeros(1, 1, 9, 9),
        bar,
        torch.tensor([[4.5, 4.5]]),
        torch.ones(1),
        torch.tensor([math.pi / 2]),
    )
    assert torch.allclose(quarter[0, 0, 2:7, 2], torch.ones(5), atol=1e-5)
    assert float(quarter[0, 0, 2:7, 3:7].abs().max()) < 1e-5

    p = patch.clone().requires_grad_(True)
    (g_patch,) = torch.autograd.grad(
        paste_affine(x, p, centers, torch.ones(4), torch.zeros(4)).sum(), p
    )
    assert bool((g_patch > 0).all())


def test_patch_side_and_covering_eps() -> None:
    assert patch_side(0.3, 16, 16) == (5, 5)
    assert patch_side(0.25, 8, 12) == (2, 3)
    assert patch_side(0.01, 8, 8) == (1, 1)
    assert patch_side(4, 16, 16) == (4, 4)
    with pytest.raises(AttackInputError, match="size"):
        patch_side(9, 8, 8)
    assert patch_covering_eps(ThreatModel("linf", 1.0), (1, 5, 5)) == 1.0
    assert patch_covering_eps(ThreatModel("l2", 1.0, (-1.0, 1.0)), (3, 2, 2)) == pytest.approx(
        2 * math.sqrt(12)
    )
    assert patch_covering_eps(ThreatModel("l1", 1.0), (1, 5, 5)) == 25.0


def test_adapter_refuses_a_ball_that_would_shrink_the_patch(canvas: Split) -> None:
    attack = PatchAttack(size=0.3, epochs=1)
    x, y = canvas.x[:8], canvas.y[:8]
    for threat in (ThreatModel("linf", 0.3), ThreatModel("l2", 4.9)):
        with pytest.raises(ConfigError, match=r"threat\.eps.*set eps to"):
            attack(canvas.model, x, y, threat)
    res = attack(canvas.model, x, y, ThreatModel("l2", 5.0), generator=torch.Generator())
    changed = (res.x_adv != x).flatten(1).sum(dim=1)
    assert bool((changed <= 25).all())  # at most the patch's pixels moved
    assert bool((res.queries == 1 + 1 + 1 + 1).all())


def test_adapter_pastes_one_patch_per_target(canvas: Split) -> None:
    x, y = canvas.x[:40], canvas.y[:40]
    targets = torch.where(torch.arange(40) % 2 == 0, 7, 4)
    res = PatchAttack(size=0.3, epochs=8, location="center")(
        canvas.model,
        x,
        y,
        ThreatModel("linf", 1.0),
        targets=targets,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(res.success, predict(canvas.model, res.x_adv) == targets)
    assert res.success_rate > 0.0
    evens, odds = res.x_adv[0::2, :, 5:10, 5:10], res.x_adv[1::2, :, 5:10, 5:10]
    # the base class re-projects x + (x_adv - x): equal up to float rounding
    assert torch.allclose(evens, evens[0:1].expand_as(evens), atol=1e-6)
    assert torch.allclose(odds, odds[0:1].expand_as(odds), atol=1e-6)
    assert not torch.allclose(evens[0], odds[0], atol=1e-2)


def test_fit_rejects_bad_inputs(canvas: Split) -> None:
    x, y = canvas.x[:8], canvas.y[:8]
    fitter = AdversarialPatch(epochs=1)
    with pytest.raises(AttackInputError, match="target"):
        fitter.fit(canvas.model, x, y, target=10)
    with pytest.raises(AttackInputError, match="target"):
        fitter.fit(canvas.model, x, y, target=True)  # type: ignore[arg-type]
    with pytest.raises(AttackInputError, match="bounds"):
        fitter.fit(canvas.model, x, y, bounds=(1.0, 0.0))
    with pytest.raises(AttackInputError, match="x"):
        fitter.fit(canvas.model, x * 2 + 1, y)  # outside the bounds
    with pytest.raises(AttackInputError, match="y"):
        fitter.fit(canvas.model, x, y[:3])
    with pytest.raises(AttackInputError, match="at least one"):
        fitter.fit(canvas.model, x[:0], y[:0])
    with pytest.raises(AttackInputError, match="size"):
        AdversarialPatch(size=17).fit(canvas.model, x, y)
    with pytest.raises(AttackInputError, match="target"):
        patch_success_rate(canvas.model, x, y, torch.rand(1, 3, 3), target=2.0)  # type: ignore[arg-type]
