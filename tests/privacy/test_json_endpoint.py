"""Extraction from a third-party JSON endpoint (a stdlib HTTP server in a thread wrapping a
model): the plain ``scores``/``labels`` protocol, and a service that withholds answers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import torch

from bastion.data import Dataset
from bastion.models.zoo import BastionModel, ModelSpec
from bastion.privacy.extraction import (
    StudentSettings,
    knockoff_nets,
    query_victim,
    student_spec,
)
from bastion.privacy.membership import build_seeded
from bastion.privacy.targets import ServedModelTarget
from bastion.threat import ThreatModel
from bastion.training.trainer import Trainer, TrainSettings


@pytest.fixture(scope="module")
def model(digits: Dataset) -> BastionModel:
    spec = ModelSpec("mlp", (1, 8, 8), 10, tuple(digits.mean), tuple(digits.std), {"hidden": [32]})
    net = build_seeded(spec, 0)
    settings = TrainSettings(
        epochs=5,
        batch_size=64,
        lr=3e-3,
        optimizer="adam",
        schedule="constant",
        weight_decay=0.0,
        val_examples=50,
    )
    Trainer(settings, ThreatModel("linf", 0.1), seed=0).fit(
        net, digits.train.x, digits.train.y, digits.val.x, digits.val.y
    )
    return net


@contextmanager
def _endpoint(net: BastionModel, mode: str) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            x = torch.tensor(body["inputs"], dtype=torch.float32)
            with torch.no_grad():
                p = torch.softmax(net(x), 1)
            reply: dict[str, Any]
            if mode == "scores":
                reply = {"scores": p.tolist()}
            elif mode == "labels":
                reply = {"labels": p.argmax(1).tolist()}
            else:  # a guarded service withholding the answer on unsure inputs
                reply = {
                    "predictions": [
                        {"label": int(r.argmax()), "probabilities": r.tolist()}
                        if float(r.max()) > 0.9
                        else {"label": None, "probabilities": None}
                        for r in p
                    ]
                }
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/predict"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize("mode", ["scores", "labels"])
def test_plain_json_endpoints(model: BastionModel, digits: Dataset, mode: str) -> None:
    with _endpoint(model, mode) as url:
        target = ServedModelTarget(url, num_classes=10)
        assert target.url == url  # a full endpoint URL is kept as given
        res = knockoff_nets(
            target,
            digits.test.x,
            digits.val.x,
            digits.val.y,
            student_spec("mlp", digits.test.x, 10, {"hidden": [32]}),
            budgets=[200],
            labels_only=mode == "labels",
            settings=StudentSettings(epochs=10, min_steps=100, lr=3e-3),
            seed=0,
        )
    assert res.curve[0]["fidelity"] > 0.75 and res.unanswered == 0


def test_withheld_answers_are_counted_and_not_trained_on(
    model: BastionModel, digits: Dataset
) -> None:
    with _endpoint(model, "guarded") as url:
        target = ServedModelTarget(url, num_classes=10, batch_size=50)
        probs, answered = query_victim(target, digits.test.x[:200])
        with torch.no_grad():
            sure = torch.softmax(model(digits.test.x[:200]), 1).max(1).values > 0.9
        assert torch.equal(answered, sure) and 0 < int((~answered).sum()) < 200
        assert target.withheld == int((~answered).sum())
        assert torch.isfinite(probs).all()
        res = knockoff_nets(
            target,
            digits.test.x,
            digits.val.x,
            digits.val.y,
            student_spec("mlp", digits.test.x, 10, {"hidden": [32]}),
            budgets=[150],
            settings=StudentSettings(epochs=5, min_steps=60, lr=3e-3),
            seed=0,
        )
    assert 0 < res.unanswered < 150
