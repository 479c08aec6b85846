"""Labelled files written by the label job's own writer (io/writers.py), in every output format."""

from __future__ import annotations

import dataclasses
import datetime

import numpy as np
import pytest

from structsent.io.formats import Format
from structsent.io.readers import InputRow
from structsent.io.writers import ChunkEncoder
from structsent.results import LabelResult, to_result

LABELS = ("负面", "正面")
HOSTILE = ("<script>alert(1)</script>", '"><img src=x onerror=alert(2)>')
FORMATS = ("csv", "tsv", "jsonl", "parquet")


@dataclasses.dataclass
class Sample:
    """What was written: the rows and their results, and the numbers a report must show."""

    rows: list[InputRow]
    results: list[LabelResult]

    def written_score(self, i: int) -> float | None:
        score = self.results[i].score
        return None if score is None else round(score, 6)  # the writer keeps six decimals

    @property
    def labelled(self) -> list[int]:
        return [i for i, r in enumerate(self.results) if r.ok]

    @property
    def flagged(self) -> list[int]:
        return [i for i, r in enumerate(self.results) if not r.ok]


def sample() -> Sample:
    """40 reviews: distinct negative probabilities with many score ties, 5 flagged rows, three
    categories (one empty, one holding markup), dates over 80 days (one not a date)."""
    rows, results = [], []
    start = datetime.date(2024, 1, 1)
    for i in range(40):
        day = start + datetime.timedelta(days=(i * 7) % 80)
        date = "unknown" if i == 13 else day.isoformat() + ("T08:30:00" if i % 2 else "")
        category = "" if i == 0 else ("外卖", "酒店", "<b>手机</b>")[i % 3]
        text = HOSTILE[i % 2] if i in (1, 2) else f"第{i + 1}条：这家店的菜还行吧"
        values = {"id": f"r{i}", "date": date, "category": category, "text": text}
        rows.append(InputRow(i + 1, values, text))
        if i % 8 == 7:
            results.append(LabelResult.failed("empty text" if i % 16 == 7 else f"line {i + 2}: invalid JSON (Expecting value)"))
        else:
            p_negative = 0.02 + 0.96 * ((i * 17) % 40) / 39  # p and 1 - p both occur: equal scores
            results.append(to_result(np.array([p_negative, 1.0 - p_negative]), LABELS))
    return Sample(rows, results)


def write_labelled(path, fmt: str, data: Sample, *, prefix: str = "", columns=None) -> None:
    """Write ``data`` exactly as `structsent label` would, with the label job's encoder."""
    format_ = Format(fmt)
    columns = columns or list(data.rows[0].values)
    encoder = ChunkEncoder(format_, columns, list(LABELS), prefix)
    if format_ is Format.PARQUET:
        import pyarrow.parquet as pq

        pq.write_table(encoder.table(data.rows, data.results), path)
    else:
        path.write_bytes(encoder.header() + encoder.encode(data.rows, data.results))


@pytest.fixture(scope="session")
def labelled_sample() -> Sample:
    return sample()


@pytest.fixture(scope="session", params=FORMATS)
def labelled_file(request, tmp_path_factory, labelled_sample):
    path = tmp_path_factory.mktemp("labelled") / f"labelled.{request.param}"
    write_labelled(path, request.param, labelled_sample)
    return path


@pytest.fixture(scope="session")
def labelled_csv(tmp_path_factory, labelled_sample):
    """The sample as one CSV, for tests that run the command line (one format is enough there)."""
    path = tmp_path_factory.mktemp("labelled-csv") / "labelled.csv"
    write_labelled(path, "csv", labelled_sample)
    return path
