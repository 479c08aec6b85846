"""A one-line progress bar on a terminal, and the end-of-job summary."""

from __future__ import annotations

import sys
import time

from ..lines import rows_in_words
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


def format_summary(summary, *, labels) -> str:
    """The end-of-job report: rows, labels, flagged, duplicates, time, throughput, padding."""
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
    return "\n".join(lines)
