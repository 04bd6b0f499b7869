"""Common corruptions at five severities: evaluation suites, mCE and training-time augmentation.

The protocol is that of ImageNet-C (Hendrycks & Dietterich 2019, "Benchmarking neural network
robustness to common corruptions and perturbations") and MNIST-C (Mu & Gilmer 2019, "MNIST-C: a
robustness benchmark for computer vision"): every corruption has a table of five parameter
values growing in strength (severities 1..5); a model is scored by its accuracy on each
corruption at each severity, and against a baseline model by the mean corruption error (mCE).

Shapes: images are batches ``(N, C, H, W)``; flat tabular inputs ``(N, F)`` (or any
``(N, ...)`` that is not an image batch) take the noise corruptions only. Every corruption
returns a tensor of the input's shape, dtype and device, clipped to the input range ``bounds``.

Units: a corruption sees its input rescaled from ``bounds`` to ``[0, 1]``, so noise standard
deviations, brightness shifts and fill values are fractions of ``hi - lo``. Blur widths and
elastic displacements are given in pixels of a 28x28 image (MNIST) and scaled by
``min(H, W) / 28``, so a corruption changes a small image (8x8 digits) as much, relative to its
size, as it changes MNIST; shifts and occluder sizes are fractions of the image side, rotations
are in degrees. Noise, salt-and-pepper, contrast and brightness values follow CIFAR-10-C and
ImageNet-C; the geometric corruptions (rotation, shift, shear, elastic) follow MNIST-C.

Randomness enters only through the ``torch.Generator`` passed in (created on the input's
device); the same generator state gives the same output. Library code never seeds globally.

Everything is implemented in torch (``conv2d``, ``affine_grid``, ``grid_sample``), batched over
examples, on the input's device.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.errors import ConfigError, DataError

__all__ = [
    "CORRUPTIONS",
    "NUM_SEVERITIES",
    "SEVERITIES",
    "Corruption",
    "CorruptionAccuracy",
    "CorruptionAugment",
    "CorruptionFn",
    "available_corruptions",
    "corrupt",
    "corruption_accuracy",
    "corruption_errors",
    "get_corruption",
    "mean_corruption_error",
    "relative_corruption_errors",
    "relative_mean_corruption_error",
    "severity_table",
]

#: Severities run from 1 (mildest) to this value (strongest).
NUM_SEVERITIES = 5
SEVERITIES: tuple[int, ...] = tuple(range(1, NUM_SEVERITIES + 1))

#: Image side the pixel-valued parameters (blur widths, elastic displacements) are given for.
REFERENCE_SIDE = 28

#: Examples corrupted at a time by :func:`corruption_accuracy` (independent of ``batch_size``,
#: so the corrupted inputs, and hence the accuracies, do not depend on it).
_CORRUPT_CHUNK = 512

#: ``fn(u, params, generator) -> Tensor``: ``u`` is the input rescaled to ``[0, 1]``, ``params``
#: one severity's row of the table; the result (same shape) is clipped by the caller.
CorruptionFn = Callable[[Tensor, Mapping[str, float], torch.Generator | None], Tensor]


# -- validation -------------------------------------------------------------------------------
def _check_severity(severity: object, field_name: str = "corruption.severity") -> int:
    if (
        isinstance(severity, bool)
        or not isinstance(severity, numbers.Integral)
        or not 1 <= int(severity) <= NUM_SEVERITIES
    ):
        raise ConfigError(
            f"{field_name}: expected an integer in 1..{NUM_SEVERITIES}, got {severity!r}"
        )
    return int(severity)


def _check_bounds(bounds: Any, field_name: str = "corruption.bounds") -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in bounds)
    except (TypeError, ValueError):
        raise ConfigError(f"{field_name}: expected (lo, hi), two numbers, got {bounds!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ConfigError(f"{field_name}: expected (lo, hi) with lo < hi, got {bounds!r}")
    return lo, hi


def _is_image_batch(x: Tensor) -> bool:
    return x.dim() == 4


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32/float64 are kept; half precision is computed in float32 and cast back."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _spatial_scale(u: Tensor) -> float:
    """Pixels of this image per pixel of a :data:`REFERENCE_SIDE` x :data:`REFERENCE_SIDE` one."""
    return min(int(u.shape[-2]), int(u.shape[-1])) / REFERENCE_SIDE


# -- random draws (always from the caller's generator, on the input's device) ------------------
def _rand(shape: Sequence[int], like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand(tuple(shape), generator=generator, device=like.device, dtype=like.dtype)


def _randn(shape: Sequence[int], like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(tuple(shape), generator=generator, device=like.device, dtype=like.dtype)


def _random_sign(n: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """``(n,)`` values in ``{-1, +1}`` with equal probability."""
    return torch.where(_rand((n,), like, generator) < 0.5, -1.0, 1.0).to(like.dtype)


# -- noise (any shape (N, ...)) ------------------------------------------------------------------
def _gaussian_noise(u: Tensor, p: Mapping[str, float], g: torch.Generator | None) -> Tensor:
    """Additive white noise ``u + sigma * N(0, 1)`` (ImageNet-C)."""
    return u + p["sigma"] * _randn(u.shape, u, g)


def _shot_noise(u: Tensor, p: Mapping[str, float], g: torch.Generator | None) -> Tensor:
    """Photon noise ``Poisson(u * photons) / photons`` (ImageNet-C): fewer photons, more noise."""
    rate = p["photons"]
    return torch.poisson(u.clamp_min(0.0) * rate, generator=g) / rate


def _impulse_noise(u: Tensor, p: Mapping[str, float], g: torch.Generator | None) -> Tensor:
    """Salt and pepper (ImageNet-C): a fraction ``amount`` of the values is replaced, half by the
    top of the range and half by the bottom."""
    r = _rand(u.shape, u, g)
    amount = p["amount"]
    return u.masked_fill(r < amount, 0.0).masked_fill(r < amount / 2, 1.0)


def _speckle_noise(u: Tensor, p: Mapping[str, float], g: torch.Generator | None) -> Tensor:
    """Multiplicative noise ``u + u * sigma * N(0, 1)`` (ImageNet-C)."""
    return u + u * (p["sigma"] * _randn(u.shape, u, g))


# -- blur ------------------------------------------------------------------------------------------
def _gaussian_kernel_1d(sigma: float, like: Tensor) -> Tensor:
    """Normalised ``(2r + 1,)`` Gaussian weights, ``r = max(1, ceil(3 sigma))``: the mass of
    ``N(0, sigma^2)`` over each pixel's extent ``[t - 1/2, t + 1/2]``, which unlike point samples
    still blurs when ``sigma`` is below a pixel (small images)."""
    radius = max(1, math.ceil(3.0 * sigma))
    edges = torch.arange(-radius - 0.5, radius + 1.0, device=like.device, dtype=like.dtype)
    cdf = 0.5 * (1.0 + torch.erf(edges / (max(sigma, 1e-6) * math.sqrt(2.0))))
    k = cdf[1:] - cdf[:-1]
    return k / k.sum()


def _band_matrix(kernel: Tensor, out_size: int) -> Tensor:
    """``(out_size + 2r, out_size)`` matrix ``B`` with ``B[j + i, j] = kernel[i]``, so that
    ``rows @ B`` is the valid correlation of each row with ``kernel`` (length ``2r + 1``)."""
    k = kernel.numel()
    i = torch.arange(out_size + k - 1, device=kernel.device)[:, None]
    j = torch.arange(out_size, device=kernel.device)[None, :]
    offset = i - j
    inside = (offset >= 0) & (offset < k)
    return torch.where(inside, kernel[offset.clamp(0, k - 1)], 0.0).to(kernel.dtype)


def _separable_blur(planes: Tensor, kernel: Tensor, *, pad_mode: str) -> Tensor:
    """Blur planes ``(..., H, W)`` with the same 1-D kernel along both axes, as two banded
    matrix products (much faster on CPU than single-channel convolutions). ``pad_mode``:
    ``"replicate"`` keeps the size, ``"valid"`` shrinks each side by the kernel radius."""
    r = (kernel.numel() - 1) // 2
    if pad_mode == "replicate":
        shape = planes.shape
        flat = planes.reshape(-1, 1, shape[-2], shape[-1])
        planes = F.pad(flat, (r, r, r, r), mode="replicate").reshape(
            *shape[:-2], shape[-2] + 2 * r, shape[-1] + 2 * r
        )
    h, w = planes.shape[-2] - 2 * r, planes.shape[-1] - 2 * r
    rows = planes @ _band_matrix(kernel, w)
    return _band_matrix(kernel, h).transpose(0, 1) @ rows


def _gaussian_blur(u: Tensor, p: Mapping[str, float], g: torch.Generator | None) -> Tensor:
    """Isotropic Gaussian blur (ImageNet-C) with standard deviation ``sigma`` pixels at 28x28;
    borders are padded by replication."""
    kernel = _gaussian_kernel_1d(p["sigma"] * _spatial_scale(u), u)
    return _separable_blur(u, kernel, pad_mode="replicate")


def _motion_blur(u: Tensor, p: Mapping[str, float], g: torch.Generator | None) -> Tensor:
    """Linear motion blur (ImageNet-C, MNIST-C): each image is averaged along an anti-aliased
    line segment of ``length`` pixels (at 28x28) through its centre, at an angle drawn
    uniformly in [0, 180) degrees per example."""
    n, c, h, w = u.shape
    half = 0.5 * p["length"] * _spatial_scale(u)
    radius = max(1, math.ceil(half))
    angle = _rand((n,), u, g) * math.pi
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    offsets = torch.arange(-radius, radius + 1, device=u.device, dtype=u.dtype)
    oy, ox = offsets[None, :, None], offsets[None, None, :]
    along = ox * cos + oy * sin
    across = oy * cos - ox * sin
    # 1 on the segment, fading linearly over one pixel across it and at its ends
    weight = (1.0 - across.abs()).clamp_min(0.0) * (half + 0.5 - along.abs()).clamp(0.0, 1.0)
    weight = weight / weight.sum(dim=(1, 2), keepdim=True)  # the centre weight is always > 0
    k = 2 * radius + 1
    kernels = weight[:, None].expand(n, c, k, k).reshape(n * c, 1, k, k)
    padded = F.pad(u.reshape(1, n * c, h, w), (radius, radius, radius, radius), mode="replicate")
    return F.conv2d(padded, kernels, groups=n * c).reshape(n, c, h, w)


# -- photometric ------------------------------------------------------------------------------
def _contrast(u: Tensor, p: Mapping[str, float], g: torch.Generator | None) -> Tensor:
    """Contrast reduction (ImageNet-C): ``(u - m) * factor + m`` with ``m`` the mean of each
    image; a smaller factor is a stronger corruption."""
    m = u.mean(dim=(1, 2, 3), keepdim=True)
    return (u - m) * p["factor"] + m


def _brightness(u: Tensor, p: Mapping[str, float], g: torch.Generator | None) -> Tensor:
    """Brightness increase: ``u + delta`` on every channel (ImageNet-C shifts the HSV value
    channel by the same amounts; for grey-level images the two coincide)."""
    return u + p["delta"]


def _occlusion(u: Tensor, p: Mapping[str, float], g: torch.Generator | None) -> Tensor:
    """``count`` axis-aligned rectangles of ``size * H`` by ``size * W`` pixels (rounded, at least
    one), placed uniformly inside the image and filled with ``fill`` on every channel
    (Cutout-style occlusion, DeVries & Taylor 2017); rectangles may overlap."""
    n, _, h, w = u.shape
    count = round(p["count"])
    bh = min(h, max(1, round(p["size"] * h)))
    bw = min(w, max(1, round(p["size"] * w)))
    top = torch.floor(_rand((n, count), u, g) * (h - bh + 1))
    left = torch.floor(_rand((n, count), u, g) * (w - bw + 1))
    rows = torch.arange(h, device=u.device, dtype=u.dtype)
    cols = torch.arange(w, device=u.device, dtype=u.dtype)
    in_rows = (rows >= top[..., None]) & (rows < top[..., None] + bh)  # (N, count, H)
    in_cols = (cols >= left[..., None]) & (cols < left[..., None] + bw)  # (N, count, W)
    mask = (in_rows[..., :, None] & in_cols[..., None, :]).any(dim=1)  # (N, H, W)
    return u.masked_fill(mask[:, None], p["fill"])


# -- geometric (bilinear resampling; what moves in from outside the image is 0, the bottom of
# the range, as in MNIST-C) --------------------------------------------------------------------
def _warp_affine(u: Tensor, theta: Tensor) -> Tensor:
    """Resample ``u`` ``(N, C, H, W)`` at ``theta`` ``(N, 2, 3)`` applied to the output's
    normalised coordinates (``affine_grid`` convention, ``align_corners=False``)."""
    grid = F.affine_grid(theta, list(u.shape), align_corners=False)
    return F.grid_sample(u, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _rotation(u: Tensor, p: Mapping[str, float], g: torch.Generator | None) -> Tensor:
    """Rotation about the centre by ``degrees`` with a random sign per example (MNIST-C)."""
    n, _, h, w = u.shape
    a = _random_sign(n, u, g) * math.radians(p["degrees"])
    cos, sin = torch.cos(a), torch.sin(a)
    zero = torch.zeros_like(a)
    # a pixel-space rotation written in normalised coordinates (x in units of W/2, y of H/2)
    theta = torch.stack(
        [torch.stack([cos, -sin * (h / w), zero], 1), torch.stack([sin * (w / h), cos, zero], 1)],
        1,
    )
    return _warp_affine(u, theta)


def _shift(u: Tensor, p: Mapping[str, float], g: torch.Generator | None) -> Tensor:
    """Translation by ``fraction`` of the image side in a uniformly random direction
    (MNIST-C "translate"); sub-pixel shifts are interpolated bilinearly."""
    n = u.shape[0]
    phi = _rand((n,), u, g) * (2.0 * math.pi)
    eye = torch.eye(2, 3, device=u.device, dtype=u.dtype).repeat(n, 1, 1)
    # normalised coordinates span 2 per image side
    eye[:, 0, 2] = -2.0 * p["fraction"] * torch.cos(phi)
    eye[:, 1, 2] = -2.0 * p["fraction"] * torch.sin(phi)
    return _warp_affine(u, eye)


def _shear(u: Tensor, p: Mapping[str, float], g: torch.Generator | None) -> Tensor:
    """Horizontal shear ``x' = x + factor * y`` (pixels, about the centre) with a random sign
    per example (MNIST-C)."""
    n, _, h, w = u.shape
    theta = torch.eye(2, 3, device=u.device, dtype=u.dtype).repeat(n, 1, 1)
    theta[:, 0, 1] = _random_sign(n, u, g) * (p["factor"] * h / w)
    return _warp_affine(u, theta)


def _elastic(u: Tensor, p: Mapping[str, float], g: torch.Generator | None) -> Tensor:
    """Elastic deformation (Simard et al. 2003, as in MNIST-C and ImageNet-C): white noise
    smoothed by a Gaussian of ``smoothing`` pixels gives a displacement field, rescaled so that
    its root-mean-square length is ``displacement`` pixels (both at 28x28, scaled to the image),
    and the image is resampled bilinearly along it. Rescaling to a fixed RMS keeps the strength
    of one severity the same from draw to draw."""
    n, c, h, w = u.shape
    scale = _spatial_scale(u)
    kernel = _gaussian_kernel_1d(p["smoothing"] * scale, u)
    r = (kernel.numel() - 1) // 2
    # draw on a canvas larger by the kernel radius so the smoothed field has no border effects
    noise = _randn((n, 2, h + 2 * r, w + 2 * r), u, g)
    field_px = _separable_blur(noise, kernel, pad_mode="valid")
    rms = field_px.pow(2).sum(dim=1).mean(dim=(1, 2)).sqrt().clamp_min(1e-12)
    field_px = field_px * (p["displacement"] * scale / rms)[:, None, None, None]
    # pixel displacements to normalised coordinates; grid_sample wants (x, y) last
    to_norm = torch.tensor([2.0 / w, 2.0 / h], device=u.device, dtype=u.dtype)
    displacement = field_px.permute(0, 2, 3, 1) * to_norm
    eye = torch.eye(2, 3, device=u.device, dtype=u.dtype).expand(n, 2, 3)
    grid = F.affine_grid(eye, [n, c, h, w], align_corners=False) + displacement
    return F.grid_sample(u, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# -- the registry ---------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Corruption:
    """One corruption and its table of five severities.

    Attributes:
        name: the registry key, e.g. ``"gaussian_noise"``.
        description: one line, for reports.
        family: ``"noise"``, ``"blur"``, ``"photometric"``, ``"occlusion"`` or ``"geometric"``.
        params: five read-only mappings, one per severity (index ``severity - 1``), e.g.
            ``{"sigma": 0.08}``; the units are described in the module docstring.
        fn: ``fn(u, params, generator)`` on the input rescaled to ``[0, 1]`` (see
            :data:`CorruptionFn`); the result is clipped and rescaled by :meth:`__call__`.
        images_only: True when the corruption needs images ``(N, C, H, W)``; the noise
            corruptions also take flat inputs ``(N, F)``.
        random: False for deterministic corruptions (blur, contrast, brightness), which ignore
            the generator.
    """

    name: str
    description: str
    family: str
    params: tuple[Mapping[str, float], ...]
    fn: CorruptionFn = field(repr=False)
    images_only: bool = True
    random: bool = True

    def __post_init__(self) -> None:
        if len(self.params) != NUM_SEVERITIES:
            raise ConfigError(
                f"corruption {self.name!r}: params: expected {NUM_SEVERITIES} rows, one per "
                f"severity, got {len(self.params)}"
            )
        frozen = tuple(
            MappingProxyType({k: float(v) for k, v in row.items()}) for row in self.params
        )
        object.__setattr__(self, "params", frozen)

    def check_input(self, x: object) -> None:
        """Raise for an input this corruption cannot take: :class:`DataError` for a non-float
        tensor, :class:`ConfigError` for an image-only corruption on non-image input."""
        if not isinstance(x, Tensor) or not x.is_floating_point():
            got = f"dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
            raise DataError(f"x: expected a floating-point tensor, got {got}")
        if x.dim() < 2:
            raise ConfigError(
                f"corruption {self.name!r}: expected a batch (N, ...), got shape {tuple(x.shape)}"
            )
        if self.images_only and not _is_image_batch(x):
            flat = ", ".join(available_corruptions(images=False))
            raise ConfigError(
                f"corruption {self.name!r} needs images (N, C, H, W), got shape "
                f"{tuple(x.shape)}; only the noise corruptions ({flat}) apply to other inputs"
            )

    def __call__(
        self,
        x: Tensor,
        severity: int,
        *,
        generator: torch.Generator | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
    ) -> Tensor:
        """Corrupt the batch ``x`` ``(N, C, H, W)`` (or ``(N, F)`` for noise) at ``severity``
        (1..5). Returns a new tensor of ``x``'s shape, dtype and device, inside ``bounds``;
        ``x`` is not modified. The same generator state gives the same result."""
        severity = _check_severity(severity)
        lo, hi = _check_bounds(bounds)
        self.check_input(x)
        if x.shape[0] == 0:
            return x.detach().clone()
        width = hi - lo
        with torch.no_grad():
            u = (x.detach().to(_work_dtype(x.dtype)) - lo) / width
            out = self.fn(u, self.params[severity - 1], generator)
            return (out.clamp(0.0, 1.0) * width + lo).clamp(lo, hi).to(x.dtype)


def _table(key: str, values: Sequence[float], **fixed: float) -> tuple[Mapping[str, float], ...]:
    return tuple({key: float(v), **fixed} for v in values)


def _registry(items: Iterable[Corruption]) -> dict[str, Corruption]:
    return {c.name: c for c in items}


#: One line for reports per corruption, in registry order.
_DESCRIPTIONS: dict[str, str] = {
    "gaussian_noise": "additive Gaussian noise of standard deviation sigma (fraction of the range)",
    "shot_noise": "Poisson photon noise, Poisson(x * photons) / photons",
    "impulse_noise": "salt and pepper: a fraction amount of the values set to the range's ends",
    "speckle_noise": "multiplicative Gaussian noise, x + x * sigma * N(0, 1)",
    "gaussian_blur": "Gaussian blur of standard deviation sigma pixels (at 28x28)",
    "motion_blur": "blur along a line of length pixels (at 28x28) at a random angle",
    "contrast": "contrast scaled by factor about each image's mean",
    "brightness": "brightness raised by delta (fraction of the range)",
    "occlusion": "count random rectangles of size times the image's sides, filled with fill",
    "rotation": "rotation by degrees, clockwise or anticlockwise at random",
    "shift": "translation by fraction of the image side in a random direction",
    "shear": "horizontal shear by factor, left or right at random",
    "elastic": "elastic deformation with RMS displacement pixels (at 28x28), smoothed over "
    "smoothing pixels",
}

_OCCLUSION_ROWS = tuple(
    {"count": count, "size": size, "fill": 0.5}
    for count, size in ((1, 0.25), (1, 0.35), (2, 0.35), (3, 0.35), (4, 0.4))
)

_ELASTIC_ROWS = _table("displacement", (0.5, 0.9, 1.3, 1.7, 2.2), smoothing=3.5)

#: ``(name, family, fn, parameters at severities 1..5)``, in registry order.
_TABLE: tuple[tuple[str, str, CorruptionFn, tuple[Mapping[str, float], ...]], ...] = (
    ("gaussian_noise", "noise", _gaussian_noise, _table("sigma", (0.08, 0.12, 0.18, 0.26, 0.38))),
    ("shot_noise", "noise", _shot_noise, _table("photons", (60, 25, 12, 5, 3))),
    ("impulse_noise", "noise", _impulse_noise, _table("amount", (0.03, 0.06, 0.09, 0.17, 0.27))),
    ("speckle_noise", "noise", _speckle_noise, _table("sigma", (0.15, 0.2, 0.35, 0.45, 0.6))),
    ("gaussian_blur", "blur", _gaussian_blur, _table("sigma", (0.6, 0.9, 1.2, 1.6, 2.2))),
    ("motion_blur", "blur", _motion_blur, _table("length", (2.0, 3.0, 4.0, 5.5, 7.0))),
    ("contrast", "photometric", _contrast, _table("factor", (0.75, 0.5, 0.4, 0.3, 0.15))),
    ("brightness", "photometric", _brightness, _table("delta", (0.1, 0.2, 0.3, 0.4, 0.5))),
    ("occlusion", "occlusion", _occlusion, _OCCLUSION_ROWS),
    ("rotation", "geometric", _rotation, _table("degrees", (6, 12, 18, 24, 30))),
    ("shift", "geometric", _shift, _table("fraction", (0.04, 0.08, 0.12, 0.16, 0.2))),
    ("shear", "geometric", _shear, _table("factor", (0.1, 0.2, 0.3, 0.4, 0.5))),
    ("elastic", "geometric", _elastic, _ELASTIC_ROWS),
)

#: The noise corruptions take any ``(N, ...)`` input; the others need images.
_ANY_SHAPE = frozenset({"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"})
#: Corruptions that draw nothing from the generator.
_DETERMINISTIC = frozenset({"gaussian_blur", "contrast", "brightness"})

CORRUPTIONS: dict[str, Corruption] = _registry(
    Corruption(
        name,
        _DESCRIPTIONS[name],
        family,
        params,
        fn,
        images_only=name not in _ANY_SHAPE,
        random=name not in _DETERMINISTIC,
    )
    for name, family, fn, params in _TABLE
)


def available_corruptions(*, images: bool = True) -> tuple[str, ...]:
    """Registered corruption names, sorted: all of them for images (``images=True``), the noise
    corruptions only for flat inputs (``images=False``)."""
    return tuple(sorted(n for n, c in CORRUPTIONS.items() if images or not c.images_only))


def get_corruption(name: str, *, field_name: str = "corruption.name") -> Corruption:
    """The registered corruption ``name``; a :class:`ConfigError` lists the names otherwise."""
    if not isinstance(name, str) or name not in CORRUPTIONS:
        raise ConfigError(
            f"{field_name}: unknown corruption {name!r}; expected one of "
            f"{', '.join(available_corruptions())}"
        )
    return CORRUPTIONS[name]


def severity_table() -> dict[str, list[dict[str, float]]]:
    """``{name: [params at severity 1, ..., params at severity 5]}`` (JSON-able), for reports."""
    return {n: [dict(row) for row in CORRUPTIONS[n].params] for n in available_corruptions()}


def corrupt(
    x: Tensor,
    name: str,
    severity: int,
    *,
    generator: torch.Generator | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """Apply corruption ``name`` at ``severity`` (1..5) to the batch ``x``.

    Args:
        x: images ``(N, C, H, W)``, or flat inputs ``(N, F)`` for the noise corruptions;
            floating point, values in ``bounds``.
        name: one of :func:`available_corruptions`.
        severity: 1 (mildest) .. 5 (strongest), indexing the corruption's parameter table.
        generator: the source of all randomness, on ``x``'s device (None: torch's global
            generator); the same state gives the same output.
        bounds: ``(lo, hi)``, the valid input range; the output is clipped to it.

    Returns:
        A new tensor of ``x``'s shape, dtype and device.

    Raises:
        ConfigError: unknown name (listing the names), severity outside 1..5, bad bounds, or an
            image-only corruption on input that is not ``(N, C, H, W)``.
        DataError: ``x`` is not a floating-point tensor.
    """
    return get_corruption(name)(x, severity, generator=generator, bounds=bounds)


def _resolve_names(
    names: Sequence[str] | None, x: Tensor | None, field_name: str
) -> tuple[str, ...]:
    """Validated names; None means every corruption that applies to ``x`` (all if unknown)."""
    if names is None:
        return available_corruptions(images=x is None or _is_image_batch(x))
    if isinstance(names, str) or not isinstance(names, Sequence) or len(names) == 0:
        raise ConfigError(f"{field_name}: expected a non-empty list of names, got {names!r}")
    for i, n in enumerate(names):
        get_corruption(n, field_name=f"{field_name}[{i}]")
    if len(set(names)) != len(names):
        raise ConfigError(f"{field_name}: names must be unique, got {list(names)}")
    return tuple(names)


def _resolve_severities(severities: Sequence[int], field_name: str) -> tuple[int, ...]:
    if isinstance(severities, str) or not isinstance(severities, Sequence) or not severities:
        raise ConfigError(
            f"{field_name}: expected a non-empty list of integers in 1..{NUM_SEVERITIES}, "
            f"got {severities!r}"
        )
    out = tuple(_check_severity(s, f"{field_name}[{i}]") for i, s in enumerate(severities))
    if len(set(out)) != len(out):
        raise ConfigError(f"{field_name}: severities must be unique, got {list(severities)}")
    return out


# -- augmentation -----------------------------------------------------------------------------
class CorruptionAugment:
    """Training-time augmentation by random corruptions.

    Each example is corrupted with probability ``p`` by a corruption drawn uniformly from
    ``names`` at a severity drawn uniformly from ``severities``; the rest pass unchanged. The
    examples sharing a (corruption, severity) draw are corrupted as one batch.

    Args:
        names: corruption names; None means every corruption that applies to the batch (all
            of them for images ``(N, C, H, W)``, the noise ones for flat inputs).
        severities: the severities to draw from (mild ones by default, so that training does not
            see the evaluation's strongest corruptions).
        p: probability that an example is corrupted, in ``[0, 1]``.
        bounds: ``(lo, hi)``, the valid input range.

    Raises:
        ConfigError: an unknown name, a severity outside 1..5, ``p`` outside ``[0, 1]`` or bad
            bounds (on construction); an image-only corruption named for non-image input (on
            call).
    """

    names: tuple[str, ...] | None
    severities: tuple[int, ...]
    p: float
    bounds: tuple[float, float]

    def __init__(
        self,
        names: Sequence[str] | None = None,
        severities: Sequence[int] = (1, 2, 3),
        p: float = 0.5,
        *,
        bounds: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        self.names = None if names is None else _resolve_names(names, None, "augment.names")
        self.severities = _resolve_severities(severities, "augment.severities")
        if (
            isinstance(p, bool)
            or not isinstance(p, numbers.Real)
            or not (math.isfinite(float(p)) and 0.0 <= float(p) <= 1.0)
        ):
            raise ConfigError(f"augment.p: expected a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.bounds = _check_bounds(bounds, "augment.bounds")

    def __repr__(self) -> str:
        return (
            f"CorruptionAugment(names={self.names!r}, severities={self.severities!r}, "
            f"p={self.p!r}, bounds={self.bounds!r})"
        )

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The augmented batch: ``x``'s shape, dtype and device; ``x`` is not modified."""
        return self.apply_with_mask(x, generator)[0]

    def apply_with_mask(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(x_augmented, corrupted)``: the batch and a ``(N,)`` bool mask of the examples that
        were drawn for corruption (a corruption may leave an example's values unchanged, e.g.
        brightness on a white image)."""
        names = self.names if self.names is not None else _resolve_names(None, x, "augment")
        for name in names:
            CORRUPTIONS[name].check_input(x)
        n = x.shape[0]
        chosen = torch.rand(n, generator=generator, device=x.device) < self.p
        which = torch.randint(len(names), (n,), generator=generator, device=x.device)
        level = torch.randint(len(self.severities), (n,), generator=generator, device=x.device)
        out = x.detach().clone()
        code = torch.where(chosen, which * len(self.severities) + level, -1)
        for c in torch.unique(code).tolist():
            if c < 0:
                continue
            idx = torch.nonzero(code == c).flatten()
            name, severity = (
                names[c // len(self.severities)],
                self.severities[c % len(self.severities)],
            )
            out[idx] = corrupt(x[idx], name, severity, generator=generator, bounds=self.bounds)
        return out, chosen


# -- evaluation -------------------------------------------------------------------------------
def _derived_seed(seed: int, name: str, severity: int) -> int:
    """A stable 63-bit seed for one (corruption, severity) cell: adding or removing other
    corruptions does not change this cell's corrupted inputs."""
    digest = hashlib.sha256(f"bastion.corruptions/{seed}/{name}/{severity}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


@dataclass(frozen=True)
class CorruptionAccuracy:
    """Accuracy of a model on a corruption suite.

    Attributes:
        clean_accuracy: accuracy on the uncorrupted inputs, in [0, 1].
        accuracy: ``{name: {severity: accuracy}}``, fractions in [0, 1] of all N examples.
        seed: the seed every (corruption, severity) cell's generator was derived from.
    """

    clean_accuracy: float
    accuracy: dict[str, dict[int, float]]
    seed: int

    @property
    def mean_accuracy(self) -> float:
        """Mean over every corruption and severity evaluated."""
        values = [a for row in self.accuracy.values() for a in row.values()]
        return sum(values) / len(values)

    @property
    def per_corruption(self) -> dict[str, float]:
        """``{name: mean accuracy over its severities}``."""
        return {n: sum(row.values()) / len(row) for n, row in self.accuracy.items()}

    @property
    def per_severity(self) -> dict[int, float]:
        """``{severity: mean accuracy over the corruptions}``."""
        severities = sorted({s for row in self.accuracy.values() for s in row})
        return {
            s: sum(row[s] for row in self.accuracy.values()) / len(self.accuracy)
            for s in severities
        }

    @property
    def errors(self) -> dict[str, dict[int, float]]:
        """``{name: {severity: 1 - accuracy}}``, the input of :func:`mean_corruption_error`."""
        return {n: {s: 1.0 - a for s, a in row.items()} for n, row in self.accuracy.items()}

    @property
    def clean_error(self) -> float:
        return 1.0 - self.clean_accuracy

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (severities as string keys), for scorecards."""
        return {
            "clean_accuracy": self.clean_accuracy,
            "mean_accuracy": self.mean_accuracy,
            "accuracy": {
                n: {str(s): a for s, a in row.items()} for n, row in self.accuracy.items()
            },
            "per_corruption": self.per_corruption,
            "per_severity": {str(s): a for s, a in self.per_severity.items()},
            "seed": self.seed,
            "params": {
                n: {str(s): dict(CORRUPTIONS[n].params[s - 1]) for s in row}
                for n, row in self.accuracy.items()
            },
        }


def _count_correct(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> int:
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        pred = model(x[i : i + batch_size]).argmax(dim=1)
        correct += int((pred == y[i : i + batch_size]).sum())
    return correct


def corruption_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    names: Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    batch_size: int = 256,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> CorruptionAccuracy:
    """Accuracy of ``model`` on every corruption and severity (the ImageNet-C protocol).

    Args:
        model: maps inputs ``(N, *input_shape)`` in ``bounds`` to logits ``(N, classes)``; it is
            put in eval mode for the evaluation and its previous mode restored.
        x: inputs ``(N, C, H, W)`` (or ``(N, F)``, noise corruptions only), on the model's device.
        y: labels ``(N,)``, integer class indices.
        names: corruptions to run; None is every one that applies to ``x``.
        severities: severities to run, each in 1..5.
        seed: each (corruption, severity) cell draws from its own generator on ``x``'s device,
            seeded from ``(seed, name, severity)``, so a cell's result does not depend on which
            other cells run, nor on ``batch_size``.
        batch_size: examples per forward pass.
        bounds: the valid input range.

    Returns:
        A :class:`CorruptionAccuracy` (``accuracy[name][severity]``, ``mean_accuracy``, ...).
    """
    names_t = _resolve_names(names, x, "corruption.names")
    sev_t = _resolve_severities(severities, "corruption.severities")
    _check_bounds(bounds)
    for name in names_t:
        CORRUPTIONS[name].check_input(x)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"corruption.seed: expected a non-negative integer, got {seed!r}")
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, numbers.Integral)
        or batch_size < 1
    ):
        raise ConfigError(f"corruption.batch_size: expected a positive integer, got {batch_size!r}")
    if x.shape[0] == 0:
        raise ConfigError("corruption: no examples to evaluate")
    if not isinstance(y, Tensor) or y.shape != (x.shape[0],) or y.is_floating_point():
        raise DataError(
            f"y: expected integer labels of shape ({x.shape[0]},), got "
            f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}"
        )
    n = x.shape[0]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            clean = _count_correct(model, x, y, int(batch_size)) / n
            table: dict[str, dict[int, float]] = {}
            for name in names_t:
                row: dict[int, float] = {}
                for severity in sev_t:
                    gen = torch.Generator(device=x.device)
                    gen.manual_seed(_derived_seed(int(seed), name, severity))
                    correct = 0
                    for i in range(0, n, _CORRUPT_CHUNK):
                        xc = corrupt(
                            x[i : i + _CORRUPT_CHUNK], name, severity, generator=gen, bounds=bounds
                        )
                        correct += _count_correct(model, xc, y[i : i + _CORRUPT_CHUNK], batch_size)
                    row[severity] = correct / n
                table[name] = row
    finally:
        model.train(was_training)
    return CorruptionAccuracy(clean_accuracy=clean, accuracy=table, seed=int(seed))


# -- corruption error (Hendrycks & Dietterich 2019, section 4) --------------------------------
Errors = Mapping[str, Mapping[int, float]]


def _as_errors(e: Errors | CorruptionAccuracy) -> Errors:
    return e.errors if isinstance(e, CorruptionAccuracy) else e


def _check_pair(model: Errors, baseline: Errors) -> None:
    if not model:
        raise ConfigError("errors_model: expected at least one corruption")
    if set(model) != set(baseline):
        raise ConfigError(
            f"errors_baseline: corruptions {sorted(baseline)} do not match errors_model's "
            f"{sorted(model)}"
        )
    for name in model:
        if not model[name] or set(model[name]) != set(baseline[name]):
            raise ConfigError(
                f"errors_baseline[{name!r}]: severities {sorted(baseline[name])} do not match "
                f"errors_model's {sorted(model[name])}"
            )


def corruption_errors(
    errors_model: Errors | CorruptionAccuracy, errors_baseline: Errors | CorruptionAccuracy
) -> dict[str, float]:
    """Corruption error per corruption: ``CE_c = sum_s E_model[c][s] / sum_s E_base[c][s]``.

    Errors are ``{name: {severity: error rate}}`` (or :class:`CorruptionAccuracy`); both must
    cover the same corruptions and severities. Raises :class:`ConfigError` when they do not, or
    when the baseline makes no error on some corruption (its CE is undefined).
    """
    m, b = _as_errors(errors_model), _as_errors(errors_baseline)
    _check_pair(m, b)
    out: dict[str, float] = {}
    for name in m:
        denom = sum(b[name].values())
        if denom <= 0:
            raise ConfigError(
                f"errors_baseline[{name!r}]: the baseline makes no error on this corruption, so "
                "its corruption error is undefined"
            )
        out[name] = sum(m[name].values()) / denom
    return out


def mean_corruption_error(
    errors_model: Errors | CorruptionAccuracy, errors_baseline: Errors | CorruptionAccuracy
) -> float:
    """mCE (Hendrycks & Dietterich 2019): the mean over corruptions of :func:`corruption_errors`.
    A model scored against itself has mCE 1; below 1 is more robust than the baseline."""
    ce = corruption_errors(errors_model, errors_baseline)
    return sum(ce.values()) / len(ce)


def _clean_error(given: float | None, e: Errors | CorruptionAccuracy, field_name: str) -> float:
    if given is None:
        if isinstance(e, CorruptionAccuracy):
            return e.clean_error
        raise ConfigError(f"{field_name}: required when the errors are given as a mapping")
    return float(given)


def relative_corruption_errors(
    errors_model: Errors | CorruptionAccuracy,
    errors_baseline: Errors | CorruptionAccuracy,
    *,
    clean_error_model: float | None = None,
    clean_error_baseline: float | None = None,
) -> dict[str, float]:
    """Relative CE per corruption: the degradation from the clean error,
    ``sum_s (E_model[c][s] - E_model_clean) / sum_s (E_base[c][s] - E_base_clean)``.

    The clean errors default to those of :class:`CorruptionAccuracy` arguments and are required
    for mappings. Raises :class:`ConfigError` where the baseline does not degrade (the ratio is
    undefined).
    """
    m, b = _as_errors(errors_model), _as_errors(errors_baseline)
    _check_pair(m, b)
    cm = _clean_error(clean_error_model, errors_model, "clean_error_model")
    cb = _clean_error(clean_error_baseline, errors_baseline, "clean_error_baseline")
    out: dict[str, float] = {}
    for name in m:
        denom = sum(v - cb for v in b[name].values())
        if denom <= 0:
            raise ConfigError(
                f"errors_baseline[{name!r}]: the baseline's error does not rise above its clean "
                "error on this corruption, so the relative corruption error is undefined"
            )
        out[name] = sum(v - cm for v in m[name].values()) / denom
    return out


def relative_mean_corruption_error(
    errors_model: Errors | CorruptionAccuracy,
    errors_baseline: Errors | CorruptionAccuracy,
    *,
    clean_error_model: float | None = None,
    clean_error_baseline: float | None = None,
) -> float:
    """Relative mCE (Hendrycks & Dietterich 2019): the mean of
    :func:`relative_corruption_errors` over corruptions."""
    rce = relative_corruption_errors(
        errors_model,
        errors_baseline,
        clean_error_model=clean_error_model,
        clean_error_baseline=clean_error_baseline,
    )
    return sum(rce.values()) / len(rce)
