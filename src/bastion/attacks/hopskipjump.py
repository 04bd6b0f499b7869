"""HopSkipJump (Chen, Jordan & Wainwright 2020, IEEE S&P, "HopSkipJumpAttack: a
query-efficient decision-based attack").

A decision-based (label-only) black-box attack: of the model's output it uses the predicted
class (the argmax of the scores) and nothing else, so it works on any target that only reveals
labels. It looks for the adversarial point closest to ``x`` in the threat's norm (l2 or linf):

1. **Start** from an adversarial point: untargeted, uniform random noise in the bounds (up to
   ``init_tries`` draws); targeted, an input the model already assigns to the target. Where
   that fails, the nearest example of the same batch that the model assigns to a suitable class
   (wrong for untargeted, the target for targeted) serves, as a data sample does in the paper.
   A binary search on the blend ``(1 - a) x + a x_start`` brings the start close to ``x``.
2. **Binary search** to the boundary between ``x`` and the current point (on the segment for
   l2, on the radius of the linf box for linf) to precision ``theta = gamma / d^{3/2}`` (l2) or
   ``gamma / d^2`` (linf), ``d`` the input dimension.
3. **Gradient-direction estimate** at the boundary point by Monte-Carlo sampling:
   ``n_t = min(init_evals sqrt(t), max_evals)`` random unit directions ``u_b`` (Gaussian for l2,
   uniform in the cube for linf), probe ``x_t + delta_t u_b`` and average ``phi_b u_b`` with the
   decisions ``phi_b = ±1`` centred on their mean (the paper's baseline). ``delta_1`` is a tenth
   of the input range, later ``sqrt(d) theta dist`` (l2) or ``d theta dist`` (linf).
4. **Geometric step search**: step along the estimate (its sign for linf) by ``dist / sqrt(t)``,
   halving until the step lands on the adversarial side; then back to 2.

bastion's threat model is a bounded budget, not a minimal distance: an example stops as soon
as its adversarial point is within ``eps`` (it is then fooled), and otherwise the closest
adversarial point found is returned; the base class projects it onto the eps-ball and re-checks
it, so it counts as a success only if the projection still fools the model.

All examples of a batch run in lockstep (one forward pass per round for all of them); each one
has its own budget, distance, and state, and leaves the batch when fooled or out of queries.
"""

from __future__ import annotations

import math
from typing import Self

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from bastion.attacks.base import Attack, Opening
from bastion.attacks.registry import register
from bastion.attacks.settings import AttackSettings
from bastion.errors import AttackInputError
from bastion.threat import ThreatModel

_BLEND_TOL = 1e-3  # precision of the blend search of the start
_MAX_HALVINGS = 30  # halvings of the step before giving up on a step
_CHUNK = 1 << 22  # at most this many input elements per forward pass


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def _labels(model: nn.Module, xq: Tensor) -> Tensor:
    """Predicted classes ``(k,)`` of ``xq`` ``(k, ...)``, in chunks that bound memory."""
    rows = max(1, _CHUNK // max(1, xq[0].numel())) if xq.shape[0] else 1
    if xq.shape[0] <= rows:
        out: Tensor = model(xq).argmax(dim=1)
        return out
    return torch.cat([model(xq[i : i + rows]).argmax(dim=1) for i in range(0, xq.shape[0], rows)])


class _Run:
    """HopSkipJump on ``m`` examples at once: ``x0`` ``(m, ...)``, per-example state."""

    def __init__(
        self,
        model: nn.Module,
        x0: Tensor,
        y: Tensor,
        targets: Tensor | None,
        threat: ThreatModel,
        *,
        limit: int,
        init_evals: int,
        max_evals: int,
        gamma: float,
        generator: torch.Generator | None,
    ):
        self.model, self.x0, self.y, self.targets, self.threat = model, x0, y, targets, threat
        self.limit, self.init_evals, self.max_evals = limit, init_evals, max_evals
        self.generator = generator
        self.m = x0.shape[0]
        self.d = int(x0[0].numel())
        self.theta = (
            gamma / (self.d * math.sqrt(self.d)) if threat.norm == "l2" else gamma / self.d**2
        )
        self.spent = torch.zeros(self.m, dtype=torch.int64, device=x0.device)

    # -- queries ----------------------------------------------------------------------------
    def left(self, pos: Tensor) -> Tensor:
        """Queries left ``(k,)`` for the examples at ``pos``."""
        return self.limit - self.spent[pos]

    def adversarial(self, xq: Tensor, pos: Tensor) -> Tensor:
        """One query per row: is row ``i`` of ``xq`` adversarial for example ``pos[i]``?"""
        if xq.shape[0] == 0:
            return torch.zeros(0, dtype=torch.bool, device=xq.device)
        pred = _labels(self.model, xq)
        self.spent += torch.bincount(pos, minlength=self.m)
        if self.targets is None:
            return pred != self.y[pos]
        return pred == self.targets[pos]

    # -- 1. start ---------------------------------------------------------------------------
    def start(self, pool: Tensor, pool_pred: Tensor, init_tries: int) -> tuple[Tensor, Tensor]:
        """``(x_start (m, ...), found (m,))``: adversarial starting points, blended towards x0."""
        x0 = self.x0
        x_start = x0.clone()
        found = torch.zeros(self.m, dtype=torch.bool, device=x0.device)
        if self.targets is None:
            self._noise_starts(x_start, found, init_tries)
            self._pool_starts(x_start, found, pool, pool_pred)
        else:
            self._pool_starts(x_start, found, pool, pool_pred)
            self._noise_starts(x_start, found, init_tries)
        pos = found.nonzero().squeeze(1)
        x_start[pos] = self._blend(x0[pos], x_start[pos], pos)
        return x_start, found

    def _noise_starts(self, x_start: Tensor, found: Tensor, tries: int) -> None:
        lo, hi = self.threat.bounds
        for _ in range(tries):
            pos = (~found).nonzero().squeeze(1)
            pos = pos[self.left(pos) > 0]
            if pos.numel() == 0:
                return
            noise = torch.rand(
                (pos.numel(), *self.x0.shape[1:]),
                generator=self.generator,
                device=self.x0.device,
                dtype=self.x0.dtype,
            )
            noise = lo + (hi - lo) * noise
            ok = self.adversarial(noise, pos)
            x_start[pos[ok]] = noise[ok]
            found[pos[ok]] = True

    def _pool_starts(self, x_start: Tensor, found: Tensor, pool: Tensor, pool_pred: Tensor) -> None:
        """The nearest pool input whose (already known) label suits each example still without a
        start; costs no query."""
        pos = (~found).nonzero().squeeze(1)
        if pos.numel() == 0 or pool.shape[0] == 0:
            return
        p = 2.0 if self.threat.norm == "l2" else float("inf")
        flat_pool = pool.flatten(1)
        rows = max(1, _CHUNK // max(1, pool.shape[0]))
        for s in range(0, pos.numel(), rows):
            pc = pos[s : s + rows]
            dist = torch.cdist(self.x0[pc].flatten(1), flat_pool, p=p)
            if self.targets is None:
                ok = pool_pred[None, :] != self.y[pc][:, None]
            else:
                ok = pool_pred[None, :] == self.targets[pc][:, None]
            best = dist.masked_fill(~ok, float("inf")).argmin(dim=1)
            has = ok.any(dim=1)
            x_start[pc[has]] = pool[best[has]]
            found[pc[has]] = True

    def _blend(self, x0: Tensor, xs: Tensor, pos: Tensor) -> Tensor:
        """Binary search on ``a`` for the smallest adversarial ``(1 - a) x0 + a xs``."""
        lo = torch.zeros(pos.numel(), device=x0.device, dtype=x0.dtype)
        hi = torch.ones_like(lo)
        while True:
            todo = ((hi - lo) > _BLEND_TOL) & (self.left(pos) > 0)
            k = todo.nonzero().squeeze(1)
            if k.numel() == 0:
                break
            mid = (lo[k] + hi[k]) / 2
            a = _bcast(mid, x0)
            ok = self.adversarial((1 - a) * x0[k] + a * xs[k], pos[k])
            hi[k] = torch.where(ok, mid, hi[k])
            lo[k] = torch.where(ok, lo[k], mid)
        a = _bcast(hi, x0)
        return (1 - a) * x0 + a * xs

    # -- 2. binary search to the boundary ---------------------------------------------------
    def _toward(self, x0: Tensor, xa: Tensor, a: Tensor) -> Tensor:
        """The point at parameter ``a`` ``(k,)`` between ``x0`` and ``xa``: the blend for l2, the
        linf box of radius ``a`` for linf."""
        if self.threat.norm == "l2":
            ab = _bcast(a, x0)
            return (1 - ab) * x0 + ab * xa
        return x0 + torch.maximum(torch.minimum(xa - x0, _bcast(a, x0)), -_bcast(a, x0))

    def boundary(self, xa: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
        """Binary search between ``x0[pos]`` and the adversarial ``xa`` ``(k, ...)``: returns the
        adversarial end ``(k, ...)`` and its distance ``(k,)``."""
        x0 = self.x0[pos]
        if self.threat.norm == "l2":
            hi = torch.ones(pos.numel(), device=x0.device, dtype=x0.dtype)
            thr = torch.full_like(hi, self.theta)
        else:
            hi = self.threat.distance(xa, x0)
            thr = torch.clamp(hi * self.theta, max=self.theta)
        lo = torch.zeros_like(hi)
        while True:
            todo = ((hi - lo) > thr) & (self.left(pos) > 0)
            k = todo.nonzero().squeeze(1)
            if k.numel() == 0:
                break
            mid = (lo[k] + hi[k]) / 2
            ok = self.adversarial(self._toward(x0[k], xa[k], mid), pos[k])
            hi[k] = torch.where(ok, mid, hi[k])
            lo[k] = torch.where(ok, lo[k], mid)
        out = self._toward(x0, xa, hi)
        return out, self.threat.distance(out, x0)

    def search_cost(self, dist: Tensor) -> Tensor:
        """Queries ``(k,)`` one boundary search takes from distance ``dist``."""
        if self.threat.norm == "l2":
            return torch.full_like(dist, math.ceil(math.log2(1 / self.theta)), dtype=torch.int64)
        thr = torch.clamp(dist * self.theta, max=self.theta)
        ratio = torch.where(thr > 0, dist / thr.clamp_min(1e-30), torch.ones_like(dist))
        return torch.ceil(torch.log2(ratio.clamp_min(1.0))).to(torch.int64)

    # -- 3. gradient-direction estimate -----------------------------------------------------
    def gradient(self, xb: Tensor, pos: Tensor, delta: Tensor, evals: int) -> Tensor:
        """Unit estimate ``(k, ...)`` of the direction towards the adversarial side at ``xb``."""
        lo, hi = self.threat.bounds
        per = max(1, _CHUNK // (evals * self.d))
        out = torch.empty_like(xb)
        for s in range(0, xb.shape[0], per):
            xc, pc, dc = xb[s : s + per], pos[s : s + per], delta[s : s + per]
            k = xc.shape[0]
            shape = (k, evals, *xc.shape[1:])
            if self.threat.norm == "l2":
                u = torch.randn(shape, generator=self.generator, device=xc.device, dtype=xc.dtype)
            else:
                u = torch.rand(shape, generator=self.generator, device=xc.device, dtype=xc.dtype)
                u = 2 * u - 1
            flat = u.reshape(k, evals, -1)
            flat = flat / (flat.norm(dim=2, keepdim=True) + 1e-12)
            dcol = dc[:, None, None]
            probe = (xc.reshape(k, 1, -1) + dcol * flat).clamp(lo, hi)
            flat = (probe - xc.reshape(k, 1, -1)) / dcol
            ok = self.adversarial(
                probe.reshape(k * evals, *xc.shape[1:]), pc.repeat_interleave(evals)
            ).reshape(k, evals)
            phi = ok.to(xc.dtype) * 2 - 1
            mean = phi.mean(dim=1, keepdim=True)
            centred = torch.where(mean.abs() == 1, mean, phi - mean)  # the paper's baseline
            g = (centred[:, :, None] * flat).mean(dim=1)
            g = g / (g.norm(dim=1, keepdim=True) + 1e-12)
            out[s : s + per] = g.reshape(xc.shape)
        return out

    # -- 4. geometric step search -----------------------------------------------------------
    def step(self, xt: Tensor, pos: Tensor, update: Tensor, dist: Tensor, t: int) -> Tensor:
        """``x_t + e u`` with ``e = dist / sqrt(t)`` halved until adversarial (``x_t`` where no
        step is found within the budget)."""
        lo, hi = self.threat.bounds
        size = dist / math.sqrt(t)
        out = xt.clone()
        todo = torch.ones(pos.numel(), dtype=torch.bool, device=xt.device)
        for _ in range(_MAX_HALVINGS):
            k = (todo & (self.left(pos) > 0)).nonzero().squeeze(1)
            if k.numel() == 0:
                break
            cand = (xt[k] + _bcast(size[k], xt) * update[k]).clamp(lo, hi)
            ok = self.adversarial(cand, pos[k])
            out[k[ok]] = cand[ok]
            todo[k[ok]] = False
            size[k[~ok]] = size[k[~ok]] / 2
        return out

    # -- the loop ---------------------------------------------------------------------------
    def run(self, x_start: Tensor, found: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_best (m, ...), dist_best (m,))``: the closest adversarial point of each example
        (``x0`` and ``inf`` where none was found)."""
        threat, eps = self.threat, self.threat.eps
        lo, hi = threat.bounds
        x_best = self.x0.clone()
        d_best = torch.full((self.m,), float("inf"), device=self.x0.device)
        pos = found.nonzero().squeeze(1)
        if pos.numel() == 0:
            return x_best, d_best
        xt, dist = self.boundary(x_start[pos], pos)
        x_best[pos], d_best[pos] = xt, dist
        d_post = dist.clone()
        t = 0
        while True:
            t += 1
            reserve = self.search_cost(dist) + 2
            keep = (dist > eps) & (self.left(pos) >= reserve + 2)
            pos, xt, dist, d_post = pos[keep], xt[keep], dist[keep], d_post[keep]
            reserve = reserve[keep]
            if pos.numel() == 0:
                break
            evals = min(int(self.init_evals * math.sqrt(t)), self.max_evals)
            evals = max(1, min(evals, int((self.left(pos) - reserve).min())))
            if t == 1:
                delta = torch.full_like(dist, 0.1 * (hi - lo))
            elif threat.norm == "l2":
                delta = math.sqrt(self.d) * self.theta * d_post
            else:
                delta = self.d * self.theta * d_post
            delta = delta.clamp_min(1e-8)
            grad = self.gradient(xt, pos, delta, evals)
            update = grad if threat.norm == "l2" else grad.sign()
            moved = self.step(xt, pos, update, dist, t)
            xt, d_post = self.boundary(moved, pos)
            dist = d_post
            better = dist < d_best[pos]
            x_best[pos[better]], d_best[pos[better]] = xt[better], dist[better]
        return x_best, d_best


class HopSkipJumpSettings(AttackSettings):
    """Settings of :class:`HopSkipJump`; ``max_evals`` must be at least ``init_evals``."""

    queries: int = Field(default=5000, ge=1, description="the most forward passes per example")
    init_evals: int = Field(default=100, ge=1, description="probes of the first gradient estimate")
    max_evals: int = Field(
        default=10000, ge=1, description="the most probes of one gradient estimate"
    )
    gamma: float = Field(default=1.0, gt=0, description="sets the binary-search precision theta")
    init_tries: int = Field(
        default=100, ge=0, description="random draws looking for a starting point"
    )

    @model_validator(mode="after")
    def _evals(self) -> Self:
        if self.max_evals < self.init_evals:
            raise ValueError(
                f"max_evals: expected at least init_evals ({self.init_evals}), got {self.max_evals}"
            )
        return self


@register("hopskipjump", knowledge="label-only", kind="minimum-norm", settings=HopSkipJumpSettings)
class HopSkipJump(Attack):
    """HopSkipJump (Chen, Jordan & Wainwright 2020): a decision-based attack for l2 and linf,
    untargeted or targeted (see the module docstring for the algorithm).

    Args:
        queries: the most forward passes spent on one example inside the attack, including one
            on the clean input (the base class adds one final check).
        init_evals: probes of the first gradient estimate (the paper's 100); iteration ``t``
            uses ``init_evals * sqrt(t)``.
        max_evals: the most probes of one gradient estimate (the paper's 10,000).
        gamma: sets the binary-search precision ``theta`` (the paper's 1.0).
        init_tries: random-noise draws when looking for an adversarial start.

    Guarantees: uses only the model's predicted labels (``argmax`` of its scores), under
    ``torch.no_grad``; ``queries`` ``(N,)`` from :meth:`__call__` is at most ``queries + 1`` per
    example, and an example stops spending once its point is within ``eps``; the same
    ``generator`` seed gives the same result. Starting points may come from other examples of
    the batch (see the module docstring), so an example's result can depend on its batch.
    Threats in another norm than linf or l2 raise :class:`AttackInputError`.
    """

    def __init__(
        self,
        *,
        queries: int = 5000,
        init_evals: int = 100,
        max_evals: int = 10000,
        gamma: float = 1.0,
        init_tries: int = 100,
    ):
        s = HopSkipJumpSettings.of(locals(), where=self.name)
        self.queries, self.init_evals, self.max_evals = s.queries, s.init_evals, s.max_evals
        self.gamma = float(s.gamma)
        self.init_tries = s.init_tries

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
        n = x.shape[0]
        if threat.norm not in ("linf", "l2"):
            raise AttackInputError(
                f"threat.norm: hopskipjump supports linf and l2, got {threat.norm!r}"
            )
        with torch.no_grad():
            pred = opening.logits.argmax(dim=1)
            queries = torch.ones(n, dtype=torch.int64, device=x.device)
            fooled = ~opening.robust
            x_out = x.clone()
            idx = (~fooled).nonzero().squeeze(1)
            if idx.numel() == 0 or threat.eps == 0 or self.queries <= 1:
                return x_out, queries
            run = _Run(
                model,
                x[idx],
                y[idx],
                None if targets is None else targets[idx],
                threat,
                limit=self.queries - 1,
                init_evals=self.init_evals,
                max_evals=self.max_evals,
                gamma=self.gamma,
                generator=generator,
            )
            x_start, found = run.start(x, pred, self.init_tries)
            x_best, _ = run.run(x_start, found)
            x_out[idx] = x_best
            queries[idx] += run.spent
        return x_out, queries
