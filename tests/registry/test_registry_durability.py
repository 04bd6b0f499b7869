"""Durability: writers recording runs are killed with SIGKILL mid-stream, and every record they
had acknowledged (``Registry.record`` returned, the id printed) is still there, complete with
its files, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from registry_fixtures import Project

from bastion.registry.store import Registry

WRITER = """
import sys
from bastion.registry.record import run_record
from bastion.registry.store import Registry

reg = Registry(sys.argv[1])
rec = run_record(sys.argv[2])
print("ready", flush=True)
while True:
    print(reg.record(rec), flush=True)   # printed only once committed
"""


def _kill_writers(url: str, run_dir: Path, *, writers: int, acks: int) -> set[str]:
    """Start ``writers`` processes recording ``run_dir`` into ``url``; SIGKILL them all once
    ``acks`` records in total were acknowledged; return the acknowledged run ids."""
    env = {**os.environ, "BASTION_REGISTRY_URL": "off"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, str(run_dir)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(writers)
    ]
    acked: set[str] = set()
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 120
        while len(acked) < acks and time.monotonic() < deadline:
            for p in procs:
                assert p.stdout is not None
                line = p.stdout.readline().strip()
                assert line, f"writer exited early with status {p.poll()}"
                acked.add(line)
        assert len(acked) >= acks
    finally:
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
        for p in procs:
            p.wait(timeout=30)
            assert p.stdout is not None
            # a line printed just before the kill was acknowledged too
            acked |= {ln.strip() for ln in p.stdout.read().splitlines() if ln.strip()}
            p.stdout.close()
    assert all(p.returncode == -signal.SIGKILL for p in procs)
    return acked


def test_no_acknowledged_record_is_lost(registry_url: str, project: Project) -> None:
    run_dir = project.runs["v1"]
    acked = _kill_writers(registry_url, run_dir, writers=3, acks=60)
    with Registry(registry_url) as reg:
        runs = {r.run_id: r for r in reg.runs()}
        assert acked <= set(runs)
        for run_id in acked:
            assert runs[run_id].summary == runs[next(iter(acked))].summary
            assert [a.role for a in reg.artifacts(run_id)] == ["model", "scorecard"]
        # a record is written whole or not at all: no run without its files
        for run_id in runs:
            assert len(reg.artifacts(run_id)) == 2
    if registry_url.startswith("sqlite:///"):
        with sqlite3.connect(registry_url.removeprefix("sqlite:///")) as c:
            assert c.execute("pragma integrity_check").fetchone() == ("ok",)
