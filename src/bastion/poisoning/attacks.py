"""Training-time attacks: poison a training set so that the model learns a backdoor or a skew.

Every attack here takes tensors ``x`` (float32 ``(N, C, H, W)`` in ``[0, 1]``) and ``y`` (int64
``(N,)``), draws its randomness from ``numpy.random.default_rng(seed)`` (no global generator is
touched), and returns a :class:`PoisonedSet`: the poisoned copy of the data plus the record of
which indices were changed and how, so that a defence can be scored against the truth.

Attacks:

* BadNets (Gu, Dolan-Gavitt and Garg 2017, "BadNets: identifying vulnerabilities in the machine
  learning model supply chain"): stamp a small patch on a fraction of the training images and
  relabel them (dirty label), either all to one target class (all-to-one) or each class ``c`` to
  ``c + 1 mod K`` (all-to-all).
* Blended trigger (Chen, Liu, Li, Lu and Song 2017, "Targeted backdoor attacks on deep learning
  systems using data poisoning"): blend a full-image pattern into the input,
  ``x' = (1 - alpha) x + alpha p``, relabelled as BadNets does.
* Label flipping: change the labels of a random fraction of the set to other classes (random),
  or of a fraction of one source class to one target class (targeted).
* Clean label (Turner, Tsipras and Madry 2019, "Label-consistent backdoor attacks"): only images
  of the target class are poisoned and their labels stay correct; each is first pushed away
  from its class by a PGD perturbation on a surrogate model (so the natural features are hard
  to learn) and then stamped with the trigger, so the model leans on the trigger instead.

A trigger is one form for all of them: a mask ``m`` (``(1, H, W)`` in ``[0, 1]``) and a
pattern ``p`` (``(C, H, W)`` in ``[0, 1]``) applied as ``(1 - m) * x + m * p``, the form
Neural Cleanse reverse-engineers (:mod:`bastion.poisoning.neural_cleanse`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from bastion.errors import ConfigError, DataError

Location = Literal["bottom-right", "bottom-left", "top-right", "top-left", "center"]
Mode = Literal["all-to-one", "all-to-all"]
LOCATIONS: tuple[str, ...] = ("bottom-right", "bottom-left", "top-right", "top-left", "center")


@dataclass(frozen=True, eq=False)
class Trigger:
    """A trigger ``(mask, pattern)`` applied as ``(1 - mask) * x + mask * pattern``.

    Attributes:
        mask: float32 ``(1, H, W)`` in ``[0, 1]`` (1: the pattern replaces the pixel).
        pattern: float32 ``(C, H, W)`` in ``[0, 1]``.
        kind: ``"patch"`` or ``"blend"`` (or ``"recovered"`` for a reverse-engineered one).

    Guarantee: :meth:`apply` maps inputs in ``[0, 1]`` to inputs in ``[0, 1]`` (a convex
    combination of two points of the box).
    """

    mask: Tensor
    pattern: Tensor
    kind: str = "patch"

    def __post_init__(self) -> None:
        if self.mask.ndim != 3 or self.mask.shape[0] != 1:
            raise DataError(f"trigger.mask: expected shape (1, H, W), got {tuple(self.mask.shape)}")
        if self.pattern.ndim != 3 or self.pattern.shape[1:] != self.mask.shape[1:]:
            raise DataError(
                f"trigger.pattern: expected shape (C, {self.mask.shape[1]}, "
                f"{self.mask.shape[2]}), got {tuple(self.pattern.shape)}"
            )

    @property
    def l1(self) -> float:
        """The L1 norm of the mask (the number of pixels a patch covers)."""
        return float(self.mask.abs().sum())

    def apply(self, x: Tensor) -> Tensor:
        """Stamp the trigger on ``x`` (``(N, C, H, W)`` or ``(C, H, W)``); returns a new tensor."""
        if tuple(x.shape[-3:]) != (self.pattern.shape[0], *self.mask.shape[1:]):
            raise DataError(
                f"trigger: expected inputs of shape (N, {self.pattern.shape[0]}, "
                f"{self.mask.shape[1]}, {self.mask.shape[2]}), got {tuple(x.shape)}"
            )
        m = self.mask.to(x)
        return ((1 - m) * x + m * self.pattern.to(x)).clamp(0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (kind, mask L1, shape)."""
        return {
            "kind": self.kind,
            "mask_l1": round(self.l1, 4),
            "shape": list(self.pattern.shape),
        }


def _image_shape(input_shape: Sequence[int], where: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise DataError(f"{where}: expected image inputs (C, H, W), got shape {tuple(input_shape)}")
    c, h, w = (int(v) for v in input_shape)
    return c, h, w


def patch_trigger(
    input_shape: Sequence[int],
    *,
    size: int = 3,
    location: str = "bottom-right",
    margin: int = 1,
    value: float = 1.0,
    checker: bool = False,
) -> Trigger:
    """A square ``size x size`` patch (BadNets, Gu et al. 2017), ``margin`` pixels from the
    chosen corner (or centred). ``value`` fills it (``checker``: alternate ``value`` and
    ``1 - value``, a pattern a blank corner of the clean data never shows).

    Raises :class:`ConfigError` naming ``poisoning.trigger.size`` when the patch does not fit.
    """
    c, h, w = _image_shape(input_shape, "poisoning.trigger")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"poisoning.trigger.size: expected an integer >= 1, got {size!r}")
    if margin < 0:
        raise ConfigError(f"poisoning.trigger.margin: expected an integer >= 0, got {margin!r}")
    if size + margin > min(h, w):
        raise ConfigError(
            f"poisoning.trigger.size: a {size}x{size} patch with margin {margin} does not fit "
            f"the {h}x{w} image; expected size + margin <= {min(h, w)}"
        )
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"poisoning.trigger.value: expected a number in [0, 1], got {value!r}")
    if location not in LOCATIONS:
        raise ConfigError(
            f"poisoning.trigger.location: expected one of {', '.join(LOCATIONS)}, got {location!r}"
        )
    top = margin if location.startswith("top") else h - margin - size
    left = margin if location.endswith("left") else w - margin - size
    if location == "center":
        top, left = (h - size) // 2, (w - size) // 2
    mask = torch.zeros(1, h, w)
    mask[:, top : top + size, left : left + size] = 1.0
    pattern = torch.zeros(c, h, w)
    block = torch.full((size, size), float(value))
    if checker:
        parity = (torch.arange(size)[:, None] + torch.arange(size)[None, :]) % 2 == 1
        block[parity] = 1.0 - float(value)
    pattern[:, top : top + size, left : left + size] = block
    return Trigger(mask, pattern, "patch")


def blend_trigger(input_shape: Sequence[int], *, alpha: float = 0.2, seed: int = 0) -> Trigger:
    """A blended trigger (Chen et al. 2017): uniform random noise ``p`` in ``[0, 1]`` drawn from
    ``numpy.random.default_rng(seed)``, blended into the whole image with weight ``alpha``."""
    c, h, w = _image_shape(input_shape, "poisoning.trigger")
    if not 0.0 < alpha <= 1.0:
        raise ConfigError(f"poisoning.trigger.alpha: expected a number in (0, 1], got {alpha!r}")
    rng = np.random.default_rng(seed)
    pattern = torch.from_numpy(rng.random((c, h, w), dtype=np.float32))
    return Trigger(torch.full((1, h, w), float(alpha)), pattern, "blend")


@dataclass(frozen=True, eq=False)
class PoisonedSet:
    """A poisoned copy of a training set and the record of what was done.

    Attributes:
        x: float32 ``(N, *input_shape)``, the inputs as the victim sees them.
        y: int64 ``(N,)``, the labels as the victim sees them.
        original_y: int64 ``(N,)``, the labels before poisoning.
        poisoned: bool ``(N,)``, True where the input or the label was changed.
        attack: the attack's name (``badnets``, ``blended``, ``label-flip``, ``clean-label``).
        settings: the attack's settings (JSON-serialisable).
        trigger: the trigger, for backdoor attacks (None for label flipping).
    """

    x: Tensor
    y: Tensor
    original_y: Tensor
    poisoned: Tensor
    attack: str
    settings: dict[str, Any]
    trigger: Trigger | None = None

    @property
    def indices(self) -> Tensor:
        """int64 indices of the poisoned examples, ascending."""
        return torch.nonzero(self.poisoned).flatten()

    @property
    def rate(self) -> float:
        """Fraction of the set that was poisoned."""
        return float(self.poisoned.float().mean()) if len(self.y) else 0.0

    def record(self) -> dict[str, Any]:
        """JSON-serialisable record: attack, settings, count, rate and the poisoned indices."""
        return {
            "attack": self.attack,
            "settings": dict(self.settings),
            "n": len(self.y),
            "n_poisoned": int(self.poisoned.sum()),
            "rate": round(self.rate, 6),
            "indices": [int(i) for i in self.indices],
            "trigger": None if self.trigger is None else self.trigger.to_dict(),
        }


def check_rate(rate: float, field: str = "poisoning.rate") -> float:
    """Return ``rate`` as a float; :class:`ConfigError` naming ``field`` unless in ``[0, 1]``."""
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate):
        raise ConfigError(f"{field}: expected a number in [0, 1], got {rate!r}")
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"{field}: expected a number in [0, 1], got {rate!r}")
    return float(rate)


def _check_data(x: Tensor, y: Tensor) -> None:
    if x.dtype != torch.float32 or y.dtype != torch.int64 or y.ndim != 1 or len(x) != len(y):
        raise DataError(
            f"poisoning: expected float32 x (N, ...) and int64 y (N,), got {x.dtype} "
            f"{tuple(x.shape)} and {y.dtype} {tuple(y.shape)}"
        )


def _check_class(value: int, num_classes: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < num_classes:
        raise ConfigError(f"{field}: expected a class index in 0..{num_classes - 1}, got {value!r}")
    return value


def _choose(
    candidates: Tensor, count: int, rng: np.random.Generator, field: str = "poisoning.rate"
) -> Tensor:
    if count > len(candidates):
        raise ConfigError(
            f"{field}: asks for {count} poisoned examples but only {len(candidates)} can be "
            "poisoned"
        )
    order = rng.permutation(len(candidates))[:count]
    return candidates[torch.from_numpy(order.astype(np.int64))].sort().values


def draw_poisons(
    eligible: Tensor, count: int, rng: np.random.Generator, *, what: str = "examples"
) -> Tensor:
    """int64 indices, ascending, of ``count`` positions drawn without replacement from the True
    entries of ``eligible`` (bool ``(N,)``) with ``rng``; :class:`ConfigError` naming
    ``poisoning.rate`` when fewer are eligible."""
    candidates = torch.nonzero(eligible).flatten()
    if count > len(candidates):
        raise ConfigError(
            f"poisoning.rate: asks for {count} poisoned {what} but only {len(candidates)} have a "
            "label other than the target"
        )
    return _choose(candidates, count, rng)


def check_class(value: object, num_classes: int, field: str) -> int:
    """``value`` if it is a class index in ``0..num_classes-1``; :class:`ConfigError` naming
    ``field`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{field}: expected a class index in 0..{num_classes - 1}, got {value!r}")
    return _check_class(value, num_classes, field)


def success_figures(before: Tensor, after: Tensor, labels: Tensor, target: int) -> dict[str, float]:
    """Attack-success figures from predictions ``before`` and ``after`` the trigger (int64
    ``(N,)``) on inputs of true ``labels`` (``(N,)``, none equal to ``target``):

    * ``attack_success_rate``: among the inputs predicted correctly without the trigger, the
      share predicted ``target`` with it (the trigger's own effect);
    * ``triggered_as_target``: share predicted ``target`` with the trigger;
    * ``clean_miss_rate``: share predicted ``target`` without it.

    All 0.0 for empty inputs.
    """
    if len(labels) == 0:
        return {"attack_success_rate": 0.0, "triggered_as_target": 0.0, "clean_miss_rate": 0.0}
    correct = before == labels
    success = float((after[correct] == target).double().mean()) if bool(correct.any()) else 0.0
    return {
        "attack_success_rate": round(success, 4),
        "triggered_as_target": round(float((after == target).double().mean()), 4),
        "clean_miss_rate": round(float((before == target).double().mean()), 4),
    }


def backdoor_labels(y: Tensor, *, mode: Mode, target: int, num_classes: int) -> Tensor:
    """The labels a backdoor maps ``y`` (``(N,)``) to: ``target`` (all-to-one) or
    ``(y + 1) mod num_classes`` (all-to-all)."""
    if mode == "all-to-one":
        return torch.full_like(y, target)
    if mode == "all-to-all":
        return (y + 1) % num_classes
    raise ConfigError(f"poisoning.mode: expected all-to-one or all-to-all, got {mode!r}")


def trigger_poison(
    x: Tensor,
    y: Tensor,
    trigger: Trigger,
    *,
    rate: float,
    num_classes: int,
    mode: Mode = "all-to-one",
    target: int = 0,
    seed: int = 0,
    attack: str = "badnets",
) -> PoisonedSet:
    """Dirty-label trigger poisoning (BadNets, Gu et al. 2017; blended, Chen et al. 2017).

    ``round(rate * N)`` examples are drawn without replacement from those whose label the
    backdoor changes (all-to-one: every example not already of ``target``; all-to-all: every
    example), stamped with ``trigger`` and relabelled by :func:`backdoor_labels`.
    """
    _check_data(x, y)
    rate = check_rate(rate)
    target = _check_class(target, num_classes, "poisoning.target")
    if mode not in ("all-to-one", "all-to-all"):
        raise ConfigError(f"poisoning.mode: expected all-to-one or all-to-all, got {mode!r}")
    rng = np.random.default_rng(seed)
    candidates = (
        torch.nonzero(y != target).flatten()
        if mode == "all-to-one"
        else torch.arange(len(y), dtype=torch.int64)
    )
    chosen = _choose(candidates, round(rate * len(y)), rng)
    xp, yp = x.clone(), y.clone()
    xp[chosen] = trigger.apply(x[chosen])
    yp[chosen] = backdoor_labels(y[chosen], mode=mode, target=target, num_classes=num_classes)
    mask = torch.zeros(len(y), dtype=torch.bool)
    mask[chosen] = True
    settings = {"rate": rate, "mode": mode, "target": target, "seed": seed}
    return PoisonedSet(xp, yp, y.clone(), mask, attack, settings, trigger)


def badnets(
    x: Tensor,
    y: Tensor,
    *,
    rate: float,
    num_classes: int,
    size: int = 3,
    location: str = "bottom-right",
    mode: Mode = "all-to-one",
    target: int = 0,
    seed: int = 0,
) -> PoisonedSet:
    """BadNets (Gu et al. 2017): a white ``size x size`` patch in a corner, dirty labels."""
    trigger = patch_trigger(tuple(x.shape[1:]), size=size, location=location)
    out = trigger_poison(
        x, y, trigger, rate=rate, num_classes=num_classes, mode=mode, target=target, seed=seed
    )
    out.settings.update(size=size, location=location)
    return out


def blended(
    x: Tensor,
    y: Tensor,
    *,
    rate: float,
    num_classes: int,
    alpha: float = 0.2,
    mode: Mode = "all-to-one",
    target: int = 0,
    seed: int = 0,
) -> PoisonedSet:
    """Blended injection (Chen et al. 2017): a seeded noise pattern blended with ``alpha``."""
    trigger = blend_trigger(tuple(x.shape[1:]), alpha=alpha, seed=seed)
    out = trigger_poison(
        x,
        y,
        trigger,
        rate=rate,
        num_classes=num_classes,
        mode=mode,
        target=target,
        seed=seed,
        attack="blended",
    )
    out.settings.update(alpha=alpha)
    return out


def label_flip(
    x: Tensor,
    y: Tensor,
    *,
    rate: float,
    num_classes: int,
    source: int | None = None,
    target: int | None = None,
    seed: int = 0,
) -> PoisonedSet:
    """Label flipping; inputs are untouched.

    Random (``source`` and ``target`` None): ``round(rate * N)`` examples get a label drawn
    uniformly from the other ``num_classes - 1`` classes. Targeted (both given):
    ``round(rate * n_source)`` examples of class ``source`` are relabelled ``target``.
    """
    _check_data(x, y)
    rate = check_rate(rate)
    rng = np.random.default_rng(seed)
    yp = y.clone()
    if (source is None) != (target is None):
        raise ConfigError("poisoning.source/target: give both (targeted flipping) or neither")
    if source is None or target is None:
        chosen = _choose(torch.arange(len(y), dtype=torch.int64), round(rate * len(y)), rng)
        shift = torch.from_numpy(rng.integers(1, num_classes, size=len(chosen)).astype(np.int64))
        yp[chosen] = (y[chosen] + shift) % num_classes
        settings: dict[str, Any] = {"rate": rate, "mode": "random", "seed": seed}
    else:
        source = _check_class(source, num_classes, "poisoning.source")
        target = _check_class(target, num_classes, "poisoning.target")
        if source == target:
            raise ConfigError(f"poisoning.target: must differ from source ({source})")
        members = torch.nonzero(y == source).flatten()
        chosen = _choose(members, round(rate * len(members)), rng)
        yp[chosen] = target
        settings = {
            "rate": rate,
            "mode": "targeted",
            "source": source,
            "target": target,
            "seed": seed,
        }
    mask = torch.zeros(len(y), dtype=torch.bool)
    mask[chosen] = True
    return PoisonedSet(x.clone(), yp, y.clone(), mask, "label-flip", settings, None)


def clean_label(
    x: Tensor,
    y: Tensor,
    surrogate: nn.Module,
    *,
    rate: float,
    num_classes: int,
    target: int = 0,
    eps: float = 0.3,
    steps: int = 10,
    size: int = 3,
    location: str = "bottom-right",
    seed: int = 0,
) -> PoisonedSet:
    """Label-consistent poisoning (Turner et al. 2019).

    ``round(rate * n_target)`` images of class ``target`` are perturbed by an untargeted linf
    PGD attack (``eps``, ``steps``) on ``surrogate`` (a model trained on clean data), then
    stamped with a BadNets patch; every label is left as it was. ``rate`` is the fraction of
    the target class that is poisoned (the paper's convention).
    """
    from bastion.attacks.gradient import PGD
    from bastion.threat import ThreatModel

    _check_data(x, y)
    rate = check_rate(rate)
    target = _check_class(target, num_classes, "poisoning.target")
    rng = np.random.default_rng(seed)
    members = torch.nonzero(y == target).flatten()
    chosen = _choose(members, round(rate * len(members)), rng)
    trigger = patch_trigger(tuple(x.shape[1:]), size=size, location=location)
    xp = x.clone()
    if len(chosen):
        attack = PGD(steps=steps, restarts=1)
        gen = torch.Generator().manual_seed(seed)
        surrogate.eval()
        res = attack(surrogate, x[chosen], y[chosen], ThreatModel("linf", eps), generator=gen)
        xp[chosen] = trigger.apply(res.x_adv.detach())
    mask = torch.zeros(len(y), dtype=torch.bool)
    mask[chosen] = True
    settings = {
        "rate": rate,
        "target": target,
        "eps": eps,
        "steps": steps,
        "size": size,
        "location": location,
        "seed": seed,
    }
    return PoisonedSet(xp, y.clone(), y.clone(), mask, "clean-label", settings, trigger)


def attack_success_rate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    trigger: Trigger,
    *,
    mode: Mode = "all-to-one",
    target: int = 0,
    num_classes: int,
    batch_size: int = 1024,
) -> float:
    """Fraction of triggered test inputs classified as the backdoor's label.

    All-to-one: over the examples whose true class is not ``target``; all-to-all: over all,
    the backdoor label being ``(y + 1) mod num_classes``. Returns 0.0 for an empty set.
    """
    keep = y != target if mode == "all-to-one" else torch.ones_like(y, dtype=torch.bool)
    xs, ys = x[keep], y[keep]
    if len(ys) == 0:
        return 0.0
    want = backdoor_labels(ys, mode=mode, target=target, num_classes=num_classes)
    model.eval()
    hits = 0
    with torch.no_grad():
        for i in range(0, len(ys), batch_size):
            pred = model(trigger.apply(xs[i : i + batch_size])).argmax(dim=1)
            hits += int((pred == want[i : i + batch_size]).sum())
    return hits / len(ys)
