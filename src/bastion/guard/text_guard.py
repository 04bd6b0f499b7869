"""The runtime guard for text classifiers: validation, sanitisation, prediction, abstention.

Layers, in order, for each text:

1. validation: a string, non-empty after stripping, at most ``max_chars`` characters, encodable
   as UTF-8 (a lone surrogate from a JSON ``\\ud800`` escape is refused) -> ``reject``;
2. sanitisation (:class:`bastion.text.Sanitizer`: invisible characters removed -- every
   default-ignorable, format, unassigned and private-use code point and spaces that split a
   word --, NFKC, confusables mapped back to Latin, optional spelling repair with bounded work).
   A text the sanitiser had to change by removing invisible characters or mapping homoglyphs is
   answered but ``flag``-ged, with the counts as scores: those characters have no business in
   ordinary input and are the signature of the invisible-character and homoglyph attacks. A
   text with nothing but white space left after sanitising, or with nothing the model reads
   (no word or token: a lone control character or combining mark) -> ``reject``;
3. prediction by the (hardened) text model on the sanitised text. A transformer
   (:class:`bastion.text.transformer.TransformerTextModel`) reads at most its ``max_length``
   tokens: a longer text is answered from its first ``max_length`` tokens and ``flag``-ged
   with the reason ``model: read the first L of N tokens (truncated)`` and the score
   ``truncated_tokens``;
4. post-check: a probability below ``min_confidence`` -> ``abstain``.

The service calls :meth:`TextGuard.decide_texts`; ``input_kind == "text"`` tells it to accept
``text``/``texts`` bodies instead of arrays.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from bastion.errors import ConfigError
from bastion.guard.decision import Decision
from bastion.text.classifier import TextClassifier
from bastion.text.io import load_text_model
from bastion.text.models import TextModel
from bastion.text.sanitize import Sanitizer
from bastion.text.transformer import (
    TransformerTextClassifier,
    TransformerTextModel,
    is_transformer_dir,
    load_transformer_model,
)
from bastion.text.vocab import Vocabulary, tokenize

__all__ = ["TextGuard"]


def _readable(token: str) -> bool:
    """Whether a word-model token holds a character other than a control character or a
    combining mark (Unicode categories C* and M*)."""
    return any(unicodedata.category(ch)[0] not in "CM" for ch in token)


class TextGuard:
    """Guard a text classifier (see the module docstring).

    Args:
        model: token ids ``(N, L)`` -> logits ``(N, C)``: a word model or a transformer.
        vocab: the word model's vocabulary; for a transformer, the word vocabulary of the
            spelling repair (``None``: no repair).
        classes: class names, in logit order.
        max_chars: the longest text accepted.
        min_confidence: abstain below this top-class probability (0 disables).
        repair_spelling: let the sanitiser repair out-of-vocabulary words at edit distance 1.
        max_repair_work: the spelling repair's budget for one :meth:`decide_texts` call
            (look-ups and checks, see :class:`bastion.text.Sanitizer`), split evenly among its
            texts (each also capped by the sanitiser's own per-text budget): the repair work of
            a call is bounded whatever its texts, and no text can use up another's part.
        name: reported by the service.
        tokenizer: a transformer's tokenizer (required with a transformer, unused otherwise).
    """

    input_kind = "text"
    input_shape: tuple[int, ...] = ()

    def __init__(
        self,
        model: TextModel | TransformerTextModel,
        vocab: Vocabulary | None,
        classes: Sequence[str],
        *,
        max_chars: int = 5000,
        min_confidence: float = 0.0,
        repair_spelling: bool = True,
        max_repair_work: int = 100_000,
        name: str = "text",
        tokenizer: Any = None,
    ) -> None:
        if max_chars < 1:
            raise ConfigError(f"guard.max_chars: expected an integer >= 1, got {max_chars}")
        if not 0.0 <= min_confidence < 1.0:
            raise ConfigError(
                f"guard.min_confidence: expected a number in [0, 1), got {min_confidence}"
            )
        if max_repair_work < 0:
            raise ConfigError(f"guard.max_repair_work: expected >= 0, got {max_repair_work}")
        self.sanitizer = Sanitizer(vocabulary=vocab, repair_spelling=repair_spelling)
        if self.sanitizer.repair_spelling:
            _ = self.sanitizer.index  # built now, not on the first request
        self.max_repair_work = int(max_repair_work)
        self.classifier: TextClassifier | TransformerTextClassifier
        if isinstance(model, TransformerTextModel):
            if tokenizer is None:
                raise ConfigError("tokenizer: a transformer model needs its tokenizer")
            self.classifier = TransformerTextClassifier(model.eval(), tokenizer)
        elif vocab is None:
            raise ConfigError("vocab: a word model needs its vocabulary")
        else:
            self.classifier = TextClassifier(model.eval(), vocab, sanitizer=None)
        self.classes = tuple(str(c) for c in classes)
        self.max_chars = int(max_chars)
        self.min_confidence = float(min_confidence)
        self.name = name
        self.layers = ("validation", "sanitizer", "model", "confidence")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **kwargs: object) -> TextGuard:
        """Load a text model saved by :func:`bastion.text.save_text_model`, or a transformer
        directory (:func:`bastion.text.transformer.load_transformer_model`), and guard it."""
        if is_transformer_dir(path):
            loaded = load_transformer_model(path)
            return cls(
                loaded.model,
                loaded.vocabulary,
                loaded.model.classes,
                tokenizer=loaded.tokenizer,
                name=Path(path).name,
                **kwargs,  # type: ignore[arg-type]
            )
        model, vocab, meta = load_text_model(path)
        classes = getattr(getattr(model, "spec", None), "classes", None) or meta.get("classes")
        if not classes:
            raise ConfigError(f"{path}: the text model's sidecar names no classes")
        return cls(model, vocab, classes, name=Path(path).name, **kwargs)  # type: ignore[arg-type]

    def describe(self) -> dict[str, object]:
        return {
            "kind": "text",
            "layers": list(self.layers),
            "max_chars": self.max_chars,
            "min_confidence": self.min_confidence,
        }

    def decide(self, x: Tensor) -> list[Decision]:
        """Arrays are not texts: every row is rejected (the service sends texts to
        :meth:`decide_texts`)."""
        reason = "validation: this model takes texts (send 'text' or 'texts')"
        return [Decision("reject", reasons=(reason,)) for _ in range(int(x.shape[0]))]

    def _validate(self, text: object) -> str | None:
        """The reason to reject ``text``, or ``None``."""
        if not isinstance(text, str):
            return f"validation: expected a string, got {type(text).__name__}"
        if not text.strip():
            return "validation: empty text"
        if len(text) > self.max_chars:
            return f"validation: {len(text)} characters exceed the limit of {self.max_chars}"
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "validation: not encodable as UTF-8 (a lone surrogate?)"
        return None

    def _no_tokens(self, texts: list[str]) -> list[bool]:
        """Whether the model would read nothing of each sanitised text (a lone control
        character or combining mark): no token but the special ones for a transformer, no word
        or punctuation token with a character outside the control and mark categories for a
        word model. Such a text is rejected, not answered."""
        clf = self.classifier
        if isinstance(clf, TransformerTextClassifier):
            bare = len(clf.token_ids([""])[0])
            return [n <= bare for n in clf.token_counts(texts)]
        return [not any(map(_readable, tokenize(t, lower=clf.vocab.lower))) for t in texts]

    def decide_texts(self, texts: Sequence[object]) -> list[Decision]:
        """One decision per text, in order; never raises for a bad text (it is rejected)."""
        out: list[Decision | None] = [None] * len(texts)
        keep: list[int] = []
        cleaned: list[str] = []
        scores: list[dict[str, float]] = []
        reasons: list[tuple[str, ...]] = []
        share = self.max_repair_work // max(1, len(texts))
        for i, t in enumerate(texts):
            why = self._validate(t)
            if why is not None:
                out[i] = Decision("reject", reasons=(why,))
                continue
            assert isinstance(t, str)
            clean = self.sanitizer.clean(t, repair_work=share)
            invisible, confusable = clean.invisible, clean.confusables
            if not clean.text.strip():
                why = f"validation: empty after removing {invisible} invisible characters"
                out[i] = Decision(
                    "reject", reasons=(why,), scores={"invisible_chars": float(invisible)}
                )
                continue
            fired: tuple[str, ...] = ()
            if invisible:
                fired += (f"sanitizer: removed {invisible} invisible/bidi characters",)
            if confusable:
                fired += (f"sanitizer: mapped {confusable} look-alike characters",)
            keep.append(i)
            cleaned.append(clean.text)
            scores.append({"invisible_chars": float(invisible), "confusables": float(confusable)})
            reasons.append(fired)
        if keep:
            probs = self.classifier(cleaned)
            unreadable = self._no_tokens(cleaned)
            if isinstance(self.classifier, TransformerTextClassifier):
                limit = self.classifier.model.max_length
                for j, n in enumerate(self.classifier.token_counts(cleaned)):
                    if n > limit:
                        reasons[j] += (f"model: read the first {limit} of {n} tokens (truncated)",)
                        scores[j]["truncated_tokens"] = float(n - limit)
            for j, i in enumerate(keep):
                if unreadable[j]:
                    why = "validation: nothing to classify (no word or token in the text)"
                    out[i] = Decision("reject", reasons=(why,), scores=scores[j])
                    continue
                p = probs[j]
                conf, label = float(p.max()), int(p.argmax())
                sc = {**scores[j], "confidence": conf}
                if self.min_confidence and conf < self.min_confidence:
                    out[i] = Decision(
                        "abstain",
                        reasons=(
                            *reasons[j],
                            f"confidence: {conf:.3f} < {self.min_confidence:.3f}",
                        ),
                        scores=sc,
                    )
                    continue
                out[i] = Decision(
                    "flag" if reasons[j] else "accept",
                    label=label,
                    confidence=conf,
                    probabilities=tuple(float(v) for v in p),
                    reasons=reasons[j],
                    scores=sc,
                )
        return [d for d in out if d is not None]
