"""Wire schemas of the HTTP API (pydantic): structsent's own and the TEI-compatible one.

The TEI-compatible ``/predict`` accepts what Hugging Face text-embeddings-inference and the
Hugging Face Inference API clients send: ``inputs`` as one string, a list of strings, or a list
of one-string lists, with ``truncate``, ``raw_scores`` and a ``parameters`` object.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictStr


class SentimentRequest(BaseModel):
    """``POST /v1/sentiment``: the texts to label."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"texts": ["味道不错，送餐很快", "差评"]}})

    texts: list[StrictStr] = Field(min_length=1, description="Texts to label; results come back in this order.")


class SentimentResult(BaseModel):
    """The label of one text; ``label`` and ``score`` are null exactly when ``error`` is set."""

    label: str | None
    score: float | None
    scores: dict[str, float] = Field(description="Probability of every label.")
    error: str | None = Field(description="Why this text was not labelled (empty text...), else null.")
    truncated: bool = Field(description="The text was cut at the model's maximum length.")


class SentimentResponse(BaseModel):
    results: list[SentimentResult]


class ErrorResponse(BaseModel):
    """Every error answer: a message, its type, and the limit it hit when it hit one."""

    error: str
    error_type: Literal["validation", "overloaded", "backend", "unhealthy"]
    limit: str | None = Field(default=None, description="Name of the limit exceeded, as in GET /info.")


class ClassificationParameters(BaseModel):
    """The ``parameters`` object of Hugging Face Inference API clients."""

    model_config = ConfigDict(extra="ignore")

    top_k: int | None = Field(default=None, ge=1, description="Keep only the k most probable labels.")
    function_to_apply: Literal["softmax", "none", "sigmoid"] | None = Field(
        default=None,
        description="softmax (default): probabilities; none: the raw logits; sigmoid: the sigmoid of "
        "each logit (as the Hugging Face pipeline applies it).",
    )


PredictInputs = Union[StrictStr, list[StrictStr], list[list[StrictStr]]]


class PredictRequest(BaseModel):
    """``POST /predict`` and ``POST /``: the text-embeddings-inference classification request."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"example": {"inputs": "味道不错，送餐很快"}})

    inputs: PredictInputs = Field(
        description="One text, a list of texts, or a list of one-text lists (TEI's batch form)."
    )
    truncate: bool | None = Field(
        default=None, description="Cut texts longer than the model's maximum; false refuses them (413). "
        "Null: the server's long-text policy."
    )
    raw_scores: bool = Field(default=False, description="The raw logits instead of probabilities (TEI).")
    parameters: ClassificationParameters | None = None


class Prediction(BaseModel):
    label: str
    score: float


PredictResponse = Union[list[Prediction], list[list[Prediction]]]


class HealthResponse(BaseModel):
    status: Literal["ok"]


class LimitsInfo(BaseModel):
    max_body_bytes: int
    max_texts: int
    max_text_chars: int
    max_queue: int
    max_wait_ms: float
    max_batch_tokens: int | None
    max_batch_size: int | None


class InfoResponse(BaseModel):
    """What is served: the model (once loaded), the engine, and the server's limits."""

    version: str
    ready: bool
    model: str
    labels: list[str] | None = None
    format: str | None = None
    backend: str | None = None
    device: str | None = None
    precision: str | None = None
    max_length: int | None = None
    long_text: str | None = None
    limits: LimitsInfo
