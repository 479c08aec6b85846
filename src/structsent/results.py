"""Results: one small, typed, serialisable record per text, and the logits -> results stage."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True, slots=True)
class LabelResult:
    """The label of one text.

    ``label`` and ``score`` are None exactly when ``error`` says why the text was not labelled.
    ``truncated`` marks a text cut at the model's maximum length; ``windows`` > 1 marks a long
    text scored as overlapping windows whose probabilities were averaged. ``logits`` are the
    model's raw outputs (for windows: their token-weighted mean), None for a flagged text.
    """

    label: str | None
    score: float | None
    scores: dict[str, float]
    error: str | None = None
    truncated: bool = dataclasses.field(default=False, repr=False)
    windows: int = dataclasses.field(default=1, repr=False)
    logits: dict[str, float] | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def failed(cls, error: str) -> "LabelResult":
        return cls(label=None, score=None, scores={}, error=error)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable, and exact enough to compare paths at 1e-6)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def combine_windows(probabilities: np.ndarray, weights: Sequence[int]) -> np.ndarray:
    """Average the rows (probabilities or logits) of a text's windows, weighted by their token counts."""
    w = np.asarray(weights, dtype=np.float64)
    return (probabilities * w[:, None]).sum(axis=0) / w.sum()


def to_result(
    probabilities: np.ndarray,
    labels: Sequence[str],
    *,
    truncated: bool = False,
    windows: int = 1,
    logits: np.ndarray | None = None,
) -> LabelResult:
    """Turn one row of probabilities (and the logits they came from) into a LabelResult."""
    best = int(np.argmax(probabilities))
    scores = {label: float(p) for label, p in zip(labels, probabilities)}
    return LabelResult(
        label=labels[best],
        score=float(probabilities[best]),
        scores=scores,
        truncated=truncated,
        windows=windows,
        logits=None if logits is None else {label: float(z) for label, z in zip(labels, logits)},
    )
