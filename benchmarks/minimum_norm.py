"""Minimum-norm attacks: one search per model against one run per eps.

Loads a model saved by ``bastion run examples/digits.yaml`` and the bundled scikit-learn digits
(pixels / 16, shape (N, 1, 8, 8)), then, for DeepFool and FAB on the demo's eps grid, times
``evaluate_model`` (one search, every eps answered from its points) against calling the attack
once per eps, and checks that both give the same accuracy at every eps. Writes
``benchmarks/results/minimum_norm.md``.

    python benchmarks/minimum_norm.py runs/digits-*/models/hardened --examples 300 --threads 1
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from sklearn.datasets import load_digits

from bastion.attacks import build_attack
from bastion.evaluation.evaluator import NamedAttack, evaluate_model
from bastion.models.io import load_model
from bastion.threat import ThreatModel

GRID = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
ATTACKS = {"deepfool": {"steps": 50}, "fab": {"steps": 50}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="path of a saved model (without extension)")
    ap.add_argument("--examples", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/minimum_norm.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    digits = load_digits()
    x = torch.tensor(digits.data[-args.examples :] / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(digits.target[-args.examples :], dtype=torch.int64)
    threat = ThreatModel("linf", 0.2)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    rows = []
    for name, settings in ATTACKS.items():
        t0 = time.perf_counter()
        res = evaluate_model(
            model,
            x,
            y,
            threat,
            [NamedAttack(name, build_attack(name, settings))],
            eps_grid=GRID,
            sanity="off",
        )
        once = time.perf_counter() - t0
        curve = res["accuracy_vs_eps"]["per_attack"][name]
        t0 = time.perf_counter()
        per_eps = [float(correct.float().mean())]
        for eps in GRID[1:]:
            idx = correct.nonzero().squeeze(1)
            r = build_attack(name, settings)(model, x[idx], y[idx], threat.with_eps(eps))
            per_eps.append(float((~r.success).sum()) / x.shape[0])
        each = time.perf_counter() - t0
        same = all(abs(a - b) < 0.5 / x.shape[0] for a, b in zip(curve, per_eps, strict=True))
        rows.append((name, once, each, curve, same))
        print(name, f"{once:.1f}s once, {each:.1f}s per eps, same={same}")
    load = os.getloadavg()[0]
    lines = [
        "# Minimum-norm attacks: one search against one run per eps",
        "",
        f"`python benchmarks/minimum_norm.py {args.model} --examples {args.examples} "
        f"--threads {args.threads}`: the last {args.examples} scikit-learn digits, linf, eps grid "
        f"{GRID[1:]}, torch threads {args.threads}. The machine was shared (1-minute load average "
        f"{load:.1f} at the end on 2 cores), so compare the ratio, not the seconds.",
        "",
        "| attack | one search (s) | one run per eps (s) | ratio | same accuracy at every eps |",
        "|---|---|---|---|---|",
    ]
    for name, once, each, _curve, same in rows:
        lines.append(
            f"| {name} {ATTACKS[name]} | {once:.1f} | {each:.1f} | {each / once:.1f}x | "
            f"{'yes' if same else 'NO'} |"
        )
    lines += ["", "Accuracy against eps (one search):", ""]
    for name, _o, _e, curve, _s in rows:
        pairs = zip(GRID, curve, strict=True)
        lines.append(f"- {name}: " + ", ".join(f"{e:g}: {a:.1%}" for e, a in pairs))
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
