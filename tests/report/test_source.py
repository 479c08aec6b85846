"""Reading labelled files: every format, the added columns found, bad records flagged not fatal."""

import csv
import dataclasses
import json

import pytest

from structsent.errors import BadInputError, NoSuchColumnError
from structsent.report import ReportSummary, build_report, write_report
from structsent.report.source import UNREADABLE, find_label_columns, open_labelled, read_job_figures

from .conftest import LABELS, Sample, sample, write_labelled


def test_rows_come_back_as_written_in_every_format(labelled_file, labelled_sample):
    file = open_labelled(str(labelled_file), by="category")
    rows = list(file.rows())
    assert file.columns.labels == LABELS and file.text_column == "text"
    assert [r.number for r in rows] == list(range(1, 41))
    for i, row in enumerate(rows):
        result = labelled_sample.results[i]
        assert row.label == result.label and row.error == result.error
        assert row.score == labelled_sample.written_score(i)
        assert row.text == labelled_sample.rows[i].text
        assert row.group == labelled_sample.rows[i].values["category"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_prefixed_columns_after_an_input_label_column(tmp_path, fmt):
    data = sample()
    for row in data.rows:
        row.values["label"] = "人工标注"  # the input's own column, which forced --prefix
    path = tmp_path / f"out.{fmt}"
    write_labelled(path, fmt, data, prefix="pred_")
    file = open_labelled(str(path))
    assert file.columns.prefix == "pred_" and "label" in file.columns.input_columns
    assert [r.label for r in file.rows()] == [r.label for r in data.results]


def test_an_input_column_named_prob_something_is_the_inputs_not_a_label(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("id,text,prob_spam,label,score,prob_负面,prob_正面,error\n"
                    "1,很好吃,high,正面,0.97,0.03,0.97,\n2,太差了,low,负面,0.97,0.97,0.03,\n", encoding="utf-8")
    file = open_labelled(str(path))
    assert file.columns.labels == ("负面", "正面") and file.columns.input_columns == ("id", "text", "prob_spam")
    assert [(r.label, r.error) for r in file.rows()] == [("正面", None), ("负面", None)]


def test_json_lines_fields_of_later_rows_are_columns_when_the_first_row_lacks_them(tmp_path):
    tail = '"label": null, "score": null, "prob_负面": null, "prob_正面": null, "error": "no text"}'
    good = '"label": "正面", "score": 0.9, "prob_负面": 0.1, "prob_正面": 0.9, "error": null}'
    path = tmp_path / "out.jsonl"
    path.write_text("\n".join(['{"id": 1, ' + tail, '{"id": 2, "text": "很好吃", "shop": "A", ' + good]) + "\n",
                    encoding="utf-8")
    file = open_labelled(str(path), by="shop")
    assert file.text_column == "text" and file.columns.input_columns == ("id", "text", "shop")
    assert [(r.text, r.group, r.label) for r in file.rows()] == [("", None, None), ("很好吃", "A", "正面")]
    with pytest.raises(BadInputError, match="no column 'nosuch' for --by") as raised:
        open_labelled(str(path), by="nosuch")
    # Typed, so that a command whose flag for the option differs (label's --report-by) names its own.
    assert isinstance(raised.value, NoSuchColumnError) and raised.value.option == "by"
    assert raised.value.naming("--report-by").startswith(f"{path}: no column 'nosuch' for --report-by; columns are:")


def test_a_parquet_file_with_a_repeated_column_name_is_a_one_line_error(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "out.parquet"
    columns = [["好"], ["x"], ["正面"], [0.9], [0.1], [0.9], pa.array([None], pa.string())]
    pq.write_table(pa.table(columns, names=["text", "text", "label", "score", "prob_负面", "prob_正面", "error"]), path)
    with pytest.raises(BadInputError, match="'text' appear more than once"):
        list(open_labelled(str(path)).rows())


def test_parquet_binary_texts_and_groups_are_shown_as_their_text(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "out.parquet"
    pq.write_table(pa.table({"shop": pa.array([b"\xe5\xba\x97A"], pa.binary()),
                             "text": pa.array(["好吃".encode()], pa.binary()), "label": ["正面"], "score": [0.9],
                             "prob_负面": [0.1], "prob_正面": [0.9], "error": pa.array([None], pa.string())}), path)
    assert [(r.text, r.group, r.label) for r in open_labelled(str(path), by="shop").rows()] == [("好吃", "店A", "正面")]


def test_without_label_columns_is_a_clear_error(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_text("id,text\n1,好评\n", encoding="utf-8")
    with pytest.raises(BadInputError, match="no label columns"):
        open_labelled(str(path))
    assert find_label_columns(["text", "x_label", "x_score", "x_prob_a", "x_prob_b", "x_error"], "f").prefix == "x_"


def test_a_file_that_lost_a_probability_column_is_refused_not_read_as_a_model_of_one_label(tmp_path):
    """With prob_正面 removed, every 负面 row was flagged "the score is below one over the number of
    labels" (1/1) and every 正面 row "a label with no prob_ column", exit 0."""
    path = tmp_path / "edited.csv"
    path.write_text("text,label,score,prob_负面,error\n好,正面,0.9,0.1,\n坏,负面,0.8,0.8,\n", encoding="utf-8")
    with pytest.raises(BadInputError, match=r"^.*edited.csv: one probability column \('prob_负面'\) after the score, "
                                            r"where `structsent label` writes one for each of the model's labels \(two "
                                            r"at least\): the file lost a prob_ column$"):
        open_labelled(str(path))
    path.write_text("text,label,score,prob_负面,error,prob_正面\n好,正面,0.9,0.1,,0.9\n", encoding="utf-8")
    with pytest.raises(BadInputError, match=r"one probability column \('prob_负面'\) after the score, .*: the other "
                                            r"prob_ columns \('prob_正面'\) are not beside it, where the job writes them$"):
        open_labelled(str(path))


def test_missing_file_and_unknown_columns(tmp_path, labelled_file):
    with pytest.raises(BadInputError, match="no such file"):
        open_labelled(str(tmp_path / "absent.csv"))
    with pytest.raises(BadInputError, match="no column 'shop' for --by"):
        open_labelled(str(labelled_file), by="shop")
    with pytest.raises(BadInputError, match=r"pass --format \(csv, tsv, jsonl, parquet\)"):
        open_labelled(str(tmp_path / "labelled.xlsx"))
    with pytest.raises(BadInputError, match="plain text has no label columns"):
        open_labelled(str(tmp_path / "labelled.txt"))


def test_broken_records_are_flagged_rows_that_say_why(tmp_path):
    path = tmp_path / "edited.jsonl"
    good = {"text": "好", "label": "正面", "score": 0.9, "prob_负面": 0.1, "prob_正面": 0.9, "error": None}
    lines = [json.dumps(good, ensure_ascii=False), "{not json", json.dumps({**good, "score": "NaN"}),
             json.dumps({**good, "label": "中性"}), "[1, 2]", ""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = list(open_labelled(str(path)).rows())
    assert [r.number for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0].label == "正面" and rows[0].score == 0.9
    assert all(r.label is None and r.error.startswith(UNREADABLE) for r in rows[1:])
    assert "invalid JSON" in rows[1].error and "finite" in rows[2].error and "prob_" in rows[3].error


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_probability_that_is_not_finite_or_not_in_0_1_flags_its_row(tmp_path, fmt):
    """A hand-edited or foreign file: the label job writes null, never NaN, for what it did not compute."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    probs = [(0.1, 0.9), (float("nan"), 0.9), (0.1, float("inf")), (-0.5, 0.9), (None, 0.9), (0.1, 0.9)]
    records = [{"text": f"评论{i}", "label": "正面", "score": positive, "prob_负面": negative,
                "prob_正面": positive, "error": None} for i, (negative, positive) in enumerate(probs)]
    path = tmp_path / f"edited.{fmt}"
    if fmt == "csv":
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows({**r, "score": 0.9, "prob_负面": "" if r["prob_负面"] is None else r["prob_负面"]}
                             for r in records)
    elif fmt == "jsonl":  # NaN and Infinity, as Python's json writes them
        path.write_text("".join(json.dumps({**r, "score": 0.9}, ensure_ascii=False) + "\n" for r in records),
                        encoding="utf-8")
    else:
        pq.write_table(pa.Table.from_pylist([{**r, "score": 0.9} for r in records]), path)
    rows = list(open_labelled(str(path)).rows())
    assert [r.number for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r.label for r in rows] == ["正面", None, None, None, None, "正面"]
    assert all("a probability is not a finite number between zero and one" in r.error for r in rows[1:5])


def test_rows_an_unbalanced_quote_swallowed_are_read_again_and_counted(tmp_path):
    path = tmp_path / "edited.csv"
    path.write_text("id,text,label,score,prob_负面,prob_正面,error\n1,\"坏了,负面,0.9,0.9,0.1,\n"
                    "2,差评,负面,0.9,0.9,0.1,\n3,很差,负面,0.8,0.8,0.2,\n4,好吃,正面,0.9,0.1,0.9,\n", encoding="utf-8")
    rows = list(open_labelled(str(path)).rows())
    assert [r.number for r in rows] == [1, 2, 3, 4]
    assert [r.label for r in rows] == [None, "负面", "负面", "正面"]
    assert rows[0].error.startswith(f"{UNREADABLE}: line 2: malformed CSV") and "reading went on at line 3" in rows[0].error


def test_json_lines_no_json_parser_reads_are_flagged_rows_not_a_stop(tmp_path):
    tail = ', "label": "正面", "score": 0.9, "prob_负面": 0.1, "prob_正面": 0.9, "error": null}\n'
    path = tmp_path / "edited.jsonl"
    path.write_text('{"text": "a"' + tail + '{"text": "b", "n": ' + "9" * 5000 + tail
                    + '{"text": ' + "[" * 100_000 + "]" * 100_000 + tail + '{"text": "c", "text": "d"' + tail
                    + '{"text": "e", "label": "正面", "score": true, "prob_负面": 0.1, "prob_正面": 0.9, "error": null}\n'
                    + '{"text": "f"' + tail, encoding="utf-8")
    rows = list(open_labelled(str(path)).rows())
    assert [r.number for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r.label for r in rows] == ["正面", None, None, None, None, "正面"]
    assert "a JSON number of more than" in rows[1].error and "nested too deeply" in rows[2].error
    assert "the key 'text' appears more than once" in rows[3].error and "score is not a number" in rows[4].error


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_byte_order_mark_before_the_first_column_is_not_part_of_its_name(tmp_path, fmt):
    path = tmp_path / f"bom.{fmt}"
    if fmt == "csv":  # quoted, as pandas writes with utf-8-sig and QUOTE_ALL
        body = '"text","label","score","prob_负面","prob_正面","error"\n"好","正面","0.9","0.1","0.9",""\n'
    else:
        body = '{"text": "好", "label": "正面", "score": 0.9, "prob_负面": 0.1, "prob_正面": 0.9, "error": null}\n'
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    file = open_labelled(str(path))
    assert file.text_column == "text" and file.columns.input_columns == ("text",)
    assert [(r.label, r.text) for r in file.rows()] == [("正面", "好")]


def test_csv_record_with_the_wrong_width_is_flagged(tmp_path):
    path = tmp_path / "edited.csv"
    path.write_text("text,label,score,prob_负面,prob_正面,error\n好,正面,0.9,0.1,0.9,\n坏,负面\n", encoding="utf-8")
    rows = list(open_labelled(str(path)).rows())
    assert rows[0].label == "正面" and rows[1].label is None and "line 3: expected 6 fields, got 2" in rows[1].error


@pytest.mark.parametrize("by", ["shop", "date"])
def test_records_that_cannot_be_read_are_their_own_group_not_the_empty_one(tmp_path, by):
    """A malformed record's --by value is not known: it was counted under "(empty)", which says the
    value is empty or missing, beside the rows whose value is (by value and by date alike)."""
    path = tmp_path / "edited.csv"
    head = "shop,date,text,label,score,prob_负面,prob_正面,error\n"
    rows = ["A,2024-01-01,好,正面,0.9,0.1,0.9,", ",2024-01-02,好,正面,0.9,0.1,0.9,",
            "B,2024-01-03,坏,负面", "B,2024-01-04,坏,负面,0.8,0.8,0.2,", "A,2024-01-05,好,正面,0.9,0.1,0.9,extra,field"]
    undecodable = "B,2024-01-06,坏\xff,负面,0.8,0.8,0.2,".encode("utf-8", "surrogateescape")  # fields kept
    path.write_bytes((head + "\n".join(rows) + "\n").encode("utf-8") + undecodable.replace(b"\xc3\xbf", b"\xff") + b"\n")
    report, _ = build_report(str(path), by=by)
    groups = {g.name: (g.tally.rows, g.kind) for g in report.breakdown.groups}
    assert groups["(unreadable)"] == (2, "unreadable")  # the row cut short and the one with two fields more
    assert sum(rows for rows, _ in groups.values()) == report.overall.rows == 6 and report.overall.flagged == 3
    if by == "shop":  # the undecodable record is flagged in its own shop's group
        assert groups == {"A": (1, "value"), "B": (2, "value"), "(empty)": (1, "empty"), "(unreadable)": (2, "unreadable")}
    else:
        assert report.breakdown.period is not None and "no date" not in groups
    html = tmp_path / "r.html"
    write_report(str(path), str(html), by=by)
    assert "<em>(unreadable)</em>" in html.read_text(encoding="utf-8")


def test_job_figures_sidecar(tmp_path):
    assert read_job_figures(str(tmp_path / "none.json")) is None
    (tmp_path / "s.json").write_text('{"rows": 3, "labels": {"正面": 2}}', encoding="utf-8")
    assert read_job_figures(str(tmp_path / "s.json")) == {"rows": 3, "labels": {"正面": 2}}
    (tmp_path / "bad.json").write_text("[1]", encoding="utf-8")
    with pytest.raises(BadInputError, match="JSON object"):
        read_job_figures(str(tmp_path / "bad.json"))


@pytest.mark.parametrize(("content", "message"), [
    ('{"rows": ' + "9" * 5000 + "}", "not a JSON job summary"),
    ('{"a": ' * 100_000 + "1" + "}" * 100_000, "not a JSON job summary"),
    ('{"a": ' * 50 + "1" + "}" * 50, "nested more than 8 objects deep"),
    (b"\xff\xfe{}", "not a JSON job summary"),
])
def test_a_job_summary_no_page_can_show_is_a_one_line_error(tmp_path, content, message):
    path = tmp_path / "s.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(BadInputError, match=message):
        read_job_figures(str(path))


def test_a_lone_surrogate_in_a_job_summary_is_shown_as_a_replacement_character(tmp_path, labelled_file):
    summary = tmp_path / "s.json"
    summary.write_text('{"model": "x\\ud800y", "rows": 40}', encoding="utf-8")
    page = tmp_path / "r.html"
    write_report(str(labelled_file), str(page), job_summary=str(summary))
    assert "x\ufffdy" in page.read_text(encoding="utf-8")


def test_csv_text_longer_than_the_csv_module_default_is_read(tmp_path, labelled_sample):
    """The label job reads texts up to 32 MiB; a text it labelled is not unreadable here."""
    long_text = "好" * 200_000  # over csv's default field_size_limit of 131,072 characters
    rows = [dataclasses.replace(labelled_sample.rows[3], values={**labelled_sample.rows[3].values, "text": long_text},
                                text=long_text)]
    path = tmp_path / "long.csv"
    write_labelled(path, "csv", Sample(rows, [labelled_sample.results[3]]))
    default = csv.field_size_limit(131_072)  # as in a fresh process, whatever ran before
    try:
        report, _ = build_report(str(path))
    finally:
        csv.field_size_limit(default)
    assert (report.overall.rows, report.overall.flagged) == (1, 0)
    assert report.overall.labels == {labelled_sample.results[3].label: 1}
    shown = report.least_certain[0].text
    assert len(shown) == 2_001 and shown.endswith("…")  # the page keeps a bounded cut of it


def test_a_json_lines_field_that_first_appears_after_the_first_lines_can_group_the_rows(tmp_path):
    """The columns came from the first 100 lines only: `--by shop`, a field of rows 111-130, was
    "no column 'shop'" though `structsent label` had kept it."""
    good = '"label": "正面", "score": 0.9, "prob_负面": 0.1, "prob_正面": 0.9, "error": null}'
    path = tmp_path / "out.jsonl"
    path.write_text("".join('{"id": %d, "text": "好", %s%s\n' % (i, f'"shop": "s{i % 2}", ' if i >= 110 else "", good)
                            for i in range(130)), encoding="utf-8")
    report, _ = build_report(str(path), by="shop")
    assert {g.name: g.tally.rows for g in report.breakdown.groups} == {"(empty)": 110, "s0": 10, "s1": 10}
    with pytest.raises(BadInputError, match="no column 'shpo' for --by"):
        open_labelled(str(path), by="shpo")
    escaped = tmp_path / "escaped.jsonl"  # the key written with escapes, as some JSON writers do
    escaped.write_text(path.read_text(encoding="utf-8").replace('"shop"', '"\\u0073hop"'), encoding="utf-8")
    assert open_labelled(str(escaped), by="shop").by == "shop"


def test_json_lines_true_is_no_probability_and_a_row_without_a_label_keeps_its_text(tmp_path):
    """A JSON true read as the probability 1 (the row counted as labelled); a row without the label
    field was flagged with the label job's advice "pass --text-column", its text not shown."""
    path = tmp_path / "out.jsonl"
    path.write_text('{"text": "a", "label": "正面", "score": 0.9, "prob_负面": 0.1, "prob_正面": 0.9, "error": null}\n'
                    '{"text": "b", "label": "正面", "score": 0.9, "prob_负面": false, "prob_正面": true, "error": null}\n'
                    '{"text": "c", "score": 0.9, "prob_负面": 0.1, "prob_正面": 0.9, "error": null}\n', encoding="utf-8")
    rows = list(open_labelled(str(path)).rows())
    assert [(r.label, r.text) for r in rows] == [("正面", "a"), (None, "b"), (None, "c")]
    assert "a probability is not a finite number" in rows[1].error and rows[2].error.endswith("no label and no error")


def test_a_json_lines_error_field_of_false_or_zero_is_no_error(tmp_path):
    """Another tool's ``"error": false`` (or 0) flagged its row with the reason "False" ("N"); a
    reason that is not text is shown as JSON."""
    good = '"label": "正面", "score": 0.9, "prob_负面": 0.1, "prob_正面": 0.9'
    path = tmp_path / "out.jsonl"
    path.write_text("".join(f'{{"text": "{i}", {good}, "error": {error}}}\n'
                            for i, error in enumerate(["false", "0", "null", '""', "true", '{"code": 7}', '"bad row"'])),
                    encoding="utf-8")
    rows = list(open_labelled(str(path)).rows())
    assert [r.label for r in rows[:4]] == ["正面"] * 4 and all(r.error is None for r in rows[:4])
    assert [(r.label, r.error) for r in rows[4:]] == [(None, "true"), (None, '{"code": 7}'), (None, "bad row")]


def test_a_json_lines_file_of_no_rows_is_reported_with_the_labels_the_job_knows(tmp_path):
    """`label empty.jsonl -o out.jsonl --report r.html` failed after the job: "no JSON object in the first 100 lines"."""
    path = tmp_path / "out.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    report, _ = build_report(str(path), labels=LABELS)
    assert report.overall.rows == 0 and report.labels == LABELS
    with pytest.raises(BadInputError, match="no rows, and so no label columns"):
        build_report(str(path))


def test_columns_another_program_reordered_are_found_by_name(tmp_path, labelled_sample):
    """JSON Lines with sorted keys (jq -S) and a CSV with its columns moved were refused: "no label
    columns ('prob_<label>' missing)", though every column was there."""
    original = tmp_path / "out.jsonl"
    write_labelled(original, "jsonl", labelled_sample)
    lines = [json.loads(line) for line in original.read_text(encoding="utf-8").splitlines()]
    sorted_keys = tmp_path / "sorted.jsonl"
    sorted_keys.write_text("".join(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n" for line in lines),
                           encoding="utf-8")
    csv_file = tmp_path / "out.csv"
    write_labelled(csv_file, "csv", labelled_sample)
    with open(csv_file, encoding="utf-8", newline="") as handle:
        records = list(csv.reader(handle))
    order = [records[0].index(name) for name in ("score", "error", "prob_正面", "text", "label", "id", "prob_负面",
                                                  "date", "category")]
    moved = tmp_path / "moved.csv"
    with open(moved, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([[record[i] for i in order] for record in records])
    expected, _ = build_report(str(original), by="category")
    for path in (sorted_keys, moved):
        report, text_column = build_report(str(path), by="category")
        assert text_column == "text" and set(report.labels) == set(LABELS)
        assert report.overall.rows == 40 and report.overall.labels == expected.overall.labels
        assert report.overall.flagged == expected.overall.flagged
        assert [r.number for r in report.least_certain] == [r.number for r in expected.least_certain]


def test_a_score_no_top_probability_can_have_and_numbers_not_in_ascii_flag_their_row(tmp_path):
    """A score of 0.2 with two labels (the top of two probabilities is at least 0.5), "０.９" and
    "0.9_9" were read as scores, binned in 0.500-0.525 or as 0.9."""
    path = tmp_path / "edited.csv"
    path.write_text("text,label,score,prob_负面,prob_正面,error\n"
                    "一,正面,0.2,0.8,0.2,\n二,正面,０.９,0.1,0.9,\n三,正面,0.9_9,0.01,0.99,\n四,正面,0.5,0.5,0.5,\n"
                    "五,负面,0.499999,0.499999,0.500001,\n", encoding="utf-8")
    rows = list(open_labelled(str(path)).rows())
    assert [r.label for r in rows] == [None, None, None, "正面", "负面"]
    assert "below one over the number of labels" in rows[0].error
    assert all("the score is not a number" in r.error for r in rows[1:3])


def test_a_probability_not_written_in_ascii_digits_flags_its_row_as_a_score_would(tmp_path):
    """prob_ values were read with float(), which takes "０.１" (full-width digits) and "0.0_5"
    (an underscore) as 0.1 and 0.05: a row the score check would refuse passed as labelled."""
    path = tmp_path / "edited.csv"
    path.write_text("text,label,score,prob_负面,prob_正面,error\n"
                    "一,正面,0.9,０.１,0.9,\n二,正面,0.95,0.0_5,0.95,\n三,正面,0.9,0.1,0.9,\n", encoding="utf-8")
    rows = list(open_labelled(str(path)).rows())
    assert [r.label for r in rows] == [None, None, "正面"]
    assert all(r.error == f"{UNREADABLE}: a probability is not a finite number between zero and one"
               for r in rows[:2])


def _with_its_own_label_columns(data: Sample) -> Sample:
    """The sample as if its input had had label, score, error and prob_ columns of its own."""
    for row in data.rows:
        row.values.update({"label": "1", "score": "0.5", "error": "orig", "prob_负面": "0.3", "prob_正面": "0.7"})
    return data


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_two_complete_sets_of_label_columns_without_the_block_last_are_refused(tmp_path, fmt):
    """A column added after the block (or JSON keys sorted) read the input's own label, score,
    error and prob_ columns as the labels: every row flagged "orig", exit 0."""
    data = _with_its_own_label_columns(sample())
    written = tmp_path / f"out.{fmt}"
    write_labelled(written, fmt, data, prefix="p_")
    moved = tmp_path / f"moved.{fmt}"
    if fmt == "csv":
        with open(written, encoding="utf-8", newline="") as handle:
            records = list(csv.reader(handle))
        with open(moved, "w", encoding="utf-8", newline="") as handle:
            csv.writer(handle).writerows([[*records[0], "note"], *([*r, "x"] for r in records[1:])])
    else:
        lines = [json.loads(line) for line in written.read_text(encoding="utf-8").splitlines()]
        moved.write_text("".join(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n" for line in lines),
                         encoding="utf-8")
    expected = [r.label for r in data.results]
    assert [r.label for r in open_labelled(str(written)).rows()] == expected  # the block last: its prefix
    with pytest.raises(BadInputError, match=r"prefixes '' and 'p_'.*pass --prefix \(prefix=\.\.\. in Python\)"):
        open_labelled(str(moved))
    assert [r.label for r in open_labelled(str(moved), prefix="p_").rows()] == expected
    assert [r.error for r in open_labelled(str(moved), prefix="").rows()] == ["orig"] * 40


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_an_error_of_zero_or_false_is_no_error_in_every_format(tmp_path, fmt):
    """A JSON false or 0 was no error, but the CSV text "0" or "False" (pandas' writing of those)
    flagged its row with the reason "0" or "False"."""
    errors = ["", "0", "0.0", "False", "false", "FALSE", "-0", "0.00", "+0", " 0 ",
              "bad row", "1", "True", "0 rows read"]
    records = [{"text": f"评论{i}", "label": "正面", "score": "0.9", "prob_负面": "0.1", "prob_正面": "0.9",
                "error": error} for i, error in enumerate(errors)]
    path = tmp_path / f"edited.{fmt}"
    if fmt in ("csv", "tsv"):
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(records[0]), delimiter="," if fmt == "csv" else "\t")
            writer.writeheader()
            writer.writerows(records)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({**r, "score": 0.9, "prob_负面": 0.1, "prob_正面": 0.9}, ensure_ascii=False)
                                + "\n" for r in records), encoding="utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist([{**r, "score": 0.9, "prob_负面": 0.1, "prob_正面": 0.9}
                                             for r in records]), path)
    rows = list(open_labelled(str(path)).rows())
    assert [r.error for r in rows] == [None] * 10 + ["bad row", "1", "True", "0 rows read"]
    assert [r.label for r in rows] == ["正面"] * 10 + [None] * 4


def test_a_parquet_decimal_zero_error_is_no_error(tmp_path):
    """A decimal error column holding 0 or 0.0 flagged its rows with the reasons "0" and "0.0"."""
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    errors = [decimal.Decimal("0"), decimal.Decimal("0.0"), decimal.Decimal("1.5"), None]
    table = pa.table({"text": ["a", "b", "c", "d"], "label": ["正面"] * 4, "score": [0.9] * 4,
                      "prob_负面": [0.1] * 4, "prob_正面": [0.9] * 4, "error": pa.array(errors, pa.decimal128(4, 1))})
    path = tmp_path / "decimal.parquet"
    pq.write_table(table, path)
    rows = list(open_labelled(str(path)).rows())
    assert [r.error is None for r in rows] == [True, True, False, True]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_label_score_or_probabilities_that_disagree_flag_their_row(tmp_path, fmt):
    """A file another tool wrote: a label that is not the most probable, a score that is not its
    label's probability, probabilities that do not add up to one were counted as labelled rows."""
    rows_written = [("正面", 0.9, 0.1, 0.9), ("负面", 0.9, 0.1, 0.9), ("正面", 0.9, 0.9, 0.1), ("正面", 0.9, 0.9, 0.9),
                    ("正面", 0.9, 0.2, 0.8), ("正面", 0.9004, 0.0996, 0.9004), ("负面", 0.5, 0.5, 0.5)]
    records = [{"text": f"评论{i}", "label": label, "score": score, "prob_负面": negative, "prob_正面": positive,
                "error": None} for i, (label, score, negative, positive) in enumerate(rows_written)]
    path = tmp_path / f"other.{fmt}"
    if fmt == "csv":
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
    else:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    rows = list(open_labelled(str(path)).rows())
    # (rounding to 3 decimals passes, and so does a tie)
    assert [r.label for r in rows] == ["正面", None, None, None, None, "正面", "负面"]
    assert "the score 0.9 is not the probability of its label '负面' (0.1)" in rows[1].error
    assert "the score 0.9 is not the probability of its label '正面' (0.1)" in rows[2].error
    assert "the probabilities add up to 1.8, not one" in rows[3].error
    assert "the score 0.9 is not the probability of its label '正面' (0.8)" in rows[4].error
    assert rows[6].error is None


def test_a_label_less_probable_than_another_disagrees_with_its_probabilities():
    from structsent.report.source import _disagreement

    labels = ("负面", "中性", "正面")
    assert _disagreement("中性", 0.4, [0.1, 0.4, 0.5], labels) == "the label '中性' is not the most probable one"
    assert _disagreement("正面", 0.5, [0.1, 0.4, 0.5], labels) is None


def _parts(directory, fmt: str, data: Sample, cut: int) -> None:
    """``data`` written as two files of one output, as `label --engine ray` writes a directory."""
    directory.mkdir()
    write_labelled(directory / f"part-0.{fmt}", fmt, Sample(data.rows[:cut], data.results[:cut]))
    write_labelled(directory / f"part-1.{fmt}", fmt, Sample(data.rows[cut:], data.results[cut:]))


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_directory_of_parts_is_reported_as_one_output_rows_numbered_across_files(tmp_path, labelled_sample, fmt):
    """A `--engine ray` output is a directory: the report refused it ("is a directory"), and a
    report of one of its files showed part of the rows without a hint."""
    whole = tmp_path / f"whole.{fmt}"
    write_labelled(whole, fmt, labelled_sample)
    _parts(tmp_path / "out", fmt, labelled_sample, cut=17)
    (tmp_path / "out" / ".hidden").write_text("not a part")  # staging and hidden names are not the output's
    (tmp_path / "out" / "_SUCCESS").write_text("")
    parts, _ = build_report(tmp_path / "out")
    one, _ = build_report(whole)
    assert parts.overall.rows == one.overall.rows == 40
    assert parts.overall.labels == one.overall.labels and parts.overall.flagged == one.overall.flagged == 5
    assert [r.number for r in parts.flagged_sample] == [r.number for r in one.flagged_sample] == [8, 16, 24, 32, 40]
    assert [(r.number, r.score) for r in parts.least_certain] == [(r.number, r.score) for r in one.least_certain]
    summary = write_report(tmp_path / "out", tmp_path / "r.html")
    assert summary.rows == 40
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "out/ (2 files in name order, rows numbered across them)" in page


@pytest.mark.parametrize(("case", "message"), [
    ("empty", "a directory with no labelled files in it"),
    ("two formats", "part-1.parquet is not part of the same output as part-0.jsonl"),
    ("a subdirectory", "sub is not a regular file; a directory the report reads holds the files of one output only"),
    ("other labels", "part-1.jsonl is not part of the same output as part-0.jsonl"),
])
def test_a_directory_that_is_not_one_output_is_a_one_line_error(tmp_path, labelled_sample, case, message):
    out = tmp_path / "out"
    if case == "empty":
        out.mkdir()
    elif case == "two formats":
        out.mkdir()
        write_labelled(out / "part-0.jsonl", "jsonl", labelled_sample)
        write_labelled(out / "part-1.parquet", "parquet", labelled_sample)
    elif case == "a subdirectory":
        _parts(out, "jsonl", labelled_sample, cut=20)
        (out / "sub").mkdir()
    else:
        out.mkdir()
        write_labelled(out / "part-0.jsonl", "jsonl", labelled_sample)
        (out / "part-1.jsonl").write_text('{"text": "好", "label": "pos", "score": 0.9, "prob_neg": 0.1, '
                                          '"prob_pos": 0.9, "error": null}\n', encoding="utf-8")
    with pytest.raises(BadInputError) as caught:
        write_report(out, tmp_path / "r.html")
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "r.html").exists()


def test_a_part_of_no_rows_adds_none_and_is_counted_as_read(tmp_path, labelled_sample):
    """An empty file among a Ray job's parts stopped the report: "no rows ...; nothing to report"."""
    _parts(tmp_path / "out", "jsonl", labelled_sample, cut=17)
    (tmp_path / "out" / "part-0a.jsonl").write_bytes(b"")  # between the two, in name order
    summary = write_report(tmp_path / "out", tmp_path / "r.html")
    assert summary.rows == 40 and summary.flagged == 5
    assert "out/ (3 files in name order" in (tmp_path / "r.html").read_text(encoding="utf-8")
    for part in (tmp_path / "out").iterdir():
        part.write_bytes(b"")
    with pytest.raises(BadInputError, match="no rows, and so no label columns"):
        write_report(tmp_path / "out", tmp_path / "r2.html")


def test_an_empty_directory_is_an_output_of_no_rows_when_the_labels_are_known(tmp_path):
    """A Ray job's output of no rows is an empty directory: with the model's labels (what `label
    --engine ray --report` passes) it is a page of 0 rows; without them, the one-line error above."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "_SUCCESS").write_text("")
    summary = write_report(tmp_path / "out", tmp_path / "r.html", labels=["负面", "正面"])
    assert summary == ReportSummary(rows=0, flagged=0, labels={"负面": 0, "正面": 0})
    assert "out/ (no files: the job labelled no rows)" in (tmp_path / "r.html").read_text(encoding="utf-8")
    with pytest.raises(BadInputError, match="a directory with no labelled files in it"):
        write_report(tmp_path / "out", tmp_path / "again.html")


def test_json_lines_with_byte_order_marks_opening_later_lines_are_read_whole(tmp_path):
    """`cat a.jsonl b.jsonl`, b saved with a mark: its first row was "unreadable" (invalid JSON)."""
    path = tmp_path / "out.jsonl"
    write_labelled(path, "jsonl", sample())
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(b"\xef\xbb\xbf" + line if i in (0, 2) else line for i, line in enumerate(lines)))
    file = open_labelled(str(path))
    rows = list(file.rows())
    assert file.columns.labels == LABELS and len(rows) == len(lines)
    assert not any(row.error and row.error.startswith(UNREADABLE) for row in rows)
