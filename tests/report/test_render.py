"""The page: every text from the file escaped, nothing external, only its own script may run."""

import base64
import dataclasses
import hashlib
import html
import json
import re
from html.parser import HTMLParser

import pytest

from structsent.errors import OutputWriteError
from structsent.pages import FONTS
from structsent.report import write_report

from .conftest import HOSTILE, write_labelled

EVIL_LABEL = "<svg onload=alert(3)>"
EVIL_COLUMN = "</td><script>alert(4)</script>"
EVIL_ERROR = "<iframe src=javascript:alert(5)>"
ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "h3", "p", "nav", "a",
                "section", "dl", "div", "dt", "dd", "b", "em", "code", "table", "thead", "tbody", "tr", "th", "td",
                "button", "input", "span", "figure", "figcaption", "svg", "line", "rect", "text", "title",
                "polyline", "circle", "script"}


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.scripts, self.handlers, self.urls = [], [], [], []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_script = tag == "script"
        self.handlers += [name for name, _ in attrs if name.startswith("on")]
        self.urls += [value for name, value in attrs if name in ("src", "href") and not value.startswith("#")]

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)

    def handle_endtag(self, tag):
        self._in_script = False


@pytest.fixture()
def hostile_report(tmp_path):
    """A labelled file whose texts, group values, column name, label and error all hold markup."""
    path = tmp_path / "hostile.jsonl"
    rows = []
    for i in range(6):
        label = EVIL_LABEL if i % 2 else "负面"
        rows.append({"text": HOSTILE[i % 2], EVIL_COLUMN: HOSTILE[1 - i % 2], "label": label, "score": 0.6 + i / 20,
                     "prob_负面": 0.5, f"prob_{EVIL_LABEL}": 0.5, "error": None})
    rows.append({"text": HOSTILE[0], EVIL_COLUMN: "x", "label": None, "score": None, "prob_负面": None,
                 f"prob_{EVIL_LABEL}": None, "error": EVIL_ERROR})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "report.html"
    write_report(str(path), str(out), by=EVIL_COLUMN)
    return out.read_text(encoding="utf-8")


def test_text_from_the_file_is_escaped_everywhere(hostile_report):
    parser = Tags()
    parser.feed(hostile_report)
    assert set(parser.tags) <= ALLOWED_TAGS, set(parser.tags) - ALLOWED_TAGS
    assert parser.tags.count("script") == 1 and parser.handlers == [] and parser.urls == []
    for evil in (*HOSTILE, EVIL_LABEL, EVIL_COLUMN, EVIL_ERROR):
        assert evil not in hostile_report
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in hostile_report
    assert "&lt;svg onload=alert(3)&gt;" in hostile_report
    assert "&lt;iframe src=javascript:alert(5)&gt;" in hostile_report


def test_only_the_page_script_and_style_may_run(hostile_report):
    parser = Tags()
    parser.feed(hostile_report)
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', hostile_report)[1]
    digest = base64.b64encode(hashlib.sha256(parser.scripts[0].encode("utf-8")).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy and "default-src 'none'" in policy
    assert "unsafe-inline" not in policy


def test_nothing_is_loaded_from_elsewhere_and_cjk_fonts_are_named(hostile_report):
    assert re.findall(r"https?://[^\s\"']+", hostile_report) == ["http://www.w3.org/2000/svg"] * hostile_report.count("<svg")
    assert "@import" not in hostile_report and "url(" not in hostile_report
    for font in ("Noto Sans CJK SC", "Source Han Sans SC", "PingFang SC", "Microsoft YaHei"):
        assert font in FONTS
    assert f"font-family: {FONTS}" in hostile_report


def test_job_figures_shown_only_when_there_are_some(tmp_path, labelled_file):
    out = tmp_path / "r.html"
    write_report(str(labelled_file), str(out))
    assert 'id="job"' not in out.read_text(encoding="utf-8")
    sidecar = tmp_path / "job.json"
    sidecar.write_text(json.dumps({"rows": 40, "flagged": 5, "rows_per_second": 123.5, "labels": {"负面": 17}}))
    write_report(str(labelled_file), str(out), job_summary=str(sidecar), overwrite=True)
    page = out.read_text(encoding="utf-8")
    assert 'id="job"' in page and "<th scope=\"row\">labels.负面</th><td>17</td>" in page and "123.5" in page
    write_report(str(labelled_file), str(out), job_figures={"duplicates": 1234}, overwrite=True)
    assert "<th scope=\"row\">duplicates</th><td>1,234</td>" in out.read_text(encoding="utf-8")
    # a summary file's huge value or list is cut (it was shown whole), an empty name said
    write_report(str(labelled_file), str(out), job_figures={"note": "长" * 100_000, "ids": list(range(10_000)),
                                                            "": 3}, overwrite=True)
    page = out.read_text(encoding="utf-8")
    assert "长" * 300 + "… (100,000 characters)</td>" in page and "长" * 301 not in page
    assert "<th scope=\"row\">ids</th><td>[0, 1, 2," in page and "9999" not in page
    assert "<th scope=\"row\">(no name)</th><td>3</td>" in page


def test_the_sidecar_next_to_the_file_is_found(tmp_path, labelled_sample):
    labelled = tmp_path / "out.csv"
    write_labelled(labelled, "csv", labelled_sample)
    (tmp_path / "out.csv.summary.json").write_text('{"rows_per_second": 97.25}', encoding="utf-8")
    write_report(str(labelled), str(tmp_path / "r.html"))
    assert "<th scope=\"row\">rows_per_second</th><td>97.25</td>" in (tmp_path / "r.html").read_text(encoding="utf-8")


def test_sentinel_dates_keep_the_page_small(tmp_path, labelled_sample):
    """A first and a last possible date among dates of one week: a few periods, not millions."""
    data = dataclasses.replace(labelled_sample, rows=list(labelled_sample.rows))
    for i, row in enumerate(data.rows):
        date = {0: "0001-01-01", 39: "9999-12-31"}.get(i, f"2024-05-0{1 + i % 7}")
        data.rows[i] = dataclasses.replace(row, values={**row.values, "date": date})
    labelled = tmp_path / "sentinels.csv"
    write_labelled(labelled, "csv", data)
    out = tmp_path / "r.html"
    write_report(str(labelled), str(out), by="date", by_period="month")
    page = out.read_text(encoding="utf-8")
    assert len(page.encode("utf-8")) < 100_000
    table = page[page.index('id="group-table"'):]
    assert re.findall(r'data-kind="period"><td[^>]*>([^<]+)<', table) == ["0001-01", "2024-05", "9999-12"]
    assert "No rows from 0001-02 to 2024-04" in page  # the stretch skipped, named on the chart


def test_control_characters_from_the_file_never_reach_the_page(tmp_path):
    """NUL and the other characters HTML does not allow are shown as U+FFFD (texts, groups, errors)."""
    bad = "坏\x00了\x01\x1b\x7f\x85"
    path = tmp_path / "ctl.jsonl"
    rows = [{"text": f"{bad}{i}", "shop": bad, "label": "负面", "score": 0.6, "prob_负面": 0.6, "prob_正面": 0.4,
             "error": None} for i in range(3)]
    rows.append({"text": bad, "shop": bad, "label": None, "score": None, "prob_负面": None, "prob_正面": None,
                 "error": f"flagged {bad}"})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "report.html"
    write_report(str(path), str(out), by="shop")
    page = out.read_text(encoding="utf-8")
    assert not any(ch in page for ch in "\x00\x01\x1b\x7f\x85")
    assert "坏\ufffd了\ufffd\ufffd\ufffd\ufffd0" in page


@pytest.mark.parametrize(("labelled", "says"), [
    (0, '<p id="no-labelled">No row was labelled: there is no score to list.</p>'),  # not "The 0 labelled rows"
    (1, "The labelled row with the lowest score (ties: earlier rows first)."),
    (2, "The 2 labelled rows with the lowest scores (ties: earlier rows first)."),
])
def test_the_least_certain_rows_are_counted_in_words(tmp_path, labelled, says):
    path = tmp_path / "labelled.jsonl"
    flagged = {"text": "", "label": None, "score": None, "prob_负面": None, "prob_正面": None, "error": "empty text"}
    rows = [flagged] + [{"text": f"好{i}", "label": "正面", "score": 0.9, "prob_负面": 0.1, "prob_正面": 0.9,
                         "error": None} for i in range(labelled)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    write_report(str(path), str(tmp_path / "report.html"))
    section = (tmp_path / "report.html").read_text(encoding="utf-8").split('<section id="least-certain">', 1)[1]
    assert says in section.split("</section>", 1)[0]


def test_one_row_is_said_as_one_row(tmp_path):
    # "1 rows have no label", "正面: 1 rows".
    path = tmp_path / "labelled.jsonl"
    rows = [{"text": "", "label": None, "score": None, "prob_负面": None, "prob_正面": None, "error": "empty text"},
            {"text": "好", "label": "正面", "score": 0.9, "prob_负面": 0.1, "prob_正面": 0.9, "error": None}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    write_report(str(path), str(tmp_path / "report.html"))
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "1 row has no label" in page and "正面: 1 row<" in page and "正面: 1 row</figcaption>" in page
    assert not re.search(r"\b1 rows\b", page) and "1 of 1 row shown" in page  # the search's count too


@pytest.mark.parametrize("stop", [KeyboardInterrupt, OSError(28, "No space left on device")])
def test_a_page_stopped_while_it_is_written_leaves_no_temporary_file(tmp_path, monkeypatch, stop):
    """Only an OSError removed the temporary page: SIGTERM (raised as an interrupt) during the sync
    left .report.html.PID.tmp beside the report."""
    import structsent.report as report

    def failing_fsync(fd):
        raise stop

    monkeypatch.setattr(report.os, "fsync", failing_fsync)
    with pytest.raises((KeyboardInterrupt, OutputWriteError)):  # (a full disk: exit 1, as the label job's)
        report._write_atomically(tmp_path / "report.html", b"<html></html>")
    assert list(tmp_path.iterdir()) == []


def test_every_group_is_shown_by_a_name_of_its_own(tmp_path):
    """ " a", "a  " and "a" were one row "a" of the group table, "   " was in "(empty)", and a value
    "other" or "(empty)" was told from the rows the report adds only by italics."""
    from .test_aggregate import exact_values_file

    out = tmp_path / "report.html"
    write_report(str(exact_values_file(tmp_path, "csv")), str(out), by="shop", max_groups=8)
    page = out.read_text(encoding="utf-8")
    table = page[page.index('id="group-table"'):]
    cells = re.findall(r'<tr data-kind="(\w+)"><td[^>]*>(.*?)</td>', table)
    names = [html.unescape(re.sub("<[^>]+>", "", name)) for _, name in cells]
    assert len(cells) == 8 + 1 and len(set(names)) == len(names)  # eight groups and the rest
    assert {kind for kind, _ in cells} == {"value", "empty", "other"}
    built_in = {name for (kind, _), name in zip(cells, names) if kind != "value"}
    assert built_in == {"(empty)", "(other)"} and {'"(empty)"', '"(other)"'} <= set(names)  # the values
    assert ' a' not in names and '" a"' in names and '"   "' in names


@pytest.mark.parametrize(("late", "missing"), [(3_000, False), (0, True)])  # 0: 30,040 values of 1 row
def test_groups_counted_in_a_second_read_say_so_and_what_may_be_missing(tmp_path, late, missing):
    """Past 10,000 distinct values the page said the groups were "the largest ... of the first distinct
    values seen"; they are now found and counted exactly, and the page says whether a value not listed
    can outnumber one listed (only where the listed ones are as small as the bound)."""
    path = tmp_path / "labelled.jsonl"
    shops = [f"u{i}" for i in range(10_000)] + [f"w{i % 3}" for i in range(late)] + [f"x{i}" for i in range(40)]
    if not late:  # every value once: the bound grows past the rows of any value listed
        shops += [f"z{i}" for i in range(20_000)]
    path.write_text("".join(json.dumps({"text": "好", "shop": shop, "label": "正面", "score": 0.9, "prob_负面": 0.1,
                                        "prob_正面": 0.9, "error": None}) + "\n" for shop in shops), encoding="utf-8")
    write_report(str(path), str(tmp_path / "report.html"), by="shop", max_groups=3)
    page = " ".join(html.unescape((tmp_path / "report.html").read_text(encoding="utf-8")).split())
    assert "The 3 largest groups by rows, counted exactly in a second read of the file" in page
    assert "first distinct values seen" not in page
    assert ("is above the smallest group listed (1 row): a value larger than that one may be missing" in page) is missing
    if late:
        assert all(f">w{i}<" in page for i in range(3)) and ">1,000<" in page.replace(" rows", "")


def test_the_group_chart_stops_at_its_bars_while_the_table_lists_every_group(tmp_path):
    """--max-groups 10000 drew 10,000 bars: a page 240,000 pixels tall."""
    from structsent.report.render import MAX_CHART_BARS

    path = tmp_path / "labelled.jsonl"
    shops = [f"g{i:03d}" for i in range(250)] * 2 + [f"g{i:03d}" for i in range(250, 400)]
    path.write_text("".join(json.dumps({"text": "好", "shop": shop, "label": "正面", "score": 0.9, "prob_负面": 0.1,
                                        "prob_正面": 0.9, "error": None}) + "\n" for shop in shops), encoding="utf-8")
    write_report(str(path), str(tmp_path / "report.html"), by="shop", max_groups=300)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    section = page[page.index('<section id="groups">'):]
    chart, table = section[:section.index("</figure>")], section[section.index("</figure>"):]
    assert MAX_CHART_BARS == 200
    assert "g199" in chart and "g200" not in chart and "(other)" in chart  # the largest (by rows, then name)
    assert "the 200 largest groups and (other); the table lists all 301" in chart
    assert all(f">g{i:03d}<" in table for i in range(300)) and "(other)" in table


def test_a_file_name_with_a_right_to_left_override_is_shown_as_it_is(tmp_path):
    """The name was written raw into the title and the heading, the rest of it shown reversed."""
    path = tmp_path / "reviews\u202elsonj.jsonl"
    path.write_text(json.dumps({"text": "好", "label": "正面", "score": 0.9, "prob_负面": 0.1, "prob_正面": 0.9,
                                "error": None}) + "\n", encoding="utf-8")
    write_report(str(path), str(tmp_path / "report.html"))
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "\u202e" not in page and "reviews\\u202elsonj.jsonl" in page
