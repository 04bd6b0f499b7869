"""The decision-boundary geometry under DeepFool and FAB: exact minimal steps to a hyperplane,
with and without the box, checked against generic LP/QP solvers (scipy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bastion.attacks._boundary import (
    closest_hyperplane,
    dual_norm,
    hyperplane_step,
    pair_gradients,
    project_hyperplane_box,
)

optimize = pytest.importorskip("scipy.optimize")

N, D = 24, 6


def _problem(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = torch.rand(N, D, generator=g, dtype=torch.float64)
    z[0, :2] = torch.tensor([0.0, 1.0])  # on the faces of the box
    w = torch.randn(N, D, generator=g, dtype=torch.float64)
    w[1, :3] = 0.0
    t = torch.randn(N, generator=g, dtype=torch.float64)
    t[2] = 0.0
    t[3] = 50.0  # out of reach inside the box
    return z, w, t


def _reference(z: np.ndarray, w: np.ndarray, t: float, norm: str) -> float:
    """The least norm of d with <w, d> = t and 0 <= z + d <= 1, by scipy."""
    lb, ub = -z, 1.0 - z
    if norm == "l1":  # d = p - m with p, m >= 0
        res = optimize.linprog(
            np.ones(2 * D),
            A_eq=np.concatenate([w, -w])[None],
            b_eq=[t],
            bounds=[(0, u) for u in ub] + [(0, -lo) for lo in lb],
        )
    elif norm == "linf":  # minimise s with -s <= d_i <= s
        eye = np.eye(D)
        a_ub = np.block([[eye, -np.ones((D, 1))], [-eye, -np.ones((D, 1))]])
        res = optimize.linprog(
            np.r_[np.zeros(D), 1.0],
            A_ub=a_ub,
            b_ub=np.zeros(2 * D),
            A_eq=np.r_[w, 0.0][None],
            b_eq=[t],
            bounds=[*zip(lb, ub, strict=True), (0, None)],
        )
    else:
        res = optimize.minimize(
            lambda d: d @ d,
            np.zeros(D),
            method="SLSQP",
            bounds=list(zip(lb, ub, strict=True)),
            constraints=[{"type": "eq", "fun": lambda d: w @ d - t}],
            options={"ftol": 1e-14, "maxiter": 500},
        )
        return float(np.sqrt(res.fun))
    assert res.status == 0
    return float(res.fun)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_box_projection_is_exact(norm: str) -> None:
    z, w, t = _problem(0)
    d = project_hyperplane_box(z, w, t, 0.0, 1.0, norm)
    assert bool(((z + d) >= -1e-12).all()) and bool(((z + d) <= 1 + 1e-12).all())
    reach = (w.abs() * torch.where(w * t.sign()[:, None] > 0, 1.0 - z, z)).sum(1)
    feasible = reach >= t.abs()
    assert not bool(feasible[3])
    dot = (w * d).sum(1)
    torch.testing.assert_close(dot[feasible], t[feasible], atol=1e-9, rtol=0)
    # out of reach: the box corner that goes furthest towards the hyperplane
    s = t[3].sign()
    corner = torch.where(w[3] * s > 0, 1.0 - z[3], torch.where(w[3] * s < 0, -z[3], 0.0))
    torch.testing.assert_close(d[3], corner)
    p = {"linf": float("inf"), "l2": 2.0, "l1": 1.0}[norm]
    for i in torch.nonzero(feasible).flatten().tolist():
        got = float(torch.linalg.vector_norm(d[i], ord=p))
        ref = _reference(z[i].numpy(), w[i].numpy(), float(t[i]), norm)
        assert got <= ref + 1e-6, (i, got, ref)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_free_step_reaches_the_hyperplane_at_the_dual_norm_distance(norm: str) -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(10, 7, generator=g, dtype=torch.float64)
    w[0] = 0.0
    t = torch.rand(10, generator=g, dtype=torch.float64) + 0.1
    d = hyperplane_step(w, t, norm)
    assert torch.equal(d[0], torch.zeros(7))  # no gradient, no step
    torch.testing.assert_close((w * d).sum(1)[1:], t[1:])
    p = {"linf": float("inf"), "l2": 2.0, "l1": 1.0}[norm]
    length = torch.linalg.vector_norm(d[1:], ord=p, dim=1)
    torch.testing.assert_close(length, t[1:] / dual_norm(w[1:], norm))  # Holder: optimal


def test_closest_hyperplane_and_pair_gradients_on_a_linear_model() -> None:
    lin = torch.nn.Linear(4, 3).double()
    x = torch.rand(5, 4, dtype=torch.float64)
    y = torch.zeros(5, dtype=torch.int64)

    def pairs(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = torch.tensor([[1, 2]]).expand(5, 2)
        return a, y[:, None].expand_as(a)

    logits, f, w = pair_gradients(lin, x, pairs)
    torch.testing.assert_close(f, logits[:, 1:] - logits[:, :1])
    wt = lin.weight.detach()
    torch.testing.assert_close(w[0], torch.stack([wt[1] - wt[0], wt[2] - wt[0]]))
    assert all(p.grad is None for p in lin.parameters())
    f_l, w_l = closest_hyperplane(f, w, "l2")
    dist = f.abs() / w.norm(dim=2)
    pick = dist.argmin(1)
    torch.testing.assert_close(f_l, f[torch.arange(5), pick])
    torch.testing.assert_close(w_l, w[torch.arange(5), pick])


def _root_problem(seed: int, rows: int = 64, cols: int = 300) -> tuple[torch.Tensor, ...]:
    """Rows with many kinks, repeated kinks (quantised caps, as MNIST pixels give), zero
    slopes, a zero need and an unreachable need."""
    g = torch.Generator().manual_seed(seed)
    slope = torch.rand(rows, cols, generator=g, dtype=torch.float64)
    slope[slope < 0.2] = 0.0
    brk = torch.randint(0, 8, (rows, cols), generator=g).to(torch.float64) / 7
    brk[: rows // 2] = torch.rand(rows // 2, cols, generator=g, dtype=torch.float64)
    total = (slope * brk).sum(1)
    need = total * torch.rand(rows, generator=g, dtype=torch.float64)
    need[0] = 0.0
    need[1] = total[1] * 1.5
    need[2] = total[2]  # reachable only at the last kink
    return slope, brk, need


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_newton_root_matches_the_sorting_solver(seed: int) -> None:
    from bastion.attacks._boundary import _saturating_root, _saturating_root_sorted

    slope, brk, need = _root_problem(seed)
    got, ref = _saturating_root(slope, brk, need), _saturating_root_sorted(slope, brk, need)
    # row 2 needs exactly the total: reachable at the last kink (the sorting solver's cumulative
    # sum may round it out of reach)
    assert float(got[2]) == pytest.approx(float(brk[2][slope[2] > 0].max()))
    keep = torch.tensor([0, 1, *range(3, len(need))])
    got, ref, slope, brk, need = got[keep], ref[keep], slope[keep], brk[keep], need[keep]
    assert torch.equal(torch.isinf(got), torch.isinf(ref)) and bool(torch.isinf(got[1]))
    assert float(got[0]) == 0.0
    fin = torch.isfinite(ref)
    torch.testing.assert_close(got[fin], ref[fin], rtol=1e-9, atol=1e-12)
    value = (slope * torch.minimum(brk, got[:, None])).sum(1)
    torch.testing.assert_close(value[fin], need[fin], rtol=1e-9, atol=1e-12)


def test_newton_root_falls_back_to_sorting_when_the_steps_run_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import bastion.attacks._boundary as boundary

    slope, brk, need = _root_problem(3)
    ref = boundary._saturating_root_sorted(slope, brk, need)
    monkeypatch.setattr(boundary, "NEWTON_ITERATIONS", 1)
    got = boundary._saturating_root(slope, brk, need)
    fin = torch.isfinite(ref)
    torch.testing.assert_close(got[fin], ref[fin], rtol=1e-9, atol=1e-12)
