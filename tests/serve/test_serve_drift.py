"""The service feeds the drift monitor: windows are tested off the request path, the state is
saved for `bastion monitor`, and /metrics shows the window and alert counts."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from serve_fixtures import AsgiClient, digits_test_images

from bastion.cli import main
from bastion.monitor import DriftMonitor, MonitorState, ReferenceStats
from bastion.serve import AuditLog, KeyStore, ModelGuard, ServeSettings
from bastion.serve.app import create_app
from bastion.serve.runner import MONITOR_STATE, drift_monitor_for_run


def _wait_for(path: Path, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < end:
        time.sleep(0.05)


def test_served_inputs_reach_the_drift_monitor(
    tmp_path: Path, model_guard: ModelGuard, capsys: pytest.CaptureFixture[str]
) -> None:
    x, _ = digits_test_images()
    xt = torch.from_numpy(x)
    with torch.no_grad():
        probs = torch.softmax(model_guard.model(xt), dim=1)
    run = tmp_path / "run"
    (run / "guard").mkdir(parents=True)
    ReferenceStats.from_data(xt, probs, seed=0).save(run / "guard" / "drift-reference.json")
    drift, state_path = drift_monitor_for_run(run)
    assert isinstance(drift, DriftMonitor) and state_path == run / MONITOR_STATE
    drift.window = 40
    app = create_app(
        model_guard,
        settings=ServeSettings(require_auth=False),
        audit=AuditLog(tmp_path / "audit.db"),
        keys=KeyStore(tmp_path / "keys.db"),
        drift=drift,
        drift_state=state_path,
    )
    client = AsgiClient(app)
    try:
        # inverted digits: a shifted input distribution the window must flag
        shifted = (1.0 - x[:40]).astype(np.float32)
        r = client.post("/v1/predict", json={"inputs": shifted.tolist()})
        assert r.status_code == 200, r.text
        _wait_for(state_path)
        state = MonitorState.load(state_path)
        assert state.windows == 1 and state.observed == 40
        assert state.alerts["input"] == 1
        metrics = client.get("/metrics").text
        assert "bastion_drift_windows 1" in metrics
        assert "bastion_drift_alerts_input 1" in metrics
    finally:
        client.close()
    assert main(["monitor", str(run)]) == 0
    out = capsys.readouterr().out
    assert "input" in out


def test_runs_without_reference_have_no_monitor(tmp_path: Path) -> None:
    assert drift_monitor_for_run(tmp_path) == (None, None)
