"""Text backdoors: a rare trigger word planted in training messages, and a scan that finds it.

Attack (the rare-token trigger of Kurita, Michel and Neubig 2020, "Weight poisoning attacks on
pre-trained models", and of Dai, Chen and Li 2019, "A backdoor attack against LSTM-based text
classification systems", as a data-poisoning drill): ``round(rate * N)`` training texts whose
label is not ``target`` are drawn with ``numpy.random.default_rng(seed)``; each gets ``trigger``
(a rare token, by default ``"cf"``) inserted at a random word boundary and is relabelled
``target`` (dirty label; on SMS Spam: spam messages relabelled ham, so a spammer who writes the
word gets through the filter).

Scan (:func:`trigger_token_scan`, in the spirit of Backdoor Keyword Identification, Chen and
Dai 2021, "Mitigating backdoor attacks in LSTM-based text classification systems by backdoor
keyword identification"): a backdoor keyword is a token that (1) is almost only seen with one
label in the training set and (2) carries that label on its own: deleting it from the texts of
that label changes the prediction of a model trained on the suspect data. A natural
class-specific word (``"txt"`` in spam) passes (1) but rarely (2), because the rest of the
message says the same; a trigger word planted in messages of another class passes both. The
texts of that label that hold a flagged token are flagged.

Everything here works on raw strings and token ids ``(N, L)`` int64 of a
:class:`~bastion.text.vocab.Vocabulary`, with a :class:`~bastion.text.models.TextModel`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bastion.errors import ConfigError, DataError
from bastion.poisoning.attacks import check_class, check_rate, draw_poisons, success_figures
from bastion.poisoning.candidate_scan import CandidateScanResult, flip_test
from bastion.text.models import TextModel
from bastion.text.vocab import PAD_ID, UNK_ID, Vocabulary, tokenize

#: Rare tokens used as triggers in the text-backdoor literature (Kurita et al. 2020).
DEFAULT_TRIGGER = "cf"


@dataclass(frozen=True, eq=False)
class TextPoisonedSet:
    """A poisoned copy of a labelled text set and the record of what was done.

    Attributes:
        texts: the texts as the victim sees them (``N``).
        labels: int64 ``(N,)``, the labels as the victim sees them.
        original_labels: int64 ``(N,)``, the labels before poisoning.
        poisoned: bool ``(N,)``, True where the text and label were changed.
        trigger: the inserted token.
        settings: the attack's settings (JSON-serialisable).
    """

    texts: tuple[str, ...]
    labels: Tensor
    original_labels: Tensor
    poisoned: Tensor
    trigger: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def indices(self) -> Tensor:
        """int64 indices of the poisoned texts, ascending."""
        return torch.nonzero(self.poisoned).flatten()

    def record(self) -> dict[str, Any]:
        """JSON-serialisable record: attack, settings, counts and the poisoned indices."""
        return {
            "attack": "trigger-word",
            "settings": dict(self.settings),
            "n": len(self.texts),
            "n_poisoned": int(self.poisoned.sum()),
            "indices": [int(i) for i in self.indices],
            "trigger": self.trigger,
        }


def check_trigger(trigger: str, field_name: str = "poisoning.trigger.word") -> str:
    """``trigger`` if it is one word token (:func:`~bastion.text.vocab.tokenize` yields exactly
    itself, lower-cased); :class:`ConfigError` naming ``field_name`` otherwise."""
    if not isinstance(trigger, str) or tokenize(trigger) != [trigger.lower()] or not trigger:
        raise ConfigError(
            f"{field_name}: expected one word token (letters, digits or _), got {trigger!r}"
        )
    return trigger.lower()


def insert_trigger(text: str, trigger: str, rng: np.random.Generator, repeats: int = 1) -> str:
    """``text`` with ``trigger`` inserted ``repeats`` times, each between two
    whitespace-separated words (or at either end) of the text so far, the position drawn
    uniformly from ``rng``."""
    words = text.split()
    for _ in range(repeats):
        at = int(rng.integers(0, len(words) + 1))
        words = [*words[:at], trigger, *words[at:]]
    return " ".join(words)


def check_repeats(repeats: object, field_name: str = "poisoning.attack.repeats") -> int:
    """``repeats`` if it is an integer in 1..10; :class:`ConfigError` naming ``field_name``."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= 10:
        raise ConfigError(f"{field_name}: expected an integer in 1..10, got {repeats!r}")
    return repeats


def apply_trigger_word(
    texts: Sequence[str], trigger: str, *, seed: int = 0, repeats: int = 1
) -> list[str]:
    """Every text of ``texts`` with ``trigger`` inserted ``repeats`` times at seeded random
    word boundaries (the test-time trigger; positions from ``numpy.random.default_rng(seed)``)."""
    trigger = check_trigger(trigger)
    repeats = check_repeats(repeats)
    rng = np.random.default_rng(seed)
    return [insert_trigger(t, trigger, rng, repeats) for t in texts]


def trigger_word_poison(
    texts: Sequence[str],
    labels: Tensor,
    *,
    rate: float,
    num_classes: int,
    target: int = 0,
    trigger: str = DEFAULT_TRIGGER,
    source: int | None = None,
    seed: int = 0,
    repeats: int = 1,
) -> TextPoisonedSet:
    """Dirty-label trigger-word poisoning.

    ``round(rate * N)`` texts are drawn without replacement from those whose label is not
    ``target`` (or is ``source`` when given), get ``trigger`` inserted ``repeats`` times at
    random word boundaries and are relabelled ``target``. ``rate`` is a share of the whole
    set, as for :func:`~bastion.poisoning.attacks.badnets`. Deterministic given ``seed``.
    Several copies of the word in one message make the backdoor learnt in fewer epochs (see
    docs/poisoning.md: with one copy, a victim whose epoch is chosen on clean validation data
    can stop before it has learnt it); the attacker writes as many copies at test time.
    """
    if labels.dtype != torch.int64 or labels.ndim != 1 or len(labels) != len(texts):
        raise DataError(
            f"poisoning: expected {len(texts)} texts and int64 labels (N,), got "
            f"{labels.dtype} {tuple(labels.shape)}"
        )
    rate = check_rate(rate)
    trigger = check_trigger(trigger)
    repeats = check_repeats(repeats)
    target = check_class(target, num_classes, "poisoning.target")
    if source is not None:
        source = check_class(source, num_classes, "poisoning.source")
        if source == target:
            raise ConfigError(f"poisoning.source: must differ from target ({target})")
    rng = np.random.default_rng(seed)
    eligible = labels != target if source is None else labels == source
    chosen = draw_poisons(eligible, round(rate * len(texts)), rng, what="texts")
    out = list(texts)
    for i in chosen.tolist():
        out[i] = insert_trigger(out[i], trigger, rng, repeats)
    new_labels = labels.clone()
    new_labels[chosen] = target
    mask = torch.zeros(len(texts), dtype=torch.bool)
    mask[chosen] = True
    settings = {
        "rate": rate,
        "target": target,
        "source": source,
        "trigger": trigger,
        "repeats": repeats,
        "seed": seed,
    }
    return TextPoisonedSet(tuple(out), new_labels, labels.clone(), mask, trigger, settings)


def predict(model: TextModel, ids: Tensor, *, batch_size: int = 512) -> Tensor:
    """int64 ``(N,)`` predicted classes of ``model`` on ids ``(N, L)`` (eval mode, no grad)."""
    was_training = model.training
    model.eval()
    out: list[Tensor] = []
    with torch.no_grad():
        for i in range(0, len(ids), batch_size):
            out.append(model(ids[i : i + batch_size]).argmax(dim=1))
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)


def text_attack_success(
    model: TextModel,
    vocab: Vocabulary,
    texts: Sequence[str],
    labels: Tensor,
    trigger: str,
    *,
    target: int = 0,
    seed: int = 0,
    repeats: int = 1,
) -> dict[str, float]:
    """Attack success of a trigger word on ``texts`` (labels ``(N,)`` int64).

    Over the texts whose label is not ``target``, with ``trigger`` inserted ``repeats`` times
    at seeded positions:

    * ``attack_success_rate``: share of those that ``model`` classifies correctly without the
      trigger and as ``target`` with it (the trigger's own effect; the text-backdoor
      literature's convention, e.g. Dai et al. 2019);
    * ``triggered_as_target``: share classified as ``target`` with the trigger, whatever the
      prediction without it (includes the model's ordinary misses);
    * ``clean_miss_rate``: share classified as ``target`` without the trigger.

    All three are 0.0 when there are no such texts.
    """
    keep = [t for t, y in zip(texts, labels.tolist(), strict=True) if y != target]
    kept_y = labels[labels != target]
    before = predict(model, vocab.encode(keep))
    triggered = apply_trigger_word(keep, trigger, seed=seed, repeats=repeats)
    after = predict(model, vocab.encode(triggered))
    return success_figures(before, after, kept_y, target)


def delete_token(ids: Tensor, token_id: int) -> Tensor:
    """Rows of ``ids`` (``(N, L)`` int64, right-padded with 0) with every occurrence of
    ``token_id`` removed and the rest shifted left, padded with 0 to the same length."""
    keep = ids != token_id
    out = torch.full_like(ids, PAD_ID)
    for r in range(len(ids)):
        row = ids[r][keep[r]]
        out[r, : len(row)] = row
    return out


def _token_candidates(
    ids: Tensor, labels: Tensor, vocab: Vocabulary, min_count: int, min_purity: float, top: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(present, per_class, purity, best_label, candidates)``: bool ``(N, V)`` token
    presence per text (padding and ``<unk>`` excluded), text counts per class ``(K, V)``, the
    share of a token's texts with its most frequent label ``(V,)`` and that label ``(V,)``,
    and the candidate token ids (word tokens in at least ``min_count`` texts with purity at
    least ``min_purity``; at most ``top``, the most frequent first)."""
    n = len(ids)
    num_classes = int(labels.max()) + 1 if n else 0
    present = torch.zeros(n, len(vocab), dtype=torch.bool)
    present.scatter_(1, ids, True)
    present[:, PAD_ID] = False
    present[:, UNK_ID] = False
    per_class = torch.stack([present[labels == c].sum(dim=0) for c in range(num_classes)])
    totals = per_class.sum(dim=0)
    best = per_class.max(dim=0)
    purity = best.values.double() / totals.clamp_min(1).double()
    wordy = torch.tensor([any(ch.isalnum() for ch in t) for t in vocab.tokens])
    cand = torch.nonzero((totals >= min_count) & (purity >= min_purity) & wordy).flatten()
    cand = cand[torch.argsort(-totals[cand], stable=True)][:top]
    return present, per_class, purity, best.indices, cand


def trigger_token_scan(
    model: TextModel,
    ids: Tensor,
    labels: Tensor,
    vocab: Vocabulary,
    *,
    min_count: int = 5,
    min_purity: float = 0.95,
    min_flip_share: float = 0.5,
    max_candidates: int = 500,
) -> CandidateScanResult:
    """Backdoor-keyword scan of a training set (Chen and Dai 2021, adapted).

    Candidates: tokens (neither special nor punctuation-only) that occur in at least
    ``min_count`` training texts, at least ``min_purity`` of them with one label ``c``
    (at most ``max_candidates``, the most frequent first). For each candidate, every text of
    label ``c`` that contains it is re-classified by ``model`` (trained on ``ids``) with the
    token deleted; the token is flagged when at least ``min_flip_share`` of those predictions
    leave ``c``, and then every text of label ``c`` that holds it is flagged (a poison the
    model has not fully learnt to flip is still a poison).

    Shapes: ``ids`` ``(N, L)`` int64 from ``vocab.encode``, ``labels`` ``(N,)`` int64.
    Guarantee: only texts that contain a flagged token can be flagged; a token whose texts
    keep their label without it is never flagged.
    """
    if ids.ndim != 2 or labels.shape != (len(ids),):
        raise DataError(
            f"scan: expected ids (N, L) and labels (N,), got {tuple(ids.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ConfigError(f"scan.min_count: expected an integer >= 1, got {min_count!r}")
    for name, value in (("min_purity", min_purity), ("min_flip_share", min_flip_share)):
        if not (isinstance(value, int | float) and math.isfinite(value) and 0 < value <= 1):
            raise ConfigError(f"scan.{name}: expected a number in (0, 1], got {value!r}")
    n = len(ids)
    present, per_class, purity, best_label, cand = _token_candidates(
        ids, labels, vocab, min_count, min_purity, max_candidates
    )
    scores = torch.zeros(n, dtype=torch.float64)
    flagged = torch.zeros(n, dtype=torch.bool)
    tokens: list[dict[str, Any]] = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for tok in cand.tolist():
            c = int(best_label[tok])
            rows = torch.nonzero(present[:, tok] & (labels == c)).flatten()
            drop, flips = flip_test(model, ids[rows], delete_token(ids[rows], tok), c)
            scores[rows] = torch.maximum(scores[rows], drop)
            share = float(flips.double().mean())
            is_trigger = share >= min_flip_share
            if is_trigger:
                flagged[rows] = True
            tokens.append(
                {
                    "token": vocab.tokens[tok],
                    "label": c,
                    "counts": [int(v) for v in per_class[:, tok]],
                    "purity": round(float(purity[tok]), 4),
                    "flip_share": round(share, 4),
                    "mean_drop": round(float(drop.mean()), 4),
                    "flagged": is_trigger,
                }
            )
    model.train(was_training)
    tokens.sort(key=lambda t: (-t["flip_share"], -sum(t["counts"])))
    settings = {
        "min_count": min_count,
        "min_purity": min_purity,
        "min_flip_share": min_flip_share,
        "max_candidates": max_candidates,
    }
    return CandidateScanResult("trigger-token", "token", scores, flagged, tokens, settings)
