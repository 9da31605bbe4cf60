"""The JSON shapes of the API's answers (they document themselves in the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Label(BaseModel):
    id: int | str = Field(description="the label's ID: a number for a COMP5329 model, "
                                      "else the label itself")
    name: str


class Prediction(BaseModel):
    labels: list[Label] = Field(description="the predicted labels")
    probabilities: dict[str, float] = Field(description="every label's probability, by name")
    threshold: float = Field(description="a label is predicted when its probability reaches this")
    caption_truncated: bool = Field(
        description="true when the caption was longer than the text encoder reads, and was cut")


class PredictResponse(Prediction):
    time_ms: float = Field(description="time the server took, in milliseconds")


class BatchResponse(BaseModel):
    results: list[Prediction] = Field(description="one result per item, in the order sent")
    time_ms: float = Field(description="time the server took, in milliseconds")


class Problem(BaseModel):
    detail: str = Field(description="what was wrong with the request")


class Health(BaseModel):
    status: str = "ok"
    batches: int = Field(description="model calls made since the server started")
    items: int = Field(description="items predicted in them")


Info = dict[str, Any]

ERRORS = {status: {"model": Problem, "description": text} for status, text in {
    400: "the multipart body cannot be parsed",
    413: "the request body is over the upload limit, or a caption is over 100 KB",
    415: "an upload is not an image",
    422: "a field is missing or wrong: a damaged image, an empty caption, too many items",
}.items()}
