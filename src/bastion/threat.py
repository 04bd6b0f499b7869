"""The threat model: which perturbations an attacker may add to an input.

A :class:`ThreatModel` holds the norm, the budget ``eps`` and the valid input range. All
norm-specific maths (projection onto the eps-ball, random starts, steepest-ascent steps,
distances) lives here, so attacks never branch on the norm themselves.

Shapes: ``x`` and ``x_adv`` are batches ``(N, *input_shape)``; the norm of a perturbation is
taken per example over all non-batch dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

import torch
from torch import Tensor

from bastion.errors import ConfigError

Norm = Literal["linf", "l2", "l1"]
NORMS: tuple[Norm, ...] = ("linf", "l2", "l1")
_TINY = 1e-12


def _per_example(v: Tensor) -> Tensor:
    """Flatten all non-batch dimensions: ``(N, ...) -> (N, D)``."""
    return v.reshape(v.shape[0], -1)


def _expand(s: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-example vector ``(N,)`` so it broadcasts against ``like`` ``(N, ...)``."""
    return s.reshape(-1, *([1] * (like.dim() - 1)))


def _project_l1_ball(delta: Tensor, eps: Tensor | float) -> Tensor:
    """Euclidean projection of each example onto the l1 ball of radius ``eps`` (a float or
    ``(N,)``), by the sorting algorithm of Duchi et al. 2008 ("Efficient projections onto the
    l1-ball for learning in high dimensions"): soft-threshold by the ``theta`` that makes the
    l1 norm exactly ``eps``. Examples already inside are returned unchanged. The threshold is
    found in float64 so that the result's norm exceeds ``eps`` by float rounding only."""
    flat = _per_example(delta)
    mag = flat.abs().double()
    if isinstance(eps, Tensor):
        e = eps.double().clamp_min(0)
    else:
        e = torch.full((flat.shape[0],), max(float(eps), 0.0), dtype=torch.float64)
        e = e.to(delta.device)
    outside = mag.sum(dim=1) > e
    if not bool(outside.any()) or flat.shape[1] == 0:
        return delta
    mu, _ = mag.sort(dim=1, descending=True)
    excess = mu.cumsum(dim=1) - e[:, None]
    j = torch.arange(1, flat.shape[1] + 1, device=delta.device, dtype=torch.float64)
    # rho: the number of coordinates left non-zero, the largest j with mu_j > excess_j / j
    rho = (mu * j > excess).sum(dim=1).clamp_min(1)
    theta = excess.gather(1, (rho - 1)[:, None]) / rho[:, None].double()
    shrunk = flat.sign() * (mag - theta).clamp_min(0).to(flat.dtype)
    return torch.where(outside[:, None], shrunk, flat).reshape(delta.shape)


@dataclass(frozen=True)
class ThreatModel:
    """An Lp-bounded evasion threat: ``||x_adv - x||_p <= eps`` and ``lo <= x_adv <= hi``
    for ``p`` in ``{inf, 2, 1}``.

    Attributes:
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
        eps: the budget, in the model's input space (pixels in [0, 1] for images).
        bounds: the valid input range ``(lo, hi)``, applied element-wise.

    Guarantees: :meth:`project` returns points that satisfy both constraints (up to float
    rounding of the L2 norm, at most 1e-6 relative).
    """

    norm: Norm = "linf"
    eps: float = 0.3
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ConfigError(f"threat.norm: expected one of {', '.join(NORMS)}, got {self.norm!r}")
        if not isinstance(self.eps, int | float) or isinstance(self.eps, bool):
            raise ConfigError(f"threat.eps: expected a number, got {self.eps!r}")
        if not math.isfinite(self.eps) or self.eps < 0:
            raise ConfigError(f"threat.eps: expected a finite number >= 0, got {self.eps!r}")
        try:
            lo, hi = (float(v) for v in self.bounds)
        except (TypeError, ValueError):
            raise ConfigError(
                f"threat.bounds: expected [lo, hi], two numbers, got {self.bounds!r}"
            ) from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ConfigError(
                f"threat.bounds: expected [lo, hi] with lo < hi, got {list(self.bounds)}"
            )
        width = hi - lo
        if self.norm == "linf" and self.eps > width:
            raise ConfigError(
                f"threat.eps: {self.eps} exceeds the width of the input range {width} for the "
                "linf norm, so every input would be reachable; expected eps <= hi - lo"
            )
        object.__setattr__(self, "eps", float(self.eps))
        object.__setattr__(self, "bounds", (float(lo), float(hi)))

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ThreatModel:
        """Build from a mapping such as a parsed YAML section; unknown keys are an error."""
        unknown = set(d) - {"norm", "eps", "bounds"}
        if unknown:
            raise ConfigError(
                f"threat: unknown field(s) {sorted(unknown)}; expected norm, eps, bounds"
            )
        bounds = d.get("bounds", (0.0, 1.0))
        if not isinstance(bounds, list | tuple) or len(bounds) != 2:
            raise ConfigError(f"threat.bounds: expected a list [lo, hi], got {bounds!r}")
        return cls(
            norm=cast(Norm, d.get("norm", "linf")),
            eps=d.get("eps", 0.3),
            bounds=(bounds[0], bounds[1]),
        )

    def with_eps(self, eps: float) -> ThreatModel:
        """The same threat with another budget."""
        return ThreatModel(norm=self.norm, eps=eps, bounds=self.bounds)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bounds"] = list(self.bounds)
        return d

    # -- geometry -----------------------------------------------------------------------------
    def clip(self, x: Tensor) -> Tensor:
        """Clamp into the valid input range."""
        return x.clamp(self.bounds[0], self.bounds[1])

    def norm_of(self, delta: Tensor) -> Tensor:
        """Per-example norm ``(N, ...) -> (N,)``."""
        flat = _per_example(delta)
        if self.norm == "linf":
            out: Tensor = flat.abs().amax(dim=1)
        elif self.norm == "l1":
            out = flat.abs().sum(dim=1)
        else:
            out = flat.norm(p=2, dim=1)
        return out

    def distance(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Per-example distance in this threat's norm, ``(N,)``."""
        return self.norm_of(x_adv - x)

    def project_delta(self, delta: Tensor, eps: Tensor | float | None = None) -> Tensor:
        """Project perturbations onto the eps-ball (no range clipping). ``eps`` may be ``(N,)``."""
        e = self.eps if eps is None else eps
        if self.norm == "linf":
            if isinstance(e, Tensor):
                e = _expand(e, delta)
                return torch.maximum(torch.minimum(delta, e), -e)
            return delta.clamp(-e, e)
        if self.norm == "l1":
            return _project_l1_ball(delta, e)
        n = self.norm_of(delta)
        e_t = e if isinstance(e, Tensor) else torch.full_like(n, float(e))
        factor = torch.clamp(e_t / (n + _TINY), max=1.0)
        return delta * _expand(factor, delta)

    def project(self, x_adv: Tensor, x: Tensor, eps: Tensor | float | None = None) -> Tensor:
        """Project ``x_adv`` into the eps-ball around ``x`` intersected with the input range.

        For linf the two projections commute; for l2 projecting the ball first and then clipping
        can only shrink the perturbation, so the result stays feasible.
        """
        return self.clip(x + self.project_delta(x_adv - x, eps))

    def random_init(
        self, x: Tensor, *, generator: torch.Generator | None = None, scale: float = 1.0
    ) -> Tensor:
        """A random point of the eps-ball around ``x`` (uniform in the ball for every norm),
        clipped to the range. ``scale`` shrinks or grows the ball it is drawn from."""
        eps = self.eps * scale
        if self.norm == "linf":
            u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            delta = (2 * u - 1) * eps
        elif self.norm == "l1":
            # d + 1 exponential spacings, normalised, are uniform on the simplex; dropping the
            # last coordinate gives a uniform point of {u >= 0, sum(u) <= 1}, and random signs
            # make it uniform in the l1 ball.
            flat = _per_example(x)
            shape = (flat.shape[0], flat.shape[1] + 1)
            u = torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype)
            e = -torch.log1p(-u)  # Exp(1); 1 - u > 0 because torch.rand lies in [0, 1)
            mag = e[:, :-1] / e.sum(dim=1, keepdim=True)
            sign = torch.rand(flat.shape, generator=generator, device=x.device, dtype=x.dtype) < 0.5
            delta = (torch.where(sign, -mag, mag) * eps).reshape(x.shape)
        else:
            g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            g = g / (_expand(_per_example(g).norm(dim=1), g) + _TINY)
            d = _per_example(x).shape[1]
            r = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
            delta = g * _expand(r ** (1.0 / d) * eps, g)
        return self.clip(x + delta)

    def steepest_step(self, grad: Tensor) -> Tensor:
        """The unit-norm direction of steepest ascent for a gradient: ``sign`` for linf, the
        L2-normalised gradient for l2, and for l1 the sign of the largest-magnitude coordinate
        (shared equally among ties, so the step has l1 norm 1). Shape as ``grad``; a zero
        gradient gives a zero step."""
        if self.norm == "linf":
            return grad.sign()
        if self.norm == "l1":
            flat = _per_example(grad)
            mag = flat.abs()
            top = (mag == mag.amax(dim=1, keepdim=True)) & (mag > 0)
            count = top.sum(dim=1, keepdim=True).clamp_min(1)
            return (flat.sign() * top / count).reshape(grad.shape)
        # Rescale by the largest entry first: a vanishing gradient (a confident model, ~1e-17)
        # must still give a unit step, which ``grad / (n + _TINY)`` alone does not.
        peak = _per_example(grad).abs().amax(dim=1).clamp_min(torch.finfo(grad.dtype).tiny)
        grad = grad / _expand(peak, grad)
        n = _per_example(grad).norm(dim=1)
        return grad / _expand(n + _TINY, grad)

    def validate_inputs(self, x: Tensor, *, name: str = "x", atol: float = 1e-6) -> None:
        """Raise if ``x`` is not a floating tensor inside the bounds."""
        from bastion.errors import AttackInputError

        if not isinstance(x, Tensor):
            raise AttackInputError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise AttackInputError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
        if x.numel() == 0:
            return
        lo, hi = self.bounds
        mn, mx = float(x.detach().min()), float(x.detach().max())
        if not (mn >= lo - atol and mx <= hi + atol):  # also rejects NaN
            raise AttackInputError(
                f"{name}: values must lie in the threat model's bounds [{lo}, {hi}], "
                f"got min {mn:.4g}, max {mx:.4g}"
            )
