"""The one runner behind the channel backdoor benchmarks (``poisoning_text.py``,
``poisoning_tabular.py``).

Each job is one drill (a data set, seed and rate) run by its channel's drill function, itself
:func:`bastion.poisoning.drill.run_drill` with the channel's hooks; :func:`run_jobs` runs the
jobs in order with prefixed progress lines and :func:`write_results` writes the setup, the
per-job records and the total seconds as JSON beside the Markdown the caller renders.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

LogFn = Callable[[str], None]
Job = tuple[dict[str, Any], Callable[[LogFn], dict[str, Any]]]


def common_args(ap: argparse.ArgumentParser, *, seeds: list[int], out: str) -> None:
    """``--seeds``, ``--epochs`` (None: the drill's default), ``--threads`` and ``--out``."""
    ap.add_argument("--seeds", type=int, nargs="+", default=seeds)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=out)


def run_jobs(jobs: Iterable[Job], *, threads: int) -> tuple[list[dict[str, Any]], float]:
    """``(runs, seconds)``: per job, its key fields followed by the drill's record."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    runs: list[dict[str, Any]] = []
    for key, job in jobs:
        tag = "[" + " ".join(f"{k} {v}" for k, v in key.items()) + "]"
        runs.append({**key, **job(lambda m, t=tag: print(t, m, flush=True))})
    return runs, round(time.perf_counter() - t0, 1)


def write_results(
    setup: dict[str, Any],
    runs: list[dict[str, Any]],
    seconds: float,
    out: str | Path,
    render: Callable[[dict[str, Any]], str],
) -> dict[str, Any]:
    """Write ``{setup, runs, seconds}`` to ``out`` with a ``.json`` suffix and its Markdown
    (``render``) to ``out``; returns the document."""
    results = {"setup": setup, "runs": runs, "seconds": seconds}
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(results, indent=1))
    path.write_text(render(results))
    print(f"written {path}")
    return results
