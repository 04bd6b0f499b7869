"""The ``poisoning:`` section of a run config (validated with pydantic; errors name the field).

```yaml
poisoning:
  attack: {name: badnets, rate: 0.05, target: 0, size: 3}   # optional red-team drill
  train_examples: 20000                                     # optional: first N training examples
  scan:
    model: {architecture: small-cnn, epochs: 3}             # the model whose features are scanned
    methods: [activation-clustering]                        # and/or spectral-signatures, spectre
    eps: 0.1                                                # spectral scans: poison-rate bound
    duplicates: true                                        # exact and near duplicates
    label_issues: false                                     # confident learning (trains folds)
  quarantine: true                                          # train only on the kept examples
  verify: {neural_cleanse: true, strip: true}
```
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bastion.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttackConfig(_Strict):
    """A simulated poisoning attack on the training split (see :mod:`.attacks`)."""

    name: Literal["badnets", "blended", "label-flip"] = "badnets"
    rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    mode: Literal["all-to-one", "all-to-all"] = "all-to-one"
    target: Annotated[int, Field(ge=0)] = 0
    source: Annotated[int, Field(ge=0)] | None = None
    size: Annotated[int, Field(ge=1)] = 3
    location: Literal["bottom-right", "bottom-left", "top-right", "top-left", "center"] = (
        "bottom-right"
    )
    alpha: Annotated[float, Field(gt=0.0, le=1.0)] = 0.2


class ScanModelConfig(_Strict):
    architecture: str = "small-cnn"
    epochs: Annotated[int, Field(ge=1)] = 3
    batch_size: Annotated[int, Field(ge=1)] = 128
    lr: Annotated[float, Field(gt=0.0)] = 0.05


ScanMethod = Literal["activation-clustering", "spectral-signatures", "spectre"]


def _default_methods() -> list[ScanMethod]:
    return ["activation-clustering"]


class ScanConfig(_Strict):
    model: ScanModelConfig = Field(default_factory=ScanModelConfig)
    methods: list[ScanMethod] = Field(default_factory=_default_methods)
    eps: Annotated[float, Field(gt=0.0, le=0.5)] = 0.1
    dims: Annotated[int, Field(ge=1)] = 10
    max_relative_size: Annotated[float, Field(gt=0.0, le=0.5)] = 0.35
    min_silhouette: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.25
    duplicates: bool = True
    near_tol: Annotated[float, Field(ge=0.0)] = 0.02
    label_issues: bool = False
    folds: Annotated[int, Field(ge=2)] = 3


class VerifyConfig(_Strict):
    neural_cleanse: bool = True
    cleanse_steps: Annotated[int, Field(ge=1)] = 400
    cleanse_examples: Annotated[int, Field(ge=10)] = 1000
    strip: bool = True
    strip_fpr: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.01
    examples: Annotated[int, Field(ge=1)] = 1000


class PoisoningConfig(_Strict):
    attack: AttackConfig | None = None
    train_examples: Annotated[int, Field(ge=1)] | None = None
    scan: ScanConfig = Field(default_factory=ScanConfig)
    quarantine: bool = True
    verify: VerifyConfig = Field(default_factory=VerifyConfig)

    @model_validator(mode="after")
    def _check(self) -> PoisoningConfig:
        a = self.attack
        if (
            a is not None
            and a.name == "label-flip"
            and a.source is not None
            and a.source == a.target
        ):
            raise ValueError("attack.source: must differ from attack.target")
        return self

    @classmethod
    def from_dict(cls, doc: Any, *, where: str = "poisoning") -> PoisoningConfig:
        """Validate a parsed ``poisoning:`` mapping; :class:`ConfigError` names the field
        (``poisoning.attack.rate: ...``) on the first line of the message."""
        if not isinstance(doc, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(doc).__name__}")
        try:
            return cls.model_validate(doc)
        except ValidationError as e:
            lines = []
            for err in e.errors():
                loc = ".".join(str(p) for p in err["loc"])
                msg = str(err["msg"]).removeprefix("Value error, ")
                got = err.get("input")
                got_s = (
                    "" if isinstance(got, dict) or err["type"] == "missing" else f" (got {got!r})"
                )
                lines.append(f"{where}.{loc}: {msg}{got_s}" if loc else f"{where}: {msg}")
            raise ConfigError("; ".join(lines)) from None
