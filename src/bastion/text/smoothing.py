"""Randomized smoothing of a text classifier: random word masking and substitution, then voting.

A smoothed classifier answers for a text by classifying many noisy copies of it and pooling the
answers. Each word of a copy is independently

- replaced by the unknown token ``<unk>`` with probability ``mask_rate`` (word dropout, the
  noise of RanMASK: Zeng et al., 2021, "Certified robustness to text adversarial attacks by
  randomized [MASK]"), otherwise
- replaced by a uniformly drawn substitution candidate with probability ``substitute_rate``
  (the noise of SAFER: Ye, Gong and Liu, ACL 2020, "SAFER: A structure-free approach for
  certified robustness to adversarial word substitutions").

An attacker who changes a few words changes only a few positions of every copy, and many of
those positions are masked or re-drawn anyway, so the pooled answer moves less than a single
model's. The noise works in token-id space on what the wrapped model actually sees (after the
sanitiser and the vocabulary), which keeps it cheap: ``samples`` copies of a whole batch of
texts go through the model in large batches.

Determinism: the noise for one text comes from a ``torch.Generator`` seeded with a BLAKE2b hash
of the text's encoded ids (after the sanitiser, truncation included) and the base ``seed``.
Python's salted ``hash`` is never used, so the same text (indeed every text the model cannot
tell apart from it) gets the same answer in every call, batch and process.

:class:`TokenNoise` is the noise itself; :func:`bastion.text.train_text_model` uses it to train
the hardened model on the same kind of copies (``noise=``), so that the noise costs little clean
accuracy.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.errors import ConfigError
from bastion.text.candidates import CandidateSource
from bastion.text.classifier import TextClassifier
from bastion.text.training import SubstitutionTable
from bastion.text.transformer import TransformerTextClassifier
from bastion.text.vocab import PAD_ID, UNK_ID

Aggregate = Literal["mean", "vote"]

_SEED_MASK = (1 << 63) - 1


def _check_rate(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"smoothing.{name}: expected a number in [0, 1), got {value!r}")
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ConfigError(f"smoothing.{name}: expected a number in [0, 1), got {value!r}")
    return float(value)


def _check_int(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"smoothing.{name}: expected an integer >= {low}, got {value!r}")
    return value


def text_seed(ids: Tensor | Sequence[int], seed: int) -> int:
    """Stable 63-bit seed from token ids (padding dropped) and a base ``seed``.

    BLAKE2b over the ids as little-endian int64 and the base seed: equal for equal ids in every
    process (unlike Python's ``hash``), and unrelated for ids that differ in one token.
    """
    row = torch.as_tensor(ids, dtype=torch.int64).flatten()
    row = row[row != PAD_ID]
    h = hashlib.blake2b(digest_size=8)
    h.update(int(seed).to_bytes(8, "little", signed=True))
    h.update(row.numpy().astype("<i8").tobytes())
    return int.from_bytes(h.digest(), "little") & _SEED_MASK


class TokenNoise:
    """Word masking and substitution in token-id space.

    Every token that is not ``fixed`` (by default: every non-padding token with an id above
    ``<unk>``) is independently replaced by ``mask_id`` (``<unk>`` by default) with probability
    ``mask_rate``; a token that is not masked is replaced with probability ``substitute_rate``
    by one of its candidates in ``table`` (drawn uniformly; tokens without candidates stay).
    Fixed tokens (padding, ``<unk>``, a transformer's special tokens) never change, so a copy
    has the length of its text.

    Args:
        mask_rate: probability in ``[0, 1)`` of masking a word.
        substitute_rate: probability in ``[0, 1)`` of substituting a word (needs ``table``
            when positive).
        table: ``(V, K)`` int64 candidate ids per vocabulary id, ``-1`` for none, the valid ones
            first (a :class:`~bastion.text.SubstitutionTable` or its ``.table``).
        mask_id: the id a masked token becomes (``<unk>`` of the word vocabulary by default; a
            transformer's ``[MASK]`` for RanMASK on word pieces).
        fixed: ids that never change (a transformer's special tokens); ``None``: the word
            vocabulary's padding and ``<unk>`` (every id up to ``<unk>``).

    Raises:
        ConfigError: naming the ``smoothing.*`` field for a bad setting.
    """

    def __init__(
        self,
        *,
        mask_rate: float,
        substitute_rate: float = 0.0,
        table: SubstitutionTable | Tensor | None = None,
        mask_id: int = UNK_ID,
        fixed: Tensor | None = None,
    ):
        self.mask_id = mask_id
        self.fixed = fixed
        self.mask_rate = _check_rate("mask_rate", mask_rate)
        self.substitute_rate = _check_rate("substitute_rate", substitute_rate)
        if isinstance(table, SubstitutionTable):
            table = table.table
        if table is not None and (table.ndim != 2 or table.dtype != torch.int64):
            raise ConfigError(
                f"smoothing.table: expected (V, K) int64 candidate ids, got {table.dtype} "
                f"{tuple(table.shape)}"
            )
        if self.substitute_rate > 0.0 and table is None:
            raise ConfigError("smoothing.substitute_rate: > 0 needs a substitution table")
        self.table = table
        self._counts = (table >= 0).sum(dim=1) if table is not None else None

    @property
    def active(self) -> bool:
        """Whether the noise changes anything (a positive rate)."""
        return self.mask_rate > 0.0 or self.substitute_rate > 0.0

    def params(self) -> dict[str, Any]:
        return {"mask_rate": self.mask_rate, "substitute_rate": self.substitute_rate}

    def apply(self, ids: Tensor, uniform: Tensor) -> Tensor:
        """Noisy ids of the same shape as ``ids`` (any shape), given ``uniform``: ``(3, *shape)``
        draws from U[0, 1) (mask, substitute, which candidate)."""
        if uniform.shape != (3, *ids.shape):
            raise ConfigError(
                f"noise: expected uniform draws of shape {(3, *ids.shape)}, got "
                f"{tuple(uniform.shape)}"
            )
        u_mask, u_sub, u_pick = uniform.to(ids.device).unbind(0)
        fixed = self.fixed
        word = ids > UNK_ID if fixed is None else ~torch.isin(ids, fixed.to(ids.device))
        out = ids
        if self.substitute_rate > 0.0 and self.table is not None and self._counts is not None:
            table = self.table.to(ids.device)
            counts = self._counts.to(ids.device)[ids]
            pick = (u_pick * counts).long().clamp(min=0)
            pick = torch.minimum(pick, (counts - 1).clamp_min(0))
            cand = table.reshape(-1)[ids * table.shape[1] + pick]
            swap = word & (u_sub < self.substitute_rate) & (counts > 0)
            out = torch.where(swap, cand, out)
        if self.mask_rate > 0.0:
            masked = torch.full_like(ids, self.mask_id)
            out = torch.where(word & (u_mask < self.mask_rate), masked, out)
        return out

    def __call__(self, ids: Tensor, generator: torch.Generator) -> Tensor:
        """Noisy ids ``(N, L)`` for ids ``(N, L)``, with draws from ``generator`` (training)."""
        uniform = torch.rand((3, *ids.shape), generator=generator)
        return self.apply(ids, uniform)

    def copies(self, ids: Tensor, samples: int, seeds: Sequence[int]) -> Tensor:
        """``samples`` noisy copies of each row: ``(N * samples, L)``, copies of row ``i`` at
        ``i * samples ... (i + 1) * samples - 1``; row ``i``'s draws come from ``seeds[i]``."""
        n, length = ids.shape
        if len(seeds) != n:
            raise ConfigError(f"noise: expected {n} seeds, got {len(seeds)}")
        if n == 0:
            return ids.new_zeros((0, length))
        draws = [
            torch.rand((3, samples, length), generator=torch.Generator().manual_seed(s))
            for s in seeds
        ]
        uniform = torch.stack(draws, dim=1).reshape(3, n * samples, length)
        return self.apply(ids.repeat_interleave(samples, dim=0), uniform)


class _Smoothing:
    """What both smoothed classifiers share: settings, their checks and ``params()``."""

    noise: TokenNoise
    samples: int
    seed: int
    aggregate: Aggregate

    def _settings(self, samples: int, seed: int, aggregate: str) -> None:
        self.samples = _check_int("samples", samples, 1)
        self.seed = _check_int("seed", seed, 0)
        if aggregate not in ("mean", "vote"):
            raise ConfigError(f"smoothing.aggregate: expected 'mean' or 'vote', got {aggregate!r}")
        self.aggregate = cast(Aggregate, aggregate)

    @property
    def mask_rate(self) -> float:
        return self.noise.mask_rate

    @property
    def substitute_rate(self) -> float:
        return self.noise.substitute_rate

    def params(self) -> dict[str, Any]:
        """The settings, JSON-ready."""
        return {
            "method": "randomized_smoothing",
            "samples": self.samples,
            **self.noise.params(),
            "aggregate": self.aggregate,
            "seed": self.seed,
        }

    def pool(self, logits: Tensor) -> Tensor:
        """Smoothed probabilities ``(N, C)`` from the logits ``(N * samples, C)`` of the copies
        (row ``i``'s copies consecutive): mean softmax or vote shares."""
        c = logits.shape[1]
        if self.aggregate == "mean":
            per_copy = torch.softmax(logits.float(), dim=1)
        else:
            per_copy = F.one_hot(logits.argmax(dim=1), c).float()
        return per_copy.cpu().reshape(-1, self.samples, c).mean(dim=1)


class SmoothedTextClassifier(_Smoothing, TextClassifier):
    """A :class:`TextClassifier` answering by the pooled answers on noisy copies of each text.

    ``clf(texts)`` returns probabilities ``(N, C)`` float32 on the CPU whose rows sum to 1:
    with ``aggregate="mean"`` the mean of the wrapped model's softmax over ``samples`` copies
    (a smoothed soft classifier, as SAFER's and RanMASK's expectation form); with ``"vote"``
    the share of copies voting for each class (the hard majority vote of randomized smoothing;
    ties go to the lower class index through ``argmax``). Without noise (both rates 0) it
    returns exactly the wrapped classifier's output.

    The wrapped classifier's sanitiser runs first (through :meth:`encode`), then the noise, so
    the smoothed classifier is the whole defended pipeline. Noise is deterministic per text
    (see the module docstring), which makes the smoothed classifier an ordinary function of
    the text that black-box attacks can query. :meth:`word_saliency` is the white-box
    gradient x embedding ranking averaged over the same noisy copies (an expectation over the
    noise, as an adaptive attacker would compute it).

    Args:
        base: the classifier to smooth (its model, vocabulary and sanitiser are used).
        samples: noisy copies per text (``>= 1``).
        mask_rate: probability of replacing a word by ``<unk>`` (``[0, 1)``).
        substitute_rate: probability of replacing a word by a random candidate (``[0, 1)``).
        candidates: where substitutes come from: a candidate source (``word -> words``, turned
            into a :class:`SubstitutionTable` of ``k`` candidates per word) or a ready table;
            needed when ``substitute_rate > 0``.
        k: candidates per word when ``candidates`` is a source.
        seed: base seed of the per-text noise.
        aggregate: ``"mean"`` (mean probabilities) or ``"vote"`` (vote shares).
        batch_size: rows (noisy copies) per forward pass; a batch of texts is expanded to its
            copies and run through the model in chunks of this many rows.

    Raises:
        ConfigError: naming the ``smoothing.*`` field for a bad setting.
    """

    def __init__(
        self,
        base: TextClassifier,
        *,
        samples: int = 16,
        mask_rate: float = 0.2,
        substitute_rate: float = 0.0,
        candidates: CandidateSource | SubstitutionTable | None = None,
        k: int = 16,
        seed: int = 0,
        aggregate: Aggregate = "mean",
        batch_size: int = 8192,
    ):
        if not isinstance(base, TextClassifier):
            raise ConfigError(
                f"smoothing.base: expected a TextClassifier, got {type(base).__name__} (a "
                "transformer classifier: SmoothedTransformerClassifier, or smooth_classifier)"
            )
        self._settings(samples, seed, aggregate)
        _check_int("k", k, 1)
        self.rows_per_batch = _check_int("batch_size", batch_size, 1)
        table: SubstitutionTable | None
        if candidates is None or isinstance(candidates, SubstitutionTable):
            table = candidates
        else:
            table = SubstitutionTable(base.vocab, candidates, k=k, unknown=False)
        self.noise = TokenNoise(mask_rate=mask_rate, substitute_rate=substitute_rate, table=table)
        super().__init__(
            base.model, base.vocab, sanitizer=base.sanitizer, batch_size=base.batch_size
        )
        self.base = base

    def noisy_ids(self, ids: Tensor) -> Tensor:
        """The noisy copies ``(N * samples, L)`` of encoded texts ``(N, L)`` (see
        :meth:`TokenNoise.copies`), each row's noise seeded by :func:`text_seed`."""
        cpu = ids.cpu()
        seeds = [text_seed(cpu[i], self.seed) for i in range(cpu.shape[0])]
        return self.noise.copies(cpu, self.samples, seeds).to(ids.device)

    def pooled(self, ids: Tensor) -> Tensor:
        """Smoothed probabilities ``(N, C)`` float32 (CPU) of encoded texts ``(N, L)``."""
        n, c = ids.shape[0], self.model.spec.num_classes
        if n == 0:
            return torch.zeros((0, c))
        noisy = self.noisy_ids(ids)
        with torch.inference_mode():
            logits = [
                self.model(noisy[i : i + self.rows_per_batch]).float()
                for i in range(0, noisy.shape[0], self.rows_per_batch)
            ]
        return self.pool(torch.cat(logits))

    def __call__(self, texts: Sequence[str]) -> Tensor:
        """Smoothed probabilities ``(N, C)`` float32 on the CPU; rows sum to 1."""
        if not self.noise.active:
            return self.base(texts)
        outs: list[Tensor] = []
        texts_per_batch = max(1, self.rows_per_batch // self.samples)
        for i in range(0, len(texts), texts_per_batch):
            outs.append(self.pooled(self.encode(texts[i : i + texts_per_batch])))
        if not outs:
            return torch.zeros((0, self.model.spec.num_classes))
        return torch.cat(outs)

    def saliency_rows(self, row: Tensor) -> Tensor:
        """The noisy copies ``(samples, max_length)`` of ``row`` that :meth:`__call__` pools, so
        that :meth:`word_saliency` is gradient x embedding averaged over them (a masked or
        substituted position scores what the model sees there)."""
        return self.noisy_ids(row) if self.noise.active else row


class SmoothedTransformerClassifier(_Smoothing, TransformerTextClassifier):
    """Randomized smoothing of a :class:`~bastion.text.TransformerTextClassifier`: the noise
    masks or substitutes word pieces (RanMASK, Zeng et al. 2021, masks BERT's input tokens
    with ``[MASK]``; SAFER, Ye et al. 2020, substitutes words by random synonyms).

    Each text is sanitised and tokenised as the wrapped classifier does it (truncated at
    ``max_length`` tokens); each of its ``samples`` copies replaces every word piece (special
    tokens never) by the tokenizer's mask token (``[UNK]`` when it has none) with probability
    ``mask_rate``, else by a random candidate of ``table`` with probability
    ``substitute_rate``. ``clf(texts)`` returns ``(N, C)`` float32 probabilities on the CPU
    whose rows sum to 1, pooled as :class:`SmoothedTextClassifier` pools them (``"mean"``
    softmax or ``"vote"`` shares); without noise it returns the wrapped classifier's output.
    The noise of a text is seeded by :func:`text_seed` of its token ids, so the smoothed
    classifier is a deterministic function of the text that attacks can query, and
    :meth:`word_saliency` is gradient x embedding averaged over the same kind of copies.

    Args:
        base: the transformer classifier (its model, tokenizer and sanitiser are used).
        samples, mask_rate, substitute_rate, seed, aggregate: as
            :class:`SmoothedTextClassifier`.
        table: ``(V, K)`` int64 word-piece candidates per tokenizer id, ``-1`` for none (e.g.
            the ``.table`` of :class:`bastion.text.transformer_training.WordPieceA2T`); needed
            when ``substitute_rate > 0``.
        batch_size: noisy copies per forward pass.

    Raises:
        ConfigError: naming the ``smoothing.*`` field for a bad setting.
    """

    def __init__(
        self,
        base: TransformerTextClassifier,
        *,
        samples: int = 16,
        mask_rate: float = 0.2,
        substitute_rate: float = 0.0,
        table: SubstitutionTable | Tensor | None = None,
        seed: int = 0,
        aggregate: Aggregate = "mean",
        batch_size: int = 256,
    ):
        if not isinstance(base, TransformerTextClassifier):
            raise ConfigError(
                f"smoothing.base: expected a TransformerTextClassifier, got {type(base).__name__}"
            )
        self._settings(samples, seed, aggregate)
        self.rows_per_batch = _check_int("batch_size", batch_size, 1)
        tok = base.tokenizer
        mask_id = tok.mask_token_id if tok.mask_token_id is not None else tok.unk_token_id
        fixed = torch.tensor(sorted(set(tok.all_special_ids)), dtype=torch.int64)
        self.noise = TokenNoise(
            mask_rate=mask_rate,
            substitute_rate=substitute_rate,
            table=table,
            mask_id=int(mask_id),
            fixed=fixed,
        )
        super().__init__(base.model, tok, sanitizer=base.sanitizer, batch_size=base.batch_size)
        self.base = base

    def noisy_rows(self, row: Tensor) -> Tensor:
        """The ``(samples, L)`` noisy copies of one tokenised text ``row`` ``(1, L)``."""
        return self.noise.copies(row, self.samples, [text_seed(row[0], self.seed)])

    def __call__(self, texts: Sequence[str]) -> Tensor:
        """Smoothed probabilities ``(N, C)`` float32 on the CPU; rows sum to 1."""
        if not self.noise.active:
            return self.base(texts)
        if not texts:
            return torch.zeros((0, self.model.num_classes))
        copies: list[list[int]] = []
        for row in self.token_ids(texts):
            copies += self.noisy_rows(torch.tensor([row], dtype=torch.int64)).tolist()
        return self.pool(self.logits_of_rows(copies, self.rows_per_batch))

    def saliency_rows(self, row: Tensor) -> Tensor:
        """The noisy copies of ``row`` (see :meth:`TransformerTextClassifier.saliency_rows`)."""
        return self.noisy_rows(row) if self.noise.active else row


def smooth_classifier(
    base: TextClassifier | TransformerTextClassifier, **settings: Any
) -> SmoothedTextClassifier | SmoothedTransformerClassifier:
    """Randomized smoothing of any text classifier: :class:`SmoothedTransformerClassifier` for a
    transformer (noise on word pieces; ``table=`` for substitutes), else
    :class:`SmoothedTextClassifier` (noise on words; ``candidates=`` for substitutes).
    ``settings`` are the keyword arguments of the class chosen."""
    if isinstance(base, TransformerTextClassifier):
        return SmoothedTransformerClassifier(base, **settings)
    return SmoothedTextClassifier(base, **settings)
