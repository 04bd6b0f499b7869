"""``benchmarks/extraction_monitor.py``: its simulated normal traffic, its replay through the
service's two extraction monitors, and the committed results pages match their JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from serve_fixtures import digits_test_images

from bastion.serve.budget import BudgetMonitor
from bastion.serve.extraction import ExtractionMonitor

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    path = ROOT / "benchmarks" / "extraction_monitor.py"
    spec = importlib.util.spec_from_file_location("bench_extraction_monitor", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_normal_keys_differ_in_volume_and_class_mix(bench: ModuleType) -> None:
    y = np.repeat(np.arange(10), 50)
    streams = bench.normal_traffic(y, keys=300, median=40.0, sigma=1.0, cap=400, alpha=1.0, seed=1)
    volumes = np.array([len(s) for s in streams])
    assert volumes.min() >= 1 and volumes.max() <= 400
    assert 25 <= float(np.median(volumes)) <= 60  # log-normal around the median asked for
    assert volumes.max() > 5 * float(np.median(volumes))  # a heavy tail of busy keys
    mixes = np.array([np.bincount(y[s], minlength=10) / len(s) for s in streams if len(s) > 30])
    assert float(mixes.max(1).mean()) > 0.25  # each key favours some classes (uniform: 0.1)
    again = bench.normal_traffic(y, keys=300, median=40.0, sigma=1.0, cap=400, alpha=1.0, seed=1)
    assert all((a == b).all() for a, b in zip(streams, again, strict=True))


def test_replay_reports_where_each_monitor_flags(bench: ModuleType) -> None:
    x, y = digits_test_images()
    flat = x.reshape(len(x), -1)
    # a budget of 40 answers of 1 bit: flagged by the request that carries the 41st answer
    r = bench.replay(
        flat[:100],
        y[:100],
        batch=16,
        budget=BudgetMonitor(threshold=40.0),
        prada=None,
        bits=1.0,
        key="k",
    )
    assert r["budget_at"] == 48 and r["prada_at"] is None and r["queries"] == 100
    # synthetic steps around a few seeds (as Jacobian augmentation sends): PRADA flags them
    rng = np.random.default_rng(2)
    rounds, current = [flat[:10]], flat[:10]
    for i in range(40):
        current = np.clip(current + 0.1 * np.sign(rng.standard_normal(current.shape)), 0, 1)
        rounds.append(current)
        if i % 5 == 4:  # back to the seeds now and then, as the attack's rounds do
            current = flat[:10]
    synthetic = np.concatenate(rounds).astype(np.float32)
    r = bench.replay(
        synthetic,
        np.tile(y[:10], len(rounds)),
        batch=16,
        budget=None,
        prada=ExtractionMonitor(),
        bits=1.0,
        key="k",
    )
    assert r["prada_at"] is not None and r["budget_at"] is None


@pytest.mark.parametrize(
    "name",
    [
        "extraction-monitor",
        "extraction-monitor-joint",
        "extraction-monitor-noref",
        "extraction-monitor-alpha0.3",
        "extraction-monitor-alpha0.3-noref",
    ],
)
def test_the_committed_pages_are_rendered_from_their_json(bench: ModuleType, name: str) -> None:
    results = ROOT / "benchmarks" / "results"
    doc = json.loads((results / f"{name}.json").read_text())
    assert bench.markdown(doc) == (results / f"{name}.md").read_text()
