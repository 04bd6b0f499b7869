"""Fine-tuning transformer text classifiers, plainly or with A2T.

:func:`train_transformer` fine-tunes a :class:`~bastion.text.transformer.TransformerTextModel`
end to end (Devlin et al. 2019): AdamW with linear warm-up and decay, gradient clipping,
gradient accumulation (``accumulation`` micro-batches per optimiser step), length bucketing
(batches of texts of similar length, so little padding is computed) and bf16 autocast where the
CPU has native bf16 and a short probe finds it faster than fp32. The weights of the best
validation epoch are kept. Dropout draws from the global RNG inside
``torch.random.fork_rng`` seeded with ``settings.seed``, so a run is reproducible and the
caller's RNG state is left as it was.

:class:`WordPieceA2T` is A2T (Yoo and Qi 2021) on word pieces: the cheap attack ranks tokens by
gradient x embedding and swaps the most important whole-word tokens for the embedding neighbour
with the largest first-order loss rise (the machinery of :class:`bastion.text.A2TAugmenter`),
never a token that is followed by a ``##`` continuation (that would change part of a word).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.errors import ConfigError
from bastion.text.candidates import stop_words
from bastion.text.training import A2TAugmenter, SubstitutionTable
from bastion.text.transformer import TransformerTextModel, WordPieceNeighbours

Precision = Literal["auto", "fp32", "bf16"]
TrainCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TransformerTrainSettings:
    """Fine-tuning settings.

    ``batch_size`` texts per micro-batch, ``accumulation`` micro-batches per optimiser step
    (effective batch ``batch_size * accumulation``); ``warmup_share`` of the steps warm the
    learning rate up linearly, the rest decay it linearly to 0. ``precision``: ``fp32``,
    ``bf16`` (autocast; refused where the CPU lacks bf16) or ``auto`` (bf16 when the CPU has it
    and a probe of two steps each finds it faster).
    """

    epochs: int = 2
    batch_size: int = 32
    accumulation: int = 1
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_share: float = 0.1
    max_grad_norm: float = 1.0
    bucketing: bool = True
    precision: Precision = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "accumulation"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(
                    f"text.transformer.{name}: expected a positive integer, got {v!r}"
                )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"text.transformer.lr: expected a positive number, got {self.lr!r}")
        if not 0.0 <= self.warmup_share < 1.0:
            raise ConfigError(
                f"text.transformer.warmup_share: expected 0 <= share < 1, got {self.warmup_share}"
            )
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(
                f"text.transformer.precision: expected auto, fp32 or bf16, got {self.precision!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def length_batches(
    lengths: Sequence[int], batch_size: int, generator: torch.Generator, *, bucketing: bool
) -> list[Tensor]:
    """Index batches over ``len(lengths)`` examples in a seeded random order.

    With ``bucketing`` the shuffled examples are cut into pools of ``50 * batch_size``, each
    pool sorted by length and cut into batches, and the batches shuffled: every batch holds
    texts of similar length (little padding) while the epoch order stays random (the
    bucket iterator of torchtext; Khomenko et al. 2016).
    """
    n = len(lengths)
    perm = torch.randperm(n, generator=generator)
    if not bucketing:
        return [perm[s : s + batch_size] for s in range(0, n, batch_size)]
    pool = 50 * batch_size
    batches: list[Tensor] = []
    for s in range(0, n, pool):
        chunk = perm[s : s + pool]
        chunk = chunk[torch.argsort(torch.tensor([lengths[int(i)] for i in chunk]), stable=True)]
        batches.extend(chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size))
    order = torch.randperm(len(batches), generator=generator)
    return [batches[int(i)] for i in order]


def _pad(rows: Sequence[Sequence[int]], pad_id: int) -> Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), pad_id, dtype=torch.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(list(r), dtype=torch.int64)
    return out


class WordPieceA2T(A2TAugmenter):
    """A2T (Yoo and Qi 2021) on word pieces (see the module docstring).

    Args:
        neighbours: whole-word embedding neighbours of the model being trained, taken once
            before fine-tuning (cosine ``>= neighbours.min_cosine``, ``neighbours.k`` each);
            stop words get no candidates.
        continuation: ``(V,)`` bool, the tokens that continue the previous word (``##...``).
        batch_share, max_share, weight: as :class:`bastion.text.A2TAugmenter`.
        present: optional ids; only these tokens get candidate rows (the others none), which
            keeps building the table cheap when given the training texts' tokens.
    """

    def __init__(
        self,
        neighbours: WordPieceNeighbours,
        continuation: Tensor,
        *,
        batch_share: float = 0.5,
        max_share: float = 0.25,
        weight: float = 1.0,
        present: Tensor | None = None,
        chunk: int = 2048,
    ):
        stop = stop_words()
        v = len(neighbours.tokens)
        is_stop = torch.tensor([t in stop for t in neighbours.tokens], dtype=torch.bool)
        table = torch.full((v, neighbours.k), -1, dtype=torch.int64)
        eligible = neighbours.whole_word & ~is_stop
        if present is not None:  # only the tokens the training texts hold need rows
            seen = torch.zeros(v, dtype=torch.bool)
            seen[present.flatten()] = True
            eligible &= seen
        sources = eligible.nonzero().flatten()
        for s in range(0, len(sources), chunk):
            ids = sources[s : s + chunk]
            values, indices = neighbours.neighbour_ids(ids)
            ok = (values >= neighbours.min_cosine) & ~is_stop[indices]
            cand = torch.where(ok, indices, torch.full_like(indices, -1))
            # the valid candidates first in each row, most similar first
            cand = torch.gather(cand, 1, torch.argsort((cand < 0).int(), dim=1, stable=True))
            table[ids] = cand
        sub = SubstitutionTable.__new__(SubstitutionTable)
        sub.table = table
        super().__init__(sub, batch_share=batch_share, max_share=max_share, weight=weight)
        if continuation.shape != (v,):
            raise ConfigError(
                f"continuation: expected shape ({v},), got {tuple(continuation.shape)}"
            )
        self.continuation = continuation.bool()

    def perturb(self, model: Any, ids: Tensor, y: Tensor) -> Tensor:
        """Adversarial ids ``(B, L)`` for ids ``(B, L)`` and labels ``(B,)``."""
        adv = super().perturb(model, ids, y)
        cont = self.continuation.to(ids.device)[ids]
        split = torch.zeros_like(cont)
        split[:, :-1] = cont[:, 1:]  # the next token continues this word
        return torch.where(split, ids, adv)


def _accuracy(
    model: TransformerTextModel, rows: Sequence[Sequence[int]], labels: Tensor, batch: int = 64
) -> float:
    if not rows:
        return float("nan")
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    correct = 0
    model.eval()
    with torch.inference_mode():
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            ids = _pad([rows[i] for i in idx], model.pad_id)
            pred = model(ids).argmax(dim=1)
            correct += int((pred == labels[idx]).sum())
    return correct / len(rows)


def _probe_bf16(
    model: TransformerTextModel, ids: Tensor, y: Tensor, steps: int = 2
) -> dict[str, float]:
    """Seconds per forward+backward in fp32 and bf16 autocast on one batch (no update)."""
    out: dict[str, float] = {}
    for name, enabled in (("fp32", False), ("bf16", True)):
        best = math.inf
        for _ in range(steps):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
                loss = F.cross_entropy(model(ids).float(), y)
            loss.backward()  # type: ignore[no-untyped-call]
            best = min(best, time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
        out[name] = best
    return out


def train_transformer(
    model: TransformerTextModel,
    rows: Sequence[Sequence[int]],
    labels: Sequence[int],
    settings: TransformerTrainSettings,
    *,
    val: tuple[Sequence[Sequence[int]], Sequence[int]] | None = None,
    augmenter: A2TAugmenter | None = None,
    callback: TrainCallback | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model`` in place on tokenised texts ``rows`` (lists of ids, already
    truncated) with labels ``(N,)``.

    Loss per micro-batch: ``CE(clean)`` plus, with ``augmenter``,
    ``augmenter.weight * CE(adversarial copy of batch_share of it)``; divided by
    ``accumulation``. Returns a JSON-ready history: per-epoch loss, train and validation
    accuracy, the best epoch (its weights restored), the precision used (with the probe's
    timings) and the wall time.
    """
    if len(rows) != len(labels) or not rows:
        raise ConfigError(
            f"training data: expected as many labels as texts (> 0), got {len(rows)} texts and "
            f"{len(labels)} labels"
        )
    s = settings
    y_all = torch.tensor(list(labels), dtype=torch.int64)
    val_rows, val_y = (list(val[0]), torch.tensor(list(val[1]))) if val is not None else ([], None)
    lengths = [len(r) for r in rows]
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        gen = torch.Generator().manual_seed(s.seed)
        if s.precision == "bf16" and not cpu_has_bf16():
            raise ConfigError("text.transformer.precision: bf16 needs a CPU with native bf16")
        probe: dict[str, float] | None = None
        use_bf16 = s.precision == "bf16"
        if s.precision == "auto" and cpu_has_bf16():
            first = torch.argsort(torch.tensor(lengths), descending=True)[: s.batch_size]
            model.train()
            probe = _probe_bf16(
                model, _pad([rows[int(i)] for i in first], model.pad_id), y_all[first]
            )
            use_bf16 = probe["bf16"] < probe["fp32"]
        decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "LayerNorm" not in n]
        no_decay = [
            p for n, p in model.named_parameters() if not (p.ndim > 1 and "LayerNorm" not in n)
        ]
        opt = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": s.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=s.lr,
        )
        micro_per_epoch = math.ceil(len(rows) / s.batch_size)
        total_steps = max(1, s.epochs * math.ceil(micro_per_epoch / s.accumulation))
        warm = max(1, round(s.warmup_share * total_steps)) if s.warmup_share > 0 else 0

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return max(0.0, (total_steps - step) / max(1, total_steps - warm))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        history: list[dict[str, float]] = []
        best_acc, best_epoch = -1.0, 0
        best_state = copy.deepcopy(model.state_dict())
        for epoch in range(1, s.epochs + 1):
            model.train()
            batches = length_batches(lengths, s.batch_size, gen, bucketing=s.bucketing)
            total_loss, total_correct, seen = 0.0, 0, 0
            opt.zero_grad(set_to_none=True)
            for b, idx in enumerate(batches):
                xb, yb = _pad([rows[int(i)] for i in idx], model.pad_id), y_all[idx]
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                    logits = model(xb).float()
                    loss = F.cross_entropy(logits, yb)
                    if augmenter is not None:
                        n_adv = max(1, round(augmenter.batch_share * len(idx)))
                        pick = torch.randperm(len(idx), generator=gen)[:n_adv]
                        adv = augmenter.perturb(cast(Any, model), xb[pick], yb[pick])
                        adv_logits = model(adv).float()
                        loss = loss + augmenter.weight * F.cross_entropy(adv_logits, yb[pick])
                (loss / s.accumulation).backward()  # type: ignore[no-untyped-call]
                last = b + 1 == len(batches)
                if (b + 1) % s.accumulation == 0 or last:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), s.max_grad_norm)
                    opt.step()
                    sched.step()
                    opt.zero_grad(set_to_none=True)
                total_loss += float(loss.detach()) * len(idx)
                correct = int((logits.detach().argmax(dim=1) == yb).sum())
                total_correct += correct
                seen += len(idx)
                if callback is not None:
                    callback(
                        {
                            "epoch": epoch,
                            "epochs": s.epochs,
                            "batch": b + 1,
                            "batches": len(batches),
                            "loss": float(loss.detach()),
                            "accuracy": correct / len(idx),
                        }
                    )
            val_acc = _accuracy(model, val_rows, val_y) if val_y is not None else float("nan")
            record = {
                "epoch": epoch,
                "train_loss": total_loss / seen,
                "train_accuracy": total_correct / seen,
                "val_clean_accuracy": val_acc,
            }
            history.append(record)
            if callback is not None:
                callback({**record, "epochs": s.epochs, "end_of_epoch": True})
            score = val_acc if val_y is not None else float(epoch)
            if score > best_acc:
                best_acc, best_epoch = score, epoch
                best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    return {
        "settings": s.to_dict(),
        "history": history,
        "best_epoch": best_epoch,
        "precision": "bf16" if use_bf16 else "fp32",
        "precision_probe_s": probe,
        "train_seconds": round(time.perf_counter() - started, 3),
        "augmentation": augmenter.params() if augmenter is not None else None,
    }
