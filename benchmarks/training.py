"""Training recipes, end to end: wall-clock and CPU time of training, clean accuracy and robust
accuracy under the AutoAttack-style cascade, beside the published figures.

For one recipe of ``examples/`` this script trains the recipe's hardened model (the last model
entry, or ``--model``), then measures

* clean accuracy on the whole test split,
* robust accuracy on the first ``--examples`` test images (default 1,000; ``--full``: all) under
  bastion's ``standard`` cascade (APGD-CE, APGD-T, FAB-T, Square; ``{name: cascade, preset:
  standard}``) and PGD-50 with 10 restarts, and the worst case over both,
* for every recipe, the robust-accuracy-against-CPU-time curve of training: after each epoch,
  the process CPU seconds so far and the PGD validation accuracy the Trainer measured (its
  ``val_pgd_steps``-step PGD on ``val_examples`` validation images; a cheap proxy, not the
  cascade).

It appends one row to ``benchmarks/results/training.md`` (created with the published figures
on first use) and writes the curve and all figures to
``benchmarks/results/training-<recipe>.json``.

Usage::

    nice -n 19 python benchmarks/training.py --recipe fast --data-dir ../shared/datasets/mnist
    python benchmarks/training.py --recipe strong --full

``--epochs N`` and ``--train-subset N`` shorten a run for a smoke test; such rows are marked
``short`` and do not measure the recipe.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import yaml

from bastion.attacks.registry import build_attack
from bastion.config import parse_config
from bastion.evaluation.evaluator import NamedAttack, eps_key, evaluate_model
from bastion.evaluation.scorecard import package_versions
from bastion.models import build_model, save_model
from bastion.pipeline import load_run_data, model_spec
from bastion.training import Trainer

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    "fast": "mnist-linf-0.3-fast.yaml",
    "strong": "mnist-linf-0.3-strong.yaml",
    "l2": "mnist-l2-2.0.yaml",
    "breast-cancer": "breast-cancer.yaml",
}
RESULTS = ROOT / "benchmarks" / "results"
HEADER = """# Training recipes

Each row: one run of `python benchmarks/training.py --recipe NAME` (see the script's docstring).
Robust accuracy is measured on the first N MNIST test images under bastion's `standard` cascade
(APGD-CE, APGD-T, FAB-T, Square 5,000 queries) and PGD-50x10; the worst case counts an image
robust only if it survives both. Clean accuracy is on all 10,000 test images. Rows marked
`short` were shortened with `--epochs`/`--train-subset` and do not measure the recipe.

Targets (MNIST linf 0.3): fast recipe >= 88% robust, >= 98% clean, <= 10 min training on 2
cores; strong recipe >= 92% / 98.5% in <= 2 h.

Published figures (MNIST linf 0.3, AutoAttack): fast FGSM adversarial training (Wong et al.
2020) 82.9%; PGD adversarial training (Madry et al. 2018) 88.5%; TRADES (Zhang et al. 2019)
92.8%.

"""
COLUMNS = [
    "date (UTC)", "recipe", "model", "epochs", "threads", "train wall s", "train CPU s", "clean",
    "autoattack", "worst case", "N", "machine", "note",
]  # fmt: skip
TABLE_HEAD = "| " + " | ".join(COLUMNS) + " |\n" + "|---" * len(COLUMNS) + "|\n"


def shorten(doc: dict[str, Any], entry_name: str, epochs: int) -> dict[str, Any]:
    """The recipe with ``entry_name`` trained for ``epochs`` epochs: the eps ramp, the
    attack-step phases and the AWP warm-up scaled to the shorter run."""
    doc = json.loads(json.dumps(doc))
    entry = next(m for m in doc["models"] if m["name"] == entry_name)
    tr = {**doc.get("training", {}), **entry.get("training", {})}
    old = int(tr.get("epochs", 10))
    scale = epochs / old
    new: dict[str, Any] = {"epochs": epochs}
    if "eps_ramp_epochs" in tr:
        new["eps_ramp_epochs"] = min(float(epochs), float(tr["eps_ramp_epochs"]) * scale)
    if "step_phases" in tr:
        phases: dict[int, int] = {}
        for first, steps in tr["step_phases"]:
            phases[max(1, min(epochs, round(first * scale)))] = steps
        new["step_phases"] = [[e, k] for e, k in sorted(phases.items())]
        new["step_phases"][0][0] = 1
    if "awp" in tr:
        warmup = min(epochs - 1, int(tr["awp"].get("warmup_epochs", 0) * scale))
        new["awp"] = {**tr["awp"], "warmup_epochs": warmup}
    entry["training"] = {**entry.get("training", {}), **new}
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", choices=sorted(RECIPES), required=True)
    ap.add_argument("--model", help="model entry to train (default: the recipe's last one)")
    ap.add_argument(
        "--data-dir",
        default=os.environ.get("BASTION_DATA", str(ROOT.parent / "shared" / "datasets" / "mnist")),
        help="MNIST IDX files directory (default: $BASTION_DATA or ../shared/datasets/mnist)",
    )
    ap.add_argument("--examples", type=int, default=1000, help="test images attacked")
    ap.add_argument("--full", action="store_true", help="attack all test images")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, help="shorten the run (smoke test)")
    ap.add_argument("--train-subset", type=int, help="train on the first N images (smoke test)")
    ap.add_argument(
        "--attacks",
        choices=["cascade", "pgd"],
        default="cascade",
        help="'pgd' skips the cascade (PGD-50x10 only; smoke test)",
    )
    ap.add_argument("--results-dir", type=Path, default=RESULTS, help="where training.md goes")
    ap.add_argument(
        "--save", type=Path, help="save the trained model here (bastion.load_model reads it)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    path = ROOT / "examples" / RECIPES[args.recipe]
    doc = yaml.safe_load(path.read_text())
    name = args.model or doc["models"][-1]["name"]
    if args.epochs is not None:
        doc = shorten(doc, name, args.epochs)
    doc.setdefault("data", {})["data_dir"] = args.data_dir
    cfg = parse_config(doc, source=str(path))
    entry = next(m for m in cfg.models if m.name == name)
    data = load_run_data(cfg, config_path=path)
    if args.train_subset is not None:
        data = dataclasses.replace(data, train=data.train.subset(args.train_subset))
    settings = cfg.train_settings(entry)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model(model_spec(cfg, entry, data))

    curve: list[dict[str, float]] = []
    cpu0 = time.process_time()

    def progress(d: dict[str, Any]) -> None:
        if d.get("end_of_epoch"):
            point = {
                "epoch": d["epoch"],
                "cpu_seconds": time.process_time() - cpu0,
                "val_pgd_accuracy": d["val_robust_accuracy"],
                "val_clean_accuracy": d["val_clean_accuracy"],
            }
            curve.append(point)
            print(json.dumps(point), file=sys.stderr, flush=True)

    wall0 = time.perf_counter()
    trainer = Trainer(settings, cfg.threat_model(), seed=cfg.seed, progress=progress)
    result = trainer.fit(model, data.train.x, data.train.y, data.val.x, data.val.y)
    train_wall, train_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if args.save is not None:
        save_model(model, args.save, {"recipe": args.recipe, "model": name})

    n = len(data.test) if args.full else min(args.examples, len(data.test))
    test = data.test.subset(n)
    attacks = [NamedAttack("pgd-50x10", build_attack("pgd", {"steps": 50, "restarts": 10}))]
    if args.attacks == "cascade":
        attacks.append(NamedAttack("autoattack", build_attack("cascade", {"preset": "standard"})))
    t0 = time.perf_counter()
    res = evaluate_model(model, test.x, test.y, cfg.threat_model(), attacks, seed=cfg.seed)
    eval_wall = time.perf_counter() - t0
    key = eps_key(cfg.threat.eps)
    model.eval()
    with torch.inference_mode():
        clean = float(
            torch.cat(
                [
                    model(data.test.x[i : i + 1000]).argmax(1) == data.test.y[i : i + 1000]
                    for i in range(0, len(data.test), 1000)
                ]
            )
            .float()
            .mean()
        )
    aa = res["attacks"].get("autoattack", {}).get(key)
    short = args.epochs is not None or args.train_subset is not None
    row = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "recipe": args.recipe,
        "model": name,
        "epochs": len(result.history),
        "threads": args.threads,
        "train_wall_seconds": round(train_wall, 1),
        "train_cpu_seconds": round(train_cpu, 1),
        "clean_accuracy": clean,
        "autoattack_accuracy": aa,
        "pgd_accuracy": res["attacks"]["pgd-50x10"][key],
        "worst_case_accuracy": res["worst_case_accuracy"],
        "examples": n,
        "evaluation_seconds": round(eval_wall, 1),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "short": short,
        "temperature": result.temperature,
        "calibration": result.calibration,
        "warnings": result.warnings,
        "curve": curve,
        "settings": settings.to_dict(),
        "versions": package_versions(),
    }
    out_dir: Path = args.results_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"training-{args.recipe}.json").write_text(json.dumps(row, indent=2, default=str))
    table = out_dir / "training.md"
    if not table.exists():
        table.write_text(HEADER + TABLE_HEAD)
    note = "short" if short else ""
    if result.warnings:
        note = (note + " " + "; ".join(result.warnings)).strip()
    aa_s = f"{aa:.1%}" if aa is not None else "-"
    line = (
        f"| {row['date']} | {args.recipe} | {name} | {row['epochs']} | {args.threads} | "
        f"{train_wall:.0f} | {train_cpu:.0f} | {clean:.2%} | {aa_s} | "
        f"{res['worst_case_accuracy']:.1%} | {n} | {row['machine']} | {note} |\n"
    )
    with table.open("a") as f:
        f.write(line)
    curve_md = [
        f"# Robust accuracy against training CPU time: recipe {args.recipe} ({row['date']})\n\n",
        "Validation PGD accuracy (the Trainer's per-epoch check) after each epoch.\n\n",
        "| epoch | CPU s | val PGD accuracy | val clean accuracy |\n|---|---|---|---|\n",
    ]
    curve_md += [
        f"| {p['epoch']} | {p['cpu_seconds']:.0f} | {p['val_pgd_accuracy']:.1%} | "
        f"{p['val_clean_accuracy']:.1%} |\n"
        for p in curve
    ]
    (out_dir / f"training-curve-{args.recipe}.md").write_text("".join(curve_md))
    print(line, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
