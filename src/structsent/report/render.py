"""A Report -> one self-contained HTML page: inline CSS, inline SVG charts, one small inline script.

Nothing is fetched: no fonts, no CDN, no images. Every text from the file is HTML-escaped, and
the page's Content-Security-Policy lets only its own script and style (by their SHA-256) run, so
a review holding ``<script>`` is shown, never executed. Table rows are written into the HTML and
the script only sorts and filters them, so the page reads fine with scripts off too.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..lines import one_line, rows_in_words
from ..pages import FONTS, inline_hash
from .aggregate import Breakdown, GroupRow, LabelledRow, Period, Report, Tally
from .charts import Bar, Point, esc, histogram, horizontal_bars, share_line
from .groups import EMPTY_ROW, UNREADABLE_ROW

NEGATIVE_COLOR = "#c8553d"
COLORS = ("#2a9d8f", "#577590", "#e9a23b", "#8e6c8a", "#6a994e", "#bc6c25")

STYLE = """
body { font-family: %s; color: #1f2430; background: #f6f7f9; margin: 0; line-height: 1.45; }
main { max-width: 1100px; margin: 0 auto; padding: 24px; }
h1 { font-size: 1.6em; margin: 0 0 4px; } h2 { margin-top: 0; font-size: 1.25em; }
section { background: #fff; border: 1px solid #e1e4e8; border-radius: 8px; padding: 16px 20px; margin: 16px 0; }
nav a { margin-right: 14px; } .muted { color: #5d6675; font-size: .92em; }
dl.figures { display: flex; flex-wrap: wrap; gap: 12px; margin: 0; }
dl.figures div { background: #f0f2f5; border-radius: 6px; padding: 8px 14px; min-width: 120px; }
dl.figures dt { font-size: .85em; color: #5d6675; } dl.figures dd { margin: 0; font-size: 1.35em; font-weight: 600; }
table { border-collapse: collapse; width: 100%%; font-size: .93em; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #eceef1; vertical-align: top; }
th { background: #f0f2f5; position: sticky; top: 0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.text { max-width: 560px; overflow-wrap: anywhere; white-space: pre-wrap; }
td.group { max-width: 420px; overflow-wrap: anywhere; white-space: pre-wrap; }
th button { font: inherit; font-weight: 600; background: none; border: 0; padding: 0; cursor: pointer; color: inherit; }
th[aria-sort="ascending"] button::after { content: " ▲"; } th[aria-sort="descending"] button::after { content: " ▼"; }
.scroll { max-height: 560px; overflow: auto; border: 1px solid #eceef1; }
.tools { display: flex; gap: 12px; align-items: center; margin: 8px 0; }
.tools input { font: inherit; padding: 4px 8px; min-width: 280px; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; } figure { margin: 0; }
figcaption { font-size: .9em; color: #5d6675; } em.none { color: #8a93a2; }
svg.chart text { font-family: %s; font-size: 12px; fill: #3b4351; white-space: pre; } svg.chart text.tick { font-size: 11px; }
""" % (FONTS, FONTS)

SCRIPT = """
(function () {
  "use strict";
  function value(row, index, numeric) {
    var cell = row.cells[index];
    if (!numeric) { return cell.textContent.trim(); }
    var number = parseFloat(cell.getAttribute("data-value"));
    return isNaN(number) ? -Infinity : number;
  }
  function sortTable(table, index, descending) {
    var headers = table.tHead.rows[0].cells;
    var numeric = headers[index].classList.contains("num");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, index, numeric), y = value(b, index, numeric);
      var order = numeric ? (x < y ? -1 : x > y ? 1 : 0) : String(x).localeCompare(String(y), "zh-CN");
      return descending ? -order : order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    for (var i = 0; i < headers.length; i++) { headers[i].removeAttribute("aria-sort"); }
    headers[index].setAttribute("aria-sort", descending ? "descending" : "ascending");
  }
  // Only ASCII white space is cut from a query: trim() also cut U+3000, NBSP and U+2028, so a search
  // for such a character was a search for nothing, which shows every row.
  var ASCII_SPACE_AT_ENDS = /^[ \\t\\n\\r\\f]+|[ \\t\\n\\r\\f]+$/g;
  function filterTable(table, query) {
    var needle = query.replace(ASCII_SPACE_AT_ENDS, "").toLowerCase();
    var rows = table.tBodies[0].rows, shown = 0;
    for (var i = 0; i < rows.length; i++) {
      var hit = !needle || rows[i].textContent.toLowerCase().indexOf(needle) !== -1;
      rows[i].hidden = !hit;
      if (hit) { shown += 1; }
    }
    var count = document.getElementById(table.id + "-count");
    if (count) { count.textContent = shownCount(shown, rows.length); }
  }
  // As the page writes it before any search: "10,001 of 10,001 rows shown", "1 of 1 row shown".
  function shownCount(shown, total) {
    return shown.toLocaleString("en-US") + " of " + total.toLocaleString("en-US") + (total === 1 ? " row" : " rows")
      + " shown";
  }
  function wire(table) {
    var headers = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(headers, function (header, index) {
      var button = header.querySelector("button");
      if (!button) { return; }
      button.addEventListener("click", function () {
        sortTable(table, index, header.getAttribute("aria-sort") === "ascending");
      });
    });
    var search = document.getElementById(table.id + "-search");
    if (search) { search.addEventListener("input", function () { filterTable(table, search.value); }); }
  }
  // A link can open a view: #TABLE.q=TEXT searches, #TABLE.sort=COLUMN.desc sorts (column from 0).
  // Each "key=value" decoded as a URI component: URLSearchParams read "+" as a space (C++ became "C  ").
  function hashSettings() {
    var settings = [];
    window.location.hash.slice(1).split("&").forEach(function (pair) {
      var equals = pair.indexOf("=");
      if (equals < 1) { return; }
      try {
        settings.push([decodeURIComponent(pair.slice(0, equals)), decodeURIComponent(pair.slice(equals + 1))]);
      } catch (malformed) { /* a broken escape: that setting is ignored */ }
    });
    return settings;
  }
  function applyHash() {
    hashSettings().forEach(function (entry) {
      var key = entry[0], setting = entry[1];
      var dot = key.lastIndexOf(".");
      var table = document.getElementById(key.slice(0, dot));
      if (!table || table.tagName !== "TABLE") { return; }
      if (key.slice(dot + 1) === "q") {
        var search = document.getElementById(table.id + "-search");
        if (search) { search.value = setting; }
        filterTable(table, setting);
      } else if (key.slice(dot + 1) === "sort") {
        var parts = setting.split(".");
        var index = parseInt(parts[0], 10);
        if (index >= 0 && index < table.tHead.rows[0].cells.length) { sortTable(table, index, parts[1] === "desc"); }
      }
    });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.interactive"), wire);
  applyHash();
  window.addEventListener("hashchange", applyHash);  // a link to another view, followed on the open page
})();
"""


CSP = (f"default-src 'none'; script-src {inline_hash(SCRIPT)}; style-src {inline_hash(STYLE)}; "
       "img-src data:; base-uri 'none'; form-action 'none'")


def render_html(report: Report, *, source: str, text_column: str | None, figures: Mapping | None = None) -> str:
    """The whole page. ``source`` names the file; ``figures`` are the label job's (None: omitted)."""
    source = one_line(source)  # a name as it is: a right-to-left override showed the rest reversed
    colors = label_colors(report)
    sections = [
        _summary(report),
        _job_figures(figures) if figures else "",
        _labels(report, colors),
        _scores(report, colors),
        _least_certain(report, text_column),
        _flagged(report, text_column),
        _breakdown(report.breakdown, report, colors) if report.breakdown is not None else "",
    ]
    nav = [("summary", "Summary"), ("job", "Job") if figures else None, ("labels", "Labels"),
           ("scores", "Scores"), ("least-certain", "Least certain"), ("flagged", "Flagged"),
           ("groups", "By " + report.breakdown.column) if report.breakdown is not None else None]
    links = " ".join(f'<a href="#{anchor}">{esc(title)}</a>' for anchor, title in filter(None, nav))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Sentiment report: {esc(source)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n"
        f'<h1>Sentiment report</h1>\n<p class="muted">{esc(source)}</p>\n<nav>{links}</nav>\n'
        + "\n".join(s for s in sections if s)
        + '\n<p class="muted">Written by <code>structsent report</code>. This page loads nothing from the network.</p>\n'
        f"</main>\n<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )


def label_colors(report: Report) -> dict[str, str]:
    others = iter(COLORS * (len(report.labels) // len(COLORS) + 1))
    return {label: NEGATIVE_COLOR if label == report.negative else next(others) for label in report.labels}


# -- formatting -------------------------------------------------------------------------------------
def _count(n: int) -> str:
    return f"{n:,}"


def _percent(share: float | None) -> str:
    return "–" if share is None else f"{share:.1%}"


def _num_cell(shown: str, value: float | int | None, cell_id: str | None = None) -> str:
    ident = f' id="{cell_id}"' if cell_id else ""
    data = "" if value is None else f"{value!r}" if isinstance(value, float) else str(value)
    return f'<td class="num"{ident} data-value="{data}">{esc(shown)}</td>'


def _text_cell(text: str) -> str:
    if not text.strip():
        return '<td class="text"><em class="none">(no text)</em></td>'
    return f'<td class="text" lang="zh-CN">{esc(text)}</td>'


def _header(names: list[tuple[str, bool]], sortable: bool) -> str:
    cells = []
    for name, numeric in names:
        inner = f'<button type="button">{esc(name)}</button>' if sortable else esc(name)
        attributes = ' class="num" scope="col"' if numeric else ' scope="col"'
        cells.append(f"<th{attributes}>{inner}</th>")
    return f"<thead><tr>{''.join(cells)}</tr></thead>"


def _searchable(table_id: str, caption: str, header: str, rows: list[str]) -> str:
    """A table with a search box, sortable headers and a count of the rows shown."""
    return (
        f'<div class="tools"><input type="search" id="{table_id}-search" placeholder="Search" '
        f'aria-label="Search {esc(caption)}"><span class="muted" id="{table_id}-count">'
        f"{len(rows):,} of {len(rows):,} {'row' if len(rows) == 1 else 'rows'} shown</span></div>"
        f'<div class="scroll"><table class="interactive" id="{table_id}">{header}<tbody>{"".join(rows)}</tbody></table></div>'
    )


# -- sections ---------------------------------------------------------------------------------------
def _summary(report: Report) -> str:
    total = report.overall
    figures = [("Rows", _count(total.rows), "total-rows"), ("Labelled", _count(total.labelled), "labelled-rows"),
               ("Flagged", _count(total.flagged), "flagged-rows-total"),
               (f"{report.negative} share", _percent(total.share(report.negative)), "negative-share"),
               ("Mean score", "–" if total.mean_score is None else f"{total.mean_score:.3f}", "mean-score")]
    items = "".join(f'<div><dt>{esc(name)}</dt><dd id="{ident}">{esc(value)}</dd></div>' for name, value, ident in figures)
    return (f'<section id="summary"><h2>Summary</h2><dl class="figures">{items}</dl>'
            f'<p class="muted">Shares are of the labelled rows; the score of a row is the probability of its label. '
            f'The negative share is the share of <b>{esc(report.negative)}</b>.</p></section>')


def _job_figures(figures: Mapping) -> str:
    rows = []
    for key, value in list(_flatten(figures))[:200]:
        shown = _count(value) if isinstance(value, int) and not isinstance(value, bool) else (
            f"{value:,.4g}" if isinstance(value, float) else str(value))
        rows.append(f"<tr><th scope=\"row\">{esc(_cut_figure(key) or '(no name)')}</th>"
                    f"<td>{esc(_cut_figure(shown))}</td></tr>")
    return (f'<section id="job"><h2>The label job</h2><p class="muted">Figures the label job recorded.</p>'
            f'<table id="job-figures"><tbody>{"".join(rows)}</tbody></table></section>')


MAX_FIGURE_CHARS = 300  # a figure is a number or a short name; a summary file's 100,000-character value is cut


def _cut_figure(text: str) -> str:
    return text if len(text) <= MAX_FIGURE_CHARS else f"{text[:MAX_FIGURE_CHARS]}… ({len(text):,} characters)"


def _flatten(figures: Mapping, prefix: str = ""):
    for key, value in figures.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _labels(report: Report, colors: dict[str, str]) -> str:
    total = report.overall
    rows, bars = [], []
    for label in report.labels:
        count, share = total.labels.get(label, 0), total.share(label)
        rows.append(f'<tr data-label="{esc(label)}"><td>{esc(label)}</td>{_num_cell(_count(count), count)}'
                    f'{_num_cell(_percent(share), share)}{_num_cell(_percent(count / total.rows if total.rows else None), None)}</tr>')
        bars.append(Bar(label, share, f"{_percent(share)} ({count:,})", f"{label}: {rows_in_words(count)}", colors[label]))
    if total.flagged:
        rows.append(f'<tr class="flagged"><td><em>flagged (no label)</em></td>{_num_cell(_count(total.flagged), total.flagged)}'
                    f'<td class="num">–</td>{_num_cell(_percent(total.flagged / total.rows), None)}</tr>')
    header = _header([("Label", False), ("Rows", True), ("Share of labelled", True), ("Share of all rows", True)], False)
    return (f'<section id="labels"><h2>Labels</h2><table id="label-table">{header}<tbody>{"".join(rows)}</tbody></table>'
            f'<figure>{horizontal_bars(bars, label="Share of each label among labelled rows")}</figure></section>')


def _scores(report: Report, colors: dict[str, str]) -> str:
    figures = []
    for label in report.labels:
        counts = report.histograms[label]
        chart = histogram(counts, report.histogram_floor, label=f"Scores of rows labelled {label}", color=colors[label])
        figures.append(f"<figure>{chart}<figcaption>{esc(label)}: {rows_in_words(sum(counts))}</figcaption></figure>")
    return (f'<section id="scores"><h2>Scores by label</h2><p class="muted">How sure the model was: the probability '
            f'of the chosen label, from {report.histogram_floor:.2f} (a coin toss) to 1.</p>'
            f'<div class="charts">{"".join(figures)}</div></section>')


def _row_cells(row: LabelledRow, show_group: bool) -> str:
    number = _num_cell(_count(row.number), row.number)
    if not show_group:
        return number
    group = f'<em class="none">{row.group}</em>' if row.group in (EMPTY_ROW, UNREADABLE_ROW) else esc(row.group)
    return f'{number}<td class="group" lang="zh-CN">{group}</td>'


def _group_header(report: Report) -> list[tuple[str, bool]]:
    return [] if report.breakdown is None else [(report.breakdown.column, False)]


def _least_certain(report: Report, text_column: str | None) -> str:
    if not report.overall.labelled:  # it said "The 0 labelled rows with the lowest scores" over an empty table
        return ('<section id="least-certain"><h2>Least certain rows</h2>'
                '<p id="no-labelled">No row was labelled: there is no score to list.</p></section>')
    show_group = report.breakdown is not None
    rows = [
        f"<tr>{_row_cells(row, show_group)}<td>{esc(row.label)}</td>{_num_cell(f'{row.score:.4f}', row.score)}"
        f"{_text_cell(row.text)}</tr>"
        for row in report.least_certain
    ]
    names = [("Row", True)] + _group_header(report) + [
        ("Label", False), ("Score", True), (text_column or "text", False)]
    listed = "The labelled row with the lowest score" if len(rows) == 1 else (
        f"The {len(rows):,} labelled rows with the lowest scores")
    note = (f"{listed} (ties: earlier rows first). "
            "Click a column to sort; type to search.")
    return (f'<section id="least-certain"><h2>Least certain rows</h2><p class="muted">{esc(note)}</p>'
            f'{_searchable("least-certain-rows", "least certain rows", _header(names, True), rows)}</section>')


def _flagged(report: Report, text_column: str | None) -> str:
    total = report.overall
    if not total.flagged:
        return '<section id="flagged"><h2>Flagged rows</h2><p id="no-flagged">No row was flagged.</p></section>'
    kinds = [f"<tr><td>{esc(kind)}</td>{_num_cell(_count(count), count)}</tr>" for kind, count in report.error_kinds]
    if report.other_error_rows:
        kinds.append(f"<tr><td><em>other reasons</em></td>{_num_cell(_count(report.other_error_rows), report.other_error_rows)}</tr>")
    show_group = report.breakdown is not None
    sample = [f"<tr>{_row_cells(row, show_group)}<td>{esc(row.error)}</td>{_text_cell(row.text)}</tr>"
              for row in report.flagged_sample]
    names = [("Row", True)] + _group_header(report) + [
        ("Why", False), (text_column or "text", False)]
    return (
        f'<section id="flagged"><h2>Flagged rows</h2><p class="muted">{_have(total.flagged)} no label '
        f'({_percent(total.flagged / total.rows)}). Reasons, numbers shown as N:</p>'
        f'<table id="error-kinds">{_header([("Reason", False), ("Rows", True)], False)}<tbody>{"".join(kinds)}</tbody></table>'
        f'<h3>{"The flagged row" if len(sample) == 1 else f"The first {len(sample):,} flagged rows"}</h3>'
        f'{_searchable("flagged-rows", "flagged rows", _header(names, True), sample)}</section>'
    )


def _breakdown(breakdown: Breakdown, report: Report, colors: dict[str, str]) -> str:
    negative = report.negative
    names = [(_group_heading(breakdown), False), ("Rows", True), ("Flagged", True)]
    names += [(f"{label} share", True) for label in report.labels] + [("Mean score", True)]
    rows = [_group_row(group, report) for group in breakdown.groups if group.kind not in ("gap", "folded")]
    color = colors[negative]
    caption = f"Share of {negative} among labelled rows"
    if breakdown.period is None:
        charted = _charted_groups(breakdown.groups)
        bars = [Bar(g.name, g.tally.share(negative), f"{_percent(g.tally.share(negative))} of {g.tally.labelled:,}",
                    _tip(g, negative), color) for g in charted]
        chart = horizontal_bars(bars, label=f"{negative} share per {breakdown.column}")
        note = _value_note(breakdown)
        if len(charted) < len(breakdown.groups):
            caption += f" (the {MAX_CHART_BARS:,} largest groups and (other); the table lists all {len(rows):,})"
    else:
        points = [_period_point(g, negative) for g in breakdown.groups if g.kind in ("period", "gap", "folded")]
        chart = share_line(points, label=f"{negative} share per {breakdown.period.value}", color=color)
        note = _period_note(breakdown, breakdown.period.value)
    return (
        f'<section id="groups"><h2>By {esc(breakdown.column)}</h2><p class="muted">{esc(note)}</p>'
        f'<figure>{chart}<figcaption>{esc(caption)}</figcaption></figure>'
        f'{_searchable("group-table", "groups", _header(names, True), rows)}</section>'
    )


MAX_CHART_BARS = 200  # past it a chart is a scroll of bars (10,000 groups: a page 240,000 pixels tall)


def _charted_groups(groups: list[GroupRow]) -> list[GroupRow]:
    """The groups the chart shows: the first MAX_CHART_BARS (the largest) and the (other) row."""
    if len(groups) <= MAX_CHART_BARS + 1:
        return groups
    return groups[:MAX_CHART_BARS] + [g for g in groups[MAX_CHART_BARS:] if g.kind == "other"]


def _group_heading(breakdown: Breakdown) -> str:
    if breakdown.period is None:
        return breakdown.column
    return {Period.DAY: "Day", Period.WEEK: "Week (from Monday)", Period.MONTH: "Month"}[breakdown.period]


def _group_row(group: GroupRow, report: Report) -> str:
    tally: Tally = group.tally
    name = esc(group.name)
    name = f"<em>{name}</em>" if group.kind in ("empty", "unreadable", "other", "undated") else name
    cells = [f'<td class="group" lang="zh-CN">{name}</td>', _num_cell(_count(tally.rows), tally.rows),
             _num_cell(_count(tally.flagged), tally.flagged)]
    cells += [_num_cell(_percent(tally.share(label)), tally.share(label)) for label in report.labels]
    mean = tally.mean_score
    cells.append(_num_cell("–" if mean is None else f"{mean:.3f}", mean))
    return f'<tr data-kind="{group.kind}">{"".join(cells)}</tr>'


def _tip(group: GroupRow, negative: str) -> str:
    tally = group.tally
    return (f"{group.name}: {tally.labels.get(negative, 0):,} {negative} of {tally.labelled:,} labelled "
            f"({_percent(tally.share(negative))}), {tally.flagged:,} flagged")


def _period_point(group: GroupRow, negative: str) -> Point:
    if group.kind == "gap":  # a stretch without rows takes one slot, not one per period
        return Point("…", None, f"No rows from {group.name}", gap=True)
    if group.kind == "folded":  # as one slot too: its rows are counted in "other dates"
        return Point("…", None, f"From {group.name}: periods with few rows, counted in other dates", gap=True)
    return Point(group.name, group.tally.share(negative), _tip(group, negative))


def _period_note(breakdown: Breakdown, period: str) -> str:
    note = (f"Values of {breakdown.column} read as dates (ISO, the day as written), one point per {period}; "
            f"a {period} without labelled rows breaks the line. Only {period}s with rows are listed, and the "
            f"empty ones among the bulk of the dates where they are not many more than those with rows; any "
            f"other stretch without rows is one dashed mark")
    if any(g.kind == "other" for g in breakdown.groups):
        listed = sum(g.kind == "period" for g in breakdown.groups)
        note += f"; past {listed:,} {period}s, those with the fewest rows are added up as other dates"
    return note + "."


def _value_note(breakdown: Breakdown) -> str:
    listed = sum(g.kind != 'other' for g in breakdown.groups)
    if breakdown.recounted:
        return _recounted_note(breakdown, listed)
    note = f"The {listed:,} largest groups by rows"
    if breakdown.untracked_rows:  # a value first seen after those tracked is not ranked: say so first
        note = f"The {listed:,} largest by rows of the first distinct values seen"
    if breakdown.other_values or breakdown.untracked_rows:
        note += f"; (other): {breakdown.other_values:,} smaller values"
        if breakdown.untracked_rows:
            note += f", and {breakdown.untracked_rows:,} rows of values seen after the first distinct ones tracked"
    return note + "."


def _recounted_note(breakdown: Breakdown, listed: int) -> str:
    """The values were too many to count each: the likely largest were found in one read of the
    file and counted exactly in a second. Whether a value not listed can outnumber one listed."""
    bound = breakdown.unlisted_at_most
    note = (f"The {listed:,} largest groups by rows, counted exactly in a second read of the file (it holds more "
            f"distinct values than are counted one by one); any value not among the likely largest has at most "
            f"{rows_in_words(bound)}")
    smallest = min((g.tally.rows for g in breakdown.groups if g.kind != "other"), default=0)
    if smallest < bound:
        note += (f". That is an upper bound, not a count (the values not listed may all have far fewer rows), but "
                 f"it is above the smallest group listed ({rows_in_words(smallest)}): a value larger than that "
                 "one may be missing here")
    return note + "; (other): every other value."


def _have(count: int) -> str:
    """"1 row has", "3 rows have"."""
    return f"{rows_in_words(count)} {'has' if count == 1 else 'have'}"
