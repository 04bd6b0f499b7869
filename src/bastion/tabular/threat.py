"""A cost-aware threat model over a tabular schema's constraint set.

:class:`TabularThreat` is a :class:`~bastion.threat.ThreatModel` on the encoded unit space of a
schema whose budget is measured in a cost-weighted norm, ``||c * (x_adv - x)||_p <= eps`` with
``c`` each column's feature cost (so a feature of cost ``c`` moves at most ``eps / c``; under
linf exactly that, under l2 and l1 that much when it is the only feature moved), in the spirit
of the cost-aware tabular threat models of Kireev, Kulynych and Troncoso 2023 ("Adversarial
robustness for tabular data through cost and utility awareness"). Immutable features never move.

Every norm-specific method of the base class is re-expressed in the weighted coordinates
``w = c * delta`` (where the base class's geometry applies unchanged), and :meth:`project` also
maps onto the schema's relaxed constraint set (see
:meth:`bastion.tabular.constraints.ConstraintSet.project`), so the shared attack engine and the
Trainer's PGD-AT run under the constraints as they are. :meth:`finalize` turns a relaxed point
into one that satisfies every constraint exactly (integers, one-hot groups), or falls back to
the clean input.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bastion.data.schema import TabularSchema
from bastion.errors import AttackInputError, ConfigError
from bastion.tabular.constraints import ConstraintSet
from bastion.threat import ThreatModel


def _unit_ball(norm: str, eps: float) -> ThreatModel:
    """The plain threat of the weighted coordinates, with bounds wide enough never to clip."""
    return ThreatModel(norm=norm, eps=eps, bounds=(-1e6, 1e6))  # type: ignore[arg-type]


@dataclass(frozen=True)
class TabularThreat(ThreatModel):
    """A cost-weighted Lp threat restricted to a schema's constraint set (unit space).

    Attributes:
        norm, eps: as :class:`ThreatModel`, eps measured in the cost-weighted norm.
        bounds: must be ``(0, 1)``, the encoded unit space.
        schema: the tabular schema (required); its ``columns`` give the input width ``D``.
        use_costs: weigh columns by their feature's ``cost`` (False: every cost is 1).
        projection_iterations: Dykstra iterations of each relaxed projection.

    Guarantees: :meth:`project` returns points in the eps-ball, in [0, 1], with immutable
    columns equal to ``x`` and groups on the simplex (relations up to Dykstra's convergence);
    :meth:`finalize` returns points that :meth:`admissible` accepts, or ``x`` itself.
    """

    schema: TabularSchema | None = None
    use_costs: bool = True
    projection_iterations: int = 40

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.schema, TabularSchema):
            raise ConfigError(
                f"threat.schema: expected a TabularSchema, got {type(self.schema).__name__}"
            )
        if self.bounds != (0.0, 1.0):
            raise ConfigError(
                f"threat.bounds: a tabular threat acts on the encoded unit space, expected "
                f"[0, 1], got {list(self.bounds)}"
            )
        if not isinstance(self.use_costs, bool):
            raise ConfigError(f"threat.use_costs: expected true or false, got {self.use_costs!r}")
        if isinstance(self.projection_iterations, bool) or self.projection_iterations < 1:
            raise ConfigError(
                "threat.projection_iterations: expected an integer >= 1, got "
                f"{self.projection_iterations!r}"
            )
        constraints = ConstraintSet(self.schema)
        object.__setattr__(self, "_constraints", constraints)
        cost = constraints.cost if self.use_costs else torch.ones(constraints.dim)
        object.__setattr__(self, "_cost", cost.double())
        scale = constraints.mutable.double() / cost.double()
        object.__setattr__(self, "_scale", scale)

    # ------------------------------------------------------------------------ accessors

    @property
    def constraints(self) -> ConstraintSet:
        """The compiled constraint set of :attr:`schema`."""
        out: ConstraintSet = object.__getattribute__(self, "_constraints")
        return out

    def cost(self, like: Tensor) -> Tensor:
        """``(D,)`` column costs on ``like``'s device and dtype."""
        c: Tensor = object.__getattribute__(self, "_cost")
        return c.to(device=like.device, dtype=like.dtype)

    def scale(self, like: Tensor) -> Tensor:
        """``(D,)``: ``1 / cost`` on mutable columns, 0 on immutable ones."""
        s: Tensor = object.__getattribute__(self, "_scale")
        return s.to(device=like.device, dtype=like.dtype)

    def radius(self, like: Tensor, eps: float | None = None) -> Tensor:
        """``(D,)``: how far each column may move on its own, ``eps / cost`` (0 if immutable)."""
        return (self.eps if eps is None else eps) * self.scale(like)

    def with_eps(self, eps: float) -> TabularThreat:
        return dataclasses.replace(self, eps=eps)

    def to_dict(self) -> dict[str, Any]:
        assert self.schema is not None
        return {
            "norm": self.norm,
            "eps": self.eps,
            "bounds": list(self.bounds),
            "use_costs": self.use_costs,
            "schema": self.schema.to_dict(),
        }

    # ------------------------------------------------------------------------ geometry

    def norm_of(self, delta: Tensor) -> Tensor:
        """Per-example cost-weighted norm ``||c * delta||_p`` ``(N,)``."""
        return super().norm_of(delta * self.cost(delta))

    def project_delta(self, delta: Tensor, eps: Tensor | float | None = None) -> Tensor:
        """Onto the weighted ball: project ``c * delta`` onto the plain ball and map back;
        immutable columns are zeroed."""
        e = self.eps if eps is None else eps
        w = _unit_ball(self.norm, self.eps).project_delta(delta * self.cost(delta), e)
        return w * self.scale(delta)

    def steepest_step(self, grad: Tensor) -> Tensor:
        """Steepest ascent of unit weighted norm: ``s(g / c) / c`` with ``s`` the base step;
        zero on immutable columns."""
        s = self.scale(grad)
        return super().steepest_step(grad * s) * s

    def random_init(
        self, x: Tensor, *, generator: torch.Generator | None = None, scale: float = 1.0
    ) -> Tensor:
        """A random point of the weighted ball (uniform in the weighted coordinates), then
        :meth:`project` onto the relaxed constraint set."""
        ball = _unit_ball(self.norm, self.eps)
        w = ball.random_init(torch.zeros_like(x), generator=generator, scale=scale)
        return self.project(x + w * self.scale(x), x)

    def in_ball(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """``(N,)`` bool: within the weighted eps-ball (relative slack ``1e-5``)."""
        return self.distance(x_adv, x) <= self.eps * (1 + 1e-5) + 1e-6

    def admissible(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """``(N,)`` bool: every constraint holds exactly (up to tolerance) and the point lies in
        the ball; immutables are compared with ``x``."""
        return self.constraints.feasible(x_adv, x) & self.in_ball(x_adv, x)

    def project(self, x_adv: Tensor, x: Tensor, eps: Tensor | float | None = None) -> Tensor:
        """The relaxed projection onto ball, bounds, immutables, simplices and relations.

        linf: the ball is a box, intersected with the constraints in one projection. l2 and l1:
        project onto the box of radius ``eps / c`` and the constraints, then shrink the
        perturbation towards ``x`` until it fits the ball (a convex combination of two points
        of the convex relaxed set stays in it). Rows already admissible are returned as they
        are, so projecting a finalized point changes nothing.
        """
        if x_adv.dim() != 2 or x.shape != x_adv.shape:
            raise AttackInputError(
                f"x_adv: expected shape {tuple(x.shape)} (N, D) like x, got {tuple(x_adv.shape)}"
            )
        keep = self.admissible(x_adv, x) if eps is None else None
        e_t = eps if isinstance(eps, Tensor) else None
        e_f = self.eps if eps is None or isinstance(eps, Tensor) else float(eps)
        radius = self.radius(x, e_f)
        if e_t is not None:
            radius = e_t.to(x.dtype)[:, None] * self.scale(x)[None, :]
        z = self.constraints.project(x_adv, x, radius=radius, iterations=self.projection_iterations)
        if self.norm != "linf":
            n = self.norm_of(z - x)
            limit = e_t.to(n.dtype) if e_t is not None else torch.full_like(n, e_f)
            factor = torch.clamp(limit / n.clamp_min(1e-12), max=1.0)
            z = x + (z - x) * factor[:, None]
        if keep is not None:
            z = torch.where(keep[:, None], x_adv, z)
        return z

    def finalize(self, x_adv: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map relaxed points to points satisfying every constraint, or to ``x``.

        Candidates, first admissible one wins per row (so outputs lie exactly on the integer
        grid and are exactly one-hot, even where ``x_adv`` was within tolerance of that): snap
        (integers to the nearest whole number, groups to their largest allowed column), then
        repair the relations with the discrete columns pinned; the same with rounding towards
        ``x``; both again from the midpoint ``(x + x_adv) / 2``. A row with no admissible
        candidate gets ``x``.

        Returns:
            ``(x_final, admissible)``: ``(N, D)`` and ``(N,)`` bool (False where ``x`` was
            substituted because no candidate was admissible).
        """
        cs = self.constraints
        out = x.clone()
        done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        radius = self.radius(x)
        lo, hi = cs.box(x, radius)
        pinned = cs.discrete_mask().to(x.device)
        for t in (1.0, 0.5):
            for toward in (False, True):
                rows = (~done).nonzero().flatten()
                if rows.numel() == 0:
                    return out, done
                xr = x[rows]
                z = xr + t * (x_adv[rows] - xr)
                snapped = cs.snap(z, xr, toward_reference=toward, lo=lo[rows], hi=hi[rows])
                fixed = torch.where(pinned, snapped, torch.full_like(snapped, float("nan")))
                cand = cs.project(
                    snapped,
                    xr,
                    radius=radius,
                    fixed=fixed,
                    iterations=self.projection_iterations,
                )
                ok = self.admissible(cand, xr)
                out[rows[ok]] = cand[ok]
                done[rows[ok]] = True
        return out, done

    def validate_inputs(self, x: Tensor, *, name: str = "x", atol: float = 1e-6) -> None:
        """The base checks, then the shape ``(N, D)`` and every constraint on each row (an
        attack's clean input must itself be feasible)."""
        super().validate_inputs(x, name=name, atol=atol)
        cs = self.constraints
        if x.dim() != 2 or x.shape[1] != cs.dim:
            raise AttackInputError(
                f"{name}: expected encoded rows of shape (N, {cs.dim}) for this schema, got "
                f"{tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            return
        report = cs.check(x.detach())
        if not bool(report.ok.all()):
            row = int((~report.ok).nonzero()[0, 0])
            raise AttackInputError(
                f"{name}: row {row} violates the schema's constraints: "
                f"{'; '.join(report.violations[row])}"
            )


def require_tabular(threat: ThreatModel, attack: str) -> TabularThreat:
    """``threat`` as a :class:`TabularThreat`, or an :class:`AttackInputError` naming
    ``attack``."""
    if not isinstance(threat, TabularThreat):
        raise AttackInputError(
            f"{attack}: expected a TabularThreat (a threat over a tabular schema), got "
            f"{type(threat).__name__}"
        )
    return threat
