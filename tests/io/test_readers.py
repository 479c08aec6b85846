"""The streaming readers on small real files: rows, resume positions, digests, bad bytes, flag mode."""

import hashlib
import io
import json
import os
import sys
import time

import pytest

from structsent.errors import BadInputError
from structsent.io.formats import Format, output_format_for
from structsent.io.readers import ParquetReader, open_reader


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def read_all(path, fmt=Format.CSV, **options):
    reader = open_reader(path, fmt, text_column=options.pop("text_column", "text"),
                         on_bad_row=options.pop("on_bad_row", "error"), **options)
    try:
        return [(row.number, row.values, row.text, row.error, reader.position) for row in reader], reader
    finally:
        reader.close()


def blake(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


CSV = 'id,text\n1,好评\n2,"带,逗号"\n3,"跨\n两行"\n4,"引号""里"\n'.encode()


def test_csv_rows_and_the_position_after_each(tmp_path):
    rows, _ = read_all(write(tmp_path, "a.csv", CSV))
    assert [r[2] for r in rows] == ["好评", "带,逗号", "跨\n两行", '引号"里']
    assert [r[1]["id"] for r in rows] == ["1", "2", "3", "4"]
    ends = [CSV.index(b"\n2,") + 1, CSV.index(b"\n3,") + 1, CSV.index(b"\n4,") + 1, len(CSV)]
    assert [r[4] for r in rows] == ends


def test_take_digest_covers_exactly_the_bytes_consumed_since_the_last_call(tmp_path):
    reader = open_reader(write(tmp_path, "a.csv", CSV), Format.CSV, text_column="text", on_bad_row="error")
    rows = iter(reader)
    next(rows)
    first = reader.position
    assert reader.take_digest() == blake(CSV[:first])  # the header and the first row
    next(rows), next(rows)
    assert reader.take_digest() == blake(CSV[first : reader.position])
    assert reader.take_digest() == blake(b"")
    reader.close()


def test_resume_at_a_position_reads_the_rest_unchanged(tmp_path):
    path = write(tmp_path, "a.csv", CSV)
    rows, reader = read_all(path)
    position = rows[1][4]
    tail, resumed = read_all(path, position=position, line=3, rows_done=2)
    assert resumed.columns == reader.columns  # read again from the file's first line
    assert [(r[0], r[2], r[4]) for r in tail] == [(r[0], r[2], r[4]) for r in rows[2:]]
    assert resumed.line == 6  # the multi-line record counts its two lines


def test_csv_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    rows, reader = read_all(write(tmp_path, "a.csv", b"\xef\xbb\xbftext,n\nok,1\n"))
    assert reader.columns == ["text", "n"] and rows[0][2] == "ok"


def test_csv_blank_lines_between_records_hold_no_record(tmp_path):
    rows, _ = read_all(write(tmp_path, "a.csv", b"id,text\n1,a\n\n2,b\n"))
    assert [r[2] for r in rows] == ["a", "b"]


def test_invalid_utf8_names_the_line_and_byte_offset(tmp_path):
    data = b"id,text\n1,ok\n2,b\xffad\n"  # the bad byte is at offset 16
    with pytest.raises(BadInputError, match=r"line 3, byte offset 16 \(byte 0xff\)"):
        read_all(write(tmp_path, "a.csv", data))
    rows, _ = read_all(write(tmp_path, "b.csv", data), on_bad_row="flag")
    assert rows[1][3] == "line 3: invalid UTF-8 at line 3, byte offset 16 (byte 0xff)"
    assert rows[1][1] == {"id": "2", "text": "b\ufffdad"} and rows[1][2] is None  # the id is kept, the text not labelled


def test_undecodable_bytes_in_a_multi_line_record_flag_that_record_once(tmp_path):
    data = 'id,text\n1,"第一行\n第二'.encode() + b"\xff" + '行,好"\n2,很好\n'.encode()
    rows, reader = read_all(write(tmp_path, "a.csv", data), on_bad_row="flag")
    assert [(r[0], r[1]["id"], r[2]) for r in rows] == [(1, "1", None), (2, "2", "很好")]
    assert rows[0][3].startswith("line 2: invalid UTF-8 at line 3") and "unbalanced quote" not in rows[0][3]
    assert reader.resynchronised == 0 and rows[-1][4] == len(data)


def test_an_undecodable_json_line_keeps_the_fields_that_parse(tmp_path):
    data = b'{"id": 1, "text": "ok"}\n{"id": 2, "text": "b\xffad"}\n{"id": 3, \xff}\n'
    rows, _ = read_all(write(tmp_path, "a.jsonl", data), Format.JSONL, on_bad_row="flag")
    assert [(r[0], r[1], r[2]) for r in rows] == [(1, {"id": 1, "text": "ok"}, "ok"),
                                                  (2, {"id": 2, "text": "b\ufffdad"}, None), (3, None, None)]
    assert rows[1][3].startswith("invalid UTF-8 at line 2") and rows[2][3].startswith("invalid UTF-8 at line 3")


def test_flag_mode_flags_an_unbalanced_quote_on_its_first_line_and_reads_on(tmp_path):
    data = b'id,text\n1,"broken\n2,good\n3,fine\n'
    rows, reader = read_all(write(tmp_path, "a.csv", data), on_bad_row="flag")
    assert [(r[0], r[2]) for r in rows] == [(1, None), (2, "good"), (3, "fine")]
    assert rows[0][3].startswith("line 2: malformed CSV") and "reading went on at line 3" in rows[0][3]
    assert reader.resynchronised == 1 and rows[-1][4] == len(data)
    with pytest.raises(BadInputError, match="line 2: malformed CSV"):
        read_all(write(tmp_path, "b.csv", data))


def test_wrong_field_count_is_flagged(tmp_path):
    rows, _ = read_all(write(tmp_path, "a.csv", b"id,text\n1,a,extra\n2,b\n"), on_bad_row="flag")
    assert rows[0][3] == "line 2: expected 2 fields, got 3" and rows[1][2] == "b"


def test_tsv_and_the_only_column_as_text(tmp_path):
    rows, _ = read_all(write(tmp_path, "a.tsv", "评论\n很好,真的\n".encode()), Format.TSV)
    assert rows[0][2] == "很好,真的"


def test_missing_text_column_is_one_clear_error(tmp_path):
    with pytest.raises(BadInputError, match="no column 'text'; columns are: 'id', 'body'"):
        read_all(write(tmp_path, "a.csv", b"id,body\n1,x\n"))


def test_text_lines_drop_their_line_ending_only(tmp_path):
    data = "好评\r\n  空格  \n\n最后".encode()
    rows, _ = read_all(write(tmp_path, "a.txt", data), Format.TXT)
    assert [r[2] for r in rows] == ["好评", "  空格  ", "", "最后"]
    assert rows[-1][4] == len(data)


def test_json_lines_skip_blank_lines_and_flag_bad_records(tmp_path):
    data = '{"text": "好", "n": 1}\n\n[1]\n{"body": "x"}\nnot json\n'.encode()
    rows, _ = read_all(write(tmp_path, "a.jsonl", data), Format.JSONL, on_bad_row="flag")
    assert [r[0] for r in rows] == [1, 2, 3, 4]
    assert rows[0][1] == {"text": "好", "n": 1} and rows[0][3] is None
    assert "expected a JSON object, got list" in rows[1][3]
    assert "no 'text' field (fields: 'body')" in rows[2][3] and rows[2][1] == {"body": "x"}
    assert "invalid JSON" in rows[3][3]


@pytest.mark.parametrize("on_bad_row", ["error", "flag"])
@pytest.mark.parametrize("data", [
    '[{"text": "好吃"}, {"text": "难吃"}]\n\n',  # one line (blank lines after it)
    '\ufeff\n[\n  {"text": "好吃"},\n  {"text": "难吃"}\n]\n',  # pretty-printed, after a mark and a blank line
    '["好吃", "难吃"]',  # texts alone
])
def test_a_json_array_file_is_refused_as_a_whole_not_read_as_rows(tmp_path, data, on_bad_row):
    # Read line by line it was one bad row (the records in it never labelled), or a bad row per line.
    # The command it gives writes beside the file, quoted: `> reviews.jsonl` would have emptied the
    # input before jq read it, and a name with a space split in two.
    (tmp_path / "my data").mkdir()
    path = write(tmp_path / "my data", "reviews.jsonl", data.encode())
    converted = str(tmp_path / "my data" / "reviews.lines.jsonl")
    with pytest.raises(BadInputError) as refused:
        read_all(path, Format.JSONL, on_bad_row=on_bad_row)
    assert str(refused.value) == (f"{path}: line 1 is a JSON array, not an object: JSON Lines hold one object per "
                                  f"line; to label a file of one JSON array, convert it first: jq -c '.[]' "
                                  f"'{path}' > '{converted}'")


def test_an_array_on_line_1_of_json_lines_is_one_bad_row_in_flag_mode(tmp_path):
    # Not a file of one array: the rows after it are read, as after any bad line.
    path = write(tmp_path, "a.jsonl", '["a", "b"]\n{"text": "好吃"}\n'.encode())
    rows, _ = read_all(path, Format.JSONL, on_bad_row="flag")
    assert [(r[0], r[2]) for r in rows] == [(1, None), (2, "好吃")] and "got list" in rows[0][3]
    with pytest.raises(BadInputError, match="line 1 is a JSON array, not an object"):
        read_all(path, Format.JSONL)


def test_only_the_first_record_can_open_a_json_array(tmp_path):
    # A later list is one bad row of a JSON Lines file, as before.
    rows, _ = read_all(write(tmp_path, "a.jsonl", b'{"text": "x"}\n[1]\n[\n'), Format.JSONL, on_bad_row="flag")
    assert [r[0] for r in rows] == [1, 2, 3] and rows[0][3] is None
    assert "got list" in rows[1][3] and "invalid JSON" in rows[2][3]


@pytest.mark.parametrize("header", [b"text,a,text\n", b"\xef\xbb\xbftext,text\n"])
def test_csv_columns_that_share_a_name_are_refused(tmp_path, header):
    # One value per name per row: the other column's values would be lost.
    with pytest.raises(BadInputError, match="column name\\(s\\) 'text' appear more than once"):
        read_all(write(tmp_path, "a.csv", header + "x1,y1,好吃\n".encode()))


def test_parquet_columns_that_share_a_name_are_refused(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table([["x"], ["好吃"]], names=["text", "text"]), path)
    with pytest.raises(BadInputError, match="'text' appear more than once"):
        read_all(str(path), Format.PARQUET)


def test_a_json_key_that_appears_twice_in_one_object_is_a_flagged_row(tmp_path):
    # json.loads keeps the last value of a repeated key: the first would be lost without a word.
    data = ('{"id": 1, "text": "好吃极了", "text": "差评"}\n{"id": 2, "text": "服务很好", "id": 3}\n'
            '{"id": 4, "text": "好", "meta": {"k": 1, "k": 2}}\n{"id": 5, "text": "还行", "Text": "x"}\n').encode()
    rows, _ = read_all(write(tmp_path, "a.jsonl", data), Format.JSONL, on_bad_row="flag")
    assert [r[0] for r in rows] == [1, 2, 3, 4]
    assert [r[2] for r in rows] == [None, None, None, "还行"]
    assert "line 1: the key 'text' appears more than once" in rows[0][3]
    assert "line 2: the key 'id' appears more than once" in rows[1][3]
    assert "line 3: the key 'k' appears more than once" in rows[2][3]  # nested objects too
    assert rows[3][1] == {"id": 5, "text": "还行", "Text": "x"} and rows[3][3] is None  # keys differ in case
    # A flagged row keeps its other fields (its id above all); a key given twice is null, neither value chosen.
    assert [r[1] for r in rows[:3]] == [{"id": 1, "text": None}, {"id": None, "text": "服务很好"},
                                        {"id": 4, "text": "好", "meta": {"k": None}}]
    with pytest.raises(BadInputError, match="line 1: the key 'text' appears more than once"):
        read_all(write(tmp_path, "b.jsonl", data), Format.JSONL)


def test_a_json_lines_file_may_begin_with_a_byte_order_mark(tmp_path):
    data = b'\xef\xbb\xbf{"text": "\xe5\xa5\xbd"}\n{"text": "x"}\n'
    rows, _ = read_all(write(tmp_path, "a.jsonl", data), Format.JSONL)
    assert [(r[1], r[3]) for r in rows] == [({"text": "好"}, None), ({"text": "x"}, None)]
    later = b'{"text": "x"}\n\xef\xbb\xbf{"text": "y"}\n'  # a mark opening a later line too (`cat a b`)
    rows, _ = read_all(write(tmp_path, "b.jsonl", later), Format.JSONL, on_bad_row="flag")
    assert [(r[1], r[3]) for r in rows] == [({"text": "x"}, None), ({"text": "y"}, None)]


@pytest.mark.parametrize("header", [b'"id","text"', b'"text","id"', b"id,text"])
def test_a_byte_order_mark_before_a_quoted_csv_header_is_not_part_of_a_name(tmp_path, header):
    # What pandas writes with to_csv(encoding="utf-8-sig", quoting=csv.QUOTE_ALL).
    names = [name.strip('"') for name in header.decode().split(",")]
    values = {"id": "1", "text": "好吃"}
    data = b"\xef\xbb\xbf" + header + b"\n" + ",".join(f'"{values[n]}"' for n in names).encode() + b"\n"
    rows, reader = read_all(write(tmp_path, "a.csv", data))
    assert reader.columns == names
    assert [(r[1], r[2]) for r in rows] == [(values, "好吃")]


def test_a_byte_order_mark_is_not_part_of_the_first_plain_text_line(tmp_path):
    rows, _ = read_all(write(tmp_path, "a.txt", "\ufeff好评\n\ufeff第二行\n".encode()), Format.TXT)
    assert [r[2] for r in rows] == ["好评", "\ufeff第二行"]  # only the file's first bytes are a mark


def test_parquet_values_python_cannot_hold_or_corrupt_pages_are_one_line_errors(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    beyond = tmp_path / "beyond.parquet"  # a "never expires" timestamp, beyond Python's year 9999
    pq.write_table(pa.table({"text": ["好", "坏"], "expires": pa.array([0, 2**63 - 1], pa.timestamp("ms"))}), beyond)
    with pytest.raises(BadInputError, match="rows 1-2: a value Python cannot hold"):
        read_all(str(beyond), Format.PARQUET)
    corrupt = tmp_path / "corrupt.parquet"
    pq.write_table(pa.table({"text": [f"文本{i}" for i in range(5000)]}), corrupt, compression="snappy")
    data = bytearray(corrupt.read_bytes())
    data[200:4000] = b"\xab" * 3800  # the pages, not the footer
    corrupt.write_bytes(bytes(data))
    with pytest.raises(BadInputError, match=r"rows 1-5,000 \(row group 1 of 1\): not a readable Parquet file"):
        read_all(str(corrupt), Format.PARQUET)


def test_a_corrupt_parquet_row_group_names_its_rows_on_one_line_and_a_resume_skips_groups_unread(tmp_path):
    """A corrupt page in rows 2,001-3,000 was "not a readable Parquet file after row 0" (pyarrow reads
    ahead), and pyarrow's reason spanned three lines."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "groups.parquet"
    pq.write_table(pa.table({"n": list(range(5000)), "text": [f"第{i}条评论" for i in range(5000)]}), path,
                   row_group_size=1000, compression="none")
    metadata = pq.ParquetFile(path).metadata
    column = metadata.row_group(2).column(1)
    start = column.dictionary_page_offset or column.data_page_offset
    data = bytearray(path.read_bytes())
    data[start: start + 40] = b"\x00" * 40  # the third group's text pages, not the footer
    path.write_bytes(bytes(data))
    with pytest.raises(BadInputError) as raised:
        read_all(str(path), Format.PARQUET)
    assert "rows 2,001-3,000 (row group 3 of 5): not a readable Parquet file (" in str(raised.value)
    assert "\n" not in str(raised.value)
    resumed = ParquetReader(str(path), rows_done=3000, text_column="text")  # the corrupt group is behind it
    assert [row.values["n"] for row in resumed] == list(range(3000, 5000))
    for done in (0, 999, 1000, 1001):
        good = tmp_path / f"good{done}.parquet"
        pq.write_table(pa.table({"n": list(range(2500))}), good, row_group_size=1000)
        assert [r.number for r in ParquetReader(str(good), rows_done=done, text_column="n")] == list(range(done + 1, 2501))
    tiny = tmp_path / "tiny.parquet"  # 3,000 groups of one row: read a thousand at a time (one read each was slow)
    pq.write_table(pa.table({"n": list(range(3000))}), tiny, row_group_size=1)
    for done in (0, 1, 999, 1000, 2999, 3000):
        rows = list(ParquetReader(str(tiny), rows_done=done, text_column="n"))
        assert [r.values["n"] for r in rows] == list(range(done, 3000))


def test_parquet_times_of_day_in_nanoseconds_are_read_exactly_or_refused(tmp_path):
    """12:34:56.123456789 came out as 12:34:56.123456 in every output format (and a Parquet
    output kept the type time64[ns] with the last digits zeroed)."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    noon = (12 * 3600 + 34 * 60 + 56) * 10**9
    exact = tmp_path / "exact.parquet"
    pq.write_table(pa.table({"text": ["好", "坏", "中"], "t": pa.array([noon + 123456000, None, 0],
                                                                      pa.time64("ns"))}), exact)
    rows, _ = read_all(str(exact), Format.PARQUET)
    assert [str(r[1]["t"]) for r in rows] == ["12:34:56.123456", "None", "00:00:00"]
    finer = tmp_path / "finer.parquet"
    pq.write_table(pa.table({"text": ["好", "坏"], "t": pa.array([noon, noon + 123456789], pa.time64("ns"))}), finer)
    with pytest.raises(BadInputError, match="rows 1-2: column 't' holds a time of day in nanoseconds"):
        read_all(str(finer), Format.PARQUET)
    inside = pa.array([{"at": [noon]}, {"at": [noon + 1]}], pa.struct([("at", pa.list_(pa.time64("ns")))]))
    pq.write_table(pa.table({"text": ["好", "坏"], "s": inside}), finer)  # inside a column, too
    with pytest.raises(BadInputError, match="rows 1-2: column 's' holds a time of day in nanoseconds"):
        read_all(str(finer), Format.PARQUET)


def test_a_file_of_only_a_byte_order_mark_is_as_empty_as_one_without(tmp_path):
    assert read_all(write(tmp_path, "a.txt", b"\xef\xbb\xbf"), Format.TXT)[0] == []
    assert read_all(write(tmp_path, "a.jsonl", b"\xef\xbb\xbf"), Format.JSONL)[0] == []
    with pytest.raises(BadInputError, match="no header row"):
        read_all(write(tmp_path, "a.csv", b"\xef\xbb\xbf"))


def test_json_keys_that_differ_only_in_lone_surrogates_are_not_merged(tmp_path):
    data = b'{"\\ud800": 1, "\\udc00": 2, "text": "\xe5\xa5\xbd"}\n{"text": "x"}\n'
    rows, _ = read_all(write(tmp_path, "a.jsonl", data), Format.JSONL, on_bad_row="flag")
    assert [r[0] for r in rows] == [1, 2]
    assert rows[0][1] is None and "become one key" in rows[0][3]  # flagged whole: no value kept over another
    assert rows[1][2] == "x"


def test_a_json_number_too_long_to_read_is_a_flagged_row(tmp_path):
    data = ('{"text": "好吃", "n": ' + "1" * 5000 + '}\n{"text": "难吃"}\n').encode()
    rows, _ = read_all(write(tmp_path, "a.jsonl", data), Format.JSONL, on_bad_row="flag")
    assert [r[0] for r in rows] == [1, 2]
    assert rows[0][2] is None and "line 1: a JSON number of more than" in rows[0][3]
    assert rows[1][2] == "难吃" and rows[1][3] is None
    with pytest.raises(BadInputError, match="line 1: a JSON number"):
        read_all(write(tmp_path, "b.jsonl", data), Format.JSONL)


def test_a_lone_surrogate_escape_is_flagged_and_surrogate_pairs_are_read(tmp_path):
    # A lone half of a UTF-16 pair is no character: no UTF-8 output could hold it.
    data = (b'{"id": 1, "text": "\\ud800\xe5\xa5\xbd"}\n'
            b'{"id": 2, "text": "\\ud83d\\ude00\xe5\xa5\xbd", "shop": "\\u5e97"}\n'
            b'{"id": 3, "text": "\xe5\xa5\xbd", "tags": ["a", {"\\udc00k": 1}]}\n')
    rows, _ = read_all(write(tmp_path, "a.jsonl", data), Format.JSONL, on_bad_row="flag")
    assert [r[0] for r in rows] == [1, 2, 3]
    assert rows[0][1] == {"id": 1, "text": "\ufffd好"} and rows[0][2] is None
    assert "line 1: field 'text' holds a lone UTF-16 surrogate" in rows[0][3]
    assert rows[1][2] == "\U0001F600好" and rows[1][3] is None
    assert rows[2][2] is None and "line 3: field 'tags.1.\ufffdk' holds" in rows[2][3]
    assert rows[2][1]["tags"][1] == {"\ufffdk": 1}
    for _, values, _, _, _ in rows:
        json.dumps(values, ensure_ascii=False).encode("utf-8")  # every value can now be written
    with pytest.raises(BadInputError, match="line 1: field 'text' holds a lone UTF-16 surrogate"):
        read_all(write(tmp_path, "b.jsonl", data), Format.JSONL)


def test_parquet_from_standard_input_is_refused_in_plain_words():
    with pytest.raises(BadInputError, match="Parquet cannot be read from standard input"):
        open_reader("-", Format.PARQUET, text_column="text", on_bad_row="error")


@pytest.mark.parametrize(("name", "advice"), [
    ("out.csv.gz", "-o - --output-format csv | gzip > out.csv.gz"),
    ("out.tsv.tgz", "--output-format tsv"),
    ("out.jsonl.bz2", "--output-format jsonl"),
    ("OUT.CSV.XZ", "--output-format csv"),
    ("out.zst", "--output-format jsonl"),  # no format in the name: the input's (JSON Lines here)
    ("out.parquet.gz", "Parquet output compresses its own columns; name it out.parquet"),
])
def test_a_compressed_output_name_is_refused_with_advice_that_writes_the_format_it_names(name, advice):
    with pytest.raises(BadInputError, match="compressed output|compresses its own") as refused:
        output_format_for(Format.JSONL, name)
    assert advice in str(refused.value)
    assert output_format_for(Format.CSV, "out.gzip.csv") is Format.CSV


@pytest.mark.parametrize("blank", ["\u3000", "\x1c", "\x85", "\u2028"])
def test_a_json_lines_line_of_characters_json_does_not_count_as_space_is_not_blank(tmp_path, blank):
    """str.strip() took these for blank lines, and the line vanished even in error mode."""
    data = ('{"text": "好"}\n \t\r\n' + blank + '\n{"text": "差"}\n').encode()
    rows, _ = read_all(write(tmp_path, "a.jsonl", data), Format.JSONL, on_bad_row="flag")
    assert [(r[0], r[2]) for r in rows] == [(1, "好"), (2, None), (3, "差")]
    assert "line 3: invalid JSON" in rows[1][3]
    with pytest.raises(BadInputError, match="line 3: invalid JSON"):
        read_all(write(tmp_path, "b.jsonl", data), Format.JSONL)


@pytest.mark.parametrize("number, held", [("1e400", "inf"), ("-1E400", "-inf"), ("1e-400", "0.0"),
                                          ("0.1000000000000000000001", "0.1"),
                                          ("9007199254740993.0", "9007199254740992.0")])
def test_a_json_number_a_float_cannot_hold_is_a_flagged_row_not_a_changed_value(tmp_path, number, held):
    """1e400 was written back as null (JSON Lines) or inf (CSV); the others as the nearest float."""
    data = ('{"text": "好吃", "x": ' + number + '}\n{"text": "难吃", "x": 2}\n').encode()
    rows, _ = read_all(write(tmp_path, "a.jsonl", data), Format.JSONL, on_bad_row="flag")
    assert [r[0] for r in rows] == [1, 2] and rows[1][1] == {"text": "难吃", "x": 2}
    assert rows[0][2] is None and f"line 1: the number {number} cannot be held exactly" in rows[0][3]
    assert f"written back as {held}" in rows[0][3]
    with pytest.raises(BadInputError, match=f"line 1: the number {number}"):
        read_all(write(tmp_path, "b.jsonl", data), Format.JSONL)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_a_json_lines_nan_or_infinity_is_a_flagged_row_not_a_null(tmp_path, literal):
    """Python's json reads NaN and the infinities, JSON has none: they were written back as null, exit 0."""
    data = ('{"text": "好吃", "x": ' + literal + '}\n{"text": "难吃", "x": 2}\n').encode()
    rows, _ = read_all(write(tmp_path, "a.jsonl", data), Format.JSONL, on_bad_row="flag")
    assert [r[0] for r in rows] == [1, 2] and rows[1][1] == {"text": "难吃", "x": 2} and rows[1][3] is None
    assert rows[0][2] is None and f"line 1: {literal} is not a JSON number" in rows[0][3]
    with pytest.raises(BadInputError, match=f"line 1: {literal} is not a JSON number"):
        read_all(write(tmp_path, "b.jsonl", data), Format.JSONL)
    kept, _ = read_all(write(tmp_path, "c.jsonl", data), Format.JSONL, keep_non_finite=True)
    assert [r[3] for r in kept] == [None, None] and str(kept[0][1]["x"]) == str(float(literal))


def test_json_numbers_a_float_holds_are_read_as_floats(tmp_path):
    numbers = ["0.1", "1e3", "2.50", "-0.0", "1.7976931348623157e308", "5e-324", "0.30000000000000004", "3"]
    data = "".join('{"text": "好", "x": %s}\n' % n for n in numbers).encode()
    rows, _ = read_all(write(tmp_path, "a.jsonl", data), Format.JSONL)
    assert [r[1]["x"] for r in rows] == [json.loads(n) for n in numbers] and all(r[3] is None for r in rows)


def test_a_json_value_nested_deeper_than_the_writers_can_follow_is_flagged(tmp_path):
    """Nested 985 levels, a value was read, then its row crashed the writer (RecursionError)."""
    from structsent.io.readers import MAX_JSON_DEPTH

    def nested(depth: int) -> str:
        return '{"text": "好", "v": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"
    data = (nested(MAX_JSON_DEPTH) + "\n" + nested(MAX_JSON_DEPTH + 1) + "\n" + nested(985) + "\n").encode()
    rows, _ = read_all(write(tmp_path, "a.jsonl", data), Format.JSONL, on_bad_row="flag")
    assert rows[0][3] is None and rows[0][2] == "好"
    assert rows[1][2] is None and rows[1][3] == f"line 2: a value nested more than {MAX_JSON_DEPTH} levels deep"
    assert rows[2][2] is None and rows[2][3].startswith("line 3: ")  # or too deep to read, on a deeper stack


def test_plain_text_with_old_mac_line_endings_is_not_one_review(tmp_path):
    """Three reviews separated by CR alone were read (and labelled) as one."""
    data = "好评\r差评\r一般\r".encode()
    with pytest.raises(BadInputError, match="line 1: a carriage return inside the line"):
        read_all(write(tmp_path, "a.txt", data), Format.TXT)
    rows, _ = read_all(write(tmp_path, "b.txt", data + "\n好吃\r\n".encode()), Format.TXT, on_bad_row="flag")
    assert [(r[0], r[2]) for r in rows] == [(1, None), (2, "好吃")] and "carriage return" in rows[0][3]


@pytest.mark.parametrize(("fmt", "line"), [
    (Format.CSV, lambda i: f'{i},"好评第{i}条，不错"\n'),
    (Format.JSONL, lambda i: json.dumps({"id": i, "text": f"好评第{i}条"}, ensure_ascii=False) + "\n"),
    (Format.TXT, lambda i: f"好评第{i}条\n"),
])
def test_a_file_cut_while_it_is_read_stops_the_reader_before_the_cut_line(tmp_path, fmt, line):
    """A file truncated while a job read it ended the job with exit 0: the rows after the cut were
    lost and the cut line itself (a few characters of a review) was labelled as a whole one."""
    from structsent.errors import InputChangedError

    header = "id,text\n" if fmt is Format.CSV else ""
    lines = [line(i) for i in range(5000)]
    path = write(tmp_path, "in." + fmt.value, (header + "".join(lines)).encode())
    cut_line = 3000
    cut_at = len((header + "".join(lines[:cut_line])).encode()) + 9  # 9 bytes into that line
    reader = open_reader(path, fmt, text_column="text", on_bad_row="error")
    texts = []
    try:
        with pytest.raises(InputChangedError, match=f"ended at byte {cut_at:,}, short of the"):
            for row in reader:
                texts.append(row.text)
                if len(texts) == 10:
                    os.truncate(path, cut_at)  # well past what the reader has buffered
    finally:
        reader.close()
    assert len(texts) == cut_line and texts[-1] == f"好评第{cut_line - 1}条" + ("，不错" if fmt is Format.CSV else "")


def test_a_file_cut_behind_the_reader_says_its_size_now(tmp_path):
    """Cut to 0 bytes behind the reader, the message named only where the reader's buffer ended."""
    from structsent.errors import InputChangedError

    data = "".join(f"好评第{i}条\n" for i in range(50_000)).encode()
    path = write(tmp_path, "in.txt", data)
    reader = open_reader(path, Format.TXT, text_column="text", on_bad_row="error")
    try:
        with pytest.raises(InputChangedError, match=rf"ended at byte [0-9,]+ \(it is 0 bytes now\), short of the "
                                                    rf"{len(data):,} bytes"):
            for row in reader:
                if row.number == 10:
                    os.truncate(path, 0)
    finally:
        reader.close()


def test_a_file_cut_at_a_line_end_while_it_is_read_stops_the_reader_too(tmp_path):
    from structsent.errors import InputChangedError

    lines = [f"好评第{i}条\n" for i in range(5000)]
    path = write(tmp_path, "in.txt", "".join(lines).encode())
    reader = open_reader(path, Format.TXT, text_column="text", on_bad_row="error")
    count = 0
    try:
        with pytest.raises(InputChangedError):
            for _ in reader:
                count += 1
                if count == 10:
                    os.truncate(path, len("".join(lines[:3000]).encode()))
    finally:
        reader.close()
    assert count == 3000  # every whole row before the cut, then the error instead of the end of the file


@pytest.mark.parametrize("fmt", [Format.TXT, Format.CSV, Format.JSONL])
def test_a_line_past_the_length_limit_is_refused_after_the_rows_before_it(tmp_path, monkeypatch, fmt):
    """An input without line breaks (a binary file, /dev/zero) was read into memory whole: a
    MemoryError traceback, or the kernel's kill. (The limit, 128 MiB, is lowered here.)"""
    from structsent.io import readers

    monkeypatch.setattr(readers, "MAX_LINE_BYTES", 64)
    head = {Format.TXT: "", Format.CSV: "text\n", Format.JSONL: ""}[fmt]
    row = {Format.TXT: "好吃\n", Format.CSV: "好吃\n", Format.JSONL: '{"text": "好吃"}\n'}[fmt]
    path = tmp_path / f"in.{fmt.value}"
    path.write_bytes((head + row * 2).encode() + b"x" * 65)
    reader = open_reader(str(path), fmt, text_column="text", on_bad_row="flag")
    rows = iter(reader)
    assert [next(rows).text, next(rows).text] == ["好吃", "好吃"]
    line = 3 + (fmt is Format.CSV)
    with pytest.raises(BadInputError, match=rf"in\.{fmt.value}: line {line} is longer than 0 MiB \(no line break"):
        next(rows)
    reader.close()


def test_a_lone_carriage_return_in_an_unquoted_csv_field_is_said_in_the_users_words(tmp_path):
    """The row's reason was the csv module's advice to programmers ("do you need to open the file in
    universal-newline mode?")."""
    path = tmp_path / "in.csv"
    path.write_bytes("text,id\n好\r吃,1\n难吃,2\n".encode())
    reader = open_reader(str(path), Format.CSV, text_column="text", on_bad_row="flag")
    rows = list(reader)
    reader.close()
    assert [row.text for row in rows] == [None, "难吃"]
    assert rows[0].error == ("line 2: malformed CSV (a lone carriage return inside an unquoted field; quote the "
                             "field or remove it (a file with old Mac line endings, CR alone: convert them to LF))")


def test_a_csv_file_with_old_mac_line_endings_is_refused_saying_so(tmp_path):
    """The header's error nested three pairs of brackets and told the user to quote the field."""
    path = tmp_path / "in.csv"
    path.write_bytes("id,text\r1,好吃\r2,差评\r".encode())
    with pytest.raises(BadInputError, match=r"in.csv: line 1: malformed header: malformed CSV \(a lone carriage "
                                            r"return .* old Mac line endings, CR alone: convert them to LF\)\)$"):
        open_reader(str(path), Format.CSV, text_column="text", on_bad_row="error")


@pytest.mark.parametrize(("line", "reason"), [
    ('{"id":2,"text":"差\x00评"}', "Invalid control character at column 18)"),
    ('{"id":2,"text":"差评"}\r{"id":3,"text":"好"}', "Extra data at column 22; the line holds a carriage return: "
                                                     "convert old Mac line endings (CR alone) to LF)"),
    ('{"id":2,"text":"差"', "Expecting ',' delimiter at column 19)"),  # was "at column 1", past the line's end
], ids=["control-character", "carriage-return", "cut-short"])
def test_invalid_json_is_said_once_with_its_column_and_a_carriage_return_named(tmp_path, line, reason):
    path = tmp_path / "in.jsonl"
    path.write_bytes(('{"id":1,"text":"好吃"}\n' + line + "\n").encode())
    reader = open_reader(str(path), Format.JSONL, text_column="text", on_bad_row="flag")
    rows = list(reader)
    reader.close()
    assert len(rows) == 2 and rows[0].text == "好吃" and rows[1].text is None
    assert rows[1].error == f"line 2: invalid JSON ({reason}"
    crlf = tmp_path / "crlf.jsonl"  # a Windows file: its lines' own CR is no cause to name
    crlf.write_bytes(('{"id":1,"text":"好吃"}\r\n' + line + "\r\n").encode())
    reader = open_reader(str(crlf), Format.JSONL, text_column="text", on_bad_row="flag")
    assert [row.error for row in reader][1] == f"line 2: invalid JSON ({reason}"
    reader.close()


@pytest.mark.parametrize(("name", "requested", "refusal"), [
    ("mm.parquet", "csv", "mm.parquet: the name says parquet, --output-format says csv; name the output mm.csv"),
    ("out.csv", "jsonl", "out.csv: the name says csv, --output-format says jsonl; name the output out.jsonl"),
    ("out.txt", "auto", "out.txt: plain text has no room for the added columns; name the output out.jsonl"),
    ("out.txt", "jsonl", "out.txt: the name says txt, --output-format says jsonl; name the output out.jsonl"),
])
def test_an_output_name_that_says_another_format_than_the_one_written_is_refused(name, requested, refusal):
    """`-o mm.parquet --output-format csv` wrote CSV under that name, exit 0 (and reading it back then
    failed: no Parquet magic bytes); `-o out.txt` wrote JSON Lines."""
    with pytest.raises(BadInputError) as refused:
        output_format_for(Format.CSV, name, requested)
    assert str(refused.value).startswith(refusal)


def test_an_output_name_of_the_format_written_or_of_none_is_taken():
    assert output_format_for(Format.CSV, "out.json", "jsonl") is Format.JSONL  # .json names JSON Lines too
    assert output_format_for(Format.CSV, "out.dat", "parquet") is Format.PARQUET
    assert output_format_for(Format.TXT, "out", "auto") is Format.JSONL
    assert output_format_for(Format.CSV, "-", "tsv") is Format.TSV


@pytest.mark.parametrize(("fmt", "line"), [
    (Format.CSV, lambda i: f'{i},"好评第{i}条，不错"\n'),
    (Format.JSONL, lambda i: json.dumps({"id": i, "text": f"好评第{i}条"}, ensure_ascii=False) + "\n"),
    (Format.TXT, lambda i: f"好评第{i}条\n"),
])
def test_a_file_that_grows_while_it_is_read_is_read_as_it_was_when_opened(tmp_path, fmt, line):
    """Rows appended while a job ran were labelled, a line still being written among them (its
    first part labelled as the whole row, exit 0). The file is read as it was at open, and what
    was appended is counted."""
    header = "id,text\n" if fmt is Format.CSV else ""
    lines = [line(i) for i in range(3000)]
    path = write(tmp_path, "in." + fmt.value, (header + "".join(lines)).encode())
    appended = "".join(line(i) for i in range(3000, 3100)) + "追加"  # its last line still being written
    reader = open_reader(path, fmt, text_column="text", on_bad_row="error")
    texts = []
    try:
        for row in reader:
            texts.append(row.text)
            if len(texts) == 10:
                with open(path, "ab") as handle:
                    handle.write(appended.encode())
    finally:
        reader.close()
    assert len(texts) == 3000 and texts[-1] == "好评第2999条" + ("，不错" if fmt is Format.CSV else "")
    assert reader.appended_after_open == len(appended.encode())


@pytest.fixture
def stdin_from(monkeypatch):
    """Standard input read from a regular file, as `structsent label - < FILE` has it."""
    from structsent.io import readers

    def redirect(path, skip: int = 0):
        handle = open(path, "rb")  # noqa: SIM115 - closed by the fixture's finalizer below
        handle.seek(skip)
        opened.append(handle)
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(handle, encoding="utf-8"))
        for name in ("_stdin", "_stdin_head", "_stdin_file_size"):
            monkeypatch.setattr(readers, name, None)

    opened: list = []
    yield redirect
    for handle in opened:
        handle.close()


def test_standard_input_redirected_from_a_file_that_grows_is_read_as_the_file_was(tmp_path, stdin_from):
    """`label - < in.txt` read to the end of a file appended to while the job ran: the appended rows
    were labelled, and a line still being written among them as a whole row (exit 0)."""
    path = write(tmp_path, "in.txt", "".join(f"好评第{i}条\n" for i in range(3000)).encode())
    appended = "追加一行\n追加"  # its last line still being written
    stdin_from(path)
    reader = open_reader("-", Format.TXT, text_column="text", on_bad_row="error")
    texts = []
    for row in reader:
        texts.append(row.text)
        if len(texts) == 10:
            with open(path, "ab") as handle:
                handle.write(appended.encode())
    assert len(texts) == 3000 and texts[-1] == "好评第2999条"
    assert reader.appended_after_open == len(appended.encode())


def test_standard_input_a_shell_had_partly_read_is_read_to_its_end_as_a_stream(tmp_path, stdin_from):
    """Its offsets are not the file's: read as a pipe is (to the end), not checked against the file."""
    path = write(tmp_path, "in.txt", "头一行\n很好吃\n送得很快\n".encode())
    stdin_from(path, skip=len("头一行\n".encode()))
    assert [row.text for row in open_reader("-", Format.TXT, text_column="text", on_bad_row="error")] == \
        ["很好吃", "送得很快"]


def test_a_last_line_being_written_when_the_file_was_opened_is_no_row(tmp_path):
    """A file whose last line had no line break when it was opened, and was continued since: what
    was read of the line is not the file's row (it was labelled as one)."""
    from structsent.errors import InputChangedError

    path = write(tmp_path, "in.txt", "很好吃\n送得很快\n追加".encode())
    reader = open_reader(path, Format.TXT, text_column="text", on_bad_row="error")
    texts = []
    try:
        with pytest.raises(InputChangedError, match="line 3 had no line break at byte 29, the end of the file when"):
            for row in reader:
                texts.append(row.text)
                if len(texts) == 1:
                    with open(path, "ab") as handle:
                        handle.write("的评论很好\n".encode())
    finally:
        reader.close()
    assert texts == ["很好吃", "送得很快"]
    complete = write(tmp_path, "done.txt", "很好吃\n送得很快".encode())  # a last line without a break, unchanged
    assert [row.text for row in open_reader(complete, Format.TXT, text_column="text", on_bad_row="error")] == \
        ["很好吃", "送得很快"]


def test_a_quoted_field_still_open_when_the_file_was_opened_and_closed_since_is_no_row(tmp_path):
    """A CSV record whose quoted field ran past the end of the file when it was opened, finished by
    an append: it was flagged "malformed CSV (unexpected end of data)" (its id lost, exit 0), or in
    error mode the file was called malformed."""
    from structsent.errors import InputChangedError

    for on_bad_row in ("flag", "error"):
        path = write(tmp_path, f"in-{on_bad_row}.csv", 'id,text\n1,很好吃\n2,"第一行\n'.encode())
        reader = open_reader(path, Format.CSV, text_column="text", on_bad_row=on_bad_row)
        texts = []
        try:
            with pytest.raises(InputChangedError, match="the record that begins on line 3 was still open"):
                for row in reader:
                    texts.append(row.text)
                    with open(path, "ab") as handle:
                        handle.write('第二行"\n'.encode())
        finally:
            reader.close()
        assert texts == ["很好吃"]
    unchanged = write(tmp_path, "open.csv", 'id,text\n1,很好吃\n2,"第一行\n'.encode())  # (nothing appended)
    rows = list(open_reader(unchanged, Format.CSV, text_column="text", on_bad_row="flag"))
    assert rows[0].text == "很好吃" and "unexpected end of data" in rows[1].error


@pytest.mark.parametrize("fmt", [Format.TXT, Format.CSV, Format.JSONL])
def test_a_rewrite_that_keeps_the_first_bytes_the_last_line_and_the_size_stops_the_reader(tmp_path, fmt):
    """Only the first 4 KiB and the last line read were looked at again: a file rewritten in its
    middle (same size, same first and last bytes) while the job read it gave mixed rows, exit 0."""
    from structsent.errors import InputChangedError

    def record(i, word):
        if fmt is Format.JSONL:
            return json.dumps({"id": i, "text": f"第{i:04d}条{word}"}, ensure_ascii=False) + "\n"
        return (f"{i}," if fmt is Format.CSV else "") + f"第{i:04d}条{word}\n"

    header = "id,text\n" if fmt is Format.CSV else ""
    count = 3000
    old = header + "".join(record(i, "味道很好") for i in range(count))
    new = header + "".join(record(i, "难吃死了" if 200 <= i < 400 else "味道很好") for i in range(count))
    before, after = old.encode(), new.encode()
    assert len(before) == len(after) and before[:4096] == after[:4096] and before[-4096:] == after[-4096:]
    path = write(tmp_path, "in." + fmt.value, before)
    reader = open_reader(path, fmt, text_column="text", on_bad_row="error")
    texts = []
    try:
        with pytest.raises(InputChangedError, match=r"rewritten while the job read it \(its bytes 0-"):
            for row in reader:
                texts.append(row.text)
                if len(texts) == 1000:  # rows 200-399 read as they were: rewritten behind the reader
                    with open(path, "r+b") as handle:
                        handle.write(after)
    finally:
        reader.close()
    assert len(texts) == count and "第0300条味道很好" in texts  # (the old row, which the file no longer holds)


def test_a_file_left_alone_since_long_before_it_was_opened_is_not_read_again(tmp_path):
    """Every byte is read a second time only when the file may have been written while it was read:
    its times moved, or it was written within a second of being opened (clock ticks)."""
    path = write(tmp_path, "in.txt", "很好吃\n送得很快\n".encode())
    os.utime(path, ns=(time.time_ns() - 3_600_000_000_000,) * 2)
    reader = open_reader(path, Format.TXT, text_column="text", on_bad_row="error")
    try:
        assert [row.text for row in reader] == ["很好吃", "送得很快"]
        assert not reader.lines._written_while_read()
        with open(path, "ab") as handle:
            handle.write("再来一次\n".encode())
        assert reader.lines._written_while_read()
    finally:
        reader.close()
    fresh = open_reader(write(tmp_path, "fresh.txt", "很好吃\n".encode()), Format.TXT, text_column="text",
                        on_bad_row="error")
    try:
        assert [row.text for row in fresh] == ["很好吃"] and fresh.lines._written_while_read()
    finally:
        fresh.close()


@pytest.mark.parametrize("fmt", [Format.TXT, Format.CSV, Format.JSONL])
def test_a_file_rewritten_while_it_is_read_stops_the_reader(tmp_path, fmt):
    """A file rewritten bigger (not appended to) while a job read it gave rows of its old and its new
    content, said to be "appended", exit 0."""
    from structsent.errors import InputChangedError

    def content(word, count):
        header = "id,text\n" if fmt is Format.CSV else ""
        if fmt is Format.JSONL:
            return "".join(json.dumps({"id": i, "text": f"第{i}条{word}"}, ensure_ascii=False) + "\n" for i in range(count))
        return header + "".join((f"{i}," if fmt is Format.CSV else "") + f"第{i}条{word}\n" for i in range(count))

    path = write(tmp_path, "in." + fmt.value, content("味道很好", 3000).encode())
    reader = open_reader(path, fmt, text_column="text", on_bad_row="error")
    try:
        with pytest.raises(InputChangedError, match="the file was rewritten while the job read it"):
            for number, _ in enumerate(reader):
                if number == 10:
                    with open(path, "wb") as handle:  # past what the reader holds in its buffer
                        handle.write(content("难吃死了", 4000).encode())
    finally:
        reader.close()


def test_a_json_line_refused_for_its_values_keeps_its_other_fields_and_never_those_values(tmp_path):
    """A row refused whole kept no field, its id included: only "line N" in the error tied it to its source."""
    lines = ['{"id": "a", "text": "好", "x": NaN}', '{"id": "b", "text": "好", "x": -Infinity}',
             '{"id": "c", "text": "好", "x": 1e400, "y": 0.1}', '{"id": "d", "text": "好", "x": 1' + "0" * 5000 + '}',
             '{"id": "e", "n": 1' + "0" * 5000 + ', "text": "好", "x": NaN, "v": 1e-400, "c": {"k": 1, "k": 2}}',
             '["e", NaN]', '{"id": "f", "text": "\\ud800", "x": NaN}', '{"id": "g", "x": ' + "[" * 600 + "NaN" + "]" * 600 + "}",
             '{"id": "h", "x": NaN} trailing']
    rows, _ = read_all(write(tmp_path, "a.jsonl", "\n".join(lines).encode()), Format.JSONL, on_bad_row="flag")
    assert [r[0] for r in rows] == list(range(1, 10)) and all(r[2] is None and r[3] for r in rows)
    assert [r[1] for r in rows[:5]] == [
        {"id": "a", "text": "好", "x": None}, {"id": "b", "text": "好", "x": None},
        {"id": "c", "text": "好", "x": None, "y": 0.1}, {"id": "d", "text": "好", "x": None},
        {"id": "e", "n": None, "text": "好", "x": None, "v": None, "c": {"k": None}}]
    # Every value made null is named, in line order, the first as the strict reading refused it.
    assert rows[4][3].startswith("line 5: a JSON number of more than 4,300 digits, which cannot be read; also null "
                                 "in this row: NaN, 1e-400, the key 'k' given twice")
    # A line bad as a whole says so, whatever value it also holds, and keeps nothing; a lone surrogate
    # keeps the fields (as U+FFFD) and names both faults.
    assert rows[5][1] is None and "line 6: expected a JSON object, got list" == rows[5][3]
    assert rows[6][1] == {"id": "f", "text": "\ufffd", "x": None}
    assert "NaN is not a JSON number" in rows[6][3] and "holds a lone UTF-16 surrogate escape" in rows[6][3]
    assert rows[7][1] is None and "nested more than 500 levels" in rows[7][3] and "NaN" not in rows[7][3]
    assert rows[8][1] is None and rows[8][3].startswith("line 9: invalid JSON (Extra data")


def test_a_json_line_with_bytes_that_are_not_utf8_and_a_refused_value_names_both(tmp_path):
    data = b'{"id": 1, "text": "\xe5\xa5\xbd", "x": NaN, "bad": "\xff"}\n{"id": 2, "text": "\xe5\xa5\xbd"}\n'
    rows, _ = read_all(write(tmp_path, "a.jsonl", data), Format.JSONL, on_bad_row="flag")
    assert [r[0] for r in rows] == [1, 2] and rows[0][1]["id"] == 1 and rows[0][1]["x"] is None
    assert "UTF-8" in rows[0][3] and "NaN is not a JSON number" in rows[0][3] and rows[1][3] is None


@pytest.mark.parametrize("name, data, fmt", [
    ("semi.csv", "id;text\n0;差评，用了三天就坏了\n4;还行吧\n".encode(), Format.CSV),
    ("hint.csv", "sep=;\nid;text\n4;还行吧\n".encode(), Format.CSV),
    ("tabs.csv", "id\ttext\n1\t好吃\n".encode(), Format.CSV),
    ("commas.tsv", "id,text\n1,好吃\n".encode(), Format.TSV),
], ids=["semicolons", "excel hint", "tabs in csv", "commas in tsv"])
@pytest.mark.parametrize("on_bad_row", ["error", "flag"])
def test_a_file_of_another_delimiter_is_refused_not_read_as_whole_lines(tmp_path, name, data, fmt, on_bad_row):
    """Its header was one column, which the text column resolver took ("the only column there is"):
    every line labelled whole, the id glued to the text (and a `sep=;` line read as the header)."""
    with pytest.raises(BadInputError, match=rf"^.*{name}: (the header is one column holding|line 1 is 'sep=;')"):
        read_all(write(tmp_path, name, data), fmt, on_bad_row=on_bad_row)


def test_a_one_column_file_named_with_text_column_is_read_as_it_is(tmp_path):
    path = write(tmp_path, "one.csv", "评论;原文\n好吃;是\n".encode())
    rows, reader = read_all(path, text_column="评论;原文")
    assert reader.columns == ["评论;原文"] and [r[2] for r in rows] == ["好吃;是"]


UTF16_TEXTS = ["这家外卖送得很快，味道也不错", "差评，用了三天就坏了", "好", "上次买的很好", "还行吧", "服务态度差"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("fmt", [Format.TXT, Format.JSONL, Format.CSV, Format.TSV])
@pytest.mark.parametrize("on_bad_row", ["error", "flag"])
def test_utf16_is_refused_before_any_row_in_every_text_format(tmp_path, encoding, fmt, on_bad_row):
    """It said "invalid UTF-8 at line 1 ... pass --on-bad-row flag", and flag mode labelled noise
    ("\\x00}Y") as rows, 8 of a 6-line file; a TSV was "a lone carriage return" in its header."""
    lines = {Format.TXT: UTF16_TEXTS, Format.JSONL: [json.dumps({"text": t}) for t in UTF16_TEXTS],
             Format.CSV: ["text", *UTF16_TEXTS], Format.TSV: ["id\ttext", *(f"{i}\t{t}" for i, t in enumerate(UTF16_TEXTS))]}
    path = write(tmp_path, f"u16.{fmt.value}", "".join(line + "\n" for line in lines[fmt]).encode(encoding))
    with pytest.raises(BadInputError, match=r"^.*u16\.\w+: not UTF-8 text \((UTF-16|NUL bytes)"):
        list(open_reader(path, fmt, text_column="text", on_bad_row=on_bad_row))


@pytest.mark.parametrize("text, encoding", [
    ("上海的菜很好吃\n服务太差了\n一般般\n", "utf-16-le"),  # no mark, and 上 (0A 4E) read as a line break
    ("上海的菜很好吃\n服务太差了\n一般般\n", "utf-16-be"),
    ("上海的菜很好吃\n服务太差了\n一般般\n", "utf-32-le"),
    ("good\nbad\n", "utf-16-le"),  # ASCII: a NUL every other byte
    ("好吃\n服务太差了\n一般般\n", "utf-16-le"),  # the first line's break is the byte after a cut
])
@pytest.mark.parametrize("on_bad_row", ["error", "flag"])
def test_utf16_or_32_without_a_mark_is_refused_before_any_row(tmp_path, text, encoding, on_bad_row):
    """The first version looked for NUL bytes in the first line and the byte after it: UTF-16 whose
    first character holds 0A (上) gave a first line of one byte and rows of noise, exit 0; a first
    row was labelled before the byte after its line was seen."""
    path = write(tmp_path, "nomark.txt", text.encode(encoding))
    with pytest.raises(BadInputError, match=r"nomark\.txt: not UTF-8 text \(NUL bytes"):
        list(open_reader(path, Format.TXT, text_column="text", on_bad_row=on_bad_row))


def test_a_resumed_job_looks_at_the_file_s_first_bytes_too(tmp_path):
    """A resume starts past the first line: it was not checked, and labelled UTF-16 noise (exit 0)."""
    path = write(tmp_path, "u16.txt", "".join(t + "\n" for t in UTF16_TEXTS).encode("utf-16-le"))
    second_line = open(path, "rb").read().index(b"\n\x00") + 2
    with pytest.raises(BadInputError, match="not UTF-8 text"):
        list(open_reader(path, Format.TXT, text_column="text", on_bad_row="flag", position=second_line, line=1))


@pytest.mark.parametrize("fmt", [Format.CSV, Format.TXT])
def test_a_binary_file_is_refused_as_not_text_not_as_utf16(tmp_path, fmt):
    """A program's first 3,000 bytes were refused as UTF-16 or UTF-32 text ("save it as UTF-8")."""
    program = b"\x7fELF\x02\x01\x01" + bytes(9) + bytes(range(256)) * 4 + bytes(1000) + b"\xff\x25\xea\x2f" * 200
    path = write(tmp_path, f"prog.{fmt.value}", program)
    with pytest.raises(BadInputError, match=r"prog\.\w+: not text \([\d,]+ NUL bytes in its first [\d,]+ bytes, which "
                                            r"read neither as UTF-8 nor as UTF-16 or UTF-32 text\): a binary file\?$"):
        list(open_reader(path, fmt, text_column="text", on_bad_row="flag"))


@pytest.mark.parametrize("data", ["第一行\x00有NUL\n第二行\n".encode(), "第一行\n\x00第二行\n".encode(),
                                  b"id,text\n1,a\x00b\n"], ids=["nul in line 1", "nul opening line 2", "csv"])
def test_utf8_holding_a_nul_is_text(tmp_path, data):
    """UTF-8 with a NUL in or just after its first line was refused as UTF-16 by the first version."""
    fmt = Format.CSV if data.startswith(b"id,") else Format.TXT
    path = write(tmp_path, f"nul.{fmt.value}", data)
    rows = list(open_reader(path, fmt, text_column="text", on_bad_row="error"))
    assert len(rows) == data.count(b"\n") - (fmt is Format.CSV) and all(row.error is None for row in rows)


def test_json_lines_on_standard_input_is_told_after_a_mark_opening_a_later_line(tmp_path, stdin_from):
    """`cat empty-with-mark.jsonl b.jsonl | structsent label -`: the first non-blank line opened with a
    mark, not at byte 0, and the input was read as plain text, its JSON labelled as reviews."""
    from structsent.io.readers import stdin_format

    stdin_from(write(tmp_path, "in.jsonl", '\n\ufeff{"text":"很好吃"}\n{"text":"差"}\n'.encode()))
    assert stdin_format() is Format.JSONL


def test_utf16_on_standard_input_is_refused(tmp_path, stdin_from):
    """`label - < u16.txt`, read from its first line as a file or a pipe is."""
    stdin_from(write(tmp_path, "u16.txt", "".join(t + "\n" for t in UTF16_TEXTS).encode("utf-16")))
    with pytest.raises(BadInputError, match=r"^-: not UTF-8 text \(UTF-16"):
        list(open_reader("-", Format.TXT, text_column="text", on_bad_row="flag"))


def test_a_byte_order_mark_opening_any_json_lines_line_is_skipped_its_bytes_still_counted(tmp_path):
    """`cat a.jsonl b.jsonl` with b saved with a mark: "line 2: invalid JSON (Expecting value at column 1)"."""
    data = '{"id":1,"text":"a"}\n\ufeff{"id":2,"text":"b"}\n\ufeff\n{"id":3,"text":"c"}\n'.encode()
    path = write(tmp_path, "midbom.jsonl", data)
    reader = open_reader(path, Format.JSONL, text_column="text", on_bad_row="error")
    rows = [(row.values, row.error, reader.position) for row in reader]
    assert [r[0] for r in rows] == [{"id": 1, "text": "a"}, {"id": 2, "text": "b"}, {"id": 3, "text": "c"}]
    assert [r[2] for r in rows] == [data.index(b"\n") + 1, data.index(b"\n\xef\xbb\xbf\n") + 1, len(data)]
    assert reader.take_digest() == blake(data)
    resumed = open_reader(path, Format.JSONL, text_column="text", on_bad_row="error", position=rows[0][2], line=1,
                          rows_done=1)
    assert [row.values["id"] for row in resumed] == [2, 3] and resumed.rows_read == 3
