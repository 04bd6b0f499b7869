"""FGSM and PGD on the toy model: strength, feasibility, reproducibility, early stop, restarts,
targeted mode and input validation."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from attack_toy import Toy
from torch import Tensor, nn

from bastion.attacks import FGSM, PGD, Attack, AttackResult, predict
from bastion.errors import AttackInputError, ConfigError
from bastion.threat import ThreatModel

LINF = ThreatModel("linf", 0.1)
L2 = ThreatModel("l2", 0.25)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _robust_accuracy(toy: Toy, res: AttackResult) -> float:
    clean = predict(toy.model, toy.x) == toy.y
    return float((clean & ~res.success).float().mean())


# -- strength -----------------------------------------------------------------------------------


@pytest.mark.parametrize("threat", [LINF, L2], ids=["linf", "l2"])
def test_attacks_lower_accuracy_substantially(toy: Toy, threat: ThreatModel) -> None:
    for attack in (FGSM(), PGD(steps=10)):
        res = attack(toy.model, toy.x, toy.y, threat, generator=_gen(0))
        acc = _robust_accuracy(toy, res)
        assert acc < toy.clean_accuracy - 0.3, (attack, acc, toy.clean_accuracy)


@pytest.mark.parametrize("threat", [LINF, L2], ids=["linf", "l2"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pgd_with_more_steps_is_at_least_as_strong_as_fgsm(
    toy: Toy, threat: ThreatModel, seed: int
) -> None:
    fgsm = _robust_accuracy(toy, FGSM()(toy.model, toy.x, toy.y, threat))
    pgd = _robust_accuracy(
        toy, PGD(steps=20, restarts=2)(toy.model, toy.x, toy.y, threat, generator=_gen(seed))
    )
    pgd_det = _robust_accuracy(
        toy, PGD(steps=20, random_start=False)(toy.model, toy.x, toy.y, threat)
    )
    assert pgd <= fgsm
    assert pgd_det <= fgsm


@pytest.mark.parametrize("threat", [LINF, L2], ids=["linf", "l2"])
def test_larger_eps_is_at_least_as_strong(toy: Toy, threat: ThreatModel) -> None:
    accs = [
        _robust_accuracy(
            toy, PGD(steps=20, random_start=False)(toy.model, toy.x, toy.y, threat.with_eps(e))
        )
        for e in (0.0, threat.eps / 4, threat.eps / 2, threat.eps)
    ]
    assert accs[0] == pytest.approx(toy.clean_accuracy)
    assert accs == sorted(accs, reverse=True) and accs[-1] < accs[0]


def test_zero_eps_returns_the_clean_inputs(toy: Toy) -> None:
    res = PGD(steps=5)(toy.model, toy.x, toy.y, LINF.with_eps(0.0), generator=_gen(0))
    assert torch.equal(res.x_adv, toy.x)
    assert torch.equal(res.success, predict(toy.model, toy.x) != toy.y)


# -- feasibility and contract -------------------------------------------------------------------

ATTACKS: list[Attack] = [
    FGSM(),
    FGSM(step_size=1.25, random_start=True),
    FGSM(loss="cw"),
    PGD(steps=8),
    PGD(steps=8, step_size=1.0),
    PGD(steps=4, restarts=3, loss="cw"),
    PGD(steps=8, early_stop=False),
]


@pytest.mark.parametrize("attack", ATTACKS, ids=repr)
@pytest.mark.parametrize(
    "threat",
    [LINF, L2, ThreatModel("linf", 0.3, (0.2, 0.8)), ThreatModel("l2", 2.0)],
    ids=["linf", "l2", "linf-narrow-bounds", "l2-huge"],
)
def test_results_stay_within_eps_and_bounds(toy: Toy, attack: Attack, threat: ThreatModel) -> None:
    lo, hi = threat.bounds
    x = toy.x.clamp(lo, hi)
    res = attack(toy.model, x, toy.y, threat, generator=_gen(0))
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    lo32, hi32 = torch.tensor([lo, hi], dtype=x.dtype)  # the bounds as float32 can hold them
    assert bool((res.x_adv >= lo32).all()) and bool((res.x_adv <= hi32).all())
    dist = threat.distance(res.x_adv, x)
    assert bool((dist <= threat.eps * (1 + 1e-5) + 1e-6).all()), float(dist.max())
    # success is confirmed by the model, and the rest of the result is well formed
    assert torch.equal(res.success, predict(toy.model, res.x_adv) != toy.y)
    assert res.queries.dtype == torch.int64 and bool((res.queries >= 1).all())
    assert res.success_rate == pytest.approx(float(res.success.float().mean()))


def test_fgsm_is_the_signed_gradient_step(toy: Toy) -> None:
    x = toy.x[:50].clone().requires_grad_(True)
    F.cross_entropy(toy.model(x), toy.y[:50], reduction="sum").backward()
    assert x.grad is not None
    expected = (toy.x[:50] + 0.1 * x.grad.sign()).clamp(0, 1)
    toy.model.zero_grad(set_to_none=True)
    res = FGSM()(toy.model, toy.x[:50], toy.y[:50], LINF)
    torch.testing.assert_close(res.x_adv, expected)
    assert res.queries.tolist() == [2] * 50  # one gradient, one final check


def test_fgsm_l2_takes_a_full_eps_step(toy: Toy) -> None:
    # bounds wide enough that no clipping happens: the step has length exactly eps
    threat = ThreatModel("l2", 0.25, (-5.0, 5.0))
    res = FGSM()(toy.model, toy.x, toy.y, threat)
    torch.testing.assert_close(threat.distance(res.x_adv, toy.x), torch.full((len(toy.x),), 0.25))


def test_pgd_default_step_size_follows_madry() -> None:
    assert PGD(steps=10).step_size == pytest.approx(0.25)
    assert PGD(steps=50).step_size == pytest.approx(0.05)
    assert PGD(steps=10, step_size=0.5).step_size == 0.5


# -- reproducibility ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attack", [PGD(steps=5), PGD(steps=3, restarts=2), FGSM(random_start=True)], ids=repr
)
def test_same_seed_same_result_different_seed_different_start(toy: Toy, attack: Attack) -> None:
    a = attack(toy.model, toy.x, toy.y, L2, generator=_gen(11))
    torch.manual_seed(12345)  # the global RNG must not be used
    b = attack(toy.model, toy.x, toy.y, L2, generator=_gen(11))
    c = attack(toy.model, toy.x, toy.y, L2, generator=_gen(12))
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)
    assert torch.equal(a.queries, b.queries)
    assert not torch.equal(a.x_adv, c.x_adv)


def test_deterministic_attacks_ignore_the_generator(toy: Toy) -> None:
    for attack in (FGSM(), PGD(steps=5, random_start=False)):
        a = attack(toy.model, toy.x, toy.y, LINF, generator=_gen(0))
        b = attack(toy.model, toy.x, toy.y, LINF, generator=_gen(1))
        c = attack(toy.model, toy.x, toy.y, LINF)
        assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.x_adv, c.x_adv)


# -- early stop ---------------------------------------------------------------------------------


def test_early_stop_keeps_the_first_fooling_iterate(toy: Toy) -> None:
    steps = 10
    res = PGD(steps=steps, random_start=False)(toy.model, toy.x, toy.y, LINF)
    clean_wrong = predict(toy.model, toy.x) != toy.y
    # already misclassified: untouched, one initial check plus the final one
    assert torch.equal(res.x_adv[clean_wrong], toy.x[clean_wrong])
    assert bool((res.queries[clean_wrong] == 2).all())
    # fooled during the attack: stopped before spending every step
    fooled = res.success & ~clean_wrong
    assert bool(fooled.any())
    assert bool((res.queries[fooled] <= steps + 2).all())
    # never fooled: initial check, every step, the end-of-restart check, the final check
    assert bool((res.queries[~res.success] == steps + 3).all())
    # the fooling iterate lies strictly inside the budget more often than the last iterate would
    no_stop = PGD(steps=steps, random_start=False, early_stop=False)(toy.model, toy.x, toy.y, LINF)
    assert float(LINF.distance(res.x_adv, toy.x)[fooled].mean()) < float(
        LINF.distance(no_stop.x_adv, toy.x)[fooled].mean()
    )


def test_without_early_stop_every_example_takes_every_step(toy: Toy) -> None:
    res = PGD(steps=7, early_stop=False)(toy.model, toy.x, toy.y, LINF, generator=_gen(0))
    assert res.queries.tolist() == [8] * len(toy.x)
    clean_wrong = predict(toy.model, toy.x) != toy.y
    assert not torch.equal(res.x_adv[clean_wrong], toy.x[clean_wrong])  # moved anyway


def test_early_stop_spends_fewer_queries(toy: Toy) -> None:
    stop = PGD(steps=20)(toy.model, toy.x, toy.y, LINF, generator=_gen(0))
    full = PGD(steps=20, early_stop=False)(toy.model, toy.x, toy.y, LINF, generator=_gen(0))
    assert int(stop.queries.sum()) < int(full.queries.sum())
    # both are honest: early stop reports at least the successes found by the last iterate, up
    # to the examples that the last iterate fooled and no earlier iterate did (rare)
    assert stop.success_rate >= full.success_rate - 0.03


# -- restarts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("early_stop", [True, False])
@pytest.mark.parametrize("threat", [LINF.with_eps(0.05), L2.with_eps(0.15)], ids=["linf", "l2"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_restarts_never_reduce_success(
    toy: Toy, early_stop: bool, threat: ThreatModel, seed: int
) -> None:
    # With the same seed the first restart is the single run; later restarts only add successes.
    # Regression: without early stop, a later restart used to overwrite earlier successes.
    one = PGD(steps=3, restarts=1, early_stop=early_stop)(
        toy.model, toy.x, toy.y, threat, generator=_gen(seed)
    )
    four = PGD(steps=3, restarts=4, early_stop=early_stop)(
        toy.model, toy.x, toy.y, threat, generator=_gen(seed)
    )
    lost = one.success & ~four.success
    assert not bool(lost.any()), lost.nonzero().squeeze(1).tolist()
    assert four.success_rate >= one.success_rate
    # restarts are spent only on the examples that are still robust (without early stop, each
    # restart ends with one forward pass to find out which examples it fooled)
    assert torch.equal(four.x_adv[one.success], one.x_adv[one.success])
    extra = 0 if early_stop else 1
    assert bool((four.queries[one.success] == one.queries[one.success] + extra).all())
    assert bool((four.queries[~one.success] > one.queries[~one.success]).all())


def test_restarts_add_successes_somewhere(toy: Toy) -> None:
    threat = L2.with_eps(0.15)
    gains = 0
    for seed in range(4):
        one = PGD(steps=2, restarts=1)(toy.model, toy.x, toy.y, threat, generator=_gen(seed))
        many = PGD(steps=2, restarts=5)(toy.model, toy.x, toy.y, threat, generator=_gen(seed))
        gains += int((many.success & ~one.success).sum())
    assert gains > 0


# -- targeted mode ------------------------------------------------------------------------------


@pytest.mark.parametrize("attack", [FGSM(), PGD(steps=10), PGD(steps=10, loss="cw")], ids=repr)
def test_targeted_success_means_the_target_is_predicted(toy: Toy, attack: Attack) -> None:
    correct = predict(toy.model, toy.x) == toy.y
    x, y = toy.x[correct], toy.y[correct]
    targets = (y + 1) % 3
    threat = ThreatModel("linf", 0.2)
    res = attack(toy.model, x, y, threat, targets=targets, generator=_gen(0))
    pred = predict(toy.model, res.x_adv)
    assert torch.equal(res.success, pred == targets)
    assert res.success_rate > 0.2
    assert bool((threat.distance(res.x_adv, x) <= 0.2 + 1e-6).all())


def test_targeted_is_harder_than_untargeted(toy: Toy) -> None:
    correct = predict(toy.model, toy.x) == toy.y
    x, y = toy.x[correct], toy.y[correct]
    un = PGD(steps=20)(toy.model, x, y, LINF, generator=_gen(0))
    tg = PGD(steps=20)(toy.model, x, y, LINF, targets=(y + 1) % 3, generator=_gen(0))
    assert tg.success_rate <= un.success_rate
    # every targeted success is also an untargeted success (target != y)
    assert bool((predict(toy.model, tg.x_adv[tg.success]) != y[tg.success]).all())


def test_targeted_pgd_beats_targeted_fgsm(toy: Toy) -> None:
    correct = predict(toy.model, toy.x) == toy.y
    x, y = toy.x[correct], toy.y[correct]
    targets = (y + 2) % 3
    fg = FGSM()(toy.model, x, y, LINF, targets=targets)
    pg = PGD(steps=20, restarts=2)(toy.model, x, y, LINF, targets=targets, generator=_gen(0))
    assert pg.success_rate >= fg.success_rate


# -- model and inputs left alone ----------------------------------------------------------------


def test_attack_leaves_model_and_inputs_untouched(toy: Toy) -> None:
    x, y = toy.x.clone(), toy.y.clone()
    params = [p.detach().clone() for p in toy.model.parameters()]
    PGD(steps=5)(toy.model, x, y, LINF, generator=_gen(0))
    assert torch.equal(x, toy.x) and torch.equal(y, toy.y)
    assert all(torch.equal(a, b) for a, b in zip(params, toy.model.parameters(), strict=True))
    assert all(p.grad is None for p in toy.model.parameters())
    assert not toy.model.training


def test_result_is_detached(toy: Toy) -> None:
    x = toy.x.clone().requires_grad_(True)
    res = PGD(steps=3)(toy.model, x, toy.y, LINF, generator=_gen(0))
    assert not res.x_adv.requires_grad
    assert x.grad is None


def test_empty_batch(toy: Toy) -> None:
    res = PGD(steps=3)(toy.model, toy.x[:0], toy.y[:0], LINF)
    assert res.x_adv.shape == (0, 6)
    assert res.success.shape == (0,) and res.success.dtype == torch.bool
    assert res.queries.shape == (0,)
    assert res.success_rate == 0.0


def test_int32_labels_are_accepted(toy: Toy) -> None:
    # validate_batch accepts int32 class indices; the losses need int64 (regression)
    for loss in ("ce", "cw"):
        a = PGD(steps=3, loss=loss)(toy.model, toy.x, toy.y.int(), LINF, generator=_gen(0))
        b = PGD(steps=3, loss=loss)(toy.model, toy.x, toy.y, LINF, generator=_gen(0))
        assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)
    t = FGSM()(toy.model, toy.x, toy.y, LINF, targets=((toy.y + 1) % 3).int())
    assert t.success.dtype == torch.bool


# -- invalid inputs -----------------------------------------------------------------------------


def _bad_inputs(toy: Toy) -> list[tuple[str, dict[str, Any], str]]:
    x, y = toy.x[:8], toy.y[:8]
    return [
        ("int-x", {"x": (x * 100).long(), "y": y}, r"^x: expected a floating-point tensor"),
        ("list-x", {"x": x.tolist(), "y": y}, r"^x: expected a torch\.Tensor"),
        ("x-above", {"x": x + 1.0, "y": y}, r"^x: values must lie in the threat model's bounds"),
        ("x-below", {"x": x - 1.0, "y": y}, r"^x: values must lie in the threat model's bounds"),
        ("x-nan", {"x": torch.where(x > 0.5, float("nan"), x), "y": y}, r"^x: values must lie"),
        ("x-unbatched", {"x": x[0], "y": y[:1]}, r"^x: expected a batch of shape \(N, \.\.\.\)"),
        ("y-float", {"x": x, "y": y.float()}, r"^y: expected an integer tensor of class indices"),
        ("y-list", {"x": x, "y": y.tolist()}, r"^y: expected an integer tensor"),
        ("y-short", {"x": x, "y": y[:5]}, r"^y: expected shape \(8,\) to match x, got \(5,\)"),
        ("y-2d", {"x": x, "y": y[:, None]}, r"^y: expected shape \(8,\) to match x, got \(8, 1\)"),
        ("y-negative", {"x": x, "y": y - 5}, r"^y: class indices must lie in \[0, "),
        ("y-too-big", {"x": x, "y": y + 3}, r"^y: class indices must lie in \[0, 3\)"),
        ("targets-short", {"x": x, "y": y, "targets": y[:2]}, r"^targets: expected shape \(8,\)"),
        (
            "targets-float",
            {"x": x, "y": y, "targets": y.double()},
            r"^targets: expected an integer",
        ),
        ("targets-range", {"x": x, "y": y, "targets": y + 3}, r"^targets: class indices must lie"),
    ]


@pytest.mark.parametrize("case", range(15))
@pytest.mark.parametrize("attack", [FGSM(), PGD(steps=2)], ids=repr)
def test_invalid_inputs_raise_attack_input_error(toy: Toy, attack: Attack, case: int) -> None:
    cases = _bad_inputs(toy)
    assert len(cases) == 15
    _, kw, pattern = cases[case]
    targets = kw.pop("targets", None)
    with pytest.raises(AttackInputError, match=pattern):
        attack(toy.model, kw["x"], kw["y"], LINF, targets=targets)
    assert all(p.grad is None for p in toy.model.parameters())


def test_invalid_input_is_rejected_before_the_model_runs(toy: Toy) -> None:
    calls: list[Tensor] = []

    class Spy(torch.nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            calls.append(x)
            out: Tensor = toy.model(x)
            return out

    model = Spy()
    with pytest.raises(AttackInputError, match=r"^x: "):
        PGD(steps=2)(model, toy.x + 2.0, toy.y, LINF)
    assert calls == []


# -- settings validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: FGSM(step_size=0), r"fgsm\.step_size: expected a finite number > 0, got 0"),
        (lambda: FGSM(step_size=-1.0), r"fgsm\.step_size"),
        (lambda: FGSM(step_size=float("nan")), r"fgsm\.step_size"),
        (lambda: FGSM(loss="mse"), r"fgsm\.loss: expected one of ce, cw, got 'mse'"),
        (lambda: PGD(steps=0), r"pgd\.steps: expected an integer >= 1, got 0"),
        (lambda: PGD(restarts=0), r"pgd\.restarts: expected an integer >= 1, got 0"),
        (lambda: PGD(step_size=0.0), r"pgd\.step_size: expected a finite number > 0 or null"),
        (lambda: PGD(loss="hinge"), r"pgd\.loss: expected one of ce, cw, got 'hinge'"),
    ],
)
def test_bad_settings_raise_config_error_naming_the_field(make: Any, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        make()


def test_params_and_repr() -> None:
    pgd = PGD(steps=4, restarts=2, loss="cw")
    assert pgd.params() == {
        "steps": 4,
        "step_size": 0.625,
        "restarts": 2,
        "random_start": True,
        "loss": "cw",
        "early_stop": True,
        "precision": "fp32",
    }
    assert repr(pgd) == (
        "PGD(steps=4, step_size=0.625, restarts=2, random_start=True, loss='cw', early_stop=True, "
        "precision='fp32')"
    )
    assert FGSM().params() == {
        "step_size": 1.0,
        "random_start": False,
        "loss": "ce",
        "precision": "fp32",
    }
    assert FGSM.name == "fgsm" and PGD.name == "pgd"


def test_bf16_precision_is_close_and_never_claims_a_false_success() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
        x = torch.rand(64, 1, 4, 4)
    model.eval()
    y = model(x).argmax(dim=1)
    threat = ThreatModel("linf", 0.1)
    full = PGD(steps=10)(model, x, y, threat, generator=torch.Generator().manual_seed(0))
    half = PGD(steps=10, precision="bf16")(
        model, x, y, threat, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        fooled = model(half.x_adv).argmax(dim=1) != y  # float32 truth
    assert torch.equal(half.success, fooled)
    assert abs(int(half.success.sum()) - int(full.success.sum())) <= 3
    with pytest.raises(ConfigError, match="precision"):
        PGD(precision="fp16")
