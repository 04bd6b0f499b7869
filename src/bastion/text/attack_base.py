"""The text-attack contract and the greedy search every text attack shares.

:class:`TextAttackBase` is the contract of the registry's text channel
(``@register(name, knowledge=..., settings=..., channel="text")``, see
:mod:`bastion.attacks.registry`): a text attack holds settings only. The one final
``__call__`` of :class:`TextAttack` takes a black-box classifier (a callable
``list[str] -> probabilities (N, C)``; a :class:`TextClassifier` also offers gradients), texts
and true labels. It queries the classifier once per text, attacks only the correctly
classified ones, re-checks every adversarial text with a fresh query and counts every text sent
to the classifier as one query. Success means the final prediction differs from the label.
Called with a :class:`~bastion.text.threat.TextThreat`, it reverts every adversarial text
outside the threat to the original before that final check, so no attack can return an edit
the threat does not allow.

The search (:meth:`TextAttack.greedy`) is the greedy word-importance search common to
DeepWordBug (Gao et al., 2018) and TextFooler (Jin et al., 2020): rank the words, then walk them
in order, trying each word's candidate replacements in one batch; stop at the first candidate
that flips the prediction, otherwise keep the candidate that lowers the true-class probability
most, until the cap on edited words is reached.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, final

import torch
from torch import Tensor

from bastion.attacks.base import AttackKind, Knowledge
from bastion.attacks.registry import build_channel_attack
from bastion.attacks.settings import AttackSettings
from bastion.errors import AttackInputError
from bastion.text.classifier import ProbaFn, WhiteBoxText
from bastion.text.threat import TextThreat
from bastion.text.words import changed_share, join_words, split_words

Ranking = Literal["delete", "replace", "gradient", "none"]

#: Stand-in for an unknown word in replace-one scoring (DeepWordBug's "Replace-1").
UNKNOWN_WORD = "qxzjv"


@dataclass(frozen=True)
class TextAttackResult:
    """Per-example outcome of a text attack (every tuple has one entry per input text).

    Attributes:
        original: the input texts.
        adversarial: the attacked texts (the original where the attack was not run).
        labels: true class indices.
        correct_before: the classifier got the original right (only these are attacked).
        success: correct before and misclassified after (confirmed by a fresh query).
        queries: texts sent to the classifier for this example, including the first and final
            checks.
        changed_share: share of whitespace-separated words that differ from the original.
    """

    original: tuple[str, ...]
    adversarial: tuple[str, ...]
    labels: tuple[int, ...]
    correct_before: tuple[bool, ...]
    success: tuple[bool, ...]
    queries: tuple[int, ...]
    changed_share: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.original)

    @property
    def success_rate(self) -> float:
        """Share of correctly classified examples the attack fooled."""
        n = sum(self.correct_before)
        return sum(self.success) / n if n else 0.0


class _Example:
    """One text under attack: its words, separators, label and a counting query function."""

    def __init__(self, text: str, label: int, classifier: ProbaFn, p_true: float):
        self.words, self.seps = split_words(text)
        self.label = label
        self.classifier = classifier
        self.p_true = p_true
        self.queries = 0

    def query(self, candidates: Sequence[list[str]]) -> Tensor:
        """Probabilities ``(B, C)`` of the texts made of each word list."""
        texts = [join_words(words, self.seps) for words in candidates]
        self.queries += len(texts)
        return _checked(self.classifier(texts), len(texts))


def _checked(probs: Any, n: int) -> Tensor:
    if not isinstance(probs, Tensor) or probs.ndim != 2 or probs.shape[0] != n:
        shape = tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__
        raise AttackInputError(
            f"classifier: expected a tensor of probabilities (N={n}, C), got {shape}"
        )
    return probs.detach().float().cpu()


@dataclass(frozen=True)
class TextBatch:
    """What a text attack's :meth:`TextAttackBase._attack` works on: the classifier, the
    checked non-empty ``texts`` with their ``labels`` (one per text), the source of randomness
    and the threat (None: the attack's own budget only)."""

    classifier: ProbaFn
    texts: list[str]
    labels: list[int]
    generator: torch.Generator | None
    threat: TextThreat | None


def check_texts(texts: Sequence[str], labels: Sequence[int]) -> tuple[list[str], list[int]]:
    """``(texts, labels)`` as lists, or an :class:`AttackInputError` naming the field: every
    text a str, one non-negative class index per text."""
    texts = list(texts)
    if any(not isinstance(t, str) for t in texts):
        raise AttackInputError("texts: expected a sequence of str")
    if len(labels) != len(texts):
        raise AttackInputError(f"labels: expected {len(texts)} labels, got {len(labels)}")
    ints = [int(y) for y in labels]
    if any(y < 0 for y in ints):
        raise AttackInputError("labels: expected non-negative class indices")
    return texts, ints


def max_edits(share: float, n_words: int) -> int:
    """Words an attack may edit: ``floor(share * n_words)``, at least 1."""
    return max(1, math.floor(share * n_words + 1e-9))


class TextAttackBase(ABC):
    """The contract of every registered text attack (a greedy :class:`TextAttack` or a
    composite such as :class:`bastion.text.AttackChain`): settings only, called as
    ``attack(classifier, texts, labels, *, generator=None, threat=None) -> TextAttackResult``.

    ``name``, ``knowledge``, ``kind``, ``channel`` and ``settings_model`` are set by
    :func:`bastion.attacks.registry.register`; a text attack queries the classifier's scores
    (``score-based``) unless its settings rank words by gradient (``white-box``).
    """

    name: ClassVar[str] = "text_attack"
    knowledge: ClassVar[Knowledge | None] = "score-based"
    kind: ClassVar[AttackKind] = "fixed-budget"
    channel: ClassVar[str] = "text"
    #: The settings model (:mod:`bastion.attacks.settings`), set by ``register``.
    settings_model: ClassVar[type[AttackSettings] | None] = None

    @classmethod
    def knowledge_in(cls, settings: dict[str, Any]) -> set[Knowledge]:
        """``white-box`` when ``settings`` rank words by gradient (``ranking`` or ``scoring``
        ``gradient``), else the declared knowledge."""
        if "gradient" in (settings.get("ranking"), settings.get("scoring")):
            return {"white-box"}
        return {cls.knowledge} if cls.knowledge is not None else set()

    @final
    def __call__(
        self,
        classifier: ProbaFn,
        texts: Sequence[str],
        labels: Sequence[int],
        *,
        generator: torch.Generator | None = None,
        threat: TextThreat | None = None,
    ) -> TextAttackResult:
        """Attack ``texts`` (true ``labels``) on ``classifier``, within ``threat`` when one is
        given; see :class:`TextAttackResult`. Checks the inputs and answers an empty batch;
        :meth:`_attack` does the rest."""
        texts, labels = check_texts(texts, labels)
        if not texts:
            return TextAttackResult((), (), (), (), (), (), ())
        return self._attack(TextBatch(classifier, texts, labels, generator, threat))

    @abstractmethod
    def _attack(self, batch: TextBatch) -> TextAttackResult:
        """The attack on a checked, non-empty batch."""

    def params(self) -> dict[str, Any]:
        """Settings for scorecards (JSON-ready where possible)."""
        out: dict[str, Any] = {}
        for k, v in vars(self).items():
            if k.startswith("_"):
                continue
            if isinstance(v, (int, float, str, bool, type(None))):
                out[k] = v
            elif isinstance(v, (tuple, list)) and all(isinstance(x, (int, float, str)) for x in v):
                out[k] = list(v)
            elif isinstance(v, (set, frozenset)):
                out[k] = f"{len(v)} words"
            else:
                out[k] = type(v).__name__
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params().items())})"


def build_text_attack(
    name: str, params: Mapping[str, Any] | None = None, *, where: str = "attack"
) -> TextAttackBase:
    """A fresh text attack from its registered name and settings (the registry's text
    channel); an unknown name or a bad setting is a :class:`ConfigError` naming ``where``."""
    attack = build_channel_attack(name, params, channel="text", where=where)
    assert isinstance(attack, TextAttackBase)
    return attack


class TextAttack(TextAttackBase):
    """Base of every greedy text attack; subclasses implement :meth:`_attack_words`."""

    @final
    def _attack(self, batch: TextBatch) -> TextAttackResult:
        """Attack every correctly classified text (within ``threat`` when one is given)."""
        classifier, texts, labels = batch.classifier, batch.texts, batch.labels
        probs0 = _checked(classifier(texts), len(texts))
        if max(labels) >= probs0.shape[1]:
            raise AttackInputError(
                f"labels: expected class indices below {probs0.shape[1]}, got {max(labels)}"
            )
        gen = batch.generator if batch.generator is not None else torch.Generator().manual_seed(0)
        correct = [bool(int(probs0[i].argmax()) == y) for i, y in enumerate(labels)]
        adversarial = list(texts)
        queries = [1] * len(texts)
        for i, (text, y) in enumerate(zip(texts, labels, strict=True)):
            if not correct[i]:
                continue
            ex = _Example(text, y, classifier, float(probs0[i, y]))
            if ex.words:
                adversarial[i] = join_words(self._attack_words(ex, classifier, gen), ex.seps)
            queries[i] += ex.queries
        if batch.threat is not None:
            adversarial = batch.threat.enforce(texts, adversarial)
        attacked = [i for i in range(len(texts)) if correct[i]]
        final_pred = torch.zeros(len(texts), dtype=torch.int64)
        if attacked:
            probs = _checked(classifier([adversarial[i] for i in attacked]), len(attacked))
            final_pred[attacked] = probs.argmax(dim=1)
            for i in attacked:
                queries[i] += 1
        success = tuple(
            correct[i] and int(final_pred[i]) != labels[i] and adversarial[i] != texts[i]
            for i in range(len(texts))
        )
        shares = tuple(
            changed_share(split_words(t)[0], split_words(a)[0])
            if len(split_words(t)[0]) == len(split_words(a)[0])
            else 1.0
            for t, a in zip(texts, adversarial, strict=True)
        )
        return TextAttackResult(
            original=tuple(texts),
            adversarial=tuple(adversarial),
            labels=tuple(labels),
            correct_before=tuple(correct),
            success=success,
            queries=tuple(queries),
            changed_share=shares,
        )

    @abstractmethod
    def _attack_words(
        self, ex: _Example, classifier: ProbaFn, generator: torch.Generator
    ) -> list[str]:
        """The adversarial word list for one correctly classified example."""

    # -- shared pieces -------------------------------------------------------------------

    @staticmethod
    def rank_words(
        ex: _Example, classifier: ProbaFn, eligible: Sequence[int], ranking: Ranking
    ) -> list[int]:
        """``eligible`` word positions, most important first.

        ``delete``: leave-one-out, the drop of the true-class probability when the word is
        removed. ``replace``: the drop when it is replaced by an unknown word (DeepWordBug
        Replace-1). ``gradient``: gradient x embedding (needs a :class:`TextClassifier`).
        ``none``: left to right.
        """
        if not eligible or ranking == "none":
            return list(eligible)
        if ranking == "gradient":
            if not isinstance(classifier, WhiteBoxText):
                raise AttackInputError(
                    "ranking='gradient' needs a white-box classifier (a TextClassifier or "
                    "TransformerTextClassifier: word_saliency); got a plain callable"
                )
            saliency = classifier.word_saliency(ex.words, ex.label)
            scores = saliency[list(eligible)]
        else:
            trials = []
            for i in eligible:
                if ranking == "delete":
                    trials.append([*ex.words[:i], "", *ex.words[i + 1 :]])
                else:
                    trials.append([*ex.words[:i], UNKNOWN_WORD, *ex.words[i + 1 :]])
            scores = ex.p_true - ex.query(trials)[:, ex.label]
        order = torch.argsort(scores, descending=True, stable=True)
        return [eligible[int(j)] for j in order]

    @staticmethod
    def greedy(
        ex: _Example,
        order: Sequence[int],
        propose: Callable[[str], list[str]],
        budget: int,
        keep: Callable[[list[list[str]]], list[bool]] | None = None,
    ) -> list[str]:
        """Greedy substitution along ``order`` with at most ``budget`` edited words.

        ``keep`` (a constraint) gets the candidate word lists of one position and says which
        may be tried; the others are dropped before the classifier is queried."""
        current = list(ex.words)
        p_cur = ex.p_true
        changed = 0
        for i in order:
            if changed >= budget:
                break
            candidates = [c for c in propose(current[i]) if c != current[i]]
            if candidates and keep is not None:
                allowed = keep([[*current[:i], c, *current[i + 1 :]] for c in candidates])
                candidates = [c for c, ok in zip(candidates, allowed, strict=True) if ok]
            if not candidates:
                continue
            trials = [[*current[:i], c, *current[i + 1 :]] for c in candidates]
            probs = ex.query(trials)
            flipped = (probs.argmax(dim=1) != ex.label).nonzero().flatten()
            if flipped.numel():
                current[i] = candidates[int(flipped[0])]
                return current
            p_true = probs[:, ex.label]
            best = int(p_true.argmin())
            if float(p_true[best]) < p_cur:
                current[i] = candidates[best]
                p_cur = float(p_true[best])
                changed += 1
        return current
