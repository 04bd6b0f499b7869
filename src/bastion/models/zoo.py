"""A small zoo of classifiers, each mapping inputs in their natural range to logits.

Every model built here is a :class:`BastionModel`: a :class:`Normalize` first layer (so the
threat model's eps is measured in input space) followed by the architecture's body. Input
``(N, *input_shape)`` float32, output logits ``(N, num_classes)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bastion.errors import ConfigError


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel (images ``(N, C, H, W)``) or per feature ``(N, F)``."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float], input_shape: Sequence[int]):
        super().__init__()
        shape = [1, len(mean)] + [1] * (len(input_shape) - 1)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).reshape(shape))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).reshape(shape))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model: architecture, input shape, classes, normalisation."""

    architecture: str
    input_shape: tuple[int, ...]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "mean": list(self.mean),
            "std": list(self.std),
            "options": dict(self.options),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        return cls(
            architecture=str(d["architecture"]),
            input_shape=tuple(int(v) for v in d["input_shape"]),
            num_classes=int(d["num_classes"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            options=dict(d.get("options", {})),
        )


class BastionModel(nn.Module):
    """``Normalize`` followed by an architecture body; carries its :class:`ModelSpec`."""

    def __init__(self, spec: ModelSpec, body: nn.Module):
        super().__init__()
        self.spec = spec
        self.normalize = Normalize(spec.mean, spec.std, spec.input_shape)
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        return self.body(self.normalize(x))  # type: ignore[no-any-return]


def _flat_size(layers: nn.Module, input_shape: Sequence[int]) -> int:
    with torch.no_grad():
        out = layers(torch.zeros(1, *input_shape))
    return int(out.numel())


def _image_channels(input_shape: Sequence[int], arch: str) -> int:
    if len(input_shape) != 3:
        raise ConfigError(
            f"model.architecture: {arch!r} needs image inputs of shape (C, H, W), "
            f"got input shape {tuple(input_shape)}"
        )
    return int(input_shape[0])


def _mlp(
    input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (256, 256)
) -> nn.Module:
    d = 1
    for s in input_shape:
        d *= int(s)
    layers: list[nn.Module] = [nn.Flatten()]
    for h in hidden:
        layers += [nn.Linear(d, int(h)), nn.ReLU()]
        d = int(h)
    layers.append(nn.Linear(d, num_classes))
    return nn.Sequential(*layers)


def _tabular_mlp(
    input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (64, 64)
) -> nn.Module:
    if len(input_shape) != 1:
        raise ConfigError(
            "model.architecture: 'tabular-mlp' needs inputs of shape (features,), got "
            f"{tuple(input_shape)}"
        )
    return _mlp(input_shape, num_classes, hidden)


def _small_cnn(input_shape: Sequence[int], num_classes: int, width: int = 1) -> nn.Module:
    """The small CNN of Wong, Rice and Kolter 2020 ("Fast is better than free"): conv 16 4x4
    stride 2, conv 32 4x4 stride 2, fc 100. ``width`` multiplies the channel counts."""
    c = _image_channels(input_shape, "small-cnn")
    feats = nn.Sequential(
        nn.Conv2d(c, 16 * width, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16 * width, 32 * width, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
    )
    n = _flat_size(feats, input_shape)
    return nn.Sequential(
        feats, nn.Linear(n, 100 * width), nn.ReLU(), nn.Linear(100 * width, num_classes)
    )


def _large_cnn(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """The larger CNN of Wong et al. 2018/2020: conv 32, 32 (stride 2), 64, 64 (stride 2),
    fc 512, 512."""
    c = _image_channels(input_shape, "large-cnn")
    feats = nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
    )
    n = _flat_size(feats, input_shape)
    return nn.Sequential(
        feats,
        nn.Linear(n, 512),
        nn.ReLU(),
        nn.Linear(512, 512),
        nn.ReLU(),
        nn.Linear(512, num_classes),
    )


class MaxPool2x2(nn.Module):
    """2x2 max pooling with stride 2 (``nn.MaxPool2d(2)``: a trailing odd row or column is
    dropped), as the elementwise maximum of four strided views.

    Same values as ``nn.MaxPool2d(2)``, NaNs included, but it computes no argmax indices: on
    CPU it is about 8x faster in inference (1,000 x 6 x 28 x 28 maps: 1.6 ms instead of 13.8 ms
    on 2 cores), which made pooling 59% of a LeNet forward pass. Parameter-free, so state dicts
    are unchanged. At exact ties the gradient is shared between the tied inputs.
    """

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` -> ``(N, C, H // 2, W // 2)``."""
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        top = torch.maximum(x[..., 0:h:2, 0:w:2], x[..., 0:h:2, 1:w:2])
        return torch.maximum(top, torch.maximum(x[..., 1:h:2, 0:w:2], x[..., 1:h:2, 1:w:2]))


def _lenet(input_shape: Sequence[int], num_classes: int, classic: bool = False) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998) with ReLU and max pooling.

    By default the second convolution is padded too, so that 8x8 inputs fit. With
    ``classic=True`` it is unpadded as in the paper (28x28 input: 14x14 -> 10x10 -> 5x5x16
    features, 0.42 M multiply-adds instead of 0.69 M); inputs need at least 16x16 pixels.
    """
    c = _image_channels(input_shape, "lenet")
    if not isinstance(classic, bool):
        raise ConfigError(f"model.options.classic: expected true or false, got {classic!r}")
    if classic and min(int(s) for s in input_shape[1:]) < 16:
        raise ConfigError(
            f"model.options.classic: the unpadded LeNet needs inputs of at least 16x16 pixels, "
            f"got {tuple(input_shape)}"
        )
    feats = nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=2),
        nn.ReLU(),
        MaxPool2x2(),
        nn.Conv2d(6, 16, 5, padding=0 if classic else 2),
        nn.ReLU(),
        MaxPool2x2(),
        nn.Flatten(),
    )
    n = _flat_size(feats, input_shape)
    return nn.Sequential(
        feats,
        nn.Linear(n, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )


class _PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(x))
        sc = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        res: Tensor = out + sc
        return res


class _PreActResNet18(nn.Module):
    """PreAct-ResNet-18 (He et al. 2016, "Identity mappings in deep residual networks")."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.stem = nn.Conv2d(channels, 64, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [_PreActBlock(cin, cout, stride), _PreActBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(512)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.blocks(self.stem(x))
        out = torch.relu(self.bn(out))
        out = torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1)
        return self.fc(out)  # type: ignore[no-any-return]


def _preact_resnet18(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    return _PreActResNet18(_image_channels(input_shape, "preact-resnet18"), num_classes)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "mlp": _mlp,
    "tabular-mlp": _tabular_mlp,
    "small-cnn": _small_cnn,
    "large-cnn": _large_cnn,
    "lenet": _lenet,
    "preact-resnet18": _preact_resnet18,
}


def build_model(spec: ModelSpec) -> BastionModel:
    """Build a fresh (randomly initialised, via torch's global default init) model from a spec.

    Raises :class:`ConfigError` for an unknown architecture or options it does not take.
    """
    if spec.architecture not in ARCHITECTURES:
        raise ConfigError(
            f"model.architecture: expected one of {', '.join(sorted(ARCHITECTURES))}, "
            f"got {spec.architecture!r}"
        )
    if len(spec.mean) != len(spec.std):
        raise ConfigError("model: mean and std must have the same length")
    try:
        body = ARCHITECTURES[spec.architecture](spec.input_shape, spec.num_classes, **spec.options)
    except TypeError as e:
        raise ConfigError(f"model.options: not accepted by {spec.architecture!r}: {e}") from e
    return BastionModel(spec, body)
