"""Escalation: on each planted kind of gradient masking the evaluation's own headline comes
within 2 points of (or below) an independent reference adaptive attack; on honest models it
does not fire and costs nothing; it at most doubles an evaluation that triggers it."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from reference_attacks import eot_reference, pgd_reference
from sanity_masked_models import DetectAndPurify, Noisy, Quantised, RandomDrop, Scaled
from torch import Tensor, nn

from bastion.attacks import FGSM, PGD
from bastion.data import Dataset
from bastion.errors import ConfigError
from bastion.evaluation import (
    NamedAttack,
    escalate,
    evaluate_model,
    find_bpda,
    probe_layers,
    run_sanity_checks,
)
from bastion.evaluation.escalation import eot_samples_needed, summary_lines
from bastion.evaluation.gate import evaluate_gate
from bastion.evaluation.scorecard import SCHEMA_VERSION, sanitize
from bastion.threat import ThreatModel

TARGET = 0.02  # the escalated worst case is within 2 points of the reference (or below it)


def _first_pass() -> list[NamedAttack]:
    return [NamedAttack("fgsm", FGSM()), NamedAttack("pgd-20", PGD(steps=20))]


def _evaluate(model: nn.Module, d: Dataset, eps: float, **kw: Any) -> dict[str, Any]:
    return evaluate_model(
        model, d.test.x, d.test.y, ThreatModel("linf", eps), _first_pass(), seed=0, **kw
    )


def _straight_through(pre: Tensor, x: Tensor) -> Tensor:
    return x + (pre - x).detach()


def _check_escalated(res: dict[str, Any], reference: float) -> None:
    esc = res["escalation"]
    assert esc["status"] == "complete" and esc["fired"]
    assert res["worst_case_accuracy"] <= reference + TARGET, (res["headline"], reference)
    assert res["worst_case_accuracy"] <= res["first_pass_worst_case_accuracy"]
    assert esc["superseded"] and "fired" in esc["reason"]
    assert "escalated" in res["headline"]
    # escalation at most doubles the evaluation that triggered it (first pass + checks), in
    # CPU time (wall-clock time on a shared machine measures the neighbours)
    assert esc["cpu_seconds"] <= res["evaluation_cpu_seconds"] - esc["cpu_seconds"] + 1.0


def test_input_quantisation_escalates_to_bpda(
    robust_model: nn.Module, sanity_digits: Dataset
) -> None:
    model = Quantised(robust_model)
    res = _evaluate(model, sanity_digits, 0.2)
    x, y = sanity_digits.test.x, sanity_digits.test.y
    ref = pgd_reference(
        lambda z: robust_model(_straight_through(torch.round(z * 4) / 4, z)), model, x, y, 0.2
    )
    _check_escalated(res, float(ref.float().mean()))
    bpda = next(s for s in res["escalation"]["steps"] if s["remedy"] == "bpda")
    assert bpda["status"] == "done" and bpda["broke"] > 0
    assert bpda["details"]["replacements"][0]["kind"] == "preprocessing"
    # far below the fooled first pass
    assert res["worst_case_accuracy"] < res["first_pass_worst_case_accuracy"] - 0.3


def test_logit_scaling_escalates_to_margin_losses(
    standard_model: nn.Module, sanity_digits: Dataset
) -> None:
    model = Scaled(standard_model)
    res = _evaluate(model, sanity_digits, 0.1)
    x, y = sanity_digits.test.x, sanity_digits.test.y
    ref = pgd_reference(model, model, x, y, 0.1)
    _check_escalated(res, float(ref.float().mean()))
    steps = {s["remedy"]: s for s in res["escalation"]["steps"]}
    assert steps["bpda"]["status"] == "not-applicable"  # nothing non-differentiable to bypass
    assert steps["margin"]["status"] == "done" and steps["margin"]["broke"] > 0
    assert steps["margin"]["details"]["temperature"] > 100


def test_detector_in_front_escalates_to_bpda(
    robust_model: nn.Module, sanity_digits: Dataset
) -> None:
    model = DetectAndPurify(robust_model)

    def through(z: Tensor) -> Tensor:
        flagged = (model.score(z) > model.threshold).view(-1, 1, 1, 1)
        pre = torch.where(flagged, torch.round(z * model.levels) / model.levels, z)
        return robust_model(_straight_through(pre, z))

    res = _evaluate(model, sanity_digits, 0.2)
    x, y = sanity_digits.test.x, sanity_digits.test.y
    ref = pgd_reference(through, model, x, y, 0.2)
    _check_escalated(res, float(ref.float().mean()))


@pytest.mark.parametrize("wrapper", [Noisy, RandomDrop])
def test_randomised_defences_escalate_to_eot(
    standard_model: nn.Module, sanity_digits: Dataset, wrapper: type[nn.Module]
) -> None:
    model = wrapper(standard_model)
    x, y = sanity_digits.test.x, sanity_digits.test.y
    with torch.random.fork_rng(devices=[]):  # the model's own noise comes from torch's RNG
        torch.manual_seed(0)
        res = _evaluate(model, sanity_digits, 0.1)
        mean, _ = eot_reference(model, x, y, 0.1, samples=16, steps=40, draws=16)
    _check_escalated(res, mean)
    esc = res["escalation"]
    eot = next(s for s in esc["steps"] if s["remedy"] == "eot")
    assert eot["status"] == "done" and len(eot["details"]["per_draw"]) == 16
    assert esc["spread"] is not None and 0 < esc["spread"] < 0.05
    # the samples per EOT gradient were measured, not fixed: fewer than the budget's 8 here
    assert eot["details"]["samples"] < 8 and eot["details"]["sample_choice"]["measured_on"] == 32


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eot_samples_follow_the_gradient_noise(
    standard_model: nn.Module, sanity_digits: Dataset, norm: str
) -> None:
    x, y = sanity_digits.test.x[:32], sanity_digits.test.y[:32]
    threat = ThreatModel(norm, 0.1 if norm == "linf" else 1.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        fixed, _ = eot_samples_needed(standard_model, x, y, threat, max_samples=8)
        mild, info = eot_samples_needed(Noisy(standard_model, 0.01), x, y, threat, max_samples=8)
        heavy, _ = eot_samples_needed(Noisy(standard_model, 1.0), x, y, threat, max_samples=8)
    assert fixed == 1  # a deterministic model needs no averaging
    assert mild == 1 and set(info["efficiency"]) == {"1", "2", "4"}
    assert heavy == 8  # still climbing at 4 draws: the whole budget
    with pytest.raises(ConfigError, match="keep"):
        eot_samples_needed(standard_model, x, y, threat, max_samples=8, keep=0.0)


@pytest.mark.parametrize(("which", "eps"), [("standard", 0.1), ("robust", 0.2)])
def test_honest_models_do_not_escalate_and_pay_nothing(
    request: pytest.FixtureRequest, sanity_digits: Dataset, which: str, eps: float
) -> None:
    model: nn.Module = request.getfixturevalue(f"{which}_model")
    on = _evaluate(model, sanity_digits, eps)
    off = _evaluate(model, sanity_digits, eps, escalate=False)
    for res in (on, off):
        assert res["escalation"]["fired"] == []
        assert res["escalation"]["status"] == "not-needed"
        assert "steps" not in res["escalation"]
        assert res["worst_case_accuracy"] == res["first_pass_worst_case_accuracy"]
        assert res["headline"].endswith("white-box only (no black-box attack was run)")
    assert on["worst_case_accuracy"] == off["worst_case_accuracy"]


def test_escalation_off_is_recorded_and_leaves_the_figure(
    robust_model: nn.Module, sanity_digits: Dataset
) -> None:
    res = _evaluate(Quantised(robust_model), sanity_digits, 0.2, escalate=False)
    esc = res["escalation"]
    assert esc["enabled"] is False and esc["status"] == "off"
    assert "zero-or-nonfinite-gradients" in esc["fired"] and "bpda" in esc["remedies"]
    assert res["worst_case_accuracy"] == res["first_pass_worst_case_accuracy"]
    assert "unverified" in res["headline"]


def test_gate_fails_an_escalation_that_could_not_finish(
    robust_model: nn.Module, sanity_digits: Dataset
) -> None:
    res = _evaluate(Quantised(robust_model), sanity_digits, 0.2, escalation_time_limit=0.0)
    esc = res["escalation"]
    assert esc["status"] == "incomplete" and not esc["complete"]
    assert all(s["status"] == "failed" and "time limit" in s["reason"] for s in esc["steps"])
    assert "escalation-incomplete" in {w["code"] for w in res["sanity_warnings"]}
    doc = sanitize(
        {
            "schema_version": SCHEMA_VERSION,
            "run": {"name": "masked"},
            "models": {"quantised": res},
            "warnings": res["sanity_warnings"],
        }
    )
    policy = {"rules": [{"metric": "models.quantised.clean_accuracy", "min": 0.5}]}
    result = evaluate_gate(doc, policy)
    assert not result.passed
    (failure,) = result.failures
    assert failure.rule.describe() == "escalation finished" and "quantised" in failure.message
    finished = sanitize(
        {**doc, "models": {"quantised": _evaluate(Quantised(robust_model), sanity_digits, 0.2)}}
    )
    assert evaluate_gate(finished, policy).passed
    assert any(line.startswith("escalation quantised:") for line in summary_lines(finished))


def test_probe_flags_only_the_non_differentiable_step(
    robust_model: nn.Module, sanity_digits: Dataset
) -> None:
    threat = ThreatModel("linf", 0.2)
    x = sanity_digits.test.x
    honest = probe_layers(robust_model, x, threat, generator=torch.Generator().manual_seed(0))
    assert honest and not any(p.offending for p in honest)
    plan = find_bpda(Quantised(robust_model), x, threat, generator=torch.Generator().manual_seed(0))
    assert [p.name for p in plan.probes if p.offending] == [""]
    (rep,) = plan.replacements
    assert (rep.module, rep.kind, rep.child, rep.approximation) == (
        "",
        "preprocessing",
        "inner",
        "identity",
    )
    # the replacement changes gradients, never outputs
    q = Quantised(robust_model)
    with plan.installed(q) as bpda:
        assert torch.equal(bpda(x), robust_model(torch.round(x * 4) / 4))
        xg = x[:8].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(bpda(xg).sum(), xg)
    assert bool((g != 0).any())
    xg0 = x[:8].clone().requires_grad_(True)
    (g0,) = torch.autograd.grad(q(xg0).sum(), xg0)
    assert not bool((g0 != 0).any())  # without it the gradient is zero


class _Threshold(nn.Module):
    """A binarising layer (a leaf module): ``1[x > 0.5]``, far from the identity."""

    def forward(self, x: Tensor) -> Tensor:
        return (x > 0.5).to(x.dtype)


def test_learned_approximation_for_a_layer_far_from_identity(
    robust_model: nn.Module, sanity_digits: Dataset
) -> None:
    model = nn.Sequential(_Threshold(), robust_model)
    plan = find_bpda(
        model,
        sanity_digits.test.x,
        ThreatModel("linf", 0.2),
        generator=torch.Generator().manual_seed(0),
    )
    (rep,) = plan.replacements
    assert (rep.module, rep.kind, rep.approximation) == ("0", "layer", "learned")
    assert rep.learned_mse is not None and rep.learned_mse < 0.5 * rep.identity_mse


def test_public_api_runs_on_any_module(standard_model: nn.Module, sanity_digits: Dataset) -> None:
    x, y = sanity_digits.test.x[:100], sanity_digits.test.y[:100]
    threat = ThreatModel("linf", 0.1)
    model = Scaled(standard_model)
    checks = run_sanity_checks(model, x, y, threat, seed=3)
    assert all(c.remedies for c in checks)
    first = escalate(model, x, y, threat, checks, seed=3)
    again = escalate(model, x, y, threat, checks, seed=3)
    assert first.status == "complete" and first.accuracy < first.first_pass_accuracy
    assert first.accuracy == again.accuracy  # reproducible from the seed
    assert torch.equal(first.robust, again.robust)
    quiet = escalate(standard_model, x, y, threat, run_sanity_checks(standard_model, x, y, threat))
    assert quiet.status == "not-needed" and quiet.steps == ()


def test_image_example_configs_end_with_a_black_box_attack() -> None:
    from pathlib import Path

    import yaml

    from bastion.config import load_config
    from bastion.evaluation.evaluator import headline, is_black_box
    from bastion.pipeline import evaluation_attacks

    examples = Path(__file__).resolve().parents[2] / "examples"
    seen = 0
    for path in sorted(examples.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if "models" not in raw or "poisoning" in raw:
            continue  # not a run config, or a backdoor drill (its headline says white-box only)
        cfg, _ = load_config(path)
        if not cfg.models or cfg.data.name not in ("digits", "mnist"):
            continue  # channel configs, and tabular data (its headline says white-box only)
        seen += 1
        attacks = evaluation_attacks(cfg)
        assert is_black_box(attacks[-1].attack), f"{path.name}: ends with {attacks[-1].label}"
    assert seen >= 5
    assert headline(0.5, 0.5, {}, black_box=False).endswith(
        "white-box only (no black-box attack was run)"
    )
