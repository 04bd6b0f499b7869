"""A real uvicorn server, killed with SIGKILL under load: every request that got a response
has its audit record after the restart (the record commits before the response is sent), with
the audit log in SQLite and in PostgreSQL (the real server of ``BASTION_TEST_POSTGRES_URL``;
skipped, saying so, without one)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from serve_fixtures import digits_test_images

from bastion.serve import AuditLog, KeyStore


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(run_dir: Path, port: int, audit: str, keys: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "bastion.serve",
        str(run_dir),
        "--port",
        str(port),
        "--set",
        f"audit_url={audit}",
        "--set",
        f"keys_db={keys}",
        "--set",
        "rate=null",
        "--set",
        "torch_threads=1",
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        try:
            if httpx.get(f"{url}/v1/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not become healthy")


def test_sigkill_mid_load_loses_no_answered_audit_record(
    run_dir: Path, tmp_path: Path, audit_url: str
) -> None:
    kill_under_load(run_dir, tmp_path, audit_url)


def kill_under_load(run_dir: Path, tmp_path: Path, audit_db: str) -> dict[str, int]:
    """Start the service on ``audit_db``, load it with 8 clients, SIGKILL it after 150
    answers, restart it and check every answered request's records; returns the counts."""
    keys_db = tmp_path / "keys.db"
    store = KeyStore(keys_db)
    _, key = store.create("load")
    store.close()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    x, _ = digits_test_images()
    bad = (x[:40] * 3.0 - 1.0).tolist()  # out of [0, 1]: every input is rejected and audited
    answered: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(worker: int) -> None:
        with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=5.0) as c:
            i = worker
            while not stop.is_set():
                try:
                    r = c.post("/v1/predict", json={"input": bad[i % len(bad)]})
                except httpx.TransportError:
                    return  # the server is gone
                i += 8
                with lock:
                    if r.status_code == 200:
                        answered.append(r.json()["request_id"])
                    else:
                        failures.append(r.text)

    server = _start(run_dir, port, audit_db, keys_db)
    try:
        _wait_healthy(server, url)
        threads = [threading.Thread(target=client, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10.0
        while len(answered) < 150 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.send_signal(signal.SIGKILL)  # mid-load: requests are in flight
        server.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if server.stderr:
            server.stderr.close()
    assert not failures, failures[:3]
    assert len(answered) >= 50, f"only {len(answered)} answers before the kill"

    restarted = _start(run_dir, port, audit_db, keys_db)
    try:
        _wait_healthy(restarted, url)
        r = httpx.post(
            f"{url}/v1/predict", json={"input": bad[0]}, headers={"X-API-Key": key}, timeout=10
        )
        assert r.status_code == 200
        log = AuditLog(audit_db)
        missing = [rid for rid in answered if not log.by_request(rid)]
        assert not missing, f"{len(missing)} of {len(answered)} answered requests unaudited"
        assert log.by_request(r.json()["request_id"])[0].verdict == "reject"
        records = log.all()
        assert all(rec.verdict == "reject" and rec.key_name == "load" for rec in records)
        assert len(records) >= len(answered) + 1
        log.close()
        return {"answered": len(answered), "missing": len(missing), "records": len(records)}
    finally:
        restarted.send_signal(signal.SIGTERM)
        try:
            restarted.wait(timeout=10)
        except subprocess.TimeoutExpired:
            restarted.kill()
            restarted.wait()
        if restarted.stderr:
            restarted.stderr.close()
