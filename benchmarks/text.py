"""Text-channel benchmark: the two targets of the text threat channel, measured end to end.

1. Movie Review (Pang and Lee, 2005), word CNN (Kim, 2014): success of the word-substitution
   attack on correctly classified test sentences of the standard model, and the success of the
   combined character+word attack before (standard model, no guard) and after hardening (A2T
   training plus the sanitiser), with the clean-accuracy cost.
2. SMS Spam Collection: invisible-character insertion against the standard spam filter, on
   spam messages only, without and with the sanitising guard.

Each experiment is one call of :func:`bastion.text.run_text_experiment`. Results go to
``benchmarks/results/text.json`` and ``text.md``.

Usage::

    python benchmarks/text.py --data-dir ../shared/datasets --examples 300 --threads 1
    python benchmarks/text.py --model minilm --epochs 2 --threads 2   # benchmarks/text_minilm.py
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bastion.evaluation.scorecard import package_versions
from bastion.text import parse_text_config, run_text_experiment

RESULTS = Path(__file__).resolve().parent / "results"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _table(out: dict[str, Any]) -> list[str]:
    lines = [
        "| attack | standard | standard+sanitizer | hardened | hardened+sanitizer |"
        " mean words changed (std) | mean queries/success (std) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, per in out["attacks"].items():
        std = per["standard"]
        cells = [
            _pct(per[t]["success_rate"])
            for t in ("standard", "standard+sanitizer", "hardened", "hardened+sanitizer")
        ]
        share = _pct(std["mean_changed_share"])
        q = std["mean_queries_per_success"]
        lines.append(
            f"| {name} | {' | '.join(cells)} | {share} | {'n/a' if q is None else f'{q:.1f}'} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--candidates",
        choices=["lexicon", "embedding", "both"],
        default="both",
        help="word-substitution candidate source",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--model",
        choices=["cnn", "minilm"],
        default="cnn",
        help="minilm: the pretrained-transformer benchmark (benchmarks/text_minilm.py)",
    )
    minilm = parser.add_argument_group("--model minilm")
    minilm.add_argument("--minilm", type=Path, default=Path("../shared/models/all-MiniLM-L6-v2"))
    minilm.add_argument("--train", type=int, default=None, help="training texts (default all)")
    minilm.add_argument("--val", type=int, default=300)
    minilm.add_argument("--test", type=int, default=300, help="test texts for clean accuracy")
    minilm.add_argument("--max-length", type=int, default=64)
    minilm.add_argument("--batch-size", type=int, default=32)
    minilm.add_argument("--lr", type=float, default=5e-5)
    minilm.add_argument("--neighbours", type=int, default=30, help="embedding candidates/word")
    minilm.add_argument(
        "--part", choices=["both", "movie_review", "sms_spam", "combine"], default="both"
    )
    minilm.add_argument("--results-name", default="text-minilm", help="results file name stem")
    minilm.add_argument(
        "--smoothing",
        type=int,
        default=0,
        metavar="SAMPLES",
        help="smooth the hardened model with this many word-piece-masked copies (0: off)",
    )
    minilm.add_argument("--mask-rate", type=float, default=0.15, help="with --smoothing")
    args = parser.parse_args()
    if args.model == "minilm":
        from text_minilm import run

        run(args, args.results_dir)
        return
    torch.set_num_threads(args.threads)
    runs: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, folder, extra in (
            ("movie_review", "movie_review_polarity", {}),
            ("sms_spam", "sms_spam", {"attack_classes": ["spam"]}),
        ):
            cfg = parse_text_config(
                {
                    "dataset": name,
                    "n_attack": args.examples,
                    "training": {"epochs": args.epochs},
                    "attack": {"candidates": args.candidates},
                    **extra,
                }
            )
            t0 = time.perf_counter()
            runs[name] = run_text_experiment(
                cfg, args.data_dir / folder, Path(tmp) / name, seed=args.seed
            )
            timings[name] = time.perf_counter() - t0
            print(f"{name}: {timings[name]:.0f} s", flush=True)
    mr, sms = runs["movie_review"], runs["sms_spam"]
    mr_s, sms_a = mr["summary"], sms["attacks"]["invisible"]
    targets = {
        "mr_word_substitution_success_standard": mr_s["word_substitution_success_standard"],
        "mr_combined_success_standard": mr_s["combined_success_standard"],
        "mr_combined_success_hardened_guarded": mr_s["combined_success_hardened_guarded"],
        "mr_combined_success_reduction": mr_s["combined_success_reduction"],
        "mr_clean_accuracy_cost": mr_s["clean_accuracy_cost"],
        "sms_invisible_evasion_standard": sms_a["standard"]["success_rate"],
        "sms_invisible_evasion_guarded": sms_a["standard+sanitizer"]["success_rate"],
    }
    doc = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "machine": platform.platform(),
        "versions": package_versions(),
        "seconds": timings,
        "targets": targets,
        "runs": runs,
    }
    results: Path = args.results_dir
    results.mkdir(parents=True, exist_ok=True)
    (results / "text.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False))
    ok = {
        "word": (targets["mr_word_substitution_success_standard"] or 0) >= 0.8,
        "halved": (targets["mr_combined_success_reduction"] or 0) >= 0.5,
        "cost": targets["mr_clean_accuracy_cost"] <= 0.02,
        "sms": (targets["sms_invisible_evasion_standard"] or 0) >= 0.9,
        "guard": (targets["sms_invisible_evasion_guarded"] or 0) <= 0.01,
    }
    mark = {True: "met", False: "MISSED"}
    md = [
        "# Text channel benchmark",
        "",
        f"Command: `python benchmarks/text.py --data-dir {args.data_dir} --examples "
        f"{args.examples} --epochs {args.epochs} --seed {args.seed} --threads {args.threads} "
        f"--candidates {args.candidates}`  ",
        f"Machine: {platform.platform()}, torch threads {args.threads}. Wall time: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
        + " (train two models + all attacks on four targets).",
        "",
        "## Targets",
        "",
        "| target | measured | status |",
        "| --- | --- | --- |",
        f"| MR word CNN: word substitution succeeds on >= 80% | "
        f"{_pct(targets['mr_word_substitution_success_standard'])} | {mark[ok['word']]} |",
        f"| MR: hardening halves combined char+word success | "
        f"{_pct(targets['mr_combined_success_standard'])} -> "
        f"{_pct(targets['mr_combined_success_hardened_guarded'])} (reduction "
        f"{_pct(targets['mr_combined_success_reduction'])}) | {mark[ok['halved']]} |",
        f"| MR: clean accuracy cost <= 2 points | "
        f"{100 * mr['models']['standard']['clean_accuracy']:.1f}% -> "
        f"{100 * mr['models']['hardened']['clean_accuracy_sanitized']:.1f}% "
        f"({100 * targets['mr_clean_accuracy_cost']:.1f} points) | {mark[ok['cost']]} |",
        f"| SMS: invisible characters evade the spam filter on >= 90% of spam | "
        f"{_pct(targets['sms_invisible_evasion_standard'])} | {mark[ok['sms']]} |",
        f"| SMS: <= 1% with the sanitising guard | "
        f"{_pct(targets['sms_invisible_evasion_guarded'])} | {mark[ok['guard']]} |",
        "",
        f"## Movie Review (word CNN, {mr['n_attacked']} test sentences attacked)",
        "",
        f"Clean test accuracy: standard {_pct(mr['models']['standard']['clean_accuracy'])}, "
        f"hardened {_pct(mr['models']['hardened']['clean_accuracy'])}, hardened with sanitiser "
        f"{_pct(mr['models']['hardened']['clean_accuracy_sanitized'])}. Attack success on "
        "correctly classified sentences:",
        "",
        *_table(mr),
        "",
        f"## SMS Spam (word CNN, {sms['n_attacked']} spam test messages attacked)",
        "",
        f"Clean test accuracy: standard {_pct(sms['models']['standard']['clean_accuracy'])}, "
        f"with sanitiser {_pct(sms['models']['standard']['clean_accuracy_sanitized'])}.",
        "",
        *_table(sms),
        "",
        "Word-substitution candidates: "
        f"`{args.candidates}` (bundled lexicon and/or neighbours in the standard model's own "
        "embedding, cosine >= 0.4). The standard model's embedding is trained on the task from "
        "random initialisation, so its neighbours are often not synonyms: success with "
        "`both`/`embedding` overstates a meaning-preserving attacker; `--candidates lexicon` "
        "gives the meaning-preserving lower figure.",
        "",
    ]
    (results / "text.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
