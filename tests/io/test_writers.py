"""Output encoding: every input column unchanged and in order, then the predictions."""

import csv
import io
import json
import re

import pytest

from structsent.errors import BadInputError
from structsent.io.formats import Format
from structsent.io.readers import InputRow, open_reader
from structsent.io.writers import ChunkEncoder, added_columns, merge_parquet_parts, write_parquet_part
from structsent.results import LabelResult

from ..conftest import small_filesystem

LABELS = ["负面", "正面"]
GOOD = LabelResult(label="正面", score=0.9, scores={"负面": 0.1, "正面": 0.9})
ROWS = [InputRow(1, {"b": "2", "text": "好,\"评\"\n"}, "好,\"评\"\n"), InputRow(2, None, None, "line 3: bad")]
RESULTS = [GOOD, LabelResult.failed("line 3: bad")]


def test_added_columns_follow_the_labels_and_the_prefix():
    assert added_columns(LABELS, "p_") == ["p_label", "p_score", "p_prob_负面", "p_prob_正面", "p_error"]


def test_csv_keeps_input_columns_in_order_and_round_trips():
    encoder = ChunkEncoder(Format.CSV, ["b", "text"], LABELS)
    data = (encoder.header() + encoder.encode(ROWS, RESULTS)).decode()
    records = list(csv.reader(io.StringIO(data)))
    assert records[0] == ["b", "text", "label", "score", "prob_负面", "prob_正面", "error"]
    assert records[1] == ["2", "好,\"评\"\n", "正面", "0.9", "0.1", "0.9", ""]
    assert records[2] == ["", "", "", "", "", "", "line 3: bad"]


def test_booleans_are_written_to_csv_as_json_writes_them_at_any_depth():
    encoder = ChunkEncoder(Format.CSV, ["ok", "tags", "text"], LABELS)
    row = InputRow(1, {"ok": True, "tags": [False, 1], "text": "好"}, "好")
    records = list(csv.reader(io.StringIO(encoder.encode([row], [GOOD]).decode())))
    assert records[0][:3] == ["true", "[false, 1]", "好"]


def test_tsv_uses_tabs():
    encoder = ChunkEncoder(Format.TSV, ["text"], LABELS)
    assert encoder.header() == "text\tlabel\tscore\tprob_负面\tprob_正面\terror\n".encode()


def test_json_lines_keep_the_input_object_and_add_the_predictions():
    encoder = ChunkEncoder(Format.JSONL, ["b", "text"], LABELS)
    lines = encoder.encode(ROWS, RESULTS).decode().splitlines()
    first = json.loads(lines[0])
    assert list(first) == ["b", "text", "label", "score", "prob_负面", "prob_正面", "error"]
    assert first["text"] == "好,\"评\"\n" and first["score"] == 0.9 and first["error"] is None
    assert json.loads(lines[1]) == {"label": None, "score": None, "prob_负面": None, "prob_正面": None,
                                    "error": "line 3: bad"}
    assert encoder.header() == b""


def test_encoding_is_deterministic_chunk_by_chunk():
    encoder = ChunkEncoder(Format.CSV, ["b", "text"], LABELS)
    whole = encoder.encode(ROWS, RESULTS)
    assert encoder.encode(ROWS[:1], RESULTS[:1]) + encoder.encode(ROWS[1:], RESULTS[1:]) == whole


def test_a_clash_with_an_input_column_asks_for_a_prefix():
    with pytest.raises(BadInputError, match="pass --prefix"):
        ChunkEncoder(Format.CSV, ["text", "label"], LABELS)
    assert ChunkEncoder(Format.CSV, ["text", "label"], LABELS, prefix="pred_").columns[2] == "pred_label"


def test_csv_cells_of_labelled_rows_equal_the_generic_formatting():
    """Labelled rows are written by a direct path; its cells equal those of prediction_values
    through _cell (the formatting flagged rows and every other format use)."""
    import random

    from structsent.io.writers import _cell, prediction_values

    rng = random.Random(0)
    labels = ["负面", "正面", "中性"]
    encoder = ChunkEncoder(Format.CSV, ["id", "text", "extra"], labels)
    values_of_every_type = ["文本", "", None, 3, 2.5, {"a": 1}, [1, "二"], True]
    for number in range(2000):
        p = [rng.random() for _ in labels]
        p = [x / sum(p) for x in p]
        if number % 7 == 0:
            p = [1.0, 0.0, 0.0] if number % 2 else [1e-9, 1 - 2e-9, 1e-9]
        best = max(range(3), key=p.__getitem__)
        result = (LabelResult.failed("empty text") if number % 11 == 0 else
                  LabelResult(label=labels[best], score=p[best], scores=dict(zip(labels, p))))
        row = InputRow(number=number, text="t", values={"id": str(number), "text": rng.choice(values_of_every_type),
                                                        "extra": rng.choice(values_of_every_type)})
        generic = [_cell(row.values.get(c)) for c in encoder.input_columns]
        generic += [_cell(v) for v in prediction_values(result, labels)]
        assert encoder._csv_record(row, result) == generic, (row, result)


# JSON Lines rows need not share fields; the first row's fields are the columns of a CSV, TSV or
# Parquet output, and the added columns' names are checked once against them.
LATER = InputRow(7, {"id": 2, "text": "难吃", "shop": "A店", "label": "人工标注:差评"}, "难吃")


@pytest.mark.parametrize("fmt", [Format.CSV, Format.TSV, Format.PARQUET])
def test_a_row_with_fields_outside_the_columns_is_refused_rather_than_dropped(fmt):
    encoder = ChunkEncoder(fmt, ["id", "text"], LABELS)
    encode = encoder.table if fmt is Format.PARQUET else encoder.encode
    if fmt is Format.PARQUET:
        pytest.importorskip("pyarrow")
    with pytest.raises(BadInputError, match="row 7: field\\(s\\) 'shop', 'label' are not among the output's columns "
                                            "\\('id', 'text'\\)"):
        encode([InputRow(6, {"id": 1, "text": "好吃"}, "好吃"), LATER], [GOOD, GOOD])
    # A row with fewer fields loses nothing: its missing cells are empty.
    assert encode([InputRow(8, {"text": "好吃"}, "好吃")], [GOOD])


def test_a_json_lines_row_with_an_added_column_s_name_is_refused_rather_than_overwritten():
    encoder = ChunkEncoder(Format.JSONL, ["id", "text"], LABELS)
    with pytest.raises(BadInputError, match="row 7: field\\(s\\) 'label' would be overwritten .* pass --prefix"):
        encoder.encode([LATER], [GOOD])
    kept = json.loads(ChunkEncoder(Format.JSONL, ["id", "text"], LABELS, prefix="p_").encode([LATER], [GOOD]))
    assert kept["label"] == "人工标注:差评" and kept["shop"] == "A店" and kept["p_label"] == "正面"


@pytest.mark.parametrize("fmt", [Format.CSV, Format.TSV])
def test_a_carriage_return_inside_a_value_is_quoted(tmp_path, fmt):
    """The writer's line terminator is "\\n": a lone "\\r" in a value went out unquoted, and every
    CSV reader (ours too) split the row there."""
    texts = ["好吃\r真的", "a\r\nb", "plain", "q\"uote\r", "\r"]
    rows = [InputRow(i + 1, {"id": str(i), "text": t}, t) for i, t in enumerate(texts)]
    encoder = ChunkEncoder(fmt, ["id", "text"], LABELS)
    data = encoder.header() + encoder.encode(rows, [GOOD] * len(rows))
    delimiter = "\t" if fmt is Format.TSV else ","
    records = list(csv.reader(io.StringIO(data.decode(), newline=""), delimiter=delimiter))
    assert [r[:2] for r in records[1:]] == [[str(i), t] for i, t in enumerate(texts)]
    assert b"plain" + delimiter.encode() in data and data.count(b"\n") >= len(texts) + 1
    path = tmp_path / f"out.{fmt.value}"
    path.write_bytes(data)
    reader = open_reader(str(path), fmt, text_column="text", on_bad_row="error")
    assert [row.text for row in reader] == texts


@pytest.mark.parametrize("delimiter", [",", "\t"])
def test_csv_rows_joined_directly_equal_the_csv_module_s(delimiter):
    """csv_text joins most rows itself; every row must come out as the csv module writes it (with
    a lone "\r" quoted: the rows holding one are compared with the careful writer's)."""
    import random

    from structsent.io.writers import _csv_text_quoting_carriage_returns, csv_text

    rng = random.Random(3)
    pieces = ["好评", "a", "", " ", ",", "\t", '"', '""', "\n", "\r", "\r\n", "é👍", "\x00", "\u2028", "\x85", "\x0b",
              "0.25", "负面", "'", "\\", "#"]
    records = []
    for _ in range(3000):
        width = rng.choice([1, 2, 5, 7])
        records.append(["".join(rng.choice(pieces) for _ in range(rng.randrange(0, 4))) for _ in range(width)])
    records += [[""], ["", ""], ["a"], ['"'], [" "], ["x", 1.5, None]]
    expected = "".join(_csv_text_quoting_carriage_returns([record], delimiter) for record in records)
    assert csv_text(records, delimiter) == expected
    reread = list(csv.reader(io.StringIO(expected, newline=""), delimiter=delimiter))
    assert len(reread) == len(records)


# -- Parquet from JSON Lines: one type per column, never a silently converted value -----------------
def parquet_chunks(*chunks):
    """Tables of successive chunks of JSON Lines rows (dicts) through one encoder."""
    encoder = ChunkEncoder(Format.PARQUET, ["text", "v"], LABELS)
    number = 0
    tables = []
    for values in chunks:
        rows = []
        for value in values:
            number += 1
            rows.append(InputRow(number, {"text": "好评", "v": value}, "好评"))
        tables.append(encoder.table(rows, [GOOD] * len(rows)))
    return tables


def merged_parts(tmp_path, tables):
    """The tables written as part files, merged as a job merges them, read back."""
    pq = pytest.importorskip("pyarrow.parquet")
    parts = []
    for index, table in enumerate(tables):
        parts.append(tmp_path / f"part-{index}.parquet")
        write_parquet_part(table, parts[-1])
    merge_parquet_parts(parts, tmp_path / "out.parquet")
    return pq.read_table(tmp_path / "out.parquet")


@pytest.mark.parametrize(
    ("first", "later", "fragment"),
    [
        ([10], [10.75], "'v' holds double values, and its type is int64"),  # was truncated to 10
        ([{"shop": "A"}], [{"shop": "B", "coupon": "FREE"}], "'v' holds struct"),  # coupon was dropped
        ([[1]], [["a"]], "'v' holds list<item: string>"),
    ],
    ids=["float-into-int", "new-key", "list-of-another-type"],
)
def test_a_later_value_the_first_chunk_s_type_cannot_hold_is_refused(first, later, fragment):
    with pytest.raises(BadInputError, match="row 2: column " + fragment.replace("(", r"\(").replace("[", r"\[")):
        parquet_chunks(first, later)


def test_a_column_null_in_the_first_chunks_takes_the_type_of_its_first_values(tmp_path):
    """A nullable field null in every row of the first chunk was typed string, and its first
    number stopped the job. Its type is now that of its first values; the parts written before
    (all null) take it when merged."""
    tables = parquet_chunks([None], [None, None], [2.5, None], [3])
    assert [str(t.schema.field("v").type) for t in tables] == ["string", "string", "double", "double"]
    merged = merged_parts(tmp_path, tables)
    assert str(merged.schema.field("v").type) == "double"
    assert merged.column("v").to_pylist() == [None, None, None, 2.5, None, 3.0]
    assert merged.num_rows == 6 and merged.column("text").to_pylist() == ["好评"] * 6


def test_once_a_null_column_has_its_type_another_is_refused():
    with pytest.raises(BadInputError, match="row 4: column 'v' holds string values, and its type is double"):
        parquet_chunks([None], [2.5], [None, "a"])


def test_a_column_null_throughout_stays_string():
    assert all(str(t.schema.field("v").type) == "string" for t in parquet_chunks([None], [None]))


def test_a_merge_never_converts_values_of_another_type(tmp_path):
    """Parts whose types differ in a column holding values (not written by one job) are refused."""
    first, later = parquet_chunks([1.5], [2.5])
    write_parquet_part(first.set_column(1, "v", first.column("v").cast("string")), tmp_path / "a.parquet")
    write_parquet_part(later, tmp_path / "b.parquet")
    with pytest.raises(BadInputError, match="column 'v' is string here and double in the last part"):
        merge_parquet_parts([tmp_path / "a.parquet", tmp_path / "b.parquet"], tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists() and not (tmp_path / "out.parquet.tmp").exists()


def test_values_that_fit_the_first_chunk_s_types_are_kept_exactly():
    first, later = parquet_chunks([2.5, None], [3, None, 2**40])
    assert first.schema.field("v").type == later.schema.field("v").type  # one schema: the parts merge
    assert later.column("v").to_pylist() == [3.0, None, float(2**40)]
    nested = parquet_chunks([{"a": 1, "b": [1.5]}], [{"a": 2}, {"b": [2]}])
    assert nested[1].column("v").to_pylist() == [{"a": 2, "b": None}, {"a": None, "b": [2.0]}]


def test_an_integer_parquet_cannot_hold_is_a_one_line_error():
    with pytest.raises(BadInputError, match="row 1: column 'v' holds a value Parquet cannot hold"):
        parquet_chunks([12345678901234567890])


@pytest.mark.parametrize("values", [[1, {"a": 1}], [1, "x"], [[1], "x"]])
def test_values_no_one_type_holds_in_a_first_chunk_are_refused_naming_the_column(values):
    """Arrow's own words were the whole message ("cannot mix struct and non-struct, non-null
    values", "Could not convert 'x' with type str"): the column was not named."""
    with pytest.raises(BadInputError, match=r"^row 2: column 'v' holds a value Parquet cannot hold \("):
        parquet_chunks(values)


def test_json_lines_output_stays_json_when_a_value_is_nan_or_infinite():
    """Python's json wrote bare NaN/Infinity, which JSON parsers (JSON.parse, jq) reject."""
    values = {"text": "好评", "x": float("nan"), "nested": {"y": [1.5, float("inf")]}, "z": -float("inf")}
    line = ChunkEncoder(Format.JSONL, list(values), LABELS).encode([InputRow(1, values, "好评")], [GOOD])
    record = json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert record["x"] is None and record["nested"] == {"y": [1.5, None]} and record["z"] is None
    assert record["label"] == "正面"


def test_a_json_lines_input_without_rows_gives_an_empty_parquet_table_of_its_columns():
    """The per-chunk type check first read columns from the rows: with none it raised KeyError."""
    table = ChunkEncoder(Format.PARQUET, ["text"], LABELS).table([], [])
    assert table.num_rows == 0 and table.column_names == ["text", *added_columns(LABELS)]


def test_a_parquet_merge_that_fills_the_disk_leaves_no_half_written_file(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    import random

    rng = random.Random(0)  # text that does not compress: the merged file cannot fit
    parts = []
    for index in range(4):
        part = tmp_path / f"part-{index}.parquet"
        texts = ["".join(chr(rng.randrange(0x4E00, 0x9FA5)) for _ in range(200)) for _ in range(200)]
        pq.write_table(pa.table({"text": texts}), part)
        parts.append(part)
    with small_filesystem(tmp_path / "small", "256k") as small:
        target = small / "out.parquet"
        with pytest.raises(OSError):
            merge_parquet_parts(parts, target)
        assert list(small.iterdir()) == []  # neither the output nor its temporary file
    merge_parquet_parts(parts, tmp_path / "out.parquet")
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 800


def nested(depth: int, kind: str):
    value: object = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


@pytest.mark.parametrize(("value", "fits"), [
    (nested(49, "list"), True), (nested(50, "list"), False),
    (nested(98, "object"), True), (nested(99, "object"), False),
    ({"a": [nested(47, "list")]}, True), ({"a": [nested(48, "list")]}, False),
], ids=["49-lists", "50-lists", "98-objects", "99-objects", "object-list-47", "object-list-48"])
def test_json_values_nested_deeper_than_parquet_readers_read_are_refused_before_a_part_is_written(tmp_path, value,
                                                                                                   fits):
    """A part 50 lists deep was written, then refused as "no longer reads ... another program
    changed it" (and again at every --resume): Arrow's Parquet reader reads 100 schema levels."""
    pq = pytest.importorskip("pyarrow.parquet")
    if not fits:
        with pytest.raises(BadInputError, match=r"rows 1-1: column 'v' nests 10[12] levels deep as Parquet, and "
                                                r"Parquet readers read at most 100; write JSON Lines or CSV output"):
            parquet_chunks([value])
        return
    (table,) = parquet_chunks([value])
    write_parquet_part(table, tmp_path / "part.parquet")  # the deepest a reader takes: it reads back
    assert pq.read_table(tmp_path / "part.parquet").column("v").to_pylist() == [value]


@pytest.mark.parametrize("value", [{}, [{}], {"a": {}}, [[{"b": {}}]]], ids=["{}", "[{}]", "nested", "deep"])
def test_an_object_without_fields_is_refused_for_parquet_in_one_line(value):
    """Arrow cannot write a struct without fields: a traceback (ArrowNotImplementedError), exit 1."""
    with pytest.raises(BadInputError, match=r"column 'v' holds an object without fields \(\{\}\), which Parquet "
                                            "cannot hold; write JSON Lines or CSV output"):
        parquet_chunks([value])


@pytest.mark.parametrize(("prefix", "advice"), [("", "pass --prefix (e.g. --prefix pred_)"), ("pred_", "pass another --prefix")])
def test_a_column_clash_advises_a_prefix_other_than_the_one_given(prefix, advice):
    """With --prefix pred_ given, it still said "pass --prefix (e.g. --prefix pred_)"."""
    from structsent.io.writers import added_columns, check_no_collision

    extra = added_columns(["负面", "正面"], prefix)
    with pytest.raises(BadInputError, match=rf"column\(s\) '{prefix}label'; {re.escape(advice)} so the added"):
        check_no_collision(["text", f"{prefix}label"], extra, prefix)


@pytest.mark.parametrize("values", [[1.5, False], [[1.5], [True]], [{"x": 1.5}, {"x": True}], [None, 2.5, None, True],
                                    [{"x": [{"y": 0.5}]}, {"x": [{"y": False}]}]],
                         ids=["top-level", "in-a-list", "in-an-object", "after-nulls", "deep"])
def test_true_or_false_among_floats_in_one_chunk_is_refused_naming_its_row(values):
    """Arrow made one float column of them, true and false written as 1.0 and 0.0 (exit 0); in
    separate chunks the same values were already refused."""
    row = 1 + next(i for i, v in enumerate(values) if "True" in repr(v) or "False" in repr(v))
    with pytest.raises(BadInputError, match=rf"^row {row}: column 'v' holds true or false where other values hold "
                                            r"numbers, and one Parquet column would hold them as 1.0 or 0.0;"):
        parquet_chunks(values)
    with pytest.raises(BadInputError, match="column 'v' holds"):  # across chunks, as before
        parquet_chunks(values[:row - 1] or [values[0]], values[row - 1:])


def test_true_or_false_among_floats_in_one_row_is_refused_too():
    with pytest.raises(BadInputError, match=r"^row 1: column 'v' holds true or false where other values hold numbers"):
        parquet_chunks([[1, 1.5, True]])


def test_true_and_false_in_a_column_of_their_own_and_integers_stay_as_they_are():
    (table,) = parquet_chunks([True, None, False])
    assert table.column("v").to_pylist() == [True, None, False]
    (table,) = parquet_chunks([{"a": True, "b": 1.5}, {"a": False, "b": 2}])
    assert table.column("v").to_pylist() == [{"a": True, "b": 1.5}, {"a": False, "b": 2.0}]


@pytest.mark.parametrize(("first", "later", "expected_type"), [
    ([[]], [[1.5], []], "list<item: double>"),  # a review's pictures: none in the first chunk
    ([{"a": None}], [{"a": 2.5}], "struct<a: double>"),
    ([{"tags": [], "n": 1}], [{"tags": [{"x": "y"}], "n": 2}], "struct<tags: list<item: struct<x: string>>, n: int64>"),
    ([None, []], [[[]]], "list<item: list<item: null>>"),  # still undecided inside: the next values decide
], ids=["empty-lists", "null-field", "nested", "lists-of-lists"])
def test_a_column_of_empty_lists_or_null_fields_takes_the_type_its_later_values_give(tmp_path, first, later, expected_type):
    """A first chunk of only empty lists typed the column list<null>, and every later number was
    refused ("holds list<item: double> values, and its type is list<item: null>")."""
    tables = parquet_chunks(first, later)
    assert str(tables[1].schema.field("v").type) == expected_type
    merged = merged_parts(tmp_path, tables)
    assert merged.column("v").to_pylist() == [*first, *later] and merged.num_rows == len(first) + len(later)


def test_values_that_do_not_fill_in_a_column_of_empty_lists_are_still_refused():
    with pytest.raises(BadInputError, match="row 2: column 'v' holds double values, and its type is list<item: null>"):
        parquet_chunks([[]], [1.5])
    with pytest.raises(BadInputError, match="row 3: column 'v' holds list<item: string> values, and its type is "
                                            "list<item: double>"):
        parquet_chunks([[]], [[1.5]], [["a"]])


def test_a_value_of_another_type_is_named_by_its_row_not_its_chunk():
    """"rows 2049-4096: column 'n' holds a value Parquet cannot hold": the user searched 2,048 rows."""
    values = list(range(40))
    with pytest.raises(BadInputError, match=r"^row 30: column 'v' holds a value Parquet cannot hold \("):
        parquet_chunks(values[:29] + ["x"] + values[30:])
    with pytest.raises(BadInputError, match=r"^row 47: column 'v' holds double values, and its type is int64"):
        parquet_chunks(values[:10], [None] * 20 + values[:16] + [1.5] + values[:3])
