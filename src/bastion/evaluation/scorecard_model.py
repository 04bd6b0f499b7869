"""The typed scorecard: pydantic models of the JSON document ``bastion run`` writes.

Every renderer (HTML report, Markdown summary, model card) and the gate read a scorecard through
:class:`Scorecard`, never through the raw mapping. The models type what the renderers and the
gate read; sections that are open-ended (a channel's own records, an attack's recorded settings,
a sanity check's details) also keep any further field they hold (``extra="allow"``), so a new
record written by one stage reaches the JSON unchanged.

Versions (``schema_version``):

* **1**: the document before it was typed.
* **2** (:data:`SCHEMA_VERSION`): the same fields, validated by these models. A version-1
  document is migrated on load (only its ``schema_version`` changes); a newer or unknown version
  fails with :class:`ScorecardError` naming the version.

Numbers stay as written: an integer stays an integer, a float a float; ``null`` stands for a
figure that could not be measured (NaN is not JSON). The JSON Schema of version 2 is published
in ``docs/scorecard.schema.json``; regenerate it with
``python -m bastion.evaluation.scorecard_model --write`` (``--check`` fails when it is stale).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    model_validator,
)

from bastion.errors import ConfigError

SCHEMA_VERSION: Final = 2
"""The scorecard schema this bastion writes."""

Number = StrictInt | StrictFloat
"""A figure as written: integers stay integers (booleans and numeric strings are rejected)."""
Figure = Number | None
"""A figure, or ``null`` where it could not be measured."""

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "docs" / "scorecard.schema.json"


class ScorecardError(ConfigError):
    """A scorecard is malformed or from an unknown schema version (names the field or version)."""


class Section(BaseModel):
    """A part of the scorecard: typed fields, plus any further field the writer recorded.

    Item access (``section["key"]``, ``"key" in section``, ``section.get(key)``) reads the
    section's JSON document (plain dicts and lists), for scripts written against the untyped
    version 1; renderers read attributes.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_json(self) -> dict[str, Any]:
        """The JSON document: only the fields that were set, numbers as written (a field
        whose JSON name is no Python name, e.g. ``tpr_at_0.1pct_fpr``, under its alias)."""
        return self.model_dump(mode="json", exclude_unset=True, by_alias=True)

    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.to_json()

    def get(self, key: str, default: Any = None) -> Any:
        """The JSON value under ``key``, else ``default``."""
        return self.to_json().get(key, default)

    def keys(self) -> Iterator[str]:
        """The keys of the section's JSON document."""
        return iter(self.to_json())

    def __bool__(self) -> bool:
        """True when the section holds any field (like a non-empty mapping)."""
        return bool(self.model_fields_set or self.model_extra)

    def extra(self) -> dict[str, Any]:
        """The fields this model does not type (open-ended records), in written order."""
        return dict(self.model_extra or {})


# -- run, data, threat, evaluation ---------------------------------------------------------------
class RunInfo(Section):
    """How the run was started: its name, UTC creation time, seed, config hash and command."""

    name: str | None = None
    created: str | None = None
    seed: int | None = None
    config_hash: str | None = None
    command: str | None = None


class DataInfo(Section):
    """The data evaluated: name, content fingerprint (SHA-256), split sizes, input shape,
    class names and ``n_eval`` (examples attacked)."""

    name: str | None = None
    kind: str | None = None
    fingerprint: str | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    n_eval: int | None = None
    input_shape: list[int] | None = None
    classes: list[str | int] | None = None


class ThreatInfo(Section):
    """The threat model evaluated: ``norm``, ``eps`` and input ``bounds`` for Lp threats; a
    channel threat (``channel: tabular|text``) records its own budget fields."""

    norm: str | None = None
    eps: Figure = None
    bounds: tuple[Number, Number] | None = None
    channel: str | None = None
    #: text channel: the edits allowed and the share of words each may touch
    edits: str | None = None
    word_share: Figure = None
    char_share: Figure = None

    @property
    def eps_key(self) -> str | None:
        """The key under which per-attack accuracies at the threat budget are stored."""
        return None if self.eps is None else format(self.eps, "g")


class AttackRecord(Section):
    """One attack the evaluation ran: ``label`` (its key in ``models.*.attacks``), registry
    ``name``, ``channel``, ``knowledge`` and its recorded settings (extra fields)."""

    label: str | None = None
    name: str | None = None
    channel: str | None = None
    knowledge: str | None = None


class EvaluationInfo(Section):
    """The attacks run (in order) and the number of examples attacked."""

    attacks: list[AttackRecord] = []
    examples: int | None = None


class RuntimeInfo(Section):
    """Where the run ran: device, cores, torch threads (and why), processes."""

    device: str | None = None
    cores: int | None = None
    threads: int | None = None


class CardInfo(Section):
    """The config's ``card`` section (intended use, limitations, ...) for the model card."""

    intended_use: str | None = None
    out_of_scope: str | None = None
    owners: list[str] = []


# -- per model -----------------------------------------------------------------------------------
class EpochRecord(Section):
    """One training epoch; ``train_loss_rank<r>`` (per torchrun process) and the epoch's attack
    settings are extra fields."""

    epoch: Figure = None
    lr: Figure = None
    train_loss: Figure = None
    train_accuracy: Figure = None
    val_clean_accuracy: Figure = None
    val_robust_accuracy: Figure = None
    seconds: Figure = None


class TrainingRecord(Section):
    """How a model was trained: seconds, epochs, the selected (best) epoch, the selection rule
    and the per-epoch ``history``."""

    seconds: Figure = None
    epochs: Figure = None
    best_epoch: Figure = None
    selection: str | None = None
    history: list[EpochRecord] = []


class AccuracyCurve(Section):
    """Accuracy against eps: ``worst_case`` and each ``per_attack`` series hold one figure per
    ``eps`` (``null`` where not measured)."""

    eps: list[Figure] = []
    worst_case: list[Figure] = []
    per_attack: dict[str, list[Figure]] = {}

    @model_validator(mode="after")
    def _one_value_per_eps(self) -> AccuracyCurve:
        n = len(self.eps)
        if self.worst_case and len(self.worst_case) != n:
            raise ValueError(
                f".worst_case: expected {n} values (one per eps), got {len(self.worst_case)}"
            )
        for attack, values in self.per_attack.items():
            if n and len(values) != n:
                raise ValueError(
                    f".per_attack.{attack}: expected {n} values (one per eps), got {len(values)}"
                )
        return self


class SanityCheckRecord(Section):
    """One sanity check of the evaluation (Carlini et al. 2019, "On Evaluating Adversarial
    Robustness"): its ``code``, whether it ``passed``, severity, message, advice, ``details``
    and the ``remedies`` escalation may apply."""

    code: str | None = None
    passed: bool | None = None
    severity: str | None = None
    message: str | None = None
    advice: str | None = None
    details: dict[str, Any] = {}
    remedies: list[str] = []


class CalibrationBin(Section):
    """One equal-width confidence bin ``[lower, upper)``: mean ``confidence``, ``accuracy`` and
    example ``count``."""

    lower: Figure = None
    upper: Figure = None
    confidence: Figure = None
    accuracy: Figure = None
    count: int | None = None


class CalibrationStats(Section):
    """Calibration on one set of inputs: expected/maximum calibration error, NLL, Brier score,
    accuracy, mean confidence and the reliability ``bins``."""

    n: int | None = None
    ece: Figure = None
    mce: Figure = None
    nll: Figure = None
    brier: Figure = None
    accuracy: Figure = None
    mean_confidence: Figure = None
    bins: list[CalibrationBin] = []


class Calibration(Section):
    """Calibration on clean and adversarial inputs, after temperature scaling."""

    bins: int | None = None
    temperature: Figure = None
    clean: CalibrationStats | None = None
    adversarial: CalibrationStats | None = None
    attack: str | None = None


class Corruptions(Section):
    """Accuracy under common corruptions (Hendrycks & Dietterich 2019; MNIST-C): per corruption
    and severity, the means and the mCE against ``reference``."""

    clean_accuracy: Figure = None
    mean_accuracy: Figure = None
    accuracy: dict[str, dict[str, Figure]] = {}
    per_corruption: dict[str, Figure] = {}
    per_severity: dict[str, Figure] = {}
    reference: str | None = None
    mce: Figure = None
    relative_mce: Figure = None


class LatencyRow(Section):
    """Forward-pass latency at one batch size (milliseconds and throughput)."""

    p50_ms: Figure = None
    p99_ms: Figure = None
    mean_ms: Figure = None
    per_example_ms: Figure = None
    examples_per_second: Figure = None


class Latency(Section):
    """Inference latency per batch size, with the torch threads used."""

    threads: int | None = None
    repeats: int | None = None
    batch_sizes: dict[str, LatencyRow] = {}


class Shifts(Section):
    """Accuracy under fixed, named distribution shifts: ``shifts`` maps a shift to accuracy."""

    clean_accuracy: Figure = None
    shifts: dict[str, Figure] = {}
    mean_accuracy: Figure = None
    worst_shift: str | None = None
    worst_accuracy: Figure = None


class EscalationStepRecord(Section):
    """One remedy escalation applied: which failed checks it ``answers``, its ``status``, the
    ``attacks`` it ran, robust ``accuracy`` after it and the examples it ``broke``."""

    remedy: str | None = None
    answers: list[str] = []
    status: str | None = None
    attacks: list[str] = []
    accuracy: Figure = None
    broke: Figure = None
    seconds: Figure = None
    cpu_seconds: Figure = None
    reason: str | None = None
    details: dict[str, Any] = {}


class EscalationRecord(Section):
    """What the evaluation did after a sanity check fired (:mod:`bastion.evaluation.escalation`):
    ``status`` (``not-needed``, ``off``, ``complete``, ``incomplete``), the checks that ``fired``,
    the ``steps`` taken, the first-pass and escalated worst case and what stayed ``unanswered``."""

    enabled: bool | None = None
    status: str | None = None
    complete: bool | None = None
    fired: list[str] = []
    first_pass_worst_case_accuracy: Figure = None
    worst_case_accuracy: Figure = None
    superseded: bool | None = None
    reason: str | None = None
    spread: Figure = None
    unanswered: list[str] = []
    steps: list[EscalationStepRecord] = []
    seconds: Figure = None
    cpu_seconds: Figure = None


class ModelResult(Section):
    """One evaluated model.

    ``attacks`` maps an attack label to ``{format(eps, "g"): accuracy}``; accuracies are
    fractions in [0, 1]; ``worst_case_accuracy`` is the minimum over attacks at the threat's eps.
    """

    objective: str | None = None
    architecture: str | None = None
    clean_accuracy: Figure = None
    worst_case_accuracy: Figure = None
    first_pass_worst_case_accuracy: Figure = None
    worst_case_basis: str | None = None
    headline: str | None = None
    attacks: dict[str, dict[str, Figure]] = {}
    accuracy_vs_eps: AccuracyCurve | None = None
    attack_seconds: dict[str, dict[str, Figure]] = {}
    n_eval: int | None = None
    n_test: int | None = None
    test_clean_accuracy: Figure = None
    evaluation_seconds: Figure = None
    training: TrainingRecord | None = None
    corruptions: Corruptions | None = None
    calibration: Calibration | None = None
    shifts: Shifts | None = None
    latency: Latency | None = None
    sanity_checks: list[SanityCheckRecord] = []
    escalation: EscalationRecord | None = None


class WarningRecord(Section):
    """A warning of the run: ``code``, the ``model`` it concerns and a ``message``."""

    code: str | None = None
    model: str | None = None
    message: str | None = None


class ChannelSection(Section):
    """A stage's own section (``poisoning``): open-ended records, kept as written."""


class GuardRates(Section):
    """Shares of examples at one guard setting: ``detected`` by a layer, ``stopped`` (detected,
    abstained on or answered correctly)."""

    detected: Figure = None
    stopped: Figure = None


class GuardClean(Section):
    """The guard on clean inputs: how often it ``fired`` (the false-positive rate), accuracy,
    share answered and accuracy on those answered."""

    fired: Figure = None
    accuracy: Figure = None
    answered: Figure = None
    answered_accuracy: Figure = None


class GuardAtFpr(Section):
    """The guard set to one clean false-positive rate: clean behaviour, each standard attack,
    the guard-aware adaptive attack (Carlini & Wagner 2017) and the worst case stopped."""

    clean: GuardClean = GuardClean()
    standard: dict[str, GuardRates] = {}
    adaptive: GuardRates | None = None
    worst_case_stopped: Figure = None


class GuardSection(Section):
    """The runtime guard around a model (:func:`bastion.guard.evaluate.evaluate_guard`): per
    target false-positive rate (``fpr``, keyed ``format(rate, "g")``), what it stopped."""

    model: str | None = None
    examples: int | None = None
    fpr: dict[str, GuardAtFpr] = {}


class DpGuarantee(Section):
    """A model trained with DP-SGD (Abadi et al. 2016): its (epsilon, delta) guarantee."""

    epsilon: Figure = None
    delta: Figure = None


class MiaFigures(Section):
    """Membership inference figures: the true-positive rate at 0.1% and 1% false-positive rate
    (Carlini et al. 2022, "Membership inference attacks from first principles") and the AUC."""

    tpr_at_0_1pct_fpr: Figure = Field(None, alias="tpr_at_0.1pct_fpr")
    tpr_at_1pct_fpr: Figure = None
    auc: Figure = None


class MiaRecord(MiaFigures):
    """A membership-inference audit: the strongest attack's figures and each attack's."""

    attacks: dict[str, MiaFigures] = {}


class InversionRecord(Section):
    """Model inversion (Fredrikson et al. 2015): share of classes identified from their
    reconstructions and the cosine similarity to their own class mean."""

    identified: Figure = None
    cosine_own: Figure = None


class ExtractionRecord(Section):
    """Model extraction (Tramer et al. 2016; Orekondy et al. 2019): the best method, queries,
    the copy's fidelity and accuracy at the budget and the transfer success from the copy."""

    best_method: str | None = None
    queries: Figure = None
    fidelity_at_budget: Figure = None
    accuracy_at_budget: Figure = None
    transfer_success_rate: Figure = None


class PrivacyAuditRecord(Section):
    """One audit document (``kind`` ``privacy-audit`` or ``extraction-audit``) as the privacy
    section holds it."""

    kind: str | None = None
    model: str | None = None
    target: str | None = None
    mia: MiaRecord | None = None
    inversion: InversionRecord | None = None
    extraction: ExtractionRecord | None = None


class PrivacySection(Section):
    """The privacy section: DP-SGD guarantees per model, the audit documents and the per-model
    summary the gate reads (``privacy.models.NAME.mia.tpr_at_0.1pct_fpr``)."""

    dp: dict[str, DpGuarantee] = {}
    audits: list[PrivacyAuditRecord] = []
    models: dict[str, dict[str, Any]] = {}


class TabularAttackFigures(Section):
    """One constrained tabular attack on one model: robust accuracy, success and feasible rate
    (every adversarial row satisfies the schema), mean queries and seconds."""

    robust_accuracy: Figure = None
    success_rate: Figure = None
    feasible_rate: Figure = None
    mean_queries: Figure = None
    seconds: Figure = None


class TabularModelRecord(Section):
    """One tabular model: objective, clean and robust (worst over attacks) accuracy, per
    attack figures and the saved model's ``path`` (relative to the run)."""

    objective: str | None = None
    kind: str | None = None
    clean_accuracy: Figure = None
    robust_accuracy: Figure = None
    attacks: dict[str, TabularAttackFigures] = {}
    path: str | None = None


class TabularThreatInfo(Section):
    """The tabular threat: norm and eps in unit space, cost weighting, immutable columns and
    the schema's relations."""

    norm: str | None = None
    eps: Figure = None
    use_costs: bool | None = None
    immutable_columns: int | None = None
    relations: list[Any] = []


class TabularSection(Section):
    """The tabular channel (constrained attacks under a schema; Simonetto et al. 2022)."""

    threat: TabularThreatInfo = TabularThreatInfo()
    data: dict[str, Any] = {}
    models: dict[str, TabularModelRecord] = {}


class TextAttackFigures(Section):
    """One text attack against one target: success rate on correctly classified texts, the
    mean share of words changed and the queries per success."""

    n: int | None = None
    success_rate: Figure = None
    robust_accuracy: Figure = None
    mean_changed_share: Figure = None
    mean_queries_per_success: Figure = None


class TextAttackRecord(Section):
    """One text attack: its ``params`` and, as further fields, its figures per target
    (``standard``, ``standard+sanitizer``, ``hardened``, ...)."""

    params: dict[str, Any] = {}

    def target(self, name: str) -> TextAttackFigures | None:
        """The figures against target ``name`` (``None`` when it was not attacked)."""
        raw = self.extra().get(name)
        return TextAttackFigures.model_validate(raw) if isinstance(raw, Mapping) else None


class TextModelRecord(Section):
    """One text model: clean accuracy, with the input sanitiser, and its saved ``path``."""

    clean_accuracy: Figure = None
    clean_accuracy_sanitized: Figure = None
    path: str | None = None


class TextSection(Section):
    """The text channel: the data set, models, attacks per target and their summary."""

    n_attacked: int | None = None
    dataset: DataInfo = DataInfo()
    models: dict[str, TextModelRecord] = {}
    attacks: dict[str, TextAttackRecord] = {}
    summary: dict[str, Figure] = {}


CHANNELS = ("tabular", "text", "guard", "privacy", "poisoning")
"""The optional channel and stage sections, in the order the report shows them."""


class Scorecard(Section):
    """The whole scorecard (schema version :data:`SCHEMA_VERSION`)."""

    schema_version: Literal[2] = SCHEMA_VERSION
    run: RunInfo = RunInfo()
    data: DataInfo = DataInfo()
    threat: ThreatInfo = ThreatInfo()
    evaluation: EvaluationInfo = EvaluationInfo()
    versions: dict[str, str] = {}
    runtime: RuntimeInfo | None = None
    models: dict[str, ModelResult] = {}
    timings: dict[str, Figure] = {}
    warnings: list[WarningRecord | str] = []
    card: CardInfo | None = None
    tabular: TabularSection | None = None
    text: TextSection | None = None
    guard: GuardSection | None = None
    privacy: PrivacySection | None = None
    poisoning: ChannelSection | None = None

    def channels(self) -> dict[str, Section]:
        """The channel and stage sections present (non-empty), in :data:`CHANNELS` order."""
        sections = {name: getattr(self, name) for name in CHANNELS}
        return {name: s for name, s in sections.items() if s is not None and s.to_json()}


AUDIT_KINDS = ("privacy-audit", "extraction-audit")
"""The ``kind`` of the audit documents ``bastion gate`` reads besides scorecards."""


class AuditDocument(Section):
    """A privacy or extraction audit document (:mod:`bastion.privacy.audit`, a run's
    ``privacy.json``): not a scorecard, but shaped like one for the gate (``schema_version``,
    ``kind``, ``models``); its own records (``mia``, ``inversion``, ``extraction``, ``data`` as
    the data set's name, ...) are kept as written."""

    schema_version: int
    kind: Literal["privacy-audit", "extraction-audit"]
    run: RunInfo = RunInfo()
    models: dict[str, ModelResult] = {}
    warnings: list[WarningRecord | str] = []


# -- versions ------------------------------------------------------------------------------------
def _from_v1(doc: dict[str, Any]) -> dict[str, Any]:
    """Version 1 to 2: the fields are unchanged; only the version number moves."""
    return {**doc, "schema_version": 2}


_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _from_v1}
"""``version -> function`` turning a document of that version into the next version's."""


_NUMBER_ERRORS = {"int_type", "float_type", "int_parsing", "float_parsing"}


def _field_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as a dotted scorecard path (union member tags dropped)."""
    tags = {"int", "float", "str", "bool", "none", *(c.__name__ for c in _sections())}
    parts = [
        f"[{p}]" if isinstance(p, int) else p
        for p in loc
        if not (isinstance(p, str) and (p in tags or p.startswith("function-")))
    ]
    return ".".join(parts).replace(".[", "[") or "scorecard"


def _sections() -> list[type[Section]]:
    out, todo = [], [Section]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo += cls.__subclasses__()
    return out


def error_message(e: ValidationError) -> str:
    """The first error as ``field.path: what was expected`` (number unions read as one)."""
    errors = e.errors()
    path = _field_path(errors[0]["loc"])
    same = [err for err in errors if _field_path(err["loc"]) == path]
    if all(err["type"] in _NUMBER_ERRORS for err in same):
        msg = f"expected a number, got {same[0]['input']!r}"
    else:
        msg = str(errors[0]["msg"]).removeprefix("Value error, ")
    if msg.startswith("."):  # a model validator names the field below its own location
        rel, _, msg = msg.partition(": ")
        path += rel
    return f"{path}: {msg}"


def migrate(doc: Mapping[str, Any], where: str = "scorecard") -> dict[str, Any]:
    """``doc`` brought to :data:`SCHEMA_VERSION` (a document without a version is taken as the
    current one).

    Raises:
        ScorecardError: ``schema_version`` is not a known version (newer or unknown).
    """
    version = doc.get("schema_version", SCHEMA_VERSION)
    out = dict(doc)
    known = sorted({*_MIGRATIONS, SCHEMA_VERSION})
    if isinstance(version, bool) or version not in known:
        newer = isinstance(version, int) and not isinstance(version, bool)
        what = "newer than" if newer and version > SCHEMA_VERSION else "not one"
        raise ScorecardError(
            f"{where}: schema_version {version!r} is {what} this bastion reads "
            f"(expected schema_version {SCHEMA_VERSION}, or one of {known[:-1]} migrated)"
        )
    while out.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        out = _MIGRATIONS[int(out["schema_version"])](out)
    return out


def load_scorecard(doc: Scorecard | Mapping[str, Any], where: str = "scorecard") -> Scorecard:
    """``doc`` as a validated :class:`Scorecard` (version 1 migrated; a :class:`Scorecard` is
    returned as is).

    Raises:
        ScorecardError: not a mapping, an unknown ``schema_version``, or a part with the wrong
            type or shape (the message names the field, e.g. ``models.hardened.clean_accuracy``).
    """
    if isinstance(doc, Scorecard):
        return doc
    if not isinstance(doc, Mapping):
        raise ScorecardError(f"{where}: expected a mapping, got {type(doc).__name__}")
    migrated = migrate(doc, where)
    try:
        return Scorecard.model_validate(migrated)
    except ValidationError as e:
        raise ScorecardError(error_message(e)) from None


# -- JSON Schema ---------------------------------------------------------------------------------
def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a version-:data:`SCHEMA_VERSION` scorecard."""
    schema = Scorecard.model_json_schema(mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://bastion.dev/scorecard.schema.v{SCHEMA_VERSION}.json",
        **schema,
    }


def schema_text() -> str:
    """The published schema file's text."""
    return json.dumps(json_schema(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``--write`` regenerates ``docs/scorecard.schema.json``; ``--check`` exits 1 when it is
    stale."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="regenerate the schema file")
    group.add_argument("--check", action="store_true", help="fail when the file is stale")
    parser.add_argument("--path", type=Path, default=SCHEMA_PATH)
    args = parser.parse_args(argv)
    text = schema_text()
    if args.write:
        args.path.write_text(text, encoding="utf-8")
        print(f"wrote {args.path}")
        return 0
    if not args.path.is_file() or args.path.read_text(encoding="utf-8") != text:
        print(
            f"{args.path} is stale: run python -m bastion.evaluation.scorecard_model --write",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
