"""Black-box targets: wrapped callables, scikit-learn estimators and an HTTP endpoint, attacked
with Square and HopSkipJump."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch
from blackbox_digits import Digits
from torch import Tensor

from bastion.attacks.base import predict
from bastion.attacks.conformance import check_attack
from bastion.attacks.hopskipjump import HopSkipJump
from bastion.attacks.square import Square
from bastion.attacks.targets import HTTPTarget, LabelTarget, ScoreTarget, SklearnTarget
from bastion.errors import AttackInputError, ConfigError
from bastion.threat import ThreatModel


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _softmax(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    out: npt.NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
    return out


def _numpy_model(digits: Digits) -> Any:
    """The digits model as a numpy function returning probabilities (float64)."""

    def fn(a: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        with torch.no_grad():
            z = digits.model(torch.from_numpy(a)).double().numpy()
        return _softmax(z)

    return fn


# -- ScoreTarget ---------------------------------------------------------------------------


def test_score_target_batches_counts_and_keeps_the_argmax(digits: Digits) -> None:
    target = ScoreTarget(_numpy_model(digits), 10, batch_size=16)
    assert list(target.parameters()) == []
    out = target(digits.x[:40])
    assert out.shape == (40, 10) and out.dtype == torch.float32
    assert torch.equal(out.argmax(1), predict(digits.model, digits.x[:40]))
    # log-probabilities: the margins of a softmax model are its logit margins
    with torch.no_grad():
        z = digits.model(digits.x[:40])
    assert torch.allclose(out - out[:, :1], z - z[:, :1], atol=1e-3)
    assert target.queries == 40 and target.calls == 3
    target.reset_queries()
    assert target.queries == 0


def test_score_target_takes_torch_functions_returning_logits(digits: Digits) -> None:
    target = ScoreTarget(digits.model, 10, kind="logits", inputs="torch")
    assert list(target.parameters()) == []  # an nn.Module fn is not registered
    with torch.no_grad():
        assert torch.allclose(target(digits.x[:5]), digits.model(digits.x[:5]))


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        (
            np.full((2, 3), 0.5),
            r"probabilities must sum to 1 \(within 0\.001\), row 0 sums to 1\.5",
        ),
        (np.array([[1.2, -0.2, 0.0], [0.2, 0.3, 0.5]]), r"probabilities must be >= 0"),
        (np.array([[np.nan, 0.5, 0.5], [0.2, 0.3, 0.5]]), r"probabilities contain NaN"),
        (np.full((2, 4), 0.25), r"expected scores of shape \(2, 3\), got \(2, 4\)"),
    ],
)
def test_score_target_rejects_bad_probabilities(
    scores: npt.NDArray[np.float64], message: str
) -> None:
    target = ScoreTarget(lambda a: scores, 3, name="api")
    with pytest.raises(AttackInputError, match=r"^api: " + message):
        target(torch.zeros(2, 4))


def test_an_attack_on_a_target_with_bad_probabilities_fails_clearly() -> None:
    target = ScoreTarget(lambda a: np.full((len(a), 3), 0.4), 3, name="leaky")
    with pytest.raises(AttackInputError, match=r"leaky: probabilities must sum to 1"):
        Square(queries=10)(
            target, torch.zeros(2, 4), torch.zeros(2, dtype=torch.int64), ThreatModel()
        )


def test_score_target_rejects_nan_logits_and_gradient_requests(digits: Digits) -> None:
    target = ScoreTarget(lambda a: np.full((len(a), 2), np.nan), 2, kind="logits", name="broken")
    with pytest.raises(AttackInputError, match=r"broken: logits contain NaN"):
        target(torch.zeros(1, 3))
    ok = ScoreTarget(_numpy_model(digits), 10, name="bb")
    with pytest.raises(AttackInputError, match=r"bb: a black-box target has no gradients"):
        ok(digits.x[:2].clone().requires_grad_(True))


def test_targets_reject_bad_settings() -> None:
    with pytest.raises(ConfigError, match=r"ScoreTarget\.num_classes: expected an integer >= 2"):
        ScoreTarget(lambda a: a, 1)
    with pytest.raises(ConfigError, match=r"ScoreTarget\.kind"):
        ScoreTarget(lambda a: a, 3, kind="margins")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"ScoreTarget\.batch_size"):
        ScoreTarget(lambda a: a, 3, batch_size=0)
    with pytest.raises(ConfigError, match=r"HTTPTarget\.url"):
        HTTPTarget("ftp://example", num_classes=3)
    with pytest.raises(ConfigError, match=r"HTTPTarget\.timeout"):
        HTTPTarget("http://127.0.0.1:1/", num_classes=3, timeout=0)


def test_square_through_a_score_target_passes_the_conformance_suite(digits: Digits) -> None:
    target = ScoreTarget(_numpy_model(digits), 10)
    check_attack(lambda: Square(queries=100), target, digits.x[:20], digits.y[:20], ThreatModel())


# -- LabelTarget ---------------------------------------------------------------------------


def test_label_target_gives_one_hot_scores_and_checks_labels() -> None:
    target = LabelTarget(lambda a: (a.sum(axis=1) > 1).astype(np.int64), 2)
    out = target(torch.tensor([[0.2, 0.3], [0.9, 0.8]]))
    assert out.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    bad = LabelTarget(lambda a: np.full(len(a), 5), 3, name="labels")
    with pytest.raises(AttackInputError, match=r"labels: labels must lie in \[0, 3\)"):
        bad(torch.zeros(2, 2))


def test_hopskipjump_on_a_label_only_target(digits: Digits) -> None:
    model = digits.model

    def labels(a: npt.NDArray[np.float32]) -> Tensor:
        with torch.no_grad():
            out: Tensor = model(torch.from_numpy(a)).argmax(dim=1)
        return out

    target = LabelTarget(labels, 10)
    res = HopSkipJump(queries=300)(
        target, digits.x[:20], digits.y[:20], ThreatModel("linf", 0.3), generator=_gen(0)
    )
    assert float(res.success.float().mean()) >= 0.8


# -- scikit-learn --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sklearn_models(digits: Digits) -> dict[str, Any]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    xs = digits.x_train.flatten(1).numpy()
    ys = digits.y_train.numpy()
    return {
        "logreg": LogisticRegression(max_iter=3000).fit(xs, ys),
        "forest": RandomForestClassifier(n_estimators=20, max_depth=8, random_state=0).fit(xs, ys),
    }


@pytest.mark.parametrize(("name", "drop"), [("logreg", 0.6), ("forest", 0.5)])
def test_square_breaks_sklearn_models_through_sklearn_target(
    digits: Digits, sklearn_models: dict[str, Any], name: str, drop: float
) -> None:
    target = SklearnTarget(sklearn_models[name])
    x, y = digits.x[:30], digits.y[:30]
    clean = float((predict(target, x) == y).float().mean())
    assert clean >= 0.85
    res = Square(queries=200)(target, x, y, ThreatModel("linf", 0.3), generator=_gen(0))
    robust = float(((predict(target, x) == y) & ~res.success).float().mean())
    assert robust <= clean - drop, (clean, robust)
    assert target.queries >= int(res.queries.sum())


def test_sklearn_target_needs_a_fitted_probabilistic_classifier() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    with pytest.raises(AttackInputError, match=r"SklearnTarget\(LinearSVC\): .*no predict_proba"):
        SklearnTarget(LinearSVC())
    with pytest.raises(AttackInputError, match=r"not fitted"):
        SklearnTarget(LogisticRegression())


# -- HTTP ----------------------------------------------------------------------------------


class _Model:
    """A fixed linear softmax model on 6 features, 3 classes, served over HTTP."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.w = rng.normal(size=(6, 3))
        self.rows = 0
        self.mode = "scores"

    def reply(self, inputs: list[list[float]]) -> tuple[int, bytes]:
        a = np.asarray(inputs, dtype=np.float64)
        self.rows += len(a)
        z = (a - 0.5) @ self.w
        if self.mode == "scores":
            return 200, json.dumps({"scores": _softmax(z).tolist()}).encode()
        if self.mode == "labels":
            return 200, json.dumps({"labels": z.argmax(axis=1).tolist()}).encode()
        if self.mode == "garbage":
            return 200, b"<html>not json</html>"
        if self.mode == "wrong-key":
            return 200, json.dumps({"predictions": []}).encode()
        return 500, b"{}"


@pytest.fixture
def server() -> Iterator[tuple[str, _Model]]:
    model = _Model()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status, out = model.reply(json.loads(body)["inputs"])
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, format: str, *args: Any) -> None:  # keep the test output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/predict", model
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _toy_batch() -> tuple[Tensor, Tensor]:
    x = torch.rand(12, 6, generator=_gen(5))
    w = torch.from_numpy(_Model().w).float()
    return x, ((x - 0.5) @ w).argmax(dim=1)


def test_square_through_an_http_target(server: tuple[str, _Model]) -> None:
    url, model = server
    target = HTTPTarget(url, num_classes=3, timeout=5)
    x, y = _toy_batch()
    assert torch.equal(predict(target, x), y)
    model.rows = 0
    target.reset_queries()
    res = Square(queries=30)(target, x, y, ThreatModel("linf", 0.2), generator=_gen(0))
    assert bool(res.success.any())
    assert model.rows == target.queries == int(res.queries.sum()) + 1


def test_hopskipjump_through_an_http_target_returning_labels(server: tuple[str, _Model]) -> None:
    url, model = server
    model.mode = "labels"
    target = HTTPTarget(url, num_classes=3, batch_size=4096)
    x, y = _toy_batch()
    res = HopSkipJump(queries=60, init_evals=10)(
        target, x, y, ThreatModel("l2", 0.5), generator=_gen(0)
    )
    assert bool(res.success.any())
    assert model.rows == target.queries


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("error", r"HTTP 500"),
        ("garbage", r"the reply is not JSON"),
        ("wrong-key", r"expected a JSON object with 'scores' or 'labels', got \['predictions'\]"),
    ],
)
def test_http_target_reports_bad_replies(
    server: tuple[str, _Model], mode: str, message: str
) -> None:
    url, model = server
    model.mode = mode
    with pytest.raises(AttackInputError, match=r"^HTTPTarget\(http://127\.0\.0\.1:\d+/predict\): "):
        HTTPTarget(url, num_classes=3)(torch.zeros(2, 6))
    with pytest.raises(AttackInputError, match=message):
        HTTPTarget(url, num_classes=3)(torch.zeros(2, 6))


def test_http_target_reports_an_unreachable_endpoint() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = HTTPTarget(f"http://127.0.0.1:{port}/", num_classes=3, timeout=2)
    with pytest.raises(AttackInputError, match=r"request failed"):
        target(torch.zeros(1, 6))


# -- ONNX models through onnxruntime ---------------------------------------------------------


def _mlp_to_onnx(digits: Digits, path: str) -> None:
    """Write the digits MLP as an ONNX graph built node by node (Sub, Div, Flatten, Gemm,
    Relu, Gemm), so the test needs no exporter and checks onnxruntime against torch."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    sd = {k: v.detach().numpy() for k, v in digits.model.state_dict().items()}
    inits = [
        numpy_helper.from_array(sd["normalize.mean"].astype(np.float32), "mean"),
        numpy_helper.from_array(sd["normalize.std"].astype(np.float32), "std"),
        numpy_helper.from_array(sd["body.1.weight"], "w1"),
        numpy_helper.from_array(sd["body.1.bias"], "b1"),
        numpy_helper.from_array(sd["body.3.weight"], "w2"),
        numpy_helper.from_array(sd["body.3.bias"], "b2"),
    ]
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["c"]),
        helper.make_node("Div", ["c", "std"], ["n"]),
        helper.make_node("Flatten", ["n"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits-mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def test_onnx_target_matches_torch_and_is_attackable(digits: Digits, tmp_path: Any) -> None:
    pytest.importorskip("onnxruntime")
    from bastion.attacks.targets import OnnxTarget

    path = str(tmp_path / "digits.onnx")
    _mlp_to_onnx(digits, path)
    target = OnnxTarget(path, 10, batch_size=32)
    with torch.no_grad():
        expected = digits.model(digits.x)
    got = target(digits.x)
    assert torch.allclose(got, expected, atol=1e-4)
    assert target.queries == digits.x.shape[0]
    x, y = digits.x[:20], digits.y[:20]
    keep = predict(digits.model, x) == y
    threat = ThreatModel("linf", 0.2)
    res = Square(queries=300, p_init=0.3)(target, x[keep], y[keep], threat, generator=_gen(0))
    ref = Square(queries=300, p_init=0.3)(digits.model, x[keep], y[keep], threat, generator=_gen(0))
    assert res.success.float().mean() > 0.8
    assert abs(int(res.success.sum()) - int(ref.success.sum())) <= 1  # same scores, same search
    assert int(res.queries.max()) <= 300 + 1


def test_onnx_target_bad_input(digits: Digits, tmp_path: Any) -> None:
    pytest.importorskip("onnxruntime")
    from bastion.attacks.targets import OnnxTarget

    with pytest.raises(ConfigError, match="not found"):
        OnnxTarget(str(tmp_path / "missing.onnx"), 10)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(AttackInputError, match="not a loadable ONNX model"):
        OnnxTarget(str(bad), 10)
    path = str(tmp_path / "digits.onnx")
    _mlp_to_onnx(digits, path)
    with pytest.raises(ConfigError, match="input_name"):
        OnnxTarget(path, 10, input_name="pixels")
    with pytest.raises(AttackInputError):
        OnnxTarget(path, 10, kind="probabilities")(digits.x[:4])  # logits are not probabilities
