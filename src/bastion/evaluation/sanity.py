"""Sanity checks that catch an evaluation giving a false sense of security.

A robust accuracy is only as good as the attacks behind it. Gradient masking (a non-differentiable
pre-processing step, saturated logits, randomness in the forward pass) makes gradient attacks
fail while the model stays easy to fool, and the numbers then look better than they are
(Athalye, Carlini & Wagner 2018, "Obfuscated gradients give a false sense of security";
Carlini et al. 2019, "On evaluating adversarial robustness"; the warnings AutoAttack prints).
Each check here looks for one symptom of such a broken evaluation:

=============================== ============================================================
code                            fails when (thresholds: :class:`SanityThresholds`)
=============================== ============================================================
``non-deterministic-model``     two forward passes on the same input differ by more than
                                ``nondeterminism_atol`` (any logit)
``zero-or-nonfinite-gradients`` more than ``zero_grad_share`` of the examples have an input
                                gradient of the cross-entropy that is exactly zero or not finite
``single-step-beats-iterative`` FGSM accuracy < min(PGD, APGD-CE) accuracy - ``single_step_tol``
``black-box-beats-white-box``   Square, run on the examples every white-box attack (FGSM, PGD,
                                APGD-CE, APGD-T, the first pass's) left robust, breaks more
                                than ``black_box_tol`` of the examples checked (AutoAttack's
                                flag: Croce & Hein 2020 warn at any such drop)
``restarts-change-much``        APGD-CE with 1 restart minus with several > ``restarts_tol``
``non-monotonic-eps``           accuracy rises by more than ``monotonic_tol`` from one eps to
                                a larger one on the grid
``unbounded-eps-not-zero``      accuracy under APGD-CE then PGD at an eps that reaches the whole
                                input box (linf: ``hi - lo``) exceeds ``unbounded_max_acc``
=============================== ============================================================

Accuracies are fractions of all examples checked (an example the model already gets wrong counts
as broken), as in :func:`bastion.evaluation.evaluate_model`. A check that cannot run (Square
under l1, say) passes with ``details["skipped"]`` saying why. Randomness comes from generators
seeded from ``seed`` and the check's name; the model's own randomness (a randomised defence) is
the model's business.

Each check names the adaptive remedies that answer it (:data:`REMEDIES`, ``SanityCheck.remedies``);
:func:`bastion.evaluation.escalate` runs them on the examples the first pass left robust:

=============================== ============================================================
code                            remedies
=============================== ============================================================
``non-deterministic-model``     ``eot`` (expectation over the model's randomness)
``zero-or-nonfinite-gradients`` ``bpda`` (probed non-differentiable layers), ``margin`` (DLR,
                                rescaled logits)
``single-step-beats-iterative`` ``margin``, ``black-box``
``black-box-beats-white-box``   ``black-box`` (restarts, more Square queries, transfer)
``restarts-change-much``        ``black-box``
``non-monotonic-eps``           ``margin``, ``black-box``
``unbounded-eps-not-zero``      ``bpda``, ``margin``, ``black-box``
=============================== ============================================================
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.apgd import APGD, APGDTargeted
from bastion.attacks.base import Attack, predict
from bastion.attacks.gradient import FGSM, PGD
from bastion.attacks.square import Square
from bastion.errors import ConfigError
from bastion.evaluation.evaluator import eps_key, robust_mask
from bastion.threat import ThreatModel

Severity = Literal["warning", "info"]
Remedy = Literal["bpda", "margin", "eot", "black-box"]
Budget = Literal["quick", "full"]
AttackResults = Mapping[str, float | Mapping[str, float]]

CHECK_CODES = (
    "non-deterministic-model",
    "zero-or-nonfinite-gradients",
    "single-step-beats-iterative",
    "black-box-beats-white-box",
    "restarts-change-much",
    "non-monotonic-eps",
    "unbounded-eps-not-zero",
)

#: The adaptive remedies that answer each check, in the order escalation runs them: ``bpda``
#: (Athalye et al. 2018: straight-through or learned approximations of non-differentiable
#: layers found by probing), ``margin`` (the DLR loss of Croce & Hein 2020 and rescaled logits
#: for saturated outputs), ``eot`` (Expectation over Transformation, Athalye et al. 2018) and
#: ``black-box`` (more restarts, more Square queries, a transfer attack from a smooth
#: surrogate).
REMEDIES: dict[str, tuple[Remedy, ...]] = {
    "non-deterministic-model": ("eot",),
    "zero-or-nonfinite-gradients": ("bpda", "margin"),
    "single-step-beats-iterative": ("margin", "black-box"),
    "black-box-beats-white-box": ("black-box",),
    "restarts-change-much": ("black-box",),
    "non-monotonic-eps": ("margin", "black-box"),
    "unbounded-eps-not-zero": ("bpda", "margin", "black-box"),
}


@dataclass(frozen=True)
class SanityCheck:
    """The outcome of one check.

    Attributes:
        code: one of :data:`CHECK_CODES`.
        passed: False when the symptom was seen.
        severity: ``"warning"`` for a failed check, ``"info"`` for a passed or skipped one.
        message: what was measured, in one sentence with the figures.
        advice: what the failure means and what to do (empty for a passed check).
        details: the figures behind the verdict (JSON-able).
        remedies: the adaptive remedies that answer this check (:data:`REMEDIES`), named for
            passed checks too; escalation runs them only for failed ones.
    """

    code: str
    passed: bool
    severity: Severity
    message: str
    advice: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    remedies: tuple[Remedy, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form the scorecard stores."""
        return {
            "code": self.code,
            "passed": self.passed,
            "severity": self.severity,
            "message": self.message,
            "advice": self.advice,
            "details": self.details,
            "remedies": list(self.remedies),
        }


@dataclass(frozen=True)
class SanityThresholds:
    """When a check fails. Accuracy tolerances are absolute fractions (0.03 = 3 points); they
    sit above the run-to-run noise of the attacks on a few hundred examples and below the gaps
    gradient masking produces (tens of points), so honest models pass and masked ones fail.
    ``black_box_tol`` is AutoAttack's sensitivity instead: Square runs only on the examples every
    white-box attack left robust, and breaking more than half a point (a few tenths) fires
    the check (Croce & Hein 2020 flag any such drop)."""

    nondeterminism_atol: float = 1e-4
    zero_grad_share: float = 0.05
    single_step_tol: float = 0.03
    black_box_tol: float = 0.005
    restarts_tol: float = 0.06
    monotonic_tol: float = 0.03
    unbounded_max_acc: float = 0.02


@dataclass(frozen=True)
class _BudgetSettings:
    max_examples: int
    pgd_steps: int
    apgd_steps: int
    restarts: int
    square_queries: int
    target_classes: int
    eps_factors: tuple[float, ...]


BUDGETS: dict[str, _BudgetSettings] = {
    "quick": _BudgetSettings(200, 20, 50, 3, 1000, 3, (0.5, 1.0, 2.0)),
    "full": _BudgetSettings(1000, 50, 100, 5, 5000, 9, (0.25, 0.5, 1.0, 1.5, 2.0, 4.0)),
}


def _seed(seed: int, *parts: object) -> int:
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:6], "big")


def _family(label: str) -> str | None:
    """The attack family a scorecard label belongs to (``"apgd-ce"`` -> ``"apgd"``)."""
    low = label.lower()
    for fam in ("apgd-t", "apgd", "pgd", "fgsm", "square"):
        if low == fam or low.startswith((fam + "-", fam + "_", fam + " ")):
            return fam
    if low.startswith("apgd"):
        return "apgd"
    return None


def _given_at(results: AttackResults | None, family: str, eps: float) -> float | None:
    """The lowest accuracy any attack of ``family`` reached at ``eps`` in ``results``."""
    if not results:
        return None
    found: list[float] = []
    for label, value in results.items():
        if _family(label) != family:
            continue
        if isinstance(value, Mapping):
            v = value.get(eps_key(eps))
            if v is not None:
                found.append(float(v))
        else:
            found.append(float(value))
    return min(found) if found else None


def _family_mask(masks: Mapping[str, Tensor], family: str) -> Tensor | None:
    """``(n,)`` bool: the examples every given attack of ``family`` left robust, or None."""
    found = [m for label, m in masks.items() if _family(label) == family]
    if not found:
        return None
    out = found[0].clone()
    for m in found[1:]:
        out &= m
    return out


def _given_curves(results: AttackResults | None) -> dict[str, list[tuple[float, float]]]:
    """Accuracy against eps for every label of ``results`` with at least two eps values."""
    out: dict[str, list[tuple[float, float]]] = {}
    for label, value in (results or {}).items():
        if isinstance(value, Mapping) and len(value) >= 2:
            out[label] = sorted((float(k), float(v)) for k, v in value.items())
    return out


def _unbounded_eps(threat: ThreatModel, x: Tensor) -> float:
    """An eps whose ball, clipped to the input box, holds the whole box."""
    width = threat.bounds[1] - threat.bounds[0]
    dim = x[0].numel()
    if threat.norm == "linf":
        return width
    if threat.norm == "l2":
        return width * math.sqrt(dim)
    return width * dim


def _fail(
    code: str, message: str, advice: str, details: dict[str, Any], passed: bool
) -> SanityCheck:
    if passed:
        return SanityCheck(code, True, "info", message, "", details, REMEDIES[code])
    return SanityCheck(code, False, "warning", message, advice, details, REMEDIES[code])


def _skipped(code: str, why: str) -> SanityCheck:
    return SanityCheck(code, True, "info", f"skipped: {why}", "", {"skipped": why}, REMEDIES[code])


class _Runner:
    """Runs attacks on the correctly classified examples and caches accuracies."""

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, seed: int):
        self.model, self.x, self.y, self.threat, self.seed = model, x, y, threat, seed
        self.correct = predict(model, x) == y
        self.n = x.shape[0]

    def robust(
        self, label: str, attack: Attack, eps: float, candidates: Tensor | None = None
    ) -> Tensor:
        cand = self.correct if candidates is None else candidates
        if eps <= 0:
            return cand.clone()
        return robust_mask(
            self.model,
            attack,
            self.x,
            self.y,
            self.threat.with_eps(eps),
            candidates=cand,
            seed=_seed(self.seed, label, eps_key(eps)),
        )

    def acc(self, mask: Tensor) -> float:
        return float(mask.float().mean())


def _check_determinism(model: nn.Module, x: Tensor, th: SanityThresholds) -> SanityCheck:
    code = "non-deterministic-model"
    with torch.no_grad():
        a, b = model(x), model(x)
    diff = float((a - b).abs().amax()) if a.numel() else 0.0
    if not math.isfinite(diff):
        diff = math.inf if bool((a.isfinite() != b.isfinite()).any()) else 0.0
    flips = float((a.argmax(1) != b.argmax(1)).float().mean()) if a.numel() else 0.0
    passed = diff <= th.nondeterminism_atol
    return _fail(
        code,
        f"two forward passes on the same inputs differ by up to {diff:.3g} in the logits and "
        f"change {flips:.1%} of the predictions",
        "The model is randomised (noise, random transforms or dropout left on at inference). "
        "A single-sample attack then follows a random gradient and overstates robustness: "
        "attack the expectation over the randomness (EOT, e.g. apgd with eot_samples=20 or "
        "bastion.attacks.EOTModel), evaluate the prediction the deployed model makes "
        "(a majority vote over samples), and check that dropout and batch-norm are in eval mode.",
        {"max_logit_diff": diff, "prediction_flips": flips, "atol": th.nondeterminism_atol},
        passed,
    )


def _check_gradients(model: nn.Module, x: Tensor, y: Tensor, th: SanityThresholds) -> SanityCheck:
    code = "zero-or-nonfinite-gradients"
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xg)
        loss = F.cross_entropy(logits, y, reduction="sum")
        grad = torch.autograd.grad(loss, xg, allow_unused=True)[0] if loss.requires_grad else None
    if grad is None:
        grad = torch.zeros_like(x)
    flat = grad.reshape(grad.shape[0], -1)
    nonfinite = ~flat.isfinite().all(dim=1) | ~logits.isfinite().all(dim=1)
    zero = ~nonfinite & (flat.abs().amax(dim=1) == 0)
    share_zero = float(zero.float().mean())
    share_bad = float(nonfinite.float().mean())
    share = share_zero + share_bad
    passed = share <= th.zero_grad_share
    return _fail(
        code,
        f"the input gradient of the cross-entropy is exactly zero for {share_zero:.1%} and not "
        f"finite for {share_bad:.1%} of the examples",
        "Gradient attacks cannot move these examples, so their robust accuracy is not "
        "evidence of robustness. Look for a non-differentiable step (quantisation, rounding, "
        "JPEG, thresholding: replace it by the identity on the backward pass, BPDA, e.g. "
        "bastion.attacks.BPDAWrapper), for saturated logits or softmax outputs fed in as logits "
        "(use a margin or DLR loss, e.g. apgd with loss='dlr', or take the logits before the "
        "saturating layer), and run a score-based attack such as square.",
        {"zero_share": share_zero, "nonfinite_share": share_bad, "max_share": th.zero_grad_share},
        passed,
    )


def run_sanity_checks(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    seed: int = 0,
    budget: Budget = "quick",
    attacks_results: AttackResults | None = None,
    thresholds: SanityThresholds | None = None,
    max_examples: int | None = None,
    attack_masks: Mapping[str, Tensor] | None = None,
) -> list[SanityCheck]:
    """Run every check of :data:`CHECK_CODES` on ``model`` over ``(x, y)`` ``(N, ...)/(N,)``.

    Args:
        model: inputs in ``threat.bounds`` to logits ``(N, C)``; put in eval mode for the checks
            and restored to its previous mode after.
        seed: seeds every attack (same seed, same verdicts for a deterministic model).
        budget: ``"quick"`` (200 examples, Square with 1000 queries, 3 restarts, eps grid
            x0.5/1/2) or ``"full"`` (1000 examples, 5000 queries, 5 restarts, a 6-point grid).
        attacks_results: accuracies already computed on the same examples, to reuse instead of
            rerunning: ``{label: accuracy at threat.eps}`` or ``{label: {eps_key: accuracy}}``
            (the evaluator's ``"attacks"`` entry). Labels are matched by family prefix
            (``fgsm``, ``pgd``, ``apgd``, ``apgd-t``, ``square``); labels with two or more eps
            values also feed the monotonicity check. Accuracies cover all of ``x``; the checks
            that compare attacks example by example (black-box against white-box) use
            ``attack_masks`` instead, never these.
        attack_masks: per-example results at ``threat.eps`` on the same ``x``:
            ``{label: (N,) bool robust mask}`` (the evaluator's first pass). Sliced to the
            examples checked and preferred to ``attacks_results`` for every family they cover,
            so the checks compare the same examples.
        thresholds: when checks fail; default :class:`SanityThresholds`.
        max_examples: override the budget's number of examples (the first ones are used).

    Returns:
        One :class:`SanityCheck` per code, in the order of :data:`CHECK_CODES`.
    """
    if budget not in BUDGETS:
        raise ConfigError(f"sanity.budget: expected one of {', '.join(BUDGETS)}, got {budget!r}")
    if x.shape[0] == 0 or x.shape[0] != y.shape[0]:
        raise ConfigError(
            f"sanity: expected a non-empty batch with one label per example, got x "
            f"{tuple(x.shape)} and y {tuple(y.shape)}"
        )
    threat.validate_inputs(x, name="x")
    b = BUDGETS[budget]
    th = thresholds or SanityThresholds()
    n = min(x.shape[0], max_examples if max_examples is not None else b.max_examples)
    x, y = x[:n].detach(), y[:n].long()
    masks: dict[str, Tensor] = {}
    for label, m in (attack_masks or {}).items():
        if m.shape[0] < n:
            raise ConfigError(
                f"sanity.attack_masks[{label!r}]: expected one entry per example ({n}), "
                f"got shape {tuple(m.shape)}"
            )
        masks[label] = m[:n].to(torch.bool)
    was_training = model.training
    model.eval()
    try:
        return _run_all(model, x, y, threat, seed, b, th, attacks_results, masks)
    finally:
        model.train(was_training)


@dataclass(frozen=True)
class _FirstPass:
    """Accuracies at ``threat.eps`` of the attacks every check compares (fractions of all
    examples checked) and the masks the later checks start from."""

    fgsm: float
    pgd: float
    apgd: float
    apgd_best: float
    apgd_mask: Tensor
    white: Tensor

    @property
    def iterative(self) -> float:
        """The better of PGD and APGD-CE (given or computed)."""
        return min(self.pgd, self.apgd_best)


def _family_accuracy(
    r: _Runner,
    family: str,
    given: AttackResults | None,
    masks: Mapping[str, Tensor],
    attack: Callable[[], Attack],
) -> tuple[float, Tensor | None]:
    """Accuracy of ``family`` at ``threat.eps``: from a given mask, else a given accuracy, else
    computed by running ``attack()`` (then its ``(n,)`` robust mask is returned too)."""
    mask = _family_mask(masks, family)
    if mask is not None:
        return r.acc(mask), mask
    acc = _given_at(given, family, r.threat.eps)
    if acc is not None:
        return acc, None
    mask = r.robust(family, attack(), r.threat.eps)
    return r.acc(mask), mask


def _first_pass(
    r: _Runner, b: _BudgetSettings, given: AttackResults | None, masks: Mapping[str, Tensor]
) -> _FirstPass:
    """FGSM, PGD and APGD-CE at ``threat.eps``; ``white`` keeps the examples every white-box
    attack with a known mask left robust."""
    eps = r.threat.eps
    fgsm, fgsm_mask = _family_accuracy(r, "fgsm", given, masks, FGSM)
    pgd, pgd_mask = _family_accuracy(r, "pgd", given, masks, lambda: PGD(steps=b.pgd_steps))
    apgd_mask = r.robust("apgd-ce", APGD(steps=b.apgd_steps), eps)
    apgd = r.acc(apgd_mask)
    given_apgd_mask = _family_mask(masks, "apgd")
    given_apgd = (
        _given_at(given, "apgd", eps) if given_apgd_mask is None else r.acc(given_apgd_mask)
    )
    white = r.correct.clone()
    for m in (fgsm_mask, pgd_mask, apgd_mask, given_apgd_mask, _family_mask(masks, "apgd-t")):
        if m is not None:
            white &= m
    return _FirstPass(
        fgsm=fgsm,
        pgd=pgd,
        apgd=apgd,
        apgd_best=apgd if given_apgd is None else min(apgd, given_apgd),
        apgd_mask=apgd_mask,
        white=white,
    )


def _run_all(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    seed: int,
    b: _BudgetSettings,
    th: SanityThresholds,
    given: AttackResults | None,
    masks: Mapping[str, Tensor],
) -> list[SanityCheck]:
    """Every check of :data:`CHECK_CODES` on ``(x, y)`` (already cut to the budget), in that
    order; the attacks run in a fixed order, each seeded from ``seed`` and its label."""
    checks = [_check_determinism(model, x, th), _check_gradients(model, x, y, th)]
    r = _Runner(model, x, y, threat, seed)
    first = _first_pass(r, b, given, masks)
    checks.append(_check_single_step(first, threat.eps, th))
    checks.append(_check_black_box(r, first, b, th, masks))
    checks.append(_check_restarts(r, first, b, th))
    checks.append(_check_monotonic(r, first, b, th, given))
    checks.append(_check_unbounded(r, b, th))
    order = {c: i for i, c in enumerate(CHECK_CODES)}
    return sorted(checks, key=lambda c: order[c.code])


def _check_single_step(first: _FirstPass, eps: float, th: SanityThresholds) -> SanityCheck:
    """``single-step-beats-iterative``: FGSM must not beat PGD / APGD-CE by ``single_step_tol``."""
    return _fail(
        "single-step-beats-iterative",
        f"FGSM leaves {first.fgsm:.1%} accuracy, the iterative attacks (PGD, APGD-CE) "
        f"{first.iterative:.1%} at eps={eps:g}",
        "One step should never beat many steps of the same gradient: the iterative attacks "
        "are stuck, typically in a masked or noisy loss surface (Carlini et al. 2019). Check "
        "step sizes and steps, attack with a margin/DLR loss and random restarts, and do not "
        "trust this robust accuracy until an adaptive attack (BPDA/EOT) agrees.",
        {"fgsm": first.fgsm, "pgd": first.pgd, "apgd": first.apgd_best, "tol": th.single_step_tol},
        first.fgsm >= first.iterative - th.single_step_tol,
    )


def _white_box_survivors(r: _Runner, first: _FirstPass, b: _BudgetSettings) -> Tensor:
    """``(n,)`` bool: the first pass's white-box survivors after targeted APGD-DLR too, as in
    AutoAttack (CE alone underrates some honestly trained models, and that is not gradient
    masking). Targeted DLR needs at least four classes (Croce & Hein 2020); with fewer it is
    left out."""
    with torch.no_grad():
        n_classes = int(r.model(r.x[:1]).shape[-1])
    if n_classes < 4:
        return first.white
    attack = APGDTargeted(steps=b.apgd_steps, target_classes=min(b.target_classes, n_classes - 1))
    return r.robust("apgd-t", attack, r.threat.eps, candidates=first.white)


def _check_black_box(
    r: _Runner,
    first: _FirstPass,
    b: _BudgetSettings,
    th: SanityThresholds,
    masks: Mapping[str, Tensor],
) -> SanityCheck:
    """``black-box-beats-white-box``: Square, on what every white-box attack left robust (a
    given Square mask, else run here in AutoAttack's order), breaks at most ``black_box_tol``."""
    code, eps = "black-box-beats-white-box", r.threat.eps
    square_mask = _family_mask(masks, "square")
    if square_mask is None and r.threat.norm not in ("linf", "l2"):
        return _skipped(code, f"square supports linf and l2, not {r.threat.norm}")
    if square_mask is None and r.x.dim() != 4:
        return _skipped(code, "square needs image inputs (N, C, H, W)")
    white = _white_box_survivors(r, first, b)
    white_acc = r.acc(white)
    if square_mask is None:
        after = r.robust("square", Square(queries=b.square_queries), eps, candidates=white)
    else:
        after = white & square_mask
    broke = int((white & ~after).sum())
    drop = broke / r.n
    return _fail(
        code,
        f"Square (score-based, no gradients) breaks {drop:.1%} of the examples "
        f"({broke} of {r.n}) that every white-box attack left robust: "
        f"{white_acc:.1%} accuracy after the white-box attacks, {r.acc(after):.1%} "
        f"with Square at eps={eps:g}",
        "A black-box attack that only sees the outputs beats attacks that see the "
        "gradients: the gradients are masked or obfuscated (Athalye et al. 2018), or the "
        "white-box attacks have not converged. The reported robustness is an artefact of "
        "the attack, not of the model: use BPDA for non-differentiable steps, EOT for "
        "randomness, a DLR or margin loss for saturated outputs, and report the worst "
        "case including the black-box attack.",
        {
            "white_box": white_acc,
            "with_square": r.acc(after),
            "drop": drop,
            "broken_by_square": broke,
            "examples": r.n,
            "tol": th.black_box_tol,
            "square_given": square_mask is not None,
        },
        drop <= th.black_box_tol,
    )


def _check_restarts(
    r: _Runner, first: _FirstPass, b: _BudgetSettings, th: SanityThresholds
) -> SanityCheck:
    """``restarts-change-much``: APGD-CE's extra restarts (on the examples one restart left
    robust) lower accuracy by at most ``restarts_tol``."""
    eps = r.threat.eps
    attack = APGD(steps=b.apgd_steps, restarts=b.restarts - 1)
    more = r.robust("apgd-ce-restarts", attack, eps, candidates=first.apgd_mask)
    apgd, apgd_r = first.apgd, r.acc(more)
    drop = apgd - apgd_r
    return _fail(
        "restarts-change-much",
        f"APGD-CE leaves {apgd:.1%} accuracy with 1 restart and {apgd_r:.1%} with "
        f"{b.restarts} at eps={eps:g}",
        "The result depends on the random start: the attack is not converging, often because "
        "the loss surface is flat or noisy (masking or randomness). Report the figure with "
        "many restarts, raise steps, and try a DLR loss, EOT for randomised models and a "
        "black-box attack.",
        {"one_restart": apgd, "restarts": b.restarts, "many_restarts": apgd_r, "drop": drop},
        drop <= th.restarts_tol,
    )


def _sanity_grid_curve(
    r: _Runner, first: _FirstPass, b: _BudgetSettings
) -> list[tuple[float, float]]:
    """APGD-CE accuracy at the budget's eps factors (linf eps capped at the box width): the
    clean accuracy at eps 0, the first pass's at ``threat.eps``."""
    eps, threat = r.threat.eps, r.threat
    width = threat.bounds[1] - threat.bounds[0]
    grid = sorted(
        {min(f * eps, width) if threat.norm == "linf" else f * eps for f in b.eps_factors}
    )
    own: list[tuple[float, float]] = []
    for e in grid:
        if e <= 0:
            own.append((e, r.acc(r.correct)))
        elif e == eps:
            own.append((e, first.apgd))
        else:
            own.append((e, r.acc(r.robust("apgd-ce-grid", APGD(steps=b.apgd_steps), e))))
    return own


def _check_monotonic(
    r: _Runner,
    first: _FirstPass,
    b: _BudgetSettings,
    th: SanityThresholds,
    given: AttackResults | None,
) -> SanityCheck:
    """``non-monotonic-eps``: no curve (given, or the sanity grid's) rises by more than
    ``monotonic_tol`` from one eps to a larger one."""
    curves = _given_curves(given)
    curves["apgd-ce (sanity grid)"] = _sanity_grid_curve(r, first, b)
    rises: list[dict[str, Any]] = []
    for label, curve in curves.items():
        for (e0, a0), (e1, a1) in itertools.pairwise(curve):
            if a1 > a0 + th.monotonic_tol:
                rises.append({"attack": label, "from_eps": e0, "to_eps": e1, "from": a0, "to": a1})
    rise = rises[0] if rises else None
    msg = (
        f"accuracy rises with eps: {rise['attack']} gives {rise['from']:.1%} at "
        f"eps={rise['from_eps']:g} but {rise['to']:.1%} at eps={rise['to_eps']:g}"
        if rise
        else f"accuracy falls with eps on every curve checked ({len(curves)})"
    )
    return _fail(
        "non-monotonic-eps",
        msg,
        "A larger budget contains every smaller one, so accuracy can only fall as eps grows; "
        "a rise means the attack fails to find points it could reach (a too-large fixed step, "
        "too few steps, masked gradients). Raise steps and restarts, use APGD, and look for "
        "gradient masking before trusting the curve.",
        {"curves": {k: [list(p) for p in v] for k, v in curves.items()}, "rises": rises},
        not rises,
    )


def _check_unbounded(r: _Runner, b: _BudgetSettings, th: SanityThresholds) -> SanityCheck:
    """``unbounded-eps-not-zero``: APGD-CE then PGD at an eps reaching the whole input box
    leave at most ``unbounded_max_acc``."""
    big = _unbounded_eps(r.threat, r.x)
    left = r.robust("apgd-ce-unbounded", APGD(steps=b.apgd_steps), big)
    left = r.robust("pgd-unbounded", PGD(steps=b.pgd_steps), big, candidates=left)
    acc_big = r.acc(left)
    return _fail(
        "unbounded-eps-not-zero",
        f"{acc_big:.1%} accuracy is left under APGD-CE then PGD at eps={big:g}, a budget that "
        "reaches every valid input",
        "With an unbounded budget every example can be turned into one of another class, so a "
        "working attack drives accuracy to zero. If it does not, the gradients do not point "
        "anywhere useful: the model masks gradients (non-differentiable or saturating "
        "layers, randomness). Use BPDA / EOT, a DLR loss, a black-box attack, and check for "
        "saturation before reporting any robust accuracy.",
        {"eps": big, "accuracy": acc_big, "max_accuracy": th.unbounded_max_acc},
        acc_big <= th.unbounded_max_acc,
    )


def to_warnings(checks: Sequence[SanityCheck], model_name: str) -> list[dict[str, str]]:
    """The failed checks as scorecard warnings ``{"code", "model", "message"}``, the advice
    appended to the message."""
    return [
        {
            "code": c.code,
            "model": model_name,
            "message": f"{c.message}. {c.advice}" if c.advice else f"{c.message}.",
        }
        for c in checks
        if not c.passed
    ]
