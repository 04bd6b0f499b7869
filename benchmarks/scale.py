"""Sharded evaluation on Ray against one process: same per-example results, the wall time with
Ray's start-up separated from the work, per-shard timings and a projection to 64 cores.

    python benchmarks/scale.py MODEL --data-dir DIR [--examples 1000] [--workers 2]
        [--preset standard|quick] [--batch-size 100] [--out NAME]

Evaluates a saved model twice on the first N test examples of its own split, under the cascade
``--preset``: in one process with ``--workers`` torch threads, and on a local Ray instance of
``--workers`` CPUs (one thread per task), with the same seed and batch size. Both paths run the
same evaluator; a recording wrapper keeps every per-example mask each (attack, eps) pass
returns, and the two lists must be equal (not just the figures).

Timings: the one-process total and its per-batch times; Ray's start-up (``ray.init``), the
work (the wall time of the sharded passes, :attr:`RayBatchRunner.calls`) and what the driver
does outside them (clean predictions, merging); each shard's time inside its task. The
efficiency is the shards' summed task time over (the passes' wall time x workers). The
projection to ``P`` cores schedules each pass's shards longest-first on ``P`` workers
(:func:`bastion.evaluation.ray_runner.project_seconds`), keeps each pass's measured overhead and
the driver's work, and adds the start-up measured here: it assumes a shard takes there the time
it took here, on a quiet core. Results go to ``benchmarks/results/<--out>.md`` and ``.json``
(default ``scale``). The machine's load average is recorded before and after: with other work
running, the times compare only within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bastion.attacks import build_attack
from bastion.attacks.base import Attack
from bastion.evaluation.evaluator import (
    AttackBatch,
    BatchRunner,
    NamedAttack,
    attack_batch,
    evaluate_model,
)
from bastion.models import load_model, read_sidecar
from bastion.provenance import load_model_split
from bastion.threat import ThreatModel

RESULTS = Path(__file__).resolve().parent / "results"
PROJECTED = (8, 16, 64)


class Recording:
    """A batch runner that keeps each pass's per-example mask and, when it runs batches here,
    each batch's seconds."""

    def __init__(self, inner: BatchRunner | None = None) -> None:
        self.inner = inner
        self.masks: list[Tensor] = []
        self.batch_seconds: list[float] = []

    def __call__(
        self, model: nn.Module, attack: Attack, threat: ThreatModel, batches: list[AttackBatch]
    ) -> list[Tensor]:
        if self.inner is not None:
            out = self.inner(model, attack, threat, batches)
        else:
            out = []
            for b in batches:
                t0 = time.perf_counter()
                out.append(attack_batch(model, attack, threat, b))
                self.batch_seconds.append(time.perf_counter() - t0)
        self.masks.append(torch.cat(out) if out else torch.zeros(0, dtype=torch.bool))
        return out


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
        "sum": round(sum(values), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--examples", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--preset", default="standard")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--out", default="scale")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    net = load_model(args.model)
    meta = read_sidecar(args.model)
    ds = load_model_split(meta, data_dir=args.data_dir).data
    test = ds.test.subset(args.examples)
    threat = ThreatModel.from_dict(meta["metadata"]["threat"])
    attacks = [NamedAttack("cascade", build_attack("cascade", {"preset": args.preset}))]
    kwargs: dict[str, Any] = {"seed": 0, "batch_size": args.batch_size, "sanity": "off"}

    torch.set_num_threads(args.workers)
    here = Recording()
    t0 = time.perf_counter()
    single = evaluate_model(net, test.x, test.y, threat, attacks, runner=here, **kwargs)
    single_s = time.perf_counter() - t0

    from bastion.evaluation.ray_runner import RayBatchRunner, project_seconds

    t0 = time.perf_counter()
    runner = RayBatchRunner(workers=args.workers)
    startup_s = time.perf_counter() - t0
    there = Recording(runner)
    t0 = time.perf_counter()
    spread = evaluate_model(net, test.x, test.y, threat, attacks, runner=there, **kwargs)
    ray_s = time.perf_counter() - t0
    runner.close()
    load_after = os.getloadavg()[0]

    calls = runner.calls
    work_s = sum(c.wall_seconds for c in calls)
    driver_s = max(0.0, ray_s - work_s)
    shards = [s for c in calls for s in c.shard_seconds]
    per_example = len(here.masks) == len(there.masks) and all(
        torch.equal(a, b) for a, b in zip(here.masks, there.masks, strict=True)
    )
    efficiency = sum(shards) / (work_s * runner.workers) if work_s > 0 else float("nan")
    projections = {
        str(p): round(
            startup_s + driver_s + project_seconds(calls, p, measured_workers=runner.workers),
            1,
        )
        for p in PROJECTED
    }
    doc = {
        "model": str(args.model),
        "data": ds.name,
        "examples": len(test),
        "preset": args.preset,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "per_example_identical": per_example,
        "figures_identical": spread["attacks"] == single["attacks"],
        "worst_case_accuracy": single["worst_case_accuracy"],
        "single_process_seconds": round(single_s, 1),
        "single_process_batches": _spread(here.batch_seconds),
        "ray_startup_seconds": round(startup_s, 1),
        "ray_seconds_without_startup": round(ray_s, 1),
        "ray_work_seconds": round(work_s, 1),
        "ray_driver_seconds": round(driver_s, 1),
        "ray_passes": len(calls),
        "ray_shards": _spread(shards),
        "ray_shard_examples": [n for c in calls for n in c.shard_examples],
        "ray_efficiency": round(efficiency, 3),
        "projected_seconds": projections,
        "cores": os.cpu_count(),
        "load_average_before": round(load_before, 1),
        "load_average_after": round(load_after, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(doc, indent=2) + "\n")
    sh = doc["ray_shards"]
    lines = [
        f"# Sharded evaluation: {args.preset} cascade on {len(test)} examples of {ds.name}",
        "",
        f"`python benchmarks/scale.py MODEL --examples {args.examples} --workers {args.workers} "
        f"--preset {args.preset} --batch-size {args.batch_size}` on `{args.model.name}`.",
        "",
        "| | seconds |",
        "|---|---:|",
        f"| one process, {args.workers} threads | {doc['single_process_seconds']} |",
        f"| Ray start-up ({args.workers} CPUs) | {doc['ray_startup_seconds']} |",
        f"| Ray, {args.workers} workers x 1 thread, without start-up | "
        f"{doc['ray_seconds_without_startup']} |",
        f"| of which sharded passes ({len(calls)}) | {doc['ray_work_seconds']} |",
        f"| of which the driver (clean pass, merging) | {doc['ray_driver_seconds']} |",
        *(
            f"| projected, {p} cores (start-up and driver as here) | {projections[str(p)]} |"
            for p in PROJECTED
        ),
        "",
        f"Shards: {sh.get('count', 0)} tasks, task seconds min {sh.get('min')}, median "
        f"{sh.get('median')}, max {sh.get('max')} (sum {sh.get('sum')}); efficiency of the "
        f"sharded passes on {runner.workers} CPUs: {efficiency:.0%} (summed task time over wall "
        "time x workers). One-process batches: "
        f"median {doc['single_process_batches'].get('median')} s.",
        "",
        f"Per-example results identical: {per_example}; per-attack figures identical: "
        f"{doc['figures_identical']}; worst case {single['worst_case_accuracy']:.1%}.",
        "",
        f"Load average {load_before:.1f} before and {load_after:.1f} after, on "
        f"{os.cpu_count()} cores: other work was running, so the times compare only within "
        "this run, and the projection inherits this machine's per-shard times.",
    ]
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
