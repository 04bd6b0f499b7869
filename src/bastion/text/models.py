"""Text classifiers from token ids ``(N, L)`` int64 to logits ``(N, C)``.

Every model embeds ids with :meth:`TextModel.embed` (``self.embedding``; row 0, padding, is
zero; with ``spec.synonym_codes`` each id is first replaced by its synonym-cluster code, see
:mod:`bastion.text.synonym_encoding`) and exposes
:meth:`TextModel.forward_embedded`, the same computation from the embedded sequence
``(N, L, D)``, so white-box attacks can take gradients with respect to word embeddings.

- :class:`WordCNN`: convolutional sentence classifier (Kim, 2014): parallel 1-D convolutions of
  several widths, ReLU, max-pool over time, dropout, linear.
- :class:`BiLSTM`: bidirectional LSTM with mean and max pooling over non-padding positions.
- :class:`NGramBag`: fastText-style bag of words and hashed word n-grams (Joulin et al., 2017):
  average of unigram and hashed n-gram embeddings, linear.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from bastion.errors import ConfigError

TextArch = Literal["word_cnn", "bilstm", "ngram_bag"]
TEXT_ARCHS: tuple[str, ...] = ("word_cnn", "bilstm", "ngram_bag")

# Multipliers of the n-gram hash (odd, large; fixed so saved models stay valid).
_HASH_MULTIPLIERS = (1_000_003, 998_244_353, 2_147_483_629)


@dataclass(frozen=True)
class TextModelSpec:
    """Everything needed to rebuild a text model (stored in its JSON sidecar)."""

    arch: TextArch
    vocab_size: int
    num_classes: int
    max_length: int
    embed_dim: int = 64
    dropout: float = 0.5
    filter_sizes: tuple[int, ...] = (3, 4, 5)
    num_filters: int = 64
    hidden_size: int = 64
    ngram: int = 2
    hash_buckets: int = 1 << 16
    classes: tuple[str, ...] = field(default=())
    synonym_codes: bool = False

    def __post_init__(self) -> None:
        if self.arch not in TEXT_ARCHS:
            raise ConfigError(f"model.arch: expected one of {TEXT_ARCHS}, got {self.arch!r}")
        for name in ("vocab_size", "num_classes", "max_length", "embed_dim", "num_filters"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"model.{name}: expected a positive integer, got {value!r}")
        if self.vocab_size < 3 or self.num_classes < 2:
            raise ConfigError("model: expected vocab_size >= 3 and num_classes >= 2")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout: expected 0 <= dropout < 1, got {self.dropout!r}")
        if not self.filter_sizes or any(k < 1 for k in self.filter_sizes):
            raise ConfigError(
                f"model.filter_sizes: expected positive widths, got {self.filter_sizes}"
            )
        if self.arch == "word_cnn" and max(self.filter_sizes) > self.max_length:
            raise ConfigError(
                f"model.filter_sizes: widest filter {max(self.filter_sizes)} exceeds max_length "
                f"{self.max_length}"
            )
        if not 1 <= self.ngram <= len(_HASH_MULTIPLIERS) or self.hash_buckets < 1:
            raise ConfigError(
                f"model.ngram: expected 1..{len(_HASH_MULTIPLIERS)} with hash_buckets >= 1"
            )
        if self.classes and len(self.classes) != self.num_classes:
            raise ConfigError(f"model.classes: expected {self.num_classes} names")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["filter_sizes"] = list(self.filter_sizes)
        d["classes"] = list(self.classes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TextModelSpec:
        d = dict(d)
        d["filter_sizes"] = tuple(d.get("filter_sizes", (3, 4, 5)))
        d["classes"] = tuple(d.get("classes", ()))
        return cls(**d)


class SeededDropout(nn.Module):
    """Inverted dropout whose masks come from ``self.generator`` when one is set.

    ``nn.Dropout`` draws from the global RNG; the trainer sets ``generator`` so that training
    is reproducible without seeding globally. In eval mode it is the identity.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.generator: torch.Generator | None = None

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape, generator=self.generator, device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)


class TextModel(nn.Module):
    """Base of the text models: ``forward(ids)`` = ``forward_embedded(embedding(ids), ids)``."""

    def __init__(self, spec: TextModelSpec):
        super().__init__()
        self.spec = spec
        self.embedding = nn.Embedding(spec.vocab_size, spec.embed_dim, padding_idx=0)
        self.dropout = SeededDropout(spec.dropout)
        self.codes: Tensor | None
        if spec.synonym_codes:
            self.register_buffer("codes", torch.arange(spec.vocab_size, dtype=torch.int64))
        else:
            self.codes = None

    def set_codes(self, codes: Tensor) -> None:
        """Install synonym-cluster codes ``(V,)`` int64 (needs ``spec.synonym_codes``)."""
        if self.codes is None:
            raise ConfigError("model: synonym codes need a spec with synonym_codes=True")
        if codes.shape != self.codes.shape or codes.dtype != torch.int64:
            raise ConfigError(
                f"codes: expected int64 of shape {tuple(self.codes.shape)}, got "
                f"{codes.dtype} {tuple(codes.shape)}"
            )
        if int(codes.min()) < 0 or int(codes.max()) >= self.spec.vocab_size:
            raise ConfigError("codes: expected vocabulary ids")
        self.codes.copy_(codes.to(self.codes.device))

    def embed(self, ids: Tensor) -> Tensor:
        """Word embeddings ``(N, L, D)`` of ids ``(N, L)`` (through the synonym codes if any)."""
        if self.codes is not None:
            ids = self.codes[ids]
        out: Tensor = self.embedding(ids)
        return out

    def set_generator(self, generator: torch.Generator | None) -> None:
        """Draw dropout masks from ``generator`` (``None``: the global RNG)."""
        self.dropout.generator = generator

    def forward(self, ids: Tensor) -> Tensor:
        """Logits ``(N, C)`` from ids ``(N, L)`` int64."""
        return self.forward_embedded(self.embed(ids), ids)

    def forward_embedded(self, embedded: Tensor, ids: Tensor) -> Tensor:
        """Logits ``(N, C)`` from word embeddings ``(N, L, D)`` (``ids`` gives the padding mask)."""
        raise NotImplementedError


class WordCNN(TextModel):
    """Kim (2014) CNN for sentence classification (random, trainable embeddings)."""

    def __init__(self, spec: TextModelSpec):
        super().__init__(spec)
        self.convs = nn.ModuleList(
            nn.Conv1d(spec.embed_dim, spec.num_filters, k) for k in spec.filter_sizes
        )
        self.fc = nn.Linear(spec.num_filters * len(spec.filter_sizes), spec.num_classes)

    def forward_embedded(self, embedded: Tensor, ids: Tensor) -> Tensor:
        h = embedded.transpose(1, 2)
        pooled = [torch.relu(conv(h)).amax(dim=2) for conv in self.convs]
        out: Tensor = self.fc(self.dropout(torch.cat(pooled, dim=1)))
        return out


class BiLSTM(TextModel):
    """One-layer bidirectional LSTM; mean and max pooling over non-padding positions."""

    def __init__(self, spec: TextModelSpec):
        super().__init__(spec)
        self.lstm = nn.LSTM(spec.embed_dim, spec.hidden_size, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(4 * spec.hidden_size, spec.num_classes)

    def forward_embedded(self, embedded: Tensor, ids: Tensor) -> Tensor:
        out, _ = self.lstm(embedded)
        mask = (ids != 0).unsqueeze(2).to(out.dtype)
        count = mask.sum(dim=1).clamp_min(1.0)
        mean = (out * mask).sum(dim=1) / count
        mx = out.masked_fill(mask == 0, -1e4).amax(dim=1)
        result: Tensor = self.fc(self.dropout(torch.cat([mean, mx], dim=1)))
        return result


class NGramBag(TextModel):
    """fastText-style classifier: mean of word and hashed n-gram embeddings, then linear."""

    def __init__(self, spec: TextModelSpec):
        super().__init__(spec)
        self.ngram_embedding = nn.Embedding(spec.hash_buckets, spec.embed_dim)
        nn.init.normal_(self.ngram_embedding.weight, std=0.01)
        self.fc = nn.Linear(spec.embed_dim, spec.num_classes)

    def ngram_ids(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """Hashed n-gram ids ``(N, M)`` for n = 2..ngram and their validity mask ``(N, M)``."""
        parts: list[Tensor] = []
        masks: list[Tensor] = []
        for n in range(2, self.spec.ngram + 1):
            if ids.shape[1] < n:
                continue
            h = torch.zeros_like(ids[:, : ids.shape[1] - n + 1])
            valid = torch.ones_like(h, dtype=torch.bool)
            for j in range(n):
                window = ids[:, j : ids.shape[1] - n + 1 + j]
                h = h * _HASH_MULTIPLIERS[j] + window + 1
                h = h % (1 << 61)
                valid &= window != 0
            parts.append(h % self.spec.hash_buckets)
            masks.append(valid)
        if not parts:
            empty = ids[:, :0]
            return empty, empty.bool()
        return torch.cat(parts, dim=1), torch.cat(masks, dim=1)

    def forward_embedded(self, embedded: Tensor, ids: Tensor) -> Tensor:
        word_mask = (ids != 0).unsqueeze(2).to(embedded.dtype)
        total = (embedded * word_mask).sum(dim=1)
        count = word_mask.sum(dim=1)
        grams, gmask = self.ngram_ids(ids)
        if grams.shape[1]:
            gm = gmask.unsqueeze(2).to(embedded.dtype)
            total = total + (self.ngram_embedding(grams) * gm).sum(dim=1)
            count = count + gm.sum(dim=1)
        out: Tensor = self.fc(self.dropout(total / count.clamp_min(1.0)))
        return out


def build_text_model(spec: TextModelSpec, *, generator: torch.Generator | None = None) -> TextModel:
    """A freshly initialised model for ``spec``.

    With ``generator`` the initial weights are drawn from it (reproducible without seeding
    globally): every parameter is re-drawn uniformly in ``±1/sqrt(fan_in)`` (word embeddings
    N(0, 0.25^2), n-gram tables N(0, 0.01^2)), the padding row is zeroed.
    """
    model: TextModel
    if spec.arch == "word_cnn":
        model = WordCNN(spec)
    elif spec.arch == "bilstm":
        model = BiLSTM(spec)
    else:
        model = NGramBag(spec)
    if generator is not None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "embedding" in name:
                    scale = 0.01 if name.startswith("ngram") else 0.25
                    p.copy_(torch.randn(p.shape, generator=generator) * scale)
                else:
                    fan_in = (
                        p.shape[1] * (p.shape[2] if p.ndim == 3 else 1)
                        if p.ndim > 1
                        else (p.shape[0])
                    )
                    bound = 1.0 / max(1, fan_in) ** 0.5
                    p.copy_((torch.rand(p.shape, generator=generator) * 2 - 1) * bound)
            model.embedding.weight[0].zero_()
    return model
