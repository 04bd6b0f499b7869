"""evaluate_model: clean, per-attack and worst-case accuracy, and accuracy against eps."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from bastion.attacks import FGSM, PGD, Attack, gradient_attack
from bastion.attacks.base import Opening
from bastion.data import Dataset
from bastion.errors import ConfigError
from bastion.evaluation import NamedAttack, eps_key, evaluate_model, robust_mask
from bastion.threat import ThreatModel
from bastion.training import accuracy

LINF = ThreatModel("linf", 0.2)
GRID = [0.0, 0.1, 0.2, 0.3]
RESULT_KEYS = {
    "clean_accuracy",
    "worst_case_accuracy",
    "attacks",
    "accuracy_vs_eps",
    "attack_seconds",
    "n_eval",
    "evaluation_seconds",
    "evaluation_cpu_seconds",
    "first_pass_worst_case_accuracy",
    "sanity_checks",
    "sanity_warnings",
    "sanity_seconds",
    "escalation",
    "worst_case_basis",
    "headline",
}


def _attacks(steps: int = 10) -> list[NamedAttack]:
    return [NamedAttack("fgsm", FGSM()), NamedAttack("pgd", PGD(steps=steps))]


class OnlyLabel(Attack):
    """PGD that perturbs only the examples of one label (so two of them break disjoint sets)."""

    name = "only-label"

    def __init__(self, *, label: int) -> None:
        self.label = label

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
        x_adv, queries = gradient_attack(
            model,
            x,
            y,
            threat,
            steps=10,
            step_size=0.25 * threat.eps,
            random_start=False,
            generator=generator,
        )
        keep = y != self.label
        x_adv[keep] = x[keep]
        return x_adv, queries


# -- exact figures on a problem with a closed-form answer -----------------------------------------


def test_toy_accuracies_match_closed_form(
    toy: tuple[nn.Module, Tensor, Tensor], toy_robust_accuracy: Any
) -> None:
    model, x, y = toy
    res = evaluate_model(model, x, y, LINF, _attacks(), eps_grid=GRID)
    assert set(res) == RESULT_KEYS
    assert res["n_eval"] == 100
    # every attack timed at every non-zero eps (eps 0 needs no attack)
    assert {k: sorted(v) for k, v in res["attack_seconds"].items()} == {
        label: sorted(eps_key(e) for e in GRID if e > 0) for label in ("fgsm", "pgd")
    }
    assert res["clean_accuracy"] == pytest.approx(0.9)
    for label in ("fgsm", "pgd"):
        for eps in GRID:
            assert res["attacks"][label][eps_key(eps)] == pytest.approx(
                toy_robust_accuracy(x, y, eps)
            ), (label, eps)
    assert res["worst_case_accuracy"] == pytest.approx(toy_robust_accuracy(x, y, 0.2))
    assert res["accuracy_vs_eps"]["worst_case"] == pytest.approx(
        [toy_robust_accuracy(x, y, e) for e in GRID]
    )


def test_worst_case_is_per_example_intersection(toy: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = toy
    attacks = [NamedAttack("class0", OnlyLabel(label=0)), NamedAttack("class1", OnlyLabel(label=1))]
    res = evaluate_model(model, x, y, LINF, attacks, eps_grid=[0.1])
    correct = (x[:, 0] <= 0.5).long() == y
    near = (x[:, 0] - 0.5).abs() < 0.2
    for label, cls in (("class0", 0), ("class1", 1)):
        expected = float((correct & ~(near & (y == cls))).float().mean())
        assert res["attacks"][label]["0.2"] == pytest.approx(expected)
    # an example survives the worst case only if it survives both attacks
    both = float((correct & ~near).float().mean())
    assert res["worst_case_accuracy"] == pytest.approx(both)
    assert both < min(res["attacks"]["class0"]["0.2"], res["attacks"]["class1"]["0.2"]) - 0.1


def test_no_attacks_worst_case_is_clean(toy: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = toy
    res = evaluate_model(model, x, y, LINF, [], eps_grid=[0.1])
    assert res["attacks"] == {}
    assert res["worst_case_accuracy"] == res["clean_accuracy"] == pytest.approx(0.9)
    assert res["accuracy_vs_eps"]["worst_case"] == pytest.approx([0.9, 0.9])


# -- properties on a trained digits model ---------------------------------------------------------


def test_digits_result_ranges(
    digits_result: dict[str, Any], trained_digits_model: nn.Module, digits_eval: Dataset
) -> None:
    r = digits_result
    assert set(r) == RESULT_KEYS
    assert 0.0 <= r["clean_accuracy"] <= 1.0
    assert 0.0 <= r["worst_case_accuracy"] <= 1.0
    assert r["clean_accuracy"] == pytest.approx(
        accuracy(trained_digits_model, digits_eval.test.x, digits_eval.test.y)
    )
    assert r["clean_accuracy"] > 0.85
    assert r["worst_case_accuracy"] < r["clean_accuracy"]
    assert r["n_eval"] == len(digits_eval.test)
    assert r["evaluation_seconds"] >= 0
    assert not trained_digits_model.training


def test_digits_worst_case_below_every_attack(digits_result: dict[str, Any]) -> None:
    r = digits_result
    key = eps_key(LINF.eps)
    for label, by_eps in r["attacks"].items():
        assert r["worst_case_accuracy"] <= by_eps[key], label
    curve = r["accuracy_vs_eps"]
    for i in range(len(curve["eps"])):
        assert curve["worst_case"][i] <= min(v[i] for v in curve["per_attack"].values())


def test_digits_eps_grid_is_complete(digits_result: dict[str, Any]) -> None:
    r = digits_result
    expected = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3]  # the grid plus the threat's eps, sorted
    curve = r["accuracy_vs_eps"]
    assert curve["eps"] == expected
    assert len(curve["worst_case"]) == len(expected)
    assert set(curve["per_attack"]) == {"fgsm", "pgd"}
    for label in ("fgsm", "pgd"):
        assert list(r["attacks"][label]) == [eps_key(e) for e in expected]
        assert list(r["attacks"][label]) == ["0", "0.05", "0.1", "0.15", "0.2", "0.3"]
        assert curve["per_attack"][label] == [r["attacks"][label][eps_key(e)] for e in expected]
        assert all(0.0 <= v <= 1.0 for v in curve["per_attack"][label])
    assert r["worst_case_accuracy"] == curve["worst_case"][expected.index(0.2)]


def test_digits_eps_zero_is_clean(digits_result: dict[str, Any]) -> None:
    r = digits_result
    assert r["accuracy_vs_eps"]["worst_case"][0] == r["clean_accuracy"]
    for label in ("fgsm", "pgd"):
        assert r["attacks"][label]["0"] == r["clean_accuracy"]


def test_digits_pgd_accuracy_non_increasing_in_eps(digits_result: dict[str, Any]) -> None:
    pgd = digits_result["accuracy_vs_eps"]["per_attack"]["pgd"]
    worst = digits_result["accuracy_vs_eps"]["worst_case"]
    for curve in (pgd, worst):
        assert all(b <= a + 0.01 for a, b in itertools.pairwise(curve)), curve
    assert pgd[-1] < 0.2 * pgd[0]  # a standard model collapses at eps 0.3
    # PGD is at least as strong as FGSM on this undefended model (up to the tolerance)
    fgsm = digits_result["accuracy_vs_eps"]["per_attack"]["fgsm"]
    assert all(p <= f + 0.01 for p, f in zip(pgd, fgsm, strict=True))


def test_results_independent_of_attack_order_and_reproducible(
    trained_digits_model: nn.Module, digits_eval: Dataset
) -> None:
    x, y = digits_eval.test.x[:150], digits_eval.test.y[:150]
    a = _attacks(steps=5)
    r1 = evaluate_model(trained_digits_model, x, y, LINF, a, eps_grid=[0.1], seed=3)
    r2 = evaluate_model(trained_digits_model, x, y, LINF, a[::-1], eps_grid=[0.1], seed=3)
    r3 = evaluate_model(trained_digits_model, x, y, LINF, a, eps_grid=[0.1], seed=3)
    assert r1["attacks"] == r2["attacks"] == r3["attacks"]
    assert r1["worst_case_accuracy"] == r2["worst_case_accuracy"]
    assert r1["accuracy_vs_eps"] == r3["accuracy_vs_eps"]


def test_l2_threat(trained_digits_model: nn.Module, digits_eval: Dataset) -> None:
    x, y = digits_eval.test.x[:100], digits_eval.test.y[:100]
    threat = ThreatModel("l2", 1.5)
    r = evaluate_model(trained_digits_model, x, y, threat, _attacks(steps=5), eps_grid=[0.0, 3.0])
    assert r["accuracy_vs_eps"]["eps"] == [0.0, 1.5, 3.0]
    assert r["worst_case_accuracy"] <= r["attacks"]["pgd"]["1.5"] <= r["clean_accuracy"]


def test_progress_callback(toy: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = toy
    calls: list[tuple[str, int, int]] = []
    evaluate_model(
        model,
        x,
        y,
        LINF,
        _attacks(),
        eps_grid=[0.1],
        progress=lambda msg, done, total: calls.append((msg, done, total)),
    )
    assert calls == [
        ("fgsm eps=0.1", 1, 4),
        ("pgd eps=0.1", 2, 4),
        ("fgsm eps=0.2", 3, 4),
        ("pgd eps=0.2", 4, 4),
    ]


# -- errors and helpers ---------------------------------------------------------------------------


def test_duplicate_labels_rejected(toy: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = toy
    with pytest.raises(ConfigError, match=r"evaluation\.attacks: labels must be unique"):
        evaluate_model(model, x, y, LINF, [NamedAttack("a", FGSM()), NamedAttack("a", PGD())])


def test_no_examples_rejected(toy: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = toy
    with pytest.raises(ConfigError, match=r"evaluation\.examples"):
        evaluate_model(model, x[:0], y[:0], LINF, _attacks())


def test_robust_mask_only_attacks_candidates(toy: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = toy
    candidates = torch.zeros(100, dtype=torch.bool)
    candidates[40:60] = True  # includes 2 misclassified and all points within 0.1 of 0.5
    mask = robust_mask(
        model, FGSM(), x, y, LINF.with_eps(0.1), candidates=candidates, seed=0, batch_size=7
    )
    assert mask.dtype == torch.bool and mask.shape == (100,)
    assert not mask[:40].any() and not mask[60:].any()
    assert not mask[candidates].any()  # every candidate here lies within eps of the boundary
    far = robust_mask(model, FGSM(), x, y, LINF.with_eps(0.05), candidates=candidates, seed=0)
    # 0.055..0.095 from the boundary, 5 on each side, less x=0.435 which is misclassified
    assert int(far.sum()) == 9
    assert not far[43]


def test_eps_key() -> None:
    assert eps_key(0.3) == "0.3"
    assert eps_key(0) == "0"
    assert eps_key(1.0) == "1"
    assert eps_key(0.03137254901960784) == "0.0313725"
