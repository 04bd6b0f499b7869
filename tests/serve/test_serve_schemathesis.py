"""Schema-driven fuzzing with schemathesis over the service's real OpenAPI document, with and
without a key: positive and negative cases for every operation. Every answer must be
documented (status, content type, body schema), schema-violating bodies must get a 4xx,
nothing may answer 5xx, nothing may answer 200 to ``/v1/predict`` without a valid key, and no
secret may appear in any body or log line."""

from __future__ import annotations

import logging
import os
from typing import Any

import hypothesis.strategies as st
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import MakeServed

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# bounded for the default suite; BASTION_FUZZ_EXAMPLES raises it (benchmarks/serve_hardening.py)
EXAMPLES = int(os.environ.get("BASTION_FUZZ_EXAMPLES", "250"))


def _accepted_by_the_schema(case: Any) -> bool:
    """A positive case whose body is an array input (not an image: a schema cannot make a
    PNG) with no integer literal beyond 64 bits (refused, the one gap the schema documents)."""
    meta = case.meta
    if meta is None or meta.generation.mode.is_negative or not isinstance(case.body, dict):
        return False
    if set(case.body) - {"input", "inputs"}:
        return False
    stack = [case.body]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, int) and abs(v) > 2**63 - 1:
            return False
    return True


def fuzz_service(served: Any, examples: int, *, secrets: list[str]) -> dict[str, int]:
    """Run ``examples`` schemathesis cases against ``served`` (a ``make_served`` result);
    returns counts by outcome. Raises on the first failed check."""
    # a schema-violating body must get a 4xx: 413 (batch over the limit) is a rejection too
    config = schemathesis.Config.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": ["4XX"]}}}
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", served.client.app, config=config)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} >= {
        ("POST", "/v1/predict"),
        ("GET", "/v1/health"),
        ("GET", "/metrics"),
    }
    cases = st.one_of(
        [op.as_strategy(generation_mode=mode) for op in operations for mode in GenerationMode]
    )
    counts = dict.fromkeys(
        ("requests", "5xx", "unauthenticated_200", "with_key", "2xx", "positive_arrays"), 0
    )

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases, with_key=st.booleans())
    def run(case: Any, with_key: bool) -> None:
        headers = {"X-API-Key": served.key} if with_key else None
        if not with_key and case.headers:
            case.headers.pop("X-API-Key", None)  # no key at all (a wrong key: the unit tests)
        response = case.call(headers=headers)
        counts["requests"] += 1
        counts["with_key"] += with_key
        counts["2xx"] += 200 <= response.status_code < 300
        counts["5xx"] += response.status_code >= 500
        if case.path == "/v1/predict" and not with_key:
            counts["unauthenticated_200"] += response.status_code == 200
            assert response.status_code == 401, response.text[:300]
        for secret in secrets:
            assert secret not in response.text
        case.validate_response(response, checks=CHECKS, headers=headers)
        if with_key and case.path == "/v1/predict" and _accepted_by_the_schema(case):
            # the schema is no looser than the service: valid arrays are answered
            counts["positive_arrays"] += 1
            assert response.status_code == 200, (case.body, response.text[:300])

    run()
    return counts


def test_schemathesis_finds_no_5xx_no_unauthenticated_answer_no_secret(
    make_served: MakeServed, caplog: pytest.LogCaptureFixture
) -> None:
    s = make_served(rate=None, extraction_check=False, max_batch=4)
    secret = s.key.split("_", 2)[2]
    with caplog.at_level(logging.DEBUG):
        counts = fuzz_service(s, EXAMPLES, secrets=[secret])
    assert counts["requests"] >= EXAMPLES and counts["5xx"] == 0
    assert counts["unauthenticated_200"] == 0
    assert counts["with_key"] > 0 and counts["2xx"] > 0  # some cases did get through
    assert counts["positive_arrays"] > 0
    assert not [r for r in caplog.records if secret in r.getMessage()]
