"""The page in a real browser (headless Chromium): the numbers it shows, search and sort working.

Skipped when no Chromium is installed (Debian: apt-get install chromium fonts-noto-cjk).
"""

import shutil
import subprocess
from html.parser import HTMLParser
from urllib.parse import quote

import numpy as np
import pytest

from structsent.io.readers import InputRow
from structsent.report import write_report
from structsent.results import to_result

from .conftest import LABELS, Sample, write_labelled

BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(BROWSER is None, reason="no chromium on PATH (Debian: apt-get install chromium fonts-noto-cjk)"),
]


class Dom(HTMLParser):
    """Texts of elements by id, and the rows of every table: (hidden, cell texts)."""

    def __init__(self):
        super().__init__()
        self.by_id, self.tables, self.attrs_by_id = {}, {}, {}
        self._open_ids, self._table, self._row, self._cell = [], None, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.attrs_by_id[attrs["id"]] = attrs
            self._open_ids.append((tag, attrs["id"]))
            self.by_id[attrs["id"]] = ""
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id"), {"head": [], "rows": []})
        elif tag == "tr" and self._table is not None:
            self._row = ["hidden" in attrs, []]
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""
            self._row[1].append(attrs)

    def handle_data(self, data):
        for _, ident in self._open_ids:
            self.by_id[ident] += data
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if self._open_ids and self._open_ids[-1][0] == tag:
            self._open_ids.pop()
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row[1][-1] = (self._row[1][-1], self._cell.strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            hidden, cells = self._row
            if all(isinstance(c, tuple) and c[0].get("scope") == "col" for c in cells):
                self._table["head"] = cells
            else:
                self._table["rows"].append((hidden, [text for _, text in cells]))
            self._row = None
        elif tag == "table":
            self._table = None


def rendered(page, fragment: str) -> Dom:
    url = page.as_uri() + "#" + fragment
    proc = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=2000",
                           "--dump-dom", url], capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = Dom()
    dom.feed(proc.stdout)
    return dom


def test_numbers_search_and_sort_in_the_browser(tmp_path, labelled_csv, labelled_sample):
    page = tmp_path / "report.html"
    write_report(str(labelled_csv), str(page), by="category")
    dom = rendered(page, f"least-certain-rows.q={quote('外卖')}&group-table.sort=1&flagged-rows.sort=0.desc")

    results = labelled_sample.results
    assert dom.by_id["total-rows"] == "40" and dom.by_id["flagged-rows-total"] == "5"
    label_rows = {cells[0]: cells[1] for _, cells in dom.tables["label-table"]["rows"]}
    for label in ("负面", "正面"):
        assert label_rows[label] == str(sum(r.label == label for r in results))

    # search: only the least-certain rows of category 外卖 stay visible, and the count says so
    takeaway = [i for i in labelled_sample.labelled if labelled_sample.rows[i].values["category"] == "外卖"]
    visible = [cells for hidden, cells in dom.tables["least-certain-rows"]["rows"] if not hidden]
    assert sorted(int(cells[0]) for cells in visible) == [i + 1 for i in takeaway]
    assert dom.by_id["least-certain-rows-count"] == f"{len(takeaway)} of 35 rows shown"

    # sort: groups by rows, smallest first (the page lists them largest first); flagged rows last first
    group_rows = [int(cells[1]) for _, cells in dom.tables["group-table"]["rows"]]
    assert group_rows == sorted(group_rows) and sum(group_rows) == 40
    head = dom.tables["group-table"]["head"]
    assert head[1][0].get("aria-sort") == "ascending"
    flagged = [int(cells[0]) for _, cells in dom.tables["flagged-rows"]["rows"]]
    assert flagged == sorted((i + 1 for i in labelled_sample.flagged), reverse=True)


@pytest.mark.parametrize(
    ("query", "shown"),
    [("\u3000", [2]), ("\u00a0", [3]), ("\u2028", [4]),
     (" \t好\n", [1, 2, 3])],  # ASCII white space at its ends is still cut
)
def test_a_search_for_white_space_other_than_ascii_matches_as_typed(tmp_path, query, shown):
    """The search trim()med its query: one of U+3000, NBSP or U+2028 alone became empty and showed every row."""
    texts = ["好吃", "好\u3000吃", "很\u00a0好", "差\u2028评", "一般"]
    rows = [InputRow(i + 1, {"id": f"r{i}", "text": text}, text) for i, text in enumerate(texts)]
    results = [to_result(np.array([0.3 + 0.1 * i, 0.7 - 0.1 * i]), LABELS) for i in range(len(texts))]
    labelled, page = tmp_path / "labelled.jsonl", tmp_path / "report.html"
    write_labelled(labelled, "jsonl", Sample(rows, results))
    write_report(str(labelled), str(page))
    dom = rendered(page, f"least-certain-rows.q={quote(query)}")
    visible = [int(cells[0]) for hidden, cells in dom.tables["least-certain-rows"]["rows"] if not hidden]
    assert sorted(visible) == shown
    assert dom.by_id["least-certain-rows-count"] == f"{len(shown)} of {len(texts)} rows shown"


def test_counts_read_as_the_page_writes_them_and_a_link_followed_on_the_open_page_applies(tmp_path):
    """After a search the count lost its separators ("111 of 10001 rows shown", the page wrote "10,001 of
    10,001"); "+" in a link's query became a space (URLSearchParams); a link to another view followed on
    the open page did nothing (no hashchange listener)."""
    from ..server.chromium import Chromium

    texts = [("C++ 很好" if i % 3 == 0 else "一般") + str(i) for i in range(1_200)]
    rows = [InputRow(i + 1, {"id": f"r{i}", "text": text}, text) for i, text in enumerate(texts)]
    results = [to_result(np.array([0.45, 0.55]), LABELS) for _ in texts]
    labelled, page = tmp_path / "labelled.jsonl", tmp_path / "report.html"
    write_labelled(labelled, "jsonl", Sample(rows, results))
    write_report(str(labelled), str(page), least_certain=2_000)
    dom = rendered(page, "least-certain-rows.q=C++")
    visible = [int(cells[0].replace(",", "")) for hidden, cells in dom.tables["least-certain-rows"]["rows"] if not hidden]
    assert sorted(visible) == [i + 1 for i in range(0, 1_200, 3)]
    assert dom.by_id["least-certain-rows-count"] == "400 of 1,200 rows shown"
    browser = Chromium(tmp_path / "profile")
    try:
        browser.open(page.as_uri())
        count = "document.getElementById('least-certain-rows-count').textContent"
        assert browser.evaluate(count) == "1,200 of 1,200 rows shown"
        browser.evaluate("location.hash = 'least-certain-rows.q=' + encodeURIComponent('一般11')")
        matching = sum("一般11" in text for text in texts)
        assert browser.wait_for(f"{count} !== '1,200 of 1,200 rows shown' && {count}") == f"{matching} of 1,200 rows shown"
    finally:
        browser.close()
