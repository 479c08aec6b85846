"""Stage 4: the vectorised postprocess equals the per-row one on every kind of row."""

import numpy as np
import pytest

from structsent.results import SingleRowResults, softmax, to_result

LABELS = ("负面", "正面")


def rows_of_every_kind(n=400, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 4, size=(n, 2))
    logits[::17] = logits[::17, ::-1]            # either order of the labels
    logits[5::23, 1] = logits[5::23, 0]          # exact ties: the first label wins, as np.argmax
    logits[7::29] = [[1e308, -1e308]]            # finite but extreme
    logits[11::31, 0] = np.nan
    logits[13::37, 1] = np.inf
    logits[3::41, 0] = -np.inf
    return logits


@pytest.mark.parametrize("truncated", [False, True])
def test_single_row_results_equal_to_result_row_by_row(truncated):
    logits = rows_of_every_kind()
    rows = SingleRowResults(logits, LABELS)
    probabilities = softmax(logits)
    for row in range(len(logits)):
        want = to_result(probabilities[row], LABELS, truncated=truncated, logits=logits[row])
        got = rows.result(row, truncated=truncated)
        assert got == want and got.logits == want.logits and got.truncated == want.truncated, row
        assert rows.finite(row) == bool(np.isfinite(logits[row]).all() and np.isfinite(probabilities[row]).all())
    assert sum(rows.finite(r) for r in range(len(logits))) < len(logits)  # non-finite rows were tested


def test_single_row_results_of_nothing():
    rows = SingleRowResults(np.zeros((0, 2)), LABELS)
    assert rows.probabilities.shape == (0, 2)
