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


class Prediction(BaseModel):
    """The guard's decision for one input."""

    verdict: str = Field(description="accept, flag, abstain or reject.")
    label: int | None = Field(description="Predicted class index (null unless answered).")
    class_name: str | None = Field(description="Name of the predicted class.")
    confidence: float | None
    probabilities: list[float] | None
    reasons: list[str] = Field(description="One reason per layer that fired.")
    scores: dict[str, float | None] = Field(description="Every detector's raw score.")


class PredictResponse(BaseModel):
    request_id: str = Field(description="Also the X-Request-ID header; keys the audit log.")
    model: str
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
