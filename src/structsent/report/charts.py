"""Charts as inline SVG, written by hand: bars and a line, no plotting library.

Every text that reaches a chart (labels, group names) goes through ``esc``; shapes carry a
``<title>`` so a pointer over a bar shows its exact numbers.
"""

from __future__ import annotations

import dataclasses
import html
from collections import Counter
from collections.abc import Sequence

from ..lines import rows_in_words

GRID = "#d0d4da"
INK = "#3b4351"


# Characters HTML does not allow in a page (NUL and the other C0 controls but tab, newline, form
# feed and carriage return; DEL and the C1 controls): shown as U+FFFD, as a browser would show NUL.
_NOT_IN_HTML = {code: "\ufffd" for code in [*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), *range(0x7F, 0xA0),
                                              *range(0xD800, 0xE000)]}  # and lone surrogates, which UTF-8 cannot hold


def esc(value: object) -> str:
    return html.escape(str(value), quote=True).translate(_NOT_IN_HTML)


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def distinct_labels(names: Sequence[str], limit: int) -> list[str]:
    """Each name cut to ``limit`` characters, and those that would then read alike followed by their
    position ("外卖外卖… [3]"), so no two of distinct names carry one label."""
    labels = [shorten(name, limit) for name in names]
    tagged: set[int] = set()
    while True:  # a tagged label may meet another name as written: tag that one too (no tag ends another)
        counts = Counter(labels)
        alike = {i for i, label in enumerate(labels) if counts[label] > 1} - tagged
        if not alike:
            return labels
        for i in alike:
            tag = f" [{i + 1}]"
            labels[i] = shorten(names[i], limit - len(tag)) + tag
        tagged |= alike


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'role="img" aria-label="{esc(label)}" xmlns="http://www.w3.org/2000/svg">{"".join(body)}</svg>')


def histogram(counts: Sequence[int], low: float, *, label: str, color: str) -> str:
    """Vertical bars of ``counts`` over equal bins of [low, 1]."""
    width, height, left, right, top, bottom = 360, 170, 46, 10, 12, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(counts, default=0) or 1
    step = (1.0 - low) / max(len(counts), 1)
    bar_w = plot_w / max(len(counts), 1)
    body = [f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" stroke="{INK}"/>']
    for i, count in enumerate(counts):
        bar_h = plot_h * count / peak
        x, y = left + i * bar_w, top + plot_h - bar_h
        tip = f"{low + i * step:.3f}–{low + (i + 1) * step:.3f}: {rows_in_words(count)}"
        body.append(f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" height="{bar_h:.1f}" '
                    f'fill="{color}"><title>{esc(tip)}</title></rect>')
    body.append(f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" class="tick">{peak:,}</text>')
    body.append(f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" class="tick">0</text>')
    for fraction in (0.0, 0.5, 1.0):
        x = left + plot_w * fraction
        body.append(f'<text x="{x:.1f}" y="{height - 12}" text-anchor="middle" class="tick">'
                    f'{low + (1.0 - low) * fraction:.2f}</text>')
    return _svg(width, height, label, body)


@dataclasses.dataclass(frozen=True)
class Bar:
    name: str
    fraction: float | None  # 0..1; None: nothing to draw (no labelled rows)
    caption: str  # shown after the bar
    tip: str  # shown on hover
    color: str


def horizontal_bars(bars: Sequence[Bar], *, label: str, name_chars: int = 22) -> str:
    """One bar per item, its length the fraction of the full width (shares, 0-100%)."""
    row_h, left, plot_w, right = 24, 170, 320, 110
    width, height = left + plot_w + right, row_h * len(bars) + 26
    body = []
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + plot_w * fraction
        body.append(f'<line x1="{x:.1f}" y1="4" x2="{x:.1f}" y2="{height - 22}" stroke="{GRID}"/>')
        body.append(f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle" class="tick">{fraction:.0%}</text>')
    labels = distinct_labels([bar.name for bar in bars], name_chars)
    for i, (bar, name) in enumerate(zip(bars, labels)):
        y = 6 + i * row_h
        body.append(f'<text x="{left - 8}" y="{y + 14}" text-anchor="end" class="name">'
                    f'<title>{esc(bar.name)}</title>{esc(name)}</text>')
        bar_w = 0.0 if bar.fraction is None else plot_w * bar.fraction
        body.append(f'<rect x="{left}" y="{y + 2}" width="{bar_w:.1f}" height="{row_h - 8}" fill="{bar.color}">'
                    f'<title>{esc(bar.tip)}</title></rect>')
        body.append(f'<text x="{left + bar_w + 6:.1f}" y="{y + 14}" class="value">{esc(bar.caption)}</text>')
    return _svg(width, height, label, body)


@dataclasses.dataclass(frozen=True)
class Point:
    name: str  # the period
    share: float | None  # None: no labelled rows in the period (the line breaks)
    tip: str
    gap: bool = False  # a stretch of periods without rows, drawn as one dashed mark


def share_line(points: Sequence[Point], *, label: str, color: str) -> str:
    """A share (0-100%) over evenly spaced periods; empty periods and gaps break the line."""
    width, height, left, right, top, bottom = 780, 240, 46, 40, 12, 42
    plot_w, plot_h = width - left - right, height - top - bottom
    step = plot_w / max(len(points) - 1, 1)
    body = []
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + plot_h * (1 - fraction)
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="{GRID}"/>')
        body.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{fraction:.0%}</text>')
    segments: list[list[tuple[float, float]]] = [[]]
    for i, point in enumerate(points):
        if point.share is None:
            segments.append([])
        else:
            segments[-1].append((left + i * step, top + plot_h * (1 - point.share)))
    for segment in segments:
        if len(segment) > 1:
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in segment)
            body.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>')
    for i, point in enumerate(points):
        if point.gap:
            x = left + i * step
            body.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="{INK}" '
                        f'stroke-dasharray="3 3"><title>{esc(point.tip)}</title></line>')
    radius = 3 if len(points) <= 120 else 1.5
    for i, point in enumerate(points):
        if point.share is not None:
            x, y = left + i * step, top + plot_h * (1 - point.share)
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius}" fill="{color}"><title>{esc(point.tip)}</title></circle>')
    for i in _tick_indices(len(points), 7):
        body.append(f'<text x="{left + i * step:.1f}" y="{height - 18}" text-anchor="middle" class="tick">'
                    f'{esc(points[i].name)}</text>')
    return _svg(width, height, label, body)


def _tick_indices(count: int, most: int) -> list[int]:
    if count <= most:
        return list(range(count))
    return sorted({round(i * (count - 1) / (most - 1)) for i in range(most)})
