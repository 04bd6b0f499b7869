"""The service through its ASGI app: predictions, auth, limits, audit, metrics, extraction."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np
import pytest
from conftest import MakeServed
from serve_fixtures import digits_test_images, png_base64
from torch import Tensor

from bastion.guard.decision import Decision
from bastion.serve import ModelGuard


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    return digits_test_images()


def test_single_batch_and_png_predictions_match_the_model(
    make_served: MakeServed, model_guard: ModelGuard, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = digits
    s = make_served()
    expected = [d.label for d in model_guard.decide(__import__("torch").from_numpy(x[:4]))]
    single = s.client.post("/v1/predict", json={"input": x[0].tolist()}, headers=s.auth)
    assert single.status_code == 200, single.text
    body = single.json()
    assert body["model"] == "tiny"
    assert body["request_id"] == single.headers["X-Request-ID"]
    (pred,) = body["predictions"]
    assert pred["verdict"] == "accept" and pred["label"] == expected[0]
    assert pred["class_name"] == str(expected[0])
    assert abs(sum(pred["probabilities"]) - 1.0) < 1e-4
    batch = s.client.post("/v1/predict", json={"inputs": x[:4].tolist()}, headers=s.auth)
    assert [p["label"] for p in batch.json()["predictions"]] == expected
    # PNG: 8-bit quantisation changes pixels by < 1/510, so labels agree on these examples
    images = [png_base64(x[0, 0]), png_base64(x[1, 0], mode="RGB")]
    png = s.client.post("/v1/predict", json={"images": images}, headers=s.auth)
    assert png.status_code == 200, png.text
    assert [p["label"] for p in png.json()["predictions"]] == expected[:2]
    one = s.client.post("/v1/predict", json={"image": images[0]}, headers=s.auth)
    assert one.json()["predictions"][0]["label"] == expected[0]


def test_health_reports_model_shape_classes_layers_and_uptime(make_served: MakeServed) -> None:
    s = make_served()
    h = s.client.get("/v1/health").json()
    assert h["model"] == "tiny" and h["input_shape"] == [1, 8, 8]
    assert h["classes"] == [str(i) for i in range(10)]
    assert h["guard_layers"] == ["validation", "model"]
    assert h["uptime_s"] >= 0 and h["auth_required"] is True


def test_openapi_documents_request_and_response_models(make_served: MakeServed) -> None:
    s = make_served()
    doc = s.client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert {"PredictRequest", "PredictResponse", "Prediction", "ErrorResponse"} <= set(schemas)
    request = schemas["PredictRequest"]
    assert set(request["properties"]) == {"input", "inputs", "image", "images"}
    assert request["additionalProperties"] is False
    assert request["minProperties"] == request["maxProperties"] == 1
    # as strict as the service: the model's shape, the batch limit, non-empty base64 images
    one = request["properties"]["input"]
    assert (one["minItems"], one["maxItems"]) == (1, 1)
    assert one["items"]["items"]["minItems"] == one["items"]["items"]["maxItems"] == 8
    assert request["properties"]["inputs"]["maxItems"] == s.settings.max_batch
    image = request["properties"]["image"]
    assert image["minLength"] >= 4 and image["contentMediaType"] == "image/png"
    # and it declares the API-key scheme the endpoint needs
    assert doc["components"]["securitySchemes"]["APIKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "A key from `bastion keys create NAME`.",
    }
    op = doc["paths"]["/v1/predict"]["post"]
    assert op["security"] == [{"APIKey": []}]
    assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "PredictRequest"
    )
    assert {"401", "413", "422", "429"} <= set(op["responses"])
    assert s.client.get("/docs").status_code == 200


def test_missing_wrong_and_revoked_keys_get_401(
    make_served: MakeServed, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    s = make_served()
    body = {"input": digits[0][0].tolist()}
    missing = s.client.post("/v1/predict", json=body)
    assert missing.status_code == 401
    assert missing.json()["field"] == "X-API-Key" and "missing" in missing.json()["detail"]
    forged = s.key[:-4] + ("AAAA" if not s.key.endswith("AAAA") else "BBBB")
    for bad in (forged, "bst_nope_x", "not-a-key", "bst_" + "x" * 300):
        r = s.client.post("/v1/predict", json=body, headers={"X-API-Key": bad})
        assert r.status_code == 401, bad
        assert "unknown" in r.json()["detail"]
    assert s.client.post("/v1/predict", json=body, headers=s.auth).status_code == 200
    assert s.keys.revoke("alice")
    assert s.client.post("/v1/predict", json=body, headers=s.auth).status_code == 401
    metrics = s.client.get("/metrics").text
    assert "bastion_auth_failures_total 6" in metrics


def test_auth_can_be_disabled_for_local_use(
    make_served: MakeServed, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    s = make_served(require_auth=False, audit_all=True)
    r = s.client.post("/v1/predict", json={"input": digits[0][0].tolist()})
    assert r.status_code == 200
    (rec,) = s.audit.by_request(r.json()["request_id"])
    assert rec.key_id == "anonymous"


def test_keys_are_stored_only_as_salted_hashes(make_served: MakeServed) -> None:
    s = make_served()
    _, other = s.keys.create("bob")
    raw = s.keys.path.read_bytes() + (s.keys.path.with_name(s.keys.path.name + "-wal")).read_bytes()
    for key in (s.key, other):
        secret = key.split("_", 2)[2]  # bst_<key_id>_<secret>; the secret may hold "_" itself
        assert len(secret) >= 40 and secret.encode() not in raw
    assert [k.name for k in s.keys.list()] == ["alice", "bob"]
    assert s.keys.verify(other) is not None and s.keys.verify(s.key) is not None


def test_rate_limit_gives_429_with_retry_after_and_counts(
    make_served: MakeServed, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    s = make_served(rate=0.5, burst=3, extraction_check=False)
    x = digits[0]
    ok = s.client.post("/v1/predict", json={"inputs": x[:3].tolist()}, headers=s.auth)
    assert ok.status_code == 200
    r = s.client.post("/v1/predict", json={"input": x[0].tolist()}, headers=s.auth)
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1 and "rate limit" in r.json()["detail"]
    # a batch larger than the burst can never pass: 413 naming the burst, no Retry-After
    too_big = s.client.post("/v1/predict", json={"inputs": x[:4].tolist()}, headers=s.auth)
    assert too_big.status_code == 413 and "Retry-After" not in too_big.headers
    assert "burst of 3" in too_big.json()["detail"] and too_big.json()["field"] == "inputs"
    # another key has its own bucket, with its own stored limits
    _, bob = s.keys.create("bob", rate=100.0, burst=50)
    bob_ok = s.client.post(
        "/v1/predict", json={"inputs": x[:10].tolist()}, headers={"X-API-Key": bob}
    )
    assert bob_ok.status_code == 200
    assert "bastion_rate_limited_total 2" in s.client.get("/metrics").text


def test_size_and_batch_limits_give_413(
    make_served: MakeServed, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    s = make_served(max_body_bytes=20_000, max_batch=5)
    x = digits[0]
    big = json.dumps({"inputs": np.tile(x[:1], (200, 1, 1, 1)).tolist()}).encode()
    declared = s.client.post("/v1/predict", content=big, headers=s.auth)
    assert declared.status_code == 413 and declared.json()["field"] == "body"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the size is counted
        for i in range(0, len(big), 4096):
            yield big[i : i + 4096]

    streamed = s.client.post("/v1/predict", content=chunks(), headers=s.auth)
    assert streamed.status_code == 413
    batch = s.client.post("/v1/predict", json={"inputs": x[:6].tolist()}, headers=s.auth)
    assert batch.status_code == 413 and batch.json()["field"] == "inputs"
    assert "batch limit of 5" in batch.json()["detail"]


def _nested(x: np.ndarray, path: Sequence[int], value: Any) -> list[Any]:
    doc: list[Any] = x.tolist()
    target: Any = doc
    for i in path[:-1]:
        target = target[i]
    target[path[-1]] = value
    return doc


BAD_BODIES: list[tuple[str, Any, int, str]] = [
    ("malformed JSON", b'{"input": [1, 2', 400, "body"),
    ("not UTF-8", b'\xff\xfe{"input": 1}', 400, "body"),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, 400, "body"),
    ("array body", b"[1, 2, 3]", 422, "body"),
    ("no field", b"{}", 422, "body"),
    ("two fields", b'{"input": [], "image": "x"}', 422, "body"),
    ("extra field", b'{"inputs": [], "debug": true}', 422, "debug"),
    ("input is a number", b'{"input": 3}', 422, "input"),
    ("input null", b'{"input": null}', 422, "input"),
    ("inputs not a list", b'{"inputs": {"a": 1}}', 422, "inputs"),
    ("empty batch", b'{"inputs": []}', 422, "inputs"),
    ("image not a string", b'{"image": [1, 2]}', 422, "image"),
    ("bad base64", b'{"image": "***not base64***"}', 422, "image"),
    ("base64 of text", b'{"images": ["aGVsbG8gd29ybGQ="]}', 422, "images[0]"),
    ("huge integer literal", b'{"input": ' + b"9" * 5000 + b"}", 400, "body"),
]


@pytest.mark.parametrize(
    ("what", "body", "status", "field"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES]
)
def test_bad_bodies_get_a_4xx_naming_the_field(
    make_served: MakeServed, what: str, body: bytes, status: int, field: str
) -> None:
    s = make_served()
    r = s.client.post("/v1/predict", content=body, headers=s.auth)
    assert r.status_code == status, (what, r.text)
    assert r.json()["field"] == field, r.json()
    assert r.json()["detail"]


def test_wrong_shapes_and_types_name_the_element(
    make_served: MakeServed, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    s = make_served()
    x = digits[0][0]
    cases = [
        ({"input": _nested(x, [0, 3, 5], "NaN")}, "input[0][3][5]", "got a string"),
        ({"input": _nested(x, [0, 3, 5], True)}, "input[0][3][5]", "got a boolean"),
        ({"input": _nested(x, [0, 3, 5], [1.0])}, "input[0][3][5]", "expected a number"),
        ({"input": _nested(x, [0, 3, 5], None)}, "input[0][3][5]", "got null"),
        ({"input": _nested(x, [0, 7], [0.0] * 7)}, "input[0][7]", "shape 8"),
        ({"input": _nested(x, [0, 2], {"a": 1})}, "input[0][2]", "got an object"),
        ({"input": x[0].tolist()}, "input", "shape 1 x 8 x 8"),
        ({"inputs": [x.tolist(), x[0].tolist()]}, "inputs[1]", "shape 1 x 8 x 8"),
        ({"input": _nested(x, [0, 1, 1], 10**30)}, "input[0][1][1]", "too large"),
    ]
    for body, field, text in cases:
        r = s.client.post("/v1/predict", json=body, headers=s.auth)
        assert r.status_code == 422, (field, r.text)
        assert r.json()["field"] == field and text in r.json()["detail"], r.json()


def test_bad_png_images_get_422(make_served: MakeServed) -> None:
    s = make_served()
    wrong_size = png_base64(np.zeros((9, 8)))
    r = s.client.post("/v1/predict", json={"image": wrong_size}, headers=s.auth)
    assert r.status_code == 422 and "8x8" in r.json()["detail"]
    truncated = png_base64(np.zeros((8, 8)))[:40]
    r = s.client.post("/v1/predict", json={"images": [truncated]}, headers=s.auth)
    assert r.status_code == 422 and r.json()["field"] == "images[0]"


def test_nan_and_out_of_range_are_rejected_and_audited(
    make_served: MakeServed, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    s = make_served()
    x = digits[0][:3].copy()
    body = (
        json.dumps({"inputs": [x[0].tolist(), _nested(x[1], [0, 0, 0], 2.5), x[2].tolist()]})
        .replace("2.5", "NaN", 1)
        .encode()
    )
    r = s.client.post("/v1/predict", content=body, headers=s.auth)
    assert r.status_code == 200
    verdicts = [p["verdict"] for p in r.json()["predictions"]]
    assert verdicts == ["accept", "reject", "accept"]
    assert "not finite" in r.json()["predictions"][1]["reasons"][0]
    records = s.audit.by_request(r.json()["request_id"])
    assert [(rec.index, rec.verdict) for rec in records] == [(1, "reject")]
    rec = records[0]
    sent = x[1].copy()
    sent[0, 0, 0] = np.nan
    assert rec.input_sha256 == hashlib.sha256(sent.astype(np.float32).tobytes()).hexdigest()
    assert (
        rec.key_name == "alice"
        and rec.model == "tiny"
        and rec.reasons == tuple(r.json()["predictions"][1]["reasons"])
    )
    assert s.key not in json.dumps(rec.__dict__)
    out = s.client.post(
        "/v1/predict", json={"input": (x[0] * 3 - 1).tolist()}, headers=s.auth
    ).json()
    assert out["predictions"][0]["verdict"] == "reject"
    assert "out of range" in out["predictions"][0]["reasons"][0]
    assert len(s.audit.all()) == 2
    metrics = s.client.get("/metrics").text
    assert 'bastion_decisions_total{verdict="reject"} 2' in metrics
    assert "bastion_audit_writes_total 2" in metrics


def test_audit_all_logs_accepted_requests_too(
    make_served: MakeServed, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    s = make_served(audit_all=True)
    r = s.client.post("/v1/predict", json={"inputs": digits[0][:2].tolist()}, headers=s.auth)
    assert [rec.verdict for rec in s.audit.by_request(r.json()["request_id"])] == ["accept"] * 2


def test_an_audit_log_that_cannot_commit_gives_503_not_an_answer(
    make_served: MakeServed, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    s = make_served()
    s.audit.close()
    bad = digits[0][0] + 5.0
    r = s.client.post("/v1/predict", json={"input": bad.tolist()}, headers=s.auth)
    assert r.status_code == 503 and "audit" in r.json()["detail"]
    assert r.json()["detail"] == "audit log unavailable; request not answered"
    assert "predictions" not in r.json()
    assert "bastion_audit_errors_total 1" in s.client.get("/metrics").text


class SlowGuard(ModelGuard):
    """The real model guard, answering after a delay (to exercise timeouts and overload)."""

    delay_s = 0.5

    def decide(self, x: Tensor) -> list[Decision]:
        time.sleep(self.delay_s)
        return super().decide(x)


def test_timeout_gives_504_and_overload_503(
    make_served: MakeServed, run_dir: Any, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    slow = SlowGuard.from_run(run_dir)
    s = make_served(guard=slow, request_timeout_s=0.1, max_pending=2)
    x = digits[0]
    r = s.client.post("/v1/predict", json={"input": x[0].tolist()}, headers=s.auth)
    assert r.status_code == 504 and "did not answer" in r.json()["detail"]
    replies = s.client.post_many("/v1/predict", [{"inputs": x[:2].tolist()}] * 3, headers=s.auth)
    assert sorted(r.status_code for r in replies).count(503) >= 1
    assert all(r.status_code in (503, 504) for r in replies)
    assert "bastion_timeouts_total" in s.client.get("/metrics").text


def test_concurrent_requests_share_forward_passes(
    make_served: MakeServed, model_guard: ModelGuard, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    s = make_served(rate=None, micro_batch_wait_ms=20.0)
    x = digits[0][:24]
    replies = s.client.post_many(
        "/v1/predict", [{"input": row.tolist()} for row in x], headers=s.auth
    )
    import torch

    expected = [d.label for d in model_guard.decide(torch.from_numpy(x))]
    assert [r.json()["predictions"][0]["label"] for r in replies] == expected
    text = s.client.get("/metrics").text
    count = next(
        line for line in text.splitlines() if line.startswith("bastion_guard_batch_size_count")
    )
    assert int(count.split()[-1]) < 24  # fewer forward passes than requests


def _jbda_like_queries(seeds: np.ndarray, n_rounds: int, seed: int) -> np.ndarray:
    """Synthetic extraction queries: rounds of small signed steps around a few seeds, as
    Jacobian-based augmentation (Papernot et al. 2017) produces (random signs here)."""
    rng = np.random.default_rng(seed)
    out = [seeds]
    cur = seeds
    for r in range(n_rounds):
        step = 0.1 * np.sign(rng.standard_normal(cur.shape)).astype(np.float32)
        cur = np.clip(cur + step, 0.0, 1.0)
        out.append(cur)
        if r % 5 == 4:
            cur = seeds
    return np.concatenate(out)


def test_prada_flags_and_throttles_an_extraction_key_not_a_benign_one(
    make_served: MakeServed, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    s = make_served(rate=None, flagged_rate=0.01, flagged_burst=20)
    _, benign_key = s.keys.create("benign")
    x = digits[0]
    order = np.random.default_rng(1).permutation(len(x))
    for i in range(0, len(order), 10):
        r = s.client.post(
            "/v1/predict",
            json={"inputs": x[order[i : i + 10]].tolist()},
            headers={"X-API-Key": benign_key},
        )
        assert r.status_code == 200
        assert {p["verdict"] for p in r.json()["predictions"]} == {"accept"}
    queries = _jbda_like_queries(x[:10], 40, seed=2)
    flagged_reply = None
    for i in range(0, len(queries), 10):
        r = s.client.post(
            "/v1/predict", json={"inputs": queries[i : i + 10].tolist()}, headers=s.auth
        )
        if r.status_code == 429:
            break
        verdicts = {p["verdict"] for p in r.json()["predictions"]}
        if "flag" in verdicts:
            flagged_reply = r.json()
    assert flagged_reply is not None, "the extraction key was never flagged"
    assert r.status_code == 429  # throttled to the flagged rate
    reasons = flagged_reply["predictions"][0]["reasons"]
    assert any(reason.startswith("extraction: PRADA") for reason in reasons)
    audited = s.audit.by_request(flagged_reply["request_id"])
    assert audited and all(rec.verdict == "flag" and rec.key_name == "alice" for rec in audited)
    metrics = s.client.get("/metrics").text
    assert "bastion_extraction_flags_total 1" in metrics
    assert "bastion_flagged_keys 1" in metrics


class MiscountingGuard(ModelGuard):
    """The real model guard with a fault: it drops the last decision."""

    def decide(self, x: Tensor) -> list[Decision]:
        return super().decide(x)[:-1]


def test_a_faulty_guard_gives_a_json_500_and_the_service_keeps_serving(
    make_served: MakeServed, run_dir: Any, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    s = make_served(guard=MiscountingGuard.from_run(run_dir))
    r = s.client.post("/v1/predict", json={"input": digits[0][0].tolist()}, headers=s.auth)
    assert r.status_code == 500 and r.json()["field"] == "service"
    assert s.client.get("/v1/health").status_code == 200
    assert 'status="500"' in s.client.get("/metrics").text
