"""``benchmarks/serve.py`` names each row by the guard the server actually serves."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from bastion.serve import ModelGuard
from bastion.serve.app import guard_layers


def _bench() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "serve.py"
    spec = importlib.util.spec_from_file_location("bench_serve", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rows_are_named_from_the_served_layers(model_guard: ModelGuard) -> None:
    bench = _bench()
    assert bench.row_label(guard_layers(model_guard), "run") == "ModelGuard (run)"
    # a run directory with a fitted guard serves the full guard (the layers /v1/health
    # reports for it): its row must say so, whatever the target was called
    full = ["validation", "squeezing", "ood", "adversarial", "postcheck", "prediction:model"]
    assert bench.row_label(full, "run") == "full guard (run)"
