"""Sharded evaluation on Ray against one process: same per-example results, and the wall time.

    python benchmarks/scale.py RUN_DIR/models/hardened --data-dir DIR [--examples 1000]
        [--workers 2] [--preset standard|quick] [--batch-size 100]

Evaluates a saved model twice on the first N test examples of its own split: in one process
with ``--workers`` torch threads, and on a local Ray instance of ``--workers`` CPUs (one thread
per task), with the same attacks, seed and batch size. Checks that every per-attack figure is
identical, and reports the wall times with Ray's start-up separated, plus the per-batch task
times from which a larger cluster is projected (perfect division of the batches, plus the
start-up and the slowest batch). Results go to ``benchmarks/results/scale.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from bastion.attacks import build_attack
from bastion.evaluation.evaluator import NamedAttack, evaluate_model
from bastion.models import load_model, read_sidecar
from bastion.provenance import load_model_split
from bastion.threat import ThreatModel

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--examples", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--preset", default="standard")
    ap.add_argument("--batch-size", type=int, default=100)
    args = ap.parse_args()
    load = os.getloadavg()[0]  # this machine's other work: timings are only comparable within a run
    net = load_model(args.model)
    meta = read_sidecar(args.model)
    ds = load_model_split(meta, data_dir=args.data_dir).data
    test = ds.test.subset(args.examples)
    threat = ThreatModel.from_dict(meta["metadata"]["threat"])
    attacks = [NamedAttack("cascade", build_attack("cascade", {"preset": args.preset}))]
    kwargs = {"seed": 0, "batch_size": args.batch_size, "sanity": "off"}

    torch.set_num_threads(args.workers)
    t0 = time.perf_counter()
    single = evaluate_model(net, test.x, test.y, threat, attacks, **kwargs)  # type: ignore[arg-type]
    single_s = time.perf_counter() - t0

    from bastion.evaluation.ray_runner import RayBatchRunner

    t0 = time.perf_counter()
    runner = RayBatchRunner(workers=args.workers)
    startup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    spread = evaluate_model(net, test.x, test.y, threat, attacks, runner=runner, **kwargs)  # type: ignore[arg-type]
    ray_s = time.perf_counter() - t0
    runner.close()
    identical = spread["attacks"] == single["attacks"]
    batches = -(-round(single["clean_accuracy"] * len(test)) // args.batch_size)
    per_batch = ray_s * args.workers / max(1, batches)
    doc = {
        "model": str(args.model),
        "examples": len(test),
        "preset": args.preset,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "identical": identical,
        "worst_case_accuracy": single["worst_case_accuracy"],
        "single_process_seconds": round(single_s, 1),
        "ray_startup_seconds": round(startup_s, 1),
        "ray_seconds": round(ray_s, 1),
        "batches": batches,
        "load_average_at_start": round(load, 1),
        "projected_64_cores_seconds": round(startup_s + per_batch * max(1, -(-batches // 64)), 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        f"# Sharded evaluation: {args.preset} cascade on {len(test)} examples of {ds.name}",
        "",
        "| | seconds |",
        "|---|---:|",
        f"| one process, {args.workers} threads | {doc['single_process_seconds']} |",
        f"| Ray start-up ({args.workers} CPUs) | {doc['ray_startup_seconds']} |",
        f"| Ray, {args.workers} workers x 1 thread | {doc['ray_seconds']} |",
        f"| projected, 64 cores ({batches} batches) | {doc['projected_64_cores_seconds']} |",
        "",
        f"Load average at start: {load:.1f} on {os.cpu_count()} cores (other work running).",
        "",
        f"Per-attack figures identical: {identical}; "
        f"worst case {single['worst_case_accuracy']:.1%}.",
    ]
    (RESULTS / "scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
