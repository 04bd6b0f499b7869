"""Property-based fuzzing of ``POST /v1/predict``: bodies drawn from the service's own OpenAPI
schema and mutations of them (wrong types, extra fields, deep nesting, huge numbers, cut
bytes). Every answer must be a JSON response with a status below 500."""

from __future__ import annotations

import json
import math
from typing import Any

import hypothesis.strategies as st
import numpy as np
from conftest import MakeServed
from hypothesis import HealthCheck, given, settings

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
ANY_JSON = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)


def from_schema(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A hypothesis strategy for the JSON Schema subset FastAPI/pydantic emit."""
    if "$ref" in schema:
        return from_schema(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
    if "anyOf" in schema:
        return st.one_of([from_schema(s, defs) for s in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        names = sorted(props)
        lo, hi = schema.get("minProperties", 0), schema.get("maxProperties", len(names))
        return st.lists(st.sampled_from(names), min_size=lo, max_size=hi, unique=True).flatmap(
            lambda chosen: st.fixed_dictionaries({n: from_schema(props[n], defs) for n in chosen})
        )
    if kind == "array":
        items = from_schema(schema.get("items", {}), defs)
        lo = schema.get("minItems", 0)
        return st.lists(items, min_size=lo, max_size=min(schema.get("maxItems", 6), max(lo, 6)))
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        return st.text(max_size=30)
    if kind == "integer":
        return st.integers()
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return ANY_JSON


def near_valid(shape: tuple[int, ...]) -> st.SearchStrategy[Any]:
    """Arrays of the right shape with values anywhere, including NaN and huge numbers."""
    n = math.prod(shape)
    values = st.lists(
        st.floats(allow_nan=True, allow_infinity=True, width=64) | st.integers(-(10**30), 10**30),
        min_size=n,
        max_size=n,
    )
    return values.map(lambda v: np.array(v, dtype=object).reshape(shape).tolist())


def mutate(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    """Replace, wrap or extend some node of ``value``."""
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return draw(ANY_JSON)
    if choice == 1:
        for _ in range(draw(st.integers(1, 300))):
            value = [value]
        return value
    if isinstance(value, list) and value:
        i = draw(st.integers(0, len(value) - 1))
        value = list(value)
        value[i] = mutate(draw, value[i], depth + 1) if depth < 6 else draw(JSON_LEAVES)
        return value
    if isinstance(value, dict):
        value = dict(value)
        if choice == 2:
            value[draw(st.text(max_size=8))] = draw(ANY_JSON)
        elif value:
            k = draw(st.sampled_from(sorted(value)))
            value[k] = mutate(draw, value[k], depth + 1)
        return value
    return draw(JSON_LEAVES)


def test_fuzzed_bodies_never_get_a_5xx(make_served: MakeServed) -> None:
    s = make_served(require_auth=False, rate=None, extraction_check=False, max_batch=8)
    doc = s.client.get("/openapi.json").json()
    defs = doc["components"]["schemas"]
    request_schema = defs["PredictRequest"]
    shape = (1, 8, 8)

    @st.composite
    def bodies(draw: st.DrawFn) -> bytes:
        base = draw(
            from_schema(request_schema, defs)
            | near_valid(shape).map(lambda x: {"input": x})
            | st.lists(near_valid(shape), min_size=1, max_size=3).map(lambda x: {"inputs": x})
        )
        if draw(st.booleans()):
            base = mutate(draw, base)
        raw = json.dumps(base).encode()
        if draw(st.integers(0, 9)) == 0:
            raw = raw[: draw(st.integers(0, len(raw)))]
        return raw

    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=True,
    )
    @given(bodies())
    def check(raw: bytes) -> None:
        r = s.client.post("/v1/predict", content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code < 500, (raw[:200], r.status_code, r.text[:300])
        body = r.json()
        if r.status_code == 200:
            assert len(body["predictions"]) >= 1
        else:
            assert body["detail"] and body["field"]

    check()
