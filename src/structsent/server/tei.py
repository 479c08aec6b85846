"""The semantics of text-embeddings-inference's classification route (``POST /predict``): its
inputs, its ``truncate`` and ``truncation_direction``, its score functions and ranked answers, and
the rule that a whole request is answered or refused."""

from __future__ import annotations

import dataclasses
import math

from ..errors import BadInputError, ModelOutputError
from ..results import LabelResult, is_model_failure
from .schemas import PredictRequest
from .statuses import LimitExceededError


def predict_texts(inputs) -> tuple[list[str], bool]:
    """TEI ``inputs`` (validated by PredictRequest) -> (texts, whether the request was a batch)."""
    if isinstance(inputs, str):
        return [inputs], False
    return [item if isinstance(item, str) else item[0] for item in inputs], True


@dataclasses.dataclass(frozen=True)
class Truncation:
    """A request's own say on long texts: cut them at the model's length (``cut``; else the
    server's ``--long-text`` policy), and keep their end rather than their start where cut."""

    cut: bool
    keep_end: bool


def requested_truncation(request: PredictRequest) -> Truncation | None:
    """TEI's ``truncate`` (true: cut; false: cut, then refuse what was cut; absent: the server's
    policy) and ``truncation_direction`` (Left keeps a text's end); None when the request says neither."""
    keep_end = request.truncation_direction.lower() == "left"
    if request.truncate is None and not keep_end:
        return None
    return Truncation(cut=request.truncate is not None, keep_end=keep_end)


def score_function(request: PredictRequest) -> str:
    """'softmax' (probabilities), 'none' (raw logits) or 'sigmoid' (of each logit), as TEI and the
    Hugging Face pipeline define them; ``raw_scores`` means 'none', and asked beside another
    function it is refused (422): which one was meant cannot be told (raw_scores won unsaid)."""
    requested = request.parameters.function_to_apply if request.parameters else None
    if request.raw_scores:
        if requested not in (None, "none"):
            raise BadInputError(f"raw_scores: true asks for the raw logits, parameters.function_to_apply "
                                f"'{requested}' for its scores: send one of the two")
        return "none"
    return requested or "softmax"


def ranked_predictions(result: LabelResult, *, function: str, top_k: int | None) -> list[dict]:
    """Label/score objects sorted by score, highest first (as TEI and HF clients expect)."""
    if function == "softmax":
        scores = result.scores
    elif function == "sigmoid":
        # 1 / (1 + e^-z), written so that no logit overflows math.exp
        scores = {label: 0.5 * (1.0 + math.tanh(z / 2.0)) for label, z in _logits(result).items()}
    else:
        scores = _logits(result)
    pairs = sorted(scores.items(), key=lambda item: item[1], reverse=True)[:top_k]
    return [{"label": label, "score": score} for label, score in pairs]


def _logits(result: LabelResult) -> dict[str, float]:
    assert result.logits is not None, "the engine keeps the logits of every labelled text"
    return result.logits


def check_predictable(results: list[LabelResult], *, truncate: bool | None, max_length: int) -> None:
    """TEI answers a whole request or refuses it: flagged or (unasked) truncated texts refuse it."""
    for index, result in enumerate(results):
        if is_model_failure(result.error):
            raise ModelOutputError(f"inputs[{index}]: {result.error}")
        if result.error is not None:
            raise BadInputError(f"inputs[{index}]: {result.error}")
        if result.truncated and truncate is False:
            raise LimitExceededError(
                f"inputs[{index}] is longer than the model's max_length ({max_length} tokens); "
                "send truncate=true to cut it",
                limit="max_length",
                limit_value=max_length,
            )
