"""`make demo` on a quiet and on a busy machine: does the thread choice hold up?

Runs the README's main job (``bastion run examples/digits.yaml``) as a fresh process, three
ways, one after another:

- ``quiet``: nothing else started by this script, default threads (``auto``);
- ``busy``: with ``--burners`` CPU-bound processes (two by default) spinning, default threads;
- ``busy, all cores``: the same load with ``--threads`` set to every core, which is what torch
  did before threads were chosen (the oversubscribed case the issue measured at 29 minutes).

Writes ``benchmarks/results/demo-load.md`` and ``.json`` with the wall times and the ratio
busy/quiet. The target: busy within 3x of quiet.

    python benchmarks/demo_load.py [--burners 2] [--skip-all-cores]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _burn(stop: Any) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x = (x * 1103515245 + 12345) % 2147483648


def _run_demo(threads: str | None) -> tuple[float, str]:
    """Wall seconds of one `bastion run examples/digits.yaml` and its thread line."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "bastion.cli", "run", "examples/digits.yaml", "--out", out]
        cmd += ["-q"] + (["--threads", threads] if threads else [])
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t0
    line = next((s for s in done.stderr.splitlines() if s.startswith("using ")), "")
    return wall, line


def _loaded(burners: int, threads: str | None) -> tuple[float, str]:
    stop = mp.Event()
    procs = [mp.Process(target=_burn, args=(stop,)) for _ in range(burners)]
    for p in procs:
        p.start()
    try:
        time.sleep(2.0)  # let the burners reach full speed
        return _run_demo(threads)
    finally:
        stop.set()
        for p in procs:
            p.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--burners", type=int, default=2)
    ap.add_argument("--skip-all-cores", action="store_true")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    wall, line = _run_demo(None)
    rows.append({"case": "quiet", "threads": "auto", "seconds": round(wall, 1), "line": line})
    time.sleep(5.0)
    wall, line = _loaded(args.burners, None)
    rows.append({"case": "busy", "threads": "auto", "seconds": round(wall, 1), "line": line})
    if not args.skip_all_cores:
        time.sleep(5.0)
        wall, line = _loaded(args.burners, str(cores))
        rows.append(
            {
                "case": "busy, all cores",
                "threads": str(cores),
                "seconds": round(wall, 1),
                "line": line,
            }
        )
    quiet = rows[0]["seconds"]
    doc = {"cores": cores, "burners": args.burners, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "demo-load.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        f"# `bastion run examples/digits.yaml`, quiet and busy ({cores} cores, "
        f"{args.burners} CPU-bound processes for busy)",
        "",
        "| case | --threads | wall s | x quiet | thread line |",
        "|---|---|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['threads']} | {r['seconds']} | "
            f"{r['seconds'] / quiet:.2f} | {r['line']} |"
        )
    (RESULTS / "demo-load.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
