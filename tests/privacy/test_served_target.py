"""Extraction through a real bastion service: uvicorn on a loopback port, API key, guard."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bastion.cli import main
from bastion.data import Dataset
from bastion.errors import AttackInputError
from bastion.models import ModelSpec, save_model
from bastion.privacy.extraction import StudentSettings, knockoff_nets, student_spec
from bastion.privacy.membership import build_seeded
from bastion.privacy.targets import ServedModelTarget
from bastion.threat import ThreatModel
from bastion.training.trainer import Trainer, TrainSettings

uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")


@contextmanager
def _serving(
    model_stem: Path, tmp_path: Path, *, output: str = "full"
) -> Iterator[tuple[str, str]]:
    from bastion.serve import AuditLog, KeyStore, ModelGuard, ServeSettings
    from bastion.serve.app import create_app
    from bastion.serve.runner import uvicorn_options

    settings = ServeSettings(rate=None, burst=4096, extraction_check=False, default_output=output)
    keys = KeyStore(tmp_path / "keys.db")
    _, key = keys.create("auditor")
    app = create_app(
        ModelGuard.from_file(model_stem),
        settings=settings,
        audit=AuditLog(tmp_path / "a.db"),
        keys=keys,
    )
    server = uvicorn.Server(
        uvicorn.Config(app, **uvicorn_options(settings, host="127.0.0.1", port=0))
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", key
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def saved(digits: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = ModelSpec("mlp", (1, 8, 8), 10, tuple(digits.mean), tuple(digits.std), {"hidden": [64]})
    model = build_seeded(spec, 0)
    settings = TrainSettings(
        epochs=6,
        batch_size=64,
        lr=3e-3,
        optimizer="adam",
        schedule="constant",
        weight_decay=0.0,
        val_examples=50,
    )
    Trainer(settings, ThreatModel("linf", 0.1), seed=0).fit(
        model, digits.train.x, digits.train.y, digits.val.x, digits.val.y
    )
    stem = tmp_path_factory.mktemp("served") / "models" / "victim"
    save_model(model.eval(), stem, {"classes": list(digits.classes)})
    return stem


@pytest.mark.slow  # a real uvicorn service and two extractions: ~40 s on a loaded machine
def test_knockoff_through_the_service_and_the_cli_keeps_the_key_secret(
    saved: Path, digits: Dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with _serving(saved, tmp_path) as (url, key):
        target = ServedModelTarget(url, num_classes=10, api_key=key)
        res = knockoff_nets(
            target,
            digits.test.x,
            digits.val.x,
            digits.val.y,
            student_spec("mlp", digits.test.x, 10, {"hidden": [64]}),
            budgets=[150],
            settings=StudentSettings(epochs=10, min_steps=120, lr=3e-3),
            seed=0,
        )
        assert target.queries == 150 + digits.val.x.shape[0]
        assert res.unanswered == 0 and res.curve[0]["fidelity"] > 0.75
        wrong = ServedModelTarget(url, num_classes=10, api_key="not-the-key")
        with pytest.raises(AttackInputError, match="HTTP 401") as info:
            wrong(digits.val.x[:2])
        assert "not-the-key" not in str(info.value)
        out = tmp_path / "ex.json"
        argv = ["audit", "extraction", url, "--key", key, "--method", "knockoff-labels"]
        argv += ["--budgets", "60", "--student", "mlp", "--out", str(out), "--threads", "1"]
        assert main(argv) == 0
    captured = capsys.readouterr()
    text = out.read_text()
    assert key not in captured.out and key not in captured.err and key not in text
    doc = json.loads(text)
    assert doc["extraction"]["queries"] == 60
    assert "remote target" in doc["extraction"]["note"]


@pytest.mark.parametrize("policy", ["round-1", "top-2:2", "labels"])
def test_hardened_answers_are_read_as_the_policy_reads_them(
    saved: Path, digits: Dataset, tmp_path: Path, policy: str
) -> None:
    import numpy as np
    import torch

    from bastion.models import load_model
    from bastion.serve.output_policy import OutputPolicy

    x = digits.test.x[:30]
    with torch.no_grad():
        full = torch.softmax(load_model(saved)(x), 1).double().numpy()
    with _serving(saved, tmp_path, output=policy) as (url, key):
        read = ServedModelTarget(url, num_classes=10, api_key=key)(x).exp().numpy()
    np.testing.assert_allclose(read.sum(1), 1.0, atol=1e-6)
    assert (read.argmax(1) == full.argmax(1)).all()  # the label always comes through
    expected = OutputPolicy.parse(policy).soft_labels(full)
    np.testing.assert_allclose(read, expected, atol=1e-4)
