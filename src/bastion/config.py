"""The YAML run configuration, validated with pydantic; errors name the field at fault.

A config names the data, the threat model, the architecture, the models to train (a baseline
and one or more hardened ones, each with its objective) and the evaluation to run. See
``examples/digits.yaml`` for a complete, commented example.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bastion.attacks.registry import build_attack
from bastion.attacks.settings import settings_error
from bastion.errors import BastionError, ConfigError, yaml_error_line
from bastion.guard.config import GuardConfig
from bastion.poisoning.config import PoisoningConfig, run_channel
from bastion.tabular.experiment import TabularConfig
from bastion.text.config import TextConfig
from bastion.threat import ThreatModel
from bastion.training.config_models import AugMixConfig, AWPConfig, MixedConfig
from bastion.training.objectives import OBJECTIVES, ObjectiveFields, ObjectiveSettings
from bastion.training.trainer import TrainSettings, check_against_threat

if TYPE_CHECKING:
    from bastion.privacy.run_config import PrivacySection


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    name: str = "digits"
    data_dir: str | None = None
    path: str | None = None
    schema_path: str | None = Field(default=None, alias="schema")
    image_size: tuple[int, int] | None = None  # image-folder: resize to (H, W)
    channels: Literal[1, 3] | None = None  # image-folder: grey or RGB
    factory: str | None = None  # name: factory: "package.module:function" returning a Dataset
    kwargs: dict[str, Any] = Field(default_factory=dict)  # its keyword arguments
    val_fraction: float = 0.1
    test_fraction: float = 0.2

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ThreatConfig(_Strict):
    norm: Literal["linf", "l2", "l1"] = "linf"
    eps: float = Field(default=0.3, ge=0)
    bounds: tuple[float, float] = (0.0, 1.0)

    def build(self) -> ThreatModel:
        return ThreatModel(norm=self.norm, eps=self.eps, bounds=self.bounds)


class ArchitectureConfig(_Strict):
    architecture: str = "mlp"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("architecture")
    @classmethod
    def _known(cls, v: str) -> str:
        from bastion.models.zoo import ARCHITECTURES

        if v not in ARCHITECTURES:
            raise ValueError(f"expected one of {', '.join(sorted(ARCHITECTURES))}")
        return v


class ObjectiveConfig(ObjectiveFields):
    """``models[].objective``: the settings declared once in :class:`ObjectiveFields` (types,
    bounds, descriptions, the rules across fields) and the ``augmix`` and ``mixed``
    sub-sections."""

    augmix: AugMixConfig = Field(default_factory=AugMixConfig)
    mixed: list[MixedConfig] = Field(default_factory=list)

    def build(self) -> ObjectiveSettings:
        return ObjectiveSettings(
            name=self.name,
            steps=self.steps,
            step_size=self.step_size,
            random_start=self.random_start,
            beta=self.beta,
            noise=self.noise,
            grad_align=self.grad_align,
            sigma=self.sigma,
            temperature=self.temperature,
            teacher_epochs=self.teacher_epochs,
            augmix=self.augmix.build(),
            mixed=tuple(m.build() for m in self.mixed),
        )


class TrainingConfig(_Strict):
    """Training settings; every field is optional so a model entry can override a few."""

    epochs: int | None = Field(default=None, ge=1)
    batch_size: int | None = Field(default=None, ge=1)
    lr: float | None = Field(default=None, gt=0)
    schedule: Literal["cyclic", "cosine", "constant", "step"] | None = None
    optimizer: Literal["sgd", "adam"] | None = None
    momentum: float | None = Field(default=None, ge=0, lt=1)
    weight_decay: float | None = Field(default=None, ge=0)
    train_eps: float | None = Field(default=None, ge=0)
    eps_ramp_epochs: float | None = Field(default=None, ge=0)
    val_examples: int | None = Field(default=None, ge=1)
    val_pgd_steps: int | None = Field(default=None, ge=1)
    select: Literal["robust", "clean", "last"] | None = None
    grad_clip: float | None = Field(default=None, ge=0)
    step_phases: list[tuple[int, int]] | None = None
    patience: int | None = Field(default=None, ge=0)
    overfit_check: bool | None = None
    overfit_drop: float | None = Field(default=None, gt=0, le=1)
    calibrate: bool | None = None
    awp: AWPConfig | None = None
    checkpoint_every: int | None = Field(default=None, ge=0)

    def merged(self, override: TrainingConfig | None) -> dict[str, Any]:
        """Keyword arguments of :class:`TrainSettings`: these fields, then the override's."""
        base = self.model_dump(exclude_none=True, exclude={"awp", "step_phases"})
        layers = [self] if override is None else [self, override]
        if override is not None:
            base.update(override.model_dump(exclude_none=True, exclude={"awp", "step_phases"}))
        for layer in layers:
            if layer.awp is not None:
                base["awp"] = layer.awp.build()
            if layer.step_phases is not None:
                base["step_phases"] = tuple((int(e), int(k)) for e, k in layer.step_phases)
        return base


class ModelEntry(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    training: TrainingConfig | None = None
    architecture: ArchitectureConfig | None = None
    dp: dict[str, Any] | None = None  # DP-SGD through Opacus instead of the trainer

    @model_validator(mode="after")
    def _check_dp(self) -> ModelEntry:
        """A ``dp`` section is checked here (errors name ``models.<name>.dp.<field>``)."""
        if self.dp is not None:
            from bastion.privacy.dp import dp_settings_from

            try:
                dp_settings_from(self.dp, where=f"models.{self.name}.dp")
            except ConfigError as e:
                raise ValueError(str(e)) from None
        return self


class AttackEntry(BaseModel):
    """An attack in the evaluation list: ``name`` (registered attack), optional ``label``
    (its name in the scorecard, default the attack name) and the attack's own settings."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str
    label: str | None = None

    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def key(self) -> str:
        return self.label or self.name


class CorruptionsConfig(_Strict):
    """The corruption suite (Hendrycks & Dietterich 2019; Mu & Gilmer 2019): accuracy per
    corruption and severity, and mCE against the first model of the run."""

    names: list[str] | None = None
    severities: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5])
    examples: int | None = Field(default=None, ge=1)

    @field_validator("names")
    @classmethod
    def _names(cls, v: list[str] | None) -> list[str] | None:
        from bastion.corruptions import CORRUPTIONS

        for n in v or []:
            if n not in CORRUPTIONS:
                raise ValueError(
                    f"unknown corruption {n!r}; expected some of {', '.join(CORRUPTIONS)}"
                )
        return v

    @field_validator("severities")
    @classmethod
    def _severities(cls, v: list[int]) -> list[int]:
        if not v or any(not 1 <= s <= 5 for s in v):
            raise ValueError(f"expected severities in 1..5, got {v}")
        return v


class CalibrationConfig(_Strict):
    """Calibration clean and under attack: ECE, reliability diagram (Guo et al. 2017)."""

    bins: int = Field(default=15, ge=1, le=100)
    attack: AttackEntry | None = Field(
        default_factory=lambda: AttackEntry.model_validate({"name": "pgd", "steps": 20})
    )
    examples: int | None = Field(default=None, ge=1)


class LatencyConfig(_Strict):
    """Inference latency per batch size (p50, p99)."""

    batch_sizes: list[int] = Field(default_factory=lambda: [1, 64])
    repeats: int = Field(default=30, ge=1)
    warmup: int = Field(default=3, ge=0)

    @field_validator("batch_sizes")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if not v or any(b < 1 for b in v):
            raise ValueError(f"expected a non-empty list of batch sizes >= 1, got {v}")
        return v


class ShiftConfig(_Strict):
    """Distribution-shift splits (see :mod:`bastion.evaluation.shift`)."""

    names: list[str] | None = None
    examples: int | None = Field(default=None, ge=1)

    @field_validator("names")
    @classmethod
    def _names(cls, v: list[str] | None) -> list[str] | None:
        from bastion.evaluation.shift import parse_shift

        for n in v or []:
            try:
                parse_shift(n)
            except BastionError as e:
                raise ValueError(str(e).removeprefix("evaluation.shifts: ")) from None
        return v


class EvaluationConfig(_Strict):
    examples: int | None = Field(default=1000, ge=1)
    batch_size: int = Field(default=500, ge=1)
    attacks: list[AttackEntry] = Field(
        default_factory=lambda: [
            AttackEntry(name="fgsm"),
            AttackEntry.model_validate({"name": "pgd", "steps": 50, "restarts": 3}),
        ]
    )
    eps_grid: list[float] = Field(default_factory=list)
    corruptions: CorruptionsConfig | None = None
    sanity_checks: Literal["quick", "full", "off"] = "quick"
    escalate: bool = True
    calibration: CalibrationConfig | None = Field(default_factory=CalibrationConfig)
    latency: LatencyConfig | None = Field(default_factory=LatencyConfig)
    shifts: ShiftConfig | None = None

    @field_validator("eps_grid")
    @classmethod
    def _grid(cls, v: list[float]) -> list[float]:
        for e in v:
            if not (math.isfinite(e) and e >= 0):
                raise ValueError(f"every eps must be a finite number >= 0, got {e}")
        return v

    @field_validator("sanity_checks", mode="before")
    @classmethod
    def _yaml_off(cls, v: object) -> object:
        return "off" if v is False else v  # YAML reads a bare `off` as false


class CardConfig(_Strict):
    """What the model card says that the evaluation cannot measure."""

    intended_use: str | None = None
    out_of_scope: str | None = None
    owners: list[str] = Field(default_factory=list)


class RunConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = 0
    threads: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"  # see bastion.runtime
    device: str = "auto"  # auto, cpu, cuda, cuda:N or mps; --device wins (bastion.runtime)
    data: DataConfig = Field(default_factory=DataConfig)
    threat: ThreatConfig = Field(default_factory=ThreatConfig)
    model: ArchitectureConfig = Field(default_factory=ArchitectureConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    models: list[ModelEntry] = Field(default_factory=list)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    card: CardConfig | None = None
    tabular: TabularConfig | None = None
    text: TextConfig | None = None
    guard: dict[str, Any] | None = None
    poisoning: dict[str, Any] | None = None  # see bastion.poisoning.config
    privacy: dict[str, Any] | None = None  # see bastion.privacy.run_section

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        """The name's form only; whether the device exists is checked when a command runs."""
        from bastion.runtime import check_device_name

        try:
            return check_device_name(v, where="device")
        except ConfigError:
            raise ValueError("expected auto, cpu, cuda, cuda:N or mps") from None

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> RunConfig:
        evaluate_only = bool((info.context or {}).get("evaluate_only"))
        self.poisoning_config()  # errors name poisoning.<field>
        self.privacy_config()  # errors name privacy.<field>
        if not self.models and self.tabular is None and self.text is None and not evaluate_only:
            raise ValueError(
                "models: expected at least one model entry (or a 'tabular' or 'text' section)"
            )
        if self.tabular is not None and (self.data.path is None or self.data.schema_path is None):
            raise ValueError(
                "tabular: needs data.path (the CSV file) and data.schema (its schema YAML)"
            )
        names = [m.name for m in self.models]
        if self.guard is not None:
            gcfg = self.guard_config()
            assert gcfg is not None
            missing = [m for m in gcfg.prediction.models if m not in names]
            if missing:
                raise ValueError(
                    f"guard.prediction.models: {missing} are not among the models {names}"
                )
        if len(set(names)) != len(names):
            raise ValueError(f"models: names must be unique, got {names}")
        keys = [a.key for a in self.evaluation.attacks]
        if len(set(keys)) != len(keys):
            raise ValueError(
                f"evaluation.attacks: labels must be unique, got {keys}; set 'label' to tell "
                "them apart"
            )
        self.threat_model()  # threat-level checks (eps against the range)
        width = self.threat.bounds[1] - self.threat.bounds[0]
        for i, e in enumerate(self.evaluation.eps_grid):
            if self.threat.norm == "linf" and e > width:
                raise ValueError(
                    f"evaluation.eps_grid[{i}]: {e} exceeds the width of the input "
                    f"range {width} for the linf norm; expected eps <= hi - lo"
                )
        for i, a in enumerate(self.evaluation.attacks):
            build_attack(a.name, a.settings(), where=f"evaluation.attacks[{i}]")
        cal = self.evaluation.calibration
        if cal is not None and cal.attack is not None:
            build_attack(
                cal.attack.name, cal.attack.settings(), where="evaluation.calibration.attack"
            )
        for i, m in enumerate(self.models):
            self.train_settings(m, where=f"models[{i}]")
        return self

    # -- builders ---------------------------------------------------------------------------
    def guard_config(self) -> GuardConfig | None:
        """The validated ``guard`` section (errors name ``guard.<field>``)."""
        from bastion.guard.config import GuardConfig

        if self.guard is None:
            return None
        try:
            return GuardConfig.from_dict(self.guard)
        except ConfigError as e:
            raise ValueError(str(e)) from None

    def poisoning_config(self) -> PoisoningConfig | None:
        """The validated ``poisoning`` section (errors name ``poisoning.<field>``)."""
        if self.poisoning is None:
            return None
        try:
            return PoisoningConfig.from_dict(self.poisoning, channel=run_channel(self))
        except ConfigError as e:
            raise ValueError(str(e)) from None

    def privacy_config(self) -> PrivacySection | None:
        """The validated ``privacy`` section (errors name ``privacy.<field>``)."""
        from bastion.privacy.run_config import PrivacySection

        if self.privacy is None:
            return None
        try:
            return PrivacySection.from_dict(self.privacy)
        except ConfigError as e:
            raise ValueError(str(e)) from None

    def threat_model(self) -> ThreatModel:
        return self.threat.build()

    def train_settings(self, entry: ModelEntry, *, where: str = "models") -> TrainSettings:
        merged = self.training.merged(entry.training)
        try:
            objective = entry.objective.build()
            settings = TrainSettings(objective=objective, **merged)
            check_against_threat(settings, self.threat_model())
        except ConfigError as e:
            raise ConfigError(f"{where} ({entry.name}): {e}") from e
        teps = settings.train_eps if settings.train_eps is not None else self.threat.eps
        if (
            objective.adversarial
            and self.threat.norm == "linf"
            and teps > self.threat.bounds[1] - self.threat.bounds[0]
        ):
            raise ConfigError(f"{where}.training.train_eps: {teps} exceeds the input range")
        return settings

    def architecture_for(self, entry: ModelEntry) -> ArchitectureConfig:
        return entry.architecture or self.model


def _format_validation_error(e: ValidationError, source: str) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"] if p != "__root__")
        explained = settings_error(RunConfig, err)  # a field declared in a settings model
        if explained is not None:
            lines.append(f"{source}: {loc}: {explained}")
            continue
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        got = err.get("input")
        got_s = "" if isinstance(got, dict) or err["type"] == "missing" else f" (got {got!r})"
        lines.append(f"{source}: {loc}: {msg}{got_s}" if loc else f"{source}: {msg}")
    return "\n".join(lines)


def parse_config(doc: Any, *, source: str = "config", evaluate_only: bool = False) -> RunConfig:
    """Validate a parsed YAML document; raises :class:`ConfigError` naming each bad field.

    ``evaluate_only``: the config only evaluates models given elsewhere (``bastion evaluate``),
    so it may have no ``models`` to train."""
    if not isinstance(doc, dict):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(doc).__name__}"
        )
    if "objective" in doc and "models" not in doc:
        raise ConfigError(f"{source}: 'objective' belongs to an entry of 'models'")
    try:
        return RunConfig.model_validate(doc, context={"evaluate_only": evaluate_only})
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source)) from None
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def load_config(
    path: str | os.PathLike[str], *, evaluate_only: bool = False
) -> tuple[RunConfig, dict[str, Any]]:
    """Read and validate a YAML config; returns the validated config and the raw document
    (``evaluate_only``: see :func:`parse_config`)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid YAML: {yaml_error_line(e)}") from None
    return parse_config(doc, source=str(p), evaluate_only=evaluate_only), doc


OBJECTIVE_NAMES = OBJECTIVES
