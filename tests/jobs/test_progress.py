import io
import time

from structsent.jobs.label import JobSummary
from structsent.jobs.progress import ProgressBar, format_summary


def test_progress_bar_shows_rows_rate_and_eta():
    stream = io.StringIO()
    bar = ProgressBar(stream=stream, interval=0)
    bar.update({"rows": 500, "rows_this_run": 500}, position=250, total=1000, started=time.perf_counter() - 5)
    bar.close()
    line = stream.getvalue()
    assert "25.0%" in line and "500 rows" in line and "rows/s" in line and "ETA 0m15s" in line


def test_summary_names_every_figure():
    summary = JobSummary(rows=10, flagged=2, duplicates=3, real_tokens=90, padded_tokens=100,
                         rows_this_run=10, seconds_this_run=2.0, model_seconds=1.5)
    summary.labels.update({"正面": 5, "负面": 3})
    text = format_summary(summary, labels=["负面", "正面"])
    for figure in ("10 rows", "负面 3", "正面 5", "flagged 2", "duplicates reused 3", "5.0 rows/s",
                   "padding waste 10.0%", "model busy 75%"):
        assert figure in text, figure


def test_summary_of_one_row_says_row():
    summary = JobSummary(rows=1, rows_this_run=1, seconds_this_run=1.0, model_seconds=0.5)
    summary.labels.update({"正面": 1})
    text = format_summary(summary, labels=["负面", "正面"])
    assert text.startswith("1 row: ") and "\n1 row in " in text and "1 rows" not in text
    assert format_summary(JobSummary(), labels=["负面", "正面"]).startswith("0 rows: ")


def test_the_summary_says_what_labelled_the_rows():
    """A finished job kept no record of its backend, precision or lengths (the manifest goes with the
    work files): the summary names them as resolved."""
    from structsent.jobs.progress import engine_line

    info = {"model": "/m/\x1b[31mx", "format": "huggingface", "backend": "onnx", "device": "cpu", "precision": "int8",
            "max_length": 512, "token_budget": 4096, "max_batch_size": 64, "batch_overhead_tokens": 32,
            "pad_multiple": 8, "num_threads": None, "long_text": "truncate", "window_stride": None,
            "attention": "padded"}
    summary = JobSummary(rows=1, rows_this_run=1, seconds_this_run=1.0)
    text = format_summary(summary, labels=["负面", "正面"], engine=info)
    assert text.splitlines()[-1] == engine_line(info) == (
        "engine: /m/\\x1b[31mx (huggingface) on onnx int8, cpu; max length 512 tokens, longer texts cut there; "
        "token budget 4096, at most 64 texts a call (a call costs 32 tokens more), padded to multiples of 8; "
        "threads: the runtime's own")
    windows = engine_line({**info, "long_text": "windows", "window_stride": 255, "attention": "packed",
                           "batch_overhead_tokens": None, "pad_multiple": None, "num_threads": 2})
    assert "packed attention" in windows and "read in windows starting every 255 tokens" in windows
    assert windows.endswith("at most 64 texts a call; threads: 2")
    assert len(format_summary(summary, labels=["负面", "正面"]).splitlines()) == 2  # (no engine: as before)
