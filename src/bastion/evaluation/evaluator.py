"""Clean accuracy, robust accuracy per attack, the worst case across attacks, and accuracy
against eps.

Each attack is run on every example the model classifies correctly (an example already
misclassified counts as broken without being attacked). The worst case marks an example robust
only if it survives every attack, so it is never above any single attack's accuracy. Each
(attack, eps) pair draws its randomness from its own seeded generator, so the figures do not
depend on the order of the attack list.

Then the evaluation checks itself: the gradient-masking checks of
:mod:`bastion.evaluation.sanity` run on the same examples (reusing the first pass's per-example
results), and when one fires, :func:`bastion.evaluation.escalate` runs the adaptive attacks that
answer it on the examples the first pass left robust. The headline ``worst_case_accuracy`` is the
minimum over the first pass and every escalation; the first pass's figure is kept beside it,
marked superseded with the reason.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from bastion.attacks.base import Attack, MinimumNormResult, predict
from bastion.attacks.registry import attack_knowledge
from bastion.errors import ConfigError
from bastion.evaluation.state import EvaluationState
from bastion.threat import ThreatModel

if TYPE_CHECKING:
    from bastion.evaluation.escalation import Escalation
    from bastion.evaluation.sanity import SanityCheck

EvalProgressFn = Callable[[str, int, int], None]
SanityBudget = Literal["quick", "full", "off"]


def is_black_box(attack: Attack) -> bool:
    """Whether ``attack`` is, or (a cascade) contains, a black-box attack: one whose registered
    knowledge is not white-box (the scorecard's ``worst_case_basis``)."""
    return any(k != "white-box" for k in attack_knowledge(attack.name, attack.params()))


def eps_key(eps: float) -> str:
    """The scorecard key of an eps value, e.g. ``0.3 -> "0.3"``."""
    return format(float(eps), "g")


@dataclass(frozen=True)
class NamedAttack:
    """An attack with the label it carries in the scorecard."""

    label: str
    attack: Attack


def _seed_for(seed: int, label: str, eps: float) -> int:
    h = hashlib.sha256(f"{seed}:{label}:{eps_key(eps)}".encode()).digest()
    return int.from_bytes(h[:6], "big")


#: One unit of attack work: a batch's inputs ``(n, ...)``, labels ``(n,)`` and its seed.
AttackBatch = tuple[Tensor, Tensor, int]
#: Runs attack batches and returns, per batch, the ``(n,)`` bool mask of examples the attack
#: failed to break: :func:`run_batches_here`, or an engine such as
#: :class:`bastion.evaluation.ray_runner.RayBatchRunner` that spreads them over workers.
BatchRunner = Callable[[nn.Module, Attack, ThreatModel, list[AttackBatch]], list[Tensor]]


def attack_batch(
    model: nn.Module, attack: Attack, threat: ThreatModel, batch: AttackBatch
) -> Tensor:
    """``(n,)`` bool: the examples of one batch that ``attack`` fails to break, its randomness
    drawn from a generator seeded with the batch's own seed (so the result does not depend on
    which process runs the batch, or in what order)."""
    x, y, seed = batch
    gen = torch.Generator(device=x.device).manual_seed(seed)
    return ~attack(model, x, y, threat, generator=gen).success


def run_batches_here(
    model: nn.Module, attack: Attack, threat: ThreatModel, batches: list[AttackBatch]
) -> list[Tensor]:
    """Run every batch in this process, one after another."""
    return [attack_batch(model, attack, threat, b) for b in batches]


def _batch_seed(seed: int, index: int) -> int:
    if index == 0:
        return seed  # a single batch draws exactly as one generator seeded with ``seed`` would
    h = hashlib.sha256(f"{seed}:batch:{index}".encode()).digest()
    return int.from_bytes(h[:6], "big")


def _chunks(candidates: Tensor, batch_size: int) -> list[Tensor]:
    """The indices of ``candidates`` ``(N,)`` bool, cut into batches of ``batch_size``."""
    idx = candidates.nonzero().squeeze(1)
    return [idx[start : start + batch_size] for start in range(0, idx.numel(), batch_size)]


#: A minimum-norm attack's one run: per batch, its example indices and what the search found.
SearchBatches = list[tuple[Tensor, MinimumNormResult]]


def minimum_norm_search(
    model: nn.Module,
    attack: Attack,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    candidates: Tensor,
    seed: int,
    batch_size: int = 500,
) -> SearchBatches:
    """Run a minimum-norm attack once on ``candidates`` (:meth:`Attack.search`), in the
    batches and with the per-batch seeds of :func:`robust_mask`; ``threat.eps`` is where the
    search may stop (the smallest eps of the grid). Runs in this process."""
    found: SearchBatches = []
    for i, b in enumerate(_chunks(candidates, batch_size)):
        gen = torch.Generator(device=x.device).manual_seed(_batch_seed(seed, i))
        found.append((b, attack.search(model, x[b], y[b], threat, generator=gen)))
    return found


def robust_from_search(
    model: nn.Module, found: SearchBatches, candidates: Tensor, threat: ThreatModel
) -> Tensor:
    """``(N,)`` bool: the candidates a minimum-norm search did not break within
    ``threat.eps`` (:meth:`MinimumNormResult.robust_at`: one forward pass per batch)."""
    robust = candidates.clone()
    for b, res in found:
        robust[b] = res.robust_at(model, threat).to(robust.device)
    return robust


def robust_mask(
    model: nn.Module,
    attack: Attack,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    candidates: Tensor,
    seed: int,
    batch_size: int = 500,
    runner: BatchRunner | None = None,
) -> Tensor:
    """``(N,)`` bool: examples among ``candidates`` that the attack fails to break.

    The candidates are cut into batches of ``batch_size`` in order, each with its own seed
    derived from ``seed`` and its index, so per-example results are the same whether
    ``runner`` runs the batches here (the default) or spreads them over workers."""
    robust = candidates.clone()
    chunks = _chunks(candidates, batch_size)
    batches = [(x[b], y[b], _batch_seed(seed, i)) for i, b in enumerate(chunks)]
    results = (runner or run_batches_here)(model, attack, threat, batches)
    for b, r in zip(chunks, results, strict=True):
        robust[b] = r.to(robust.device)
    return robust


@dataclass
class _FirstPass:
    """The first pass of :func:`evaluate_model`: every (attack, eps) pair on the correctly
    classified examples (``correct``, ``(N,)`` bool), with its timing, the minimum-norm
    searches (one per attack answers every eps) and the evaluation state."""

    model: nn.Module
    x: Tensor
    y: Tensor
    threat: ThreatModel
    grid: list[float]
    correct: Tensor
    seed: int
    batch_size: int
    runner: BatchRunner | None
    state: EvaluationState | None
    model_id: str
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    searched: dict[str, SearchBatches] = field(default_factory=dict)

    def run_pair(self, na: NamedAttack, eps: float) -> Tensor:
        """``(N,)`` bool robust mask of ``na`` at ``eps``: the correct ones at eps 0, else the
        recorded mask when the state has one, else the attack's (timed, then recorded)."""
        if eps == 0:
            return self.correct.clone()
        key = EvaluationState.key(self.model_id, na.label, eps_key(eps))
        recorded = self.state.get(key, self.x.shape[0]) if self.state is not None else None
        if recorded is not None:
            return recorded
        t0 = time.perf_counter()
        mask = self._attack(na, self.threat.with_eps(eps))
        self.seconds.setdefault(na.label, {})[eps_key(eps)] = round(time.perf_counter() - t0, 3)
        if self.state is not None:
            self.state.put(key, mask)
        return mask

    def _attack(self, na: NamedAttack, t: ThreatModel) -> Tensor:
        """Run ``na`` at ``t.eps``: a minimum-norm attack answers from its one search (run on
        first use, stopping at the grid's smallest eps), any other attack runs here or on the
        runner."""
        if na.attack.kind != "minimum-norm":
            return robust_mask(
                self.model,
                na.attack,
                self.x,
                self.y,
                t,
                candidates=self.correct,
                seed=_seed_for(self.seed, na.label, t.eps),
                batch_size=self.batch_size,
                runner=self.runner,
            )
        if na.label not in self.searched:
            stop = self.threat.with_eps(min(e for e in self.grid if e > 0))
            self.searched[na.label] = minimum_norm_search(
                self.model,
                na.attack,
                self.x,
                self.y,
                stop,
                candidates=self.correct,
                seed=_seed_for(self.seed, na.label, stop.eps),
                batch_size=self.batch_size,
            )
        return robust_from_search(self.model, self.searched[na.label], self.correct, t)

    def run(
        self, attacks: Sequence[NamedAttack], progress: EvalProgressFn | None
    ) -> tuple[dict[str, list[float]], list[float], dict[str, Tensor], Tensor]:
        """Every pair, eps by eps: ``(per_attack, worst, masks_at_eps, worst_at_eps)``, the
        accuracy of each attack along the grid, the worst case along it (the clean accuracy
        without attacks), and the per-attack and worst-case masks at ``threat.eps``."""
        self.seconds = {a.label: {} for a in attacks}
        per_attack: dict[str, list[float]] = {a.label: [] for a in attacks}
        worst: list[float] = []
        masks_at_eps: dict[str, Tensor] = {}
        worst_at_eps = self.correct.clone()
        total, done = len(self.grid) * len(attacks), 0
        for eps in self.grid:
            worst_mask = self.correct.clone()
            for na in attacks:
                mask = self.run_pair(na, eps)
                per_attack[na.label].append(float(mask.float().mean()))
                worst_mask &= mask
                if eps == self.threat.eps:
                    masks_at_eps[na.label] = mask
                done += 1
                if progress is not None:
                    progress(f"{na.label} eps={eps_key(eps)}", done, total)
            worst.append(
                float(worst_mask.float().mean()) if attacks else float(self.correct.float().mean())
            )
            if eps == self.threat.eps:
                worst_at_eps = worst_mask
        return per_attack, worst, masks_at_eps, worst_at_eps


def evaluate_model(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    attacks: Sequence[NamedAttack],
    *,
    eps_grid: Sequence[float] = (),
    seed: int = 0,
    batch_size: int = 500,
    progress: EvalProgressFn | None = None,
    state: EvaluationState | None = None,
    model_id: str = "model",
    sanity: SanityBudget = "quick",
    escalate: bool = True,
    model_name: str | None = None,
    escalation_time_limit: float | None = None,
    runner: BatchRunner | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``(x, y)`` ``(N, ...)``/``(N,)``.

    Returns a JSON-able dict with ``clean_accuracy``, ``worst_case_accuracy`` (at
    ``threat.eps``), ``attacks`` (``{label: {eps_key: accuracy}}`` for every eps of the grid),
    ``accuracy_vs_eps`` (``{"eps": [...], "worst_case": [...], "per_attack": {label: [...]}}``,
    the first pass's curve), ``attack_seconds`` (``{label: {eps_key: seconds}}``, wall clock of
    each pair run in this call; resumed pairs have none), ``evaluation_seconds`` and
    ``evaluation_cpu_seconds``. All accuracies are fractions in [0, 1] of all ``N`` examples.

    The first pass (:class:`_FirstPass`: each (attack, eps) pair seeded on its own, a
    minimum-norm attack run once per model for every eps, pairs recorded in ``state`` under
    ``model_id`` not run again, batches run here or on a ``runner``) gives the same figures
    however it is run.

    Then the evaluation checks itself (:func:`_check_and_escalate`, always in this process):
    unless ``sanity="off"`` the gradient-masking checks run with that budget, and with
    ``escalate`` a failed check triggers :func:`bastion.evaluation.escalate` (no remedy starts
    after ``escalation_time_limit`` seconds); ``worst_case_accuracy`` is then the minimum over
    the first pass and every escalation, and ``sanity_checks``, ``sanity_warnings`` (naming
    ``model_name``, default ``model_id``), ``escalation``, ``first_pass_worst_case_accuracy``,
    ``worst_case_basis`` and ``headline`` say how.
    """
    labels = [a.label for a in attacks]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"evaluation.attacks: labels must be unique, got {labels}")
    start, cpu_start = time.perf_counter(), time.process_time()
    model.eval()
    if (n := x.shape[0]) == 0:
        raise ConfigError("evaluation.examples: no examples to evaluate")
    correct = predict(model, x) == y
    grid = sorted({float(e) for e in eps_grid} | {threat.eps})
    first_pass = _FirstPass(
        model, x, y, threat, grid, correct, seed, batch_size, runner, state, model_id
    )
    per_attack, worst, masks_at_eps, worst_at_eps = first_pass.run(attacks, progress)
    attacks_doc = {
        label: {eps_key(e): v for e, v in zip(grid, vals, strict=True)}
        for label, vals in per_attack.items()
    }
    checked = _check_and_escalate(
        first_pass,
        attacks_doc,
        masks_at_eps,
        worst_at_eps,
        sanity=sanity,
        escalate=escalate,
        name=model_name or model_id,
        black_box=any(is_black_box(na.attack) for na in attacks),
        progress=progress,
        time_limit=escalation_time_limit,
    )
    return {
        "clean_accuracy": float(correct.float().mean()),
        **checked,
        "attacks": attacks_doc,
        "accuracy_vs_eps": {"eps": grid, "worst_case": worst, "per_attack": per_attack},
        "n_eval": n,
        "attack_seconds": first_pass.seconds,
        "evaluation_seconds": round(time.perf_counter() - start, 3),
        "evaluation_cpu_seconds": round(time.process_time() - cpu_start, 3),
    }


def _check_and_escalate(
    first_pass: _FirstPass,
    attacks_doc: dict[str, dict[str, float]],
    masks: dict[str, Tensor],
    worst_mask: Tensor,
    *,
    sanity: SanityBudget,
    escalate: bool,
    name: str,
    black_box: bool,
    progress: EvalProgressFn | None,
    time_limit: float | None,
) -> dict[str, Any]:
    """The sanity checks and escalation part of :func:`evaluate_model`'s result.

    Unless ``sanity="off"``, the checks of :func:`bastion.evaluation.run_sanity_checks` run with
    that budget on the first examples, fed the first pass's per-example results at
    ``threat.eps`` (``masks``), and are returned as ``sanity_checks`` (and the failed ones as
    ``sanity_warnings``, naming ``name``). With ``escalate``, a failed check triggers
    :func:`bastion.evaluation.escalate` on the examples the first pass left robust
    (``worst_mask``); either way ``escalation`` records what happened (``status`` ``"off"``,
    ``"not-needed"``, ``"complete"`` or ``"incomplete"``). Then ``worst_case_accuracy`` is the
    minimum over the first pass and every escalation, ``first_pass_worst_case_accuracy`` the
    first pass's figure, ``worst_case_basis`` says whether a black-box attack took part
    (``"white-box only"`` or ``"white-box and black-box"``) and ``headline`` states the figure
    in one sentence. ``time_limit`` (seconds) stops escalation from starting further
    remedies; a fired check left unanswered makes the escalation ``"incomplete"``, which the
    gate fails.
    """
    from bastion.evaluation.sanity import run_sanity_checks, to_warnings

    fp = first_pass
    model, x, y, threat, seed = fp.model, fp.x, fp.y, fp.threat, fp.seed

    first = float(worst_mask.float().mean())
    out: dict[str, Any] = {"worst_case_accuracy": first, "first_pass_worst_case_accuracy": first}
    escalation: dict[str, Any] = {"enabled": escalate, "status": "not-needed", "fired": []}
    if sanity not in ("quick", "full", "off"):
        raise ConfigError(f"evaluation.sanity_checks: expected quick, full or off, got {sanity!r}")
    if sanity == "off":
        escalation = {"enabled": escalate, "status": "off", "fired": [], "reason": "no checks"}
    else:
        t0 = time.perf_counter()
        checks = run_sanity_checks(
            model,
            x,
            y,
            threat,
            seed=seed,
            budget=sanity,
            attacks_results=attacks_doc,
            attack_masks=masks,
        )
        out["sanity_checks"] = [c.to_dict() for c in checks]
        out["sanity_warnings"] = to_warnings(checks, name)
        out["sanity_seconds"] = round(time.perf_counter() - t0, 3)
        if any(not c.passed for c in checks):
            escalation, black_box = _escalation_entry(
                out,
                lambda: _run_escalation(fp, checks, worst_mask, sanity, progress, time_limit),
                checks,
                escalate=escalate,
                name=name,
                black_box=black_box,
            )
    out["escalation"] = escalation
    out["worst_case_basis"] = "white-box and black-box" if black_box else "white-box only"
    out["headline"] = headline(out["worst_case_accuracy"], first, escalation, black_box)
    return out


def _run_escalation(
    fp: _FirstPass,
    checks: Sequence[SanityCheck],
    worst_mask: Tensor,
    budget: Literal["quick", "full"],
    progress: EvalProgressFn | None,
    time_limit: float | None,
) -> Escalation:
    """:func:`bastion.evaluation.escalate` on the examples the first pass left robust
    (``worst_mask``, ``(N,)`` bool), reporting each remedy to ``progress``."""
    from bastion.evaluation.escalation import escalate

    return escalate(
        fp.model,
        fp.x,
        fp.y,
        fp.threat,
        checks,
        robust=worst_mask,
        seed=fp.seed,
        budget=budget,
        batch_size=fp.batch_size,
        progress=(lambda r: progress(f"escalation: {r}", 1, 1)) if progress else None,
        time_limit_s=time_limit,
    )


def _escalation_entry(
    out: dict[str, Any],
    run: Callable[[], Escalation],
    checks: Sequence[SanityCheck],
    *,
    escalate: bool,
    name: str,
    black_box: bool,
) -> tuple[dict[str, Any], bool]:
    """``(the scorecard's escalation entry, whether a black-box attack took part)`` once a check
    fired: without ``escalate``, the remedies it would have run; else ``run()``'s outcome, whose
    figure becomes ``out["worst_case_accuracy"]`` (an incomplete escalation adds a warning to
    ``out["sanity_warnings"]``)."""
    from bastion.evaluation.sanity import REMEDIES

    failed = [c for c in checks if not c.passed]
    if not escalate:
        return {
            "enabled": False,
            "status": "off",
            "fired": [c.code for c in failed],
            "remedies": sorted({r for c in failed for r in REMEDIES[c.code]}),
            "reason": "evaluation.escalate is false: the first-pass figure stands unverified",
        }, black_box
    esc = run()
    if esc.status == "incomplete":
        out["sanity_warnings"].append(
            {
                "code": "escalation-incomplete",
                "model": name,
                "message": "The escalation could not finish: no remedy for "
                f"{', '.join(esc.unanswered)} ran to the end "
                f"({'; '.join(s.reason for s in esc.steps if s.reason)}). The worst case "
                "is unverified and the gate fails this run.",
            }
        )
    out["worst_case_accuracy"] = esc.accuracy
    black_box = black_box or any(s.status == "done" and s.remedy == "black-box" for s in esc.steps)
    return esc.to_dict(enabled=True), black_box


def headline(worst: float, first: float, escalation: dict[str, Any], black_box: bool) -> str:
    """One sentence stating the worst case, whether escalation superseded the first pass, and
    whether it is white-box only."""
    text = f"worst case {worst:.1%}"
    if worst < first:
        text += f" (escalated; the first pass said {first:.1%})"
    if escalation.get("status") == "incomplete":
        text += "; escalation did not finish, the figure is unverified"
    elif escalation.get("status") == "off" and escalation.get("fired"):
        text += "; sanity checks fired but escalation is off, the figure is unverified"
    if not black_box:
        text += "; white-box only (no black-box attack was run)"
    return text
