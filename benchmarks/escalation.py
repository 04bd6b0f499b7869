"""Escalation on planted gradient masking: first pass, escalated headline and an independent
reference adaptive attack, with the time each part takes.

Trains the two digits models of ``tests/sanity/conftest.py`` (a standard small CNN, 4 epochs; a
PGD-AT one, linf 0.2, 8 epochs; seed 0, one thread), wraps them in the planted defences of
``tests/sanity/sanity_masked_models.py`` (input quantisation, logits x1e4, a non-differentiable
detector that purifies flagged inputs, Gaussian noise, random pixel dropout) and evaluates each
with :func:`bastion.evaluation.evaluate_model` (first pass: the attacks of
``examples/digits.yaml``, FGSM, PGD-50x5 and Square-1000, or ``--white-box``: FGSM and PGD-20;
quick sanity checks; escalation on). The reference is the independent attack of
``tests/sanity/reference_attacks.py`` that knows the defence (BPDA-PGD through the known
non-differentiable step, margin-loss PGD, EOT-PGD with 16 samples). Writes
``benchmarks/results/escalation[-white-box].md`` and ``.json``.

Usage::

    python benchmarks/escalation.py            # about two minutes on two cores
    python benchmarks/escalation.py --white-box
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "sanity"))

from reference_attacks import eot_reference, pgd_reference  # noqa: E402
from sanity_masked_models import (  # noqa: E402
    DetectAndPurify,
    Noisy,
    Quantised,
    RandomDrop,
    Scaled,
)

from bastion.attacks import FGSM, PGD, Square  # noqa: E402
from bastion.data import Dataset, load_dataset  # noqa: E402
from bastion.evaluation import NamedAttack, evaluate_model  # noqa: E402
from bastion.models import ModelSpec, build_model  # noqa: E402
from bastion.threat import ThreatModel  # noqa: E402
from bastion.training import Trainer, TrainSettings  # noqa: E402
from bastion.training.objectives import ObjectiveSettings  # noqa: E402


def train(d: Dataset, objective: ObjectiveSettings, epochs: int) -> nn.Module:
    spec = ModelSpec("small-cnn", tuple(d.input_shape), d.num_classes, tuple(d.mean), tuple(d.std))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(spec)
    settings = TrainSettings(
        objective=objective, epochs=epochs, batch_size=64, lr=0.05, val_examples=100
    )
    Trainer(settings, ThreatModel("linf", 0.2), seed=0).fit(
        model, d.train.x, d.train.y, d.val.x, d.val.y
    )
    return model.eval()


def st(pre: Tensor, x: Tensor) -> Tensor:
    return x + (pre - x).detach()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--white-box", action="store_true", help="First pass FGSM + PGD-20 only.")
    args = ap.parse_args()
    torch.set_num_threads(1)
    d = load_dataset("digits", seed=0)
    standard = train(d, ObjectiveSettings("standard"), 4)
    robust = train(d, ObjectiveSettings("pgd-at", steps=5, step_size=0.5), 8)
    x, y = d.test.x, d.test.y
    if args.white_box:
        attacks = [NamedAttack("fgsm", FGSM()), NamedAttack("pgd-20", PGD(steps=20))]
    else:
        attacks = [
            NamedAttack("fgsm", FGSM()),
            NamedAttack("pgd-50x5", PGD(steps=50, restarts=5)),
            NamedAttack("square", Square(queries=1000)),
        ]
    det = DetectAndPurify(robust)

    def det_through(z: Tensor) -> Tensor:
        flagged = (det.score(z) > det.threshold).view(-1, 1, 1, 1)
        return robust(st(torch.where(flagged, torch.round(z * det.levels) / det.levels, z), z))

    def frac(mask: Tensor) -> float:
        return float(mask.float().mean())

    cases: list[tuple[str, nn.Module, float, Any]] = [
        ("honest standard", standard, 0.1, None),
        ("honest PGD-AT", robust, 0.2, None),
        (
            "input quantisation (4 levels) on PGD-AT",
            Quantised(robust),
            0.2,
            lambda: frac(
                pgd_reference(
                    lambda z: robust(st(torch.round(z * 4) / 4, z)), Quantised(robust), x, y, 0.2
                )
            ),
        ),
        (
            "logits x1e4 on standard",
            Scaled(standard),
            0.1,
            lambda: frac(pgd_reference(Scaled(standard), Scaled(standard), x, y, 0.1)),
        ),
        (
            "detector + purifier in front of PGD-AT",
            det,
            0.2,
            lambda: frac(pgd_reference(det_through, det, x, y, 0.2)),
        ),
        (
            "Gaussian noise 0.1 on standard",
            Noisy(standard),
            0.1,
            lambda: eot_reference(Noisy(standard), x, y, 0.1, samples=16, steps=40, draws=16)[0],
        ),
        (
            "random pixel dropout on standard",
            RandomDrop(standard),
            0.1,
            lambda: eot_reference(RandomDrop(standard), x, y, 0.1, samples=16, steps=40, draws=16)[
                0
            ],
        ),
    ]
    # the compute floor: passes through the trained network (a pass that needs an input
    # gradient counts 3, its backward costing about two forwards), which the load cannot change
    passes = {"n": 0}

    def count(_m: nn.Module, inputs: tuple[Tensor, ...], _out: Tensor) -> None:
        grad = torch.is_grad_enabled() and inputs[0].requires_grad
        passes["n"] += inputs[0].shape[0] * (3 if grad else 1)

    for net in (standard, robust):
        net.register_forward_hook(count)
    load = os.getloadavg()[0]
    rows = []
    at_escalation: list[int] = []  # the pass count when the first remedy starts

    def progress(what: str, _done: int, _total: int) -> None:
        if what.startswith("escalation:") and not at_escalation:
            at_escalation.append(passes["n"])

    for name, model, eps, reference in cases:
        at_escalation.clear()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the randomised defences draw from torch's RNG
            passes["n"] = 0
            t0 = time.perf_counter()
            res = evaluate_model(
                model, x, y, ThreatModel("linf", eps), attacks, seed=0, progress=progress
            )
            total = time.perf_counter() - t0
            n_total = passes["n"]
            ref = reference() if reference is not None else None
        n_first = at_escalation[0] if at_escalation else n_total
        esc = res["escalation"]
        esc_s = float(esc.get("seconds", 0.0))
        esc_cpu = float(esc.get("cpu_seconds", 0.0))
        rows.append(
            {
                "case": name,
                "eps": eps,
                "clean": res["clean_accuracy"],
                "first_pass": res["first_pass_worst_case_accuracy"],
                "escalated": res["worst_case_accuracy"],
                "reference": ref,
                "fired": esc.get("fired", []),
                "remedies": [f"{s['remedy']}:{s['status']}" for s in esc.get("steps", [])],
                "spread": esc.get("spread"),
                "seconds_first_pass_and_checks": round(total - esc_s, 2),
                "seconds_escalation": round(esc_s, 2),
                "cpu_first_pass_and_checks": round(res["evaluation_cpu_seconds"] - esc_cpu, 2),
                "cpu_escalation": round(esc_cpu, 2),
                "cpu_ratio": round(esc_cpu / (res["evaluation_cpu_seconds"] - esc_cpu), 2),
                "passes_first_pass_and_checks": n_first,
                "passes_escalation": n_total - n_first,
                "passes_ratio": round((n_total - n_first) / n_first, 2),
                "eot_samples": next(
                    (s["details"]["samples"] for s in esc.get("steps", []) if s["remedy"] == "eot"),
                    None,
                ),
                "headline": res["headline"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    stem = "escalation-white-box" if args.white_box else "escalation"
    out = ROOT / "benchmarks" / "results"
    (out / f"{stem}.json").write_text(json.dumps(rows, indent=2))

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1%}"

    first_pass = "FGSM + PGD-20" if args.white_box else "FGSM + PGD-50x5 + Square-1000"
    lines = [
        f"# Escalation on planted gradient masking ({first_pass} first pass)",
        "",
        "digits test split (359), linf; CPU seconds of the process (the machine is shared: "
        f"load average {load:.1f} on {os.cpu_count()} cores at the start); `python "
        "benchmarks/escalation.py"
        + (" --white-box" if args.white_box else "")
        + "`, one thread. Cost ratio: escalation over first pass + checks, in CPU time and in "
        "passes through the network (the compute floor: a pass with an input gradient counts "
        "3; the target is at most 1.0, escalation at most doubling the evaluation).",
        "",
        "| case | eps | clean | first pass | escalated | reference | fired | remedies "
        "| first pass + checks, CPU s | escalation, CPU s | ratio, CPU | ratio, passes |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['eps']} | {pct(r['clean'])} | {pct(r['first_pass'])} | "
            f"{pct(r['escalated'])}"
            + (f" ± {r['spread']:.1%}" if r["spread"] is not None else "")
            + f" | {pct(r['reference'])} | {', '.join(r['fired']) or '-'} | "
            f"{', '.join(r['remedies']) or '-'} | {r['cpu_first_pass_and_checks']:.1f} | "
            f"{r['cpu_escalation']:.1f} | {r['cpu_ratio']:.2f} | {r['passes_ratio']:.2f} |"
        )
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
