"""Adversarial patches (Brown, Mané, Roy, Abadi & Gilmer 2017, "Adversarial patch").

A patch is a small image ``p`` ``(C, h, w)`` pasted over part of any input, with no bound on how
much it changes the pixels it covers, only on where. It is fitted to work wherever it lands, by
Expectation over Transformation (Athalye et al. 2018): Brown et al. maximise

    E_{x ~ X, l ~ L, t ~ T} [ log Pr(target | A(p, x, l, t)) ]

over the patch, where ``A`` pastes ``p`` onto ``x`` at location ``l`` after a transformation ``t``
(here a random scale and rotation, made differentiable with ``affine_grid``/``grid_sample``).
Untargeted patches maximise the loss of the true class instead. Each minibatch takes one
signed-gradient step on the patch (a step of ``step_size`` times the input range per pixel) and
clamps the patch to the input bounds.

Like a universal perturbation, a patch is *fitted* (:meth:`AdversarialPatch.fit`) and then
*applied* (:func:`apply_patch`) to new inputs; :func:`patch_success_rate` measures it.

Patches and the Lp threat model: a patch is bounded in support (``h x w`` pixels), not in an Lp
norm, while every :class:`Attack`'s output is projected onto its threat's eps-ball. A patch
projected onto a small ball is no longer a patch (a faint square), and its "success" would not
be the patch's. So :class:`PatchAttack`, the :class:`Attack` adapter, refuses to run under a
threat whose ball does not contain every possible patch (:func:`patch_covering_eps` gives the
smallest eps that does: ``hi - lo`` for linf), and the projection is then a no-op. Report patch
robustness with :func:`patch_success_rate` (and name the patch size), not in an Lp scorecard.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from bastion.attacks.base import Attack, Opening, predict
from bastion.attacks.engine import LOSSES
from bastion.attacks.registry import register
from bastion.attacks.settings import AttackSettings
from bastion.errors import AttackInputError, ConfigError
from bastion.threat import ThreatModel

PatchLoss = Literal["ce", "cw"]
PatchInit = Literal["random", "gray"]
PatchLocation = Literal["random", "center"]
Location = str | tuple[int, int] | Tensor | None


@dataclass(frozen=True)
class PatchResult:
    """A fitted patch.

    Attributes:
        patch: ``(C, h, w)``, inside the bounds it was fitted for.
        success_rate: on the fit set, pasted at a random location per example (no scaling or
            rotation): targeted, the share of examples whose true class is not the target that
            now predict it; untargeted, the share of correctly classified examples that are now
            misclassified.
        history: per epoch, the same rate under the random placements and transformations that
            epoch trained on.
        target: the target class, or None.
        queries: forward passes spent per fit example.
    """

    patch: Tensor
    success_rate: float
    history: tuple[float, ...]
    target: int | None = None
    queries: int = 0


def patch_side(size: float | int, height: int, width: int) -> tuple[int, int]:
    """The patch's ``(h, w)`` in pixels: ``size`` a float in (0, 1] is a fraction of each image
    side (rounded, at least 1), an int is a side in pixels."""
    if isinstance(size, Integral):
        h = w = int(size)
    else:
        h = max(1, round(float(size) * height))
        w = max(1, round(float(size) * width))
    if h > height or w > width:
        raise AttackInputError(f"patch.size: a {h}x{w} patch does not fit {height}x{width} images")
    return h, w


def _check_images(x: Tensor, name: str = "x") -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 4:
        raise AttackInputError(
            f"{name}: expected floating-point images (N, C, H, W), got "
            f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}"
        )


def _check_labels(x: Tensor, y: Tensor) -> None:
    if not isinstance(y, Tensor) or y.shape != (x.shape[0],) or y.is_floating_point():
        raise AttackInputError(f"y: expected integer labels of shape ({x.shape[0]},)")


def _check_patch(patch: Tensor, x: Tensor) -> None:
    if not isinstance(patch, Tensor) or not patch.is_floating_point() or patch.dim() != 3:
        raise AttackInputError("patch: expected a floating-point tensor (C, h, w)")
    c, h, w = patch.shape
    if c != x.shape[1] or h > x.shape[2] or w > x.shape[3] or h == 0 or w == 0:
        raise AttackInputError(
            f"patch: shape {tuple(patch.shape)} does not fit images of shape {tuple(x.shape[1:])}"
        )


def paste(x: Tensor, patch: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Paste ``patch`` ``(C, h, w)`` onto each image of ``x`` ``(N, C, H, W)`` with its top-left
    corner at ``(rows[i], cols[i])`` (``(N,)`` int64 each), exactly (no interpolation).
    Differentiable with respect to ``patch``; parts falling outside the image are dropped."""
    _, h, w = patch.shape
    ri = torch.arange(x.shape[2], device=x.device)[None, :] - rows[:, None]  # (N, H)
    ci = torch.arange(x.shape[3], device=x.device)[None, :] - cols[:, None]  # (N, W)
    mask = ((ri >= 0) & (ri < h))[:, :, None] & ((ci >= 0) & (ci < w))[:, None, :]
    vals = patch[:, ri.clamp(0, h - 1)[:, :, None], ci.clamp(0, w - 1)[:, None, :]]
    return torch.where(mask[:, None], vals.permute(1, 0, 2, 3).to(x.dtype), x)


def paste_affine(
    x: Tensor, patch: Tensor, centers: Tensor, scales: Tensor, angles: Tensor
) -> Tensor:
    """Paste ``patch`` ``(C, h, w)`` onto ``x`` ``(N, C, H, W)`` centred at ``centers`` ``(N, 2)``
    (row, col, in pixel units: pixel ``(i, j)`` spans ``[i, i + 1) x [j, j + 1)``), scaled by
    ``scales`` ``(N,)`` and rotated by ``angles`` ``(N,)`` radians (counter-clockwise on screen
    for positive angles), by bilinear resampling. The result is a convex combination of image
    and patch pixels, so it stays inside the bounds of both; with scale 1, angle 0 and an
    integer top-left corner it equals :func:`paste`. Differentiable in ``patch``."""
    n, c, height, width = x.shape
    _, h, w = patch.shape
    cos, sin = torch.cos(angles), torch.sin(angles)
    half_w, half_h = scales * w / 2, scales * h / 2
    # output pixel centre p = (u + 1) * size / 2 for normalised u in [-1, 1]; the patch
    # coordinate is v = D^-1 R^-1 (p - c) with R the rotation and D the patch's half sides
    px = (width / 2 - centers[:, 1], height / 2 - centers[:, 0])
    theta = torch.stack(
        [
            torch.stack(
                [
                    cos * width / 2 / half_w,
                    -sin * height / 2 / half_w,
                    (cos * px[0] - sin * px[1]) / half_w,
                ],
                dim=1,
            ),
            torch.stack(
                [
                    sin * width / 2 / half_h,
                    cos * height / 2 / half_h,
                    (sin * px[0] + cos * px[1]) / half_h,
                ],
                dim=1,
            ),
        ],
        dim=1,
    ).to(x.dtype)
    grid = F.affine_grid(theta, [n, c, height, width], align_corners=False)
    src = patch.to(x.dtype)[None].expand(n, -1, -1, -1)
    sampled = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    ones = torch.ones((n, 1, h, w), dtype=x.dtype, device=x.device)
    cover = F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return x * (1 - cover) + sampled


def _random_corners(
    n: int,
    height: int,
    width: int,
    h: int,
    w: int,
    generator: torch.Generator | None,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    rows = torch.randint(0, height - h + 1, (n,), generator=generator, device=device)
    cols = torch.randint(0, width - w + 1, (n,), generator=generator, device=device)
    return rows, cols


def _corners(
    x: Tensor, h: int, w: int, location: Location, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    n, _, height, width = x.shape
    dev = x.device
    if location is None or (isinstance(location, str) and location == "center"):
        r, c = (height - h) // 2, (width - w) // 2
        return torch.full((n,), r, device=dev), torch.full((n,), c, device=dev)
    if isinstance(location, str):
        if location != "random":
            raise AttackInputError(
                f"location: expected None, 'center', 'random', (row, col) or an (N, 2) tensor, "
                f"got {location!r}"
            )
        return _random_corners(n, height, width, h, w, generator, dev)
    if isinstance(location, Tensor):
        if location.shape != (n, 2) or location.is_floating_point():
            raise AttackInputError(
                f"location: expected an integer tensor of shape ({n}, 2), got "
                f"{tuple(location.shape)} {location.dtype}"
            )
        rows, cols = location[:, 0].long().to(dev), location[:, 1].long().to(dev)
    else:
        if (
            not isinstance(location, Sequence)
            or len(location) != 2
            or not all(isinstance(v, Integral) and not isinstance(v, bool) for v in location)
        ):
            raise AttackInputError(f"location: expected (row, col) integers, got {location!r}")
        rows = torch.full((n,), int(location[0]), device=dev)
        cols = torch.full((n,), int(location[1]), device=dev)
    if n and (
        int(rows.min()) < 0
        or int(cols.min()) < 0
        or int(rows.max()) > height - h
        or int(cols.max()) > width - w
    ):
        raise AttackInputError(
            f"location: a {h}x{w} patch at rows [{int(rows.min())}, {int(rows.max())}], cols "
            f"[{int(cols.min())}, {int(cols.max())}] leaves {height}x{width} images; expected "
            f"0 <= row <= {height - h} and 0 <= col <= {width - w}"
        )
    return rows, cols


def apply_patch(
    x: Tensor,
    patch: Tensor,
    *,
    location: Location = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Paste ``patch`` ``(C, h, w)`` onto every image of ``x`` ``(N, C, H, W)``.

    Args:
        location: where its top-left corner goes: None or ``"center"`` (centred), ``"random"``
            (uniform per image over the positions where it fits whole, drawn from
            ``generator``), ``(row, col)`` for every image, or an ``(N, 2)`` integer tensor.

    Returns a new tensor; ``x`` is unchanged. The pasted pixels are the patch's exactly.
    """
    _check_images(x)
    _check_patch(patch, x)
    rows, cols = _corners(x, patch.shape[1], patch.shape[2], location, generator)
    return paste(x, patch.to(x.device), rows, cols)


def _eligible(y: Tensor, pred_clean: Tensor | None, target: int | None) -> Tensor:
    """The examples a patch can succeed on: targeted, those not of the target class;
    untargeted, those the model classifies correctly without the patch."""
    if target is not None:
        return y != target
    if pred_clean is None:
        raise ValueError("an untargeted success rate needs the clean predictions")
    return pred_clean == y


def _hits(pred: Tensor, y: Tensor, eligible: Tensor, target: int | None) -> Tensor:
    """Eligible examples the patch succeeded on: predicting the target, or misclassified."""
    return eligible & (pred == target if target is not None else pred != y)


def _rate(hits: Tensor, eligible: Tensor) -> float:
    count = int(eligible.sum())
    return int(hits.sum()) / count if count else 0.0


def patch_success_rate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    patch: Tensor,
    *,
    target: int | None = None,
    location: Location = "random",
    generator: torch.Generator | None = None,
) -> float:
    """How well ``patch`` works on ``(x, y)``: with ``target``, the share of the examples whose
    true class is not the target that predict it once patched; untargeted, the share of the
    correctly classified examples that are misclassified once patched (0.0 when none is
    eligible). ``location`` as :func:`apply_patch` (random per image by default)."""
    _check_images(x)
    _check_labels(x, y)
    if target is not None and (isinstance(target, bool) or not isinstance(target, Integral)):
        raise AttackInputError(f"target: expected a class index or None, got {target!r}")
    y = y.long()
    pred = predict(model, apply_patch(x, patch, location=location, generator=generator))
    eligible = _eligible(y, predict(model, x) if target is None else None, target)
    return _rate(_hits(pred, y, eligible, target), eligible)


class PatchSettings(AttackSettings):
    """Settings of :class:`AdversarialPatch` (Brown et al. 2017)."""

    size: int | float = Field(
        default=0.25,
        description="patch side: a fraction of the image side, or pixels",
        json_schema_extra={
            "type": "number or integer",
            "bounds": "(0, 1] or >= 1",
            "expected": "a fraction of the image side in (0, 1] or a side in pixels "
            "(an integer >= 1)",
        },
    )
    epochs: int = Field(default=20, ge=1, description="passes over the fit set")
    step_size: float = Field(
        default=0.05, gt=0, description="signed-gradient step, share of the range"
    )
    batch_size: int = Field(default=64, ge=1, description="examples per gradient")
    loss: PatchLoss = Field(
        default="ce", description="cross-entropy (ce) or Carlini-Wagner margin (cw)"
    )
    scale_range: tuple[float, float] = Field(
        default=(1.0, 1.0),
        description="[low, high] of the random scale of each placement",
        json_schema_extra={
            "type": "[number, number]",
            "bounds": "0 < low <= high",
            "expected": "[low, high], two numbers with 0 < low <= high",
        },
    )
    max_rotation: float = Field(
        default=0.0, ge=0, le=180, description="largest random rotation, degrees"
    )
    init: PatchInit = Field(
        default="random", description="starting patch: uniform (random) or mid-range"
    )

    @field_validator("scale_range", mode="before")
    @classmethod
    def _pair(cls, v: object) -> object:
        return tuple(v) if isinstance(v, list) else v  # YAML writes a pair as a list

    @field_validator("size")
    @classmethod
    def _size(cls, v: int | float) -> int | float:
        if (v < 1) if isinstance(v, int) else not 0 < v <= 1:
            raise ValueError(
                "expected a fraction of the image side in (0, 1] or a side in pixels "
                f"(an integer >= 1), got {v!r}"
            )
        return v

    @field_validator("scale_range")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError(f"expected [low, high] with 0 < low <= high, got {list(v)}")
        return float(v[0]), float(v[1])


class PatchAttackSettings(PatchSettings):
    """Settings of :class:`PatchAttack`: those of the fit and where the patch goes."""

    location: PatchLocation = Field(
        default="random", description="where the patch goes at test time"
    )


class AdversarialPatch:
    """Fits an adversarial patch by Expectation over Transformation (Brown et al. 2017).

    Args:
        size: the patch side, a fraction of the image side in (0, 1] (0.25) or an integer
            number of pixels. The patch is ``h x w`` with ``h = round(size * H)``.
        epochs: passes over the fit set (20).
        step_size: the signed-gradient step per minibatch, as a share of the input range (0.05).
        batch_size: examples per gradient (64).
        loss: ``"ce"`` (cross-entropy) or ``"cw"`` (margin); targeted fits descend it towards
            the target, untargeted ones climb it away from the true class.
        scale_range: ``[low, high]``: each training placement scales the patch by a factor drawn
            uniformly from it ((1.0, 1.0): no scaling).
        max_rotation: each training placement rotates the patch by an angle drawn uniformly
            from ``[-max_rotation, max_rotation]`` degrees (0: none).
        init: the starting patch, ``"random"`` (uniform in the bounds) or ``"gray"`` (mid-range).

    Every training placement puts the patch at a uniformly random location where the unscaled
    patch fits whole. With scaling or rotation, placements are bilinear resamplings
    (:func:`paste_affine`); otherwise exact pastes (:func:`paste`).
    """

    name = "patch"

    def __init__(
        self,
        *,
        size: float | int = 0.25,
        epochs: int = 20,
        step_size: float = 0.05,
        batch_size: int = 64,
        loss: str = "ce",
        scale_range: tuple[float, float] = (1.0, 1.0),
        max_rotation: float = 0.0,
        init: str = "random",
    ):
        s = PatchSettings.of(locals(), where=self.name)
        self.size, self.epochs, self.step_size = s.size, s.epochs, float(s.step_size)
        self.batch_size, self.loss, self.scale_range = s.batch_size, s.loss, s.scale_range
        self.max_rotation, self.init = float(s.max_rotation), s.init

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    @property
    def transforms(self) -> bool:
        """Whether training placements scale or rotate the patch."""
        return self.scale_range != (1.0, 1.0) or self.max_rotation > 0

    def _place(
        self, x: Tensor, patch: Tensor, h: int, w: int, generator: torch.Generator | None
    ) -> Tensor:
        """One random training placement per image of ``x``."""
        n, _, height, width = x.shape
        rows, cols = _random_corners(n, height, width, h, w, generator, x.device)
        if not self.transforms:
            return paste(x, patch, rows, cols)
        lo, hi = self.scale_range
        u = torch.rand((2, n), generator=generator, device=x.device, dtype=x.dtype)
        scales = lo + (hi - lo) * u[0]
        angles = math.radians(self.max_rotation) * (2 * u[1] - 1)
        centers = torch.stack([rows + h / 2, cols + w / 2], dim=1).to(x.dtype)
        return paste_affine(x, patch, centers, scales, angles)

    def _objective(self, logits: Tensor, y: Tensor, target: int | None) -> Tensor:
        loss = LOSSES[self.loss]
        if target is None:
            return loss(logits, y)
        return -loss(logits, torch.full_like(y, target))

    def fit(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        target: int | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
        generator: torch.Generator | None = None,
    ) -> PatchResult:
        """Fit a patch on images ``x`` ``(N, C, H, W)`` with labels ``y`` ``(N,)``.

        Args:
            target: the class the patch should make the model predict; None: any wrong class.
            bounds: the valid pixel range; the patch stays inside it.
            generator: the source of all randomness (initial patch, order, placements).

        The model's parameters get no gradients and its train/eval mode is left as it is.
        """
        try:
            space = ThreatModel("linf", 0.0, bounds)  # validates the bounds
        except ConfigError as e:
            raise AttackInputError(f"bounds: expected (lo, hi) with lo < hi, got {bounds!r}") from e
        lo, hi = space.bounds
        _check_images(x)
        space.validate_inputs(x)
        _check_labels(x, y)
        if x.shape[0] == 0:
            raise AttackInputError("x: expected at least one image to fit a patch on")
        x, y = x.detach(), y.long()
        with torch.no_grad():
            num_classes = int(model(x[:1]).shape[1])
        if target is not None and (
            isinstance(target, bool)
            or not isinstance(target, Integral)
            or not 0 <= int(target) < num_classes
        ):
            raise AttackInputError(
                f"target: expected a class index in [0, {num_classes}) or None, got {target!r}"
            )
        target = int(target) if target is not None else None
        n, c, height, width = x.shape
        h, w = patch_side(self.size, height, width)

        if self.init == "random":
            u = torch.rand((c, h, w), generator=generator, device=x.device, dtype=x.dtype)
            patch = lo + (hi - lo) * u
        else:
            patch = torch.full((c, h, w), (lo + hi) / 2, device=x.device, dtype=x.dtype)
        eligible = _eligible(y, predict(model, x) if target is None else None, target)
        step = self.step_size * (hi - lo)
        history: list[float] = []
        for _epoch in range(self.epochs):
            order = torch.randperm(n, generator=generator, device=x.device)
            hits = torch.zeros(n, dtype=torch.bool, device=x.device)
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                p = patch.detach().requires_grad_(True)
                with torch.enable_grad():
                    logits = model(self._place(x[idx], p, h, w, generator))
                    obj = self._objective(logits, y[idx], target).sum()
                    (grad,) = torch.autograd.grad(obj, p)
                patch = (patch + step * grad.sign()).clamp(lo, hi)
                hits[idx] = _hits(logits.detach().argmax(1), y[idx], eligible[idx], target)
            history.append(_rate(hits, eligible))
        final = predict(model, apply_patch(x, patch, location="random", generator=generator))
        rate = _rate(_hits(final, y, eligible, target), eligible)
        queries = self.epochs + 1 + (1 if target is None else 0)
        return PatchResult(patch.detach(), rate, tuple(history), target, queries)


def patch_covering_eps(threat: ThreatModel, patch_shape: Sequence[int]) -> float:
    """The smallest eps of ``threat``'s norm whose ball contains every perturbation a patch of
    ``patch_shape`` ``(C, h, w)`` can make within ``threat.bounds``: ``r`` for linf,
    ``r sqrt(C h w)`` for l2 and ``r C h w`` for l1, with ``r = hi - lo``."""
    r = threat.bounds[1] - threat.bounds[0]
    k = math.prod(int(s) for s in patch_shape)
    if threat.norm == "linf":
        return r
    if threat.norm == "l2":
        return r * math.sqrt(k)
    return r * k


@register("patch", knowledge="white-box", settings=PatchAttackSettings)
class PatchAttack(Attack):
    """The :class:`Attack` adapter of :class:`AdversarialPatch`: fit one patch on the batch it is
    given (one per target class for a targeted call, each on the examples asking for it), then
    paste it onto that batch.

    Args: as :class:`AdversarialPatch`, plus ``location``, where the patch is pasted on the
    batch: ``"random"`` (per image, from the call's generator) or ``"center"``.

    The threat model must contain every patch: its eps must be at least
    :func:`patch_covering_eps` (``hi - lo`` for linf, e.g. ``ThreatModel("linf", 1.0)`` for
    pixels in [0, 1]); otherwise this raises :class:`ConfigError` rather than let the base
    class's projection shrink the patch into something that is not a patch. Under such a
    threat the eps-ball says nothing about the patch (only its size does), so patch robustness
    belongs in a :func:`patch_success_rate` report that names the size, not in an Lp scorecard.
    Like :class:`~bastion.attacks.universal.UniversalAttack`, one patch serves the whole batch,
    so it is weaker than a per-example attack with the same support.
    """

    def __init__(
        self,
        *,
        size: float | int = 0.25,
        epochs: int = 20,
        step_size: float = 0.05,
        batch_size: int = 64,
        loss: str = "ce",
        scale_range: tuple[float, float] = (1.0, 1.0),
        max_rotation: float = 0.0,
        init: str = "random",
        location: str = "random",
    ):
        s = PatchAttackSettings.of(locals(), where=self.name)
        fitter = AdversarialPatch(**s.model_dump(exclude={"location"}))
        self.size = fitter.size
        self.epochs = fitter.epochs
        self.step_size = fitter.step_size
        self.batch_size = fitter.batch_size
        self.loss = fitter.loss
        self.scale_range = fitter.scale_range
        self.max_rotation = fitter.max_rotation
        self.init = fitter.init
        self.location = s.location

    def _fitter(self) -> AdversarialPatch:
        return AdversarialPatch(
            size=self.size,
            epochs=self.epochs,
            step_size=self.step_size,
            batch_size=self.batch_size,
            loss=self.loss,
            scale_range=self.scale_range,
            max_rotation=self.max_rotation,
            init=self.init,
        )

    def _run(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        threat: ThreatModel,
        *,
        targets: Tensor | None,
        generator: torch.Generator | None,
        opening: Opening,
    ) -> tuple[Tensor, Tensor]:
        _check_images(x)
        h, w = patch_side(self.size, x.shape[2], x.shape[3])
        need = patch_covering_eps(threat, (x.shape[1], h, w))
        if threat.eps < need * (1 - 1e-9):
            raise ConfigError(
                f"threat.eps: the patch attack needs a {threat.norm} ball that contains every "
                f"{h}x{w} patch, eps >= {need:.6g}, got {threat.eps}: a patch is bounded by its "
                f"size, not an Lp norm; set eps to {need:.6g} (bastion attack --eps {need:.6g}, "
                "or leave --eps out)"
            )
        fitter = self._fitter()
        lo, hi = threat.bounds
        queries = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        x_adv = x.clone()
        groups: list[tuple[Tensor, int | None]]
        if targets is None:
            groups = [(torch.ones_like(y, dtype=torch.bool), None)]
        else:
            groups = [(targets == t, int(t)) for t in torch.unique(targets).tolist()]
        for mask, t in groups:
            res = fitter.fit(
                model, x[mask], y[mask], target=t, bounds=(lo, hi), generator=generator
            )
            x_adv[mask] = apply_patch(
                x[mask], res.patch, location=self.location, generator=generator
            )
            queries[mask] += res.queries
        return x_adv, queries
