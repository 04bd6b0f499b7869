"""Turning a ``POST /v1/predict`` body into a float32 batch, with a clear error per field.

Accepted bodies (exactly one field):

- ``{"input": X}`` or ``{"inputs": [X, ...]}``: ``X`` a nested array of numbers of the model's
  input shape (e.g. ``1 x 28 x 28``), values in the model's natural range;
- ``{"image": B}`` or ``{"images": [B, ...]}``: ``B`` a base64 PNG of the model's height and
  width, grey or RGB (converted to the model's channels), scaled to [0, 1].

NaN and infinities (JSON ``NaN``/``Infinity`` or numbers too large for float32) are passed on:
the guard rejects them with a reason, and that decision is audited.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from typing import Any

import numpy as np

from bastion.serve.errors import RequestError

FIELDS = ("input", "inputs", "image", "images")


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return f"an array of length {len(v)}"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _describe_problem(value: Any, shape: tuple[int, ...], field: str) -> RequestError:
    """Walk ``value`` against ``shape`` and return the error for the first wrong element."""
    stack: list[tuple[Any, int, str]] = [(value, 0, field)]
    while stack:
        v, depth, path = stack.pop()
        if depth == len(shape):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return RequestError(422, path, f"expected a number, got {_type_name(v)}")
            if isinstance(v, int) and abs(v) > 2**63 - 1:
                return RequestError(422, path, "number too large")
            continue
        if not isinstance(v, list) or len(v) != shape[depth]:
            want = " x ".join(map(str, shape[depth:]))
            return RequestError(
                422, path, f"expected an array of shape {want}, got {_type_name(v)}"
            )
        stack.extend((item, depth + 1, f"{path}[{i}]") for i, item in reversed(list(enumerate(v))))
    return RequestError(422, field, "not a nested array of numbers")


def array_instance(value: Any, shape: tuple[int, ...], field: str) -> np.ndarray:
    """One input as float32 ``shape``; raises :class:`RequestError` (422) naming the element."""
    if not isinstance(value, list):
        raise _describe_problem(value, shape, field)
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        raise _describe_problem(value, shape, field) from None
    if arr.shape != shape or arr.dtype.kind not in "iuf":
        raise _describe_problem(value, shape, field)
    # numpy turns booleans mixed with numbers into numbers: check the leaf types
    leaves: list[Any] = [value]
    for _ in range(len(shape) - 1):
        leaves = [item for sub in leaves for item in sub]
    types: set[type] = set()
    for leaf in leaves:
        types.update(map(type, leaf))
    if not types <= {int, float}:
        raise _describe_problem(value, shape, field)
    with np.errstate(over="ignore", invalid="ignore"):
        return arr.astype(np.float32)


def png_instance(value: Any, shape: tuple[int, ...], field: str) -> np.ndarray:
    """One base64 PNG as float32 ``(C, H, W)`` in [0, 1]; raises :class:`RequestError`."""
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise RequestError(
            422, field, f"this model takes arrays of shape {shape}, not images; send 'inputs'"
        )
    if not isinstance(value, str):
        raise RequestError(422, field, f"expected a base64 PNG string, got {_type_name(value)}")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(422, field, "not valid base64") from None
    from PIL import Image  # deferred: only image requests need it

    c, h, w = shape
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
            if img.size != (w, h):
                raise RequestError(
                    422,
                    field,
                    f"expected a {w}x{h} (width x height) PNG, got {img.size[0]}x{img.size[1]}",
                )
            pixels = np.asarray(img.convert("L" if c == 1 else "RGB"), dtype=np.float32)
    except RequestError:
        raise
    except (
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,  # raised when warnings are errors
    ) as e:
        raise RequestError(422, field, f"not a readable PNG image ({e})") from None
    pixels = pixels / 255.0
    return pixels[None] if c == 1 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def parse_body(
    body: bytes, *, input_shape: tuple[int, ...], max_batch: int
) -> tuple[np.ndarray, bool]:
    """Decode a predict body into ``(x, batched)``: ``x`` float32 ``(N, *input_shape)``,
    ``batched`` whether the request used ``inputs``/``images``.

    Raises :class:`RequestError`: 400 for a body that is not JSON, 413 for more than
    ``max_batch`` inputs, 422 for anything else, naming the field.
    """
    try:
        doc = json.loads(body)
    except RecursionError:
        raise RequestError(400, "body", "JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, int too long
        raise RequestError(400, "body", f"not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise RequestError(
            422,
            "body",
            f"expected a JSON object with one of {', '.join(FIELDS)}, got {_type_name(doc)}",
        )
    unknown = sorted(k for k in doc if k not in FIELDS)
    if unknown:
        raise RequestError(
            422,
            unknown[0] or "body",  # an empty key names no field
            f"unknown field; expected exactly one of {', '.join(FIELDS)}",
        )
    given = [k for k in FIELDS if k in doc]
    if len(given) != 1:
        raise RequestError(
            422,
            "body",
            f"expected exactly one of {', '.join(FIELDS)}, got "
            f"{', '.join(given) if given else 'none'}",
        )
    name = given[0]
    value = doc[name]
    convert = png_instance if name.startswith("image") else array_instance
    if name in ("input", "image"):
        return convert(value, input_shape, name)[None], False
    if not isinstance(value, list):
        raise RequestError(422, name, f"expected an array of inputs, got {_type_name(value)}")
    if not value:
        raise RequestError(422, name, "expected at least one input")
    if len(value) > max_batch:
        raise RequestError(413, name, f"{len(value)} inputs exceed the batch limit of {max_batch}")
    rows = [convert(v, input_shape, f"{name}[{i}]") for i, v in enumerate(value)]
    return np.stack(rows), True


TEXT_FIELDS = ("text", "texts")


def parse_text_body(body: bytes, *, max_batch: int) -> list[str]:
    """Decode a predict body for a text model: exactly one of ``text`` (a string) or ``texts``
    (an array of strings). Raises :class:`RequestError` (400, 413, 422) naming the field; the
    texts themselves are validated by the guard (empty, too long, bad encoding -> reject)."""
    try:
        doc = json.loads(body)
    except RecursionError:
        raise RequestError(400, "body", "JSON nested too deeply") from None
    except ValueError as e:
        raise RequestError(400, "body", f"not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise RequestError(422, "body", f"expected a JSON object, got {_type_name(doc)}")
    unknown = sorted(k for k in doc if k not in TEXT_FIELDS)
    if unknown:
        raise RequestError(
            422,
            unknown[0] or "body",
            "unknown field; this model takes exactly one of text, texts",
        )
    given = [k for k in TEXT_FIELDS if k in doc]
    if len(given) != 1:
        raise RequestError(422, "body", "expected exactly one of text, texts")
    name = given[0]
    value = doc[name]
    if name == "text":
        if not isinstance(value, str):
            raise RequestError(422, "text", f"expected a string, got {_type_name(value)}")
        return [value]
    if not isinstance(value, list) or not value:
        raise RequestError(422, "texts", "expected a non-empty array of strings")
    if len(value) > max_batch:
        raise RequestError(
            413, "texts", f"{len(value)} texts exceed the batch limit of {max_batch}"
        )
    for i, v in enumerate(value):
        if not isinstance(v, str):
            raise RequestError(422, f"texts[{i}]", f"expected a string, got {_type_name(v)}")
    return list(value)
