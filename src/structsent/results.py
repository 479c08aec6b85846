"""Results: one small, typed, serialisable record per text, and the logits -> results stage."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

NON_FINITE_OUTPUTS = "the model produced non-finite outputs"  # the start of such a row's error

@dataclasses.dataclass(frozen=True, slots=True)
class LabelResult:
    """The label of one text.

    ``label`` and ``score`` are None exactly when ``error`` says why the text was not labelled.
    ``truncated`` marks a text cut at the model's maximum length; ``windows`` > 1 marks a long
    text scored as overlapping windows whose probabilities were averaged. ``logits`` are the
    model's raw outputs, None for a flagged text; for windows, logits whose softmax is the
    averaged probabilities (see ``windows_logits``), so that they rank the labels as ``scores`` do.
    """

    label: str | None
    score: float | None
    scores: dict[str, float]
    error: str | None = None
    truncated: bool = dataclasses.field(default=False, repr=False)
    windows: int = dataclasses.field(default=1, repr=False)
    logits: dict[str, float] | None = dataclasses.field(default=None, repr=False, compare=False)

    # Equal results compare equal; a result holds dicts, so it is not hashable (said so, not
    # "unhashable type: 'dict'" from a generated __hash__).
    __hash__ = None  # type: ignore[assignment]

    @property
    def ok(self) -> bool:
        return self.error is None

    def copy(self) -> "LabelResult":
        """An equal result that shares no dict with this one."""
        return dataclasses.replace(self, scores=dict(self.scores),
                                   logits=None if self.logits is None else dict(self.logits))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def failed(cls, error: str, *, truncated: bool = False, windows: int = 1) -> "LabelResult":
        """A flagged result; ``truncated`` and ``windows`` still say what was read of the text."""
        return cls(label=None, score=None, scores={}, error=error, truncated=truncated, windows=windows)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable, and exact enough to compare paths at 1e-6).

    A row with a NaN or infinite logit gives NaN probabilities, quietly: such rows are refused
    by ``non_finite_error`` in the postprocess stage, never labelled.
    """
    z = logits.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        z -= z.max(axis=-1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=-1, keepdims=True)
    return z


def non_finite_kinds(values: np.ndarray) -> list[str]:
    """Which of nan, inf, -inf occur in ``values`` (empty when all are finite)."""
    values = np.asarray(values)
    if np.isfinite(values).all():
        return []
    seen = (("nan", np.isnan(values)), ("inf", np.isposinf(values)), ("-inf", np.isneginf(values)))
    return [name for name, where in seen if where.any()]


def non_finite_error(values: np.ndarray) -> str | None:
    """Why a text's model outputs (all its rows) cannot be labelled, or None if they are finite.

    A model whose weights or arithmetic overflowed (NaN or inf logits) has no answer for the
    text; an argmax over NaN would pick the first label and present garbage as a label.
    """
    kinds = non_finite_kinds(values)
    return f"{NON_FINITE_OUTPUTS} ({', '.join(kinds)}) for this text" if kinds else None


def is_model_failure(error: str | None) -> bool:
    """Whether a flagged result's ``error`` is the model's failure rather than the input's."""
    return error is not None and error.startswith(NON_FINITE_OUTPUTS)


def combine_windows(probabilities: np.ndarray, weights: Sequence[int]) -> np.ndarray:
    """Average the rows (probabilities or logits) of a text's windows, weighted by their token counts."""
    w = np.asarray(weights, dtype=np.float64)
    return (probabilities * w[:, None]).sum(axis=0) / w.sum()


def windows_logits(probabilities: np.ndarray, window_logits: np.ndarray, weights: Sequence[int]) -> np.ndarray:
    """The logits of a long text's answer, ``probabilities`` (its windows' averaged ones): their
    logarithms, centred, plus the windows' mean logit level (token-weighted). Their softmax is the
    answer exactly, so they rank the labels as it does (the windows' logits averaged put the other
    label first for ~3% of long reviews), and where every window has the same logits they are
    those logits (the logarithms alone are all <= 0: a sigmoid of them never passed 0.5, and a text
    one token over a window changed scale). A probability that underflowed to 0 is taken as the
    smallest positive float, so that every logit stays finite."""
    logs = np.log(np.maximum(probabilities, np.finfo(np.float64).tiny))
    level = combine_windows(window_logits.mean(axis=1, keepdims=True), weights)[0]
    return logs - logs.mean() + level


def to_result(
    probabilities: np.ndarray,
    labels: Sequence[str],
    *,
    truncated: bool = False,
    windows: int = 1,
    logits: np.ndarray | None = None,
) -> LabelResult:
    """Turn one row of probabilities (and the logits they came from) into a LabelResult.

    Non-finite values give a flagged result, never a label.
    """
    error = non_finite_error(probabilities if logits is None else np.concatenate([probabilities, logits]))
    if error is not None:  # flagged, but what was read of the text is still said (cut, or in how many windows)
        return LabelResult.failed(error, truncated=truncated, windows=windows)
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


class SingleRowResults:
    """``to_result`` for many texts of one model row each, with the numpy work done once for all.

    The feed builds a result for every text it labels; per row, ``to_result`` costs more than
    the rest of the feed's Python. Here softmax, the finiteness test and argmax run over the
    whole array, and each result is built from plain floats (``tolist``: the same doubles as
    ``float(row[i])``). ``result(row)`` equals ``to_result(probabilities[row], labels,
    truncated=truncated, logits=logits[row])``; a row with a non-finite number (``finite``
    says which) is handed to ``to_result`` itself, so it is flagged with the same message.
    """

    def __init__(self, logits: np.ndarray, labels: Sequence[str]) -> None:
        self.logits = logits
        self.probabilities = softmax(logits)
        self.labels = tuple(labels)
        finite = np.isfinite(logits).all(axis=-1) & np.isfinite(self.probabilities).all(axis=-1)
        self._finite: list[bool] = finite.tolist()
        self._best: list[int] = self.probabilities.argmax(axis=-1).tolist() if len(logits) else []
        self._probabilities: list[list[float]] = self.probabilities.tolist()
        self._logits: list[list[float]] = logits.tolist()

    def finite(self, row: int) -> bool:
        return self._finite[row]

    def result(self, row: int, *, truncated: bool = False) -> LabelResult:
        if not self._finite[row]:
            return to_result(self.probabilities[row], self.labels, truncated=truncated, logits=self.logits[row])
        probabilities, best = self._probabilities[row], self._best[row]
        return LabelResult(
            label=self.labels[best],
            score=probabilities[best],
            scores=dict(zip(self.labels, probabilities)),
            truncated=truncated,
            logits=dict(zip(self.labels, self._logits[row])),
        )
