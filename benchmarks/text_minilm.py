"""Text-channel benchmark on a pretrained transformer (``benchmarks/text.py --model minilm``).

1. Movie Review (Pang and Lee 2005), MiniLM (all-MiniLM-L6-v2) fine-tuned with a mean-pooling
   head: clean accuracy on the first ``--test`` test texts, training minutes, and the combined
   attack (word substitution, then typos, then homoglyphs) on the standard model against the
   A2T-hardened model behind the sanitiser, with the clean-accuracy cost.
2. SMS Spam Collection on the same recipe: invisible-character and homoglyph evasion of spam,
   without and with the sanitiser.

Each part is one call of :func:`bastion.text.run_text_experiment` with a ``transformer``
section. The machine's load average is recorded before and after each part: on a shared
machine the wall times are only comparable to each other. Results go to
``benchmarks/results/text-minilm.json`` and ``text-minilm.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bastion.evaluation.scorecard import package_versions
from bastion.text import parse_text_config, run_text_experiment


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _judge(value: float | None, ok: Callable[[float], bool]) -> str:
    if value is None:
        return "not measured (the SMS part is not in this file)"
    return "met" if ok(value) else "MISSED"


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (1 min) / {five:.1f} (5 min)"


def _command(args: argparse.Namespace, part: str) -> str:
    train = "" if args.train is None else f" --train {args.train}"
    smoothing = (
        f" --smoothing {args.smoothing} --mask-rate {args.mask_rate}" if args.smoothing else ""
    )
    name = "" if args.results_name == "text-minilm" else f" --results-name {args.results_name}"
    return (
        f"python benchmarks/text.py --model minilm --part {part} --minilm {args.minilm} "
        f"--data-dir {args.data_dir} --examples {args.examples}{train} --val "
        f"{args.val} --test {args.test} --epochs {args.epochs} --max-length {args.max_length} "
        f"--batch-size {args.batch_size} --lr {args.lr} --neighbours {args.neighbours} --seed "
        f"{args.seed} --threads {args.threads}{smoothing}{name}"
    )


def _hardening(args: argparse.Namespace) -> dict[str, Any]:
    """``--smoothing N``: the hardened model (A2T) answers by ``N`` word-piece-masked copies
    (RanMASK, mean-pooled: the attacks query it directly); no noisy training."""
    if not args.smoothing:
        return {}
    return {
        "hardening": {
            "smoothing": {
                "enabled": True,
                "samples": args.smoothing,
                "mask_rate": args.mask_rate,
                "train_noise": False,
            }
        }
    }


def _transformer(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "path": str(args.minilm),
        "max_length": args.max_length,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "max_train": args.train,
        "max_val": args.val,
        "max_test": args.test,
    }


def _print_progress(event: dict[str, Any]) -> None:
    """Print every event but the training steps: of those, every 50th batch and epoch ends
    (training accuracy and loss, so a run stopped early still shows how far it got)."""
    if event.get("stage") != "train" or event.get("end_of_epoch") or event["batch"] % 50 == 0:
        print(time.strftime("%H:%M:%S"), event, flush=True)


def run(args: argparse.Namespace, results: Path) -> None:
    """Run the parts ``args.part`` names with the parsed ``benchmarks/text.py`` arguments.

    ``--part both`` runs both and writes the report; one part writes
    ``text-minilm-<part>.json`` only (two processes can then run the parts side by side), and
    ``--part combine`` writes the report from those two files.
    """
    torch.set_num_threads(args.threads)
    if args.part == "combine":
        docs = [  # a part that did not finish in time is reported as not measured
            json.loads((results / f"{args.results_name}-{p}.json").read_text())
            for p in ("movie_review", "sms_spam")
            if (results / f"{args.results_name}-{p}.json").is_file()
        ]
        report(
            args,
            results,
            {k: v for d in docs for k, v in d["runs"].items()},
            {k: v for d in docs for k, v in d["seconds"].items()},
            {k: v for d in docs for k, v in d["load_average"].items()},
            {k: v for d in docs for k, v in d["commands"].items()},
            {k: v for d in docs for k, v in d.get("cpu_seconds", {}).items()},
        )
        return
    parts = {
        "movie_review": (
            "movie_review_polarity",
            {
                "attacks": ["combined"],
                "attack": {"ranking": "gradient", "neighbours": args.neighbours},
            },
        ),
        "sms_spam": (
            "sms_spam",
            {"attacks": ["invisible", "homoglyph"], "attack_classes": ["spam"]},
        ),
    }
    if args.part != "both":
        parts = {args.part: parts[args.part]}
    runs: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    load: dict[str, list[str]] = {}
    cpu: dict[str, float] = {}  # CPU seconds of this process (all threads)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (folder, extra) in parts.items():
            cfg = parse_text_config(
                {
                    "dataset": name,
                    "n_attack": args.examples,
                    "transformer": _transformer(args),
                    **extra,
                    **_hardening(args),
                }
            )
            load[name] = [_load()]
            t0, cpu0 = time.perf_counter(), time.process_time()
            runs[name] = run_text_experiment(
                cfg,
                args.data_dir / folder,
                Path(tmp) / name,
                seed=args.seed,
                progress=_print_progress,
            )
            seconds[name] = time.perf_counter() - t0
            cpu[name] = time.process_time() - cpu0
            load[name].append(_load())
            print(f"{name}: {seconds[name]:.0f} s", flush=True)
    if args.part != "both":
        results.mkdir(parents=True, exist_ok=True)
        doc = {
            "runs": runs,
            "seconds": seconds,
            "load_average": load,
            "cpu_seconds": cpu,
            "commands": {args.part: _command(args, args.part)},
        }
        (results / f"{args.results_name}-{args.part}.json").write_text(json.dumps(doc, indent=1))
        return
    report(args, results, runs, seconds, load, {p: _command(args, p) for p in parts}, cpu)


def _targets(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's target figures from both parts (SMS ones ``None`` without that part)."""
    mr, sms = runs["movie_review"], runs.get("sms_spam")
    s = mr["summary"]
    none: dict[str, Any] = {"success_rate": None}
    inv = sms["attacks"]["invisible"] if sms else {"standard": none, "standard+sanitizer": none}
    hom = sms["attacks"]["homoglyph"] if sms else {"standard": none, "standard+sanitizer": none}
    return {
        "mr_clean_accuracy_standard": s["clean_accuracy_standard"],
        "mr_train_minutes_standard": mr["models"]["standard"]["training"]["train_seconds"] / 60,
        "mr_combined_success_standard": s["combined_success_standard"],
        "mr_combined_success_hardened_guarded": s["combined_success_hardened_guarded"],
        "mr_clean_accuracy_cost": s["clean_accuracy_cost"],
        "sms_invisible_standard": inv["standard"]["success_rate"],
        "sms_invisible_guarded": inv["standard+sanitizer"]["success_rate"],
        "sms_homoglyph_standard": hom["standard"]["success_rate"],
        "sms_homoglyph_guarded": hom["standard+sanitizer"]["success_rate"],
    }


def _scale(mr: dict[str, Any]) -> str:
    """What the target rows add about the scale: nothing at the target's setting (the whole
    training split, two epochs)."""
    whole = mr["transformer"]["n_train"] >= mr["dataset"]["n_train"]
    epochs = mr["models"]["standard"]["training"]["settings"]["epochs"]
    if whole and epochs >= 2:
        return ""
    if whole:
        return f" (whole training split, {epochs} epoch: the target's setting has 2)"
    return " (reduced scale: not the target's setting)"


def _target_rows(runs: dict[str, dict[str, Any]], targets: dict[str, Any]) -> list[str]:
    """The Markdown table of the targets."""
    mr = runs["movie_review"]
    std_train = mr["models"]["standard"]["training"]
    hard_train = mr["models"]["hardened"]["training"]
    drop = (targets["mr_combined_success_standard"] or 0) - (
        targets["mr_combined_success_hardened_guarded"] or 0
    )
    mark = {True: "met", False: "MISSED"}
    scale = _scale(mr)
    hardened = "A2T + smoothing + sanitiser" if mr.get("smoothing") else "A2T + sanitiser"
    combined_std = _pct(targets["mr_combined_success_standard"])
    combined_hard = _pct(targets["mr_combined_success_hardened_guarded"])
    return [
        "| target | measured | status |",
        "| --- | --- | --- |",
        f"| MR: fine-tuned MiniLM >= 80% clean (first {mr['transformer']['n_test']} test texts) | "
        f"{_pct(targets['mr_clean_accuracy_standard'])} | "
        f"{mark[(targets['mr_clean_accuracy_standard'] or 0) >= 0.8]}{scale} |",
        f"| MR: trained in <= 30 min on 2 cores | "
        f"{targets['mr_train_minutes_standard']:.1f} min standard, "
        f"{hard_train['train_seconds'] / 60:.1f} min A2T ({std_train['precision']}) | "
        f"{mark[targets['mr_train_minutes_standard'] <= 30]}{scale} |",
        f"| MR: combined attack succeeds on >= 80% (standard) | {combined_std} | "
        f"{mark[(targets['mr_combined_success_standard'] or 0) >= 0.8]} |",
        f"| MR: {hardened} cut combined success by >= 25 points | {combined_std} -> "
        f"{combined_hard} ({100 * drop:.1f} points) | {mark[drop >= 0.25]}{scale} |",
        f"| MR: clean cost <= 2 points | "
        f"{100 * targets['mr_clean_accuracy_cost']:.1f} points | "
        f"{mark[targets['mr_clean_accuracy_cost'] <= 0.02 + 1e-9]}{scale} |",
        f"| SMS: invisible characters evade on >= 90% of spam | "
        f"{_pct(targets['sms_invisible_standard'])} | "
        f"{_judge(targets['sms_invisible_standard'], lambda v: v >= 0.9)} |",
        f"| SMS: invisible <= 1% with the sanitiser | {_pct(targets['sms_invisible_guarded'])} | "
        f"{_judge(targets['sms_invisible_guarded'], lambda v: v <= 0.01)} |",
        f"| SMS: homoglyphs evade on >= 90% of spam | "
        f"{_pct(targets['sms_homoglyph_standard'])} | "
        f"{_judge(targets['sms_homoglyph_standard'], lambda v: v >= 0.9)} |",
        f"| SMS: homoglyphs <= 1% with the sanitiser | {_pct(targets['sms_homoglyph_guarded'])} | "
        f"{_judge(targets['sms_homoglyph_guarded'], lambda v: v <= 0.01)} |",
    ]


def _details(name: str, out: dict[str, Any]) -> list[str]:
    """One part's clean accuracies and attack table (smoothed hardened targets named so)."""
    tr = out["transformer"]
    models = out["models"]
    hard = "hardened (A2T+smoothing)" if out.get("smoothing") else "hardened"
    unsmoothed = models["hardened"].get("clean_accuracy_unsmoothed")
    smoothing = (
        f" Smoothing: {out['smoothing']['samples']} copies, mask rate "
        f"{out['smoothing']['mask_rate']}, {out['smoothing']['aggregate']}-pooled; the "
        f"hardened model without it: {_pct(unsmoothed)} clean."
        if out.get("smoothing")
        else ""
    )
    md = [
        f"### {name} ({tr['n_train']} training texts, {out['n_attacked']} attacked)",
        "",
        f"Clean accuracy: standard {_pct(models['standard']['clean_accuracy'])}, "
        f"with sanitiser {_pct(models['standard']['clean_accuracy_sanitized'])}; "
        f"{hard} {_pct(models['hardened']['clean_accuracy'])}, with sanitiser "
        f"{_pct(models['hardened']['clean_accuracy_sanitized'])}.{smoothing} Test texts longer "
        f"than {tr['max_length']} tokens (truncated): {_pct(tr['truncated_test_share'])}. "
        f"Training precision {models['standard']['training']['precision']} (probe "
        f"seconds per step: {models['standard']['training']['precision_probe_s']}).",
        "",
        f"| attack | standard | standard+sanitizer | {hard} | {hard}+sanitizer |",
        "| --- | --- | --- | --- | --- |",
    ]
    for attack, per in out["attacks"].items():
        cells = [  # success rate (texts broken / correctly classified texts attacked)
            f"{_pct(per[t]['success_rate'])} ({per[t]['n_success']}/{per[t]['n_correct']})"
            for t in ("standard", "standard+sanitizer", "hardened", "hardened+sanitizer")
        ]
        md.append(f"| {attack} | {' | '.join(cells)} |")
    md.append("")
    return md


def report(
    args: argparse.Namespace,
    results: Path,
    runs: dict[str, dict[str, Any]],
    seconds: dict[str, float],
    load: dict[str, list[str]],
    commands: dict[str, str],
    cpu: dict[str, float] | None = None,
) -> None:
    """Write ``<results-name>.json`` and ``.md`` (default ``text-minilm``) from the parts'
    results (Movie Review; SMS Spam when it ran)."""
    targets = _targets(runs)
    doc = {
        "commands": commands,
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": load,
        "versions": package_versions(),
        "seconds": seconds,
        "cpu_seconds": cpu or {},
        "targets": targets,
        "runs": runs,
    }
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{args.results_name}.json").write_text(
        json.dumps(doc, indent=1, ensure_ascii=False)
    )
    md = [
        "# Text channel benchmark on a pretrained transformer (MiniLM)",
        "",
        "Commands (each part in its own process; then `--part combine` writes this file):",
        "",
        *[f"- {k}: `{v}`" for k, v in commands.items()],
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs shared with other users, torch "
        f"threads {args.threads}. Load average before/after: "
        + "; ".join(f"{k} {v[0]} -> {v[1]}" for k, v in load.items())
        + ". Wall time: "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in seconds.items())
        + " (two fine-tunings and all attacks on four targets each)"
        + "".join(f"; CPU time {k} {v / 60:.1f} min" for k, v in (cpu or {}).items())
        + ". With that load the times "
        "are several times what an idle 2-core machine needs; compare them with each other, not "
        "with other machines.",
        "",
        "## Targets",
        "",
        *_target_rows(runs, targets),
        "",
        "## Details",
        "",
    ]
    for name, out in runs.items():
        md += _details(name, out)
    md += [
        "## TextAttack",
        "",
        "TextAttack is not used as a peer here: `pip install --dry-run textattack` pulls flair, "
        "gensim, datasets and a dozen more packages, and its recipes fetch word embeddings, the "
        "Universal Sentence Encoder and masked language models from the network at first use, "
        "which this offline machine cannot do. The published figures are the comparison: "
        "TextFooler against fine-tuned BERT-base on MR (Jin et al. 2020, Table 3) leaves 11.5% "
        "accuracy from 86.0%, i.e. about 87% attack success with 16.7% of words changed (figures "
        "as published, not re-run here); A2T (Yoo and Qi 2021) reports lower attack success "
        "on BERT and RoBERTa after adversarial fine-tuning with its cheap attack at a small "
        "clean cost. Those are BERT-base (110 M parameters, full data, several epochs on a GPU); "
        "the figures above are MiniLM-L6 (22.7 M) at the scale stated.",
        "",
    ]
    (results / f"{args.results_name}.md").write_text("\n".join(md))
    print("\n".join(md))
