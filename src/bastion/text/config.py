"""Configuration of a text run (the ``text:`` section of a bastion YAML file).

Every model is strict (no type coercion) and forbids unknown keys, so a typo in the YAML is an
error naming the field. :func:`parse_text_config` turns pydantic's errors into one
:class:`~bastion.errors.ConfigError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from bastion.attacks.registry import registered_name
from bastion.errors import ConfigError
from bastion.text.unicode_tables import InvisibleFamily

#: The name of an attack in the registry's text channel (``bastion attacks list --channel
#: text``); another name is an error listing them.
TextAttackName = Annotated[str, AfterValidator(registered_name("text"))]
#: The built-in text attacks a config runs by default, in the order the scorecard lists them.
ALL_TEXT_ATTACKS: tuple[str, ...] = (
    "word_substitution",
    "deepwordbug",
    "homoglyph",
    "invisible",
    "combined",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TextVocabConfig(_Strict):
    """Vocabulary built from the training split."""

    min_count: int = Field(default=1, ge=1)
    max_size: int | None = Field(default=20000, ge=3)
    max_length: int = Field(default=40, ge=1, le=1024)
    lower: bool = True


class TextModelConfig(_Strict):
    """Architecture of both the standard and the hardened model."""

    arch: Literal["word_cnn", "bilstm", "ngram_bag"] = "word_cnn"
    embed_dim: int = Field(default=64, ge=1, le=1024)
    num_filters: int = Field(default=64, ge=1, le=1024)
    filter_sizes: list[int] = Field(default_factory=lambda: [3, 4, 5], min_length=1)
    hidden_size: int = Field(default=64, ge=1, le=1024)
    ngram: int = Field(default=2, ge=1, le=3)
    hash_buckets: int = Field(default=65536, ge=1)
    dropout: float = Field(default=0.5, ge=0.0, lt=1.0)


class TextTrainingConfig(_Strict):
    """Adam settings shared by both models."""

    epochs: int = Field(default=6, ge=1, le=1000)
    batch_size: int = Field(default=50, ge=1)
    lr: float = Field(default=2e-3, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)


class TextSmoothingConfig(_Strict):
    """Randomized smoothing of the hardened model (SAFER, Ye et al. 2020; RanMASK, Zeng et al.
    2021; see :class:`bastion.text.smoothing.SmoothedTextClassifier`).

    When ``enabled``, the hardened targets answer by pooling ``samples`` noisy copies of each
    text: every word is masked to ``<unk>`` with probability ``mask_rate``, else replaced by a
    random substitution candidate (the attack's candidate source, ``candidates_per_word`` per
    word) with probability ``substitute_rate``. ``aggregate`` pools mean probabilities or vote
    shares. With ``train_noise`` the hardened model is also trained on such copies; noisy
    training converges more slowly, so ``train_epochs`` (``None``: ``training.epochs``) can give
    the hardened model more epochs than the standard one (the best validation epoch is kept).
    With ``aggregate: vote`` and ``adaptive`` (default), every attack on a smoothed target also
    searches on its mean-pooled twin (same noise, same seed) and judges the result on the voting
    target (:class:`bastion.text.SurrogateAttack`): the reported success counts an example broken
    by either search, so coarse vote shares cannot pass for robustness.
    """

    enabled: bool = False
    samples: int = Field(default=16, ge=1, le=1024)
    mask_rate: float = Field(default=0.2, ge=0.0, lt=1.0)
    substitute_rate: float = Field(default=0.0, ge=0.0, lt=1.0)
    candidates_per_word: int = Field(default=16, ge=1, le=256)
    aggregate: Literal["mean", "vote"] = "mean"
    train_noise: bool = True
    train_epochs: int | None = Field(default=None, ge=1, le=1000)
    seed: int = Field(default=0, ge=0)
    adaptive: bool = True

    @model_validator(mode="after")
    def _check(self) -> TextSmoothingConfig:
        if self.enabled and self.mask_rate == 0.0 and self.substitute_rate == 0.0:
            raise ValueError("mask_rate and substitute_rate are both 0: no noise to smooth with")
        return self


class TextHardeningConfig(_Strict):
    """A2T adversarial augmentation (Yoo and Qi, 2021).

    ``unknown_candidate`` also offers ``<unk>`` as a substitute for every word, which is what a
    character attack turns a word into for a word-level model. ``synonym_encoding`` gives the
    hardened model one code per cluster of candidate words (SEM, Wang et al. 2021; clusters of
    at most ``encoding_max_cluster`` words, see :mod:`bastion.text.synonym_encoding`).
    ``smoothing`` puts randomized smoothing on top (off by default, see
    :class:`TextSmoothingConfig`). ``typo_neighbours`` puts the vocabulary words one typo away
    from a word (:class:`bastion.text.TypoNeighbours`) first among its substitutes in A2T and in
    the smoothing noise; the attacks keep their own candidates.
    """

    method: Literal["a2t"] = "a2t"
    batch_share: float = Field(default=1.0, gt=0.0, le=1.0)
    max_share: float = Field(default=0.25, gt=0.0, le=1.0)
    weight: float = Field(default=1.0, gt=0.0)
    unknown_candidate: bool = True
    synonym_encoding: bool = False
    encoding_max_cluster: int = Field(default=64, ge=2)
    typo_neighbours: bool = False
    smoothing: TextSmoothingConfig = TextSmoothingConfig()


class TextSanitizerConfig(_Strict):
    """The sanitising guard layer (see :class:`bastion.text.Sanitizer`)."""

    nfkc: bool = True
    strip_invisible: bool = True
    confusables: bool = True
    repair_spelling: bool = True


class TextAttackConfig(_Strict):
    """Settings of the attacks.

    ``candidates`` picks the word-substitution source: the bundled synonym ``lexicon``, the
    ``embedding`` neighbours in the standard model's word embedding (cosine >= ``min_cosine``),
    or ``both``. The same source feeds the A2T augmentation. ``invisible_family`` picks the
    characters of the invisible-character attack (``all``: every family, see
    :class:`bastion.text.InvisibleCharAttack`); ``invisible_characters`` names exact characters
    instead (``["\\u200b"]``: the former default, zero-width spaces only).
    """

    candidates: Literal["lexicon", "embedding", "both"] = "both"
    min_cosine: float = Field(default=0.4, ge=-1.0, le=1.0)
    neighbours: int = Field(default=30, ge=1, le=200)
    max_share: float = Field(default=0.3, gt=0.0, le=1.0)
    ranking: Literal["delete", "gradient"] = "delete"
    char_max_share: float = Field(default=0.3, gt=0.0, le=1.0)
    invisible_max_share: float = Field(default=1.0, gt=0.0, le=1.0)
    invisible_family: InvisibleFamily = "all"
    invisible_characters: list[str] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _check(self) -> TextAttackConfig:
        if self.invisible_characters is not None and any(
            len(c) != 1 for c in self.invisible_characters
        ):
            raise ValueError("invisible_characters: expected single characters")
        return self


def attack_settings(attack: TextAttackConfig, name: str) -> dict[str, Any]:
    """The registered settings of the text attack ``name`` that the ``attack:`` section sets
    (what the scorecard's knowledge and the built attack derive from); an attack the section
    does not describe gets none (its defaults)."""
    word = {"ranking": attack.ranking, "max_share": attack.max_share}
    chars = {"max_share": attack.char_max_share}
    invisible = {
        "family": attack.invisible_family,
        "characters": attack.invisible_characters,
        "max_share": attack.invisible_max_share,
    }
    by_name: dict[str, dict[str, Any]] = {
        "word_substitution": word,
        "deepwordbug": chars,
        "homoglyph": chars,
        "invisible": invisible,
        "combined": {**word, "char_max_share": attack.char_max_share},
    }
    return dict(by_name.get(name, {}))


class TextFileConfig(_Strict):
    """A team's own text file (``dataset: csv`` or ``jsonl``; rules in :mod:`bastion.text.files`).

    ``path`` is absolute or relative to the config file. ``labels`` declares the class names in
    class-index order; a row with another label is an error. Without it the classes are the
    distinct labels found, sorted. ``delimiter`` applies to CSV only.
    """

    path: str = Field(min_length=1)
    text_column: str = Field(default="text", min_length=1)
    label_column: str = Field(default="label", min_length=1)
    labels: list[str] | None = Field(default=None, min_length=2)
    delimiter: str = Field(default=",", min_length=1, max_length=1)

    @model_validator(mode="after")
    def _check(self) -> TextFileConfig:
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError("labels: expected distinct names")
        if self.text_column == self.label_column:
            raise ValueError("text_column and label_column: expected two different columns")
        return self


class TextTransformerConfig(_Strict):
    """A pretrained transformer fine-tuned as the text classifier (instead of ``model``,
    ``vocab`` and ``training``; see :mod:`bastion.text.transformer_experiment`).

    ``path`` is a local Hugging Face directory (config.json, model.safetensors, tokenizer), read
    offline; ``~`` is expanded, a relative path is taken from the working directory. Texts are
    truncated at ``max_length`` tokens. ``max_train`` / ``max_val`` / ``max_test`` cap the
    training, validation and clean-accuracy test texts (the first of the seeded split order;
    ``None``: all). A2T uses the
    ``hardening`` section's ``batch_share``, ``max_share`` and ``weight``; its candidates are
    the encoder's whole-word embedding neighbours (``neighbours`` per word, cosine >=
    ``a2t_min_cosine``). ``sentence_min_cosine`` is the word attack's sentence-similarity
    constraint (mean-pooled embeddings of the pretrained encoder; ``None``: off).
    """

    path: str = Field(min_length=1)
    max_length: int = Field(default=64, ge=8, le=512)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    epochs: int = Field(default=2, ge=1, le=100)
    batch_size: int = Field(default=32, ge=1)
    accumulation: int = Field(default=1, ge=1)
    lr: float = Field(default=5e-5, gt=0.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    warmup_share: float = Field(default=0.1, ge=0.0, lt=1.0)
    bucketing: bool = True
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    max_train: int | None = Field(default=None, ge=2)
    max_val: int | None = Field(default=None, ge=1)
    max_test: int | None = Field(default=None, ge=1)
    neighbours: int = Field(default=16, ge=1, le=200)
    a2t_min_cosine: float = Field(default=0.5, ge=-1.0, le=1.0)
    sentence_min_cosine: float | None = Field(default=0.8, ge=-1.0, le=1.0)


class TextConfig(_Strict):
    """A complete text run: data, model, training, hardening, guard and attacks.

    ``dataset`` is a registered set (``movie_review``, ``sms_spam``; files from ``--data-dir``)
    or ``csv`` / ``jsonl``, read from the ``file`` section (:class:`TextFileConfig`).

    ``n_attack`` test examples (the first of the seeded test order) are attacked; with
    ``attack_classes`` only examples of those classes are (e.g. ``["spam"]`` for a spam filter,
    where only spam has a reason to evade).
    """

    dataset: Literal["movie_review", "sms_spam", "csv", "jsonl"]
    file: TextFileConfig | None = None
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    vocab: TextVocabConfig = TextVocabConfig()
    model: TextModelConfig = TextModelConfig()
    training: TextTrainingConfig = TextTrainingConfig()
    hardening: TextHardeningConfig = TextHardeningConfig()
    sanitizer: TextSanitizerConfig = TextSanitizerConfig()
    attack: TextAttackConfig = TextAttackConfig()
    attacks: list[TextAttackName] = Field(default_factory=lambda: list(ALL_TEXT_ATTACKS))
    attack_classes: list[str] | None = None
    n_attack: int = Field(default=300, ge=1)
    transformer: TextTransformerConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> TextConfig:
        if self.transformer is not None:
            given = sorted(self.model_fields_set & {"model", "vocab", "training"})
            if given:
                raise ValueError(f"{', '.join(given)}: not used with a transformer (remove it)")
            h = self.hardening
            if h.synonym_encoding or h.typo_neighbours:
                raise ValueError(
                    "hardening: synonym_encoding and typo_neighbours are not available for a "
                    "transformer"
                )
            sm = h.smoothing
            if sm.enabled and (sm.train_noise or sm.train_epochs is not None):
                raise ValueError(
                    "hardening.smoothing.train_noise, train_epochs: not available for a "
                    "transformer (it is not trained on noisy copies: set train_noise: false and "
                    "leave train_epochs out)"
                )
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must be below 1")
        if self.model.arch == "word_cnn" and max(self.model.filter_sizes) > self.vocab.max_length:
            raise ValueError("model.filter_sizes: widest filter exceeds vocab.max_length")
        if any(k < 1 for k in self.model.filter_sizes):
            raise ValueError("model.filter_sizes: expected positive widths")
        if len(set(self.attacks)) != len(self.attacks):
            raise ValueError("attacks: expected each attack at most once")
        if self.dataset in ("csv", "jsonl") and self.file is None:
            raise ValueError(f"file: expected a file section (path, columns) for {self.dataset}")
        if self.dataset not in ("csv", "jsonl") and self.file is not None:
            raise ValueError(f"file: only for dataset csv or jsonl, not {self.dataset}")
        return self


def parse_text_config(data: Mapping[str, Any]) -> TextConfig:
    """Validate a mapping (the parsed ``text:`` section); raises :class:`ConfigError`."""
    try:
        return TextConfig.model_validate(dict(data))
    except ValidationError as e:
        lines = []
        for err in e.errors():
            where = ".".join(str(p) for p in err["loc"]) or "text"
            lines.append(f"text.{where}: {err['msg']}")
        raise ConfigError("; ".join(lines)) from e
