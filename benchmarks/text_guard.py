"""Text guard benchmark: invisible characters of every family against a guarded SMS spam filter.

A word CNN is trained on the SMS Spam Collection (seeded split, the text pipeline's default
model and vocabulary settings) and put behind :class:`bastion.guard.text_guard.TextGuard` with
its defaults. Then, on every spam message of the test split:

- the invisible-character attack, one run per character family (and all of them together),
  attacks the bare model and the guard itself: the attacker queries the guard's answers (a
  rejected text counts as caught), so the guard's sanitiser is in the loop;
- evasion = share of the spam the target classified correctly that the attack gets answered as
  ham (an ``accept`` or a ``flag``); ``unflagged`` = answered as ham with ``accept``.

Also measured: the guard's ham accuracy (share of test ham answered as ham) and the worst
single-request cost (CPU seconds and tracemalloc peak of ``decide_texts`` on 5,000-character
texts built to defeat the spelling repair). Results go to ``benchmarks/results/text-guard.json``
and ``text-guard.md`` (``text-guard-seed<N>.*`` for another ``--seed``; the seed sets the split,
the initialisation, the batch order and, plus one, the attacks).

Usage::

    python benchmarks/text_guard.py --data-dir ../shared/datasets --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bastion.guard.text_guard import TextGuard
from bastion.text import (
    HomoglyphAttack,
    InvisibleCharAttack,
    TextAttack,
    TextClassifier,
    TextModelSpec,
    TextTrainSettings,
    Vocabulary,
    build_text_model,
    load_text_dataset,
    parse_text_config,
    train_text_model,
)
from bastion.text.unicode_tables import (
    INVISIBLE_FAMILIES,
    INVISIBLE_INSERTIONS,
    NARROW_SPACES,
    OTHER_SPACES,
)

RESULTS = Path(__file__).resolve().parent / "results"


class GuardProba:
    """The guard as the attacker sees it: the probabilities of an answered text, and certainty
    of ``caught`` for a rejected or abstained one."""

    def __init__(self, guard: TextGuard, caught: int, num_classes: int) -> None:
        self.guard, self.caught, self.num_classes = guard, caught, num_classes

    def __call__(self, texts: Sequence[str]) -> Tensor:
        rows = []
        for d in self.guard.decide_texts(list(texts)):
            if d.probabilities is None:
                row = torch.zeros(self.num_classes)
                row[self.caught] = 1.0
            else:
                row = torch.tensor(d.probabilities)
            rows.append(row)
        return torch.stack(rows) if rows else torch.zeros((0, self.num_classes))


def _worst_requests(longest: int) -> dict[str, str]:
    gen = random.Random(0)
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < 5000:
        n = gen.randint(3, longest + 1)
        words.append("".join(gen.choice("bcdfghjklmnpqrstvwxz") for _ in range(n)))
    return {
        "one 5000-letter word": "a" * 5000,
        "5000 chars of distinct unknown words": " ".join(words)[:5000],
        "5000 chars of words split by thin spaces": ("fr\u2009ee " * 1000)[:5000],
    }


def _request_cost(guard: TextGuard, texts: list[str]) -> dict[str, float]:
    """CPU seconds and tracemalloc peak of one ``decide_texts`` call, with no repair cached."""
    guard.sanitizer._repairs.clear()
    t0 = time.process_time()
    guard.decide_texts(texts)
    cpu = time.process_time() - t0
    guard.sanitizer._repairs.clear()
    tracemalloc.start()
    try:
        guard.decide_texts(texts)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return {"cpu_s": round(cpu, 4), "peak_mib": round(peak / 2**20, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    cfg = parse_text_config({"dataset": "sms_spam", "training": {"epochs": args.epochs}})
    data = load_text_dataset(
        "sms_spam",
        args.data_dir / "sms_spam",
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=args.seed,
    )
    v, m, t = cfg.vocab, cfg.model, cfg.training
    vocab = Vocabulary.build(
        data.train.texts,
        max_length=v.max_length,
        min_count=v.min_count,
        max_size=v.max_size,
        lower=v.lower,
    )
    spec = TextModelSpec(
        arch=m.arch,
        vocab_size=len(vocab),
        num_classes=data.num_classes,
        max_length=v.max_length,
        embed_dim=m.embed_dim,
        dropout=m.dropout,
        filter_sizes=tuple(m.filter_sizes),
        num_filters=m.num_filters,
        classes=data.classes,
    )
    model = build_text_model(spec, generator=torch.Generator().manual_seed(args.seed))
    settings = TextTrainSettings(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, seed=args.seed)
    val = (vocab.encode(data.val.texts), torch.tensor(data.val.labels))
    train_text_model(
        model, vocab.encode(data.train.texts), torch.tensor(data.train.labels), settings, val=val
    )
    train_s = time.perf_counter() - started
    model.eval()
    guard = TextGuard(model, vocab, data.classes)
    ham, spam = data.classes.index("ham"), data.classes.index("spam")
    bare = TextClassifier(model, vocab)
    guarded = GuardProba(guard, caught=spam, num_classes=data.num_classes)

    def test_of(label: int) -> list[str]:
        return [x for x, y in zip(data.test.texts, data.test.labels, strict=True) if y == label]

    ham_texts, spam_texts = test_of(ham), test_of(spam)
    ham_dec = guard.decide_texts(ham_texts)
    spam_dec = guard.decide_texts(spam_texts)
    clean = {
        "n_ham": len(ham_texts),
        "n_spam": len(spam_texts),
        "ham_accuracy_guarded": sum(d.label == ham for d in ham_dec) / len(ham_texts),
        "ham_flagged_guarded": sum(d.verdict == "flag" for d in ham_dec) / len(ham_texts),
        "spam_recall_guarded": sum(d.label == spam for d in spam_dec) / len(spam_texts),
        "ham_accuracy_bare": float((bare(ham_texts).argmax(1) == ham).float().mean()),
        "spam_recall_bare": float((bare(spam_texts).argmax(1) == spam).float().mean()),
    }
    print(f"trained in {train_s:.0f} s; clean: {clean}", flush=True)

    wide = [c for c in OTHER_SPACES if c not in NARROW_SPACES]
    attacks: dict[str, TextAttack] = {
        **{f"invisible/{f}": InvisibleCharAttack(family=f) for f in INVISIBLE_FAMILIES},
        "invisible/all": InvisibleCharAttack(family="all"),
        # the four the guard used to miss are 4 of the family's 260: test them on their own
        "invisible/Mongolian free variation selectors": InvisibleCharAttack(
            characters=("\u180b", "\u180c", "\u180d", "\u180f")
        ),
        "invisible/former default (U+200B only)": InvisibleCharAttack(
            characters=INVISIBLE_INSERTIONS[:1]
        ),
        "homoglyph": HomoglyphAttack(max_share=0.3),
        "visible: wide spaces inside words": InvisibleCharAttack(characters=wide),
    }
    labels = [spam] * len(spam_texts)
    rows: dict[str, Any] = {}
    for name, attack in attacks.items():
        row: dict[str, Any] = {"params": attack.params()}
        for target, clf in (("bare", bare), ("guarded", guarded)):
            t0 = time.perf_counter()
            gen = torch.Generator().manual_seed(args.seed + 1)
            result = attack(clf, spam_texts, labels, generator=gen)
            n_correct = sum(result.correct_before)
            evaded = [a for a, s in zip(result.adversarial, result.success, strict=True) if s]
            cell: dict[str, Any] = {
                "n_correct_before": n_correct,
                "n_evaded": len(evaded),
                "evasion": len(evaded) / n_correct if n_correct else None,
                "seconds": round(time.perf_counter() - t0, 1),
                "examples": evaded[:3],
            }
            decisions = guard.decide_texts(evaded) if evaded else []
            if target == "bare":
                # the bare model's evading texts sent to the guard
                cell["transfer_n_evaded"] = sum(d.label == ham for d in decisions)
                cell["transfer_n_flagged"] = sum(d.verdict == "flag" for d in decisions)
            else:
                cell["n_evaded_unflagged"] = sum(d.verdict == "accept" for d in decisions)
                cell["evasion_unflagged"] = (
                    cell["n_evaded_unflagged"] / n_correct if n_correct else None
                )
            row[target] = cell
            print(f"{name} / {target}: {cell}", flush=True)
        rows[name] = row

    longest = guard.sanitizer.max_repair_length
    costs = {k: _request_cost(guard, [x]) for k, x in _worst_requests(longest).items()}
    # the service's largest batch (max_batch 256) of distinct such texts in one request
    shuffle = random.Random(1)
    for k, x in _worst_requests(longest).items():
        batch = ["".join(shuffle.sample(x, len(x))) for _ in range(256)]
        costs[f"256 texts: {k}"] = _request_cost(guard, batch)
    print(f"request costs: {costs}", flush=True)
    elapsed = time.perf_counter() - started
    doc = {
        "args": {k: str(x) for k, x in vars(args).items()},
        "machine": platform.platform(),
        "torch": torch.__version__,
        "seconds": round(elapsed, 1),
        "vocab_size": len(vocab),
        "clean": clean,
        "attacks": rows,
        "request_costs": costs,
    }
    out: Path = args.results_dir
    out.mkdir(parents=True, exist_ok=True)
    stem = "text-guard" if args.seed == 0 else f"text-guard-seed{args.seed}"
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=True))

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    md = [
        "# Text guard benchmark: invisible characters against a guarded SMS spam filter",
        "",
        f"Command: `python benchmarks/text_guard.py --data-dir {args.data_dir} --epochs "
        f"{args.epochs} --seed {args.seed} --threads {args.threads}`  ",
        f"Machine: {platform.platform()}, torch {torch.__version__}, {args.threads} thread(s); "
        f"wall time {elapsed:.0f} s (training {train_s:.0f} s).",
        "",
        f"Word CNN (text pipeline defaults, {args.epochs} epochs, vocabulary {len(vocab)}) "
        "behind `TextGuard` with its defaults. Clean test split: ham accuracy through the guard "
        f"{pct(clean['ham_accuracy_guarded'])} of {clean['n_ham']} (flagged "
        f"{pct(clean['ham_flagged_guarded'])}; bare model {pct(clean['ham_accuracy_bare'])}), "
        f"spam recall {pct(clean['spam_recall_guarded'])} of {clean['n_spam']}.",
        "",
        "Evasion: share of the spam each target classified correctly that the attack gets "
        "answered as ham. Against the guard the attacker queries the guard itself (adaptive; a "
        "rejection counts as caught) and an answer counts whether `accept` or `flag`; "
        "unflagged counts `accept` only. Transfer: the texts that evaded the bare model, sent "
        "to the guard: how many it still answers as ham, and how many it flags.",
        "",
        "| attack (character family) | bare model | guarded (adaptive) | guarded, unflagged |"
        " transfer: still evade / flagged |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, row in rows.items():
        b, g = row["bare"], row["guarded"]
        md.append(
            f"| {name} | {pct(b['evasion'])} ({b['n_evaded']}/{b['n_correct_before']}) | "
            f"{pct(g['evasion'])} ({g['n_evaded']}/{g['n_correct_before']}) | "
            f"{pct(g['evasion_unflagged'])} | {b['transfer_n_evaded']}/{b['n_evaded']} / "
            f"{b['transfer_n_flagged']}/{b['n_evaded']} |"
        )
    md += [
        "",
        "Families (`bastion.text.unicode_tables.family_characters`): zero_width = the 10 "
        "zero-width and bidi controls; format = every default-ignorable format (Cf) character; "
        "variation_selector = Mongolian FVS1-4 and VS1-256; filler = combining grapheme joiner, "
        "Hangul fillers, Khmer inherent vowels, braille blank; unassigned = the reserved "
        "default-ignorable code points (U+2065, U+FFF0-FFF8, U+E0000-E0FFF unassigned); "
        "private_use = all Co; space = six-per-em, punctuation, thin, hair, narrow no-break and "
        "medium mathematical spaces; all = one character of each family per word, in random "
        "order. The last row inserts wide spaces (no-break, en, em, ideographic, ...) that show "
        "as a gap: a visible edit, listed for information.",
        "",
        "## Worst single request (texts of 5,000 characters, the guard's limit)",
        "",
        "One `decide_texts` call, no repair cached; batches shuffle the characters of each "
        "text so all 256 differ. tracemalloc counts Python allocations (torch's own buffers "
        "for one forward pass of 256 x 40 token ids are not in it).",
        "",
        "| request | CPU seconds | tracemalloc peak |",
        "| --- | --- | --- |",
        *(f"| {k} | {c['cpu_s']:.3f} | {c['peak_mib']:.1f} MiB |" for k, c in costs.items()),
        "",
    ]
    (out / f"{stem}.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
