"""The MNIST fast recipe trained by one process and by ``torchrun --nproc-per-node 2`` (gloo):
clean and robust accuracy, wall times and loss curves side by side.

    python benchmarks/scale_torchrun.py --data-dir ../shared/datasets/mnist [--train 12000]
        [--test 1000] [--epochs 12] [--out /tmp/scale-torchrun]

The recipe is ``examples/mnist-linf-0.3-fast.yaml`` (PGD-AT, 5 steps, eps 0.3 ramped over 3
epochs, cyclic learning rate, batch 256, small CNN), on the first ``--train`` + 500 +
``--test`` images of the MNIST training set in bastion's seeded order (written to an ``.npz``,
split 500 for validation and ``--test`` for the test; all 60,000 with ``--train 58500``). Two
entries of one config, the same but for their names, are trained one after the other with
``bastion train``: ``one-process`` alone with ``--one-threads`` torch threads (default 1: on a
busy machine a second thread spin-waits and made epochs 10-25x slower, see bastion.runtime),
``two-processes`` under torchrun with 1 thread per process. Both are then evaluated in one
``bastion evaluate`` (FGSM and PGD-50 at eps 0.3 on every test image; robust accuracy is the
worst case of the two), and ``bastion report`` draws their loss curves overlaid, with the two
processes' own losses dotted. Results go to ``benchmarks/results/<--name>.md`` and ``.json``
(default ``scale-torchrun``); the run folder (``--out``) keeps the models, the scorecard and
``report.html``.

Timings depend on the machine's other work: the load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bastion.data import load_dataset

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RECIPE = ROOT / "examples" / "mnist-linf-0.3-fast.yaml"
NAMES = ("one-process", "two-processes")


def _config(npz: Path, n: int, test: int, epochs: int) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(RECIPE.read_text())
    fast = next(m for m in doc["models"] if m["name"] == "fast")
    doc["name"] = "scale-torchrun"
    doc["data"] = {
        "name": "npz",
        "path": str(npz),
        "val_fraction": 500 / n,
        "test_fraction": test / n,
    }
    doc["training"]["epochs"] = epochs
    ramp = min(float(fast["training"]["eps_ramp_epochs"]), float(epochs))  # fewer epochs: shorter
    fast = {**fast, "training": {**fast["training"], "eps_ramp_epochs": ramp}}
    doc["models"] = [{**fast, "name": name} for name in NAMES]
    doc["evaluation"] = {
        "attacks": [{"name": "fgsm"}, {"name": "pgd", "label": "pgd-50", "steps": 50}],
        "eps_grid": [0.3],
        "sanity_checks": "off",
    }
    return doc


def _timed(command: list[str], env: dict[str, str], log: Path) -> float:
    t0 = time.perf_counter()
    with log.open("w") as f:
        done = subprocess.run(command, env=env, stdout=f, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed; see {log}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--train", type=int, default=12000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--out", type=Path, default=Path("/tmp/scale-torchrun"))
    ap.add_argument("--one-threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="the config's seed (init, order, attacks)")
    ap.add_argument("--name", default="scale-torchrun", help="results file name")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (recipe: 0.1)")
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    n = args.train + 500 + args.test
    mnist = load_dataset("mnist", data_dir=args.data_dir, seed=0, val_fraction=0.0)
    images = (mnist.train.x[:n].numpy() * 255).round().astype(np.uint8)
    npz = out / "mnist-subset.npz"
    np.savez(npz, x=images, y=mnist.train.y[:n].numpy())
    cfg = out / "config.yaml"
    config_doc = {**_config(npz, n, args.test, args.epochs), "seed": args.seed}
    if args.lr is not None:
        config_doc["training"]["lr"] = args.lr
    cfg.write_text(yaml.safe_dump(config_doc, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    cli = [sys.executable, "-m", "bastion.cli"]
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    load_before = os.getloadavg()[0]
    train = ["train", str(cfg), "-q", "--device", "cpu", "-m"]
    threads = str(args.one_threads)
    one = [*cli, *train, NAMES[0], "--out", str(out / NAMES[0]), "--threads", threads]
    two = [torchrun, "--nproc-per-node", "2", "--standalone", "-m", "bastion.cli", *train]
    two += [NAMES[1], "--out", str(out / NAMES[1])]
    seconds = {
        NAMES[0]: _timed(one, env, out / "train-one.log"),
        NAMES[1]: _timed(two, {**env, "OMP_NUM_THREADS": "1"}, out / "train-two.log"),
    }
    load_after_training = os.getloadavg()[0]
    scorecard = out / "scorecard.json"
    models = ["-m", str(out / NAMES[0]), "-m", str(out / NAMES[1])]
    flags = ["--out", str(scorecard), "-q", "--no-state", "--threads", threads, "--device", "cpu"]
    _timed([*cli, "evaluate", str(cfg), *models, *flags], env, out / "evaluate.log")
    _timed([*cli, "report", str(scorecard), "--out", str(out / "report.html")], env, out / "r.log")
    sc = json.loads(scorecard.read_text())
    figures: dict[str, dict[str, Any]] = {}
    for name in NAMES:
        m = sc["models"][name]
        history = m["training"]["history"]
        figures[name] = {
            "clean_accuracy": m["clean_accuracy"],
            "robust_accuracy": m["worst_case_accuracy"],
            "train_seconds": round(seconds[name], 1),
            "best_epoch": m["training"].get("best_epoch"),
            "train_loss": [round(h["train_loss"], 4) for h in history],
            **{
                f"train_loss_rank{r}": [round(h[f"train_loss_rank{r}"], 4) for h in history]
                for r in (0, 1)
                if all(f"train_loss_rank{r}" in h for h in history)
            },
        }
    one, two = figures[NAMES[0]], figures[NAMES[1]]
    clean_gap = 100 * abs(one["clean_accuracy"] - two["clean_accuracy"])
    robust_gap = 100 * abs(one["robust_accuracy"] - two["robust_accuracy"])
    doc = {
        "recipe": str(RECIPE.relative_to(ROOT)),
        "train_images": args.train,
        "validation_images": 500,
        "test_images": args.test,
        "epochs": args.epochs,
        "one_process_threads": args.one_threads,
        "seed": args.seed,
        "lr": config_doc["training"]["lr"],
        "cores": os.cpu_count(),
        "load_average_before": round(load_before, 1),
        "load_average_after_training": round(load_after_training, 1),
        "models": figures,
        "clean_gap_points": round(clean_gap, 2),
        "robust_gap_points": round(robust_gap, 2),
        "within_half_a_point": clean_gap <= 0.5 and robust_gap <= 0.5,
        "time_ratio_two_over_one": round(two["train_seconds"] / one["train_seconds"], 2),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    rows = [
        f"| {name} | {f['clean_accuracy']:.2%} | {f['robust_accuracy']:.2%} | "
        f"{f['best_epoch']} | {f['train_seconds']} |"
        for name, f in figures.items()
    ]
    epochs = range(1, len(one["train_loss"]) + 1)
    loss_rows = [
        f"| {e} | {one['train_loss'][e - 1]} | {two['train_loss'][e - 1]} | "
        f"{two.get('train_loss_rank0', ['-'] * e)[e - 1]} | "
        f"{two.get('train_loss_rank1', ['-'] * e)[e - 1]} |"
        for e in epochs
    ]
    lines = [
        f"# The MNIST fast recipe: one process against torchrun with 2 (gloo), {args.epochs} "
        "epochs",
        "",
        f"`python benchmarks/scale_torchrun.py --data-dir DIR --train {args.train} "
        f"--test {args.test} --epochs {args.epochs} --one-threads {args.one_threads} "
        f"--seed {args.seed}{'' if args.lr is None else f' --lr {args.lr}'}`: "
        f"{args.train:,} training, 500 validation "
        f"and {args.test:,} test images, all from the MNIST training set (seeded order). "
        "Robust accuracy: the worst of FGSM and PGD-50 at linf eps 0.3 (not the full cascade).",
        "",
        f"One process with {args.one_threads} torch thread(s); two processes with 1 each.",
        "",
        "| run | clean | robust | epoch kept | training seconds |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
        f"Gaps: clean {clean_gap:.2f} points, robust {robust_gap:.2f} points (target: within "
        f"0.5 each: {'met' if doc['within_half_a_point'] else 'not met'}). Training time ratio, "
        f"two processes over one: {doc['time_ratio_two_over_one']}.",
        "",
        f"Load average {load_before:.1f} before training and {load_after_training:.1f} after, "
        f"on {os.cpu_count()} cores: other work was running, so the times compare only within "
        "this run.",
        "",
        "Training loss per epoch (the two-process run's loss is over every example; rank 0 and "
        "rank 1 over their own shares):",
        "",
        "| epoch | one process | two processes | rank 0 | rank 1 |",
        "|---:|---:|---:|---:|---:|",
        *loss_rows,
    ]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
