"""Tests for bastion.models.zoo: every architecture builds and maps inputs in their natural
range to logits."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from bastion.errors import ConfigError
from bastion.models import ARCHITECTURES, BastionModel, ModelSpec, Normalize, build_model

# (architecture, input shape, options): an input shape each architecture is meant for.
CASES: list[tuple[str, tuple[int, ...], dict[str, Any]]] = [
    ("mlp", (1, 8, 8), {"hidden": [16]}),
    ("mlp", (5,), {}),
    ("tabular-mlp", (7,), {}),
    ("small-cnn", (1, 8, 8), {}),
    ("small-cnn", (3, 12, 12), {"width": 2}),
    ("large-cnn", (3, 8, 8), {}),
    ("lenet", (1, 8, 8), {}),
    ("lenet", (1, 28, 28), {}),
    ("preact-resnet18", (3, 8, 8), {}),
]


def _spec(arch: str, shape: tuple[int, ...], classes: int = 4, **options: Any) -> ModelSpec:
    c = shape[0]
    return ModelSpec(
        arch,
        shape,
        classes,
        tuple(0.1 * (i + 1) for i in range(c)),
        tuple(0.2 + 0.1 * i for i in range(c)),
        dict(options),
    )


def test_cases_cover_every_registered_architecture() -> None:
    assert {arch for arch, _, _ in CASES} == set(ARCHITECTURES)


@pytest.mark.parametrize(("arch", "shape", "options"), CASES, ids=lambda v: str(v))
def test_every_architecture_yields_logits(
    arch: str, shape: tuple[int, ...], options: dict[str, Any]
) -> None:
    torch.manual_seed(0)
    model = build_model(_spec(arch, shape, classes=5, **options)).eval()
    assert isinstance(model, BastionModel)
    x = torch.rand(3, *shape)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (3, 5)
    assert out.dtype == torch.float32
    assert bool(torch.isfinite(out).all())
    # examples are independent in eval mode: a batch equals its rows run one by one
    with torch.no_grad():
        rows = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(rows, out, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("arch", "shape", "options"), CASES[:7], ids=lambda v: str(v))
def test_gradient_reaches_the_input(
    arch: str, shape: tuple[int, ...], options: dict[str, Any]
) -> None:
    torch.manual_seed(0)
    model = build_model(_spec(arch, shape, **options)).eval()
    x = torch.rand(2, *shape, requires_grad=True)
    model(x).logsumexp(dim=1).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


@pytest.mark.parametrize(("arch", "shape", "options"), CASES, ids=lambda v: str(v))
def test_normalize_is_the_first_layer(
    arch: str, shape: tuple[int, ...], options: dict[str, Any]
) -> None:
    torch.manual_seed(0)
    spec = _spec(arch, shape, **options)
    model = build_model(spec).eval()
    first = next(iter(model.children()))
    assert isinstance(first, Normalize)
    assert first is model.normalize
    x = torch.rand(2, *shape)
    mean = torch.tensor(spec.mean).reshape(1, -1, *([1] * (len(shape) - 1)))
    std = torch.tensor(spec.std).reshape(1, -1, *([1] * (len(shape) - 1)))
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.body((x - mean) / std))


def test_normalize_is_per_channel_for_images() -> None:
    norm = Normalize([0.0, 0.5, 1.0], [1.0, 0.5, 0.25], (3, 2, 2))
    x = torch.ones(1, 3, 2, 2)
    out = norm(x)
    assert out[0, 0].unique().tolist() == [1.0]
    assert out[0, 1].unique().tolist() == [1.0]
    assert out[0, 2].unique().tolist() == [0.0]


def test_normalize_is_per_feature_for_tabular() -> None:
    norm = Normalize([1.0, 2.0, 3.0], [2.0, 4.0, 1.0], (3,))
    out = norm(torch.tensor([[3.0, 2.0, 0.0]]))
    assert out.tolist() == [[1.0, 0.0, -3.0]]


def test_normalize_statistics_are_buffers_not_parameters() -> None:
    model = build_model(_spec("mlp", (2,)))
    names = {n for n, _ in model.named_parameters()}
    assert not any(n.startswith("normalize.") for n in names)
    assert {"normalize.mean", "normalize.std"} <= set(model.state_dict())


def test_mlp_hidden_option_sets_layer_widths() -> None:
    model = build_model(_spec("mlp", (1, 4, 4), classes=3, hidden=[8, 6]))
    widths = [
        (m.in_features, m.out_features) for m in model.body.modules() if isinstance(m, nn.Linear)
    ]
    assert widths == [(16, 8), (8, 6), (6, 3)]


def test_small_cnn_width_multiplies_channels() -> None:
    base = build_model(_spec("small-cnn", (1, 8, 8)))
    wide = build_model(_spec("small-cnn", (1, 8, 8), width=2))
    convs = [m.out_channels for m in wide.body.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [32, 64]
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in base.parameters())


def test_spec_dict_round_trip() -> None:
    spec = _spec("small-cnn", (3, 8, 8), width=2)
    d = spec.to_dict()
    assert d["input_shape"] == [3, 8, 8] and isinstance(d["mean"], list)
    assert ModelSpec.from_dict(d) == spec
    assert build_model(spec).spec is spec


def test_unknown_architecture_names_field_and_choices() -> None:
    with pytest.raises(
        ConfigError, match=r"model\.architecture: expected one of .*lenet.*'resnet50'"
    ):
        build_model(_spec("resnet50", (3, 8, 8)))


@pytest.mark.parametrize("arch", ["small-cnn", "large-cnn", "lenet", "preact-resnet18"])
def test_image_architecture_rejects_flat_inputs(arch: str) -> None:
    with pytest.raises(ConfigError, match=rf"model\.architecture: '{arch}' needs image inputs"):
        build_model(_spec(arch, (10,)))


def test_tabular_mlp_rejects_image_inputs() -> None:
    with pytest.raises(ConfigError, match=r"'tabular-mlp' needs inputs of shape \(features,\)"):
        build_model(_spec("tabular-mlp", (1, 8, 8)))


def test_unknown_option_names_field() -> None:
    with pytest.raises(ConfigError, match=r"model\.options: not accepted by 'lenet'"):
        build_model(_spec("lenet", (1, 8, 8), width=2))


def test_mean_std_length_mismatch() -> None:
    spec = ModelSpec("mlp", (3,), 2, (0.5, 0.5, 0.5), (1.0,))
    with pytest.raises(ConfigError, match=r"mean and std must have the same length"):
        build_model(spec)


def test_classic_lenet_is_unpadded_and_cheaper() -> None:
    padded = build_model(_spec("lenet", (1, 28, 28), classes=10))
    classic = build_model(_spec("lenet", (1, 28, 28), classes=10, classic=True))
    n_padded = sum(p.numel() for p in padded.parameters())
    n_classic = sum(p.numel() for p in classic.parameters())
    # 16 x 5 x 5 features into the first dense layer instead of 16 x 7 x 7
    assert n_padded - n_classic == 120 * 16 * (49 - 25)
    assert classic(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ConfigError, match=r"model\.options\.classic: .*16x16"):
        build_model(_spec("lenet", (1, 8, 8), classic=True))
    with pytest.raises(ConfigError, match=r"model\.options\.classic: expected true or false"):
        build_model(_spec("lenet", (1, 28, 28), classic="yes"))


@pytest.mark.parametrize("shape", [(3, 2, 8, 8), (2, 3, 7, 9), (1, 1, 2, 2)])
def test_maxpool2x2_matches_torch_maxpool(shape: tuple[int, ...]) -> None:
    from bastion.models.zoo import MaxPool2x2

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    x[0, 0, 0, 0] = float("nan")
    torch.testing.assert_close(MaxPool2x2()(x), nn.MaxPool2d(2)(x), equal_nan=True)
    cl = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(MaxPool2x2()(cl), nn.MaxPool2d(2)(x), equal_nan=True)
    # gradients agree where the maximum is unique
    y = torch.randn(*shape, generator=torch.Generator().manual_seed(1), requires_grad=True)
    (g1,) = torch.autograd.grad(MaxPool2x2()(y).sum(), y)
    (g2,) = torch.autograd.grad(nn.MaxPool2d(2)(y).sum(), y)
    torch.testing.assert_close(g1, g2)
