"""Geometry of linearised decision boundaries, shared by the minimum-norm attacks.

DeepFool and FAB replace the classifier near the current point ``x`` by its first-order Taylor
expansion: the boundary between the reference class ``b`` and a class ``a`` becomes the
hyperplane ``{u : f + <w, u - x> = 0}`` with ``f = z_a(x) - z_b(x)`` and
``w = grad z_a(x) - grad z_b(x)``. This module computes those ``(f, w)`` pairs for a batch and
the smallest steps, in the l-inf, l2 or l1 norm, that reach such a hyperplane, with or without
the box constraint ``lo <= u <= hi``.

Shapes: points are flattened to ``(N, D)``; ``K`` candidate hyperplanes per example give
``f`` of shape ``(N, K)`` and ``w`` of shape ``(N, K, D)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from bastion.attacks.fast_grad import input_gradients_only

PairFn = Callable[[Tensor], tuple[Tensor, Tensor]]


def pair_gradients(
    model: nn.Module, x: Tensor, pairs: PairFn, *, bf16: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """Logit differences and their input gradients, one forward and ``K`` backward passes
    (under bfloat16 autocast with ``bf16``; the returned tensors are float32).

    Args:
        x: inputs ``(N, *input_shape)``.
        pairs: maps the (detached) logits ``(N, C)`` to two int64 index tensors ``(N, K)``:
            the classes ``a`` and the reference classes ``b``.

    Returns:
        ``(logits (N, C), f (N, K), w (N, K, D))`` with ``f = z_a - z_b`` and ``w`` its
        gradient with respect to the flattened input; all detached. No gradient reaches the
        model's parameters (gradients are taken with respect to ``x`` only).
    """
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad(), input_gradients_only(model):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(xg).float()
        a, b = pairs(logits.detach())
        f = logits.gather(1, a) - logits.gather(1, b)
        k = f.shape[1]
        grads = []
        for j in range(k):
            (g,) = torch.autograd.grad(f[:, j].sum(), xg, retain_graph=j < k - 1)
            grads.append(g.reshape(x.shape[0], -1))
    return logits.detach(), f.detach(), torch.stack(grads, dim=1)


def lp_norm(v: Tensor, norm: str) -> Tensor:
    """Norm over the last dimension: ``(..., D) -> (...)``."""
    if norm == "linf":
        return v.abs().amax(dim=-1)
    if norm == "l1":
        return v.abs().sum(dim=-1)
    out: Tensor = torch.linalg.vector_norm(v, dim=-1)
    return out


DUAL = {"linf": "l1", "l2": "l2", "l1": "linf"}


def dual_norm(w: Tensor, norm: str) -> Tensor:
    """The dual norm of ``w`` over its last dimension (l1 for linf, l2 for l2, linf for l1):
    the distance to the hyperplane ``f + <w, d> = 0`` in ``norm`` is ``|f| / dual_norm(w)``."""
    return lp_norm(w, DUAL[norm])


def closest_hyperplane(f: Tensor, w: Tensor, norm: str) -> tuple[Tensor, Tensor]:
    """The hyperplane nearest in ``norm``: ``argmin_k |f_k| / ||w_k||_dual``.

    Returns ``(f_l (N,), w_l (N, D))``.
    """
    dist = f.abs() / (dual_norm(w, norm) + 1e-12)
    pick = dist.argmin(dim=1)
    rows = torch.arange(f.shape[0], device=f.device)
    return f[rows, pick], w[rows, pick]


def hyperplane_step(w: Tensor, t: Tensor, norm: str) -> Tensor:
    """The smallest step ``d`` (in ``norm``) with ``<w, d> = t``, ignoring any box.

    ``w`` ``(N, D)``, ``t`` ``(N,)``: l2 ``t w / ||w||_2^2``, linf ``t sign(w) / ||w||_1``,
    l1 ``t sign(w_j) e_j / |w_j|`` at ``j = argmax |w|``. A zero ``w`` gives a zero step.
    """
    t = t[:, None]
    if norm == "l2":
        den = (w * w).sum(dim=1, keepdim=True)
        d = t * w / den.clamp_min(torch.finfo(w.dtype).tiny)
    elif norm == "linf":
        den = w.abs().sum(dim=1, keepdim=True)
        d = t * w.sign() / den.clamp_min(torch.finfo(w.dtype).tiny)
    else:
        den, j = w.abs().max(dim=1, keepdim=True)
        d = torch.zeros_like(w).scatter_(1, j, t * w.gather(1, j).sign() / den.clamp_min(1e-30))
    return torch.where(den > 0, d, torch.zeros_like(d))


#: Newton iterations :func:`_saturating_root` tries before it sorts the rows still open.
NEWTON_ITERATIONS = 30


def _saturating_root(slope: Tensor, brk: Tensor, need: Tensor) -> Tensor:
    """Solve ``sum_i slope_i * min(lam, brk_i) = need`` for ``lam >= 0``, per row, exactly.

    ``slope, brk >= 0`` ``(N, D)``, ``need >= 0`` ``(N,)``; rows where even ``lam = inf``
    falls short get ``inf``.

    The left side ``g(lam)`` is non-decreasing, concave and piecewise linear. Newton's method
    from ``lam = 0``, with the slope to the right of the iterate (the ``slope_i`` of the
    coordinates not yet saturated), never overshoots the root (the tangent of a concave
    function lies above it) and lands on it exactly once it reaches the root's linear piece, so
    it stops after finitely many steps; on FAB's linf and l2 projections of MNIST gradients it
    takes 4 steps on average and at most 6. Each step is three passes over the row, against
    the ``O(D log D)`` sort of :func:`_saturating_root_sorted`, which solves the rows still
    open after :data:`NEWTON_ITERATIONS` steps (2.7x faster on 100 x 784 rows, one thread).
    """
    total = (slope * brk).sum(dim=1)
    infeasible = total < need
    lam = torch.zeros_like(need)
    open_ = (need > 0) & ~infeasible
    for _ in range(NEWTON_ITERATIONS):
        if not bool(open_.any()):
            break
        lam_c = lam[:, None]
        value = (slope * torch.minimum(brk, lam_c)).sum(dim=1)
        # [brk > lam] as sign(relu(brk - lam)): arithmetic, about 2x faster on CPU than a
        # comparison's boolean mask
        rate = (slope * (brk - lam_c).clamp_min(0).sign()).sum(dim=1)
        gap = need - value
        step = gap / rate.clamp_min(torch.finfo(need.dtype).tiny)
        moved = lam + step
        open_ = open_ & (gap > 0) & (rate > 0) & (moved > lam)
        lam = torch.where(open_, moved, lam)
    if bool(open_.any()):
        rows = open_.nonzero().squeeze(1)
        lam[rows] = _saturating_root_sorted(slope[rows], brk[rows], need[rows])
    return torch.where(infeasible, torch.full_like(lam, float("inf")), lam)


def _saturating_root_sorted(slope: Tensor, brk: Tensor, need: Tensor) -> Tensor:
    """Solve ``sum_i slope_i * min(lam, brk_i) = need`` for ``lam >= 0``, per row, exactly.

    ``slope, brk >= 0`` ``(N, D)``, ``need >= 0`` ``(N,)``. The left side is non-decreasing and
    piecewise linear in ``lam`` with kinks at the ``brk_i``: sort them, evaluate it at every kink
    with cumulative sums, and solve on the segment where it first reaches ``need``. Rows where
    even ``lam = inf`` falls short get ``inf``. O(D log D) per row.
    """
    brk_s, order = brk.sort(dim=1)
    slope_s = slope.gather(1, order)
    sat = (slope_s * brk_s).cumsum(dim=1)  # contribution of the kinks passed so far
    passed = slope_s.cumsum(dim=1)
    total = passed[:, -1:]
    value_at_kink = sat + brk_s * (total - passed)
    first = (value_at_kink < need[:, None]).sum(dim=1)  # first kink where the value >= need
    infeasible = first == brk.shape[1]
    prev = (first - 1).clamp_min(0)[:, None]
    done = torch.where(first > 0, sat.gather(1, prev).squeeze(1), torch.zeros_like(need))
    rate = torch.where(first > 0, (total - passed.gather(1, prev)).squeeze(1), total.squeeze(1))
    lam = (need - done).clamp_min(0) / rate.clamp_min(torch.finfo(need.dtype).tiny)
    return torch.where(infeasible, torch.full_like(lam, float("inf")), lam)


def project_hyperplane_box(
    z: Tensor, w: Tensor, t: Tensor, lo: float, hi: float, norm: str
) -> Tensor:
    """The smallest step ``d`` (in ``norm``) with ``<w, d> = t`` and ``lo <= z + d <= hi``.

    This is the projection of ``z`` onto the intersection of the hyperplane
    ``{u : <w, u - z> = t}`` with the box, the subproblem of FAB (Croce & Hein 2020, sec. 3.1),
    solved exactly: for l2 and linf the optimal step is ``sign(w_i) min(lam k_i, cap_i)``
    (``k_i = |w_i|`` for l2, ``1`` for linf; ``cap_i`` the room left in the box in that
    direction) for the scalar ``lam`` found by :func:`_saturating_root`; for l1 it spends the
    budget greedily on the coordinates with the largest ``|w_i|``. Where the hyperplane misses
    the box, the step goes to the box corner that gets closest to it.

    Args:
        z: points ``(N, D)`` inside the box; w: normals ``(N, D)``; t: targets ``(N,)``.

    Returns:
        ``d`` ``(N, D)``.
    """
    s = t.sign()[:, None]
    wp = w * s  # now <wp, d> must reach |t| >= 0
    need = t.abs()
    up = (hi - z).clamp_min(0)
    down = (z - lo).clamp_min(0)
    if norm == "linf":
        # k_i = 1: the kinks are the caps themselves. A coordinate with w_i = 0 has slope 0 (it
        # adds nothing to the root) and sign 0 (no step), so its cap needs no special case.
        # where(wp > 0, up, down) as an exact lerp with weight 0 or 1 (a full boolean mask
        # in torch.where is several times slower on CPU)
        cap = torch.lerp(down, up, wp.sign().clamp_min(0))
        lam = _saturating_root(wp.abs(), cap, need)
        return wp.sign() * torch.minimum(cap, lam[:, None])
    cap = torch.where(wp > 0, up, torch.where(wp < 0, down, torch.zeros_like(z)))
    a = wp.abs()
    if norm == "l1":
        amount = _greedy_l1(a, cap, need)
    else:
        brk = torch.where(a > 0, cap / a.clamp_min(torch.finfo(a.dtype).tiny), torch.zeros_like(a))
        lam = _saturating_root(a * a, brk, need)
        amount = torch.where(a > 0, torch.minimum(lam[:, None] * a, cap), torch.zeros_like(a))
    return wp.sign() * amount


def _greedy_l1(a: Tensor, cap: Tensor, need: Tensor) -> Tensor:
    """Amounts ``0 <= m_i <= cap_i`` with ``sum_i a_i m_i = need`` and the least ``sum_i m_i``:
    saturate the coordinates in order of decreasing ``a_i``, the last one partially."""
    a_s, order = a.sort(dim=1, descending=True)
    cap_s = cap.gather(1, order)
    gain = (a_s * cap_s).cumsum(dim=1)
    first = (gain < need[:, None]).sum(dim=1)  # the coordinate that completes the budget
    pos = torch.arange(a.shape[1], device=a.device)[None, :]
    amount = torch.where(pos < first[:, None], cap_s, torch.zeros_like(cap_s))
    prev = (first - 1).clamp_min(0)[:, None]
    spent = torch.where(first > 0, gain.gather(1, prev).squeeze(1), torch.zeros_like(need))
    last = first.clamp_max(a.shape[1] - 1)[:, None]
    a_last = a_s.gather(1, last).squeeze(1)
    partial = ((need - spent) / a_last.clamp_min(torch.finfo(a.dtype).tiny)).clamp_min(0)
    partial = torch.minimum(partial, cap_s.gather(1, last).squeeze(1))
    partial = torch.where(first < a.shape[1], partial, cap_s.gather(1, last).squeeze(1))
    amount = amount.scatter(1, last, partial[:, None])
    return torch.zeros_like(amount).scatter(1, order, amount)
