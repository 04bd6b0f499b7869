"""The constraint set of a tabular schema in encoded unit space: checking and repair.

A :class:`ConstraintSet` compiles a :class:`~bastion.data.schema.TabularSchema` into tensors over
the encoded columns (``D = len(schema.columns)``):

* bounds: every value in [0, 1];
* immutable features: equal to a reference point (the clean input);
* integer features: ``u * (max - min)`` a whole number;
* categorical features: their columns one-hot;
* relations ``sum(coef * raw) op value``: since ``raw = min + u * (max - min)``, each is a
  half-space (``<=``) or a hyperplane (``==``) ``a . u op b`` in unit space, with
  ``a_j = coef_j (max_j - min_j)`` and ``b = value - sum(coef_j min_j)``, in raw units.

Two operators map a point to the constraint set:

* :meth:`ConstraintSet.project` (relaxed): the continuous relaxation where one-hot groups may
  lie anywhere on the probability simplex and integers anywhere in their range. Groups go onto
  the simplex intersected with their box exactly (a sort over the breakpoints of the shift,
  the Euclidean projection); the numeric columns go onto the box intersected with the
  relations by Dykstra's alternating projection algorithm (Boyle & Dykstra 1986), which
  converges to the Euclidean projection onto the intersection (exact in the limit; for a
  single ``a <= b`` pair inside the box one step is exact).
* :meth:`ConstraintSet.snap`: integers rounded (to the nearest whole number, or towards the
  reference), groups set to a vertex (their largest allowed column, or the reference's).

Checks use a tolerance (``atol`` in unit space, ``1e-6`` of the span for integers and
``max(tol, 1e-6 * ||a||_1)`` for relations), so float32 rounding of a feasible point never
reads as a violation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bastion.data.schema import TabularSchema
from bastion.errors import AttackInputError


@dataclass(frozen=True)
class Feasibility:
    """The result of :func:`check_feasible`.

    Attributes:
        ok: ``(N,)`` bool, True where a row satisfies every constraint.
        violations: one list per row naming each violated constraint, e.g.
            ``["bounds: amount", "relation: amount <= credit_limit"]`` (empty where ``ok``).
    """

    ok: Tensor
    violations: list[list[str]]


class ConstraintSet:
    """A schema's constraints compiled into unit-space tensors (see the module docstring).

    Args:
        schema: the tabular schema.
        atol: tolerance of the checks in unit space.

    Attributes:
        dim: ``D``, the number of encoded columns.
        mutable: ``(D,)`` bool, False for columns of immutable features.
        cost: ``(D,)`` float64, each column's attack cost (its feature's ``cost``).
        integer_columns: ``(K,)`` int64 columns of integer features; ``integer_span``
            ``(K,)`` float64 their ``max - min``.
        groups: the columns of each categorical feature.
        relation_matrix: ``(R, D)`` float64 ``a`` rows; ``relation_bound`` ``(R,)`` ``b``;
            ``relation_is_equality`` ``(R,)`` bool; ``relation_tolerance`` ``(R,)`` float64.
    """

    def __init__(self, schema: TabularSchema, *, atol: float = 1e-5):
        self.schema = schema
        self.atol = float(atol)
        columns = schema.columns
        self.dim = len(columns)
        self.column_feature: list[str] = [
            feature.name for feature in schema.features for _ in range(feature.width)
        ]
        self._feature_cols = [
            torch.tensor([j for j, f in enumerate(self.column_feature) if f == feature.name])
            for feature in schema.features
        ]
        self.mutable = ~schema.immutable_mask()
        self.cost = schema.cost_vector()
        starts: dict[str, int] = {}
        start = 0
        for feature in schema.features:
            starts[feature.name] = start
            start += feature.width
        int_cols, spans = [], []
        for feature in schema.features:
            if feature.type == "integer":
                assert feature.min is not None and feature.max is not None
                int_cols.append(starts[feature.name])
                spans.append(feature.max - feature.min)
        self.integer_columns = torch.tensor(int_cols, dtype=torch.int64)
        self.integer_span = torch.tensor(spans, dtype=torch.float64)
        self.groups = [torch.tensor(g, dtype=torch.int64) for g in schema.categorical_groups()]
        self.group_names = [f.name for f in schema.features if f.type == "categorical"]
        by_name = {feature.name: feature for feature in schema.features}
        rows, bounds, eq, tols, names = [], [], [], [], []
        for relation in schema.relations:
            a = torch.zeros(self.dim, dtype=torch.float64)
            b = relation.value
            for name, coef in relation.terms:
                spec = by_name[name]
                assert spec.min is not None and spec.max is not None
                a[starts[name]] = coef * (spec.max - spec.min)
                b -= coef * spec.min
            rows.append(a)
            bounds.append(b)
            eq.append(relation.op == "==")
            tols.append(max(relation.tolerance(by_name), 1e-6 * float(a.abs().sum())))
            names.append(relation.name)
        self.relation_matrix = (
            torch.stack(rows) if rows else torch.zeros(0, self.dim, dtype=torch.float64)
        )
        self.relation_bound = torch.tensor(bounds, dtype=torch.float64)
        self.relation_is_equality = torch.tensor(eq, dtype=torch.bool)
        self.relation_tolerance = torch.tensor(tols, dtype=torch.float64)
        self.relation_names = names
        # a relation whose features are all immutable cannot be repaired, only checked
        self._relation_free = (self.relation_matrix != 0) & self.mutable[None, :]

    # ------------------------------------------------------------------------------ checks

    def _check_shape(self, u: Tensor, name: str) -> None:
        if not isinstance(u, Tensor) or u.dim() != 2 or u.shape[1] != self.dim:
            shape = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
            raise AttackInputError(
                f"{name}: expected encoded rows of shape (N, {self.dim}) for this schema, "
                f"got {shape}"
            )

    def relation_slack(self, u: Tensor) -> Tensor:
        """``(N, R)`` float64: ``a . u - b`` per row and relation (raw units)."""
        a = self.relation_matrix.to(u.device)
        # a broadcast sum, not a matmul: tiny float64 matmuls are slow on a busy CPU pool
        return (u.double()[:, None, :] * a[None, :, :]).sum(dim=2) - self.relation_bound.to(
            u.device
        )

    def violation_masks(self, u: Tensor, x_ref: Tensor | None = None) -> dict[str, Tensor]:
        """Per constraint name, a ``(N,)`` bool tensor of the rows that violate it."""
        self._check_shape(u, "x")
        ud = u.double()
        out: dict[str, Tensor] = {}
        finite = torch.isfinite(ud)
        ud = torch.where(finite, ud, torch.full_like(ud, 2.0))
        outside = (ud < -self.atol) | (ud > 1 + self.atol) | ~finite
        for feature, cols in zip(self.schema.features, self._feature_cols, strict=True):
            out[f"bounds: {feature.name}"] = outside[:, cols.to(u.device)].any(dim=1)
        if self.integer_columns.numel():
            span = self.integer_span.to(u.device)
            k = ud[:, self.integer_columns.to(u.device)] * span
            tol = torch.clamp(1e-6 * span, min=1e-4)
            off = (k - k.round()).abs() > tol
            for i, col in enumerate(self.integer_columns.tolist()):
                out[f"integer: {self.column_feature[col]}"] = off[:, i]
        for name, group in zip(self.group_names, self.groups, strict=True):
            g = ud[:, group.to(u.device)]
            binary = ((g.abs() <= self.atol) | ((g - 1).abs() <= self.atol)).all(dim=1)
            one = (g.sum(dim=1) - 1).abs() <= self.atol
            out[f"one-hot: {name}"] = ~(binary & one)
        if self.relation_names:
            slack = self.relation_slack(ud)
            tol = self.relation_tolerance.to(u.device)
            eq = self.relation_is_equality.to(u.device)
            bad = torch.where(eq, slack.abs() > tol, slack > tol)
            for r, name in enumerate(self.relation_names):
                out[f"relation: {name}"] = bad[:, r]
        if x_ref is not None:
            self._check_shape(x_ref, "x_ref")
            moved = (ud - x_ref.double()).abs() > self.atol
            for feature, cols in zip(self.schema.features, self._feature_cols, strict=True):
                if feature.immutable:
                    out[f"immutable: {feature.name}"] = moved[:, cols.to(u.device)].any(dim=1)
        return out

    def feasible(self, u: Tensor, x_ref: Tensor | None = None) -> Tensor:
        """``(N,)`` bool: rows satisfying every constraint (immutables against ``x_ref``); the
        same verdict as :meth:`violation_masks`, computed without naming the constraints."""
        self._check_shape(u, "x")
        ud = u.double()
        ok = torch.isfinite(ud).all(dim=1)
        ud = torch.nan_to_num(ud, nan=2.0, posinf=2.0, neginf=2.0)
        ok &= ((ud >= -self.atol) & (ud <= 1 + self.atol)).all(dim=1)
        if self.integer_columns.numel():
            span = self.integer_span.to(u.device)
            k = ud[:, self.integer_columns.to(u.device)] * span
            ok &= ((k - k.round()).abs() <= torch.clamp(1e-6 * span, min=1e-4)).all(dim=1)
        for group in self.groups:
            g = ud[:, group.to(u.device)]
            binary = ((g.abs() <= self.atol) | ((g - 1).abs() <= self.atol)).all(dim=1)
            ok &= binary & ((g.sum(dim=1) - 1).abs() <= self.atol)
        if self.relation_names:
            slack = self.relation_slack(ud)
            tol = self.relation_tolerance.to(u.device)
            eq = self.relation_is_equality.to(u.device)
            ok &= ~torch.where(eq, slack.abs() > tol, slack > tol).any(dim=1)
        if x_ref is not None:
            self._check_shape(x_ref, "x_ref")
            frozen = ~self.mutable.to(u.device)
            moved = ((ud - x_ref.double()).abs() > self.atol) & frozen
            ok &= ~moved.any(dim=1)
        return ok

    def check(self, u: Tensor, x_ref: Tensor | None = None) -> Feasibility:
        """:class:`Feasibility` of each row of ``u`` ``(N, D)``."""
        masks = self.violation_masks(u, x_ref)
        names = list(masks)
        if names:
            table = torch.stack([masks[name] for name in names], dim=1).cpu()
        else:
            table = torch.zeros(u.shape[0], 0, dtype=torch.bool)
        violations = [[names[j] for j in row.nonzero().flatten().tolist()] for row in table]
        return Feasibility(ok=~table.any(dim=1), violations=violations)

    # ------------------------------------------------------------------------------ repair

    def box(
        self, x: Tensor, radius: Tensor | None, fixed: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(lo, hi)`` ``(N, D)``: [0, 1] intersected with ``x +- radius`` (``(D,)`` or
        ``(N, D)``), pinned to ``x`` on immutable columns and to ``fixed`` where that
        ``(N, D)`` tensor is not NaN."""
        lo = torch.zeros_like(x)
        hi = torch.ones_like(x)
        if radius is not None:
            lo = torch.maximum(lo, x - radius)
            hi = torch.minimum(hi, x + radius)
        frozen = ~self.mutable.to(x.device)
        lo = torch.where(frozen, x, lo)
        hi = torch.where(frozen, x, hi)
        if fixed is not None:
            pin = ~torch.isnan(fixed)
            lo = torch.where(pin, fixed, lo)
            hi = torch.where(pin, fixed, hi)
        return lo, hi

    def project(
        self,
        z: Tensor,
        x: Tensor,
        *,
        radius: Tensor | None = None,
        fixed: Tensor | None = None,
        iterations: int = 40,
    ) -> Tensor:
        """Relaxed projection of ``z`` ``(N, D)`` onto the box (see :meth:`box`), the simplex
        of every one-hot group and the relations (see the module docstring).

        Rows that already satisfy every relation and lie in the box and on the simplices are
        returned unchanged. The result lies in the box and on the simplices exactly; relations
        hold up to the convergence of Dykstra's algorithm (checked by :meth:`feasible`).
        """
        lo, hi = self.box(x, radius, fixed)
        out = torch.minimum(torch.maximum(z, lo), hi)
        for group in self.groups:
            g = group.to(z.device)
            out[:, g] = _simplex_box(z[:, g], lo[:, g], hi[:, g])
        if not self.relation_names:
            return out
        slack = self.relation_slack(out)
        tol = self.relation_tolerance.to(z.device)
        eq = self.relation_is_equality.to(z.device)
        bad = torch.where(eq, slack.abs() > 0.25 * tol, slack > 0)
        rows = bad.any(dim=1).nonzero().flatten()
        if rows.numel() == 0:
            return out
        # Dykstra starts from z itself (the projection of the clamped point is another point);
        # group columns keep their simplex projection (no relation names them)
        start = z.clone()
        for group in self.groups:
            g = group.to(z.device)
            start[:, g] = out[:, g]
        out[rows] = self._dykstra(start[rows], lo[rows], hi[rows], iterations).to(out.dtype)
        return out

    def _dykstra(self, z: Tensor, lo: Tensor, hi: Tensor, iterations: int) -> Tensor:
        """Dykstra's algorithm over the box and each relation, in float64; returns ``(n, D)``.
        Half-spaces are shifted inwards by a quarter of their tolerance so that rounding the
        result to float32 keeps them satisfied; it stops early at a fixed point."""
        y = z.double()
        lo64, hi64 = lo.double(), hi.double()
        free = (lo64 < hi64).double()  # pinned columns never move
        tol = self.relation_tolerance.to(z.device)
        equality = self.relation_is_equality.tolist()
        bound = self.relation_bound.to(z.device) - torch.where(
            self.relation_is_equality.to(z.device), torch.zeros_like(tol), 0.25 * tol
        )
        rows = [self.relation_matrix[r].to(z.device) for r in range(len(equality))]
        moving = [a[None, :] * free for a in rows]
        inverse = [
            torch.where(
                (m * m).sum(dim=1) > 0,
                1.0 / (m * m).sum(dim=1).clamp_min(1e-300),
                torch.zeros(m.shape[0], dtype=m.dtype, device=m.device),
            )[:, None]
            for m in moving
        ]
        box_inc = torch.zeros_like(y)
        increments = [torch.zeros_like(y) for _ in equality]
        for _ in range(iterations):
            before = y
            w = y + box_inc
            y = torch.minimum(torch.maximum(w, lo64), hi64)
            box_inc = w - y
            for r, is_eq in enumerate(equality):
                w = y + increments[r]
                viol = (w * rows[r]).sum(dim=1, keepdim=True) - bound[r]
                if not is_eq:
                    viol = viol.clamp_min(0)
                y = w - (viol * inverse[r]) * moving[r]
                increments[r] = w - y
            if float((y - before).abs().max()) < 1e-10:  # a fixed point: converged
                break
        return torch.minimum(torch.maximum(y, lo64), hi64)

    def snap(
        self, z: Tensor, x: Tensor, *, toward_reference: bool, lo: Tensor, hi: Tensor
    ) -> Tensor:
        """Round integer columns and set each one-hot group to a vertex.

        With ``toward_reference`` integers are rounded towards ``x`` (so no coordinate moves
        further from ``x`` than in ``z``) and groups take ``x``'s category; otherwise integers
        go to the nearest whole number and groups to their largest column among the vertices
        inside the box ``[lo, hi]`` (``x``'s vertex always is). ``(N, D)`` in and out.
        """
        out = z.clone()
        if self.integer_columns.numel():
            cols = self.integer_columns.to(z.device)
            span = self.integer_span.to(device=z.device, dtype=torch.float64)
            k = z[:, cols].double() * span
            k_ref = (x[:, cols].double() * span).round()
            if toward_reference:
                up = torch.floor(k + 1e-6)
                down = torch.ceil(k - 1e-6)
                k_new = torch.where(
                    k >= k_ref, torch.maximum(up, k_ref), torch.minimum(down, k_ref)
                )
            else:
                k_new = k.round()
            out[:, cols] = (k_new / span).to(z.dtype)
        for group in self.groups:
            g = group.to(z.device)
            ref = x[:, g].argmax(dim=1)
            if toward_reference:
                pick = ref
            else:
                glo, ghi = lo[:, g], hi[:, g]
                # vertex k fits in the box iff hi_k >= 1 and lo_j <= 0 for every j != k
                others_ok = (glo <= 0).sum(dim=1, keepdim=True) - (glo <= 0).long()
                allowed = (ghi >= 1) & (others_ok == g.numel() - 1)
                allowed[torch.arange(z.shape[0], device=z.device), ref] = True
                scores = z[:, g].masked_fill(~allowed, float("-inf"))
                pick = scores.argmax(dim=1)
            vertex = torch.zeros_like(z[:, g])
            vertex[torch.arange(z.shape[0], device=z.device), pick] = 1.0
            out[:, g] = vertex
        return out

    def discrete_mask(self) -> Tensor:
        """``(D,)`` bool: integer and categorical columns (pinned while relations are repaired
        after snapping)."""
        mask = torch.zeros(self.dim, dtype=torch.bool)
        if self.integer_columns.numel():
            mask[self.integer_columns] = True
        for group in self.groups:
            mask[group] = True
        return mask


def _simplex_box(v: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Euclidean projection of each row of ``v`` ``(N, k)`` onto ``{sum = 1, lo <= u <= hi}``:
    ``u = clip(v - tau, lo, hi)`` where the sum, piecewise linear and non-increasing in
    ``tau`` with breakpoints ``v - lo`` and ``v - hi``, equals 1; ``tau`` is found exactly by
    evaluating the sum at the sorted breakpoints and interpolating linearly. Assumes the set
    is non-empty (``sum(lo) <= 1 <= sum(hi)``)."""
    vd, lod, hid = v.double(), lo.double(), hi.double()
    points, _ = torch.cat([vd - lod, vd - hid], dim=1).sort(dim=1)  # (N, 2k)
    clipped = torch.minimum(
        torch.maximum(vd[:, None, :] - points[:, :, None], lod[:, None]), hid[:, None]
    )
    totals = clipped.sum(dim=2)  # (N, 2k), non-increasing
    j = ((totals >= 1.0).sum(dim=1) - 1).clamp(0, points.shape[1] - 2)[:, None]
    t0, t1 = points.gather(1, j), points.gather(1, j + 1)
    s0, s1 = totals.gather(1, j), totals.gather(1, j + 1)
    drop = s0 - s1
    frac = torch.where(drop > 0, (s0 - 1.0) / drop.clamp_min(1e-300), torch.zeros_like(drop))
    tau = t0 + frac.clamp(0, 1) * (t1 - t0)
    return torch.minimum(torch.maximum(vd - tau, lod), hid).to(v.dtype)


def check_feasible(
    schema: TabularSchema, x_unit: Tensor, *, x_ref: Tensor | None = None, atol: float = 1e-5
) -> Feasibility:
    """Check encoded rows ``x_unit`` ``(N, len(schema.columns))`` against ``schema``: bounds,
    integer features, one-hot groups, relations, and (when ``x_ref`` ``(N, D)`` is given)
    immutable features unchanged from ``x_ref``.

    Returns:
        :class:`Feasibility`: ``ok`` ``(N,)`` bool and the names of the violated constraints
        per row.

    Raises:
        AttackInputError: ``x_unit`` or ``x_ref`` has the wrong shape.
    """
    return ConstraintSet(schema, atol=atol).check(x_unit, x_ref)
