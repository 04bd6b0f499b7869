"""What the runtime guard answers for one input: a verdict with its reasons and scores.

This module is the contract between the guard layers (:mod:`bastion.guard`) and the HTTP
service (:mod:`bastion.serve`): the service turns each :class:`Decision` into a JSON answer and
writes every non-accepted one to the audit log before it responds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from torch import Tensor

Verdict = Literal["accept", "flag", "abstain", "reject"]
VERDICTS: tuple[Verdict, ...] = ("accept", "flag", "abstain", "reject")


@dataclass(frozen=True)
class Decision:
    """The guard's answer for one input.

    Attributes:
        verdict: ``accept`` (answered, nothing suspicious), ``flag`` (answered, but a detector
            or check fired), ``abstain`` (no answer: too uncertain, or the smoothed classifier
            abstained) or ``reject`` (the input failed validation or a blocking detector).
        label: the predicted class index, or ``None`` when abstaining or rejecting.
        confidence: the (calibrated) probability of ``label``, or ``None``.
        probabilities: the class probabilities ``(num_classes,)``, or ``None``.
        reasons: one short machine-readable reason per layer that fired, e.g.
            ``"validation: value out of range [0, 1]"`` or ``"squeezing: score 1.31 > 0.82"``.
        scores: every detector's raw score by name (finite floats), fired or not.
    """

    verdict: Verdict
    label: int | None = None
    confidence: float | None = None
    probabilities: tuple[float, ...] | None = None
    reasons: tuple[str, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(
                f"verdict: expected one of {', '.join(VERDICTS)}, got {self.verdict!r}"
            )

    @property
    def answered(self) -> bool:
        """Whether the caller gets a label (``accept`` or ``flag``)."""
        return self.verdict in ("accept", "flag")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what the service returns per input)."""
        return {
            "verdict": self.verdict,
            "label": self.label,
            "confidence": self.confidence,
            "probabilities": list(self.probabilities) if self.probabilities is not None else None,
            "reasons": list(self.reasons),
            "scores": dict(self.scores),
        }


class GuardLike(Protocol):
    """What the service needs from a guard.

    ``decide`` takes a float32 batch ``(N, *input_shape)`` in the model's natural input range
    (pixels in [0, 1]; tabular rows in the schema's unit space) and returns ``N`` decisions in
    order. It never raises for a bad value inside a well-shaped batch (NaN, out of range): that
    input gets a ``reject`` decision with the reason.
    """

    input_shape: tuple[int, ...]
    classes: tuple[str, ...]

    def decide(self, x: Tensor) -> Sequence[Decision]: ...
