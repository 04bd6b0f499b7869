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

In a config with a ``text:`` section (and no ``models``) the section is the text channel's drill
(attack ``trigger-word``: ``word``, ``repeats``; scans ``trigger-token`` by default, latent scans
too); in one with a ``tabular:`` section, the tabular channel's (attack ``feature-pattern``:
``k`` or ``features``; scans ``feature-value`` by default). :meth:`PoisoningConfig.check_channel`
says, naming the field, what a channel does not take (:func:`run_channel` picks the channel).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bastion.errors import ConfigError

_FIELD_MSG = re.compile(r"^[A-Za-z_][\w.\[\]]*: ")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttackConfig(_Strict):
    """A simulated poisoning attack on the training split (see :mod:`.attacks`)."""

    name: Literal["badnets", "blended", "label-flip", "trigger-word", "feature-pattern"] = "badnets"
    rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    mode: Literal["all-to-one", "all-to-all"] = "all-to-one"
    target: Annotated[int, Field(ge=0)] = 0
    source: Annotated[int, Field(ge=0)] | None = None
    size: Annotated[int, Field(ge=1)] = 3
    location: Literal["bottom-right", "bottom-left", "top-right", "top-left", "center"] = (
        "bottom-right"
    )
    alpha: Annotated[float, Field(gt=0.0, le=1.0)] = 0.2
    word: str = "cf"
    repeats: Annotated[int, Field(ge=1, le=10)] = 1
    k: Annotated[int, Field(ge=1)] = 3
    features: list[str] | None = None

    @field_validator("word")
    @classmethod
    def _one_token(cls, v: str) -> str:
        from bastion.text.vocab import tokenize

        if not v or tokenize(v) != [v.lower()]:
            raise ValueError("expected one word token (letters, digits or _)")
        return v.lower()


#: The attack fields each attack reads (``name`` and ``rate`` aside).
ATTACK_FIELDS: dict[str, frozenset[str]] = {
    "badnets": frozenset({"mode", "target", "size", "location"}),
    "blended": frozenset({"mode", "target", "alpha"}),
    "label-flip": frozenset({"target", "source"}),
    "trigger-word": frozenset({"target", "word", "repeats"}),
    "feature-pattern": frozenset({"target", "k", "features"}),
}

#: Channel -> (its attacks, its scans, its default scans).
CHANNELS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "image": (
        ("badnets", "blended", "label-flip"),
        ("activation-clustering", "spectral-signatures", "spectre"),
        ("activation-clustering",),
    ),
    "text": (
        ("trigger-word",),
        ("trigger-token", "activation-clustering", "spectral-signatures", "spectre"),
        ("trigger-token",),
    ),
    "tabular": (
        ("feature-pattern",),
        ("feature-value", "activation-clustering", "spectral-signatures", "spectre"),
        ("feature-value",),
    ),
}


def run_channel(run: Any) -> str:
    """The channel a run config's ``poisoning:`` section drills: ``image`` when it trains
    ``models``, else ``text`` with a ``text`` section, ``tabular`` with a ``tabular`` one."""
    if getattr(run, "models", None) or (run.text is None and run.tabular is None):
        return "image"
    return "text" if run.text is not None else "tabular"


class ScanModelConfig(_Strict):
    architecture: str = "small-cnn"
    epochs: Annotated[int, Field(ge=1)] = 3
    batch_size: Annotated[int, Field(ge=1)] = 128
    lr: Annotated[float, Field(gt=0.0)] = 0.05


ScanMethod = Literal[
    "activation-clustering", "spectral-signatures", "spectre", "trigger-token", "feature-value"
]


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
        if a is not None:
            extra = sorted(a.model_fields_set - ATTACK_FIELDS[a.name] - {"name", "rate"})
            if extra:
                raise ValueError(f"attack.{extra[0]}: not a setting of the {a.name} attack")
        return self

    def methods(self, channel: str) -> list[str]:
        """The scans to run on ``channel`` (the configured ones, else its defaults)."""
        if "methods" in self.scan.model_fields_set:
            return list(self.scan.methods)
        return list(CHANNELS[channel][2])

    def check_channel(self, channel: str, *, where: str = "poisoning") -> None:
        """:class:`ConfigError` naming the field when the section asks ``channel`` (``image``,
        ``text``, ``tabular``) for what it does not do."""
        attacks, scans, _ = CHANNELS[channel]
        a = self.attack
        if a is not None and a.name not in attacks:
            raise ConfigError(
                f"{where}.attack.name: the {channel} channel takes {', '.join(attacks)}, got "
                f"{a.name!r}"
            )
        for i, m in enumerate(self.methods(channel)):
            if m not in scans:
                raise ConfigError(
                    f"{where}.scan.methods[{i}]: the {channel} channel takes {', '.join(scans)}, "
                    f"got {m!r}"
                )
        if channel == "image":
            return
        if a is None:
            raise ConfigError(
                f"{where}.attack: expected the {channel} drill's attack ({attacks[0]}); the "
                f"{channel} channel's poisoning section is a drill"
            )
        image_only = [
            ("scan.duplicates", self.scan.duplicates, "duplicates"),
            ("scan.label_issues", self.scan.label_issues, "label_issues"),
            ("verify.neural_cleanse", self.verify.neural_cleanse, "neural_cleanse"),
            ("verify.strip", self.verify.strip, "strip"),
        ]
        for name, value, key in image_only:
            part = self.scan if name.startswith("scan.") else self.verify
            if value and key in part.model_fields_set:
                raise ConfigError(f"{where}.{name}: image data only (remove it)")
        if "architecture" in self.scan.model.model_fields_set:
            raise ConfigError(
                f"{where}.scan.model.architecture: the {channel} drill trains the {channel} "
                "channel's model (remove it)"
            )

    @classmethod
    def from_dict(
        cls, doc: Any, *, where: str = "poisoning", channel: str | None = None
    ) -> PoisoningConfig:
        """Validate a parsed ``poisoning:`` mapping (for ``channel`` when given, see
        :meth:`check_channel`); :class:`ConfigError` names the field
        (``poisoning.attack.rate: ...``) on the first line of the message."""
        if not isinstance(doc, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(doc).__name__}")
        try:
            cfg = cls.model_validate(doc)
        except ValidationError as e:
            lines = []
            for err in e.errors():
                loc = ".".join(str(p) for p in err["loc"])
                msg = str(err["msg"]).removeprefix("Value error, ")
                got = err.get("input")
                got_s = (
                    "" if isinstance(got, dict) or err["type"] == "missing" else f" (got {got!r})"
                )
                if not loc and _FIELD_MSG.match(msg):  # a model check naming its field
                    lines.append(f"{where}.{msg}")
                else:
                    lines.append(f"{where}.{loc}: {msg}{got_s}" if loc else f"{where}: {msg}")
            raise ConfigError("; ".join(lines)) from None
        if channel is not None:
            cfg.check_channel(channel, where=where)
        return cfg
