"""Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020, ECCV, "Square Attack: a
query-efficient black-box adversarial attack via random search").

A score-based black-box attack: it needs the model's scores ``(N, C)`` (logits, log-probabilities
or probabilities) and nothing else: no gradients, forward passes only, under ``torch.no_grad``.
It is a random search that minimises the margin

    untargeted: ``m(x) = s_y(x) - max_{k != y} s_k(x)``     (fooled once the argmax leaves ``y``)
    targeted:   ``m(x) = max_{k != t} s_k(x) - s_t(x)``     (fooled once the argmax is ``t``)

and accepts a random change only when it lowers the margin. Each change is confined to a random
square window whose side follows the paper's schedule: a window covers a share ``p`` of the
image, with ``p = p_init`` halved at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000
of the paper's 10,000-query budget (the milestones are rescaled to the budget given).

* linf (Algorithm 2 of the paper): start from vertical stripes of ``±eps`` (one random sign per
  column and channel); each step sets a window to ``±eps`` with one random sign per channel (a
  change of up to ``2 eps`` per pixel), so every candidate is a vertex of the eps-ball, clipped to
  the input bounds. A draw that would leave the window unchanged is redrawn once, then flipped.
* l2 (Algorithm 3): start from a grid of tiles, each holding the centred pseudo-Gaussian pattern
  (nested rectangles weighted ``1 / (k + 1)^2``, two halves of opposite sign) with a random sign
  per channel, scaled to norm ``eps``; each step picks two windows, moves the perturbation mass of
  both (plus any unused budget) into the first one, along the pattern plus the window's current
  direction, empties the second, and rescales the whole perturbation to norm ``eps``.

Input layouts: images ``(N, C, H, W)`` use square windows. Other shapes are viewed as such a
grid: ``(N, F)`` as ``(N, 1, 1, F)``, ``(N, A, B)`` as ``(N, 1, A, B)``, and ``(N, C, H, W1, W2,
...)`` as ``(N, C, H, W1 * W2 * ...)``. When the grid has a side of length 1 (flat inputs), the
windows are 1-D segments covering the same share ``p`` of the features, the linf start gives each
feature its own random sign, and the l2 pattern is the 1-D profile of the same construction.

Per-example bookkeeping: an example is attacked only while the model still classifies it
correctly (untargeted) or not as its target (targeted); it stops spending queries the moment a
candidate fools the model. All randomness comes from the ``generator`` passed to the attack.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from bastion.attacks.base import Attack, Opening
from bastion.attacks.registry import register
from bastion.attacks.settings import AttackSettings
from bastion.errors import AttackInputError
from bastion.threat import ThreatModel

#: Iterations of the paper's 10,000-iteration schedule after which ``p`` halves.
P_MILESTONES = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_TINY = 1e-12


def p_schedule(p_init: float, iteration: int, budget: int) -> float:
    """The share of the image a window covers at ``iteration`` (0-based) of ``budget``.

    ``p_init`` halves at each milestone of :data:`P_MILESTONES`, the iteration first being
    rescaled to the paper's 10,000-iteration budget.
    """
    it = int(iteration / max(budget, 1) * 10000)
    halvings = sum(1 for m in P_MILESTONES if it > m)
    return float(p_init * 0.5**halvings)


def margin(scores: Tensor, y: Tensor, targets: Tensor | None) -> Tensor:
    """The margin ``(N,)`` the attack minimises (see the module docstring); < 0 means fooled,
    up to ties."""
    label = y if targets is None else targets
    z_l = scores.gather(1, label[:, None]).squeeze(1)
    other = scores.masked_fill(F.one_hot(label, scores.shape[1]).bool(), float("-inf")).amax(1)
    return z_l - other if targets is None else other - z_l


def _fooled(scores: Tensor, y: Tensor, targets: Tensor | None) -> Tensor:
    pred = scores.argmax(dim=1)
    return pred == targets if targets is not None else pred != y


def as_grid(x: Tensor) -> Tensor:
    """View a batch ``(N, ...)`` as the ``(N, C, H, W)`` grid the windows live on (see the
    module docstring)."""
    n = x.shape[0]
    if x.dim() == 2:
        return x.reshape(n, 1, 1, x.shape[1])
    if x.dim() == 3:
        return x.reshape(n, 1, x.shape[1], x.shape[2])
    return x.reshape(n, x.shape[1], x.shape[2], -1)


def window_shape(p: float, h: int, w: int, *, min_side: int = 1) -> tuple[int, int]:
    """The ``(rows, cols)`` of a window covering a share ``p`` of an ``h x w`` grid: a square of
    side ``round(sqrt(p h w))`` on 2-D grids, a segment of ``round(p L)`` on a grid of length
    ``L`` with a side of 1. Sides are at least ``min_side`` (where the grid allows) and at most
    the grid's."""
    if h > 1 and w > 1:
        cap = min(h, w)
        s = min(max(round(math.sqrt(p * h * w)), min_side, 1), cap)
        if min_side > 1 and s % 2 == 0:  # odd sides centre the l2 pattern
            s = s + 1 if s + 1 <= cap else s - 1
        return s, s
    length = max(h, w)
    s = min(max(round(p * length), min_side, 1), length)
    if min_side > 1 and s % 2 == 0:
        s = s + 1 if s + 1 <= length else s - 1
    return (1, s) if w >= h else (s, 1)


def _rings(a: int, b: int) -> Tensor:
    """Nested rectangles centred in an ``a x b`` rectangle: entry ``(i, j)`` is
    ``sum_{k >= d(i, j)} 1 / (k + 1)^2`` with ``d`` the Chebyshev distance to the centre."""
    ca, cb = a // 2, b // 2
    d = torch.maximum((torch.arange(a) - ca).abs()[:, None], (torch.arange(b) - cb).abs()[None, :])
    w = 1.0 / (torch.arange(max(ca, cb) + 1, dtype=torch.float64) + 1.0) ** 2
    suffix = w.flip(0).cumsum(0).flip(0)
    return suffix[d]


def pseudo_gaussian(rows: int, cols: int, *, split_rows: bool) -> Tensor:
    """The paper's l2 pattern ``(rows, cols)``, unit l2 norm: two halves (split across the rows
    or across the columns) of opposite sign, each a centred stack of nested rectangles. A side of
    length 1 cannot be split; the pattern is then one centred bump."""
    length = rows if split_rows else cols
    if length < 2:
        out = _rings(rows, cols)
    elif split_rows:
        h = rows // 2
        out = torch.cat([_rings(h, cols), -_rings(rows - h, cols)], dim=0)
    else:
        h = cols // 2
        out = torch.cat([_rings(rows, h), -_rings(rows, cols - h)], dim=1)
    unit: Tensor = out / out.norm()
    return unit


def _patterns(rows: int, cols: int) -> Tensor:
    """``(V, rows, cols)``: the pattern variants a window may take. A square window may be split
    either way (the paper's random transpose); a longer side is always the one split."""
    if rows == cols:
        return torch.stack(
            [
                pseudo_gaussian(rows, cols, split_rows=True),
                pseudo_gaussian(rows, cols, split_rows=False),
            ]
        )
    return pseudo_gaussian(rows, cols, split_rows=rows > cols)[None]


def _offsets(n: int, limit: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    return torch.randint(0, limit, (n,), generator=generator, device=device)


def _window_index(
    r0: Tensor, c0: Tensor, rows: int, cols: int, h: int, w: int
) -> tuple[Tensor, Tensor, Tensor]:
    """For per-example window corners ``(n,)``: the mask ``(n, 1, h, w)`` of the windows and the
    within-window row ``(n, h)`` and column ``(n, w)`` of every grid cell (clamped outside)."""
    dev = r0.device
    ih = torch.arange(h, device=dev)[None, :] - r0[:, None]
    jw = torch.arange(w, device=dev)[None, :] - c0[:, None]
    in_h = (ih >= 0) & (ih < rows)
    in_w = (jw >= 0) & (jw < cols)
    mask = (in_h[:, :, None] & in_w[:, None, :])[:, None]
    return mask, ih.clamp(0, rows - 1), jw.clamp(0, cols - 1)


def _window_weight(r0: Tensor, c0: Tensor, rows: int, cols: int, like: Tensor) -> Tensor:
    """``(n, 1, h, w)`` in ``like``'s dtype: 1.0 inside each example's window, 0.0 outside."""
    h, w = like.shape[2], like.shape[3]
    ih = torch.arange(h, device=like.device)[None, :] - r0[:, None]
    jw = torch.arange(w, device=like.device)[None, :] - c0[:, None]
    in_h = ((ih >= 0) & (ih < rows)).to(like.dtype)
    in_w = ((jw >= 0) & (jw < cols)).to(like.dtype)
    return (in_h[:, :, None] * in_w[:, None, :])[:, None]


def _place(patterns: Tensor, variant: Tensor, ih: Tensor, jw: Tensor, mask: Tensor) -> Tensor:
    """Put pattern ``patterns[variant[i]]`` into example ``i``'s window: ``(n, 1, h, w)``."""
    vals = patterns[variant[:, None, None], ih[:, :, None], jw[:, None, :]]
    return vals[:, None] * mask


def _norm2(v: Tensor, dims: tuple[int, ...]) -> Tensor:
    return v.pow(2).sum(dim=dims, keepdim=True).sqrt()


class _Run:
    """One restart of the Square Attack on a batch of examples, all starting together.

    The grid views ``x`` ``(m, C, H, W)``; ``spend`` is the number of queries each example may
    spend in this restart (the start counts as one).
    """

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        targets: Tensor | None,
        threat: ThreatModel,
        *,
        p_init: float,
        spend: int,
        shape: torch.Size,
        generator: torch.Generator | None,
    ):
        self.model, self.x, self.y, self.targets, self.threat = model, x, y, targets, threat
        self.p_init, self.spend, self.shape, self.generator = p_init, spend, shape, generator

    def _scores(self, xg: Tensor) -> Tensor:
        out: Tensor = self.model(xg.reshape(xg.shape[0], *self.shape))
        return out

    def run(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(x_best, margin_best, fooled, spent)`` per example (grid layout for ``x_best``).

        The examples still searching live in compact working tensors (clean point, best point,
        best margin, label and, for linf, the two clipped vertices ``x +- eps``), updated with
        ``torch.where`` and compacted only when some example is fooled, so a step costs the
        forward pass and a few elementwise passes, not gathers and scatters of the batch.
        """
        x, threat, g = self.x, self.threat, self.generator
        m, _, h, w = x.shape
        dev = x.device
        lo, hi = threat.bounds
        eps = threat.eps
        linf = threat.norm == "linf"
        x_best = threat.clip(x + self._init_delta())
        scores = self._scores(x_best)
        m_best = margin(scores, self.y, self.targets)
        fooled = _fooled(scores, self.y, self.targets)
        spent = torch.ones(m, dtype=torch.int64, device=dev)
        active = (~fooled).nonzero().squeeze(1)
        min_side = 3 if threat.norm == "l2" else 1
        xa, xb, mb, ya = x[active], x_best[active], m_best[active], self.y[active]
        ta = None if self.targets is None else self.targets[active]
        up = (xa + eps).clamp(lo, hi) if linf else xa
        down = (xa - eps).clamp(lo, hi) if linf else xa
        flushed = 0  # iterations already added to ``spent`` for the examples in ``active``
        it = -1
        for it in range(self.spend - 1):
            if active.numel() == 0:
                break
            a = active.numel()
            rows, cols = window_shape(
                p_schedule(self.p_init, it, self.spend), h, w, min_side=min_side
            )
            r0 = _offsets(a, h - rows + 1, g, dev)
            c0 = _offsets(a, w - cols + 1, g, dev)
            if linf:
                cand = self._linf_candidate(up, down, xb, _window_weight(r0, c0, rows, cols, xb))
            else:
                mask, ih, jw = _window_index(r0, c0, rows, cols, h, w)
                cand = self._l2_candidate(xa, xb, mask, ih, jw, rows, cols, eps).clamp(lo, hi)
            scores = self._scores(cand)
            m_new = margin(scores, ya, ta)
            hit = _fooled(scores, ya, ta)
            better = (m_new < mb) | hit
            xb = torch.where(better[:, None, None, None], cand, xb)
            mb = torch.where(better, m_new, mb)
            if bool(hit.any()):
                spent[active] += it + 1 - flushed
                flushed = it + 1
                x_best[active], m_best[active] = xb, mb
                fooled[active[hit]] = True
                keep = ~hit
                active, xa, xb, mb, ya = active[keep], xa[keep], xb[keep], mb[keep], ya[keep]
                up, down = up[keep], down[keep]
                ta = None if ta is None else ta[keep]
        if active.numel():
            spent[active] += it + 1 - flushed
            x_best[active], m_best[active] = xb, mb
        return x_best, m_best, fooled, spent

    # -- starts -----------------------------------------------------------------------------
    def _init_delta(self) -> Tensor:
        x, threat, g = self.x, self.threat, self.generator
        m, c, h, w = x.shape
        if threat.norm == "linf":
            # vertical stripes: one sign per column and channel (per feature on a 1-D grid)
            shape = (m, c, 1, w) if (h > 1 and w > 1) else (m, c, h, w)
            sign = torch.randint(0, 2, shape, generator=g, device=x.device).to(x.dtype) * 2 - 1
            return threat.eps * sign.expand(m, c, h, w)
        return self._l2_tiles()

    def _l2_tiles(self) -> Tensor:
        """A grid of pseudo-Gaussian tiles (about 5 per side) with random signs, norm eps."""
        x, g = self.x, self.generator
        m, c, h, w = x.shape
        dev = x.device
        if h > 1 and w > 1:
            th = tw = max(min(h, w) // 5, 1)
        elif w >= h:
            th, tw = 1, max(w // 5, 1)
        else:
            th, tw = max(h // 5, 1), 1
        nh, nw = h // th, w // tw
        sp_h, sp_w = (h - nh * th) // 2, (w - nw * tw) // 2
        pats = _patterns(th, tw).to(device=dev, dtype=x.dtype)
        oi = torch.arange(h, device=dev) - sp_h
        oj = torch.arange(w, device=dev) - sp_w
        valid = ((oi >= 0) & (oi < nh * th))[:, None] & ((oj >= 0) & (oj < nw * tw))[None, :]
        ti, tj = (oi.clamp(0, nh * th - 1) // th), (oj.clamp(0, nw * tw - 1) // tw)
        ri, rj = oi.clamp(0, nh * th - 1) % th, oj.clamp(0, nw * tw - 1) % tw
        variant = torch.randint(0, pats.shape[0], (m, nh, nw), generator=g, device=dev)
        sign = torch.randint(0, 2, (m, c, nh, nw), generator=g, device=dev).to(x.dtype) * 2 - 1
        var_full = variant[:, ti[:, None], tj[None, :]]  # (m, h, w)
        pat = pats[var_full, ri[None, :, None], rj[None, None, :]]  # (m, h, w)
        delta = pat[:, None] * sign[:, :, ti[:, None], tj[None, :]] * valid
        return delta * self.threat.eps / (_norm2(delta, (1, 2, 3)) + _TINY)

    # -- steps ------------------------------------------------------------------------------
    def _linf_candidate(self, up: Tensor, down: Tensor, xb: Tensor, inside: Tensor) -> Tensor:
        """Set each window (``inside``: 1.0 in the window, else 0.0, ``(a, 1, h, w)``) to the
        vertex ``x + eps`` (``up``) or ``x - eps`` (``down``), both clipped, with one random sign
        per channel. A draw that would change nothing is replaced by a second draw, and that
        one, if it changes nothing either, by its flip (``-s`` always changes a window that
        ``s`` leaves as it is, unless clipping makes the two vertices equal there). Whether a
        sign changes the window is read from two per-channel flags (is the window already all
        ``up``, all ``down``), so the redraws cost no extra pass over the batch and no
        synchronisation. Selections are exact lerps with weights 0 or 1 rather than
        ``torch.where`` with a full boolean mask, several times slower on CPU."""
        a, c = up.shape[0], up.shape[1]
        dev = up.device
        all_up = ((xb - up).abs() * inside).flatten(2).sum(dim=2) == 0  # (a, c)
        all_down = ((xb - down).abs() * inside).flatten(2).sum(dim=2) == 0
        draws = torch.randint(0, 2, (2, a, c), generator=self.generator, device=dev).bool()
        pos = draws[0]
        same = torch.where(pos, all_up, all_down).all(dim=1, keepdim=True)
        pos = torch.where(same, draws[1], pos)
        same = same & torch.where(pos, all_up, all_down).all(dim=1, keepdim=True)
        pos = torch.where(same, ~pos, pos)[:, :, None, None]
        return torch.lerp(xb, torch.where(pos, up, down), inside)

    def _l2_candidate(
        self,
        xa: Tensor,
        xb: Tensor,
        mask: Tensor,
        ih: Tensor,
        jw: Tensor,
        rows: int,
        cols: int,
        eps: float,
    ) -> Tensor:
        """Move the mass of two windows (and any unused budget) into the first (Algorithm 3)."""
        a, c, h, w = xa.shape
        dev, g = xa.device, self.generator
        r2 = _offsets(a, h - rows + 1, g, dev)
        c2 = _offsets(a, w - cols + 1, g, dev)
        mask2, _, _ = _window_index(r2, c2, rows, cols, h, w)
        union = mask | mask2
        delta = xb - xa
        norm_img = _norm2(delta, (1, 2, 3))  # (a, 1, 1, 1)
        norm_w1 = _norm2(delta * mask, (2, 3))  # (a, c, 1, 1)
        norm_union = _norm2(delta * union, (2, 3))
        pats = _patterns(rows, cols).to(device=dev, dtype=xa.dtype)
        variant = torch.randint(0, pats.shape[0], (a,), generator=g, device=dev)
        sign = torch.randint(0, 2, (a, c, 1, 1), generator=g, device=dev).to(xa.dtype) * 2 - 1
        new = _place(pats, variant, ih, jw, mask) * sign + delta * mask / (norm_w1 + 1e-10)
        budget = (torch.clamp(eps**2 - norm_img**2, min=0.0) / c + norm_union**2).sqrt()
        new = new / (_norm2(new, (2, 3)) + _TINY) * budget
        delta = torch.where(union, torch.zeros_like(delta), delta) + new * mask
        delta = delta * eps / (_norm2(delta, (1, 2, 3)) + _TINY)
        return xa + delta


class SquareSettings(AttackSettings):
    """Settings of :class:`Square`."""

    queries: int = Field(default=5000, ge=1, description="the most forward passes per example")
    p_init: float = Field(
        default=0.8, gt=0, lt=1, description="share of the image the first windows cover"
    )
    restarts: int = Field(
        default=1, ge=1, description="runs sharing the queries, on examples still robust"
    )


@register("square", knowledge="score-based", settings=SquareSettings)
class Square(Attack):
    """Square Attack (Andriushchenko et al. 2020), score-based, linf and l2, untargeted or
    targeted (see the module docstring for the algorithm).

    Args:
        queries: the most forward passes spent on one example inside the attack, over all
            restarts and including one pass on the clean input (the base class adds one final
            check). Restarts share it equally; each restart rescales the ``p`` schedule to its
            share. AutoAttack uses 5,000.
        p_init: the share of the image the first windows cover, in (0, 1); the paper uses 0.8
            for linf (and 0.1 for l2 on ImageNet; 0.8 suits small images).
        restarts: independent runs, each only on the examples still robust; an example keeps
            the point of lowest margin over its runs.

    Guarantees: ``queries`` ``(N,)`` int64 from :meth:`__call__` is at most ``queries + 1`` per
    example; an example stops spending once fooled; a model that classifies an input wrongly
    already costs it one query; the same ``generator`` seed gives the same result. The model
    may be any module giving ``(N, C)`` scores, ``C >= 2`` (a wrapped black box from
    :mod:`bastion.attacks.targets` included); it is only ever called under ``torch.no_grad``.
    Threats in another norm than linf or l2 raise :class:`AttackInputError`.
    """

    def __init__(self, *, queries: int = 5000, p_init: float = 0.8, restarts: int = 1):
        s = SquareSettings.of(locals(), where=self.name)
        self.queries = s.queries
        self.p_init = float(s.p_init)
        self.restarts = s.restarts

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
            raise AttackInputError(f"threat.norm: square supports linf and l2, got {threat.norm!r}")
        with torch.no_grad():
            scores = opening.logits
            if scores.dim() != 2 or scores.shape[0] != n or scores.shape[1] < 2:
                raise AttackInputError(
                    "model: square needs scores of shape (N, C) with C >= 2, got "
                    f"{tuple(scores.shape)}"
                )
            queries = torch.ones(n, dtype=torch.int64, device=x.device)
            fooled = ~opening.robust
            x_out = x.clone()
            m_out = torch.full((n,), float("inf"), device=x.device)
            share, extra = divmod(self.queries - 1, self.restarts)
            if threat.eps == 0:
                return x_out, queries
            grid = as_grid(x)
            for r in range(self.restarts):
                spend = share + (extra if r == 0 else 0)
                idx = (~fooled).nonzero().squeeze(1)
                if idx.numel() == 0 or spend < 1:
                    break
                run = _Run(
                    model,
                    grid[idx],
                    y[idx],
                    None if targets is None else targets[idx],
                    threat,
                    p_init=self.p_init,
                    spend=spend,
                    shape=x.shape[1:],
                    generator=generator,
                )
                xb, mb, hit, spent = run.run()
                queries[idx] += spent
                xb = xb.reshape(idx.numel(), *x.shape[1:])
                keep = hit | (mb < m_out[idx])
                x_out[idx[keep]] = xb[keep]
                m_out[idx[keep]] = mb[keep]
                fooled[idx[hit]] = True
        return x_out, queries
