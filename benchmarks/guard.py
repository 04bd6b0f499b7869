"""Runtime guard on MNIST: decisions per second and what the guard stops at 1% / 5% clean FPR.

Fits a guard (default ``guard:`` settings, feature squeezing at 1 bit and a 2x2 median as in
Xu et al. 2018 for MNIST) around the ``hardened`` model of a run directory, on the first
``--calibration`` validation images, then on the first ``--examples`` test images:

* decisions per second, one image per call and ``--batch`` images per call;
* the guard evaluation: clean firing rate and accuracy, the share of PGD / APGD inputs stopped
  (detected, abstained or answered correctly), and the same under the adaptive attack that
  climbs the classifier and every detector at once (Carlini & Wagner 2017, BPDA through the
  squeezers), plus the worst case per image.

Results go to ``benchmarks/results/guard.md`` and ``guard.json``.

Usage::

    nice -n 19 python benchmarks/guard.py --run /tmp/mruns/mnist-linf-20261126-021553 \\
        --data-dir ../shared/datasets/mnist
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from bastion.attacks.apgd import APGD
from bastion.attacks.gradient import PGD
from bastion.data.mnist import load_mnist
from bastion.guard import AdaptiveGuardAttack, GuardConfig, evaluate_guard, fit_guard
from bastion.guard.fit import run_threat
from bastion.models.io import load_model


def _rate(guard: Any, x: torch.Tensor, batch: int, seconds: float) -> float:
    n, start = 0, time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds:
        guard.decide(x[i : i + batch])
        n += batch
        i = (i + batch) % (x.shape[0] - batch)
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--data-dir", default=os.environ.get("BASTION_DATA"))
    p.add_argument("--examples", type=int, default=1000)
    p.add_argument("--calibration", type=int, default=2000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--attack-steps", type=int, default=50)
    p.add_argument("--adaptive-steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = load_mnist(args.data_dir, seed=args.seed)
    # calibrate on test images after the evaluated ones: never trained on, disjoint from the
    # evaluation (the loader's validation split may overlap the run's training images)
    n, m = args.examples, args.calibration
    x_cal, y_cal = data.test.x[n : n + m], data.test.y[n : n + m]
    x, y = data.test.x[:n], data.test.y[:n]
    config = GuardConfig.from_dict({"squeezing": {"bit_depth": 1, "median_size": 2}})
    t0 = time.perf_counter()
    guard = fit_guard(args.run, config, x_cal, y_cal, seed=args.seed)
    fit_s = time.perf_counter() - t0
    # one intra-op thread per request is what a service worker should run with: spreading a
    # single image over threads costs more in synchronisation than it saves
    torch.set_num_threads(1)
    single = _rate(guard, x, 1, 3.0)
    single_batched = _rate(guard, x, args.batch, 3.0)
    torch.set_num_threads(args.threads)
    batched = _rate(guard, x, args.batch, 3.0)
    print(f"fit {fit_s:.1f} s; {single:.0f} single / {batched:.0f} batched per s", flush=True)

    model = load_model(args.run / "models" / "hardened")
    for q in model.parameters():
        q.requires_grad_(False)
    threat = run_threat(args.run)
    t0 = time.perf_counter()
    result = evaluate_guard(
        guard,
        model,
        x,
        y,
        threat,
        attacks=[PGD(steps=args.attack_steps), APGD(steps=args.attack_steps)],
        adaptive=True,
        seed=args.seed,
        adaptive_attack=AdaptiveGuardAttack(steps=args.adaptive_steps),
    )
    eval_s = time.perf_counter() - t0
    result["speed"] = {
        "threads": args.threads,
        "single_per_s_1_thread": round(single, 1),
        "batched_per_s_1_thread": round(single_batched, 1),
        "batched_per_s": round(batched, 1),
        "batch": args.batch,
        "fit_s": round(fit_s, 1),
        "evaluate_s": round(eval_s, 1),
    }
    result["guard"] = guard.describe()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "guard.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# Runtime guard on MNIST",
        "",
        f"Run `{args.run.name}` (hardened small CNN), threat {threat.norm} eps {threat.eps}; "
        f"guard fitted on test images {n}..{n + m - 1} in {fit_s:.1f} s; "
        f"first {x.shape[0]} test images; {args.threads} CPU thread(s).",
        "",
        f"- decisions/s, one image per call, 1 thread: **{single:.0f}**",
        f"- decisions/s, {args.batch} images per call: **{single_batched:.0f}** (1 thread), "
        f"**{batched:.0f}** ({args.threads} thread(s))",
        f"- model clean accuracy {result['model_clean_accuracy']:.3f}; model-only attack "
        "success: "
        + ", ".join(f"{k} {v['model_success']:.3f}" for k, v in result["attacks"].items()),
        "",
        "| target FPR | clean fired | clean acc. (answered) | "
        + " | ".join(f"{k} stopped" for k in result["attacks"])
        + " | adaptive stopped | worst case stopped |",
        "|---|---|---|" + "---|" * len(result["attacks"]) + "---|---|",
    ]
    for key, e in result["fpr"].items():
        std = " | ".join(f"{e['standard'][k]['stopped']:.3f}" for k in result["attacks"])
        lines.append(
            f"| {key} | {e['clean']['fired']:.3f} | {e['clean']['answered_accuracy']:.3f} | "
            f"{std} | {e['adaptive']['stopped']:.3f} | {e['worst_case_stopped']:.3f} |"
        )
    lines += [
        "",
        "*Stopped* = detected (any layer fired: flag, reject or abstain) or answered "
        "correctly. Standard attacks target the model alone; the adaptive attack "
        f"({args.adaptive_steps} steps per lambda in {list(AdaptiveGuardAttack().lambdas)}) "
        "climbs CW margin - lambda * detector excess, with BPDA through the squeezers, and "
        "counts only inputs the real guard answers wrongly with no layer firing.",
        "",
        "Reproduce: `nice -n 19 .venv/bin/python benchmarks/guard.py --run "
        f"{args.run} --data-dir {args.data_dir} --attack-steps {args.attack_steps} "
        f"--adaptive-steps {args.adaptive_steps} --threads {args.threads}`",
    ]
    (args.out / "guard.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
