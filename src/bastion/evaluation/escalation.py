"""Escalation: when a sanity check fires, run the adaptive attack that answers it.

A sanity check that fires (:mod:`bastion.evaluation.sanity`) says the first pass's robust
accuracy may be an artefact of the attacks. :func:`escalate` acts on it: every failed check
names its remedies (:data:`~bastion.evaluation.sanity.REMEDIES`), and each remedy runs, in the
order below, only on the examples every earlier attack left robust. An example counts as broken
only when the original model misclassifies the point found (checked by a fresh forward pass on
the model itself, never on a wrapper or a surrogate).

* ``bpda``: Backward Pass Differentiable Approximation (Athalye, Carlini & Wagner 2018): probe
  the model for layers whose autograd derivatives disagree with finite differences and bypass
  them on the backward pass, with the identity or a learned element-wise approximation
  (:mod:`bastion.evaluation.probe`); then APGD-CE and APGD-DLR (Croce & Hein 2020) through
  the approximation. Not applicable when the probe finds no such layer.
* ``margin``: for saturated softmax or vanishing cross-entropy gradients: APGD with the DLR
  loss, which is invariant to shifting and scaling the logits (Croce & Hein 2020), and APGD-CE
  on rescaled logits when they saturate (a median range of 50 or more): divided by a temperature
  that brings the median range to 10, or their logarithm when the outputs are probabilities
  (Carlini & Wagner 2017 take the logits before the softmax for the same reason).
* ``eot``: Expectation over Transformation (Athalye et al. 2018; Athalye, Engstrom, Ilyas & Kwok
  2018): APGD-CE whose gradient averages forward passes of the randomised model, as many as
  its measured gradient noise needs (:func:`eot_samples_needed`, at most ``eot_samples``),
  and robust accuracy measured over ``eot_draws`` fresh draws of the model: the
  expectation over draws is the figure reported, with its standard deviation (``spread``); an
  example stays robust for later remedies when the majority of the draws classify it right,
  and every remedy judges its points by a majority over half as many draws (a single lucky draw
  of the model's randomness is not a success).
* ``black-box``: when black-box beats white-box, restarts change the result, or accuracy does
  not reach zero at an unbounded budget: APGD-DLR with more restarts, one at a time, stopping
  after one that broke nothing (APGD-CE for two-class models; the first pass and the checks
  climbed the cross-entropy already), through the BPDA replacements when some were found,
  Square with more queries (Andriushchenko et al. 2020; linf and l2; on a randomised model,
  whose noisy scores the random search cannot follow, a quarter as many, and a second quarter
  only when the first broke something), and a transfer attack (APGD-CE on a smooth surrogate:
  a softplus network distilled from the model's own labels on the examples and random points
  of their eps-balls, Papernot et al. 2017).

The headline is the minimum over the first pass and every remedy's cumulative figure, so it is
never above the first pass. The escalation is *complete* when every failed check had at least
one of its remedies run to the end; a remedy that raises (a two-class model under DLR, say) is
recorded as failed with the reason, and a check left with no remedy done makes the escalation
*incomplete*, which the gate fails. Each remedy draws from its own generator seeded from
``seed`` and its name, so results do not depend on which other remedies ran first (the
model's own randomness, in a randomised defence, is the model's business).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.attacks.apgd import APGD
from bastion.attacks.base import Attack, predict
from bastion.attacks.square import Square
from bastion.errors import BastionError, ConfigError
from bastion.evaluation.probe import BPDAPlan, find_bpda
from bastion.evaluation.sanity import REMEDIES, Budget, Remedy, SanityCheck
from bastion.threat import ThreatModel

REMEDY_ORDER: tuple[Remedy, ...] = ("bpda", "margin", "eot", "black-box")
Status = Literal["off", "not-needed", "complete", "incomplete"]
StepStatus = Literal["done", "not-applicable", "failed"]


@dataclass(frozen=True)
class _EscalationBudget:
    apgd_steps: int
    restarts: int
    square_queries: int
    eot_samples: int
    eot_steps: int
    eot_draws: int
    surrogate_steps: int


ESCALATION_BUDGETS: dict[str, _EscalationBudget] = {
    "quick": _EscalationBudget(50, 2, 1000, 8, 25, 16, 100),
    "full": _EscalationBudget(100, 5, 5000, 20, 50, 32, 300),
}


@dataclass(frozen=True)
class EscalationStep:
    """One remedy's run.

    Attributes:
        remedy: ``"bpda"``, ``"margin"``, ``"eot"`` or ``"black-box"``.
        answers: the failed checks it answers.
        status: ``"done"``, ``"not-applicable"`` (nothing for it to act on, e.g. no
            non-differentiable layer found) or ``"failed"`` (it raised; ``reason`` says why).
        attacks: what ran, in order.
        accuracy: robust accuracy over all examples after this remedy (cumulative; for ``eot``
            the expectation over draws), or None when it did not run.
        broke: examples this remedy broke that every earlier attack had left robust.
        seconds: wall-clock time; cpu_seconds: the process's CPU time over the same span.
        details: figures behind it (probe results, temperature, spread, ...).
    """

    remedy: Remedy
    answers: tuple[str, ...]
    status: StepStatus
    attacks: tuple[str, ...] = ()
    accuracy: float | None = None
    broke: int = 0
    seconds: float = 0.0
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    cpu_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "remedy": self.remedy,
            "answers": list(self.answers),
            "status": self.status,
            "attacks": list(self.attacks),
            "accuracy": self.accuracy,
            "broke": self.broke,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "reason": self.reason,
            "details": self.details,
        }


@dataclass(frozen=True)
class Escalation:
    """What :func:`escalate` found.

    Attributes:
        status: ``"off"`` (disabled), ``"not-needed"`` (no check failed), ``"complete"`` or
            ``"incomplete"`` (a failed check had none of its remedies done).
        fired: the failed checks' codes.
        first_pass_accuracy: the first pass's worst case over all examples.
        accuracy: the headline: min(first pass, every remedy's cumulative figure).
        robust: ``(N,)`` bool, the examples still robust after every remedy (EOT: by majority
            of draws); not part of :meth:`to_dict`.
        steps: the remedies run, in order.
        unanswered: failed checks none of whose remedies was done.
        spread: the standard deviation over draws of the EOT figure, when EOT ran.
        seconds: total wall-clock time; cpu_seconds: the process's CPU time over the same
            span (comparable across loaded machines).
    """

    status: Status
    fired: tuple[str, ...]
    first_pass_accuracy: float
    accuracy: float
    robust: Tensor
    steps: tuple[EscalationStep, ...] = ()
    unanswered: tuple[str, ...] = ()
    spread: float | None = None
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def superseded(self) -> bool:
        """Whether escalation found a lower figure than the first pass."""
        return self.accuracy < self.first_pass_accuracy

    def reason(self) -> str:
        """Why the first-pass figure was superseded (empty when it was not)."""
        if not self.superseded:
            return ""
        best = min(
            (s for s in self.steps if s.accuracy is not None),
            key=lambda s: s.accuracy if s.accuracy is not None else math.inf,
        )
        return (
            f"sanity check(s) {', '.join(self.fired)} fired; the {best.remedy} escalation "
            f"({', '.join(best.attacks)}) found {self.accuracy:.1%} where the first pass "
            f"reported {self.first_pass_accuracy:.1%}"
        )

    def to_dict(self, *, enabled: bool = True) -> dict[str, Any]:
        """The JSON form the scorecard stores under ``escalation``."""
        return {
            "enabled": enabled,
            "status": self.status,
            "complete": self.status != "incomplete",
            "fired": list(self.fired),
            "first_pass_worst_case_accuracy": self.first_pass_accuracy,
            "worst_case_accuracy": self.accuracy,
            "superseded": self.superseded,
            "reason": self.reason(),
            "spread": self.spread,
            "unanswered": list(self.unanswered),
            "steps": [s.to_dict() for s in self.steps],
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
        }


def _seed(seed: int, *parts: object) -> int:
    text = ":".join(str(p) for p in ("escalate", seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:6], "big")


class _Rescaled(nn.Module):
    """The logits of ``model`` divided by ``temperature``, or their logarithm (``log=True``)
    when the model outputs probabilities; same argmax, unsaturated cross-entropy."""

    def __init__(self, model: nn.Module, temperature: float, log: bool):
        super().__init__()
        self.model, self.temperature, self.log = model, temperature, log

    def forward(self, x: Tensor) -> Tensor:
        z: Tensor = self.model(x)
        if self.log:
            return torch.log(z.clamp_min(torch.finfo(z.dtype).tiny))
        return z / self.temperature


class _Surrogate(nn.Module):
    """A smooth MLP (softplus) on flattened inputs: the transfer attack's surrogate."""

    def __init__(self, dim: int, classes: int, hidden: int, gen: torch.Generator):
        super().__init__()
        self.l1 = nn.Linear(dim, hidden)
        self.l2 = nn.Linear(hidden, classes)
        with torch.no_grad():
            for lin in (self.l1, self.l2):
                bound = 1.0 / math.sqrt(lin.in_features)
                lin.weight.copy_(torch.rand(lin.weight.shape, generator=gen) * 2 * bound - bound)
                lin.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.l2(F.softplus(self.l1(x.flatten(1))))
        return out


def distil_surrogate(
    model: nn.Module,
    x: Tensor,
    threat: ThreatModel,
    *,
    generator: torch.Generator,
    steps: int = 100,
    hidden: int = 128,
) -> nn.Module:
    """A smooth surrogate of ``model`` for transfer attacks: a one-hidden-layer softplus network
    trained (Adam, ``steps`` full-batch steps) on the labels ``model`` gives to ``x``
    ``(N, ...)`` and to two random points of each example's eps-ball. Its gradients exist
    everywhere whatever the model hides (Papernot et al. 2017, "Practical black-box attacks
    against machine learning"). Returned in eval mode with frozen parameters."""
    xs = torch.cat([x] + [threat.random_init(x, generator=generator) for _ in range(2)])
    labels = predict(model, xs)
    with torch.no_grad():
        classes = int(model(x[:1]).shape[1])
    sur = _Surrogate(x[0].numel(), classes, hidden, generator).to(x.device)
    opt = torch.optim.Adam(sur.parameters(), lr=0.01)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            loss = F.cross_entropy(sur(xs), labels)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    for p in sur.parameters():
        p.requires_grad_(False)
    return sur.eval()


class _Run:
    """Runs attacks on the still-robust examples; successes are checked on the model itself."""

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        threat: ThreatModel,
        robust: Tensor,
        seed: int,
        batch_size: int,
    ):
        self.model, self.x, self.y, self.threat = model, x, y, threat
        self.robust = robust.clone()
        self.seed, self.batch_size = seed, batch_size
        self.n = x.shape[0]
        self.draws = 1  # forward passes that judge a point: a majority for randomised models

    def acc(self) -> float:
        return float(self.robust.float().mean())

    def points(self, attack_model: nn.Module, attack: Attack, label: str) -> tuple[Tensor, Tensor]:
        """``(idx, x_adv)``: the attack's points for the still-robust examples."""
        idx = self.robust.nonzero().squeeze(1)
        gen = torch.Generator(device=self.x.device).manual_seed(_seed(self.seed, label))
        outs = []
        for start in range(0, idx.numel(), self.batch_size):
            b = idx[start : start + self.batch_size]
            outs.append(
                attack(attack_model, self.x[b], self.y[b], self.threat, generator=gen).x_adv
            )
        x_adv = torch.cat(outs) if outs else self.x[:0].clone()
        return idx, x_adv

    def attack(self, attack_model: nn.Module, attack: Attack, label: str) -> int:
        """Run ``attack`` on ``attack_model`` over the still-robust examples; mark those whose
        point fools the original model; return how many."""
        idx, x_adv = self.points(attack_model, attack, label)
        if idx.numel() == 0:
            return 0
        wrong = torch.zeros(idx.numel(), device=self.x.device)
        for _ in range(self.draws):
            wrong += (predict(self.model, x_adv) != self.y[idx]).float()
        broken = wrong * 2 > self.draws
        self.robust[idx[broken]] = False
        return int(broken.sum())


def _classes(model: nn.Module, x: Tensor) -> int:
    with torch.no_grad():
        return int(model(x[:1]).shape[1])


def _remedy_bpda(
    run: _Run, b: _EscalationBudget, plan: BPDAPlan, attacks: list[str]
) -> dict[str, Any]:
    with plan.installed(run.model) as bpda_model:
        attacks.append(f"apgd-ce-{b.apgd_steps} (bpda)")
        run.attack(bpda_model, APGD(steps=b.apgd_steps), "bpda:apgd-ce")
        if _classes(run.model, run.x) >= 3:
            attacks.append(f"apgd-dlr-{b.apgd_steps} (bpda)")
            run.attack(bpda_model, APGD(steps=b.apgd_steps, loss="dlr"), "bpda:apgd-dlr")
    return plan.to_dict()


def _temperature(model: nn.Module, x: Tensor) -> tuple[float, bool]:
    """``(T, probabilities)``: the divisor that brings the median logit range to 10, and
    whether the outputs look like probabilities (non-negative rows with a common sum)."""
    with torch.no_grad():
        z = model(x[:256]).float()
    rng = (z.amax(1) - z.amin(1)).median()
    t = float(rng / 10.0) if math.isfinite(float(rng)) and float(rng) > 0 else 1.0
    sums = z.sum(1)
    probs = bool((z >= 0).all()) and float((sums - sums.mean()).abs().amax()) <= 1e-3 * max(
        float(sums.abs().mean()), 1e-12
    )
    return max(t, 1.0), probs


def _remedy_margin(
    run: _Run, b: _EscalationBudget, grad_model: nn.Module, attacks: list[str]
) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if _classes(run.model, run.x) >= 3:
        attacks.append(f"apgd-dlr-{b.apgd_steps}")
        run.attack(grad_model, APGD(steps=b.apgd_steps, loss="dlr"), "margin:apgd-dlr")
    t, probs = _temperature(run.model, run.x)
    details.update(temperature=t, probabilities=probs)
    if probs or t >= 5.0:  # a median logit range of 50 or more saturates the softmax
        what = "log" if probs else f"/{t:.3g}"
        attacks.append(f"apgd-ce-{b.apgd_steps} (logits {what})")
        run.attack(
            _Rescaled(grad_model, t, probs), APGD(steps=b.apgd_steps), "margin:apgd-ce-rescaled"
        )
    return details


def eot_samples_needed(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    max_samples: int,
    keep: float = 0.97,
) -> tuple[int, dict[str, Any]]:
    """How many forward passes an EOT gradient of ``model`` needs on ``(x, y)``
    ``(n, ...)``/``(n,)``: ``(samples, details)``, a power of two below ``max_samples / 2``,
    or ``max_samples``.

    Draws ``max_samples`` cross-entropy input gradients per example. The second half of the
    draws, averaged, estimates the expected gradient ``mu``; an average of the first ``k`` draws
    gives the attack's step direction ``d_k`` (``sign`` for linf, the unit vector otherwise),
    and its ascent efficiency is ``mu . d_k / max_d mu . d`` (for linf ``mu . sign(g_k) /
    |mu|_1``; otherwise the cosine). The smallest ``k`` whose median efficiency over the
    examples is at least ``keep`` times that of the largest measured ``k`` (half the draws) is
    returned: averaging more draws would buy less than ``1 - keep`` of the ascent; when only
    half the draws reach that, the curve is still climbing and ``max_samples`` is returned.
    Athalye et al. 2018 (EOT) average "enough" samples to stabilise the gradient; this
    measures how many the model's randomness needs instead of fixing the number (APGD's
    momentum averages over steps as well). With ``max_samples < 4`` nothing is measured."""
    if not 0 < keep <= 1:
        raise ConfigError(f"keep: expected a number in (0, 1], got {keep}")
    if max_samples < 4 or x.shape[0] == 0:
        return max(max_samples, 1), {"measured_on": 0}
    draws = []
    for _ in range(max_samples):
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(xg).float(), y, reduction="sum")
            (g,) = torch.autograd.grad(loss, xg)
        draws.append(g.flatten(1).double())
    half = max_samples // 2
    mu = torch.stack(draws[half:]).mean(0)
    tiny = torch.finfo(mu.dtype).tiny

    def efficiency(k: int) -> float:
        avg = torch.stack(draws[:k]).mean(0)
        if threat.norm == "linf":
            eff = (mu * avg.sign()).sum(1) / mu.abs().sum(1).clamp_min(tiny)
        else:
            eff = (mu * avg).sum(1) / (mu.norm(dim=1) * avg.norm(dim=1)).clamp_min(tiny)
        return float(eff.median())

    ks = [2**i for i in range(half.bit_length()) if 2**i <= half]
    effs = {k: efficiency(k) for k in ks}
    best = effs[ks[-1]]
    # still climbing at half the draws (or no agreed ascent at all): spend the whole budget
    chosen = next((k for k in ks[:-1] if effs[k] >= keep * best > 0), max_samples)
    return chosen, {
        "measured_on": int(x.shape[0]),
        "efficiency": {str(k): round(v, 4) for k, v in effs.items()},
        "keep": keep,
    }


def _remedy_eot(
    run: _Run, b: _EscalationBudget, attacks: list[str]
) -> tuple[float, float, dict[str, Any]]:
    """EOT attack, then accuracy over fresh draws: ``(mean, std, details)``; ``run.robust``
    becomes the majority verdict. The number of samples per gradient is measured on up to 32
    still-robust examples (:func:`eot_samples_needed`), at most the budget's."""
    idx = run.robust.nonzero().squeeze(1)[:32]
    samples, measured = eot_samples_needed(
        run.model, run.x[idx], run.y[idx], run.threat, max_samples=b.eot_samples
    )
    attacks.append(f"apgd-ce-{b.eot_steps} (eot {samples} samples)")
    idx, x_adv = run.points(run.model, APGD(steps=b.eot_steps, eot_samples=samples), "eot")
    accs = []
    votes = torch.zeros(idx.numel(), device=run.x.device)
    for _ in range(b.eot_draws):
        ok = predict(run.model, x_adv) == run.y[idx] if idx.numel() else votes.bool()
        votes += ok.float()
        accs.append(float(ok.float().sum()) / run.n)
    mean = sum(accs) / len(accs)
    std = math.sqrt(sum((a - mean) ** 2 for a in accs) / max(len(accs) - 1, 1))
    run.robust[idx[votes * 2 <= b.eot_draws]] = False
    details = {"draws": b.eot_draws, "samples": samples, "sample_choice": measured}
    return mean, std, {**details, "per_draw": accs}


@dataclass
class _SubAttacks:
    """The black-box remedy's sub-attacks, each run on its own: one that raises (a gradient the
    model does not give) is recorded in ``errors`` and the others still run. ``attacks`` names
    the ones that ran to the end; ``details`` gathers their figures, with the CPU seconds of
    each under ``details["cpu_seconds"]``."""

    attacks: list[str]
    details: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.details["cpu_seconds"] = self.cpu

    def guarded(self, label: str, fn: Callable[[], object]) -> None:
        """Run ``fn``; name ``label`` in ``attacks`` when it returns, in ``errors`` when it
        raises."""
        t0 = time.process_time()
        try:
            fn()
            self.attacks.append(label)
        except (BastionError, RuntimeError, ValueError) as e:
            self.errors[label] = f"{type(e).__name__}: {e}"
        self.cpu[label] = round(time.process_time() - t0, 3)

    def until_stable(self, key: str, rounds: int, one: Callable[[int], int]) -> None:
        """Run ``one(round)`` up to ``rounds`` times, stopping after a round that broke
        nothing (the figure is stable); record the rounds run and what they broke."""
        broke = []
        for r in range(rounds):
            broke.append(one(r))
            if broke[-1] == 0:
                break
        self.details[key] = {"rounds": len(broke), "broke": broke}


def _bb_restarts(run: _Run, b: _EscalationBudget, grad_model: nn.Module, sub: _SubAttacks) -> None:
    """APGD-DLR (APGD-CE for two-class models: the first pass and the checks climbed the
    cross-entropy already), one restart at a time, stopping once a restart breaks nothing."""
    loss = "ce" if _classes(run.model, run.x) < 3 else "dlr"

    def one(r: int) -> int:
        return run.attack(grad_model, APGD(steps=b.apgd_steps, loss=loss), f"bb:apgd-{loss}:{r}")

    sub.guarded(
        f"apgd-{loss}-{b.apgd_steps} (up to {b.restarts} restarts)",
        lambda: sub.until_stable(f"apgd-{loss}", b.restarts, one),
    )


def _bb_square(run: _Run, b: _EscalationBudget, sub: _SubAttacks) -> None:
    """Square with the budget's queries (linf and l2 only). On a randomised model each query is
    judged on one noisy draw, so the random search mostly wanders: at most half the queries, in
    two runs of a quarter, the second only when the first broke something (the majority vote
    decides)."""
    if run.threat.norm not in ("linf", "l2"):
        sub.details["square"] = f"skipped: square supports linf and l2, not {run.threat.norm}"
    elif run.draws == 1:
        square = Square(queries=b.square_queries)
        sub.guarded(
            f"square-{b.square_queries}",
            lambda: sub.details.update(square_broke=run.attack(run.model, square, "bb:square")),
        )
    else:
        quarter = Square(queries=max(b.square_queries // 4, 1))
        sub.guarded(
            f"square-{quarter.queries} (up to 2 runs)",
            lambda: sub.until_stable(
                "square", 2, lambda r: run.attack(run.model, quarter, f"bb:square:{r}")
            ),
        )


def _bb_transfer(run: _Run, b: _EscalationBudget, seed: int, sub: _SubAttacks) -> None:
    """APGD-CE on a softplus surrogate distilled from the model (:func:`distil_surrogate`),
    when some example is still robust; records the surrogate's agreement with the model."""

    def transfer() -> None:
        if not bool(run.robust.any()):
            return
        gen = torch.Generator(device=run.x.device).manual_seed(_seed(seed, "surrogate"))
        sur = distil_surrogate(run.model, run.x, run.threat, generator=gen, steps=b.surrogate_steps)
        with torch.no_grad():
            agree = float((predict(sur, run.x) == predict(run.model, run.x)).float().mean())
        sub.details["surrogate_agreement"] = agree
        sub.details["transfer_broke"] = run.attack(sur, APGD(steps=b.apgd_steps), "bb:transfer")

    sub.guarded(f"transfer (apgd-ce-{b.apgd_steps} on a softplus surrogate)", transfer)


def _remedy_black_box(
    run: _Run,
    b: _EscalationBudget,
    grad_model: nn.Module,
    attacks: list[str],
    seed: int,
) -> dict[str, Any]:
    """More APGD restarts, more Square queries and a transfer attack, each on its own
    (:class:`_SubAttacks`); the remedy fails only when all of them do."""
    sub = _SubAttacks(attacks)
    _bb_restarts(run, b, grad_model, sub)
    _bb_square(run, b, sub)
    _bb_transfer(run, b, seed, sub)
    if sub.errors:
        sub.details["errors"] = sub.errors
    if not attacks:
        raise RuntimeError(f"every black-box sub-attack failed: {sub.errors}")
    return sub.details


class _NotApplicable(Exception):
    """A remedy found nothing to act on (``reason``; ``details`` the figures behind it)."""

    def __init__(self, reason: str, details: dict[str, Any]):
        super().__init__(reason)
        self.reason, self.details = reason, details


@dataclass
class _Session:
    """What the remedies of one escalation share: the run, the budget, the seed, the BPDA plan
    the ``bpda`` remedy found (the later gradient remedies attack through it) and the spread
    over draws of the EOT figure."""

    run: _Run
    budget: _EscalationBudget
    seed: int
    plan: BPDAPlan | None = None
    spread: float | None = None

    def gradient_model(self) -> AbstractContextManager[nn.Module]:
        """The model with the BPDA replacements installed when some were found, else as is."""
        model = self.run.model
        return nullcontext(model) if self.plan is None else self.plan.installed(model)

    def apply(self, remedy: Remedy, attacks: list[str]) -> tuple[float, dict[str, Any]]:
        """Run ``remedy`` on the still-robust examples, naming what ran in ``attacks``:
        ``(accuracy after it, details)``. Raises :class:`_NotApplicable` when it finds nothing
        to act on."""
        run, b = self.run, self.budget
        if remedy == "bpda":
            gen = torch.Generator(device=run.x.device).manual_seed(_seed(self.seed, "probe"))
            found = find_bpda(run.model, run.x, run.threat, generator=gen)
            if not found.found:
                raise _NotApplicable(
                    "the probe found no non-differentiable layer to bypass", found.to_dict()
                )
            self.plan = found
            details = _remedy_bpda(run, b, found, attacks)
            return run.acc(), details
        if remedy == "margin":
            with self.gradient_model() as gm:
                details = _remedy_margin(run, b, gm, attacks)
            if not attacks:
                raise _NotApplicable(
                    "two classes (no DLR) and logits that are not saturated", details
                )
            return run.acc(), details
        if remedy == "eot":
            acc, self.spread, details = _remedy_eot(run, b, attacks)
            details["spread"] = self.spread
            return acc, details
        with self.gradient_model() as gm:
            details = _remedy_black_box(run, b, gm, attacks, self.seed)
        return run.acc(), details

    def step(self, remedy: Remedy, answers: tuple[str, ...]) -> EscalationStep:
        """Run ``remedy`` and record it: ``done`` with its cumulative accuracy and what it
        broke, ``not-applicable``, or ``failed`` with the error it raised."""
        t0, c0 = time.perf_counter(), time.process_time()
        before = int(self.run.robust.sum())
        attacks: list[str] = []
        try:
            acc, details = self.apply(remedy, attacks)
        except _NotApplicable as e:
            seconds = round(time.perf_counter() - t0, 3)
            return EscalationStep(
                remedy,
                answers,
                "not-applicable",
                reason=e.reason,
                seconds=seconds,
                details=e.details,
            )
        except (BastionError, RuntimeError, ValueError) as e:
            return EscalationStep(
                remedy,
                answers,
                "failed",
                tuple(attacks),
                reason=f"{type(e).__name__}: {e}",
                seconds=round(time.perf_counter() - t0, 3),
                cpu_seconds=round(time.process_time() - c0, 3),
            )
        return EscalationStep(
            remedy,
            answers,
            "done",
            tuple(attacks),
            acc,
            before - int(self.run.robust.sum()),
            round(time.perf_counter() - t0, 3),
            details=details,
            cpu_seconds=round(time.process_time() - c0, 3),
        )


def _wanted_remedies(failed: Sequence[SanityCheck]) -> dict[Remedy, list[str]]:
    """``{remedy: the failed checks it answers}``, in the order the checks name them."""
    wanted: dict[Remedy, list[str]] = {}
    for c in failed:
        for r in c.remedies or REMEDIES.get(c.code, ()):
            wanted.setdefault(r, []).append(c.code)
    return wanted


def _run_remedies(
    session: _Session,
    wanted: Mapping[Remedy, Sequence[str]],
    start: float,
    progress: Callable[[str], None] | None,
    time_limit_s: float | None,
) -> list[EscalationStep]:
    """The wanted remedies in :data:`REMEDY_ORDER`; none starts once ``time_limit_s`` seconds
    have passed since ``start`` (recorded as failed, "time limit")."""
    steps: list[EscalationStep] = []
    for remedy in REMEDY_ORDER:
        if remedy not in wanted:
            continue
        answers = tuple(wanted[remedy])
        if time_limit_s is not None and time.perf_counter() - start >= time_limit_s:
            reason = f"time limit: {time_limit_s:g} s spent before it could start"
            steps.append(EscalationStep(remedy, answers, "failed", reason=reason))
            continue
        if progress is not None:
            progress(remedy)
        steps.append(session.step(remedy, answers))
    return steps


def escalate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    checks: Sequence[SanityCheck],
    *,
    robust: Tensor | None = None,
    seed: int = 0,
    budget: Budget = "quick",
    batch_size: int = 500,
    progress: Callable[[str], None] | None = None,
    time_limit_s: float | None = None,
) -> Escalation:
    """Run the remedies of every failed check in ``checks`` on the examples of ``(x, y)``
    ``(N, ...)``/``(N,)`` that ``robust`` (``(N,)`` bool, the first pass's per-example worst
    case; default: the correctly classified ones) marks robust.

    Args:
        model: inputs in ``threat.bounds`` to logits ``(N, C)``; put in eval mode and restored.
        checks: the output of :func:`bastion.evaluation.run_sanity_checks` on the same model
            (any examples).
        budget: ``"quick"`` (APGD 50 steps, 2 restarts, Square 1,000 queries, EOT 8 samples x 25
            steps and 16 draws) or ``"full"`` (100, 5, 5,000, 20 x 50 and 32 draws).
        progress: called with the name of each remedy as it starts.
        time_limit_s: no remedy starts once this many seconds have passed since the call
            (each is recorded as failed, "time limit"); None for no limit.

    Returns:
        An :class:`Escalation`; its ``accuracy`` is never above the first pass's. With no
        failed check, nothing runs (status ``"not-needed"``, no cost beyond one forward pass
        when ``robust`` is not given).
    """
    if budget not in ESCALATION_BUDGETS:
        raise ConfigError(
            f"escalation.budget: expected one of {', '.join(ESCALATION_BUDGETS)}, got {budget!r}"
        )
    start, cpu_start = time.perf_counter(), time.process_time()
    y = y.long()
    if robust is None:
        robust = predict(model, x) == y
    if robust.shape != (x.shape[0],):
        raise ConfigError(
            f"escalation.robust: expected shape ({x.shape[0]},), got {tuple(robust.shape)}"
        )
    first = float(robust.float().mean())
    failed = [c for c in checks if not c.passed]
    if not failed:
        return Escalation("not-needed", (), first, first, robust.clone())
    wanted = _wanted_remedies(failed)
    b = ESCALATION_BUDGETS[budget]
    was_training = model.training
    model.eval()
    run = _Run(model, x.detach(), y, threat, robust, seed, batch_size)
    if "eot" in wanted:
        run.draws = max(b.eot_draws // 2, 1)
    session = _Session(run, b, seed)
    try:
        steps = _run_remedies(session, wanted, start, progress, time_limit_s)
    finally:
        model.train(was_training)
    done = {s.remedy for s in steps if s.status == "done"}
    unanswered = tuple(c.code for c in failed if not set(c.remedies or REMEDIES[c.code]) & done)
    figures = [first] + [s.accuracy for s in steps if s.status == "done" and s.accuracy is not None]
    return Escalation(
        "incomplete" if unanswered else "complete",
        tuple(c.code for c in failed),
        first,
        min(figures),
        run.robust,
        tuple(steps),
        unanswered,
        session.spread,
        round(time.perf_counter() - start, 3),
        round(time.process_time() - cpu_start, 3),
    )


def worst_case_cell(entry: Mapping[str, Any]) -> str:
    """The terminal summary's worst-case cell for a scorecard model entry: the headline figure,
    the first pass's when escalation superseded it, and a mark for white-box-only figures."""
    text = f"{entry['worst_case_accuracy']:.1%}"
    first = entry.get("first_pass_worst_case_accuracy")
    if isinstance(first, int | float) and first > entry["worst_case_accuracy"]:
        text += f" (first pass {first:.1%})"
    if entry.get("worst_case_basis") == "white-box only":
        text += " (white-box only)"
    return text


def summary_lines(scorecard: Mapping[str, Any]) -> list[str]:
    """Lines for the terminal after the summary table: each model's escalation (what fired,
    what ran, what it found, or that it could not finish) and every scorecard warning (its
    first sentence)."""
    out: list[str] = []
    for name, r in scorecard.get("models", {}).items():
        esc = r.get("escalation") or {}
        fired = ", ".join(esc.get("fired", []))
        if esc.get("status") in ("complete", "incomplete"):
            ran = "; ".join(
                f"{s['remedy']}: {s['status']}"
                + (f", {s['accuracy']:.1%}" if s.get("accuracy") is not None else "")
                for s in esc.get("steps", [])
            )
            out.append(
                f"escalation {name}: {fired} fired -> {ran}; {r.get('headline', '')}"
                + (f"; unanswered: {', '.join(esc['unanswered'])}" if esc.get("unanswered") else "")
            )
        elif esc.get("status") == "off" and fired:
            out.append(f"escalation {name}: off, although {fired} fired; {r.get('headline', '')}")
        elif r.get("worst_case_basis") == "white-box only":
            out.append(f"{name}: {r.get('headline', '')}")
    for w in scorecard.get("warnings", []):
        if isinstance(w, Mapping):
            first = str(w.get("message", "")).split(". ")[0].rstrip(".")
            out.append(f"warning {w.get('code', '?')} ({w.get('model', '?')}): {first}.")
    return out
