"""The attack contract (after Foolbox 3, Rauber et al. 2017/2020).

An attack holds settings only (keyword-only hyperparameters; no model, no device, no data). The
one final :meth:`Attack.__call__` validates the inputs, takes the clean forward pass once (the
:class:`Opening`: clean logits and the still-robust mask, handed to ``_run`` so that no attack
repeats it), runs the attack, projects its output onto the threat model and re-checks success,
so no attack can return an input outside its threat model or report a success the model does not
confirm.

Two kinds of attack (declared with :func:`bastion.attacks.registry.register`):

* ``fixed-budget``: searches within the eps-ball; a different eps is a different run.
* ``minimum-norm`` (FAB, DeepFool, Carlini-Wagner): searches for each example's smallest
  adversarial perturbation, whatever eps is. :meth:`Attack.search` runs it once and returns a
  :class:`MinimumNormResult`, which answers every eps of a grid from the points it found
  (:meth:`MinimumNormResult.robust_at`), without running the attack again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, final

import torch
from torch import Tensor, nn

from bastion.attacks.settings import AttackSettings
from bastion.errors import AttackInputError
from bastion.threat import ThreatModel

#: What the attacker knows of the model: its gradients (``white-box``), its scores
#: (``score-based``), its top label only (``label-only``), or nothing but a surrogate's
#: (``transfer``).
Knowledge = Literal["white-box", "score-based", "label-only", "transfer"]
KNOWLEDGE_ORDER: tuple[Knowledge, ...] = ("white-box", "score-based", "label-only", "transfer")
#: ``fixed-budget``: one run per eps; ``minimum-norm``: one run answers every eps.
AttackKind = Literal["fixed-budget", "minimum-norm"]
ATTACK_KINDS: tuple[AttackKind, ...] = ("fixed-budget", "minimum-norm")


@dataclass(frozen=True)
class AttackShare:
    """One sub-attack's part in a composite attack's run (the cascade's breakdown).

    Attributes:
        label: ``"<position>:<name>"``, e.g. ``"0:apgd"``.
        broken: examples this sub-attack broke that no earlier one had.
        seconds: wall-clock seconds it ran (0 when no example was left for it).
    """

    label: str
    broken: int
    seconds: float


@dataclass(frozen=True)
class Crafted:
    """What ``_run`` returns when it has more to say than ``(x_adv, queries)``: a composite
    attack's per-sub-attack breakdown, passed on in :attr:`AttackResult.breakdown`."""

    x_adv: Tensor
    queries: Tensor
    breakdown: tuple[AttackShare, ...] = ()


@dataclass(frozen=True)
class AttackResult:
    """What an attack returns.

    Attributes:
        x_adv: adversarial inputs ``(N, *input_shape)``, inside the threat model.
        success: ``(N,)`` bool: the model misclassifies ``x_adv`` (untargeted) or predicts the
            target (targeted), checked by a fresh forward pass.
        queries: ``(N,)`` int64: forward passes the attack spent on each example.
        breakdown: for a composite attack (the cascade), each sub-attack's share of the run,
            in order; empty for a single attack.
    """

    x_adv: Tensor
    success: Tensor
    queries: Tensor
    breakdown: tuple[AttackShare, ...] = ()

    def broken_by(self) -> dict[str, int]:
        """``{label: examples broken}`` of the breakdown, in order."""
        return {s.label: s.broken for s in self.breakdown}

    def seconds_by(self) -> dict[str, float]:
        """``{label: wall-clock seconds}`` of the breakdown, in order."""
        return {s.label: s.seconds for s in self.breakdown}

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if self.success.numel() else 0.0


def validate_batch(
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    targets: Tensor | None = None,
    num_classes: int | None = None,
) -> None:
    """Raise :class:`AttackInputError` for inputs an attack cannot take."""
    threat.validate_inputs(x, name="x")
    if x.dim() < 2:
        raise AttackInputError(f"x: expected a batch of shape (N, ...), got shape {tuple(x.shape)}")
    for name, t in (("y", y), ("targets", targets)):
        if t is None:
            continue
        if not isinstance(t, Tensor) or t.dtype not in (torch.int64, torch.int32):
            raise AttackInputError(
                f"{name}: expected an integer tensor of class indices, got "
                f"{getattr(t, 'dtype', type(t).__name__)}"
            )
        if t.shape != (x.shape[0],):
            raise AttackInputError(
                f"{name}: expected shape ({x.shape[0]},) to match x, got {tuple(t.shape)}"
            )
        if t.numel() and (
            int(t.min()) < 0 or (num_classes is not None and int(t.max()) >= num_classes)
        ):
            upper = num_classes if num_classes is not None else "inf"
            raise AttackInputError(
                f"{name}: class indices must lie in [0, {upper}), "
                f"got range [{int(t.min())}, {int(t.max())}]"
            )


def predict(model: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    """Predicted classes ``(N,)`` without building a graph."""
    with torch.no_grad():
        if x.shape[0] <= batch_size:
            out: Tensor = model(x).argmax(dim=1)
            return out
        return torch.cat(
            [model(x[i : i + batch_size]).argmax(dim=1) for i in range(0, x.shape[0], batch_size)]
        )


def ranked_other_classes(logits: Tensor, y: Tensor, k: int) -> Tensor:
    """``(N, k)``: the ``k`` classes other than ``y`` with the highest logits, best first."""
    order = logits.argsort(dim=1, descending=True)
    not_y = order != y[:, None]
    return order[not_y].view(logits.shape[0], logits.shape[1] - 1)[:, :k]


class Opening:
    """The clean forward pass every attack starts from, taken at most once per call.

    :meth:`Attack.__call__` hands it to ``_run``; the forward pass runs the first time
    :attr:`logits` or :attr:`robust` is read (one pass on the whole batch, without a graph), so
    an attack that never needs it (a transfer attack, a universal perturbation) costs the
    target nothing, and no attack repeats it. An attack that reads it counts that pass in its
    ``queries``, as every attack here counts its forward passes.

    Attributes:
        logits: ``(N, C)`` the model's outputs on the clean inputs.
        robust: ``(N,)`` bool, the examples the attack still has to break: the model predicts
            the true class (untargeted), or does not yet predict the target (targeted).
    """

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, targets: Tensor | None):
        self._model, self._x, self._y, self._targets = model, x, y, targets
        self._logits: Tensor | None = None

    @property
    def logits(self) -> Tensor:
        if self._logits is None:
            with torch.no_grad():
                self._logits = self._model(self._x)
        return self._logits

    @property
    def robust(self) -> Tensor:
        pred = self.logits.argmax(dim=1)
        return pred != self._targets if self._targets is not None else pred == self._y

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1])

    def queries(self) -> Tensor:
        """``(N,)`` int64 ones: the query count of an attack that reads the opening (the clean
        forward pass is one query per example)."""
        return torch.ones(self._x.shape[0], dtype=torch.int64, device=self._x.device)

    def classes(self, attack: str, at_least: int = 2) -> int:
        """The number of classes ``C`` (reads the logits); raises :class:`AttackInputError`
        naming ``attack`` when the model has fewer than ``at_least``."""
        c = self.num_classes
        if c < at_least:
            raise AttackInputError(f"model: {attack} needs at least {at_least} classes, got {c}")
        return c


@dataclass(frozen=True)
class MinimumNormResult:
    """What one run of a minimum-norm attack found (:meth:`Attack.search`).

    Attributes:
        x: the clean inputs ``(N, *input_shape)``; y: their labels ``(N,)``.
        targets: ``(N,)`` the targets of a targeted search, or None.
        x_adv: ``(N, *input_shape)`` the smallest adversarial point found per example, inside
            the input bounds but not projected onto any eps-ball (the clean input where none
            was found, or where the model already errs).
        norms: ``(N,)`` the distance of ``x_adv`` from ``x`` in the threat's norm where
            ``x_adv`` fools the model, ``inf`` where it does not (0 for examples the model
            already gets wrong).
        queries: ``(N,)`` int64 forward passes spent per example, the final check included.
    """

    x: Tensor
    y: Tensor
    targets: Tensor | None
    x_adv: Tensor
    norms: Tensor
    queries: Tensor

    def robust_at(self, model: nn.Module, threat: ThreatModel) -> Tensor:
        """``(N,)`` bool: the examples not broken within ``threat.eps``.

        As in Foolbox 3, the found point is projected onto the eps-ball and re-checked with
        one forward pass, so the answer is exactly what a run of the attack at that eps
        returns when the search does not depend on eps (DeepFool, Carlini-Wagner, FAB with one
        restart): every example with ``norms <= eps`` is broken, and an example whose point
        lies outside the ball is broken only if its projection still fools the model.
        """
        if self.x.shape[0] == 0:
            return torch.zeros(0, dtype=torch.bool, device=self.x.device)
        pred = predict(model, threat.project(self.x_adv, self.x))
        fooled = pred == self.targets if self.targets is not None else pred != self.y
        return ~fooled

    def accuracy_at(self, model: nn.Module, threat: ThreatModel) -> float:
        """The fraction of examples not broken within ``threat.eps`` (see :meth:`robust_at`)."""
        robust = self.robust_at(model, threat)
        return float(robust.float().mean()) if robust.numel() else 0.0


class Attack(ABC):
    """Base class of every evasion attack. Subclasses implement :meth:`_run` only.

    ``name``, ``knowledge``, ``kind`` and ``settings_model`` are set by
    :func:`bastion.attacks.registry.register` (an unregistered attack is a white-box,
    fixed-budget one). A constructor validates its keywords through ``settings_model``
    (:meth:`AttackSettings.of`) and keeps the validated values as attributes, which
    :meth:`params` records.
    """

    name: ClassVar[str] = "attack"
    knowledge: ClassVar[Knowledge | None] = "white-box"
    kind: ClassVar[AttackKind] = "fixed-budget"
    channel: ClassVar[str] = "image"  # or "tabular", set by ``register``
    #: The settings model (:mod:`bastion.attacks.settings`), set by ``register``.
    settings_model: ClassVar[type[AttackSettings] | None] = None

    def params(self) -> dict[str, Any]:
        """The attack's settings (for scorecards and repr)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    @classmethod
    def knowledge_in(cls, settings: dict[str, Any]) -> set[Knowledge]:
        """The kinds of attacker knowledge this attack exercises with ``settings`` (its own
        declared knowledge; a composite attack such as the cascade overrides this)."""
        return {cls.knowledge} if cls.knowledge is not None else set()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    @final
    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        threat: ThreatModel,
        *,
        targets: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> AttackResult:
        """Attack ``model`` on ``(x, y)`` within ``threat``.

        Args:
            model: maps ``(N, *input_shape)`` inputs in ``threat.bounds`` to logits ``(N, C)``.
            x: clean inputs; y: true labels ``(N,)`` int64.
            targets: for a targeted attack, the classes to reach ``(N,)``; None is untargeted.
            generator: the source of all randomness (same seed, same result).
        """
        x, y, targets, opening = self._open(model, x, y, threat, targets, generator)
        if opening is None:
            empty = torch.zeros(0, dtype=torch.bool, device=x.device)
            return AttackResult(
                x.clone(), empty, torch.zeros(0, dtype=torch.int64, device=x.device)
            )
        out = self._run(model, x, y, threat, targets=targets, generator=generator, opening=opening)
        crafted = out if isinstance(out, Crafted) else Crafted(*out)
        x_adv = threat.project(crafted.x_adv.detach(), x)
        pred = predict(model, x_adv)
        success = pred == targets if targets is not None else pred != y
        return AttackResult(x_adv, success, crafted.queries + 1, crafted.breakdown)

    @final
    def search(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        threat: ThreatModel,
        *,
        targets: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> MinimumNormResult:
        """Run a minimum-norm attack once; the result answers every eps of a grid.

        ``threat.eps`` is only where the search may stop early: an example whose smallest
        perturbation found is within it is not searched further (give the smallest eps of the
        grid, so no answer depends on the stop). Raises :class:`AttackInputError` for a
        fixed-budget attack. Arguments as for :meth:`__call__`.
        """
        if self.kind != "minimum-norm":
            raise AttackInputError(
                f"{self.name}: search() needs a minimum-norm attack, and {self.name!r} is "
                f"{self.kind}; call the attack once per eps instead"
            )
        x, y, targets, opening = self._open(model, x, y, threat, targets, generator)
        if opening is None:
            none = torch.zeros(0, dtype=torch.int64, device=x.device)
            return MinimumNormResult(x, y, targets, x.clone(), none.to(x.dtype), none)
        out = self._run(model, x, y, threat, targets=targets, generator=generator, opening=opening)
        x_adv, queries = (out.x_adv, out.queries) if isinstance(out, Crafted) else out
        x_adv = threat.clip(x_adv.detach())
        pred = predict(model, x_adv)
        fooled = pred == targets if targets is not None else pred != y
        inf = torch.full_like(fooled, float("inf"), dtype=x.dtype)
        norms = torch.where(fooled, threat.distance(x_adv, x).to(x.dtype), inf)
        return MinimumNormResult(x, y, targets, x_adv, norms, queries + 1)

    def _open(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        threat: ThreatModel,
        targets: Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor, Tensor | None, Opening | None]:
        """Validate the call and take the clean forward pass (None for an empty batch)."""
        validate_batch(x, y, threat, targets=targets)  # before any forward pass on x
        if generator is not None and generator.device.type != x.device.type:
            raise AttackInputError(
                f"generator: expected one on the inputs' device ({x.device.type}), got one on "
                f"{generator.device.type}; create it with torch.Generator(device=x.device)"
            )
        y = y.long()
        targets = targets.long() if targets is not None else None
        if x.shape[0] == 0:
            return x, y, targets, None
        with torch.no_grad():
            num_classes = int(model(x[:1]).shape[1])  # a one-row probe, as every call takes
        validate_batch(x, y, threat, targets=targets, num_classes=num_classes)
        x = x.detach()
        return x, y, targets, Opening(model, x, y, targets)

    @abstractmethod
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
    ) -> tuple[Tensor, Tensor] | Crafted:
        """Return ``(x_adv, queries)`` (or a :class:`Crafted` with a breakdown); the base
        class projects and re-checks ``x_adv``.

        ``opening`` holds the clean logits ``(N, C)`` and the still-robust mask ``(N,)``; an
        attack that uses them counts the clean forward pass in its ``queries`` as before.
        """
