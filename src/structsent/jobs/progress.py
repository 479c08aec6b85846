"""A one-line progress bar on a terminal, and the end-of-job summary."""

from __future__ import annotations

import sys
import time

from ..lines import one_line, rows_in_words
from ..telemetry import gpu_snapshot


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class ProgressBar:
    """Rows, rows/s and ETA, redrawn at most every ``interval`` seconds on ``stream``."""

    def __init__(self, stream=None, interval: float = 0.2, width: int = 24, device: str = "cpu") -> None:
        self.stream = stream or sys.stderr
        self.device = device
        self.interval = interval
        self.width = width
        self._last_draw = 0.0
        self._drawn = False

    def update(self, counters: dict, position: int, total: int | None, started: float) -> None:
        now = time.perf_counter()
        if now - self._last_draw < self.interval:
            return
        self._last_draw = now
        elapsed = max(now - started, 1e-9)
        rate = counters["rows_this_run"] / elapsed
        line = f"{rows_in_words(counters['rows'])}  {rate:,.1f} rows/s"
        if total:
            done = min(position / total, 1.0)
            filled = int(done * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            line = f"[{bar}] {done:6.1%}  {line}"
            if done > 0:
                line += f"  ETA {_duration(elapsed * (1 - done) / done)}"
        gpu = gpu_snapshot(self.device)
        if gpu is not None:
            line += "  " + gpu.describe()
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()


def format_summary(summary, *, labels, engine: dict | None = None) -> str:
    """The end-of-job report: rows, labels, flagged, duplicates, time, throughput, padding; with
    ``engine`` (``Classifier.info()``), the settings the rows were labelled with, as resolved."""
    parts = [rows_in_words(summary.rows)]
    if summary.resumed_from:
        parts.append(f"({summary.resumed_from:,} done before resuming)")
    per_label = ", ".join(f"{label} {summary.labels.get(label, 0):,}" for label in labels)
    flagged = f"flagged {summary.flagged:,}"
    if summary.resynchronised:
        flagged += (f" ({summary.resynchronised:,} malformed multi-line CSV records, each flagged on its first "
                    "line, the lines after it read again)")
    cut = ""
    if summary.truncated:  # (without a word, a job of long reviews labelled their beginnings alone)
        cut = f"; {summary.truncated:,} cut to --max-length tokens (--long-text windows reads a long text whole)"
    lines = [
        " ".join(parts) + f": {per_label}; {flagged}; duplicates reused {summary.duplicates:,}{cut}",
        f"{rows_in_words(summary.rows_this_run)} in {_duration(summary.seconds_this_run)} "
        f"({summary.rows_per_second:,.1f} rows/s); padding waste {summary.padding_fraction:.1%}; "
        f"model busy {summary.model_busy_fraction:.0%} of the time",
    ]
    if engine is not None:
        lines.append(engine_line(engine))
    return "\n".join(lines)


def engine_line(info: dict) -> str:
    """What labelled the rows, as resolved (a finished job keeps no other record of it): the model,
    the runtime, the lengths, the batches and the threads."""
    if info.get("long_text") == "windows":
        texts = f"longer texts read in windows starting every {info.get('window_stride')} tokens"
    else:
        texts = "longer texts cut there"
    attention = ", packed attention" if info.get("attention") == "packed" else ""
    overhead = info.get("batch_overhead_tokens")
    planned = f" (a call costs {overhead} tokens more)" if overhead is not None else ""
    pad = f", padded to multiples of {info['pad_multiple']}" if info.get("pad_multiple") else ""
    threads = info.get("num_threads") or "the runtime's own"
    return one_line(
        f"engine: {info.get('model')} ({info.get('format')}) on {info.get('backend')} {info.get('precision')}, "
        f"{info.get('device')}{attention}; max length {info.get('max_length')} tokens, {texts}; token budget "
        f"{info.get('token_budget')}, at most {info.get('max_batch_size')} texts a call{planned}{pad}; "
        f"threads: {threads}")
