"""Extraction monitors against real extraction attacks, and output hardening measured by the
attack.

1. Victim: the small CNN (Wong et al.) trained on ``--victim-train`` MNIST training images.
   The defender's coverage reference (:class:`bastion.serve.budget.CoverageReference`) is fitted
   on the same training images.
2. Normal traffic: ``--normal-keys`` simulated API keys, each sending a volume drawn from a
   log-normal (median ``--median-queries``, log-sd ``--volume-sigma``, at most
   ``--max-normal``) of held-out test images (MNIST test[5000:]) whose class mix is drawn per
   key from a Dirichlet(``--alpha``) (clients differ in what they send), 16 per request. One
   replay (seed 1) calibrates the budget threshold at <= 1% flagged keys; a second, independent
   replay (seed 2) measures the false-flag rate of both monitors.
3. Attacks, each recorded query by query and replayed through both monitors as one key, 64
   per request: Knockoff Nets (random strategy, probabilities) with MNIST test[:5000] (never in
   the victim's training data) and Jacobian-based augmentation (Papernot et al. 2017) from 100
   seed images. The attacker's copy is trained (from scratch, seeded) on the answers received
   up to each checkpoint, including the exact query at which each monitor flagged the key, and
   its fidelity (agreement with the victim) is measured on MNIST test[5000:].
4. Output policies (``bastion.serve.output_policy``): Knockoff Nets against the victim served
   with full probabilities, ``round-1``, ``top-1``, ``top-3`` and ``labels``; the copy trained
   on the attacker's reading of the hardened answers, fidelity against queries.

Usage::

    python benchmarks/extraction_monitor.py --data-dir ../shared/datasets/mnist

Results: ``benchmarks/results/extraction-monitor.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bastion.attacks.targets import ScoreTarget
from bastion.data import load_dataset
from bastion.evaluation.scorecard import package_versions
from bastion.models import load_model, save_model
from bastion.models.zoo import ModelSpec
from bastion.privacy.extraction import (
    StudentSettings,
    jacobian_augmentation,
    student_spec,
    train_student,
)
from bastion.serve.budget import (
    BudgetMonitor,
    CoverageReference,
    answer_bits,
    calibrate_threshold,
)
from bastion.serve.extraction import ExtractionMonitor
from bastion.serve.output_policy import OutputPolicy

RESULTS = Path(__file__).resolve().parent / "results"
POLICIES = ("full", "round-1", "top-3", "top-1", "labels")


def _load_or_train_victim(args: argparse.Namespace, ds: Any) -> torch.nn.Module:
    stem = args.work / f"victim-{args.victim_train}-{args.victim_epochs}"
    if stem.with_suffix(".safetensors").is_file():
        return load_model(stem).eval()
    from privacy import train_mnist_victim  # benchmarks/privacy.py, beside this script

    victim = train_mnist_victim(ds, args.victim_train, args.victim_epochs)
    save_model(victim.eval(), stem, {"benchmark": "extraction_monitor"})
    return victim.eval()


def _probs(victim: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], 512):
            out.append(torch.softmax(victim(x[i : i + 512]), 1))
    return torch.cat(out).numpy().astype(np.float64)


def normal_traffic(
    y: np.ndarray, *, keys: int, median: float, sigma: float, cap: int, alpha: float, seed: int
) -> list[np.ndarray]:
    """Index streams (into the normal pool) of ``keys`` simulated normal keys."""
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(y == c) for c in range(10)]
    streams = []
    for _ in range(keys):
        n = int(min(cap, max(1, round(rng.lognormal(np.log(median), sigma)))))
        mix = rng.dirichlet(np.full(10, alpha))
        classes = rng.choice(10, size=n, p=mix)
        streams.append(np.array([rng.choice(by_class[c]) for c in classes], dtype=np.int64))
    return streams


def replay(
    flat: np.ndarray,
    labels: np.ndarray,
    *,
    batch: int,
    budget: BudgetMonitor | None,
    prada: ExtractionMonitor | None,
    bits: float,
    key: str,
) -> dict[str, Any]:
    """Send one key's queries ``flat`` ``(n, D)`` in requests of ``batch`` through the
    monitors; the query count at which each first flagged the key (``None``: never)."""
    out: dict[str, Any] = {"queries": int(flat.shape[0]), "budget_at": None, "prada_at": None}
    for i in range(0, flat.shape[0], batch):
        sent = min(i + batch, flat.shape[0])
        if budget is not None:
            status = budget.observe(key, flat[i:sent], bits)
            out["score"] = status.score
            out["coverage"] = status.coverage
            if status.newly_flagged:
                out["budget_at"] = sent
        if prada is not None:
            p = prada.observe(key, flat[i:sent], labels[i:sent].tolist())
            out["w"] = p.w
            if p.newly_flagged:
                out["prada_at"] = sent
    return out


def fidelity_at(
    spec: ModelSpec,
    xq: torch.Tensor,
    targets: torch.Tensor,
    checkpoints: list[int],
    victim_eval: torch.Tensor,
    x_eval: torch.Tensor,
    settings: StudentSettings,
) -> dict[int, float]:
    """Fidelity of a copy trained on the first ``q`` answers, for each checkpoint ``q``."""
    from bastion.attacks.base import predict

    out: dict[int, float] = {}
    for q in sorted(set(checkpoints)):
        student = train_student(spec, xq[:q], targets[:q], settings, seed=q)
        out[q] = float((predict(student, x_eval) == victim_eval).float().mean())
        print(f"    copy at {q} queries: fidelity {out[q]:.3f}", file=sys.stderr)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, default=Path("../shared/datasets/mnist"))
    p.add_argument("--work", type=Path, default=Path("runs/extraction-monitor"))
    p.add_argument("--victim-train", type=int, default=10000)
    p.add_argument("--victim-epochs", type=int, default=8)
    p.add_argument("--student-epochs", type=int, default=10)
    p.add_argument("--normal-keys", type=int, default=1000)
    p.add_argument("--median-queries", type=float, default=100.0)
    p.add_argument("--volume-sigma", type=float, default=1.0)
    p.add_argument("--max-normal", type=int, default=5000)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--cells-per-class", type=int, default=10)
    p.add_argument("--knockoff-budget", type=int, default=5000)
    p.add_argument("--jacobian-budget", type=int, default=3200)
    p.add_argument("--checkpoints", default="100,250,500,1000,2000,5000")
    p.add_argument("--skip-policies", action="store_true")
    p.add_argument(
        "--no-reference",
        action="store_true",
        help="Ablation: the budget without coverage cells (a plain per-key answer budget).",
    )
    p.add_argument("--charge", choices=["label", "capacity"], default="label")
    p.add_argument(
        "--joint",
        action="store_true",
        help="Calibrate the budget so that it and PRADA together flag <= 1%% of normal keys.",
    )
    p.add_argument("--out", type=Path, default=RESULTS / "extraction-monitor")
    p.add_argument("--render", type=Path, help="Only re-render the Markdown of a results JSON.")
    args = p.parse_args()
    if args.render is not None:
        doc = json.loads(args.render.read_text())
        args.render.with_suffix(".md").write_text(markdown(doc))
        return
    torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    t_start = time.perf_counter()

    ds = load_dataset("mnist", data_dir=args.data_dir, seed=0)
    victim = _load_or_train_victim(args, ds)
    half = ds.test.x.shape[0] // 2
    pool, x_eval = ds.test.x[:half], ds.test.x[half:]
    with torch.no_grad():
        victim_eval = victim(x_eval).argmax(1)
    n = args.victim_train
    t0 = time.perf_counter()
    reference = CoverageReference.fit(
        ds.train.x[:n].numpy(), ds.train.y[:n].numpy(), cells_per_class=args.cells_per_class
    )
    ref_seconds = time.perf_counter() - t0
    used = None if args.no_reference else reference  # the budget monitors' cells
    # the service's default charge is log2 C per answer; "capacity" charges what a full
    # probability vector can carry. With every key on one policy, the flag points are the same
    bits = (
        OutputPolicy.parse("full").bits(10)
        if args.charge == "capacity"
        else answer_bits(10, kind="label")
    )

    # -- normal traffic: calibrate on one replay, measure on another ------------------------
    eval_flat = x_eval.reshape(x_eval.shape[0], -1).numpy()
    eval_labels = victim_eval.numpy()
    y_normal = ds.test.y[half:].numpy()
    volume = {
        "median": args.median_queries,
        "sigma": args.volume_sigma,
        "cap": args.max_normal,
        "alpha": args.alpha,
    }

    def traffic(seed: int) -> list[np.ndarray]:
        return normal_traffic(
            y_normal,
            keys=args.normal_keys,
            median=volume["median"],
            sigma=volume["sigma"],
            cap=int(volume["cap"]),
            alpha=volume["alpha"],
            seed=seed,
        )

    def replay_keys(
        streams: list[np.ndarray], budget: BudgetMonitor, prada: ExtractionMonitor | None, tag: str
    ) -> list[dict[str, Any]]:
        return [
            replay(
                eval_flat[s],
                eval_labels[s],
                batch=16,
                budget=budget,
                prada=prada,
                bits=bits,
                key=f"{tag}{i}",
            )
            for i, s in enumerate(streams)
        ]

    calib = traffic(1)
    calibration = replay_keys(
        calib,
        BudgetMonitor(threshold=1e300, reference=used),
        ExtractionMonitor() if args.joint else None,
        "c",
    )
    scores = [r["score"] for r in calibration]
    # --joint: PRADA's flags on the same replay count against the 1%, so the union of the two
    # monitors (what the service runs) stays within it
    elsewhere = [r["prada_at"] is not None for r in calibration] if args.joint else None
    threshold = calibrate_threshold(scores, max_flag_rate=0.01, flagged_elsewhere=elsewhere)
    print(f"  budget threshold {threshold:.0f} bits", file=sys.stderr)
    t0 = time.perf_counter()
    normal = replay_keys(
        traffic(2), BudgetMonitor(threshold=threshold, reference=used), ExtractionMonitor(), "n"
    )
    vols = np.array([r["queries"] for r in normal])
    normal_out = {
        "keys": len(normal),
        "volume": volume,
        "volume_quantiles": {
            q: float(np.quantile(vols, float(q))) for q in ("0.5", "0.9", "0.99", "1.0")
        },
        "queries_total": int(vols.sum()),
        "budget_flagged": sum(r["budget_at"] is not None for r in normal),
        "prada_flagged": sum(r["prada_at"] is not None for r in normal),
        "either_flagged": sum(
            r["budget_at"] is not None or r["prada_at"] is not None for r in normal
        ),
        "calibration_keys": len(calib),
        "calibration": "joint (PRADA's flags on the calibration replay count against the 1%)"
        if args.joint
        else "budget alone",
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(f"  normal traffic: {normal_out}", file=sys.stderr)

    # -- the attacks --------------------------------------------------------------------------
    sspec = student_spec("small-cnn", pool, 10)
    st = StudentSettings(epochs=args.student_epochs, min_steps=300, batch_size=64, lr=1e-3)
    grid = [int(c) for c in args.checkpoints.split(",") if c.strip()]
    attacks: dict[str, Any] = {}

    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(pool.shape[0], generator=gen)[: args.knockoff_budget]
    kx = pool[order]
    kprobs = _probs(victim, kx)
    seen: list[torch.Tensor] = []

    def record(batch: torch.Tensor) -> torch.Tensor:
        seen.append(batch.clone())
        with torch.no_grad():
            return victim(batch)

    target = ScoreTarget(record, 10, kind="logits", inputs="torch", name="victim")
    rounds = 1 + int(np.ceil(np.log2(args.jacobian_budget / 100)))
    jacobian_augmentation(
        target,
        pool[:100],
        x_eval[:10],
        ds.test.y[half : half + 10],
        sspec,
        rounds=rounds,
        step=0.1,
        max_queries=args.jacobian_budget,
        settings=st,
        seed=0,
    )
    jx = torch.cat(seen)[10:]  # the 10 held-out rows are read first, not queries
    jprobs = _probs(victim, jx)
    for name, xq, probs, soft in (
        ("knockoff", kx, kprobs, True),
        ("jacobian", jx, jprobs, False),
    ):
        t0 = time.perf_counter()
        flat = xq.reshape(xq.shape[0], -1).numpy()
        r = replay(
            flat,
            probs.argmax(1),
            batch=64,
            budget=BudgetMonitor(threshold=threshold, reference=used),
            prada=ExtractionMonitor(),
            bits=bits,
            key=name,
        )
        q = xq.shape[0]
        points = [c for c in grid if c <= q] + [q]
        points += [v for v in (r["budget_at"], r["prada_at"]) if v is not None]
        targets = (
            torch.from_numpy(probs).float() if soft else torch.from_numpy(probs.argmax(1)).long()
        )
        fid = fidelity_at(sspec, xq, targets, points, victim_eval, x_eval, st)
        r["fidelity"] = {str(k): v for k, v in fid.items()}
        r["seconds"] = round(time.perf_counter() - t0, 1)
        attacks[name] = r
        print(f"  {name}: {r}", file=sys.stderr)

    # -- output policies measured by Knockoff Nets ---------------------------------------------
    policies: dict[str, Any] = {}
    if not args.skip_policies:
        for text in POLICIES:
            t0 = time.perf_counter()
            policy = OutputPolicy.parse(text)
            soft = torch.from_numpy(policy.soft_labels(kprobs)).float()
            points = [c for c in grid if c <= kx.shape[0]]
            fid = fidelity_at(sspec, kx, soft, points, victim_eval, x_eval, st)
            policies[text] = {
                "bits_per_answer": policy.bits(10),
                "fidelity": {str(k): v for k, v in fid.items()},
                "seconds": round(time.perf_counter() - t0, 1),
            }

    doc = {
        "benchmark": "extraction_monitor",
        "command": "python benchmarks/extraction_monitor.py " + shlex.join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": 1,
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
            "note": "2 CPU cores shared with about 7 people running tests and benchmarks",
        },
        "victim": {
            "architecture": "small-cnn",
            "train_examples": n,
            "epochs": args.victim_epochs,
            "accuracy": float((victim_eval == ds.test.y[half:]).float().mean()),
        },
        "reference": {
            "cells": reference.cells,
            "cells_per_class": args.cells_per_class,
            "dims": int(reference.projection.shape[1]),
            "fit_seconds": round(ref_seconds, 1),
            "used": not args.no_reference,
        },
        "bits_per_answer": bits,
        "charge": args.charge,
        "threshold_bits": threshold,
        "normal": normal_out,
        "attacks": attacks,
        "policies": policies,
        "seconds": round(time.perf_counter() - t_start, 1),
        "versions": package_versions(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # the name as given plus the suffix (with_suffix would eat a dotted name's ".3")
    args.out.with_name(args.out.name + ".json").write_text(json.dumps(doc, indent=2) + "\n")
    args.out.with_name(args.out.name + ".md").write_text(markdown(doc))
    print(markdown(doc))


def _at(fid: dict[str, float], q: int | None) -> str:
    return "never" if q is None else f"{q} ({fid[str(q)]:.1%})"


def markdown(doc: dict[str, Any]) -> str:
    m, v, nrm = doc["machine"], doc["victim"], doc["normal"]
    vol = nrm["volume"]
    lines = [
        "# Extraction monitors against real extraction attacks",
        "",
        f"Machine: {m['cpus']} CPU cores ({m['note']}), torch threads 1, load average "
        f"{m['load_average_before'][0]} before and {m['load_average_after'][0]} after; wall "
        f"{doc['seconds']:.0f} s. `{doc['command']}`.",
        "",
        f"Victim: {v['architecture']} on {v['train_examples']} MNIST training images, "
        f"{v['epochs']} epochs, {v['accuracy']:.1%} accurate on MNIST test[5000:]. "
        + (
            f"Coverage reference: {doc['reference']['cells']} cells "
            f"({doc['reference']['cells_per_class']} k-means clusters per class of the victim's "
            f"training images, {doc['reference']['dims']}-d random projection). "
            if doc["reference"].get("used", True)
            else "**Ablation: no coverage reference** (the budget counts answers, no discount). "
        )
        + "Each answer is charged "
        f"{doc['bits_per_answer']:.1f} bits (`extraction_budget_charge: "
        f"{doc.get('charge', 'capacity')}`; every key here gets full probabilities, so the "
        f"flag points are the same under either charge: the threshold is "
        f"{doc['threshold_bits'] / doc['bits_per_answer']:.0f} "
        + ("coverage-weighted " if doc["reference"].get("used", True) else "")
        + "answers, "
        f"{doc['threshold_bits'] / doc['bits_per_answer'] * math.log2(10):.0f} bits under the "
        "default `label` charge).",
        "",
        "## Normal traffic",
        "",
        f"{nrm['keys']} simulated keys per replay, volumes log-normal (median "
        f"{vol['median']:g}, log-sd {vol['sigma']:g}, at most {vol['cap']}; measured median "
        f"{nrm['volume_quantiles']['0.5']:.0f}, 90th percentile "
        f"{nrm['volume_quantiles']['0.9']:.0f}, 99th {nrm['volume_quantiles']['0.99']:.0f}, "
        f"largest {nrm['volume_quantiles']['1.0']:.0f}; {nrm['queries_total']} queries), "
        f"held-out MNIST test images with a per-key Dirichlet({vol['alpha']:g}) class mix, 16 "
        "per request. The budget threshold is calibrated on one replay "
        f"(seed 1, {nrm['calibration_keys']} keys; "
        f"{nrm.get('calibration', 'budget alone')}) at <= 1% flagged: "
        f"**{doc['threshold_bits']:.0f} bits**. On an independent replay (seed 2):",
        "",
        "| monitor | normal keys flagged |",
        "|---|---|",
        f"| PRADA (defaults: W < 0.90) | {nrm['prada_flagged']} of {nrm['keys']} "
        f"({nrm['prada_flagged'] / nrm['keys']:.1%}) |",
        f"| information budget | {nrm['budget_flagged']} of {nrm['keys']} "
        f"({nrm['budget_flagged'] / nrm['keys']:.1%}) |",
        f"| either (the service) | {nrm['either_flagged']} of {nrm['keys']} "
        f"({nrm['either_flagged'] / nrm['keys']:.1%}) |",
        "",
        "## Attackers",
        "",
        "Queries sent until the key was flagged, and in brackets the fidelity of a copy "
        "trained on the answers received up to then (agreement with the victim on MNIST "
        "test[5000:]).",
        "",
        "| attack | queries | PRADA flags at | budget flags at | fidelity at the end |",
        "|---|---|---|---|---|",
    ]
    for name, a in doc["attacks"].items():
        fid = a["fidelity"]
        lines.append(
            f"| {name} | {a['queries']} | {_at(fid, a['prada_at'])} | "
            f"{_at(fid, a['budget_at'])} | {fid[str(a['queries'])]:.1%} |"
        )
    lines += ["", "Fidelity of the copy against queries:", ""]
    names = list(doc["attacks"])
    qs = sorted({int(q) for a in doc["attacks"].values() for q in a["fidelity"]})
    lines += ["| queries | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for q in qs:
        cells = [
            f"{a['fidelity'][str(q)]:.1%}" if str(q) in a["fidelity"] else ""
            for a in doc["attacks"].values()
        ]
        lines.append(f"| {q} | " + " | ".join(cells) + " |")
    if doc["policies"]:
        pol = doc["policies"]
        lines += [
            "",
            "## Output hardening measured by Knockoff Nets",
            "",
            "The same Knockoff query stream; the copy trains on the attacker's reading of each "
            "policy's answers (`OutputPolicy.soft_labels`). Fidelity against queries:",
            "",
            "| queries | " + " | ".join(pol) + " |",
            "|---" * (len(pol) + 1) + "|",
        ]
        qs = sorted({int(q) for a in pol.values() for q in a["fidelity"]})
        for q in qs:
            lines.append(
                f"| {q} | "
                + " | ".join(f"{a['fidelity'].get(str(q), float('nan')):.1%}" for a in pol.values())
                + " |"
            )
        lines.append(
            "| bits per answer | "
            + " | ".join(f"{a['bits_per_answer']:.1f}" for a in pol.values())
            + " |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
