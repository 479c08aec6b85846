"""Wire schemas of the HTTP API (pydantic): structsent's own and the TEI-compatible one.

The TEI-compatible ``/predict`` accepts what Hugging Face text-embeddings-inference and the
Hugging Face Inference API clients send: ``inputs`` as one string, a list of strings, or a list
of one-string lists, with ``truncate``, ``raw_scores`` and a ``parameters`` object.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, StrictBool, StrictInt, StrictStr, Tag


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


ErrorType = Literal["validation", "unauthorized", "timeout", "overloaded", "backend", "unhealthy"]


class ErrorResponse(BaseModel):
    """Every error answer: a message, its type, and the limit it hit when it hit one."""

    error: str
    error_type: ErrorType
    limit: str | None = Field(
        default=None, description="Name of the limit that refused the request (413, 408, 429, 431, 503), as in GET /info."
    )
    limit_value: float | None = Field(default=None, description="That limit's value, as in GET /info.")


def error_body(
    message: str, error_type: str, *, limit: str | None = None, limit_value: float | None = None
) -> dict:
    """The JSON of every error answer (an ErrorResponse); ``limit`` fields only when a limit was hit."""
    body: dict[str, str | float | None] = {"error": message, "error_type": error_type}
    if limit is not None:
        body["limit"] = limit
        body["limit_value"] = limit_value
    return body


class ClassificationParameters(BaseModel):
    """The ``parameters`` object of Hugging Face Inference API clients."""

    model_config = ConfigDict(extra="ignore")

    top_k: StrictInt | None = Field(default=None, ge=1, description="Keep only the k most probable labels.")
    function_to_apply: Literal["softmax", "none", "sigmoid"] | None = Field(
        default=None,
        description="softmax (default): probabilities; none: the raw logits; sigmoid: the sigmoid of "
        "each logit (as the Hugging Face pipeline applies it).",
    )


# The characters str.strip() removes, spelled out: "\S" means something else to Python, to JSON
# Schema (ECMA-262) and to pydantic's regex engine.
WHITESPACE_CLASS = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("empty text")
    return text


# A text TEI's API answers: not blank (the label job and /v1/sentiment flag blank texts instead).
# Checked in Python, as the engine does; the pattern tells clients the same in the schema.
PredictText = Annotated[StrictStr, AfterValidator(_not_blank), Field(json_schema_extra={"pattern": f"[^{WHITESPACE_CLASS}]"})]


def _inputs_form(value) -> str | None:
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "batch" if value and isinstance(value[0], list) else "texts"
    return None


# Exactly what is answered: a text, a non-empty list of texts, or a non-empty list of one-text
# lists (TEI's batch form; a two-text list would be a sentence pair, which is refused).
PredictInputs = Annotated[
    Union[
        Annotated[PredictText, Tag("text")],
        Annotated[list[PredictText], Field(min_length=1), Tag("texts")],
        Annotated[list[Annotated[list[PredictText], Field(min_length=1, max_length=1)]], Field(min_length=1), Tag("batch")],
    ],
    Discriminator(
        _inputs_form,
        custom_error_type="inputs_form",
        custom_error_message="must be a text, a list of texts, or a list of one-text lists",
    ),
]


class PredictRequest(BaseModel):
    """``POST /predict`` and ``POST /``: the text-embeddings-inference classification request."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"example": {"inputs": "味道不错，送餐很快"}})

    inputs: PredictInputs = Field(
        description="One text, a list of texts, or a list of one-text lists (TEI's batch form)."
    )
    truncate: StrictBool | None = Field(
        default=None, description="Cut texts longer than the model's maximum; false refuses them (413). "
        "Null: the server's long-text policy."
    )
    truncation_direction: Literal["Right", "Left", "right", "left"] = Field(
        default="Right", description="Which end of a text truncation keeps: Right keeps the start, Left the end (TEI)."
    )
    raw_scores: StrictBool = Field(default=False, description="The raw logits instead of probabilities (TEI).")
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
    max_connections: int
    read_timeout_s: float
    max_header_bytes: int
    max_batch_tokens: int | None
    max_batch_size: int | None
    model_workers: int  # model calls at once (worker threads of the batcher)


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
    window_stride: int | None = None
    # The engine's resolved settings, named as EngineConfig's fields.
    token_budget: int | None = None
    max_batch_size: int | None = None
    batch_overhead_tokens: int | None = None
    pad_multiple: int | None = None
    num_threads: int | None = None
    attention: str | None = None  # what runs: packed (no padding computed) or padded
    activation_epilogue: bool | None = None  # feed-forward activation applied by its product (CUDA fp16/bf16)
    limits: LimitsInfo
