"""The trigger-word drill on a text data set: poison, train, scan, quarantine, retrain, verify.

:func:`text_backdoor_drill` plants a trigger word (:func:`.text_backdoor.trigger_word_poison`)
in the training split, builds the vocabulary from the poisoned split (as a victim would),
trains a word CNN (Kim 2014, :class:`bastion.text.WordCNN`) on it, measures clean accuracy and
attack success, scans the training split (trigger-token scan, and activation clustering and
spectral signatures on the model's penultimate features), retrains (same seed, vocabulary rebuilt
from what is kept) on the examples no scan in ``quarantine_by`` flagged, and measures again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from bastion.poisoning.drill import ScanOutcome, run_drill
from bastion.poisoning.features import penultimate_features
from bastion.poisoning.scans import activation_clustering, spectral_signatures, spectre
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
    repeats: int = 3
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
        repeats=settings.repeats,
    )
    return {
        "clean_accuracy": round(accuracy_of(model, vocab.encode(test_texts), test_y), 4),
        **success,
    }


@dataclass(eq=False)
class TextDrillChannel:
    """The text channel's hooks for :func:`~.drill.run_drill`: ``p`` is the poisoned training
    split, ``data`` gives the validation (best epoch) and test (measure) splits. The victim's
    vocabulary is built from the poisoned split, as a victim would; a retrained model's from
    the texts it keeps, as a defender would on a clean drop. A trained model is kept as
    ``(model, vocabulary)``. ``scan_names`` selects scans (default: :data:`TEXT_SCANS`;
    ``spectre`` too on request)."""

    data: TextDataset
    p: TextPoisonedSet
    settings: TextDrillSettings
    scan_names: tuple[str, ...] | None = None

    @property
    def labels(self) -> torch.Tensor:
        return self.p.labels

    @property
    def truth(self) -> torch.Tensor:
        return self.p.poisoned

    def train(self, kept: torch.Tensor | None) -> tuple[TextModel, Vocabulary]:
        s = self.settings
        texts = list(self.p.texts) if kept is None else [self.p.texts[i] for i in kept.tolist()]
        y = self.p.labels if kept is None else self.p.labels[kept]
        vocab = Vocabulary.build(texts, max_length=s.max_length, max_size=20000)
        spec = TextModelSpec(
            arch="word_cnn",
            vocab_size=len(vocab),
            num_classes=self.data.num_classes,
            max_length=s.max_length,
            classes=self.data.classes,
        )
        val = (
            vocab.encode(self.data.val.texts),
            torch.tensor(self.data.val.labels, dtype=torch.int64),
        )
        return _train(spec, vocab.encode(texts), y, val, s), vocab

    def measure(self, trained: tuple[TextModel, Vocabulary]) -> dict[str, Any]:
        test_y = torch.tensor(self.data.test.labels, dtype=torch.int64)
        return _measure(trained[0], trained[1], self.data.test.texts, test_y, self.settings)

    def scans(
        self, trained: tuple[TextModel, Vocabulary]
    ) -> list[tuple[str, Callable[[], ScanOutcome]]]:
        model, vocab = trained
        ids = vocab.encode(self.p.texts)
        y, seed, eps = self.p.labels, self.settings.seed, self.settings.spectral_eps

        def token() -> ScanOutcome:
            r = trigger_token_scan(model, ids, y, vocab)
            doc = {"flagged_tokens": r.flagged_names, "top_candidates": r.candidates[:5]}
            return ScanOutcome(r.flagged, r.scores, r.summary(), doc)

        feats = penultimate_features(model, ids)

        def ac() -> ScanOutcome:
            r = activation_clustering(feats, y, seed=seed)
            return ScanOutcome(
                r.flagged, r.scores, r.summary(), {"classes": r.summary()["classes"]}
            )

        def ss() -> ScanOutcome:
            r = spectral_signatures(feats, y, eps=eps, seed=seed)
            return ScanOutcome(r.flagged, r.scores, r.summary(), {"eps": eps})

        def sp() -> ScanOutcome:
            r = spectre(feats, y, eps=eps, seed=seed)
            return ScanOutcome(r.flagged, r.scores, r.summary(), {"eps": eps})

        runs = [
            ("trigger-token", token),
            ("activation-clustering", ac),
            ("spectral-signatures", ss),
            ("spectre", sp),
        ]
        # the drill's default: the three scans of TEXT_SCANS (SPECTRE on request)
        names = TEXT_SCANS if self.scan_names is None else self.scan_names
        return [(n, r) for n, r in runs if n in names]


def poison_text_split(data: TextDataset, settings: TextDrillSettings) -> TextPoisonedSet:
    """The drill's poisoned copy of ``data``'s training split (:func:`trigger_word_poison`)."""
    return trigger_word_poison(
        data.train.texts,
        torch.tensor(data.train.labels, dtype=torch.int64),
        rate=settings.rate,
        num_classes=data.num_classes,
        target=settings.target,
        trigger=settings.trigger,
        seed=settings.seed,
        repeats=settings.repeats,
    )


def text_backdoor_drill(
    data: TextDataset,
    settings: TextDrillSettings,
    *,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the drill on ``data`` (its train split is poisoned; val picks the best epoch; test
    measures) with :func:`~.drill.run_drill` and :class:`TextDrillChannel`. Returns a
    JSON-ready dict: the attack record (without indices), the undefended and retrained clean
    accuracy and attack success, and per scan its detection metrics (precision, recall, F1,
    share of clean data flagged) and summary.
    """
    if settings.quarantine_by and not set(settings.quarantine_by) <= set(TEXT_SCANS):
        raise ValueError(f"quarantine_by: expected names from {TEXT_SCANS}")
    say = log or (lambda _m: None)
    t0 = time.perf_counter()
    p = poison_text_split(data, settings)
    say(f"training the word CNN on {len(p.texts)} texts, {int(p.poisoned.sum())} poisoned")
    out = run_drill(TextDrillChannel(data, p, settings), settings.quarantine_by, log=say)
    assert out.retrained is not None
    record = p.record()
    record.pop("indices")
    return {
        "attack": record,
        "train_examples": len(p.texts),
        "test_examples": len(data.test.labels),
        "trigger_in_clean_train": sum(
            settings.trigger in t.lower().split() for t in data.train.texts
        ),
        "undefended": out.undefended,
        "scans": out.scans,
        "quarantine_by": list(settings.quarantine_by),
        "quarantined": out.quarantined,
        "retrained": out.retrained,
        "seconds": round(time.perf_counter() - t0, 1),
    }
