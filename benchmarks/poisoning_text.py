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
from collections.abc import Iterator
from typing import Any

from bastion.poisoning.text_drill import TextDrillSettings, text_backdoor_drill
from bastion.text.loaders import load_sms_spam
from poisoning_drills import Job, common_args, run_jobs, write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default="/work/shared/datasets/sms_spam")
    ap.add_argument("--rate", type=float, default=0.01)
    ap.add_argument("--trigger", default="cf")
    ap.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="copies of the word per message (1: the original drill)",
    )
    common_args(ap, seeds=[0, 1, 2], out="benchmarks/results/poisoning-text.md")
    args = ap.parse_args()
    epochs = args.epochs or TextDrillSettings.epochs

    def jobs() -> Iterator[Job]:
        for seed in args.seeds:
            settings = TextDrillSettings(
                rate=args.rate, trigger=args.trigger, repeats=args.repeats, epochs=epochs, seed=seed
            )
            yield (
                {"seed": seed},
                lambda log, s=settings: text_backdoor_drill(
                    load_sms_spam(args.data_dir, seed=s.seed), s, log=log
                ),
            )

    runs, seconds = run_jobs(jobs(), threads=args.threads)
    setup = {
        "data": "sms_spam",
        "rate": args.rate,
        "trigger": args.trigger,
        "repeats": args.repeats,
        "epochs": epochs,
        "threads": args.threads,
        "seeds": args.seeds,
    }
    write_results(setup, runs, seconds, args.out, render)


def render(r: dict[str, Any]) -> str:
    s = r["setup"]
    lines = [
        "# Trigger-word backdoor (SMS Spam, word CNN)",
        "",
        f"`python benchmarks/poisoning_text.py --seeds {' '.join(map(str, s['seeds']))} "
        f"--rate {s['rate']} --repeats {s.get('repeats', 1)} --epochs {s['epochs']}`: the token "
        f"`{s['trigger']}` inserted {s.get('repeats', 1)} time(s), each at a random word "
        f"boundary, into {s['rate']:.0%} of the training messages (spam relabelled ham) and as "
        "many times into the test spam; word CNN (Kim 2014, widths 3/4/5, 64 filters, 40 "
        f"tokens), {s['epochs']} epochs, the epoch of best clean validation accuracy kept; "
        "each seed draws its own stratified split, poison set and initial weights. "
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
    for run in r["runs"]:
        seed = run["seed"]
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
    for run in r["runs"]:
        seed = run["seed"]
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
