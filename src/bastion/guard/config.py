"""The ``guard:`` section of the YAML config: which layers run, what each does when it fires.

Every model is strict (unknown keys are an error) and frozen. Layers run in this order:
validation -> detectors (squeezing, ood, adversarial) -> prediction -> post-check. A layer's
``action`` says what happens when it fires: ``flag`` answers but marks the decision, ``reject``
(validation, detectors) or ``abstain`` (detectors, post-check) withholds the answer.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bastion.errors import ConfigError

Action = Literal["flag", "reject", "abstain"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ValidationConfig(_Strict):
    """Shape, dtype, NaN/inf and range checks, plus the tabular schema when there is one.

    ``bounds`` defaults to the threat model's (or ``[0, 1]``); ``atol`` is the slack allowed
    outside them. ``out_of_range: clip`` sanitises values outside the bounds instead of
    rejecting the row. ``check_schema`` checks one-hot groups and integer features of tabular
    inputs; immutable features are compared with a reference row when the caller gives one.
    """

    action: Literal["flag", "reject"] = "reject"
    bounds: tuple[float, float] | None = None
    atol: float = Field(default=1e-6, ge=0)
    out_of_range: Literal["reject", "clip"] = "reject"
    check_schema: bool = True


class SqueezingConfig(_Strict):
    """Feature squeezing (Xu, Evans and Qi 2018): bit-depth reduction and a median filter."""

    enabled: bool = True
    action: Action = "reject"
    bit_depth: int = Field(default=4, ge=1, le=8)
    median_size: int = Field(default=2, ge=1, le=5)


class OODConfig(_Strict):
    """Out-of-distribution score: energy (Liu et al. 2020) or Mahalanobis distance on the
    penultimate features (Lee et al. 2018)."""

    enabled: bool = True
    action: Action = "flag"
    method: Literal["energy", "mahalanobis"] = "mahalanobis"
    temperature: float = Field(default=1.0, gt=0)


class AdversarialDetectorConfig(_Strict):
    """A logistic-regression (``hidden: 0``) or one-hidden-layer detector trained on clean vs
    attacked calibration inputs, over logit statistics and the other detectors' scores."""

    enabled: bool = True
    action: Action = "reject"
    attacks: tuple[Literal["pgd", "apgd", "fgsm"], ...] = ("pgd", "apgd")
    steps: int = Field(default=20, ge=1)
    eps: float | None = Field(default=None, gt=0)
    hidden: int = Field(default=0, ge=0)
    epochs: int = Field(default=300, ge=1)


class PredictionConfig(_Strict):
    """What answers: one model, an ensemble (mean probabilities), or randomized smoothing."""

    kind: Literal["model", "ensemble", "smoothing"] = "model"
    models: tuple[str, ...] = ("hardened",)
    disagreement_action: Action = "flag"
    sigma: float = Field(default=0.25, gt=0)
    samples: int = Field(default=100, ge=1)
    alpha: float = Field(default=0.001, gt=0, lt=1)

    @model_validator(mode="after")
    def _check_models(self) -> PredictionConfig:
        if not self.models:
            raise ValueError("models: expected at least one model name")
        if self.kind != "ensemble" and len(self.models) != 1:
            raise ValueError(f"models: kind {self.kind!r} takes exactly one model name")
        if self.kind == "ensemble" and len(self.models) < 2:
            raise ValueError("models: an ensemble needs at least two model names")
        return self


class PostCheckConfig(_Strict):
    """Temperature scaling (Guo et al. 2017) then a confidence floor; ``min_confidence: null``
    fits the floor jointly with the detectors to the guard's false-positive budget."""

    enabled: bool = True
    action: Literal["flag", "abstain"] = "abstain"
    min_confidence: float | None = Field(default=None, ge=0, le=1)


class GuardConfig(_Strict):
    """The whole ``guard:`` section.

    ``fpr`` is the share of clean inputs the firing layers together may stop (flag, reject or
    abstain), fitted on held-out clean calibration data. ``fit_fraction`` of the calibration
    data trains the detectors and class statistics; the rest sets thresholds and temperature.
    """

    fpr: float = Field(default=0.05, gt=0, lt=1)
    fit_fraction: float = Field(default=0.5, gt=0, lt=1)
    validation: ValidationConfig = ValidationConfig()
    squeezing: SqueezingConfig = SqueezingConfig()
    ood: OODConfig = OODConfig()
    adversarial: AdversarialDetectorConfig = AdversarialDetectorConfig()
    prediction: PredictionConfig = PredictionConfig()
    postcheck: PostCheckConfig = PostCheckConfig()

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "guard") -> GuardConfig:
        """Parse a mapping (the YAML ``guard:`` section); errors name ``where.field``."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
        try:
            return cls.model_validate(data, strict=False)
        except ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            field = f"{where}.{loc}" if loc else where
            raise ConfigError(f"{field}: {first['msg']} (got {first.get('input')!r})") from None
