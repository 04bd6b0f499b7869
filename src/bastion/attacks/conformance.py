"""``check_attack``: the conformance suite every registered attack must pass.

In the spirit of scikit-learn's ``check_estimator``: one set of checks run over every attack,
so a new attack cannot silently break the contract. Each check raises
:class:`AttackConformanceError` naming the attack and what was violated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from bastion.attacks.base import Attack, predict
from bastion.threat import ThreatModel


class AttackConformanceError(AssertionError):
    """An attack broke the attack contract."""


def _fail(attack: Attack, msg: str) -> None:
    raise AttackConformanceError(f"{attack!r}: {msg}")


def check_attack(
    make_attack: Callable[[], Attack],
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    seed: int = 0,
    targeted: bool = True,
    expect_stronger: bool = True,
) -> list[str]:
    """Run the conformance checks; return the names of the checks that passed.

    ``model`` should be a trained classifier that is not robust at ``threat`` (so that an honest
    attack finds adversarial examples). Checks: output shape and dtype; inputs not modified;
    every output within bounds and within eps; ``success`` agrees with the model; repeatable
    with the same generator seed; stronger than no attack; no parameter gradients left behind
    and the model's train/eval mode unchanged; targeted mode reaches targets when asked; an
    empty batch is handled.
    """
    passed: list[str] = []
    attack = make_attack()
    x_copy, y_copy = x.clone(), y.clone()
    mode = model.training
    res = attack(model, x, y, threat, generator=torch.Generator(device=x.device).manual_seed(seed))

    if res.x_adv.shape != x.shape or res.x_adv.dtype != x.dtype:
        _fail(
            attack,
            f"x_adv has shape {tuple(res.x_adv.shape)} {res.x_adv.dtype}, expected "
            f"{tuple(x.shape)} {x.dtype}",
        )
    if res.success.shape != (x.shape[0],) or res.success.dtype != torch.bool:
        _fail(attack, "success must be a bool tensor of shape (N,)")
    if res.queries.shape != (x.shape[0],) or bool((res.queries < 1).any()):
        _fail(attack, "queries must be (N,) and count at least the final check")
    passed.append("shapes")

    if not (torch.equal(x, x_copy) and torch.equal(y, y_copy)):
        _fail(attack, "modified its inputs in place")
    passed.append("inputs-untouched")

    lo, hi = threat.bounds
    if float(res.x_adv.min()) < lo - 1e-6 or float(res.x_adv.max()) > hi + 1e-6:
        _fail(attack, "returned points outside the input bounds")
    dist = threat.distance(res.x_adv, x)
    if bool((dist > threat.eps * (1 + 1e-5) + 1e-6).any()):
        _fail(
            attack,
            f"returned points outside the eps-ball: max distance {float(dist.max()):.6g} > eps "
            f"{threat.eps}",
        )
    passed.append("feasible")

    if not torch.equal(res.success, predict(model, res.x_adv) != y):
        _fail(attack, "success disagrees with the model's predictions on x_adv")
    passed.append("success-consistent")

    again = make_attack()(
        model, x, y, threat, generator=torch.Generator(device=x.device).manual_seed(seed)
    )
    if not torch.allclose(again.x_adv, res.x_adv, atol=1e-6) or not torch.equal(
        again.success, res.success
    ):
        _fail(attack, "not repeatable with the same generator seed")
    passed.append("repeatable")

    if expect_stronger:
        clean_acc = float((predict(model, x) == y).float().mean())
        adv_acc = float((~res.success).float().mean())
        if not adv_acc < clean_acc:
            _fail(
                attack,
                f"no stronger than no attack: accuracy {adv_acc:.3f} vs clean {clean_acc:.3f}",
            )
        passed.append("stronger-than-clean")

    if any(p.grad is not None for p in model.parameters()):
        _fail(attack, "left gradients on the model's parameters")
    if model.training != mode:
        _fail(attack, "changed the model's train/eval mode")
    passed.append("model-untouched")

    if targeted:
        with torch.no_grad():
            num_classes = int(model(x[:1]).shape[1])
        targets = (y + 1) % num_classes
        tres = make_attack()(
            model,
            x,
            y,
            threat,
            targets=targets,
            generator=torch.Generator(device=x.device).manual_seed(seed),
        )
        if not torch.equal(tres.success, predict(model, tres.x_adv) == targets):
            _fail(attack, "targeted success must mean the model predicts the target")
        if expect_stronger and not bool(tres.success.any()):
            _fail(attack, "targeted mode reached no target at all")
        passed.append("targeted")

    empty = make_attack()(model, x[:0], y[:0], threat)
    if empty.x_adv.shape[0] != 0:
        _fail(attack, "an empty batch must give an empty result")
    passed.append("empty-batch")
    return passed


def check_minimum_norm(
    make_attack: Callable[[], Attack],
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    eps_grid: Sequence[float],
    *,
    seed: int = 0,
) -> list[str]:
    """The checks of a minimum-norm attack's one run (:meth:`Attack.search`); return the names
    of the checks that passed.

    ``threat.eps`` is where the search may stop; ``eps_grid`` the budgets it must answer.
    Checks: output shapes and bounds, inputs untouched (``search-feasible``); every finite
    norm belongs to a point that fools the model and equals its distance from the input, and
    every infinite one to a point that does not (``norms-honest``); at every eps of the grid,
    each example with a norm within eps counts as broken, so accuracy is at most the fraction
    with a larger norm (``answers-grid``).
    """
    passed: list[str] = []
    attack = make_attack()
    if attack.kind != "minimum-norm":
        _fail(attack, f"is {attack.kind}, not minimum-norm")
    x_copy, y_copy = x.clone(), y.clone()
    found = attack.search(
        model, x, y, threat, generator=torch.Generator(device=x.device).manual_seed(seed)
    )
    n = x.shape[0]
    if found.x_adv.shape != x.shape or found.norms.shape != (n,) or found.queries.shape != (n,):
        _fail(attack, "search returned x_adv, norms or queries of the wrong shape")
    lo, hi = threat.bounds
    if float(found.x_adv.min()) < lo - 1e-6 or float(found.x_adv.max()) > hi + 1e-6:
        _fail(attack, "search returned points outside the input bounds")
    if not (torch.equal(x, x_copy) and torch.equal(y, y_copy)):
        _fail(attack, "search modified its inputs in place")
    passed.append("search-feasible")

    fooled = predict(model, found.x_adv) != y
    finite = torch.isfinite(found.norms)
    if not torch.equal(fooled, finite):
        _fail(attack, "a finite norm must mean a point that fools the model, and only then")
    dist = threat.distance(found.x_adv, x)
    if not torch.allclose(dist[finite], found.norms[finite].to(dist.dtype), atol=1e-5):
        _fail(attack, "norms disagree with the distance of the returned points")
    passed.append("norms-honest")

    for eps in eps_grid:
        robust = found.robust_at(model, threat.with_eps(eps))
        within = found.norms <= eps
        if bool((robust & within).any()):
            _fail(attack, f"at eps {eps}: an example with a norm within eps counted as robust")
    passed.append("answers-grid")
    return passed
