"""Training text classifiers, plainly or with A2T-style adversarial augmentation.

:func:`train_text_model` runs Adam over shuffled mini-batches (order from a seeded
``torch.Generator``), evaluates on a validation set after each epoch and keeps the weights of
the best validation epoch.

:class:`A2TAugmenter` implements the cheap attack of A2T (Yoo and Qi, 2021): on a share of every
batch it ranks tokens by gradient x embedding and replaces the most important ones (at most
``max_share`` of the tokens, never stop words) by the substitution candidate with the largest
first-order loss increase ``grad . (e_candidate - e_word)``. Candidates come from a fixed
:class:`SubstitutionTable` (synonym lexicon and/or embedding neighbours), so training sees the
same kind of substitutions the word attack makes. The loss is ``CE(clean) + weight * CE(adv)``.

With ``noise=`` (a :class:`bastion.text.smoothing.TokenNoise`) both terms see noisy copies
instead: the clean batch and the A2T batch get random word masking and substitution, the noise
a :class:`~bastion.text.smoothing.SmoothedTextClassifier` adds at test time, so the model learns
to classify such copies (the training of SAFER, Ye et al. 2020, and RanMASK, Zeng et al. 2021).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.errors import ConfigError
from bastion.text.candidates import CandidateSource, stop_words
from bastion.text.models import TextModel
from bastion.text.vocab import UNK_ID, Vocabulary

if TYPE_CHECKING:
    from bastion.text.smoothing import TokenNoise

TrainCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TextTrainSettings:
    """Optimiser settings: Adam with ``lr`` and ``weight_decay``, ``epochs`` passes."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"training.{name}: expected a positive integer, got {v!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"training.lr: expected a positive number, got {self.lr!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SubstitutionTable:
    """``(V, K)`` candidate ids per vocabulary id (``-1`` = none) for id-space substitution.

    Built from a candidate source on each token's text; a candidate outside the vocabulary maps
    to ``<unk>`` (that is what the word attack's out-of-vocabulary synonym becomes). With
    ``unknown=True`` every substitutable word also gets ``<unk>`` as a candidate: what a typo,
    homoglyph or invisible character turns a word into for a word-level model, so A2T also
    trains against character attacks. Special tokens, stop words and non-alphabetic tokens get
    no candidates.
    """

    def __init__(
        self, vocab: Vocabulary, source: CandidateSource, *, k: int = 16, unknown: bool = False
    ):
        stop = stop_words()
        table = torch.full((len(vocab), k), -1, dtype=torch.int64)
        for i, token in enumerate(vocab.tokens):
            if i < 2 or token in stop or not token.isalpha():
                continue
            ids: list[int] = []
            for cand in source(token):
                if cand in stop:
                    continue
                j = vocab.id_of(cand)
                if j != i and j not in ids:
                    ids.append(j)
                if len(ids) == k - int(unknown):
                    break
            if unknown and UNK_ID not in ids:
                ids.append(UNK_ID)
            if ids:
                table[i, : len(ids)] = torch.tensor(ids)
        self.table = table

    @property
    def coverage(self) -> float:
        """Share of vocabulary ids with at least one candidate."""
        return float((self.table[:, 0] >= 0).float().mean())


class A2TAugmenter:
    """Gradient-guided substitution on a share of each batch (A2T, Yoo and Qi, 2021).

    Args:
        table: substitution candidates in id space.
        batch_share: share of each batch that gets an adversarial copy.
        max_share: at most this share of a text's tokens is substituted (at least one).
        weight: weight of the adversarial loss term.
    """

    def __init__(
        self,
        table: SubstitutionTable,
        *,
        batch_share: float = 0.5,
        max_share: float = 0.25,
        weight: float = 1.0,
    ):
        if not 0.0 < batch_share <= 1.0 or not 0.0 < max_share <= 1.0:
            raise ConfigError("hardening: batch_share and max_share must lie in (0, 1]")
        self.table = table
        self.batch_share = batch_share
        self.max_share = max_share
        self.weight = weight

    def params(self) -> dict[str, Any]:
        return {
            "method": "a2t",
            "batch_share": self.batch_share,
            "max_share": self.max_share,
            "weight": self.weight,
            "table_coverage": round(self.table.coverage, 4),
        }

    def perturb(self, model: TextModel, ids: Tensor, y: Tensor) -> Tensor:
        """Adversarial ids ``(B, L)`` for ids ``(B, L)`` and labels ``(B,)`` (no grad kept)."""
        table = self.table.table.to(ids.device)
        was_training = model.training
        model.eval()
        with torch.enable_grad():
            emb = model.embed(ids).detach().requires_grad_(True)
            loss = F.cross_entropy(model.forward_embedded(emb, ids), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, emb)
        model.train(was_training)
        with torch.no_grad():
            emb = emb.detach()
            cands = table[ids]  # (B, L, K)
            valid = cands >= 0
            has = valid.any(dim=2) & (ids > UNK_ID)
            importance = (-(grad * emb).sum(dim=2)).masked_fill(~has, -math.inf)
            n_tokens = (ids != 0).sum(dim=1)
            budget = (n_tokens.float() * self.max_share).floor().clamp_min(1).long()
            order = importance.argsort(dim=1, descending=True)
            rank = torch.empty_like(order)
            rank.scatter_(1, order, torch.arange(ids.shape[1], device=ids.device).expand_as(order))
            chosen = (rank < budget[:, None]) & has
            cand_emb = model.embed(cands.clamp_min(0))  # (B, L, K, D)
            gain = (grad[:, :, None, :] * (cand_emb - emb[:, :, None, :])).sum(dim=3)
            gain = gain.masked_fill(~valid, -math.inf)
            best_gain, best = gain.max(dim=2)
            replace = chosen & (best_gain > 0)
            new_ids = cands.gather(2, best.unsqueeze(2)).squeeze(2)
            return torch.where(replace, new_ids, ids)


def accuracy_of(model: TextModel, ids: Tensor, y: Tensor, *, batch_size: int = 1024) -> float:
    """Clean accuracy of ``model`` on ids ``(N, L)`` with labels ``(N,)``."""
    if ids.shape[0] == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, ids.shape[0], batch_size):
            pred = model(ids[i : i + batch_size]).argmax(dim=1)
            correct += int((pred == y[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / ids.shape[0]


def train_text_model(
    model: TextModel,
    ids: Tensor,
    labels: Tensor,
    settings: TextTrainSettings,
    *,
    val: tuple[Tensor, Tensor] | None = None,
    augmenter: A2TAugmenter | None = None,
    noise: TokenNoise | None = None,
    callback: TrainCallback | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place on ids ``(N, L)`` int64 and labels ``(N,)`` int64.

    ``noise`` (random word masking / substitution, drawn from a generator seeded with
    ``settings.seed + 2``) is applied to every training batch, and to the A2T copies after the
    augmenter has made them; validation stays clean.

    Returns a JSON-ready history: per-epoch loss, train and validation accuracy, the best epoch
    (by validation accuracy; its weights are restored) and the settings. ``callback`` receives
    the dict events :class:`bastion.progress.ProgressReporter` understands.
    """
    if ids.ndim != 2 or labels.shape != (ids.shape[0],):
        raise ConfigError(
            f"training data: expected ids (N, L) and labels (N,), got {tuple(ids.shape)} and "
            f"{tuple(labels.shape)}"
        )
    gen = torch.Generator().manual_seed(settings.seed)
    model.set_generator(torch.Generator().manual_seed(settings.seed + 1))
    noise_gen = torch.Generator().manual_seed(settings.seed + 2)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    n = ids.shape[0]
    batches = math.ceil(n / settings.batch_size)
    history: list[dict[str, float]] = []
    best_acc, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    for epoch in range(1, settings.epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=gen)
        total_loss, total_correct = 0.0, 0
        for b in range(batches):
            idx = perm[b * settings.batch_size : (b + 1) * settings.batch_size]
            xb, yb = ids[idx], labels[idx]
            logits = model(noise(xb, noise_gen) if noise is not None else xb)
            loss = F.cross_entropy(logits, yb)
            if augmenter is not None:
                n_adv = max(1, round(augmenter.batch_share * len(idx)))
                pick = torch.randperm(len(idx), generator=gen)[:n_adv]
                adv = augmenter.perturb(model, xb[pick], yb[pick])
                if noise is not None:
                    adv = noise(adv, noise_gen)
                loss = loss + augmenter.weight * F.cross_entropy(model(adv), yb[pick])
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            with torch.no_grad():
                model.embedding.weight[0].zero_()
            total_loss += float(loss.detach()) * len(idx)
            batch_correct = int((logits.argmax(dim=1) == yb).sum())
            total_correct += batch_correct
            if callback is not None:
                callback(
                    {
                        "epoch": epoch,
                        "epochs": settings.epochs,
                        "batch": b + 1,
                        "batches": batches,
                        "loss": float(loss.detach()),
                        "accuracy": batch_correct / len(idx),
                    }
                )
        val_acc = accuracy_of(model, *val) if val is not None else float("nan")
        record = {
            "epoch": epoch,
            "train_loss": total_loss / n,
            "train_accuracy": total_correct / n,
            "val_clean_accuracy": val_acc,
        }
        history.append(record)
        if callback is not None:
            callback({**record, "epochs": settings.epochs, "end_of_epoch": True})
        score = val_acc if val is not None else float(epoch)
        if score > best_acc:
            best_acc, best_epoch, best_state = score, epoch, copy.deepcopy(model.state_dict())
    model.set_generator(None)
    model.load_state_dict(best_state)
    model.eval()
    return {
        "settings": settings.to_dict(),
        "history": history,
        "best_epoch": best_epoch,
        "augmentation": augmenter.params() if augmenter is not None else None,
        "noise": noise.params() if noise is not None else None,
    }
