"""The parts of a text experiment that every text model shares: the attacks a config names,
the attacked subset, the adversarial examples kept for the report, the headline summary and
the data set a config names. :mod:`bastion.text.experiment` (word CNN) and
:mod:`bastion.text.transformer_experiment` (pretrained transformer) both build on them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bastion.attacks.registry import settings_model
from bastion.errors import ConfigError
from bastion.text.attack_base import TextAttack, TextAttackResult, build_text_attack
from bastion.text.candidates import (
    CandidateSource,
    EmbeddingNeighbours,
    SynonymLexicon,
    UnionCandidates,
)
from bastion.text.config import TextConfig, attack_settings
from bastion.text.evaluation import reduction
from bastion.text.files import load_text_file
from bastion.text.loaders import TextDataset, TextSplit, load_text_dataset
from bastion.text.models import TextModel
from bastion.text.vocab import Vocabulary
from bastion.text.word_attacks import AttackChain

Progress = Callable[[dict[str, Any]], None]

#: Adversarial examples kept per attack in the scorecard (for the report).
EXAMPLES_PER_ATTACK = 3


def _emit(progress: Progress | None, event: dict[str, Any]) -> None:
    if progress is not None:
        progress(event)


def candidate_source(config: TextConfig, vocab: Vocabulary, model: TextModel) -> CandidateSource:
    """Word-substitution candidates named by ``config.attack.candidates``."""
    a = config.attack
    lexicon = SynonymLexicon()
    if a.candidates == "lexicon":
        return lexicon
    neighbours = EmbeddingNeighbours(
        model.embedding.weight, vocab, k=a.neighbours, min_cosine=a.min_cosine
    )
    if a.candidates == "embedding":
        return neighbours
    return UnionCandidates(lexicon, neighbours)


def build_attacks(
    config: TextConfig,
    source: CandidateSource,
    *,
    constraint: Callable[[str, list[str]], Sequence[bool]] | None = None,
) -> dict[str, TextAttack | AttackChain]:
    """The attacks listed in ``config.attacks``, built fresh from the registry's text channel
    with the settings of the ``attack:`` section (:func:`bastion.text.config.attack_settings`);
    ``source`` and ``constraint`` go to the attacks that take them.

    ``combined`` is the worst case of word substitution, then DeepWordBug typos, then
    homoglyphs (character and word attacks together).
    """
    objects = {"candidates": source, "constraint": constraint}
    out: dict[str, TextAttack | AttackChain] = {}
    for i, name in enumerate(config.attacks):
        fields = settings_model(name, channel="text").model_fields
        params = {**attack_settings(config.attack, name)}
        params.update({k: v for k, v in objects.items() if k in fields})
        attack = build_text_attack(name, params, where=f"text.attacks[{i}]")
        assert isinstance(attack, TextAttack | AttackChain)
        out[name] = attack
    return out


def _attack_set(config: TextConfig, data: TextDataset) -> TextSplit:
    test = data.test
    if config.attack_classes is not None:
        unknown = [c for c in config.attack_classes if c not in data.classes]
        if unknown:
            raise ConfigError(
                f"text.attack_classes: {unknown} not among the classes {list(data.classes)}"
            )
        keep = {data.classes.index(c) for c in config.attack_classes}
        idx = [i for i, y in enumerate(test.labels) if y in keep]
        test = TextSplit(tuple(test.texts[i] for i in idx), tuple(test.labels[i] for i in idx))
    return test.subset(config.n_attack)


def _examples(result: TextAttackResult) -> list[dict[str, str]]:
    out = []
    for i in range(len(result)):
        if result.success[i]:
            out.append({"original": result.original[i], "adversarial": result.adversarial[i]})
        if len(out) == EXAMPLES_PER_ATTACK:
            break
    return out


def headline_summary(models_out: dict[str, Any], attacks_out: dict[str, Any]) -> dict[str, Any]:
    """The scorecard's headline figures: clean accuracy of the standard model and of the
    hardened one behind the sanitiser, their difference, and per attack its success on both
    and the relative reduction."""
    summary: dict[str, Any] = {
        "clean_accuracy_standard": models_out["standard"]["clean_accuracy"],
        "clean_accuracy_hardened_guarded": models_out["hardened"]["clean_accuracy_sanitized"],
    }
    summary["clean_accuracy_cost"] = (
        summary["clean_accuracy_standard"] - summary["clean_accuracy_hardened_guarded"]
    )
    for attack_name, per_target in attacks_out.items():
        before = per_target["standard"]["success_rate"]
        after = per_target["hardened+sanitizer"]["success_rate"]
        summary[f"{attack_name}_success_standard"] = before
        summary[f"{attack_name}_success_hardened_guarded"] = after
        summary[f"{attack_name}_success_reduction"] = reduction(before, after)
    return summary


def load_config_data(config: TextConfig, data_dir: Path, *, seed: int) -> TextDataset:
    """The data set a text config names, split with ``seed`` (a registered set from the folder
    ``data_dir``, or the ``csv`` / ``jsonl`` file ``data_dir``)."""
    if config.file is not None:
        f = config.file
        return load_text_file(
            data_dir,
            format="csv" if config.dataset == "csv" else "jsonl",
            text_column=f.text_column,
            label_column=f.label_column,
            labels=f.labels,
            delimiter=f.delimiter,
            val_fraction=config.val_fraction,
            test_fraction=config.test_fraction,
            seed=seed,
        )
    return load_text_dataset(
        config.dataset,
        data_dir,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=seed,
    )
