"""The corruptions themselves and the augmentation built on them."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from torch import Tensor

from bastion.corruptions import (
    CORRUPTIONS,
    NUM_SEVERITIES,
    SEVERITIES,
    Corruption,
    CorruptionAugment,
    available_corruptions,
    corrupt,
    get_corruption,
    severity_table,
)
from bastion.errors import ConfigError, DataError

ALL = sorted(CORRUPTIONS)
NOISE = ("gaussian_noise", "impulse_noise", "shot_noise", "speckle_noise")
IMAGE_ONLY = tuple(n for n in ALL if n not in NOISE)
RANDOM = tuple(n for n in ALL if CORRUPTIONS[n].random)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registry_lists_the_expected_corruptions() -> None:
    expected = {
        "brightness",
        "contrast",
        "elastic",
        "gaussian_blur",
        "gaussian_noise",
        "impulse_noise",
        "motion_blur",
        "occlusion",
        "rotation",
        "shear",
        "shift",
        "shot_noise",
        "speckle_noise",
    }
    assert set(ALL) == expected
    assert available_corruptions() == tuple(ALL)
    assert available_corruptions(images=False) == NOISE
    assert set(RANDOM) == expected - {"brightness", "contrast", "gaussian_blur"}
    for name, c in CORRUPTIONS.items():
        assert c.name == name and c.description and c.family
        assert len(c.params) == NUM_SEVERITIES
        assert all(set(row) == set(c.params[0]) for row in c.params)


def test_severity_table_is_json_and_params_are_read_only() -> None:
    table = severity_table()
    assert json.loads(json.dumps(table)) == table
    assert table["gaussian_noise"][0] == {"sigma": 0.08}
    assert [row["degrees"] for row in table["rotation"]] == [6, 12, 18, 24, 30]
    with pytest.raises(TypeError):
        CORRUPTIONS["gaussian_noise"].params[0]["sigma"] = 1.0  # type: ignore[index]


@pytest.mark.parametrize("name", ALL)
def test_contract_at_every_severity(name: str, digit_images: Tensor) -> None:
    """Shape, dtype, bounds, finiteness, input untouched, repeatable with a seed; random ones
    change with the seed, deterministic ones ignore it."""
    x = digit_images
    before = x.clone()
    for severity in SEVERITIES:
        a = corrupt(x, name, severity, generator=_gen(1))
        assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
        assert bool(torch.isfinite(a).all())
        assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
        assert torch.equal(a, corrupt(x, name, severity, generator=_gen(1)))
        b = corrupt(x, name, severity, generator=_gen(2))
        assert torch.equal(a, b) != CORRUPTIONS[name].random, (name, severity)
        assert not torch.equal(a, x), (name, severity)
    assert torch.equal(x, before)


@pytest.mark.parametrize("name", ALL)
def test_strength_grows_with_severity(name: str, digit_images: Tensor) -> None:
    x = digit_images
    change = [float((corrupt(x, name, s, generator=_gen(3)) - x).abs().mean()) for s in SEVERITIES]
    assert all(b >= a - 1e-7 for a, b in itertools.pairwise(change)), change
    assert change[-1] > 2 * change[0] and change[-1] > 0.02, change


@pytest.mark.parametrize("name", ALL)
def test_other_bounds_shapes_and_dtypes(name: str) -> None:
    """Any (lo, hi) is the [0, 1] case rescaled; colour, non-square and float64 batches work."""
    g = _gen(0)
    x = torch.rand(6, 3, 10, 14, generator=g)
    in_unit = corrupt(x, name, 3, generator=_gen(4))
    shifted = corrupt(x * 4 - 2, name, 3, generator=_gen(4), bounds=(-2.0, 2.0))
    assert float(shifted.min()) >= -2.0 and float(shifted.max()) <= 2.0
    torch.testing.assert_close(shifted, in_unit * 4 - 2, atol=1e-4, rtol=0)
    x64 = x.double()
    out64 = corrupt(x64, name, 5, generator=_gen(5))
    assert out64.dtype == torch.float64 and out64.shape == x.shape
    half = corrupt(x.half(), name, 2, generator=_gen(5))
    assert half.dtype == torch.float16 and bool(torch.isfinite(half).all())
    empty = corrupt(x[:0], name, 1, generator=_gen(5))
    assert empty.shape == (0, 3, 10, 14)


@pytest.mark.parametrize("severity", [0, 6, -1, True, 2.0, "3", None])
def test_bad_severity_is_rejected(severity: object, digit_images: Tensor) -> None:
    with pytest.raises(ConfigError, match=r"corruption\.severity: expected an integer in 1\.\.5"):
        corrupt(digit_images, "gaussian_noise", severity)  # type: ignore[arg-type]


def test_error_messages(digit_images: Tensor) -> None:
    with pytest.raises(ConfigError) as err:
        corrupt(digit_images, "fog", 1)
    assert "unknown corruption 'fog'" in str(err.value)
    assert ", ".join(ALL) in str(err.value)
    with pytest.raises(ConfigError, match=r"corruption\.severity: expected .* got 7"):
        corrupt(digit_images, "rotation", 7)
    with pytest.raises(ConfigError, match=r"corruption\.bounds"):
        corrupt(digit_images, "rotation", 1, bounds=(1.0, 0.0))
    with pytest.raises(DataError, match="floating-point"):
        corrupt((digit_images * 16).long(), "gaussian_noise", 1)
    with pytest.raises(ConfigError, match=r"params: expected 5 rows"):
        Corruption("x", "d", "noise", ({"a": 1.0},), CORRUPTIONS["brightness"].fn)


def test_tabular_inputs_take_noise_only() -> None:
    x = torch.rand(50, 30, generator=_gen(0))
    for name in NOISE:
        for severity in SEVERITIES:
            out = corrupt(x, name, severity, generator=_gen(1))
            assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
            assert not torch.equal(out, x)
    for name in IMAGE_ONLY:
        with pytest.raises(ConfigError) as err:
            corrupt(x, name, 1)
        assert f"corruption {name!r} needs images (N, C, H, W)" in str(err.value)
        assert "(50, 30)" in str(err.value) and "gaussian_noise" in str(err.value)
    with pytest.raises(ConfigError, match="needs images"):
        corrupt(torch.rand(4, 8, 8), "rotation", 1)  # (N, H, W) without a channel axis
    with pytest.raises(ConfigError, match=r"expected a batch"):
        corrupt(torch.rand(8), "gaussian_noise", 1)


# -- what each corruption does --------------------------------------------------------------------
def test_noise_statistics() -> None:
    flat = torch.full((200, 500), 0.5)
    g = _gen(0)
    gauss = corrupt(flat, "gaussian_noise", 1, generator=g) - 0.5
    assert abs(float(gauss.std()) - 0.08) < 0.003 and abs(float(gauss.mean())) < 0.003
    shot = corrupt(flat, "shot_noise", 1, generator=g)  # Poisson(30) / 60: unbiased
    assert abs(float(shot.mean()) - 0.5) < 0.003
    assert abs(float(shot.std()) - math.sqrt(0.5 / 60)) < 0.003
    imp = corrupt(flat, "impulse_noise", 5, generator=g)
    assert abs(float((imp == 1).float().mean()) - 0.135) < 0.005
    assert abs(float((imp == 0).float().mean()) - 0.135) < 0.005
    assert bool(((imp == 0) | (imp == 1) | (imp == 0.5)).all())
    zeros = torch.zeros(10, 40)
    assert torch.equal(corrupt(zeros, "speckle_noise", 5, generator=g), zeros)


def test_photometric_and_blur() -> None:
    g = _gen(0)
    x = torch.rand(8, 1, 12, 12, generator=g)
    con = corrupt(x, "contrast", 5)  # factor 0.15 about the mean, no clipping needed
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(con.mean(dim=(1, 2, 3), keepdim=True), mean)
    torch.testing.assert_close(con - mean, (x - mean) * 0.15)
    torch.testing.assert_close(corrupt(x * 0.5, "brightness", 2), x * 0.5 + 0.2)
    const = torch.full((3, 2, 9, 11), 0.3)
    for name in ("gaussian_blur", "motion_blur"):
        torch.testing.assert_close(corrupt(const, name, 5, generator=g), const)
    dot = torch.zeros(1, 1, 28, 28)
    dot[0, 0, 14, 14] = 1.0
    for name in ("gaussian_blur", "motion_blur"):
        blurred = corrupt(dot, name, 3, generator=g)
        assert abs(float(blurred.sum()) - 1.0) < 1e-5  # mass kept away from the border
        assert float(blurred.max()) < 0.5


def test_occlusion_draws_squares_of_the_table_size() -> None:
    zeros = torch.zeros(20, 1, 28, 28)
    for severity in SEVERITIES:
        row = CORRUPTIONS["occlusion"].params[severity - 1]
        side = round(row["size"] * 28)
        out = corrupt(zeros, "occlusion", severity, generator=_gen(severity))
        filled = (out == row["fill"]).sum(dim=(1, 2, 3))
        assert bool(((out == 0) | (out == row["fill"])).all())
        assert int(filled.min()) >= side * side
        assert int(filled.max()) <= int(row["count"]) * side * side
    one = corrupt(zeros, "occlusion", 1, generator=_gen(0))
    assert bool(((one == 0.5).sum(dim=(1, 2, 3)) == 49).all())  # one 7x7 square each


def test_rotation_by_a_quarter_turn_matches_rot90() -> None:
    """The affine geometry is exact on a grid-aligned case (bilinear samples at pixel
    centres); the sign is random, so either direction may come out."""
    g = _gen(0)
    x = torch.rand(8, 2, 9, 9, generator=g)
    out = CORRUPTIONS["rotation"].fn(x, {"degrees": 90.0}, _gen(1))
    for i in range(8):
        left = torch.rot90(x[i], 1, dims=(1, 2))
        right = torch.rot90(x[i], -1, dims=(1, 2))
        assert torch.allclose(out[i], left, atol=1e-5) or torch.allclose(out[i], right, atol=1e-5)


def _centroid(x: Tensor) -> Tensor:
    """``(N, 2)`` (row, column) intensity centroids of ``(N, 1, H, W)`` images."""
    h, w = x.shape[-2:]
    rows = torch.arange(h, dtype=x.dtype)[:, None]
    cols = torch.arange(w, dtype=x.dtype)[None, :]
    mass = x.sum(dim=(1, 2, 3))
    return torch.stack(
        [(x[:, 0] * rows).sum(dim=(1, 2)) / mass, (x[:, 0] * cols).sum(dim=(1, 2)) / mass], 1
    )


def test_shift_moves_the_centroid_by_the_table_fraction() -> None:
    blob = torch.zeros(16, 1, 40, 40)
    blob[:, :, 16:24, 16:24] = 1.0
    for severity in SEVERITIES:
        out = corrupt(blob, "shift", severity, generator=_gen(severity))
        moved = (_centroid(out) - _centroid(blob)).norm(dim=1)
        expected = CORRUPTIONS["shift"].params[severity - 1]["fraction"] * 40
        torch.testing.assert_close(moved, torch.full_like(moved, expected), atol=1e-3, rtol=0)


def test_geometric_corruptions_keep_a_centred_blob_and_elastic_moves_pixels() -> None:
    blob = torch.zeros(4, 1, 28, 28)
    blob[:, :, 10:18, 10:18] = 1.0
    for name, limit in (("rotation", 0.1), ("shear", 0.1), ("elastic", 4.0)):
        out = corrupt(blob, name, 3, generator=_gen(0))
        shift = (_centroid(out) - _centroid(blob)).norm(dim=1)
        # deformed about the centre (elastic: a smooth field of RMS 1.3 px), not moved away
        assert float(shift.max()) < limit, name
    el = [corrupt(blob, "elastic", s, generator=_gen(0)) for s in (1, 5)]
    assert float((el[1] - blob).abs().sum()) > 2 * float((el[0] - blob).abs().sum())


# -- augmentation -----------------------------------------------------------------------------
def test_augment_corrupts_about_p_of_the_examples(digit_images: Tensor) -> None:
    x = digit_images.repeat(10, 1, 1, 1)  # 2,000 examples
    aug = CorruptionAugment(names=["gaussian_noise"], p=0.3)
    out, mask = aug.apply_with_mask(x, _gen(0))
    changed = (out != x).flatten(1).any(dim=1)
    assert torch.equal(changed, mask)
    assert abs(float(mask.float().mean()) - 0.3) < 0.04
    assert torch.equal(out[~mask], x[~mask])
    assert torch.equal(aug(x, _gen(0)), out)
    assert not torch.equal(aug(x, _gen(1)), out)
    full = CorruptionAugment(p=0.5)
    out_all, mask_all = full.apply_with_mask(x, _gen(2))
    assert abs(float(mask_all.float().mean()) - 0.5) < 0.04
    assert out_all.shape == x.shape and float(out_all.min()) >= 0 and float(out_all.max()) <= 1
    assert torch.equal(out_all[~mask_all], x[~mask_all])
    assert torch.equal(CorruptionAugment(p=0.0)(x, _gen(3)), x)
    assert bool(CorruptionAugment(p=1.0).apply_with_mask(x, _gen(3))[1].all())


def test_augment_draws_names_and_severities_from_its_lists() -> None:
    zeros = torch.zeros(400, 1, 4, 4)
    aug = CorruptionAugment(names=["brightness", "contrast"], severities=[1, 5], p=1.0)
    out = aug(zeros, _gen(0))
    values = sorted({round(float(v), 4) for v in out[:, 0, 0, 0]})
    assert values == [0.0, 0.1, 0.5]  # contrast leaves a constant image alone
    counts = {v: int((out[:, 0, 0, 0].round(decimals=4) == v).sum()) for v in (0.1, 0.5)}
    assert min(counts.values()) > 60


def test_augment_on_tabular_and_bad_settings() -> None:
    x = torch.rand(300, 12, generator=_gen(0))
    out, mask = CorruptionAugment(p=0.5).apply_with_mask(x, _gen(1))  # noise corruptions only
    assert out.shape == x.shape and 0.35 < float(mask.float().mean()) < 0.65
    with pytest.raises(ConfigError, match="needs images"):
        CorruptionAugment(names=["rotation"])(x, _gen(0))
    with pytest.raises(ConfigError, match=r"augment\.p: expected a probability"):
        CorruptionAugment(p=1.5)
    with pytest.raises(ConfigError, match=r"augment\.severities\[1\]: expected an integer"):
        CorruptionAugment(severities=[1, 6])
    with pytest.raises(ConfigError, match=r"augment\.names\[0\]: unknown corruption 'fog'"):
        CorruptionAugment(names=["fog"])
    with pytest.raises(ConfigError, match=r"augment\.names: expected a non-empty list"):
        CorruptionAugment(names="gaussian_noise")
    assert "p=0.5" in repr(CorruptionAugment())


def test_get_corruption_names_the_field() -> None:
    assert get_corruption("shift") is CORRUPTIONS["shift"]
    with pytest.raises(ConfigError, match=r"evaluation\.corruptions\[2\]: unknown corruption"):
        get_corruption("snow", field_name="evaluation.corruptions[2]")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_stay_on_the_device() -> None:
    x = torch.rand(16, 3, 12, 12, device="cuda")
    for name in ALL:
        a = corrupt(x, name, 4, generator=torch.Generator(device="cuda").manual_seed(0))
        b = corrupt(x, name, 4, generator=torch.Generator(device="cuda").manual_seed(0))
        assert a.device == x.device and torch.equal(a, b)
    out = CorruptionAugment(p=0.5)(x, torch.Generator(device="cuda").manual_seed(0))
    assert out.device == x.device
