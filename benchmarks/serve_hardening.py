"""The service's hardening targets (issue 18), measured.

1. ``fuzz``: schemathesis cases (positive and negative, every operation, half with a key,
   half without) against the real OpenAPI document, with the audit log in PostgreSQL (when
   ``BASTION_TEST_POSTGRES_URL`` is set, else SQLite) and ``audit_all`` on: counts of 5xx,
   unauthenticated 200s, and secrets (the API key's secret, the database password) found in
   any response body or log line. Target: >= 10,000 requests, all three counts 0.
2. ``kill``: SIGKILL of a real server under load, restarted, three rounds on SQLite and three
   on PostgreSQL: acknowledged requests without their audit record. Target: 0.
3. ``idle``: a real server's memory (RSS) before and after 200 idle connections without a
   key, and the p99 latency of keyed requests without and with them, twice: each connection
   holding a partial request head, and each holding a stalled 4 MB upload (a complete head
   without a key, then 256 KiB of body). Targets: < 50 MiB, p99 not more than 20% slower.

Usage (a PostgreSQL server from ``eval "$(.ci/postgres.sh start)"`` for the PostgreSQL parts)::

    .venv/bin/python benchmarks/serve_hardening.py [--only fuzz|kill|idle] [--fuzz-examples N]

Results go to ``benchmarks/results/serve_hardening.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT / "tests" / "serve"))  # the test helpers: tiny run, fuzz, kill

from serve_fixtures import (  # noqa: E402
    AsgiClient,
    digits_test_images,
    postgres_database,
    train_digits_run,
)

PG_ENV = "BASTION_TEST_POSTGRES_URL"


class _Served:
    """What the test helpers expect of a served app: client, key, audit, keys."""

    def __init__(self, run: Path, work: Path, audit_url: str) -> None:
        from bastion.serve import AuditLog, KeyStore, ModelGuard, ServeSettings
        from bastion.serve.app import create_app

        self.audit = AuditLog(audit_url)
        self.keys = KeyStore(work / "keys-fuzz.db")
        _, self.key = self.keys.create(f"fuzz-{secrets.token_hex(3)}")
        settings = ServeSettings(rate=None, extraction_check=False, max_batch=4, audit_all=True)
        app = create_app(
            ModelGuard.from_run(run), settings=settings, audit=self.audit, keys=self.keys
        )
        self.client = AsgiClient(app)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def fuzz(run: Path, work: Path, examples: int, pg: str | None) -> dict[str, Any]:
    from test_serve_schemathesis import fuzz_service

    out: dict[str, Any] = {}
    with _maybe_database(pg, "bastion_fuzz") as url:
        audit_url = url or f"sqlite:///{work / 'audit-fuzz.db'}"
        served = _Served(run, work, audit_url)
        key_secret = served.key.split("_", 2)[2]
        hidden = [key_secret] + ([urlsplit(url).password or ""] if url else [])
        handler = _Collect()
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        t0 = time.perf_counter()
        failure = ""
        counts: dict[str, int] = {}
        try:
            counts = fuzz_service(served, examples, secrets=hidden)
        except BaseException as e:  # report, don't hide: the figures below say it failed
            failure = f"{type(e).__name__}: {str(e)[:500]}"
        finally:
            root.removeHandler(handler)
        audited = len(served.audit.all())
        served.client.close()
        served.keys.close()
        served.audit.close()
        leaked_logs = sum(any(h and h in line for h in hidden) for line in handler.lines)
        out = {
            "audit": "postgresql" if url else "sqlite",
            "examples": examples,
            **counts,
            "secrets_in_responses": 0 if not failure else None,
            "log_lines": len(handler.lines),
            "secrets_in_log_lines": leaked_logs,
            "audit_records": audited,
            "seconds": round(time.perf_counter() - t0, 1),
            "failure": failure,
        }
    return out


class _maybe_database:
    def __init__(self, pg: str | None, prefix: str) -> None:
        self.pg, self.prefix = pg, prefix
        self._cm: Any = None

    def __enter__(self) -> str | None:
        if self.pg is None:
            return None
        self._cm = postgres_database(self.pg, f"{self.prefix}_{secrets.token_hex(4)}")
        return str(self._cm.__enter__())

    def __exit__(self, *exc: object) -> None:
        if self._cm is not None:
            self._cm.__exit__(*exc)


def kill(run: Path, work: Path, rounds: int, pg: str | None) -> list[dict[str, Any]]:
    from test_serve_crash import kill_under_load

    rows = []
    for backend in ("sqlite", "postgresql"):
        if backend == "postgresql" and pg is None:
            rows.append({"backend": backend, "skipped": f"{PG_ENV} not set"})
            continue
        for r in range(rounds):
            folder = work / f"kill-{backend}-{r}"
            folder.mkdir()
            with _maybe_database(pg if backend == "postgresql" else None, "bastion_kill") as url:
                audit = url or f"sqlite:///{folder / 'audit.db'}"
                try:
                    counts = kill_under_load(run, folder, audit)
                    rows.append({"backend": backend, "round": r + 1, **counts})
                except AssertionError as e:
                    rows.append({"backend": backend, "round": r + 1, "failure": str(e)[:300]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _latencies(url: str, key: str, body: bytes, n: int, threads: int = 4) -> list[float]:
    lat: list[float] = []
    lock = threading.Lock()
    per = n // threads

    def worker() -> None:
        mine = []
        with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=30) as c:
            c.get("/v1/health")
            for _ in range(per):
                t0 = time.perf_counter()
                r = c.post("/v1/predict", content=body)
                mine.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
        with lock:
            lat.extend(mine)

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return [v * 1000 for v in lat]


def _server_connections(port: int) -> int:
    """Established TCP connections whose local port is ``port`` (the server's side)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                count += 1
    return count


def idle(
    run: Path, work: Path, connections: int, requests: int, mode: str, rounds: int = 5
) -> dict[str, Any]:
    """See the module docstring; latency in ``rounds`` rounds of three runs of ``requests``
    keyed requests each (without, with, without the idle connections) from 4 keep-alive client
    threads. The p99 change is the median over rounds of each round's ratio of the with-run to
    the without-runs around it (robust to bursts of load from other work on a shared
    machine); the same for the two without-runs of a round measures the method's noise."""
    from bastion.serve import create_key

    key = create_key(work / f"keys-idle-{mode}.db", "idle")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    url = f"http://127.0.0.1:{port}"
    settings = {
        "audit_url": f"sqlite:///{work / f'audit-idle-{mode}.db'}",
        "keys_db": str(work / f"keys-idle-{mode}.db"),
        "rate": None,
        "torch_threads": 1,
        # hold every idle connection for the whole measurement (the defaults would refuse
        # those over 100 from one address and close the rest after 10 s)
        "max_connections_per_client": connections + 50,
        "idle_connection_timeout_s": 600,
    }
    cmd = [sys.executable, "-m", "bastion.serve", str(run), "--port", str(port)]
    for k, v in settings.items():
        cmd += ["--set", f"{k}={json.dumps(v)}"]
    log = (work / f"server-idle-{mode}.log").open("wb")
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=log)
    head = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000\r\n"
    chunk = b"[" * (256 * 1024)
    socks: list[socket.socket] = []
    base: list[float] = []
    loaded: list[float] = []
    ratios: list[float] = []
    noise: list[float] = []
    rss: list[float] = []
    held: list[int] = []
    try:
        deadline = time.monotonic() + 300  # importing torch on a loaded machine is slow
        while True:
            try:
                if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"server did not start: {(work / f'server-idle-{mode}.log').read_text()}"
                )
            time.sleep(0.1)
        x, _ = digits_test_images()
        body = json.dumps({"input": x[0].tolist()}).encode()
        _latencies(url, key, body, 400)  # warm-up: first key check, allocator, caches
        rss_before = _rss_mib(proc.pid)
        for _ in range(rounds):
            before = _latencies(url, key, body, requests)
            for _ in range(connections):
                c = socket.create_connection(("127.0.0.1", port))
                if mode == "partial-head":
                    c.sendall(head)  # a request head never finished, no key
                else:  # a complete head without a key, then the start of a 4 MB body
                    c.sendall(head + b"Content-Type: application/json\r\n\r\n" + chunk)
                socks.append(c)
            time.sleep(0.5)
            held.append(_server_connections(port))
            rss.append(_rss_mib(proc.pid))
            with_idle = _latencies(url, key, body, requests)
            rss.append(_rss_mib(proc.pid))
            for c in socks:
                c.close()
            socks.clear()
            time.sleep(0.3)
            after = _latencies(url, key, body, requests)
            base += before + after
            loaded += with_idle
            # with vs the two without-runs around it (cancels a linear drift of the machine's
            # load), and the two without-runs against each other: the noise of the method
            ratios.append(float(np.percentile(with_idle, 99) / np.percentile(before + after, 99)))
            noise.append(float(np.percentile(after, 99) / np.percentile(before, 99)))
    finally:
        for c in socks:
            c.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    p99_base, p99_loaded = float(np.percentile(base, 99)), float(np.percentile(loaded, 99))
    return {
        "mode": mode,
        "connections": connections,
        "server_connections_held_min": min(held),
        "rss_before_mib": round(rss_before, 1),
        "rss_max_with_idle_mib": round(max(rss), 1),
        "idle_cost_mib": round(max(rss) - rss_before, 1),
        "rss_mib_by_round": [round(v, 1) for v in rss[1::2]],
        "rounds": rounds,
        "requests_each": requests,
        "p50_ms": [
            round(float(np.percentile(base, 50)), 2),
            round(float(np.percentile(loaded, 50)), 2),
        ],
        "p99_ms": [round(p99_base, 2), round(p99_loaded, 2)],
        "p99_change_pct": round(100 * (float(np.median(ratios)) - 1), 1),
        "p99_change_pct_pooled": round(100 * (p99_loaded / p99_base - 1), 1),
        "p99_change_pct_without_vs_without": round(100 * (float(np.median(noise)) - 1), 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=["fuzz", "kill", "idle"], default=None)
    p.add_argument("--fuzz-examples", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--idle-connections", type=int, default=200)
    p.add_argument("--requests", type=int, default=600)
    p.add_argument("--idle-rounds", type=int, default=10)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    pg = os.environ.get(PG_ENV) or None
    work = Path(tempfile.mkdtemp(prefix="bastion-hardening-"))
    run = train_digits_run(work / "run")
    results: dict[str, Any] = {"postgres": pg is not None}
    if args.only in (None, "idle"):
        results["idle"] = []
        for mode in ("partial-head", "stalled-upload"):
            results["idle"].append(
                idle(run, work, args.idle_connections, args.requests, mode, args.idle_rounds)
            )
            print(json.dumps(results["idle"][-1]), flush=True)
    if args.only in (None, "kill"):
        results["kill"] = kill(run, work, args.rounds, pg)
    if args.only in (None, "fuzz"):
        results["fuzz"] = fuzz(run, work, args.fuzz_examples, pg)
        print(json.dumps(results["fuzz"]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "serve_hardening" if args.only is None else f"serve_hardening_{args.only}"
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(markdown(results))
    print(json.dumps(results, indent=2))
    return 0


def markdown(results: dict[str, Any]) -> str:
    """The results as the tables of ``benchmarks/results/serve_hardening.md``."""
    load = os.getloadavg()
    md = [
        "# Guarded HTTP service: hardening targets (issue 18)",
        "",
        f"`benchmarks/serve_hardening.py`; {os.cpu_count()} cores shared with other work "
        f"(load average at the end {load[0]:.1f}); PostgreSQL: "
        f"{'a throwaway local server' if results['postgres'] else 'not available'}.",
        "",
    ]
    if "fuzz" in results:
        f = results["fuzz"]
        md += [
            "## Schema-driven fuzzing (schemathesis over /openapi.json, with and without a key)",
            "",
            "| audit log | requests | with a key | 5xx | unauthenticated 200 | secrets in "
            "responses | secrets in log lines | valid arrays answered 200 | failure |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {f['audit']} (audit_all) | {f.get('requests')} | {f.get('with_key')} | "
            f"{f.get('5xx')} | {f.get('unauthenticated_200')} | {f['secrets_in_responses']} | "
            f"{f['secrets_in_log_lines']} of {f['log_lines']} | {f.get('positive_arrays')} | "
            f"{f['failure'] or 'none'} |",
            "",
        ]
    if "kill" in results:
        md += [
            "## SIGKILL under load (8 clients; killed after 150 answers; restarted)",
            "",
            "| audit log | round | answered before the kill | answered without a record "
            "| records |",
            "|---|---|---|---|---|",
        ]
        for r in results["kill"]:
            if "skipped" in r:
                md.append(f"| {r['backend']} | skipped: {r['skipped']} | | | |")
            elif "failure" in r:
                md.append(f"| {r['backend']} | {r['round']} | FAILED: {r['failure']} | | |")
            else:
                md.append(
                    f"| {r['backend']} | {r['round']} | {r['answered']} | {r['missing']} | "
                    f"{r['records']} |"
                )
        md.append("")
    if "idle" in results:
        md += [
            "## Idle connections without a key (200, each held open)",
            "",
            "| connections hold | held by the server | RSS before MiB | extra RSS MiB "
            "| keyed p50 ms (without / with) | keyed p99 ms (without / with) | p99 change "
            "(median of rounds) | p99 change (pooled) | noise: without vs without |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in results["idle"]:
            md.append(
                f"| {r['mode']} | {r['server_connections_held_min']} | {r['rss_before_mib']} | "
                f"{r['idle_cost_mib']} | {r['p50_ms'][0]} / {r['p50_ms'][1]} | "
                f"{r['p99_ms'][0]} / {r['p99_ms'][1]} | {r['p99_change_pct']:+.1f}% | "
                f"{r['p99_change_pct_pooled']:+.1f}% | "
                f"{r.get('p99_change_pct_without_vs_without', float('nan')):+.1f}% |"
            )
        md += [
            "",
            "A stalled upload without a key is answered 401 with `Connection: close` as soon as "
            "its head arrives, so the server holds none of those connections; its extra RSS is "
            "what uvicorn read of each upload before the key check (one read, at most 64 KiB), "
            "kept by the allocator after it is freed. Latency: rounds of three runs (without, "
            "with, without) of keyed requests from 4 keep-alive threads; the last column "
            "compares the two without-runs of each round, i.e. the noise of the method on "
            "this machine.",
            "",
        ]
    return "\n".join(md)


if __name__ == "__main__":
    sys.exit(main())
