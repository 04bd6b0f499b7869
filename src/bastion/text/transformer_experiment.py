"""The text pipeline on a pretrained transformer (``text.transformer`` in a config).

Like :func:`bastion.text.run_text_experiment` for the word models, and returning the same
scorecard section: a standard model is fine-tuned from the pretrained encoder (mean pooling and
a linear head, :class:`~bastion.text.transformer.PooledEncoderClassifier`), a hardened one from
the same starting weights with A2T (Yoo and Qi 2021; :class:`WordPieceA2T`), and every attack
runs on four targets: ``standard``, ``standard+sanitizer``, ``hardened`` and
``hardened+sanitizer``. The evaluation is adaptive in the sense of the word channel: each
target is attacked directly, through its sanitiser when it has one, with the gradient ranking
through the target's own embedding when ``attack.ranking: gradient``.

Word-substitution candidates (``attack.candidates``): the bundled synonym ``lexicon``, the
``embedding`` neighbours of whole-word tokens in the fine-tuned standard model's input embedding
(:class:`~bastion.text.transformer.WordPieceNeighbours`), or ``both``; with
``transformer.sentence_min_cosine`` every substitution must also keep the mean-pooled sentence
embedding of the pretrained encoder within that cosine of the original (TextFooler's Universal
Sentence Encoder check). How often substitutions keep meaning is reported under
``attacks.word_substitution.meaning``: the share of substituted words that are synonyms in the
bundled lexicon, and the mean sentence cosine of successful adversarial texts to their originals.

Seeds: split ``seed``; head initialisation, batch order and dropout ``seed`` (both models start
from the same weights); attacks ``seed + 1``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bastion.text.attack_base import TextAttackResult
from bastion.text.candidates import CandidateSource, SynonymLexicon, UnionCandidates
from bastion.text.config import TextConfig, TextTransformerConfig
from bastion.text.evaluation import clean_accuracy
from bastion.text.experiment_parts import (
    _attack_set,
    _emit,
    _examples,
    build_attacks,
    headline_summary,
)
from bastion.text.loaders import TextDataset
from bastion.text.sanitize import Sanitizer
from bastion.text.smoothed_targets import attack_target, smooth_hardened
from bastion.text.transformer import (
    PooledEncoderClassifier,
    SentenceConstraint,
    SentenceEncoder,
    TransformerTextClassifier,
    WordPieceNeighbours,
    load_pretrained_encoder,
    save_transformer_model,
)
from bastion.text.transformer_training import (
    TransformerTrainSettings,
    WordPieceA2T,
    train_transformer,
)
from bastion.text.vocab import Vocabulary
from bastion.text.words import split_words

Progress = Callable[[dict[str, Any]], None]


def train_settings(tr: TextTransformerConfig, seed: int) -> TransformerTrainSettings:
    """The trainer's settings from the ``text.transformer`` section."""
    return TransformerTrainSettings(
        epochs=tr.epochs,
        batch_size=tr.batch_size,
        accumulation=tr.accumulation,
        lr=tr.lr,
        weight_decay=tr.weight_decay,
        warmup_share=tr.warmup_share,
        bucketing=tr.bucketing,
        precision=tr.precision,
        seed=seed,
    )


def meaning_report(
    result: TextAttackResult, lexicon: SynonymLexicon, encoder: SentenceEncoder
) -> dict[str, Any]:
    """How well the successful substitutions of ``result`` keep meaning.

    ``lexicon_synonym_share``: of the words replaced (compared position by position, lower
    case, punctuation kept), the share the bundled lexicon lists as synonyms of the original.
    ``mean_sentence_cosine``: mean cosine of the mean-pooled sentence embeddings of each
    adversarial text and its original. ``None`` when nothing succeeded.
    """
    pairs: list[tuple[str, str]] = []
    sims: list[float] = []
    for i in range(len(result)):
        if not result.success[i]:
            continue
        before, after = split_words(result.original[i])[0], split_words(result.adversarial[i])[0]
        if len(before) == len(after):
            pairs += [(a.lower(), b.lower()) for a, b in zip(before, after, strict=True) if a != b]
        sims.append(float(encoder.similarity(result.original[i], [result.adversarial[i]])[0]))
    synonyms = sum(b in lexicon(a) for a, b in pairs)
    return {
        "substituted_words": len(pairs),
        "lexicon_synonym_share": synonyms / len(pairs) if pairs else None,
        "mean_sentence_cosine": sum(sims) / len(sims) if sims else None,
    }


def run_transformer_experiment(
    config: TextConfig,
    data: TextDataset,
    out_dir: Path,
    *,
    seed: int,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the transformer text pipeline (module docstring) on loaded ``data``.

    Models go to ``out_dir/models/text-standard/`` and ``text-hardened/`` (directories:
    encoder, tokenizer, head, sidecar; see :func:`save_transformer_model`). Returns the text
    scorecard section (the keys of :func:`bastion.text.run_text_experiment`), with
    ``transformer`` describing the encoder, the truncation of test texts, and the training
    precision and time of each model.
    """
    tr = config.transformer
    assert tr is not None  # the caller dispatches on it
    started = time.perf_counter()
    encoder, tok = load_pretrained_encoder(tr.path)
    train = data.train.subset(tr.max_train) if tr.max_train is not None else data.train
    val = data.val.subset(tr.max_val) if tr.max_val is not None else data.val

    def fresh() -> PooledEncoderClassifier:
        return PooledEncoderClassifier(
            copy.deepcopy(encoder),
            classes=data.classes,
            max_length=tr.max_length,
            pad_id=int(tok.pad_token_id),
            dropout=tr.dropout,
            generator=torch.Generator().manual_seed(seed),
        )

    standard, hardened = fresh(), fresh()
    plain = TransformerTextClassifier(standard, tok)
    rows = plain.token_ids(train.texts)
    val_pair = (plain.token_ids(val.texts), val.labels) if len(val) else None
    settings = train_settings(tr, seed)

    def callback(name: str) -> Callable[[dict[str, Any]], None]:
        return lambda event: _emit(progress, {"stage": "train", "model": name, **event})

    history_std = train_transformer(
        standard, rows, train.labels, settings, val=val_pair, callback=callback("standard")
    )
    h = config.hardening
    pretrained = WordPieceNeighbours(
        encoder.get_input_embeddings().weight,  # type: ignore[operator]
        tok,
        k=tr.neighbours,
        min_cosine=tr.a2t_min_cosine,
    )
    continuation = torch.tensor([t.startswith("##") for t in pretrained.tokens])
    present = torch.tensor(sorted({i for r in rows for i in r}), dtype=torch.int64)
    augmenter = WordPieceA2T(
        pretrained,
        continuation,
        batch_share=h.batch_share,
        max_share=h.max_share,
        weight=h.weight,
        present=present,
    )
    history_hard = train_transformer(
        hardened,
        rows,
        train.labels,
        settings,
        val=val_pair,
        augmenter=augmenter,
        callback=callback("hardened"),
    )

    s = config.sanitizer
    vocab = Vocabulary.build(data.train.texts, max_length=tr.max_length)
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
        "base_model": Path(tr.path).name,
    }
    paths: dict[str, str] = {}
    for name, model, history in (
        ("standard", standard, history_std),
        ("hardened", hardened, history_hard),
    ):
        meta = {**provenance, "role": name, "training": history}
        out = save_transformer_model(
            model, tok, models_dir / f"text-{name}", vocabulary=vocab, metadata=meta
        )
        paths[name] = str(out)

    targets = {
        "standard": TransformerTextClassifier(standard, tok),
        "standard+sanitizer": TransformerTextClassifier(standard, tok, sanitizer=sanitizer),
        "hardened": TransformerTextClassifier(hardened, tok),
        "hardened+sanitizer": TransformerTextClassifier(hardened, tok, sanitizer=sanitizer),
    }
    sm = h.smoothing  # the hardened targets smoothed on word pieces (smoothed_targets)
    unsmoothed = targets["hardened"]
    targets, twins = smooth_hardened(targets, sm, table=augmenter.table)
    test = data.test.subset(tr.max_test) if tr.max_test is not None else data.test
    models_out: dict[str, Any] = {}
    for name, history in (("standard", history_std), ("hardened", history_hard)):
        models_out[name] = {
            "clean_accuracy": clean_accuracy(targets[name], test.texts, test.labels),
            "clean_accuracy_sanitized": clean_accuracy(
                targets[f"{name}+sanitizer"], test.texts, test.labels
            ),
            "path": paths[name],
            "training": history,
        }
    if sm.enabled:
        acc = clean_accuracy(unsmoothed, test.texts, test.labels)
        models_out["hardened"]["clean_accuracy_unsmoothed"] = acc

    a = config.attack
    lexicon = SynonymLexicon()
    source: CandidateSource = lexicon
    if a.candidates != "lexicon":
        neighbours = WordPieceNeighbours(
            standard.embedding.weight, tok, k=a.neighbours, min_cosine=a.min_cosine
        )
        source = neighbours if a.candidates == "embedding" else UnionCandidates(lexicon, neighbours)
    sentence = SentenceEncoder(encoder, tok, max_length=tr.max_length)
    constraint = (
        SentenceConstraint(sentence, min_cosine=tr.sentence_min_cosine)
        if tr.sentence_min_cosine is not None
        else None
    )
    attack_set = _attack_set(config, data)
    attacks_out: dict[str, Any] = {}
    for attack_name, attack in build_attacks(config, source, constraint=constraint).items():
        per_target: dict[str, Any] = {"params": attack.params()}
        for target_name, clf in targets.items():
            _emit(progress, {"stage": "attack", "attack": attack_name, "target": target_name})
            t0 = time.perf_counter()
            twin = twins.get(target_name)
            texts, labels = attack_set.texts, attack_set.labels
            result, metrics = attack_target(attack, clf, twin, texts, labels, seed=seed + 1)
            metrics["seconds"] = round(time.perf_counter() - t0, 3)
            if target_name == "standard":
                metrics["examples"] = _examples(result)
                if attack_name == "word_substitution":
                    metrics["meaning"] = meaning_report(result, lexicon, sentence)
            per_target[target_name] = metrics
        attacks_out[attack_name] = per_target

    summary = headline_summary(models_out, attacks_out)
    counts = targets["standard"].token_counts(test.texts)
    elapsed = time.perf_counter() - started
    _emit(progress, {"stage": "done", "elapsed_s": elapsed})
    return {
        "kind": "text",
        "seed": seed,
        "dataset": data.summary(),
        "vocab_size": len(vocab),
        "spec": {
            "arch": "transformer",
            "base_model": Path(tr.path).name,
            "max_length": tr.max_length,
            "pooling": "mean",
            "classes": list(data.classes),
        },
        "transformer": {
            "n_train": len(train),
            "n_val": len(val),
            "n_test": len(test),
            "max_length": tr.max_length,
            "truncated_test_share": sum(c > tr.max_length for c in counts) / max(1, len(counts)),
            "a2t_table_coverage": round(augmenter.table.coverage, 4),
            "sentence_constraint": {
                "min_cosine": constraint.min_cosine,
                "checked": constraint.checked,
                "rejected": constraint.rejected,
            }
            if constraint is not None
            else None,
        },
        "candidates": {
            "source": a.candidates,
            "table_coverage": augmenter.table.coverage,
            "attacker_embedding": "standard model (whole-word tokens)",
            "defence_typo_neighbours": False,
        },
        "synonym_encoding": None,
        "smoothing": sm.model_dump(mode="json") if sm.enabled else None,
        "sanitizer": sanitizer.params(),
        "n_attacked": len(attack_set),
        "models": models_out,
        "attacks": attacks_out,
        "summary": summary,
        "elapsed_s": round(elapsed, 3),
    }
