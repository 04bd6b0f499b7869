"""Escalation on honest MNIST models: does any sanity check fire, what does escalation cost, and
how does bastion's escalated worst case compare with the AutoAttack-style cascade on the same
examples?

Loads models saved by ``bastion train`` (``--model PATH``, repeatable), evaluates each with
:func:`bastion.evaluation.evaluate_model` under a config's threat model and attacks (``--config``,
e.g. ``examples/mnist-linf.yaml``: FGSM, PGD-50x10, Square-1,000) on the first ``--n`` MNIST test
images at the threat eps only (the config's eps grid is skipped to save time; the sanity checks
run their own eps sweep), quick sanity checks, escalation on. With ``--cascade`` it also runs
bastion's ``standard`` cascade (APGD-CE, APGD-T, FAB-T, Square 5,000 queries: the attacks of
Croce & Hein 2020's AutoAttack, bastion's implementation, not the original code) on the same
images. Costs are the process's CPU seconds and
passes through the network (a pass with an input gradient counts 3), which the load of a shared
machine does not change. Writes ``benchmarks/results/escalation-mnist[-TAG].md`` and ``.json``.

Usage::

    python benchmarks/escalation_mnist.py --config examples/mnist-linf.yaml \\
        --model runs/.../models/hardened --n 200 --cascade --data-dir DIR
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bastion.attacks import Cascade
from bastion.config import load_config
from bastion.data import load_dataset
from bastion.evaluation import NamedAttack, evaluate_model
from bastion.models import load_model
from bastion.pipeline import evaluation_attacks
from bastion.threat import ThreatModel

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--model", required=True, action="append", type=Path)
    ap.add_argument("--n", type=int, default=200, help="First N test images (default 200).")
    ap.add_argument("--cascade", action="store_true", help="Also run the standard cascade.")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--tag", default="", help="Suffix of the results files.")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg, _ = load_config(args.config)
    d = load_dataset(cfg.data.name, data_dir=args.data_dir, seed=cfg.seed)
    x, y = d.test.x[: args.n], d.test.y[: args.n]
    threat = ThreatModel(cfg.threat.norm, cfg.threat.eps, tuple(cfg.threat.bounds))
    load_start = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    passes = {"n": 0}  # passes through the network (a pass with an input gradient counts 3)
    at_escalation: list[int] = []  # the count when the first remedy starts

    def count(_m: nn.Module, inputs: tuple[Tensor, ...], _out: Tensor) -> None:
        grad = torch.is_grad_enabled() and inputs[0].requires_grad
        passes["n"] += inputs[0].shape[0] * (3 if grad else 1)

    def progress(what: str, _done: int, _total: int) -> None:
        if what.startswith("escalation:") and not at_escalation:
            at_escalation.append(passes["n"])

    for path in args.model:
        model = load_model(path).eval()
        passes["n"] = 0
        at_escalation.clear()
        hook = model.register_forward_hook(count)
        t0 = time.perf_counter()
        res = evaluate_model(
            model, x, y, threat, evaluation_attacks(cfg), seed=cfg.seed, progress=progress
        )
        wall = time.perf_counter() - t0
        n_total = passes["n"]
        n_first = at_escalation[0] if at_escalation else n_total
        esc = res["escalation"]
        bb = next((c for c in res["sanity_checks"] if c["code"] == "black-box-beats-white-box"), {})
        row: dict[str, Any] = {
            "model": path.name,
            "n": args.n,
            "clean": res["clean_accuracy"],
            "attacks": {k: v[next(iter(v))] for k, v in res["attacks"].items()},
            "first_pass": res["first_pass_worst_case_accuracy"],
            "escalated": res["worst_case_accuracy"],
            "fired": esc.get("fired", []),
            "status": esc["status"],
            "remedies": [f"{s['remedy']}:{s['status']}" for s in esc.get("steps", [])],
            "black_box_check": {"passed": bb.get("passed"), "details": bb.get("details")},
            "cpu_total": res["evaluation_cpu_seconds"],
            "cpu_escalation": float(esc.get("cpu_seconds", 0.0)),
            "passes_first_pass_and_checks": n_first,
            "passes_escalation": n_total - n_first,
            "wall_seconds": round(wall, 1),
            "headline": res["headline"],
        }
        if args.cascade:
            c0 = time.process_time()
            aa = evaluate_model(
                model,
                x,
                y,
                threat,
                [NamedAttack("standard-cascade", Cascade(preset="standard"))],
                seed=cfg.seed,
                sanity="off",
            )
            row["cascade"] = aa["worst_case_accuracy"]
            row["cascade_cpu"] = round(time.process_time() - c0, 1)
        hook.remove()
        rows.append(row)
        print(json.dumps(row), flush=True)
    stem = "escalation-mnist" + (f"-{args.tag}" if args.tag else "")
    out = ROOT / "benchmarks" / "results"
    (out / f"{stem}.json").write_text(json.dumps(rows, indent=2))

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1%}"

    lines = [
        f"# Escalation on MNIST models ({cfg.name}: {', '.join(r for r in rows[0]['attacks'])})",
        "",
        f"First {args.n} MNIST test images, {threat.norm} eps {threat.eps:g}, quick sanity "
        f"checks, escalation on; one thread; load average {load_start:.1f} on "
        f"{os.cpu_count()} cores at the start (the machine is shared). `python "
        f"benchmarks/escalation_mnist.py --config {args.config} --n {args.n}"
        + (" --cascade" if args.cascade else "")
        + " --model ...`. The standard cascade is bastion's APGD-CE + APGD-T + FAB-T + "
        "Square-5000 (the attacks of AutoAttack, not its original code).",
        "",
        "| model | clean | first pass | checks fired | escalation | escalated | "
        "escalation CPU s / total | escalation passes / first pass + checks | standard cascade |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {pct(r['clean'])} | {pct(r['first_pass'])} | "
            f"{', '.join(r['fired']) or 'none'} | {r['status']} "
            f"{' '.join(r['remedies'])} | {pct(r['escalated'])} | "
            f"{r['cpu_escalation']:.1f} / {r['cpu_total']:.1f} | "
            f"{r['passes_escalation']} / {r['passes_first_pass_and_checks']} | "
            f"{pct(r.get('cascade'))} |"
        )
    lines += ["", "Black-box check (same examples, AutoAttack's sensitivity) per model:", ""]
    for r in rows:
        lines.append(f"- {r['model']}: {json.dumps(r['black_box_check'])}")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
