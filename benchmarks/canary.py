"""A canary under `bastion serve-stage`: its cost, and how fast a rollback rule demotes a bad one.

Trains the tiny digits config of the registry tests (``bastion run``, an MLP, 2 epochs), records
it in a fresh registry and promotes it to ``production``. Then, per scenario, starts
``bastion serve-stage --canary canary --canary-fraction 0.2 --stages stages.yaml`` as a
subprocess (one uvicorn process, one torch thread, no API key, no rate limit) and drives it
with ``--clients`` keep-alive threads posting 4 digits per request for ``--requests`` requests
each:

* ``production only``: no canary stage (the reference);
* ``healthy canary``: the same model again, recorded as another run, in the canary stage;
* ``abstaining canary``: the model behind a guard that abstains below 99.9% confidence (most
  inputs), rule ``abstention_rate > 0.3`` over 40 inputs, at least 20;
* ``slow canary``: the model behind randomized smoothing (Cohen et al. 2019; 2,000 noise
  samples per input), rule ``p99_latency_s > 0.05`` over 40 inputs, at least 20.

Reported per scenario: statuses (every request must be answered 200), p50/p99 request latency
and their ratio to ``production only`` (the canary's cost: production decides every input,
so each canary answer can be compared), the canary inputs judged until the demotion, the seconds
from the first request to the demotion (the registry event's time), and the rule's reason.
Results go to ``benchmarks/results/canary.md`` and ``canary.json``.

Usage::

    nice -n 19 .venv/bin/python benchmarks/canary.py

The clients run on the same cores as the server, and the machine is shared: absolute times move
with the load (reported); compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "registry"))
from registry_fixtures import TINY  # noqa: E402  (the registry tests' tiny config, one copy)

RULES = {
    "abstaining canary": {"metric": "abstention_rate", "max": 0.3, "window": 40, "min_samples": 20},
    "slow canary": {"metric": "p99_latency_s", "max": 0.05, "window": 40, "min_samples": 20},
}
GUARDS: dict[str, dict[str, Any]] = {
    "abstaining canary": {"postcheck": {"min_confidence": 0.999}},
    "slow canary": {
        "prediction": {"kind": "smoothing", "sigma": 0.1, "samples": 2000, "alpha": 0.001},
        "postcheck": {"enabled": False},
    },
}


def _train(root: Path) -> Path:
    from bastion.cli import main

    cfg = root / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    assert main(["run", str(cfg), "--out", str(root / "runs"), "-q"]) == 0
    (run,) = (root / "runs").iterdir()
    return run


def _candidate(run: Path, dest: Path, guard: dict[str, Any] | None) -> Path:
    """A copy of ``run``, with a fitted guard of the given settings."""
    shutil.copytree(run, dest)
    if guard is not None:
        from bastion.data import load_dataset
        from bastion.guard.config import GuardConfig
        from bastion.guard.fit import fit_guard
        from bastion.guard.io import save_guard

        off = {"enabled": False}
        doc = {"squeezing": off, "ood": off, "adversarial": off, **guard}
        doc["prediction"] = {"models": ["baseline"], **doc.get("prediction", {})}
        data = load_dataset("digits", seed=0)
        save_guard(
            fit_guard(dest, GuardConfig.from_dict(doc), data.val.x, data.val.y, seed=0),
            dest / "guard",
        )
    return dest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _registry(work: Path, production: Path, canary: Path | None) -> Path:
    from bastion.registry.record import run_record
    from bastion.registry.stages import StageConfig, promote
    from bastion.registry.store import Registry

    db = work / "registry.db"
    policy = work / "policy.yaml"
    policy.write_text(yaml.safe_dump({"rules": [{"metric": "data.n_eval", "min": 1}]}))
    stages = {n: StageConfig(n) for n in ("production", "canary")}
    with Registry(db) as reg:
        for stage, run in (("production", production), ("canary", canary)):
            if run is not None:
                run_id = reg.record(run_record(run))
                assert promote(reg, run_id, stage, stages=stages, policy=policy).promoted
    return db


def _serve(
    work: Path, db: Path, rule: dict[str, Any] | None
) -> tuple[subprocess.Popen[bytes], str]:
    canary: dict[str, Any] = {"demote_when": [rule]} if rule else {}
    (work / "stages.yaml").write_text(
        yaml.safe_dump({"stages": {"production": {}, "canary": canary}})
    )
    port = _free_port()
    cmd = [
        sys.executable, "-m", "bastion.cli", "serve-stage", "--registry", str(db),
        "--canary", "canary", "--canary-fraction", "0.2", "--stages", str(work / "stages.yaml"),
        "--state-dir", str(work / "state"), "--port", str(port), "--poll", "0.5",
        "--set", "require_auth=false", "--set", "rate=null", "--set", "torch_threads=1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 120
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(
                f"serve-stage exited: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        try:
            if httpx.get(f"{url}/v1/health", timeout=2.0).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("serve-stage did not start")


def _drive(url: str, x: np.ndarray, *, clients: int, requests: int) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def worker(w: int) -> None:
        with httpx.Client(base_url=url, timeout=60.0) as c:
            c.get("/v1/health")
            barrier.wait()
            for i in range(requests):
                start = (w * requests + i) * 4 % (len(x) - 4)
                t0 = time.perf_counter()
                r = c.post("/v1/predict", json={"inputs": x[start : start + 4].tolist()})
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1

    started = time.time()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat = np.array(latencies) * 1000
    return {
        "started": started,
        "seconds": time.time() - started,
        "statuses": statuses,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
    }


def _metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


def _scenario(
    name: str, work: Path, prod: Path, canary: Path | None, x: np.ndarray, args: argparse.Namespace
) -> dict[str, Any]:
    from bastion.registry.store import Registry

    work.mkdir()
    db = _registry(work, prod, canary)
    proc, url = _serve(work, db, RULES.get(name))
    try:
        row = _drive(url, x, clients=args.clients, requests=args.requests)
        time.sleep(1.5)  # the demotion's registry write, off the request path
        metrics = httpx.get(f"{url}/metrics").text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    row["name"] = name
    row["canary_inputs"] = _metric(metrics, 'bastion_variant_inputs_total{variant="canary"}')
    row["canary_decide_p99_s"] = _metric(
        metrics, 'bastion_variant_decide_seconds_recent{quantile="0.99",variant="canary"}'
    )
    row["primary_decide_p99_s"] = _metric(
        metrics, 'bastion_variant_decide_seconds_recent{quantile="0.99",variant="primary"}'
    )
    row["canary_agreement"] = _metric(metrics, 'bastion_variant_agreement_ratio{variant="canary"}')
    with Registry(db) as reg:
        demotions = [e for e in reg.stage_events("canary") if e.action == "demote"]
    if demotions:
        at = datetime.fromisoformat(demotions[0].at.replace("Z", "+00:00")).timestamp()
        row["demoted_after_s"] = at - row["started"]
        row["reason"] = demotions[0].reason
    row["stderr_tail"] = [ln for ln in err.decode().splitlines() if "canary rule" in ln][:1]
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--requests", type=int, default=100, help="Requests per client.")
    args = p.parse_args(argv)
    from bastion.data import load_dataset

    load_start = os.getloadavg()[0]
    x = load_dataset("digits", seed=0).test.x.numpy()
    with tempfile.TemporaryDirectory(prefix="bastion-canary-") as tmp:
        root = Path(tmp)
        prod = _train(root)
        candidates: dict[str, Path | None] = {
            "production only": None,
            "healthy canary": _candidate(prod, root / "healthy", None),
            **{n: _candidate(prod, root / n.replace(" ", "-"), g) for n, g in GUARDS.items()},
        }
        rows = [
            _scenario(name, root / f"s{i}", prod, cand, x, args)
            for i, (name, cand) in enumerate(candidates.items())
        ]
    load_end = os.getloadavg()[0]
    base = rows[0]
    for r in rows:
        r["p50_ratio"] = r["p50_ms"] / base["p50_ms"]
        r["p99_ratio"] = r["p99_ms"] / base["p99_ms"]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "canary.json").write_text(
        json.dumps({"rows": rows, "load": [load_start, load_end]}, indent=2)
    )
    md = [
        "# A canary under `bastion serve-stage`: cost and automatic demotion",
        "",
        f"Written by `benchmarks/canary.py`: tiny digits MLP (the registry tests' config); one "
        f"`bastion serve-stage` process (uvicorn, 1 torch thread, no auth, no rate limit), "
        f"canary share 0.2; {args.clients} client threads on the same machine, {args.requests} "
        "requests of 4 inputs each.",
        f"Machine: {os.cpu_count()} cores shared with other people's work; load average "
        f"{load_start:.1f} at the start, {load_end:.1f} at the end: absolute times are noisy, "
        "compare the ratios.",
        "",
        "| scenario | rule | statuses | p50 ms | p99 ms | p50 / production only "
        "| p99 / production only | canary inputs | canary decide p99 ms "
        "| production decide p99 ms | agreement with production | demoted after s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rule = RULES.get(r["name"])
        rule_text = (
            f"`{rule['metric']} > {rule['max']}` "
            f"(window {rule['window']}, min {rule['min_samples']})"
            if rule
            else "-"
        )
        demoted = f"{r['demoted_after_s']:.2f}" if "demoted_after_s" in r else "-"
        md.append(
            f"| {r['name']} | {rule_text} | {r['statuses']} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | "
            f"{r['p50_ratio']:.2f} | {r['p99_ratio']:.2f} | {r['canary_inputs']:.0f} | "
            f"{r['canary_decide_p99_s'] * 1000:.1f} | {r['primary_decide_p99_s'] * 1000:.1f} | "
            f"{r['canary_agreement']:.3f} | {demoted} |"
        )
    md += ["", "Demotion reasons (registry `stage_events.reason`):", ""]
    md += [f"- {r['name']}: {r['reason']}" for r in rows if "reason" in r]
    md += ["", "Reproduce: `nice -n 19 .venv/bin/python benchmarks/canary.py`", ""]
    (RESULTS / "canary.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
