"""Pretrained transformer text classifiers, loaded from a local Hugging Face directory.

Everything loads offline: ``HF_HUB_OFFLINE=1`` is set before ``transformers`` is imported and
every ``from_pretrained`` call passes ``local_files_only=True``, so no code path reaches a model
hub. Only safetensors weights are read; a directory with nothing but pickled weights
(``pytorch_model.bin``) is refused.

Two model kinds share one interface (:class:`TransformerTextModel`: token ids ``(N, L)`` int64
-> logits ``(N, C)``, plus :meth:`~TransformerTextModel.embed` and
:meth:`~TransformerTextModel.forward_embedded` so white-box attacks and A2T can take gradients
with respect to the input embeddings, as with the word models of :mod:`bastion.text.models`):

- :class:`PooledEncoderClassifier`: a pretrained encoder (``AutoModel``, e.g. MiniLM), mean
  pooling of the last hidden states over the attention mask (Sentence-BERT, Reimers and
  Gurevych 2019), dropout and a linear head; fine-tuned end to end (Devlin et al. 2019) by
  :func:`bastion.text.transformer_training.train_transformer`.
- :class:`SequenceClassifierModel`: a team's own ``AutoModelForSequenceClassification``
  checkpoint, used as it is (bring your own model).

:func:`save_transformer_model` writes a directory with the encoder (``config.json`` +
``model.safetensors``), the tokenizer files, the head (``head.safetensors``) and a JSON sidecar
(``bastion-text.json``: classes, maximum length, the word vocabulary of the sanitiser's spelling
repair, provenance); :func:`load_transformer_model` reads it back, or a plain Hugging Face
sequence-classification directory. :class:`TransformerTextClassifier` is the callable on raw
strings that attacks and the text guard talk to.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from bastion.errors import AttackInputError, BastionError, ModelFileError
from bastion.text.vocab import Vocabulary

__all__ = [
    "SIDECAR_NAME",
    "TRANSFORMER_FORMAT",
    "LoadedTransformer",
    "PooledEncoderClassifier",
    "SentenceConstraint",
    "SentenceEncoder",
    "SequenceClassifierModel",
    "TransformerTextClassifier",
    "TransformerTextModel",
    "WordPieceNeighbours",
    "is_transformer_dir",
    "load_pretrained_encoder",
    "load_transformer_model",
    "save_transformer_model",
]

TRANSFORMER_FORMAT = "bastion-text-transformer/1"
SIDECAR_NAME = "bastion-text.json"
HEAD_NAME = "head.safetensors"
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model")


def offline_transformers() -> ModuleType:
    """``transformers``, imported with the hub switched off and its progress bars quiet.

    ``HF_HUB_OFFLINE=1`` makes ``huggingface_hub`` refuse network access for the whole process
    (set before the first import; every load also passes ``local_files_only=True``).
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - the extra is installed in the test env
        raise ModelFileError(
            "transformer models need the 'transformers' extra: pip install 'bastion[transformers]'"
        ) from e
    transformers.utils.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    return transformers


def check_model_dir(path: str | os.PathLike[str], *, field: str) -> Path:
    """``path`` as a :class:`Path` if it is a local Hugging Face model directory with
    safetensors weights and a tokenizer; otherwise a :class:`ModelFileError` naming ``field``."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ModelFileError(f"{field}: expected a local model directory, {p} is not a directory")
    if not (p / "config.json").is_file():
        raise ModelFileError(f"{field}: {p} is not a Hugging Face model directory (no config.json)")
    has_weights = (p / "model.safetensors").is_file() or (
        p / "model.safetensors.index.json"
    ).is_file()
    if not has_weights:
        if any(p.glob("pytorch_model*.bin")):
            raise ModelFileError(
                f"{field}: {p} holds only pickled weights (pytorch_model.bin); bastion never "
                "loads pickles: save the model with safetensors (model.safetensors)"
            )
        raise ModelFileError(f"{field}: {p} has no model.safetensors")
    if not any((p / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelFileError(
            f"{field}: {p} has no tokenizer (expected tokenizer.json or vocab.txt beside "
            "config.json)"
        )
    return p


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def load_tokenizer(path: Path, *, field: str) -> Any:
    """The fast tokenizer of a checked model directory, offline."""
    transformers = offline_transformers()
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ModelFileError(
            f"{field}: the tokenizer in {path} cannot be loaded ({_first_line(e)})"
        ) from None
    if not getattr(tok, "is_fast", False):
        raise ModelFileError(
            f"{field}: the tokenizer in {path} is not a fast tokenizer (bastion maps tokens back "
            "to words through tokenizer.json)"
        )
    if tok.pad_token_id is None:
        raise ModelFileError(f"{field}: the tokenizer in {path} has no padding token")
    return tok


def _check_vocab(tokenizer: Any, embedding: nn.Embedding, path: Path, *, field: str) -> None:
    n, rows = len(tokenizer), int(embedding.num_embeddings)
    if n != rows:
        raise ModelFileError(
            f"{field}: the tokenizer in {path} has {n} tokens but the model's input embeddings "
            f"have {rows} rows: tokenizer and model do not belong together"
        )


def load_pretrained_encoder(
    path: str | os.PathLike[str], *, field: str = "text.transformer.path"
) -> tuple[nn.Module, Any]:
    """``(encoder, tokenizer)`` from a local directory (``AutoModel``, offline, safetensors).

    Raises :class:`ModelFileError` naming ``field`` for a missing directory, a directory that
    is not a model, a missing tokenizer, or a tokenizer whose size differs from the model's
    embedding rows.
    """
    p = check_model_dir(path, field=field)
    transformers = offline_transformers()
    tok = load_tokenizer(p, field=field)
    try:
        encoder = transformers.AutoModel.from_pretrained(
            str(p), local_files_only=True, use_safetensors=True
        )
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ModelFileError(
            f"{field}: {p} cannot be loaded as a model ({_first_line(e)})"
        ) from None
    _check_vocab(tok, encoder.get_input_embeddings(), p, field=field)
    return encoder, tok


class TransformerTextModel(nn.Module):
    """Token ids ``(N, L)`` int64 -> logits ``(N, C)``; padding is ``pad_id``.

    Attributes:
        classes: class names in logit order.
        max_length: the longest token sequence the model reads (special tokens included).
        pad_id: the tokenizer's padding id (masked out of attention).
    """

    kind = "base"

    def __init__(self, *, classes: Sequence[str], max_length: int, pad_id: int):
        super().__init__()
        self.classes = tuple(str(c) for c in classes)
        self.max_length = int(max_length)
        self.pad_id = int(pad_id)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def embedding(self) -> nn.Embedding:
        """The input (word-piece) embedding ``(V, D)``."""
        raise NotImplementedError

    def embed(self, ids: Tensor) -> Tensor:
        """Input embeddings ``(N, L, D)`` of ids ``(N, L)``."""
        out: Tensor = self.embedding(ids)
        return out

    def attention_mask(self, ids: Tensor) -> Tensor:
        """``(N, L)`` int64: 1 on tokens, 0 on padding."""
        return (ids != self.pad_id).long()

    def forward(self, ids: Tensor) -> Tensor:
        """Logits ``(N, C)`` from ids ``(N, L)`` int64."""
        return self.forward_embedded(self.embed(ids), ids)

    def forward_embedded(self, embedded: Tensor, ids: Tensor) -> Tensor:
        """Logits ``(N, C)`` from input embeddings ``(N, L, D)`` (``ids`` gives the mask)."""
        raise NotImplementedError


class PooledEncoderClassifier(TransformerTextModel):
    """Pretrained encoder, mean pooling over non-padding tokens, dropout, linear head.

    Args:
        encoder: a Hugging Face base model (``AutoModel``) returning ``last_hidden_state``
            ``(N, L, H)``.
        classes: class names; the head is ``Linear(H, len(classes))``.
        max_length: longest input in tokens.
        pad_id: the tokenizer's padding id.
        dropout: dropout before the head (training only).
        generator: draws the head's initial weights (``N(0, 0.02^2)``, BERT's initialiser).
    """

    kind = "pooled_encoder"

    def __init__(
        self,
        encoder: nn.Module,
        *,
        classes: Sequence[str],
        max_length: int,
        pad_id: int,
        dropout: float = 0.1,
        generator: torch.Generator | None = None,
    ):
        super().__init__(classes=classes, max_length=max_length, pad_id=pad_id)
        if len(self.classes) < 2:
            raise ModelFileError(f"classes: expected at least two, got {list(self.classes)}")
        self.encoder = encoder
        hidden = int(cast(Any, encoder).config.hidden_size)
        self.dropout_p = float(dropout)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, len(self.classes))
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=generator) * 0.02)
            self.head.bias.zero_()

    @property
    def embedding(self) -> nn.Embedding:
        emb: nn.Embedding = self.encoder.get_input_embeddings()  # type: ignore[operator]
        return emb

    def pooled(self, embedded: Tensor, ids: Tensor) -> Tensor:
        """Mean of the last hidden states over non-padding tokens ``(N, H)``."""
        mask = self.attention_mask(ids)
        hidden: Tensor = self.encoder(inputs_embeds=embedded, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(2).to(hidden.dtype)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)

    def forward_embedded(self, embedded: Tensor, ids: Tensor) -> Tensor:
        out: Tensor = self.head(self.dropout(self.pooled(embedded, ids)))
        return out


class SequenceClassifierModel(TransformerTextModel):
    """A Hugging Face ``AutoModelForSequenceClassification`` used as it is."""

    kind = "sequence_classification"

    def __init__(self, hf: nn.Module, *, classes: Sequence[str], max_length: int, pad_id: int):
        super().__init__(classes=classes, max_length=max_length, pad_id=pad_id)
        self.hf = hf

    @property
    def embedding(self) -> nn.Embedding:
        emb: nn.Embedding = self.hf.get_input_embeddings()  # type: ignore[operator]
        return emb

    def forward_embedded(self, embedded: Tensor, ids: Tensor) -> Tensor:
        out: Tensor = self.hf(
            inputs_embeds=embedded, attention_mask=self.attention_mask(ids)
        ).logits
        return out


@dataclass
class LoadedTransformer:
    """What :func:`load_transformer_model` returns.

    Attributes:
        model: the classifier, in eval mode.
        tokenizer: its fast tokenizer.
        vocabulary: the word vocabulary of the sanitiser's spelling repair (``None`` for a
            checkpoint bastion did not train: the guard then repairs nothing).
        metadata: the sidecar's provenance (empty for a foreign checkpoint).
        path: the directory.
    """

    model: TransformerTextModel
    tokenizer: Any
    vocabulary: Vocabulary | None
    metadata: dict[str, Any]
    path: Path


def is_transformer_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory holding a Hugging Face ``config.json``."""
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file()


def save_transformer_model(
    model: TransformerTextModel,
    tokenizer: Any,
    path: str | os.PathLike[str],
    *,
    vocabulary: Vocabulary | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` to the directory ``path`` (replaced as a whole); returns it.

    The directory is written under a temporary name beside ``path`` and renamed, so a reader
    never sees half a model. Weights are safetensors only.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        if isinstance(model, PooledEncoderClassifier):
            model.encoder.save_pretrained(str(tmp))  # type: ignore[operator]
            head = {k: v.detach().contiguous().cpu() for k, v in model.head.state_dict().items()}
            save_file(head, str(tmp / HEAD_NAME), metadata={"format": TRANSFORMER_FORMAT})
            extra: dict[str, Any] = {"dropout": model.dropout_p, "pooling": "mean"}
        elif isinstance(model, SequenceClassifierModel):
            model.hf.save_pretrained(str(tmp))  # type: ignore[operator]
            extra = {}
        else:
            raise ModelFileError(f"model: cannot save a {type(model).__name__}")
        tokenizer.save_pretrained(str(tmp))
        doc = {
            "format": TRANSFORMER_FORMAT,
            "kind": model.kind,
            "classes": list(model.classes),
            "max_length": model.max_length,
            **extra,
            "vocabulary": vocabulary.to_dict() if vocabulary is not None else None,
            "metadata": dict(metadata or {}),
        }
        (tmp / SIDECAR_NAME).write_text(
            json.dumps(doc, ensure_ascii=False, sort_keys=True), encoding="utf-8"
        )
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _read_sidecar(p: Path, field: str) -> dict[str, Any] | None:
    side = p / SIDECAR_NAME
    if not side.is_file():
        return None
    try:
        doc = json.loads(side.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{field}: {side} is not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != TRANSFORMER_FORMAT:
        raise ModelFileError(f"{field}: {side}: expected format {TRANSFORMER_FORMAT!r}")
    return doc


def _hf_classes(config: Any) -> list[str]:
    id2label = getattr(config, "id2label", None) or {}
    n = int(getattr(config, "num_labels", len(id2label)) or len(id2label))
    return [str(id2label.get(i, id2label.get(str(i), i))) for i in range(n)]


def load_transformer_model(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    max_length: int | None = None,
    field: str = "model",
) -> LoadedTransformer:
    """Load a directory written by :func:`save_transformer_model`, or a Hugging Face
    ``*ForSequenceClassification`` checkpoint (classes from ``config.json``'s ``id2label``;
    ``max_length`` defaults to the tokenizer's, capped at 512), offline.

    Errors name ``field``: not a directory, no ``config.json``, pickled weights only, no
    tokenizer, a tokenizer of another size than the embeddings, an encoder without a head.
    """
    p = check_model_dir(path, field=field)
    transformers = offline_transformers()
    tok = load_tokenizer(p, field=field)
    doc = _read_sidecar(p, field)
    model: TransformerTextModel
    try:
        if doc is not None and doc.get("kind") == PooledEncoderClassifier.kind:
            encoder = transformers.AutoModel.from_pretrained(
                str(p), local_files_only=True, use_safetensors=True
            )
            model = PooledEncoderClassifier(
                encoder,
                classes=doc["classes"],
                max_length=max_length or int(doc["max_length"]),
                pad_id=tok.pad_token_id,
                dropout=float(doc.get("dropout", 0.1)),
            )
            try:
                head = load_file(str(p / HEAD_NAME))
            except (SafetensorError, OSError, ValueError) as e:
                raise ModelFileError(
                    f"{field}: {p / HEAD_NAME}: not a safetensors file ({e})"
                ) from None
            try:
                model.head.load_state_dict(head, strict=True)
            except RuntimeError as e:
                raise ModelFileError(
                    f"{field}: {p / HEAD_NAME} does not fit the encoder ({_first_line(e)})"
                ) from None
        else:
            config = transformers.AutoConfig.from_pretrained(str(p), local_files_only=True)
            archs = list(getattr(config, "architectures", None) or [])
            if not any(a.endswith("ForSequenceClassification") for a in archs):
                raise ModelFileError(
                    f"{field}: {p} holds no sequence classifier (config.json architectures: "
                    f"{archs}); fine-tune the encoder with bastion (text.transformer) or give a "
                    "*ForSequenceClassification directory"
                )
            hf = transformers.AutoModelForSequenceClassification.from_pretrained(
                str(p), local_files_only=True, use_safetensors=True
            )
            limit = max_length or int(doc["max_length"]) if doc else max_length
            model = SequenceClassifierModel(
                hf,
                classes=doc["classes"] if doc else _hf_classes(hf.config),
                max_length=limit or min(512, int(tok.model_max_length)),
                pad_id=tok.pad_token_id,
            )
    except (KeyError, TypeError) as e:
        raise ModelFileError(f"{field}: {p / SIDECAR_NAME} is incomplete ({e!r})") from None
    except (OSError, RuntimeError) as e:
        raise ModelFileError(f"{field}: {p} cannot be loaded ({_first_line(e)})") from None
    _check_vocab(tok, model.embedding, p, field=field)
    vocabulary = None
    if doc is not None and doc.get("vocabulary") is not None:
        try:
            vocabulary = Vocabulary.from_dict(doc["vocabulary"])
        except BastionError as e:
            raise ModelFileError(f"{field}: {p / SIDECAR_NAME}: {e}") from None
    meta = doc.get("metadata", {}) if doc is not None else {}
    return LoadedTransformer(
        model=model.to(device).eval(),
        tokenizer=tok,
        vocabulary=vocabulary,
        metadata=dict(meta) if isinstance(meta, dict) else {},
        path=p,
    )


class TransformerTextClassifier:
    """``(model, tokenizer)`` as a function from texts to probabilities.

    Texts are tokenised with truncation at ``model.max_length`` tokens (special tokens
    included); :meth:`token_counts` tells how long each was before truncation. Batches are
    formed from texts of similar length (sorted), padded to their longest member.

    Args:
        model: a :class:`TransformerTextModel`; put in eval mode.
        tokenizer: its fast tokenizer.
        sanitizer: optional ``str -> str`` applied to every text first (the guard).
        batch_size: texts per forward pass.
    """

    def __init__(
        self,
        model: TransformerTextModel,
        tokenizer: Any,
        *,
        sanitizer: Callable[[str], str] | None = None,
        batch_size: int = 64,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.sanitizer = sanitizer
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        return self.model.embedding.weight.device

    def _clean(self, texts: Sequence[str]) -> list[str]:
        if self.sanitizer is not None:
            return [self.sanitizer(t) for t in texts]
        return list(texts)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each (sanitised) text, truncated at ``model.max_length``."""
        enc = self.tokenizer(self._clean(texts), truncation=True, max_length=self.model.max_length)
        return [list(ids) for ids in enc["input_ids"]]

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each (sanitised) text before truncation, special tokens included."""
        enc = self.tokenizer(self._clean(texts), truncation=False)
        return [len(ids) for ids in enc["input_ids"]]

    def pad(self, rows: Sequence[Sequence[int]]) -> Tensor:
        """``(N, max row length)`` int64, right-padded with the model's padding id."""
        width = max((len(r) for r in rows), default=1)
        out = torch.full((len(rows), max(1, width)), self.model.pad_id, dtype=torch.int64)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(list(r), dtype=torch.int64)
        return out

    def logits_of_rows(
        self, rows: Sequence[Sequence[int]], batch_size: int | None = None
    ) -> Tensor:
        """Logits ``(N, C)`` float32 on the CPU of token-id rows (of any lengths), run in
        batches of ``batch_size`` (default ``self.batch_size``) rows of similar length."""
        out = torch.empty((len(rows), self.model.num_classes))
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        step = batch_size or self.batch_size
        with torch.inference_mode():
            for s in range(0, len(order), step):
                idx = order[s : s + step]
                ids = self.pad([rows[i] for i in idx]).to(self.device)
                out[idx] = self.model(ids).float().cpu()
        return out

    def __call__(self, texts: Sequence[str]) -> Tensor:
        """Probabilities ``(N, C)`` float32 on the CPU."""
        if not texts:
            return torch.zeros((0, self.model.num_classes))
        return torch.softmax(self.logits_of_rows(self.token_ids(texts)), dim=1)

    def predict(self, texts: Sequence[str]) -> Tensor:
        """Predicted class indices ``(N,)`` int64."""
        return self(texts).argmax(dim=1)

    def word_saliency(self, words: Sequence[str], label: int) -> Tensor:
        """Per-word importance ``(W,)``: gradient x input embedding, summed over each word's
        word pieces (Simonyan et al. 2014; TextFooler's white-box ranking, Jin et al. 2020).

        ``-grad_e(loss) . e`` is the first-order rise of the cross-entropy of ``label`` if the
        piece's embedding were zeroed. Words past ``max_length`` tokens score 0.
        """
        scores = torch.zeros(len(words))
        cleaned = self._clean([w if w else " " for w in words])
        keep = [i for i, w in enumerate(cleaned) if w.strip()]
        if not keep:
            return scores
        enc = self.tokenizer(
            [cleaned[i] for i in keep],
            is_split_into_words=True,
            truncation=True,
            max_length=self.model.max_length,
        )
        word_ids = enc.word_ids(0)
        row = torch.tensor([enc["input_ids"]], dtype=torch.int64)
        ids = self.saliency_rows(row).to(self.device)
        was_training = self.model.training
        self.model.eval()
        with torch.enable_grad():
            emb = self.model.embed(ids).detach().requires_grad_(True)
            logits = self.model.forward_embedded(emb, ids)
            target = torch.full((ids.shape[0],), label, device=self.device)
            loss = torch.nn.functional.cross_entropy(logits, target)
            (grad,) = torch.autograd.grad(loss, emb)
        self.model.train(was_training)
        # the loss is the mean over the rows: summing the rows' scores gives their mean
        piece = -(grad * emb.detach()).sum(dim=2).sum(dim=0).cpu()
        for t, w in enumerate(word_ids):
            if w is not None:
                scores[keep[w]] += piece[t]
        return scores

    def saliency_rows(self, row: Tensor) -> Tensor:
        """The id rows ``(R, L)`` whose mean loss :meth:`word_saliency` differentiates, for the
        tokenised words ``row`` ``(1, L)``: the row itself here; the smoothed classifier
        (:class:`bastion.text.SmoothedTransformerClassifier`) returns its noisy copies."""
        return row


class WordPieceNeighbours:
    """Substitution candidates from the encoder's own input embedding: the nearest whole-word
    tokens by cosine similarity (TextFooler's counter-fitted neighbours, Jin et al. 2020,
    sec. 3.2, with the target model's embedding standing in).

    Whole-word tokens are alphabetic vocabulary entries of at least ``min_letters`` letters that
    are neither special tokens nor WordPiece continuations (``##...``). A word is looked up as
    one token (lower-cased when the tokenizer lower-cases); a word the tokenizer splits into
    pieces has no candidates.

    Args:
        weight: ``(V, D)`` input embedding aligned with ``tokenizer``; copied and normalised.
        tokenizer: the model's fast tokenizer.
        k: at most this many neighbours per word.
        min_cosine: neighbours need cosine ``>= min_cosine``.
    """

    def __init__(
        self,
        weight: Tensor,
        tokenizer: Any,
        *,
        k: int = 30,
        min_cosine: float = 0.5,
        min_letters: int = 2,
    ):
        vocab: dict[str, int] = tokenizer.get_vocab()
        if weight.ndim != 2 or weight.shape[0] < len(vocab):
            raise AttackInputError(
                f"weight: expected ({len(vocab)}, D) rows for the tokenizer, got "
                f"{tuple(weight.shape)}"
            )
        if not -1.0 <= min_cosine <= 1.0:
            raise AttackInputError(f"min_cosine: expected a value in [-1, 1], got {min_cosine}")
        w = weight.detach().float().cpu()
        self._unit = w / w.norm(dim=1, keepdim=True).clamp_min(1e-8)
        special = set(tokenizer.all_special_ids)
        self.tokens = [""] * w.shape[0]
        allowed = torch.zeros(w.shape[0], dtype=torch.bool)
        for token, i in vocab.items():
            self.tokens[i] = token
            if (
                i not in special
                and token.isascii()
                and token.isalpha()
                and len(token) >= min_letters
            ):
                allowed[i] = True
        self._allowed = allowed
        self._index = vocab
        self.lower = bool(getattr(tokenizer, "do_lower_case", False)) or bool(
            tokenizer.init_kwargs.get("do_lower_case", False)
        )
        self.k = k
        self.min_cosine = min_cosine
        self._cache: dict[str, list[str]] = {}

    @property
    def whole_word(self) -> Tensor:
        """``(V,)`` bool: the tokens that may be substituted and substituted in."""
        return self._allowed.clone()

    def token_id(self, word: str) -> int | None:
        """The id of ``word`` as one whole-word token, else ``None``."""
        i = self._index.get(word.lower() if self.lower else word)
        return i if i is not None and bool(self._allowed[i]) else None

    def neighbour_ids(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """``(values (M, k), indices (M, k))``: cosine and id of the nearest whole-word tokens
        of each id in ``ids`` ``(M,)`` (itself excluded)."""
        sims = self._unit[ids] @ self._unit.T
        sims[:, ~self._allowed] = -2.0
        sims[torch.arange(len(ids)), ids] = -2.0
        top = torch.topk(sims, min(self.k, sims.shape[1]), dim=1)
        return top.values, top.indices

    def __call__(self, word: str) -> list[str]:
        key = word.lower() if self.lower else word
        if key in self._cache:
            return list(self._cache[key])
        i = self.token_id(key)
        result: list[str] = []
        if i is not None:
            values, indices = self.neighbour_ids(torch.tensor([i]))
            result = [
                self.tokens[int(j)]
                for s, j in zip(values[0], indices[0], strict=True)
                if float(s) >= self.min_cosine
            ]
        self._cache[key] = result
        return list(result)

    def cosine(self, a: str, b: str) -> float:
        """Cosine of two whole-word tokens (``nan`` when either is not one)."""
        i, j = self.token_id(a), self.token_id(b)
        if i is None or j is None:
            return float("nan")
        return float(self._unit[i] @ self._unit[j])


class SentenceEncoder:
    """Sentence embeddings by mean pooling an encoder's last hidden states (Sentence-BERT,
    Reimers and Gurevych 2019; the role of the Universal Sentence Encoder in TextFooler, Jin et
    al. 2020, which keeps a substitution only when the sentence similarity stays above a
    threshold).

    Args:
        encoder: a Hugging Face base model (e.g. the pretrained MiniLM, not the fine-tuned one).
        tokenizer: its tokenizer.
        max_length: tokens read per text.
    """

    def __init__(self, encoder: nn.Module, tokenizer: Any, *, max_length: int = 128):
        self.encoder = encoder.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, texts: Sequence[str], *, batch_size: int = 64) -> Tensor:
        """Unit-norm embeddings ``(N, H)`` float32."""
        outs: list[Tensor] = []
        with torch.inference_mode():
            for s in range(0, len(texts), batch_size):
                enc = self.tokenizer(
                    list(texts[s : s + batch_size]),
                    truncation=True,
                    max_length=self.max_length,
                    padding=True,
                    return_tensors="pt",
                )
                hidden = self.encoder(**enc).last_hidden_state.float()
                m = enc["attention_mask"].unsqueeze(2).float()
                pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
                outs.append(torch.nn.functional.normalize(pooled, dim=1))
        if not outs:
            return torch.zeros((0, 0))
        return torch.cat(outs)

    def similarity(self, reference: str, texts: Sequence[str]) -> Tensor:
        """Cosine ``(N,)`` between ``reference`` and each text."""
        if not texts:
            return torch.zeros(0)
        emb = self([reference, *texts])
        return emb[1:] @ emb[0]


class SentenceConstraint:
    """TextFooler's semantic-similarity constraint (Jin et al. 2020, sec. 3.2, step 4) with a
    mean-pooled sentence encoder: a candidate text passes when its cosine with the original
    text is at least ``min_cosine``. Callable as ``(original, texts) -> list[bool]``, the
    ``constraint`` of :class:`bastion.text.WordSubstitution`. ``checked`` and ``rejected`` count
    the candidates seen and refused.
    """

    def __init__(self, encoder: SentenceEncoder, *, min_cosine: float = 0.8):
        if not -1.0 <= min_cosine <= 1.0:
            raise AttackInputError(f"min_cosine: expected a value in [-1, 1], got {min_cosine}")
        self.encoder = encoder
        self.min_cosine = float(min_cosine)
        self.checked = 0
        self.rejected = 0

    def __call__(self, original: str, texts: list[str]) -> list[bool]:
        sims = self.encoder.similarity(original, texts)
        ok = [float(s) >= self.min_cosine for s in sims]
        self.checked += len(ok)
        self.rejected += ok.count(False)
        return ok
