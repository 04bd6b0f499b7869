"""The text pipeline: train a standard and an A2T-hardened model, attack both with and without
the sanitising guard, save the models and return a JSON-ready scorecard section.

Seeds: the split uses ``seed``; model initialisation ``seed`` (the hardened model starts from
the same weights as the standard one); batch order ``seed``; attacks ``seed + 1``.

With ``hardening.smoothing.enabled`` the hardened model is (optionally) trained on noisy copies
and the ``hardened`` and ``hardened+sanitizer`` targets are
:class:`~bastion.text.smoothing.SmoothedTextClassifier` s: every attack and the clean accuracy
of the hardened model go through the whole defended pipeline (sanitiser, then smoothing).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bastion.data.core import check_seed
from bastion.text.candidates import (
    TypoNeighbours,
    UnionCandidates,
)
from bastion.text.classifier import TextClassifier
from bastion.text.config import TextConfig
from bastion.text.evaluation import attack_metrics, clean_accuracy
from bastion.text.experiment_parts import (
    Progress,
    _attack_set,
    _emit,
    _examples,
    build_attacks,
    candidate_source,
    headline_summary,
    load_config_data,
)
from bastion.text.io import save_text_model
from bastion.text.models import TextModelSpec, build_text_model
from bastion.text.sanitize import Sanitizer
from bastion.text.smoothing import Aggregate, SmoothedTextClassifier, TokenNoise
from bastion.text.surrogate import SurrogateAttack
from bastion.text.synonym_encoding import synonym_codes
from bastion.text.training import (
    A2TAugmenter,
    SubstitutionTable,
    TextTrainSettings,
    accuracy_of,
    train_text_model,
)
from bastion.text.vocab import Vocabulary
from bastion.text.word_attacks import AttackChain


def run_text_experiment(
    config: TextConfig,
    data_dir: Path,
    out_dir: Path,
    *,
    seed: int,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the text pipeline; see the module docstring.

    Args:
        config: the validated ``text:`` section.
        data_dir: folder holding the data set files (``SMSSpamCollection`` or
            ``rt-polarity.pos`` / ``rt-polarity.neg``); for ``csv`` / ``jsonl`` the file itself.
        out_dir: run folder; models go to ``out_dir/models/text-standard.*`` and
            ``text-hardened.*`` (safetensors + JSON sidecar with vocabulary).
        seed: seed of split, initialisation, batch order and attacks.
        progress: optional callback receiving dict events: ``{"stage": "train", "model": name,
            **trainer event}``, ``{"stage": "attack", "attack": name, "target": name}`` and
            ``{"stage": "done", "elapsed_s": ...}``.

    Returns:
        A JSON-ready dict: data set summary, vocabulary size, per model its clean accuracy
        (with and without sanitiser) and training history, per attack and target
        (``standard``, ``standard+sanitizer``, ``hardened``, ``hardened+sanitizer``) the
        metrics of :func:`bastion.text.attack_metrics`, and a ``summary`` with the headline
        figures (success of the combined attack before and after hardening, clean accuracy
        cost).
    """
    check_seed(seed)
    started = time.perf_counter()
    data = load_config_data(config, data_dir, seed=seed)
    if config.transformer is not None:
        from bastion.text.transformer_experiment import run_transformer_experiment

        return run_transformer_experiment(config, data, out_dir, seed=seed, progress=progress)
    v = config.vocab
    vocab = Vocabulary.build(
        data.train.texts,
        max_length=v.max_length,
        min_count=v.min_count,
        max_size=v.max_size,
        lower=v.lower,
    )
    m = config.model
    spec = TextModelSpec(
        arch=m.arch,
        vocab_size=len(vocab),
        num_classes=data.num_classes,
        max_length=v.max_length,
        embed_dim=m.embed_dim,
        dropout=m.dropout,
        filter_sizes=tuple(m.filter_sizes),
        num_filters=m.num_filters,
        hidden_size=m.hidden_size,
        ngram=m.ngram,
        hash_buckets=m.hash_buckets,
        classes=data.classes,
    )
    t = config.training
    settings = TextTrainSettings(
        epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, weight_decay=t.weight_decay, seed=seed
    )
    train_ids, train_y = vocab.encode(data.train.texts), torch.tensor(data.train.labels)
    val = (vocab.encode(data.val.texts), torch.tensor(data.val.labels)) if len(data.val) else None
    test_ids, test_y = vocab.encode(data.test.texts), torch.tensor(data.test.labels)

    def callback(name: str) -> Callable[[dict[str, Any]], None]:
        return lambda event: _emit(progress, {"stage": "train", "model": name, **event})

    h = config.hardening
    standard = build_text_model(spec, generator=torch.Generator().manual_seed(seed))
    hardened = build_text_model(dataclasses.replace(spec, synonym_codes=h.synonym_encoding))
    initial = standard.state_dict()
    if hardened.codes is not None:  # identity codes until the candidates are known
        initial["codes"] = hardened.codes.clone()
    hardened.load_state_dict(initial)
    history_std = train_text_model(
        standard, train_ids, train_y, settings, val=val, callback=callback("standard")
    )
    source = candidate_source(config, vocab, standard)
    encoding: dict[str, Any] | None = None
    if h.synonym_encoding:
        codes = synonym_codes(vocab, source, max_cluster=h.encoding_max_cluster)
        hardened.set_codes(codes.codes)
        encoding = {"method": "sem", "max_cluster": h.encoding_max_cluster, **codes.summary()}
    # the defence's substitutes: the attack's candidates, after the words one typo away if asked
    defence_source = UnionCandidates(TypoNeighbours(vocab), source) if h.typo_neighbours else source
    table = SubstitutionTable(vocab, defence_source, unknown=h.unknown_candidate)
    augmenter = A2TAugmenter(
        table, batch_share=h.batch_share, max_share=h.max_share, weight=h.weight
    )
    sm = h.smoothing
    smooth_table: SubstitutionTable | None = None
    train_noise: TokenNoise | None = None
    settings_hard = settings
    if sm.enabled:
        if sm.train_epochs is not None:
            settings_hard = dataclasses.replace(settings, epochs=sm.train_epochs)
        if sm.substitute_rate > 0.0:
            smooth_table = SubstitutionTable(vocab, defence_source, k=sm.candidates_per_word)
        if sm.train_noise:
            train_noise = TokenNoise(
                mask_rate=sm.mask_rate, substitute_rate=sm.substitute_rate, table=smooth_table
            )
    history_hard = train_text_model(
        hardened,
        train_ids,
        train_y,
        settings_hard,
        val=val,
        augmenter=augmenter,
        noise=train_noise,
        callback=callback("hardened"),
    )

    s = config.sanitizer
    sanitizer = Sanitizer(
        nfkc=s.nfkc,
        strip_invisible=s.strip_invisible,
        confusables=s.confusables,
        vocabulary=vocab,
        repair_spelling=s.repair_spelling,
    )
    models_dir = Path(out_dir) / "models"
    provenance = {
        "dataset": data.name,
        "data_fingerprint": data.fingerprint,
        "seed": seed,
        "config": config.model_dump(mode="json"),
    }
    paths = {}
    for name, model, history in (
        ("standard", standard, history_std),
        ("hardened", hardened, history_hard),
    ):
        meta = {**provenance, "role": name, "training": history}
        paths[name] = str(save_text_model(model, vocab, models_dir / f"text-{name}", meta))

    def defended(clf: TextClassifier, aggregate: Aggregate = sm.aggregate) -> TextClassifier:
        if not sm.enabled:
            return clf
        return SmoothedTextClassifier(
            clf,
            samples=sm.samples,
            mask_rate=sm.mask_rate,
            substitute_rate=sm.substitute_rate,
            candidates=smooth_table,
            seed=sm.seed,
            aggregate=aggregate,
        )

    targets = {
        "standard": TextClassifier(standard, vocab),
        "standard+sanitizer": TextClassifier(standard, vocab, sanitizer=sanitizer),
        "hardened": defended(TextClassifier(hardened, vocab)),
        "hardened+sanitizer": defended(TextClassifier(hardened, vocab, sanitizer=sanitizer)),
    }
    models_out: dict[str, Any] = {}
    for name, model, history in (
        ("standard", standard, history_std),
        ("hardened", hardened, history_hard),
    ):
        smoothed = name == "hardened" and sm.enabled
        models_out[name] = {
            # the defended classifier on the whole test split: smoothed when smoothing is on
            "clean_accuracy": clean_accuracy(targets[name], data.test.texts, data.test.labels)
            if smoothed
            else accuracy_of(model, test_ids, test_y),
            "clean_accuracy_sanitized": clean_accuracy(
                targets[f"{name}+sanitizer"], data.test.texts, data.test.labels
            ),
            "path": paths[name],
            "training": history,
        }
        if smoothed:
            models_out[name]["clean_accuracy_unsmoothed"] = accuracy_of(model, test_ids, test_y)

    # adaptive evaluation of voting: also search on the mean-pooled twin, judge on the target
    twins: dict[str, TextClassifier] = {}
    if sm.enabled and sm.aggregate == "vote" and sm.adaptive:
        twins = {
            "hardened": defended(TextClassifier(hardened, vocab), "mean"),
            "hardened+sanitizer": defended(
                TextClassifier(hardened, vocab, sanitizer=sanitizer), "mean"
            ),
        }
    attack_set = _attack_set(config, data)
    attacks_out: dict[str, Any] = {}
    for attack_name, attack in build_attacks(config, source).items():
        per_target: dict[str, Any] = {"params": attack.params()}
        for target_name, clf in targets.items():
            _emit(progress, {"stage": "attack", "attack": attack_name, "target": target_name})
            t0 = time.perf_counter()
            twin = twins.get(target_name)
            adaptive = (
                AttackChain([attack, SurrogateAttack(attack, twin, label="mean-pooled twin")])
                if twin is not None
                else None
            )
            result = (adaptive or attack)(
                clf,
                attack_set.texts,
                attack_set.labels,
                generator=torch.Generator().manual_seed(seed + 1),
            )
            metrics = attack_metrics(result)
            if adaptive is not None:
                n_correct = metrics["n_correct"]
                direct = adaptive.last_breakdown[0]
                metrics["adaptive"] = "direct search, then search on the mean-pooled twin"
                metrics["direct_success_rate"] = direct / n_correct if n_correct else None
            metrics["seconds"] = round(time.perf_counter() - t0, 3)
            if target_name == "standard":
                metrics["examples"] = _examples(result)
            per_target[target_name] = metrics
        attacks_out[attack_name] = per_target

    summary = headline_summary(models_out, attacks_out)
    elapsed = time.perf_counter() - started
    _emit(progress, {"stage": "done", "elapsed_s": elapsed})
    return {
        "kind": "text",
        "seed": seed,
        "dataset": data.summary(),
        "vocab_size": len(vocab),
        "spec": spec.to_dict(),
        "candidates": {
            "source": config.attack.candidates,
            "table_coverage": table.coverage,
            "attacker_embedding": "standard model",
            "defence_typo_neighbours": h.typo_neighbours,
        },
        "synonym_encoding": encoding,
        "smoothing": {
            **sm.model_dump(mode="json"),
            "table_coverage": smooth_table.coverage if smooth_table is not None else None,
        }
        if sm.enabled
        else None,
        "sanitizer": sanitizer.params(),
        "n_attacked": len(attack_set),
        "models": models_out,
        "attacks": attacks_out,
        "summary": summary,
        "elapsed_s": round(elapsed, 3),
    }
