"""A text model with its vocabulary, callable on raw strings.

:class:`TextClassifier` is what attacks and the guard talk to: ``clf(texts)`` returns class
probabilities ``(N, C)`` float32 (the black-box interface), and :meth:`word_saliency` gives the
gradient x embedding importance of each word (the white-box interface).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from bastion.text.models import TextModel
from bastion.text.vocab import Vocabulary, tokenize

ProbaFn = Callable[[Sequence[str]], Tensor]


@runtime_checkable
class WhiteBoxText(Protocol):
    """A text classifier that also gives per-word gradient importance (``(W,)`` for ``W``
    words): :class:`TextClassifier` and
    :class:`bastion.text.transformer.TransformerTextClassifier`."""

    def __call__(self, texts: Sequence[str]) -> Tensor: ...

    def word_saliency(self, words: Sequence[str], label: int) -> Tensor: ...


class TextClassifier:
    """``(model, vocabulary)`` as a function from texts to probabilities.

    Args:
        model: a :class:`TextModel`; put in eval mode.
        vocab: the vocabulary the model was trained with.
        sanitizer: optional ``str -> str`` applied to every text first (the guard).
        batch_size: texts per forward pass.
    """

    def __init__(
        self,
        model: TextModel,
        vocab: Vocabulary,
        *,
        sanitizer: Callable[[str], str] | None = None,
        batch_size: int = 512,
    ):
        self.model = model.eval()
        self.vocab = vocab
        self.sanitizer = sanitizer
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        return self.model.embedding.weight.device

    def encode(self, texts: Sequence[str]) -> Tensor:
        """``(N, max_length)`` ids after the sanitiser."""
        if self.sanitizer is not None:
            texts = [self.sanitizer(t) for t in texts]
        return self.vocab.encode(texts).to(self.device)

    def __call__(self, texts: Sequence[str]) -> Tensor:
        """Probabilities ``(N, C)`` float32 on the CPU."""
        outs: list[Tensor] = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                ids = self.encode(texts[i : i + self.batch_size])
                outs.append(torch.softmax(self.model(ids).float(), dim=1).cpu())
        if not outs:
            return torch.zeros((0, self.model.spec.num_classes))
        return torch.cat(outs)

    def predict(self, texts: Sequence[str]) -> Tensor:
        """Predicted class indices ``(N,)`` int64."""
        return self(texts).argmax(dim=1)

    def word_saliency(self, words: Sequence[str], label: int) -> Tensor:
        """Per-word importance ``(W,)`` by gradient x embedding (first-order loss change).

        For each token, ``-grad_e(loss) . e`` estimates how much the cross-entropy of ``label``
        would rise if the token's embedding were zeroed (Simonyan et al., 2014; the white-box
        ranking of TextFooler, Jin et al., 2020). A word's score sums its tokens; words past
        ``max_length`` score 0.
        """
        positions: list[int] = []
        ids: list[int] = []
        for w, word in enumerate(words):
            if self.sanitizer is not None:
                word = self.sanitizer(word)
            for token in tokenize(word, lower=self.vocab.lower):
                positions.append(w)
                ids.append(self.vocab.id_of(token))
        scores = torch.zeros(len(words))
        limit = min(len(ids), self.vocab.max_length)
        if limit == 0:
            return scores
        row = torch.zeros((1, self.vocab.max_length), dtype=torch.int64)
        row[0, :limit] = torch.tensor(ids[:limit])
        rows = self.saliency_rows(row).to(self.device)
        was_training = self.model.training
        self.model.eval()
        with torch.enable_grad():
            emb = self.model.embed(rows).detach().requires_grad_(True)
            logits = self.model.forward_embedded(emb, rows)
            target = torch.full((rows.shape[0],), label, device=self.device)
            loss = torch.nn.functional.cross_entropy(logits, target)
            (grad,) = torch.autograd.grad(loss, emb)
        self.model.train(was_training)
        # mean loss over the rows: each row's gradient is scaled by 1/R, so the sum over rows
        # is the mean of the per-row gradient x embedding scores
        token_scores = -(grad * emb.detach()).sum(dim=2)[:, :limit].sum(dim=0).cpu()
        scores.index_add_(0, torch.tensor(positions[:limit]), token_scores)
        return scores

    def saliency_rows(self, row: Tensor) -> Tensor:
        """The id rows ``(R, max_length)`` whose mean loss :meth:`word_saliency` differentiates,
        for the encoded text ``row`` ``(1, max_length)``: the text itself here; subclasses that
        classify noisy copies (:class:`bastion.text.SmoothedTextClassifier`) return those."""
        return row
