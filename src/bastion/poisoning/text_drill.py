"""The trigger-word drill on a text data set: poison, train, scan, quarantine, retrain, verify.

:func:`text_backdoor_drill` plants a trigger word (:func:`.text_backdoor.trigger_word_poison`)
in the training split, builds the vocabulary from the poisoned split (as a victim would),
trains a word CNN (Kim 2014, :class:`bastion.text.WordCNN`) on it, measures clean accuracy and
attack success, scans the training split (trigger-token scan, and activation clustering and
spectral signatures on the model's penultimate features), retrains (same seed, vocabulary rebuilt
from what is kept) on the examples no scan in ``quarantine_by`` flagged, and measures again.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from bastion.poisoning.features import penultimate_features
from bastion.poisoning.scans import activation_clustering, detection_metrics, spectral_signatures
from bastion.poisoning.text_backdoor import (
    DEFAULT_TRIGGER,
    TextPoisonedSet,
    text_attack_success,
    trigger_token_scan,
    trigger_word_poison,
)
from bastion.text.loaders import TextDataset
from bastion.text.models import TextModel, TextModelSpec, build_text_model
from bastion.text.training import TextTrainSettings, accuracy_of, train_text_model
from bastion.text.vocab import Vocabulary

TEXT_SCANS = ("trigger-token", "activation-clustering", "spectral-signatures")


@dataclass(frozen=True)
class TextDrillSettings:
    """Settings of :func:`text_backdoor_drill` (model and training as the text channel's
    defaults: word CNN, 64 filters of widths 3-5, 40 tokens, Adam 2e-3, batch 50)."""

    rate: float = 0.01
    target: int = 0
    trigger: str = DEFAULT_TRIGGER
    epochs: int = 6
    max_length: int = 40
    quarantine_by: tuple[str, ...] = ("trigger-token",)
    spectral_eps: float = 0.05
    seed: int = 0


def _train(
    spec: TextModelSpec,
    ids: torch.Tensor,
    y: torch.Tensor,
    val: tuple[torch.Tensor, torch.Tensor],
    settings: TextDrillSettings,
) -> TextModel:
    model = build_text_model(spec, generator=torch.Generator().manual_seed(settings.seed))
    train_text_model(
        model,
        ids,
        y,
        TextTrainSettings(epochs=settings.epochs, batch_size=50, lr=2e-3, seed=settings.seed),
        val=val,
    )
    return model


def _measure(
    model: TextModel,
    vocab: Vocabulary,
    test_texts: Sequence[str],
    test_y: torch.Tensor,
    settings: TextDrillSettings,
) -> dict[str, float]:
    success = text_attack_success(
        model,
        vocab,
        test_texts,
        test_y,
        settings.trigger,
        target=settings.target,
        seed=settings.seed + 1,
    )
    return {
        "clean_accuracy": round(accuracy_of(model, vocab.encode(test_texts), test_y), 4),
        **success,
    }


def text_backdoor_drill(
    data: TextDataset,
    settings: TextDrillSettings,
    *,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the drill on ``data`` (its train split is poisoned; val picks the best epoch; test
    measures). Returns a JSON-ready dict: the attack record (without indices), the undefended
    and retrained clean accuracy and attack success, and per scan its detection metrics
    (precision, recall, F1, share of clean data flagged) and summary.
    """
    if settings.quarantine_by and not set(settings.quarantine_by) <= set(TEXT_SCANS):
        raise ValueError(f"quarantine_by: expected names from {TEXT_SCANS}")
    say = log or (lambda _m: None)
    t0 = time.perf_counter()
    train_y = torch.tensor(data.train.labels, dtype=torch.int64)
    p: TextPoisonedSet = trigger_word_poison(
        data.train.texts,
        train_y,
        rate=settings.rate,
        num_classes=data.num_classes,
        target=settings.target,
        trigger=settings.trigger,
        seed=settings.seed,
    )
    vocab = Vocabulary.build(p.texts, max_length=settings.max_length, max_size=20000)
    spec = TextModelSpec(
        arch="word_cnn",
        vocab_size=len(vocab),
        num_classes=data.num_classes,
        max_length=settings.max_length,
        classes=data.classes,
    )
    ids = vocab.encode(p.texts)
    val = (vocab.encode(data.val.texts), torch.tensor(data.val.labels, dtype=torch.int64))
    test_y = torch.tensor(data.test.labels, dtype=torch.int64)
    say(f"training the word CNN on {len(ids)} texts, {int(p.poisoned.sum())} poisoned")
    victim = _train(spec, ids, p.labels, val, settings)
    undefended = _measure(victim, vocab, data.test.texts, test_y, settings)
    say(f"undefended: {undefended}")
    scans: dict[str, Any] = {}
    flags: dict[str, torch.Tensor] = {}
    t = time.perf_counter()
    token = trigger_token_scan(victim, ids, p.labels, vocab)
    flags["trigger-token"] = token.flagged
    scans["trigger-token"] = {
        **detection_metrics(token.flagged, p.poisoned),
        "seconds": round(time.perf_counter() - t, 2),
        "flagged_tokens": token.flagged_names,
        "top_candidates": token.candidates[:5],
    }
    feats = penultimate_features(victim, ids)
    t = time.perf_counter()
    ac = activation_clustering(feats, p.labels, seed=settings.seed)
    flags["activation-clustering"] = ac.flagged
    scans["activation-clustering"] = {
        **detection_metrics(ac.flagged, p.poisoned),
        "seconds": round(time.perf_counter() - t, 2),
        "classes": ac.summary()["classes"],
    }
    t = time.perf_counter()
    ss = spectral_signatures(feats, p.labels, eps=settings.spectral_eps, seed=settings.seed)
    flags["spectral-signatures"] = ss.flagged
    scans["spectral-signatures"] = {
        **detection_metrics(ss.flagged, p.poisoned),
        "seconds": round(time.perf_counter() - t, 2),
        "eps": settings.spectral_eps,
    }
    say(f"scans: { {k: (v['recall'], v['clean_flagged_rate']) for k, v in scans.items()} }")
    removed = torch.zeros(len(ids), dtype=torch.bool)
    for name in settings.quarantine_by:
        removed |= flags[name]
    kept = torch.nonzero(~removed).flatten()
    say(f"retraining on {len(kept)} kept texts")
    # the defender rebuilds the vocabulary from what it keeps, as it would on a clean drop
    kept_texts = [p.texts[i] for i in kept.tolist()]
    vocab_kept = Vocabulary.build(kept_texts, max_length=settings.max_length, max_size=20000)
    spec_kept = dataclasses.replace(spec, vocab_size=len(vocab_kept))
    val_kept = (vocab_kept.encode(data.val.texts), val[1])
    defended = _train(spec_kept, vocab_kept.encode(kept_texts), p.labels[kept], val_kept, settings)
    retrained = _measure(defended, vocab_kept, data.test.texts, test_y, settings)
    say(f"retrained: {retrained}")
    record = p.record()
    record.pop("indices")
    return {
        "attack": record,
        "train_examples": len(ids),
        "test_examples": len(test_y),
        "trigger_in_clean_train": sum(
            settings.trigger in t.lower().split() for t in data.train.texts
        ),
        "undefended": undefended,
        "scans": scans,
        "quarantine_by": list(settings.quarantine_by),
        "quarantined": {
            **detection_metrics(removed, p.poisoned),
        },
        "retrained": {"kept": len(kept), **retrained},
        "seconds": round(time.perf_counter() - t0, 1),
    }
