"""Benchmark results as a Markdown table, a JSON file and a PNG bar chart."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

BASELINE = "pipeline"
REFERENCE = "torch-fp32"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Row:
    name: str
    title: str
    seconds: float
    texts: int
    padding_fraction: float
    label_agreement: float | None  # vs structsent torch fp32 on the same texts
    utilisation: float | None  # CPU: useful FLOP/s over the fp32 matmul peak; GPU: NVML percent / 100
    gpu_memory_mib: float | None = None
    vs_baseline: float | None = None

    @property
    def texts_per_s(self) -> float:
        return self.texts / self.seconds if self.seconds else float("inf")

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "texts_per_s": self.texts_per_s}


def with_ratios(rows: Sequence[Row]) -> list[Row]:
    """Each row's throughput over the pipeline baseline's (when the baseline ran)."""
    base = next((r for r in rows if r.name == BASELINE), None)
    if base is None:
        return list(rows)
    return [dataclasses.replace(r, vs_baseline=r.texts_per_s / base.texts_per_s) for r in rows]


def _fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else pattern.format(value)


def markdown_table(rows: Sequence[Row], *, utilisation_label: str) -> str:
    lines = [
        f"| configuration | time (s) | texts/s | vs pipeline | padding | agreement with fp32 | {utilisation_label} |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.title} | {r.seconds:.2f} | {r.texts_per_s:.2f} | {_fmt(r.vs_baseline, '{:.2f}x')} | "
            f"{r.padding_fraction:.1%} | {_fmt(r.label_agreement, '{:.2%}')} | {_fmt(r.utilisation, '{:.0%}')} |"
        )
    return "\n".join(lines)


def fastest_within(rows: Sequence[Row], *, min_agreement: float = 0.99) -> Row | None:
    """The fastest structsent path whose labels agree with fp32 on at least ``min_agreement``."""
    eligible = [r for r in rows if r.name not in (BASELINE, "one-by-one", "fixed-32")
                and r.label_agreement is not None and r.label_agreement >= min_agreement]
    return max(eligible, key=lambda r: r.texts_per_s, default=None)


def write_json(path: Path, meta: dict, rows: Sequence[Row]) -> None:
    payload = {**meta, "results": [r.to_dict() for r in rows]}
    path.write_text(json.dumps(payload, ensure_ascii=False, indent=2), encoding="utf-8")


def write_chart(path: Path, rows: Sequence[Row], *, title: str) -> None:
    """Horizontal bars of texts/s, labelled with the ratio to the pipeline baseline."""
    fig = chart_figure(rows, title=title)  # (selects matplotlib's Agg backend before pyplot is imported)
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=120)
    plt.close(fig)


TITLE_CHARS = 100  # a title line's width at most, in characters: the figure is 9 inches wide


def chart_figure(rows: Sequence[Row], *, title: str):
    """The chart as a matplotlib figure. The title's lines are wrapped to the figure's width (the
    device line of an AVX-512 host, its ISA flags and load, ran past the image's edge), and the
    figure grows by the lines the wrapping adds."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [wrapped for line in title.split("\n")
             for wrapped in textwrap.wrap(line, TITLE_CHARS, break_long_words=True) or [""]]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.3 + 0.16 * len(lines)))
    names = [r.title for r in rows][::-1]
    speeds = [r.texts_per_s for r in rows][::-1]
    colours = ["#999999" if r.name in (BASELINE, "one-by-one", "fixed-32") else "#3b75af" for r in rows][::-1]
    bars = ax.barh(names, speeds, color=colours)
    for bar, row in zip(bars, list(rows)[::-1]):
        label = f" {row.texts_per_s:.2f}" + (f"  ({row.vs_baseline:.2f}x)" if row.vs_baseline else "")
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, label, va="center", fontsize=8)
    ax.set_xlabel("texts per second (higher is better)")
    fig.suptitle("\n".join(lines), fontsize=9)  # centred on the figure, not on the axes beside the names
    ax.set_xlim(0, max(speeds) * 1.3)
    fig.tight_layout()
    return fig
