"""Trigger-word backdoor benchmark on SMS Spam with the text channel's word CNN.

For each seed: the rare token ``cf`` inserted at a random word boundary of 1% of the training
messages (all spam, relabelled ham), the word CNN trained on the poisoned split, then the
trigger-token scan (and activation clustering / spectral signatures on the penultimate
features for comparison), the model retrained on what the trigger-token scan keeps, and the
attack success before and after (see :func:`bastion.poisoning.text_drill.text_backdoor_drill`).

Usage::

    python benchmarks/poisoning_text.py --data-dir /work/shared/datasets/sms_spam \\
        --seeds 0 1 2 --rate 0.01 --out benchmarks/results/poisoning-text.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from bastion.poisoning.text_drill import TextDrillSettings, text_backdoor_drill
from bastion.text.loaders import load_sms_spam


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default="/work/shared/datasets/sms_spam")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rate", type=float, default=0.01)
    ap.add_argument("--trigger", default="cf")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/poisoning-text.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    runs: dict[str, Any] = {}
    for seed in args.seeds:
        data = load_sms_spam(args.data_dir, seed=seed)
        settings = TextDrillSettings(
            rate=args.rate, trigger=args.trigger, epochs=args.epochs, seed=seed
        )
        runs[str(seed)] = text_backdoor_drill(
            data, settings, log=lambda m, s=seed: print(f"[seed {s}] {m}", flush=True)
        )
    results = {
        "setup": {
            "data": "sms_spam",
            "rate": args.rate,
            "trigger": args.trigger,
            "epochs": args.epochs,
            "threads": args.threads,
            "seeds": args.seeds,
        },
        "runs": runs,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    out.write_text(render(results))
    print(f"written {out}")


def render(r: dict[str, Any]) -> str:
    s = r["setup"]
    lines = [
        "# Trigger-word backdoor (SMS Spam, word CNN)",
        "",
        f"`python benchmarks/poisoning_text.py --seeds {' '.join(map(str, s['seeds']))} "
        f"--rate {s['rate']} --epochs {s['epochs']}`: the token `{s['trigger']}` inserted at a "
        f"random word boundary of {s['rate']:.0%} of the training messages (spam relabelled "
        f"ham); word CNN (Kim 2014, widths 3/4/5, 64 filters, 40 tokens), {s['epochs']} "
        "epochs; each seed draws its own stratified split, poison set and initial weights. "
        f"{s['threads']} torch thread on a shared 2-core machine (others were running); total "
        f"{r['seconds']:.0f} s.",
        "",
        "Attack success (ASR): spam test messages the model classifies as spam without the "
        "trigger and as ham with it. `triggered as ham` also counts the spam the model misses "
        "anyway (its clean miss rate, shown beside it).",
        "",
        "## Attack, scan and retraining (quarantine by the trigger-token scan)",
        "",
        "| seed | poisons | undefended clean | undefended ASR | triggered as ham (clean miss) "
        "| scan recall | clean quarantined | flagged tokens | retrained clean | retrained ASR "
        "| retrained triggered as ham (clean miss) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for seed, run in r["runs"].items():
        u, q, t = run["undefended"], run["quarantined"], run["retrained"]
        tokens = ", ".join(run["scans"]["trigger-token"]["flagged_tokens"]) or "-"
        lines.append(
            f"| {seed} | {run['attack']['n_poisoned']} | {u['clean_accuracy']:.2%} | "
            f"{u['attack_success_rate']:.2%} | {u['triggered_as_target']:.2%} "
            f"({u['clean_miss_rate']:.2%}) | {q['recall']:.2%} | {q['clean_flagged_rate']:.2%} | "
            f"{tokens} | {t['clean_accuracy']:.2%} | {t['attack_success_rate']:.2%} | "
            f"{t['triggered_as_target']:.2%} ({t['clean_miss_rate']:.2%}) |"
        )
    lines += [
        "",
        "## Each scan on the same poisoned set and model",
        "",
        "| seed | scan | precision | recall | F1 | clean flagged | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for seed, run in r["runs"].items():
        for name, m in run["scans"].items():
            lines.append(
                f"| {seed} | {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | "
                f"{m['clean_flagged_rate']:.2%} | {m['seconds']} |"
            )
    lines += [
        "",
        "A poison whose trigger lands after the 40th token is cut off by the vocabulary's "
        "`max_length`: the model never sees it, it teaches nothing, and no scan of the encoded "
        "text can find it (it counts as missed above). Spectral signatures flag "
        "`1.5 * eps * n` texts of every class (`eps` 0.05), hence their clean share.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
