"""Drift monitor: fires on shifted data, stays quiet on same-distribution data."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import torch

from bastion.errors import DataError
from bastion.monitor import DriftMonitor, MonitorState, ReferenceStats, format_state


def _probs(x: torch.Tensor, classes: int = 4) -> torch.Tensor:
    w = torch.linspace(-1, 1, x[0].numel() * classes).reshape(x[0].numel(), classes)
    return (x.reshape(x.shape[0], -1) @ w * 3).softmax(dim=1)


def _tabular(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 6, generator=g) * 0.8 + shift


def _images(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 28, 28, generator=g) * 0.5
    return (base + shift).clamp(0, 1)


@pytest.mark.parametrize("make", [_tabular, _images])
def test_fires_on_shift_not_on_same_distribution(
    make: Callable[..., torch.Tensor],
) -> None:
    gen = make
    ref_x = gen(800, 0)
    ref = ReferenceStats.from_data(ref_x, _probs(ref_x), seed=0)
    quiet = DriftMonitor(ref, window=200, alpha=0.01, permutations=100)
    for i in range(3):
        x = gen(200, 10 + i)
        quiet.observe(x, _probs(x))
    assert quiet.state.windows == 3
    assert sum(quiet.state.alerts.values()) == 0, quiet.state.history
    loud = DriftMonitor(ref, window=200, alpha=0.01, permutations=100)
    x = gen(200, 99, shift=0.2)
    for i in range(0, 200, 20):  # per-request observation, window closes on the last batch
        loud.observe(x[i : i + 20], _probs(x[i : i + 20]))
    assert loud.state.windows == 1
    assert loud.state.alerts["input"] == 1


def test_class_mix_and_confidence_drift() -> None:
    ref_x = _tabular(800, 0)
    ref = ReferenceStats.from_data(ref_x, _probs(ref_x), seed=0)
    mon = DriftMonitor(ref, window=100)
    x = _tabular(100, 5)
    probs = torch.full((100, 4), 0.02)
    probs[:, 0] = 0.94  # every answer class 0, very confident
    result = mon.close_window(ref.view(x), probs)
    assert "class_mix" in result["alerts"] and "confidence" in result["alerts"]
    assert "input" not in result["alerts"]


def test_state_and_reference_round_trip(tmp_path: Path) -> None:
    ref_x = _images(300, 0)
    ref = ReferenceStats.from_data(ref_x, _probs(ref_x), seed=3)
    ref.save(tmp_path / "ref.json")
    again = ReferenceStats.load(tmp_path / "ref.json")
    assert torch.equal(again.view(ref_x[:5]), ref.view(ref_x[:5]))
    mon = DriftMonitor(again, window=50, alpha=0.05, permutations=50)
    x = _images(50, 1, shift=0.3)
    mon.observe(x, _probs(x))
    mon.state.save(tmp_path / "state.json")
    state = MonitorState.load(tmp_path / "state.json")
    assert state == mon.state
    text = format_state(state)
    assert "observed 50 inputs in 1 closed window" in text and "input 1" in text, text
    with pytest.raises(DataError, match="not a monitor state"):
        MonitorState.from_dict({"format": "x"})


def test_observe_is_thread_safe() -> None:
    ref_x = _tabular(500, 0)
    ref = ReferenceStats.from_data(ref_x, _probs(ref_x), seed=0)
    mon = DriftMonitor(ref, window=100)
    x = _tabular(400, 1)

    def worker(k: int) -> None:
        for i in range(k * 100, (k + 1) * 100):
            mon.observe(x[i : i + 1], _probs(x[i : i + 1]))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert mon.state.observed == 400 and mon.state.windows == 4


def test_webhook_posts_alerts_and_failures_do_not_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    received: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        ref_x = _tabular(500, 0)
        ref = ReferenceStats.from_data(ref_x, _probs(ref_x), seed=0)
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        mon = DriftMonitor(ref, window=100, webhook_url=url)
        x = _tabular(100, 2, shift=0.3)
        mon.observe(x, _probs(x))
        assert received and received[0]["event"] == "bastion.drift"
    finally:
        server.shutdown()
        server.server_close()
    dead = DriftMonitor(ref, window=100, webhook_url="http://127.0.0.1:9/none", webhook_timeout=0.5)
    dead.observe(x, _probs(x))
    assert dead.state.alerts["input"] == 1
    assert any("webhook" in r.message for r in caplog.records)
