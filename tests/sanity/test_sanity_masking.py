"""The sanity checks flag gradient-masked models and stay quiet on honest ones."""

from __future__ import annotations

import time

import pytest
import torch
from sanity_masked_models import Noisy, Quantised, Saturated
from torch import nn

from bastion.attacks import predict
from bastion.data import Dataset
from bastion.errors import ConfigError
from bastion.evaluation.sanity import (
    CHECK_CODES,
    REMEDIES,
    SanityCheck,
    run_sanity_checks,
    to_warnings,
)
from bastion.threat import ThreatModel


def _fired(checks: list[SanityCheck]) -> set[str]:
    return {c.code for c in checks if not c.passed}


def _run(model: nn.Module, d: Dataset, eps: float, seed: int = 0) -> list[SanityCheck]:
    return run_sanity_checks(model, d.test.x, d.test.y, ThreatModel("linf", eps), seed=seed)


def test_every_check_reported_once_in_order(
    standard_model: nn.Module, sanity_digits: Dataset
) -> None:
    start = time.perf_counter()
    checks = _run(standard_model, sanity_digits, 0.1)
    assert time.perf_counter() - start < 20  # the quick budget stays quick
    assert tuple(c.code for c in checks) == CHECK_CODES
    for c in checks:
        assert c.severity == ("info" if c.passed else "warning")


@pytest.mark.parametrize("seed", [0, 1])
def test_quiet_on_standard_model(
    standard_model: nn.Module, sanity_digits: Dataset, seed: int
) -> None:
    assert _fired(_run(standard_model, sanity_digits, 0.1, seed)) == set()


@pytest.mark.parametrize("seed", [0, 1])
def test_quiet_on_adversarially_trained_model(
    robust_model: nn.Module, sanity_digits: Dataset, seed: int
) -> None:
    assert _fired(_run(robust_model, sanity_digits, 0.2, seed)) == set()


def test_flags_input_quantisation(robust_model: nn.Module, sanity_digits: Dataset) -> None:
    fired = _fired(_run(Quantised(robust_model), sanity_digits, 0.2))
    assert {
        "zero-or-nonfinite-gradients",
        "black-box-beats-white-box",
        "unbounded-eps-not-zero",
    } <= fired
    assert "non-deterministic-model" not in fired


def test_flags_saturated_logits(standard_model: nn.Module, sanity_digits: Dataset) -> None:
    fired = _fired(_run(Saturated(standard_model), sanity_digits, 0.1))
    assert {"zero-or-nonfinite-gradients", "unbounded-eps-not-zero"} <= fired
    assert "non-deterministic-model" not in fired


def test_flags_randomised_defence(standard_model: nn.Module, sanity_digits: Dataset) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        checks = _run(Noisy(standard_model), sanity_digits, 0.1)
    fired = _fired(checks)
    assert "non-deterministic-model" in fired
    assert "zero-or-nonfinite-gradients" not in fired
    (nd,) = [c for c in checks if c.code == "non-deterministic-model"]
    assert "EOT" in nd.advice


def test_to_warnings_lists_failed_checks_with_advice(
    robust_model: nn.Module, sanity_digits: Dataset
) -> None:
    checks = _run(Quantised(robust_model), sanity_digits, 0.2)
    warnings = to_warnings(checks, "quantised")
    assert [w["code"] for w in warnings] == [c.code for c in checks if not c.passed]
    for w in warnings:
        assert set(w) == {"code", "model", "message"}
        assert w["model"] == "quantised"
    by_code = {w["code"]: w["message"] for w in warnings}
    assert "BPDA" in by_code["zero-or-nonfinite-gradients"]
    assert "BPDA" in by_code["unbounded-eps-not-zero"]


def test_reuses_given_results(standard_model: nn.Module, sanity_digits: Dataset) -> None:
    given: dict[str, float | dict[str, float]] = {"fgsm": 0.0, "pgd-20": {"0.05": 0.3, "0.1": 0.6}}
    checks = run_sanity_checks(
        standard_model,
        sanity_digits.test.x,
        sanity_digits.test.y,
        ThreatModel("linf", 0.1),
        attacks_results=given,
    )
    by_code = {c.code: c for c in checks}
    assert not by_code["single-step-beats-iterative"].passed
    assert by_code["single-step-beats-iterative"].details["fgsm"] == 0.0
    mono = by_code["non-monotonic-eps"]
    assert not mono.passed
    assert mono.details["rises"][0]["attack"] == "pgd-20"


def test_restores_training_mode(standard_model: nn.Module, sanity_digits: Dataset) -> None:
    standard_model.train()
    try:
        run_sanity_checks(
            standard_model,
            sanity_digits.test.x,
            sanity_digits.test.y,
            ThreatModel("linf", 0.1),
            max_examples=20,
        )
        assert standard_model.training
    finally:
        standard_model.eval()


def test_rejects_bad_budget_and_empty_batch(
    standard_model: nn.Module, sanity_digits: Dataset
) -> None:
    x, y = sanity_digits.test.x, sanity_digits.test.y
    with pytest.raises(ConfigError, match=r"sanity\.budget"):
        run_sanity_checks(standard_model, x, y, ThreatModel("linf", 0.1), budget="huge")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="non-empty"):
        run_sanity_checks(standard_model, x[:0], y[:0], ThreatModel("linf", 0.1))


def test_black_box_check_compares_the_same_examples(
    standard_model: nn.Module, sanity_digits: Dataset
) -> None:
    x, y = sanity_digits.test.x, sanity_digits.test.y
    threat = ThreatModel("linf", 0.1)
    correct = predict(standard_model, x) == y
    n = 200  # the quick budget's examples: the first 200

    def black_box(square: torch.Tensor) -> SanityCheck:
        checks = run_sanity_checks(
            standard_model,
            x,
            y,
            threat,
            attack_masks={"fgsm": correct, "pgd-20": correct, "square": square},
        )
        (c,) = [c for c in checks if c.code == "black-box-beats-white-box"]
        return c

    # Square broke every example past the checked ones: not the same examples, no verdict
    outside = correct.clone()
    outside[n:] = False
    quiet = black_box(outside)
    assert quiet.passed and quiet.details["square_given"] and quiet.details["drop"] == 0.0
    # Square broke every checked example the white-box attacks left: it fires, with the count
    inside = correct.clone()
    inside[:n] = False
    fired = black_box(inside)
    assert not fired.passed
    assert fired.details["broken_by_square"] == round(fired.details["white_box"] * n)
    assert fired.details["with_square"] == 0.0 and fired.remedies == ("black-box",)
    # an accuracy over other examples is never compared with the check's own white-box figures
    floats = run_sanity_checks(standard_model, x, y, threat, attacks_results={"square": 0.0})
    (bb,) = [c for c in floats if c.code == "black-box-beats-white-box"]
    assert bb.passed and not bb.details["square_given"]


def test_every_check_names_its_remedies(robust_model: nn.Module, sanity_digits: Dataset) -> None:
    checks = _run(Quantised(robust_model), sanity_digits, 0.2)
    for c in checks:
        assert c.remedies == REMEDIES[c.code] and c.to_dict()["remedies"] == list(c.remedies)
    by_code = {c.code: c for c in checks}
    assert "bpda" in by_code["zero-or-nonfinite-gradients"].remedies
    assert by_code["non-deterministic-model"].remedies == ("eot",)
