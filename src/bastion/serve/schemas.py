"""Pydantic models of the service's JSON, for the OpenAPI document (``/openapi.json``).

The predict endpoint parses its body itself (see :mod:`bastion.serve.inputs`), for speed and
for errors that name the exact element; these models describe the same shapes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PredictRequest(BaseModel):
    """Exactly one of ``input``, ``inputs``, ``image``, ``images`` (array and image models) or
    ``text``, ``texts`` (text models)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"minProperties": 1, "maxProperties": 1}
    )

    input: list[Any] | None = Field(
        None, description="One input: a nested array of numbers of the model's input shape."
    )
    inputs: list[list[Any]] | None = Field(
        None, min_length=1, description="A batch of inputs, each like 'input'."
    )
    image: str | None = Field(
        None, description="One base64 PNG of the model's height and width (grey or RGB)."
    )
    images: list[str] | None = Field(None, min_length=1, description="A batch of base64 PNGs.")
    text: str | None = Field(None, description="One text (text models only).")
    texts: list[str] | None = Field(
        None, min_length=1, description="A batch of texts (text models only)."
    )


class TopClass(BaseModel):
    """One of the most probable classes (``top-K`` output policies)."""

    label: int
    probability: float


class Prediction(BaseModel):
    """The guard's decision for one input; ``confidence``, ``probabilities`` and ``top_k``
    are shaped by the key's output policy (the response's ``output``)."""

    verdict: str = Field(description="accept, flag, abstain or reject.")
    label: int | None = Field(description="Predicted class index (null unless answered).")
    class_name: str | None = Field(description="Name of the predicted class.")
    confidence: float | None
    probabilities: list[float] | None = Field(
        description="Every class's probability (policies full and round-D; else null)."
    )
    top_k: list[TopClass] | None = Field(
        None, description="The K most probable classes, most probable first (top-K only)."
    )
    reasons: list[str] = Field(description="One reason per layer that fired.")
    scores: dict[str, float | None] = Field(description="Every detector's raw score.")


class PredictResponse(BaseModel):
    request_id: str = Field(description="Also the X-Request-ID header; keys the audit log.")
    model: str
    output: str = Field(
        description="The output policy applied to this key's answers: full, round-D, top-K, "
        "top-K:D or labels."
    )
    predictions: list[Prediction]


class HealthResponse(BaseModel):
    status: str
    model: str
    input_shape: list[int]
    classes: list[str]
    guard_layers: list[str]
    auth_required: bool
    uptime_s: float


class ErrorResponse(BaseModel):
    detail: str = Field(description="What was wrong and what was expected.")
    field: str = Field(description="The JSON path, header or part of the request at fault.")
    request_id: str | None = None


# a base64 string (standard alphabet, padded): what png_instance accepts before decoding
_BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def _nested_array(shape: tuple[int, ...]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "number"}
    for n in reversed(shape):
        schema = {"type": "array", "minItems": n, "maxItems": n, "items": schema}
    return schema


def predict_request_schema(
    input_shape: tuple[int, ...], *, max_batch: int, text: bool = False
) -> dict[str, Any]:
    """The JSON Schema of one service's predict body, as strict as the service: exactly one
    field; arrays of exactly the model's input shape; batches of 1..``max_batch``; images as
    non-empty base64 PNG strings (only for ``(1|3, H, W)`` models); texts for text models.

    What a schema cannot say: an image must decode to a PNG of the model's height and width
    (else 422); an integer literal beyond 64 bits gets 422 while a float of any size goes to
    the guard (JSON Schema cannot tell ``1e30`` from ``10**30``); JSON ``NaN``/``Infinity``
    (not JSON Schema numbers) are accepted and rejected by the guard with a reason.
    """
    props: dict[str, Any] = {}
    if text:
        props["text"] = {"type": "string", "description": "One text."}
        props["texts"] = {
            "type": "array",
            "items": {"type": "string"},
            "minItems": 1,
            "maxItems": max_batch,
            "description": f"A batch of 1 to {max_batch} texts.",
        }
    else:
        dims = " x ".join(map(str, input_shape))
        props["input"] = {
            **_nested_array(input_shape),
            "description": f"One input: a nested array of numbers of shape {dims}.",
        }
        props["inputs"] = {
            "type": "array",
            "items": _nested_array(input_shape),
            "minItems": 1,
            "maxItems": max_batch,
            "description": f"A batch of 1 to {max_batch} inputs, each like 'input'.",
        }
        if len(input_shape) == 3 and input_shape[0] in (1, 3):
            _, h, w = input_shape
            image = {
                "type": "string",
                "minLength": 4,
                "pattern": _BASE64,
                "contentEncoding": "base64",
                "contentMediaType": "image/png",
                "description": f"One base64 PNG of {w}x{h} pixels (grey or RGB).",
            }
            props["image"] = image
            props["images"] = {
                "type": "array",
                "items": image,
                "minItems": 1,
                "maxItems": max_batch,
                "description": f"A batch of 1 to {max_batch} base64 PNGs.",
            }
    names = " or ".join(f"'{n}'" for n in props)
    return {
        "title": "PredictRequest",
        "description": f"Exactly one of {names}.",
        "type": "object",
        "properties": props,
        "additionalProperties": False,
        "minProperties": 1,
        "maxProperties": 1,
    }
