"""`structsent label` through the real command line: formats, crash and resume, bad input, pipes."""

import contextlib
import csv
import gc
import html
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import structsent

from ..conftest import children_of, is_running
from .conftest import PYTHON, read_jsonl_bytes
from .conftest import structsent as run_cli

# Subprocess tests of the real command line: CI runs them; `make test-fast` leaves them out.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clf(hf_model_dir):
    return structsent.load(hf_model_dir, device="cpu")


def model_args(hf_model_dir):
    return ["--model", hf_model_dir, "--quiet"]


def assert_matches_library(clf, texts, rows, prob_key="prob_正面", tolerance=1e-5):
    """Each output row carries the label the library gives for its text, in input order."""
    expected = clf(texts)
    assert len(rows) == len(texts)
    for text, row, result in zip(texts, rows, expected):
        assert row["label"] == result.label, text
        if result.ok:
            assert abs(float(row[prob_key]) - result.scores["正面"]) < tolerance
        else:
            assert row["error"] == result.error


def test_the_command_freezes_what_it_loaded_before_the_job(tmp_path, hf_model_dir, clf, real_reviews):
    from structsent.cli import main

    texts = real_reviews[:300]
    source = tmp_path / "in.csv"
    with open(source, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([["text"], *([t] for t in texts)])
    assert gc.get_freeze_count() == 0
    assert main(["label", str(source), "-o", str(tmp_path / "out.csv"), *model_args(str(hf_model_dir))]) == 0
    assert gc.get_freeze_count() > 0  # the model and the modules are out of the job's full collections
    with open(tmp_path / "out.csv", encoding="utf-8", newline="") as handle:
        assert_matches_library(clf, texts, list(csv.DictReader(handle)))


# -- round trips ---------------------------------------------------------------------------------
def test_a_token_budget_that_holds_the_model_s_positions_takes_any_larger_max_length(hf_model_dir, clf, reviews_file):
    """`--max-length 100000 --token-budget B` was refused (B under 100000), though texts are cut at
    the model's positions, which B holds; a budget under those positions is still refused."""
    positions = json.loads((hf_model_dir / "config.json").read_text())["max_position_embeddings"]
    out = run_cli("label", reviews_file, "--max-length", 100000, "--token-budget", positions,
                  *model_args(hf_model_dir)).stdout
    texts = reviews_file.read_text(encoding="utf-8").splitlines()
    assert_matches_library(clf, texts, read_jsonl_bytes(out))
    refused = run_cli("label", reviews_file, "--max-length", 100000, "--token-budget", positions - 1,
                      *model_args(hf_model_dir), check=False)
    assert refused.returncode == 2 and refused.stdout == b""
    assert refused.stderr.decode().splitlines()[-1] == (
        f"structsent: error: --token-budget {positions - 1}: must be at least max_length ({positions}, the model's positions)")


def test_txt_to_jsonl_on_stdout(hf_model_dir, clf, reviews_file):
    out = run_cli("label", reviews_file, *model_args(hf_model_dir)).stdout
    texts = reviews_file.read_text(encoding="utf-8").splitlines()
    rows = read_jsonl_bytes(out)
    assert [r["text"] for r in rows] == texts
    assert_matches_library(clf, texts, rows)
    assert sum(1 for r in rows if r["error"] == "empty text") == texts.count("   ")


@pytest.mark.parametrize("fmt,delimiter", [("csv", ","), ("tsv", "\t")])
def test_csv_and_tsv_keep_every_column_in_order(tmp_path, hf_model_dir, clf, real_reviews, fmt, delimiter):
    source = tmp_path / f"in.{fmt}"
    texts = [t.replace("\t", " ") for t in real_reviews[:150]]
    with open(source, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(["id", "text", "stars"])
        for i, text in enumerate(texts):
            writer.writerow([f"r{i}", text, i % 5])
    out = tmp_path / f"out.{fmt}"
    run_cli("label", source, "-o", out, *model_args(hf_model_dir))
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8")), delimiter=delimiter))
    assert list(rows[0]) == ["id", "text", "stars", "label", "score", "prob_负面", "prob_正面", "error"]
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(len(texts))]
    assert [r["text"] for r in rows] == texts and [r["stars"] for r in rows] == [str(i % 5) for i in range(len(texts))]
    assert_matches_library(clf, texts, rows)


def test_jsonl_keeps_fields_and_flags_null_text(tmp_path, hf_model_dir, clf, real_reviews):
    source = tmp_path / "in.jsonl"
    records = [{"text": t, "meta": {"n": i}} for i, t in enumerate(real_reviews[:80])]
    records[5]["text"] = None
    records[9]["text"] = ""
    records[11]["text"] = 7
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    run_cli("label", source, "-o", out, *model_args(hf_model_dir))
    rows = read_jsonl_bytes(out.read_bytes())
    assert [r["meta"] for r in rows] == [r["meta"] for r in records]
    # (a value that is no text names its line, as the reader's flags do: "not a string (got int)" did not)
    assert rows[5]["error"] == "line 6: missing text (None)" and rows[9]["error"] == "empty text"
    assert rows[11]["error"] == "line 12: not a string (got int)"
    assert rows[5]["label"] is None and rows[5]["score"] is None
    assert_matches_library(clf, [r["text"] for r in records], [{**r, "error": r["error"].split(": ", 1)[1]} if i in (5, 11) else r
                                                                for i, r in enumerate(rows)])


def test_parquet_round_trip_keeps_types(tmp_path, hf_model_dir, clf, real_reviews):
    texts = real_reviews[:120]
    table = pa.table({"id": pa.array(range(len(texts)), pa.int64()), "text": texts,
                      "price": pa.array([i * 1.5 for i in range(len(texts))])})
    source = tmp_path / "in.parquet"
    pq.write_table(table, source, row_group_size=50)
    out = tmp_path / "out.parquet"
    run_cli("label", source, "-o", out, "--chunk-rows", "32", *model_args(hf_model_dir))
    result = pq.read_table(out)
    assert result.schema.field("id").type == pa.int64() and result.schema.field("price").type == pa.float64()
    assert result.column("id").to_pylist() == list(range(len(texts)))
    assert_matches_library(clf, texts, result.to_pylist())


def test_parquet_binary_columns_are_read_and_written_as_their_utf8_text(tmp_path, hf_model_dir, clf):
    """Strings written without their UTF8 annotation (Hive, Impala, older Spark) are BINARY columns."""
    texts, shops = ["这家店的菜很好吃", "太差了，再也不来"], ["店A", "店B"]
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"shop": pa.array([s.encode() for s in shops], pa.binary()),
                             "text": pa.array([t.encode() for t in texts], pa.binary())}), source)
    for fmt in ("csv", "jsonl", "parquet"):
        out = tmp_path / f"out.{fmt}"
        run_cli("label", source, "-o", out, *model_args(hf_model_dir))
        if fmt == "csv":
            rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
            assert [(r["shop"], r["text"]) for r in rows] == list(zip(shops, texts))
        elif fmt == "jsonl":
            rows = read_jsonl_bytes(out.read_bytes())
            assert [(r["shop"], r["text"]) for r in rows] == list(zip(shops, texts))
        else:
            table = pq.read_table(out)
            assert table.schema.field("shop").type == pa.binary()  # Parquet keeps the input's type
            rows = table.to_pylist()
        assert_matches_library(clf, texts, rows)
    undecodable = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"shop": pa.array([b"\xff\xfe", "店".encode()], pa.binary()), "text": texts}), undecodable)
    proc = run_cli("label", undecodable, "-o", tmp_path / "bad.csv", *model_args(hf_model_dir), check=False)
    assert proc.returncode == 2 and "bytes that are not UTF-8" in proc.stderr.decode()
    assert not (tmp_path / "bad.csv").exists()


def test_csv_to_parquet_and_jsonl_to_csv(tmp_path, hf_model_dir, clf, real_reviews):
    texts = real_reviews[:40]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(texts)))
    as_csv = tmp_path / "out.csv"
    run_cli("label", source, "-o", as_csv, *model_args(hf_model_dir))
    rows = list(csv.DictReader(io.StringIO(as_csv.read_text(encoding="utf-8"))))
    assert [r["id"] for r in rows] == [str(i) for i in range(len(texts))]
    as_parquet = tmp_path / "out2.parquet"
    run_cli("label", as_csv, "-o", as_parquet, "--prefix", "p2_", *model_args(hf_model_dir))
    table = pq.read_table(as_parquet).to_pylist()
    assert [r["text"] for r in table] == texts and [r["label"] for r in table] == [r["label"] for r in rows]
    assert all(r["p2_label"] == r["label"] for r in table)


def test_id_column_keeps_only_the_id(tmp_path, hf_model_dir, reviews_file):
    out = run_cli("label", reviews_file, "--id-column", "line", *model_args(hf_model_dir)).stdout
    rows = read_jsonl_bytes(out)
    assert list(rows[0]) == ["line", "label", "score", "prob_负面", "prob_正面", "error"]
    assert [r["line"] for r in rows] == list(range(1, len(rows) + 1))


@pytest.mark.parametrize(("args", "name"), [(["--id-column", "score"], "score"),
                                            (["--id-column", "p_label", "--prefix", "p_"], "p_label")])
def test_a_line_number_column_named_as_an_added_column_is_refused_for_what_it_is(tmp_path, hf_model_dir,
                                                                                 reviews_file, args, name):
    # It was refused as a column "the input already has": plain text has none.
    proc = run_cli("label", reviews_file, "-o", tmp_path / "out.jsonl", *args, *model_args(hf_model_dir), check=False)
    assert proc.returncode == 2 and proc.stderr.decode().strip().splitlines() == [
        f"structsent: error: --id-column '{name}' names the line numbers of plain text with the name of a column "
        "the job adds; choose another name (e.g. --id-column line)"]
    assert not (tmp_path / "out.jsonl").exists() and list(tmp_path.iterdir()) == []


def test_id_column_missing_from_a_jsonl_row_is_an_error_or_a_flagged_row(tmp_path, hf_model_dir):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "text": "好评"}\n{"text": "差评"}\n', encoding="utf-8")
    proc = run_cli("label", source, "--id-column", "id", *model_args(hf_model_dir), check=False)
    assert proc.returncode == 2 and b"row 2 has no id column 'id'" in proc.stderr
    flagged = read_jsonl_bytes(run_cli("label", source, "--id-column", "id", "--on-bad-row", "flag",
                                       *model_args(hf_model_dir)).stdout)
    assert [r["id"] for r in flagged] == [1, None] and flagged[0]["label"] and flagged[1]["label"] is None
    assert "row 2 has no id column 'id'" in flagged[1]["error"]


def test_a_line_that_is_not_json_keeps_the_id_column_of_every_row(tmp_path, hf_model_dir):
    """With --id-column every output row has the same fields: a flagged line of bad JSON had no "id"
    (CSV output gave it an empty cell)."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "text": "好评"}\n{bad json\n{"id": 3, "text": "差评"}\n', encoding="utf-8")
    rows = read_jsonl_bytes(run_cli("label", source, "--id-column", "id", "--on-bad-row", "flag",
                                    *model_args(hf_model_dir)).stdout)
    assert [list(r) for r in rows] == [["id", "label", "score", "prob_负面", "prob_正面", "error"]] * 3
    assert [r["id"] for r in rows] == [1, None, 3] and "line 2: invalid JSON" in rows[1]["error"]
    assert [r["label"] is None for r in rows] == [False, True, False]


def test_a_json_lines_nan_is_refused_or_flagged_never_written_back_as_null(tmp_path, hf_model_dir):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "text": "好评"}\n{"id": 2, "text": "差评", "price": NaN}\n{"id": 3, "text": "好"}\n',
                      encoding="utf-8")
    out = tmp_path / "out.jsonl"
    proc = run_cli("label", source, "-o", out, *model_args(hf_model_dir), check=False)
    assert proc.returncode == 2 and b"line 2: NaN is not a JSON number" in proc.stderr
    assert b"Traceback" not in proc.stderr and not out.exists()
    run_cli("label", source, "-o", out, "--on-bad-row", "flag", *model_args(hf_model_dir))
    rows = read_jsonl_bytes(out.read_bytes())
    # The refused row keeps its id and other fields; the value that cannot be written back is null.
    assert len(rows) == 3 and [r.get("id") for r in rows] == [1, 2, 3]
    assert rows[1]["text"] == "差评" and rows[1]["price"] is None
    assert [r["label"] is not None for r in rows] == [True, False, True]
    assert "line 2: NaN is not a JSON number" in rows[1]["error"] and "NaN" not in out.read_text().split("error")[0]


def test_stdin_to_stdout_plain_and_jsonl(hf_model_dir, clf):
    texts = ["这家外卖送得很快，味道也不错", "差评，用了三天就坏了", "好评！"]
    plain = run_cli("label", "-", *model_args(hf_model_dir), input_bytes="\n".join(texts).encode()).stdout
    assert_matches_library(clf, texts, read_jsonl_bytes(plain))
    lines = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts).encode()
    as_jsonl = run_cli("label", "-", *model_args(hf_model_dir), input_bytes=lines).stdout
    assert_matches_library(clf, texts, read_jsonl_bytes(as_jsonl))


@pytest.mark.parametrize("first_line", [b"\n", b"\xef\xbb\xbf"], ids=["blank line", "byte-order mark"])
def test_stdin_jsonl_is_told_from_its_first_non_blank_line_however_slowly_it_arrives(hf_model_dir, clf, first_line):
    """The format of '-' was guessed from what happened to be buffered: a producer that wrote a blank
    line (or a byte-order mark) first and the rest later had its JSON labelled as review text."""
    texts = ["这家外卖送得很快，味道也不错", "差评，用了三天就坏了"]
    lines = "".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(texts))
    proc = subprocess.Popen([PYTHON, "-m", "structsent", "label", "-", *model_args(hf_model_dir), "--quiet"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(first_line)
    proc.stdin.flush()
    time.sleep(1.0)  # the command has started and looked at its input by now
    proc.stdin.write(lines.encode())
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode(errors="replace")
    rows = read_jsonl_bytes(out)
    assert [row["id"] for row in rows] == [0, 1]
    assert_matches_library(clf, texts, rows)


def test_stdin_closed_is_a_one_line_error(hf_model_dir):
    for flags in ([], ["--format", "txt"]):
        proc = subprocess.run([PYTHON, "-m", "structsent", "label", "-", *model_args(hf_model_dir), *flags],
                              capture_output=True, preexec_fn=lambda: os.close(0), timeout=120)
        assert proc.returncode == 2, proc.stderr.decode(errors="replace")
        assert proc.stderr.decode().strip().endswith("standard input is closed; give the input as a file, or pipe it in")


def test_csv_output_of_json_lines_whose_first_rows_are_flagged_does_not_depend_on_chunk_rows(tmp_path, hf_model_dir):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "text": "好", "text": "坏"}\n{"id": 2, "text": "难吃"}\n{"id": 3, "text": "不错"}\n',
                      encoding="utf-8")
    outputs = []
    for chunk_rows in ("1", "2", "1000"):
        out = tmp_path / f"out-{chunk_rows}.csv"
        run_cli("label", source, "-o", out, "--chunk-rows", chunk_rows, "--on-bad-row", "flag", *model_args(hf_model_dir))
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    rows = list(csv.DictReader(io.StringIO(outputs[0].decode("utf-8"))))
    assert [r["id"] for r in rows] == ["1", "2", "3"] and "appears more than once" in rows[0]["error"]
    assert rows[0]["text"] == "" and rows[0]["label"] == ""  # given twice: neither value is the row's


def test_attention_packed_drops_the_job_s_pad_multiple_and_one_given_is_refused_with_it(tmp_path, hf_model_dir,
                                                                                        real_reviews, capsys):
    """The job pads to multiples of 8 by default; --attention packed (torch) computes no padding, so that
    default steps aside, while a --pad-multiple the user gives is refused with it in one line."""
    from structsent.cli import main

    texts = real_reviews[:120]
    source = tmp_path / "in.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = ["label", str(source), "-o", str(out), "--backend", "torch", "--attention", "packed",
            "--chunk-rows", "50", "--model", str(hf_model_dir), "--quiet"]
    assert main(args) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["text"] for row in rows] == texts
    assert_matches_library(structsent.load(hf_model_dir, device="cpu", backend="torch", attention="padded"), texts,
                           rows)
    assert main([*args, "--overwrite", "--pad-multiple", "8"]) == 2
    assert capsys.readouterr().err.strip() == (
        "structsent: error: --attention packed computes no padding, and --pad-multiple 8 asks for texts padded to "
        "its multiples; use one of them (--attention auto pads then)")


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_a_flagged_first_json_lines_row_does_not_choose_the_output_columns(tmp_path, hf_model_dir, suffix):
    """A first row whose text field was misspelt (flagged) gave the CSV/Parquet columns ('id', 'txt'):
    every good row after it was refused ('text' not among the columns) and the job stopped, exit 2.
    The first row read without error chooses them; the flagged row is written without the field
    the output has no column for, and its error says so."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 0, "txt": "typo in key"}\n{"id": 1, "text": "好吃"}\n{"id": 2, "text": "难吃"}\n',
                      encoding="utf-8")
    out = tmp_path / f"out.{suffix}"
    run_cli("label", source, "-o", out, "--on-bad-row", "flag", *model_args(hf_model_dir))
    one_row_chunks = tmp_path / f"out-1.{suffix}"  # a first chunk of the flagged row alone: the same columns
    run_cli("label", source, "-o", one_row_chunks, "--on-bad-row", "flag", "--chunk-rows", "1", *model_args(hf_model_dir))
    assert one_row_chunks.read_bytes() == out.read_bytes() or suffix == "parquet"
    if suffix == "csv":
        rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(out).to_pylist()
    assert [(str(r["id"]), r["text"] or "") for r in rows] == [("0", ""), ("1", "好吃"), ("2", "难吃")]
    assert "no 'text' field" in rows[0]["error"] and "field(s) 'txt' are not among the output's columns" in rows[0]["error"]
    assert not rows[1]["error"] and not rows[2]["error"]
    if suffix == "parquet":
        import pyarrow.parquet as pq

        assert pq.read_table(one_row_chunks).equals(pq.read_table(out))


def test_summary_reports_counts_and_duplicates(hf_model_dir, reviews_file):
    proc = run_cli("label", reviews_file, "--model", hf_model_dir)
    summary = proc.stderr.decode()
    texts = reviews_file.read_text(encoding="utf-8").split("\n")[:-1]
    duplicates = len([t for t in texts if t.strip()]) - len({t for t in texts if t.strip()})
    assert f"{len(texts):,} rows" in summary and "rows/s" in summary and "padding waste" in summary
    assert f"engine: {hf_model_dir} (huggingface) on onnx fp32, cpu; max length 512 tokens" in summary
    assert f"flagged {texts.count('   ')}" in summary
    assert f"duplicates reused {duplicates:,}" in summary


def test_summary_counts_the_texts_cut_to_the_model_s_length_across_a_resume(tmp_path, hf_model_dir, monkeypatch,
                                                                            capsys):
    """A job of long reviews labelled their beginnings alone without a word (the output has no column
    for it): the summary says how many, counted over the whole job when it was resumed."""
    from structsent.cli import main

    texts = [("很好" * 40 if i % 3 == 0 else "很好") + str(i) for i in range(30)]
    source, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    args = ["label", str(source), "-o", str(out), "--model", str(hf_model_dir), "--max-length", "32", "--chunk-rows", "10"]
    with monkeypatch.context() as interrupted:
        ctrl_c_in_chunk(interrupted, 2)
        assert main(args) == 130
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    summary = capsys.readouterr().err
    assert "30 rows (20 done before resuming): " in summary, summary
    assert "; 10 cut to --max-length tokens (--long-text windows reads a long text whole)" in summary, summary
    assert [json.loads(line)["text"] for line in out.read_text(encoding="utf-8").splitlines()] == texts
    assert main([*args, "--long-text", "windows", "--overwrite"]) == 0
    summary = capsys.readouterr().err
    assert "30 rows: " in summary and "cut to --max-length" not in summary


def test_names_holding_bytes_that_are_not_utf8_are_labelled_interrupted_and_resumed(tmp_path, hf_model_dir,
                                                                                    monkeypatch, capsys):
    """A file named b"in\\xff.csv" stopped the job with a traceback (the resume manifest could not
    hold the name: "surrogates not allowed"), its work files left behind."""
    from structsent.cli import main

    directory = os.fsencode(tmp_path)
    source, out, page = (os.fsdecode(directory + name) for name in (b"/in\xff.csv", b"/out\xff.csv", b"/r\xff.html"))
    texts = [f"第{i}条：很好吃" for i in range(30)]
    with open(source, "w", encoding="utf-8") as handle:
        handle.write("id,text\n" + "".join(f"{i},{t}\n" for i, t in enumerate(texts)))
    args = ["label", source, "-o", out, "--model", str(hf_model_dir), "--chunk-rows", "10", "--report", page]
    with monkeypatch.context() as interrupted:
        ctrl_c_in_chunk(interrupted, 2)
        assert main(args) == 130
    err = capsys.readouterr().err
    assert "interrupted after 20 rows; to finish, run: " in err and "Traceback" not in err, err
    assert main([*args, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "30 rows (20 done before resuming)" in err and "report: " in err and "r\\xff.html" in err, err
    with open(out, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["id"] for row in rows] == [str(i) for i in range(30)] and all(row["label"] for row in rows)
    assert sorted(os.listdir(directory)) == sorted([b"in\xff.csv", b"out\xff.csv", b"r\xff.html"])


# -- crash, interrupt and resume -------------------------------------------------------------------
def _wait_for_rows(manifest, at_least, proc, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads(manifest.read_text())["rows_done"] >= at_least:
                return
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.01)


def write_numbered_csv(path, texts) -> None:
    """A CSV file of columns n (the row's number from 0) and text."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([["n", "text"], *[[i, t] for i, t in enumerate(texts)]])


def _start(args):
    return subprocess.Popen([PYTHON, "-m", "structsent", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


@pytest.mark.slow
@pytest.mark.parametrize("suffix", ["csv", "jsonl", "parquet"])
def test_sigkill_at_several_points_then_resume_is_identical(tmp_path, hf_model_dir, reviews_file, suffix):
    source = tmp_path / f"in.{suffix}"
    texts = reviews_file.read_text(encoding="utf-8").splitlines()
    if suffix == "csv":
        write_numbered_csv(source, texts)
    elif suffix == "jsonl":
        source.write_text("".join(json.dumps({"n": i, "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(texts)))
    else:
        pq.write_table(pa.table({"n": list(range(len(texts))), "text": texts}), source, row_group_size=700)
    common = ["label", source, "--chunk-rows", "64", *model_args(hf_model_dir)]
    reference = tmp_path / f"reference.{suffix}"
    run_cli(*common, "-o", reference)

    out = tmp_path / f"out.{suffix}"
    manifest = tmp_path / f"out.{suffix}.manifest.json"
    proc = _start([*common, "-o", out])
    time.sleep(0.5)  # killed before or around its first commit
    proc.kill()
    proc.wait()
    for threshold in (200, 900, 1800):
        proc = _start([*common, "-o", out, "--resume"] if manifest.exists() else [*common, "-o", out, "--overwrite"])
        _wait_for_rows(manifest, threshold, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert manifest.exists(), "the job finished before it could be killed; make the input larger"
    run_cli(*common, "-o", out, "--resume")
    assert not manifest.exists()
    if suffix == "parquet":
        assert pq.read_table(out).to_pylist() == pq.read_table(reference).to_pylist()
    else:
        assert out.read_bytes() == reference.read_bytes()
    rows = pq.read_table(out).to_pylist() if suffix == "parquet" else (
        read_jsonl_bytes(out.read_bytes()) if suffix == "jsonl" else list(csv.DictReader(io.StringIO(out.read_text()))))
    assert [int(r["n"]) for r in rows] == list(range(len(texts)))  # none lost, none duplicated, in order


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_stops_after_the_chunk_and_prints_how_to_resume(tmp_path, hf_model_dir, reviews_file, signum, code):
    """SIGTERM (a service manager, `docker stop`) killed the job mid-chunk without a word, its lock left."""
    out = tmp_path / "out.jsonl"
    args = ["label", reviews_file, "-o", out, "--chunk-rows", "64", "--model", hf_model_dir]
    proc = _start(args)
    _wait_for_rows(tmp_path / "out.jsonl.manifest.json", 64, proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err.decode()
    assert "--resume" in err.decode() and "interrupted after" in err.decode() and "Traceback" not in err.decode()
    assert not (tmp_path / "out.jsonl.lock").exists()
    run_cli(*args, "--resume", "--quiet")
    texts = reviews_file.read_text(encoding="utf-8").splitlines()
    assert [r["text"] for r in read_jsonl_bytes(out.read_bytes())] == texts


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, said", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "terminated")])
def test_a_second_signal_stops_at_once_as_its_signal_and_says_how_to_resume(tmp_path, real_reviews, signum, code,
                                                                            said):
    """A second SIGTERM ended the job as Ctrl-C does (exit 130, "interrupted"), and a stop at once
    after commits said nothing of the resume that finishes the job."""
    texts = [f"{i} {t}".replace("\n", " ") for i, t in enumerate((real_reviews * 8)[:6000])]
    source, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    args = ["label", source, "-o", out, "--chunk-rows", "1500", "--model", "default"]
    proc = _start(args)
    _wait_for_rows(tmp_path / "out.jsonl.manifest.json", 1500, proc)
    proc.send_signal(signum)
    time.sleep(0.3)  # in the next chunk's work, which the first signal lets finish
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == code, err.decode()
    assert lines[-1].startswith(f"structsent: {said}; to finish, run: ") and "--resume" in lines[-1], lines
    assert "Traceback" not in err.decode() and not (tmp_path / "out.jsonl.lock").exists()
    run_cli(*args, "--resume", "--quiet")
    assert [r["text"] for r in read_jsonl_bytes(out.read_bytes())] == texts


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_two_signals_in_one_native_call_count_as_two(signum):
    """Two Ctrl-C sent while the main thread was inside one long model call ran the handler once:
    the job took them for one and finished its chunk (16.8 s in a tester's run)."""
    import hashlib
    import threading

    from structsent._exit import Terminated
    from structsent.cli.label import _stop_after_chunk_on_interrupt

    def send_two():
        time.sleep(0.2)
        os.kill(os.getpid(), signum)
        time.sleep(0.1)
        os.kill(os.getpid(), signum)

    stop = threading.Event()
    sender = threading.Thread(target=send_two)
    with pytest.raises(Terminated if signum == signal.SIGTERM else KeyboardInterrupt):
        with _stop_after_chunk_on_interrupt(stop):
            sender.start()
            began = time.perf_counter()
            hashlib.pbkdf2_hmac("sha256", b"x", b"y", 4_000_000)  # ~1 s of native code, no handler inside
            assert time.perf_counter() - began > 0.35, "make the native call longer: both signals must come in it"
            sender.join()
            for _ in range(100):  # (a handler runs between bytecodes: it must have run by now)
                time.sleep(0.001)
    assert signal.set_wakeup_fd(-1) == -1  # the wakeup descriptor was put back as it was


def test_one_signal_in_a_native_call_still_finishes_the_chunk():
    import hashlib
    import threading

    from structsent.cli.label import _stop_after_chunk_on_interrupt

    stop = threading.Event()
    with _stop_after_chunk_on_interrupt(stop) as interrupt:
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()
        hashlib.pbkdf2_hmac("sha256", b"x", b"y", 800_000)
        for _ in range(100):
            time.sleep(0.001)
        assert stop.is_set() and interrupt.signum == signal.SIGINT


@pytest.mark.parametrize("report", [False, True])
def test_a_stop_during_the_last_chunk_finishes_the_job(tmp_path, hf_model_dir, clf, real_reviews, monkeypatch,
                                                      capsys, report):
    """Ctrl-C while the last chunk was labelled left a complete output unrenamed, said "interrupted
    after N rows" and exit 130; the --resume it advised only renamed it. The job is complete: its
    output is finished (exit 0); a report asked for is not started (exit 130, the command to make it)."""
    from structsent.cli import main

    texts = [t.replace("\n", " ") for t in real_reviews[:120]]
    source, out, page = tmp_path / "in.csv", tmp_path / "out.csv", tmp_path / "report.html"
    with open(source, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([["shop", "review"], *([f"s{i % 3}", t] for i, t in enumerate(texts))])
    calls = ctrl_c_in_chunk(monkeypatch, 3)  # rows 80-119: the last chunk
    args = ["label", str(source), "-o", str(out), "--chunk-rows", "40", "--model", str(hf_model_dir),
            "--text-column", "review"]
    code = main([*args, *(["--report", str(page), "--report-by", "shop"] if report else [])])
    err = capsys.readouterr().err
    assert calls == [40, 40, 40]
    assert code == (130 if report else 0), err
    assert "the stop came during the last chunk: the job is complete" in err and "interrupted" not in err
    assert not page.exists()
    if report:  # the command that makes the page --report would have made, --report-by included
        command = f"structsent report {out} -o {page} --by shop --text-column review"
        assert f"the report was not written: {command} makes it" in err
        assert main(shlex.split(command)[1:]) == 0 and "shop" in page.read_text(encoding="utf-8")
        page.unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv"]  # no work files, no lock
    with open(out, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
        assert [r["review"] for r in rows] == texts
        assert_matches_library(clf, texts, rows)


def test_a_stop_during_a_chunk_before_the_last_still_stops_the_job(tmp_path, hf_model_dir, real_reviews,
                                                                   monkeypatch, capsys):
    from structsent.cli import main

    texts = [t.replace("\n", " ") for t in real_reviews[:120]]
    source, out = tmp_path / "in.txt", tmp_path / "out.csv"
    source.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    calls = ctrl_c_in_chunk(monkeypatch, 2)
    args = ["label", str(source), "-o", str(out), "--chunk-rows", "40", "--model", str(hf_model_dir)]
    assert main(args) == 130
    assert calls == [40, 40] and "interrupted after 80 rows; to finish, run: " in capsys.readouterr().err
    assert not out.exists() and (tmp_path / "out.csv.manifest.json").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_the_job_was_started_ignoring_stays_ignored(tmp_path, hf_model_dir, real_reviews, signum):
    """`structsent label ... &` in a script starts it with SIGINT ignored (a launcher may ignore
    SIGTERM); the job's own handler took it back, and a Ctrl-C meant for the script stopped the
    background job (exit 130)."""
    texts = [t.replace("\n", " ") for t in real_reviews[:200]]
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen([PYTHON, "-m", "structsent", "label", "-", "-o", str(out), "--chunk-rows", "16",
                             "--model", hf_model_dir, "--quiet"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signum, signal.SIG_IGN))
    proc.stdin.write("".join(t + "\n" for t in texts[:100]).encode())
    proc.stdin.flush()
    _wait_for_rows(tmp_path / "out.jsonl.manifest.json", 16, proc)
    assert proc.poll() is None
    proc.send_signal(signum)
    time.sleep(0.5)
    proc.stdin.write("".join(t + "\n" for t in texts[100:]).encode())
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0, proc.stderr.read().decode()
    assert [r["text"] for r in read_jsonl_bytes(out.read_bytes())] == texts


def test_an_error_is_one_line_even_where_its_message_quotes_a_line_break(tmp_path, hf_model_dir):
    """A name holding a line break (or a library's reason spanning lines) split the error over two lines."""
    proc = run_cli("label", tmp_path / "no\nsuch.csv", "-o", tmp_path / "out.csv", *model_args(hf_model_dir),
                   check=False)
    said = proc.stderr.decode()
    assert proc.returncode == 2 and said.count("\n") == 1 and said.startswith("structsent: error: ")
    assert "no\\nsuch.csv: no such file" in said  # the break written as \n: a space would name another file


@pytest.mark.parametrize("name", ["plain.csv", "with space.csv", "it's.csv", "a\nb.csv", "tab\there.csv",
                                  "back\\slash'\n.csv", "\x85\u2028\U000e0001.csv", "u\u3000out.csv", "bad\udcff.csv", "$HOME.csv"])
def test_names_in_the_commands_a_message_suggests_are_the_same_names_to_bash(name):
    """shlex left a line break raw (the message split over two lines; joined, it named another file)."""
    from structsent.cli.label import shell_quoted

    quoted = shell_quoted(name)
    assert "\n" not in quoted
    for locale in ("C.UTF-8", "C"):  # (bash's \\u escapes need a UTF-8 locale: characters are kept as they are)
        said = subprocess.run(["bash", "-c", f"printf %s {quoted}"], capture_output=True, check=True,
                              env={**os.environ, "LC_ALL": locale}).stdout
        assert said == os.fsencode(name), locale


def test_existing_output_is_not_overwritten(tmp_path, hf_model_dir, reviews_file):
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    proc = run_cli("label", reviews_file, "-o", out, *model_args(hf_model_dir), check=False)
    assert proc.returncode == 2 and b"--overwrite" in proc.stderr
    assert out.read_text() == "precious\n"


def test_resume_refuses_a_changed_input_or_model(tmp_path, hf_model_dir, modelscope_dirs, real_reviews):
    source = tmp_path / "in.txt"
    source.write_text("\n".join(real_reviews[:300]) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = ["label", source, "-o", out, "--chunk-rows", "16", "--model", hf_model_dir]
    proc = _start(args)
    _wait_for_rows(tmp_path / "out.jsonl.manifest.json", 16, proc)
    proc.kill()
    proc.wait()
    other_model = run_cli("label", source, "-o", out, "--resume", "--quiet", "--model", modelscope_dirs["bert"], check=False)
    said = other_model.stderr.decode()
    assert other_model.returncode == 2 and "cannot resume: the model's" in said and "since the job began" in said
    with open(source, "a", encoding="utf-8") as handle:
        handle.write("追加的一行\n")
    changed = run_cli(*args, "--resume", "--quiet", check=False)
    assert changed.returncode == 2 and b"changed since the job began" in changed.stderr


# -- bad input -----------------------------------------------------------------------------------
def test_missing_column_names_the_columns(tmp_path, hf_model_dir):
    source = tmp_path / "in.csv"
    source.write_text("id,review\n1,好评\n", encoding="utf-8")
    proc = run_cli("label", source, *model_args(hf_model_dir), check=False)
    assert proc.returncode == 2
    message = proc.stderr.decode()
    assert "'id'" in message and "'review'" in message and "--text-column" in message
    assert "Traceback" not in message and len(message.strip().splitlines()) == 1


def test_invalid_utf8_error_names_line_and_offset_or_is_flagged(tmp_path, hf_model_dir):
    source = tmp_path / "in.txt"
    source.write_bytes("好评\n".encode() + b"bad \xff byte\n" + "差评\n".encode())
    proc = run_cli("label", source, *model_args(hf_model_dir), check=False)
    assert proc.returncode == 2 and b"line 2, byte offset 11" in proc.stderr
    flagged = read_jsonl_bytes(run_cli("label", source, "--on-bad-row", "flag", *model_args(hf_model_dir)).stdout)
    assert len(flagged) == 3 and flagged[1]["label"] is None and "invalid UTF-8" in flagged[1]["error"]
    assert flagged[0]["label"] is not None and flagged[2]["label"] is not None


def test_malformed_csv_rows(tmp_path, hf_model_dir):
    wrong_count = tmp_path / "count.csv"
    wrong_count.write_text("id,text\n1,好评\n2,差评,extra\n3,一般\n", encoding="utf-8")
    proc = run_cli("label", wrong_count, *model_args(hf_model_dir), check=False)
    assert proc.returncode == 2 and b"line 3: expected 2 fields, got 3" in proc.stderr
    rows = list(csv.DictReader(io.StringIO(run_cli("label", wrong_count, "--on-bad-row", "flag",
                                                   *model_args(hf_model_dir)).stdout.decode())))
    assert [r["id"] for r in rows] == ["1", "", "3"] and "expected 2 fields" in rows[1]["error"]

    unbalanced = tmp_path / "quote.csv"
    unbalanced.write_text('id,text\n1,好评\n2,"差评\n3,一般\n', encoding="utf-8")
    proc = run_cli("label", unbalanced, *model_args(hf_model_dir), check=False)
    assert proc.returncode == 2 and b"line 3" in proc.stderr and b"quote" in proc.stderr


def test_missing_input_and_unwritable_output(tmp_path, hf_model_dir):
    missing = run_cli("label", tmp_path / "nope.csv", *model_args(hf_model_dir), check=False)
    assert missing.returncode == 2 and b"no such file" in missing.stderr and b"Traceback" not in missing.stderr
    source = tmp_path / "in.txt"
    source.write_text("好评\n")
    unwritable = run_cli("label", source, "-o", tmp_path / "no" / "dir" / "out.csv", *model_args(hf_model_dir), check=False)
    assert unwritable.returncode == 2 and b"does not exist" in unwritable.stderr and b"Traceback" not in unwritable.stderr


def test_help_and_unknown_model_exit_codes(tmp_path):
    assert b"--resume" in run_cli("label", "--help").stdout
    source = tmp_path / "in.txt"
    source.write_text("好评\n")
    proc = run_cli("label", source, "--model", tmp_path / "missing-model", check=False)
    assert proc.returncode == 3 and b"no such model directory" in proc.stderr


def test_report_flag_writes_a_report_of_the_output(tmp_path, hf_model_dir, real_reviews):
    source = tmp_path / "in.csv"
    with open(source, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([["id", "text", "date"], *[[i, t, f"2026-01-{1 + i % 28:02d}"]
                                                                for i, t in enumerate(real_reviews[:60])]])
    out, report = tmp_path / "out.csv", tmp_path / "report.html"
    run_cli("label", source, "-o", out, "--report", report, "--report-by", "date", *model_args(hf_model_dir))
    page = report.read_text(encoding="utf-8")
    assert 'id="total-rows">60<' in page and 'id="job-figures"' in page
    for name, value in (("backend", "onnx"), ("precision", "fp32"), ("max_length", "512"), ("long_text", "truncate")):
        assert f'<th scope="row">{name}</th><td>{value}</td>' in page, name  # what labelled the rows
    no_file = run_cli("label", source, "--report", report, *model_args(hf_model_dir), check=False)
    assert no_file.returncode == 2 and b"--report needs an output file" in no_file.stderr


@pytest.mark.parametrize(("path", "says"), [
    ("", "the report's path is empty: name the HTML file to write (--report report.html)"),
    ("-", "--report -: the report is a file, not standard output: name the HTML file (--report report.html)"),
], ids=["empty", "standard output"])
def test_a_report_path_refused_is_named_as_the_report_flag(tmp_path, hf_model_dir, path, says):
    """They said "-o report.html", the report command's flag: in `label`, -o names the job's output."""
    source = tmp_path / "in.txt"
    source.write_text("好评\n", encoding="utf-8")
    proc = run_cli("label", source, "-o", tmp_path / "out.csv", "--report", path, *model_args(hf_model_dir),
                   check=False)
    assert proc.returncode == 2 and proc.stderr.decode() == f"structsent: error: {says}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_the_report_shows_the_column_the_job_labelled(tmp_path, hf_model_dir, real_reviews):
    """`label --text-column review --report` showed the first column (order ids) as the rows' text."""
    source = tmp_path / "in.csv"
    with open(source, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([["order_id", "review"], *[[f"ORD-{i:05d}", t] for i, t in enumerate(real_reviews[:30])]])
    out, report = tmp_path / "out.csv", tmp_path / "report.html"
    run_cli("label", source, "-o", out, "--text-column", "review", "--report", report, *model_args(hf_model_dir))
    page = report.read_text(encoding="utf-8")
    cells = page.split('id="least-certain-rows"', 1)[1]
    assert ">review<" in cells and any(f">{html.escape(t, quote=False)}<" in cells for t in real_reviews[:30])
    assert "ORD-0" not in cells
    # a file of one column is labelled whatever its name, without --text-column: its report too
    alone = tmp_path / "alone.csv"
    with open(alone, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([["review"], *[[t] for t in real_reviews[:30]]])
    run_cli("label", alone, "-o", tmp_path / "alone.out.csv", "--report", report, "--overwrite", *model_args(hf_model_dir))
    cells = report.read_text(encoding="utf-8").split('id="least-certain-rows"', 1)[1]
    assert ">review<" in cells and any(f">{html.escape(t, quote=False)}<" in cells for t in real_reviews[:30])


@pytest.mark.slow
def test_tokenizer_processes_write_the_same_bytes_and_survive_sigkill(tmp_path, hf_model_dir, reviews_file):
    source, texts = tmp_path / "in.csv", reviews_file.read_text(encoding="utf-8").splitlines()
    write_numbered_csv(source, texts)
    common = ["label", source, "--chunk-rows", "64", *model_args(hf_model_dir)]
    reference = tmp_path / "reference.csv"
    run_cli(*common, "-o", reference)
    together = tmp_path / "together.csv"
    run_cli(*common, "-o", together, "--tokenizer-processes", "2")
    assert together.read_bytes() == reference.read_bytes()

    out, manifest = tmp_path / "out.csv", tmp_path / "out.csv.manifest.json"
    proc = _start([*common, "-o", out, "--tokenizer-processes", "2"])
    _wait_for_rows(manifest, 900, proc)
    workers = children_of(proc.pid, running="spawn_main")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert manifest.exists(), "the job finished before it could be killed; make the input larger"
    assert workers, "no tokenizer process was running"
    deadline = time.time() + 20
    while time.time() < deadline and any(map(is_running, workers)):
        time.sleep(0.1)
    assert not any(map(is_running, workers)), "tokenizer processes outlived the killed job"
    run_cli(*common, "-o", out, "--resume", "--tokenizer-processes", "2")
    assert out.read_bytes() == reference.read_bytes()
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [int(r["n"]) for r in rows] == list(range(len(texts)))  # none lost, none duplicated, in order


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_stops_a_job_with_tokenizer_processes_cleanly(tmp_path, hf_model_dir, reviews_file):
    """Ctrl-C reaches the whole process group, workers included: the job still stops after its
    chunk (exit 130, resumable), and the resumed file is the uninterrupted one."""
    import os

    out = tmp_path / "out.jsonl"
    args = ["label", reviews_file, "-o", out, "--chunk-rows", "64", "--model", hf_model_dir]
    run_cli(*args[:3], tmp_path / "reference.jsonl", *args[4:])
    proc = subprocess.Popen([PYTHON, "-m", "structsent", *map(str, args), "--tokenizer-processes", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    _wait_for_rows(tmp_path / "out.jsonl.manifest.json", 256, proc)
    workers = children_of(proc.pid, running="spawn_main")
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal does
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert "--resume" in err.decode() and "interrupted after" in err.decode()
    assert workers and not any(map(is_running, workers))
    run_cli(*args, "--resume", "--quiet", "--tokenizer-processes", "2")
    assert out.read_bytes() == (tmp_path / "reference.jsonl").read_bytes()


@pytest.mark.slow
def test_a_bad_row_stops_the_job_after_the_same_rows_with_or_without_tokenizer_processes(tmp_path, hf_model_dir,
                                                                                          real_reviews):
    """Chunks read before the bad row are labelled and written first, also when workers were
    still tokenizing them: the output is the in-process job's, row for row."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([["n", "text"], *[[i, t] for i, t in enumerate(real_reviews[:800])]])
    source = tmp_path / "in.csv"
    source.write_bytes(buffer.getvalue().encode("utf-8") + b"800,\xff\xfe not UTF-8\n801,fine\n")
    outputs = []
    for processes in ("0", "2"):
        proc = run_cli("label", source, "--chunk-rows", "64", "--tokenizer-processes", processes,
                       *model_args(hf_model_dir), check=False)
        assert proc.returncode == 2 and b"Traceback" not in proc.stderr, proc.stderr
        outputs.append(proc.stdout)
    assert outputs[0] == outputs[1]
    rows = list(csv.DictReader(io.StringIO(outputs[1].decode("utf-8"))))
    assert [int(r["n"]) for r in rows] == list(range(768))  # every whole chunk before the bad row, in order


@pytest.mark.slow
def test_a_killed_tokenizer_process_stops_the_job_with_one_line_and_resume_finishes_it(tmp_path, hf_model_dir,
                                                                                        reviews_file):
    source, texts = tmp_path / "in.csv", reviews_file.read_text(encoding="utf-8").splitlines()
    write_numbered_csv(source, texts)
    common = ["label", source, "--chunk-rows", "64", *model_args(hf_model_dir)]
    reference, out = tmp_path / "reference.csv", tmp_path / "out.csv"
    run_cli(*common, "-o", reference)
    proc = _start([*common, "-o", out, "--tokenizer-processes", "1"])
    _wait_for_rows(tmp_path / "out.csv.manifest.json", 300, proc)
    workers = children_of(proc.pid, running="spawn_main")
    assert workers and proc.poll() is None, "the job finished before its worker could be killed"
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    message = err.decode()
    assert proc.returncode != 0 and "Traceback" not in message, message
    assert "tokenizer process stopped unexpectedly" in message and "--resume" in message
    assert len(message.strip().splitlines()) == 1
    run_cli(*common, "-o", out, "--resume", "--tokenizer-processes", "1")
    assert out.read_bytes() == reference.read_bytes()  # none lost, none duplicated, in order


def test_tokenizer_processes_are_for_the_local_engine(tmp_path, hf_model_dir, reviews_file):
    proc = run_cli("label", reviews_file, "-o", tmp_path / "out", "--engine", "ray", "--tokenizer-processes", "2",
                   "--model", hf_model_dir, check=False)
    assert proc.returncode == 2 and b"--tokenizer-processes is for --engine local" in proc.stderr
    proc = run_cli("label", reviews_file, "-o", tmp_path / "out.csv", "--tokenizer-processes", "-1",
                   "--model", hf_model_dir, check=False)
    assert proc.returncode == 2 and b"--tokenizer-processes must be at least 0" in proc.stderr
    too_many = len(os.sched_getaffinity(0)) + 1
    proc = run_cli("label", reviews_file, "-o", tmp_path / "out.csv", "--tokenizer-processes", too_many,
                   "--model", hf_model_dir, check=False)
    assert proc.returncode == 2 and f"--tokenizer-processes {too_many}: this job may use".encode() in proc.stderr
    assert b"Traceback" not in proc.stderr and not (tmp_path / "out.csv").exists()


def test_tokenizer_processes_out_of_range_are_said_so_before_the_engine_is_looked_at(tmp_path, reviews_file, capsys,
                                                                                     monkeypatch):
    """With --engine ray, -1 was told "--tokenizer-processes is for --engine local" (a truthiness test)."""
    from structsent.cli import main

    monkeypatch.setattr("structsent.cli.label._run_on_ray", lambda args: 0)  # no Ray job: the flags alone
    ray = ["label", str(reviews_file), "-o", str(tmp_path / "out"), "--engine", "ray"]
    assert main([*ray, "--tokenizer-processes", "-1"]) == 2
    assert capsys.readouterr().err == "structsent: error: --tokenizer-processes must be at least 0\n"
    too_many = len(os.sched_getaffinity(0)) + 1
    assert main([*ray, "--tokenizer-processes", str(too_many)]) == 2
    assert f"--tokenizer-processes {too_many}: this job may use" in capsys.readouterr().err
    assert main([*ray, "--tokenizer-processes", "1"]) == 2
    assert "--tokenizer-processes is for --engine local" in capsys.readouterr().err
    assert main([*ray, "--tokenizer-processes", "0"]) == 0  # in range, and in-process: what Ray actors do anyway


@pytest.mark.slow
def test_sigterm_to_the_process_group_with_tokenizer_processes_stops_as_one_signal(tmp_path, hf_model_dir,
                                                                                 reviews_file):
    """`kill -TERM -PGID` (systemd's default, a terminal's hang-up) also ended the tokenizer processes:
    "a tokenizer process stopped unexpectedly", exit 1, when the job was waiting on them."""
    source, texts = tmp_path / "in.csv", reviews_file.read_text(encoding="utf-8").splitlines() * 4
    write_numbered_csv(source, texts)
    out = tmp_path / "out.csv"
    args = ["label", source, "-o", out, "--chunk-rows", "64", "--tokenizer-processes", "2", "--model", hf_model_dir]
    proc = subprocess.Popen([PYTHON, "-m", "structsent", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(children_of(proc.pid, running="spawn_main")) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err.decode()
    assert "--resume" in err.decode() and "Traceback" not in err.decode() and "unexpectedly" not in err.decode()
    run_cli(*args, "--resume", "--quiet")
    with open(out, encoding="utf-8", newline="") as handle:
        assert [int(row["n"]) for row in csv.DictReader(handle)] == list(range(len(texts)))


SLOW_LOAD = """
import sys, time
from pathlib import Path
import structsent
from structsent.cli import main

def slow_load(*args, **kwargs):
    Path(sys.argv[1]).touch()
    time.sleep(60)

structsent.load = slow_load
sys.exit(main(sys.argv[2:]))
"""


def test_sigterm_while_the_model_loads_is_one_line_and_exit_143(tmp_path):
    """The command died of the signal (exit -15) without a word; Ctrl-C there said "interrupted"."""
    source, marker = tmp_path / "in.txt", tmp_path / "loading"
    source.write_text("好评\n", encoding="utf-8")
    proc = subprocess.Popen([PYTHON, "-c", SLOW_LOAD, str(marker), "label", str(source), "-o", str(tmp_path / "o.jsonl")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and err.decode().strip() == "structsent: terminated"


def test_a_report_by_column_a_piped_input_lacks_is_said_with_the_labels_flag_and_the_output_kept(tmp_path,
                                                                                            hf_model_dir):
    """A pipe's header is known only once labelled: the report then failed with "no column 'nope'
    for --by", a flag of another command, and said nothing of the output it had written."""
    out, report = tmp_path / "out.csv", tmp_path / "report.html"
    proc = run_cli("label", "-", "--format", "csv", "-o", out, "--report", report, "--report-by", "nope",
                   *model_args(hf_model_dir), input_bytes="id,text\n1,好吃\n2,难吃\n".encode(), check=False)
    message = proc.stderr.decode().strip().splitlines()[-1]  # (a first use's export notice may come before it)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr.decode(), message
    assert message.startswith(f"structsent: error: {out} is written, but not the report: ")
    assert "no column 'nope' for --report-by;" in message
    assert [line.split(",")[:2] for line in out.read_text(encoding="utf-8").splitlines()] == [
        ["id", "text"], ["1", "好吃"], ["2", "难吃"]]
    assert not report.exists()


@pytest.mark.parametrize("redirected_from", ["out.csv.lock", "out.csv.partial", "out.csv", "out.csv.parts/x"])
def test_standard_input_redirected_from_one_of_the_jobs_own_files_is_refused(tmp_path, redirected_from):
    """`label - -o out.csv < out.csv.lock` labelled the lock's PID as data and then deleted the input;
    `< out.csv.partial` deleted it at the start; `< out.csv --overwrite` replaced it. Standard input
    that is a regular file is checked as a path is: exit 2, the file as it was."""
    source = tmp_path / redirected_from
    source.parent.mkdir(exist_ok=True)
    source.write_bytes("id,text\n1,好吃\n2,难吃\n".encode("utf-8"))
    before = source.read_bytes()
    with open(source, "rb") as stdin:
        proc = subprocess.run([PYTHON, "-m", "structsent", "label", "-", "--format", "csv", "-o", "out.csv",
                               "--overwrite"], stdin=stdin, capture_output=True, cwd=tmp_path, timeout=120)
    message = proc.stderr.decode()
    assert proc.returncode == 2 and message.count("\n") == 1 and "Traceback" not in message, message
    assert "-: standard input is" in message and "write the output to another path" in message, message
    assert source.read_bytes() == before
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == [redirected_from]


def test_standard_input_from_another_file_is_labelled(tmp_path):
    source = tmp_path / "in.csv"
    source.write_bytes("id,text\n1,好吃\n2,难吃\n".encode("utf-8"))
    with open(source, "rb") as stdin:
        proc = subprocess.run([PYTHON, "-m", "structsent", "label", "-", "--format", "csv", "-o", "out.csv",
                               "--quiet"], stdin=stdin, capture_output=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text(encoding="utf-8"))))
    assert [row["id"] for row in rows] == ["1", "2"] and all(row["label"] for row in rows)


@pytest.mark.parametrize("name", ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"])
def test_an_output_naming_standard_output_on_a_pipe_is_refused_as_a_pipe(tmp_path, name):
    """`-o /dev/stdout` with standard output a pipe resolved to "/proc/PID/fd/pipe:[N]", no path:
    the job failed making "pipe:[N].lock" (exit 1) and advised --resume."""
    source = tmp_path / "in.csv"
    source.write_text("text\n好\n", encoding="utf-8")
    proc = subprocess.run([PYTHON, "-m", "structsent", "label", str(source), "-o", name], capture_output=True,
                          cwd=tmp_path, timeout=120)
    message = proc.stderr.decode()
    assert proc.returncode == 2 and message.count("\n") == 1, message
    assert message == f"structsent: error: {name}: is a named pipe; name a regular file to write (or -o - for " \
                      "standard output)\n"
    assert proc.stdout == b"" and sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_a_report_onto_the_file_standard_input_comes_from_is_refused(tmp_path):
    """`label - --report in.csv --overwrite < in.csv` wrote the page over the input, which a named
    input refuses ("the report would overwrite the job's input")."""
    source = tmp_path / "in.csv"
    source.write_bytes("id,text\n1,好吃\n".encode("utf-8"))
    before = source.read_bytes()
    with open(source, "rb") as stdin:
        proc = subprocess.run([PYTHON, "-m", "structsent", "label", "-", "--format", "csv", "-o", "out.csv",
                               "--report", "in.csv", "--overwrite"], stdin=stdin, capture_output=True,
                              cwd=tmp_path, timeout=120)
    message = proc.stderr.decode()
    assert proc.returncode == 2 and message.count("\n") == 1, message
    assert "in.csv: the report would overwrite the job's input (standard input's file)" in message, message
    assert source.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


@pytest.mark.parametrize("name, data", [
    ("semi2.csv", "id;text\n0;差评，用了三天就坏了\n4;还行吧\n".encode()),
    ("hint.csv", "sep=;\nid;text\n4;还行吧\n".encode()),
    ("tabs.csv", "id\ttext\n1\t好吃\n".encode()),
    ("u16lf.txt", "\ufeff这家外卖送得很快，味道也不错\n差评，用了三天就坏了\n好\n".encode("utf-16-le")),
], ids=["semicolons", "excel hint", "tabs in csv", "utf-16"])
@pytest.mark.parametrize("how", ["named", "standard input"])
def test_a_file_read_as_what_it_is_not_is_refused_in_one_line_and_nothing_is_written(tmp_path, hf_model_dir, name,
                                                                                       data, how):
    """A semicolon or tab file named .csv was labelled as whole lines (the id glued to the text), and
    UTF-16 text was "invalid UTF-8 ... pass --on-bad-row flag", which labelled noise: exit 0 both."""
    source, out = tmp_path / name, tmp_path / "out.jsonl"
    source.write_bytes(data)
    where = [source] if how == "named" else ["-", "--format", source.suffix[1:]]
    proc = run_cli("label", *where, "-o", out, "--on-bad-row", "flag", *model_args(hf_model_dir), check=False,
                   input_bytes=data if how == "standard input" else None)
    said = proc.stderr.decode()
    assert proc.returncode == 2 and len(said.strip().splitlines()) == 1, said
    assert ("the header is one column holding" in said or "Excel's delimiter hint" in said
            or "not UTF-8 text (UTF-16" in said), said
    assert not out.exists() and not list(tmp_path.glob("out.jsonl*"))


def test_the_printed_resume_command_finishes_the_job_whatever_abbreviations_and_variables_began_it(
        tmp_path, hf_model_dir, real_reviews, monkeypatch, capsys):
    """`--overw` (argparse's abbreviation of --overwrite) stayed in the printed command, which was then
    refused ("--resume and --overwrite exclude each other"); a setting from a STRUCTSENT_* variable
    was left out, and the command, run from another shell, found "the model's settings changed"."""
    import shlex

    from structsent.cli import main

    texts = [f"{i} {t}".replace("\n", " ") for i, t in enumerate(real_reviews[:120])]
    source, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    out.write_text("an older output\n", encoding="utf-8")
    monkeypatch.setenv("STRUCTSENT_MAX_LENGTH", "64")
    args = ["label", str(source), "-o", str(out), "--chunk-rows", "40", "--model", str(hf_model_dir), "--overw"]
    monkeypatch.setattr(sys, "argv", ["structsent", *args])
    with monkeypatch.context() as interrupted:
        ctrl_c_in_chunk(interrupted, 2)
        assert main(args) == 130
    said = capsys.readouterr().err.strip().splitlines()[-1]
    command = shlex.split(said.split("to finish, run: ", 1)[1])
    assert command[:2] == ["STRUCTSENT_MAX_LENGTH=64", "structsent"] and "--overw" not in command, said
    monkeypatch.delenv("STRUCTSENT_MAX_LENGTH")  # another shell: only what the command says
    for assignment in command[:1]:
        monkeypatch.setenv(*assignment.split("=", 1))
    assert main(command[2:]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["text"] for row in rows] == texts and all(row["label"] for row in rows)


@pytest.mark.parametrize("argv, command", [
    (["label", "in.csv", "-o", "o.csv", "--ov"], "structsent label in.csv -o o.csv --resume"),
    (["label", "-o", "o.csv", "--over", "--", "--ov"], "structsent label -o o.csv --resume -- --ov"),
    (["label", "-o", "o.csv", "--chunk-rows=100", "--", "--overwrite-me.csv"],
     "structsent label -o o.csv --chunk-rows=100 --resume -- --overwrite-me.csv"),
    (["label", "./--resume.csv", "-o", "o.csv", "--resume"], "structsent label ./--resume.csv -o o.csv --resume"),
])
def test_the_resume_command_keeps_every_name_after_a_double_dash_and_resumes_before_it(monkeypatch, argv, command):
    """After "--" a file named --ov was dropped as an abbreviation of --overwrite, and --resume, put
    after it, was read as a file name: the printed command could not finish the job."""
    from structsent.cli.label import _resume_command

    for name in [n for n in os.environ if n.startswith("STRUCTSENT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(sys, "argv", ["structsent", *argv])
    assert _resume_command() == command


def ctrl_c_in_chunk(monkeypatch, number: int) -> list[int]:
    """Ctrl-C to this process while the job labels its ``number``-th chunk (1-based), the signal's
    handler run before the chunk goes on (the reading thread meets the end of a short input
    meanwhile); the list it returns fills with the sizes of the chunks labelled."""
    from structsent.jobs.label import LabelJob

    label_chunk, calls = LabelJob._label_chunk, []

    def interrupted(self, chunk, summary):
        calls.append(len(chunk.rows))
        if len(calls) == number:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.3)
        return label_chunk(self, chunk, summary)

    monkeypatch.setattr(LabelJob, "_label_chunk", interrupted)
    return calls


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, delays", [
    (signal.SIGINT, 130, (0.5, 0.5)),  # the job waits for the stopped worker's chunk, then is stopped at once
    (signal.SIGTERM, 143, (0.5, 0.5)),
    (signal.SIGINT, 130, (0.0, 0.05)),  # the second during the stop after the chunk
    (signal.SIGINT, 130, (0.0,)),  # one alone: the stop gives up the chunk the stopped worker holds
    (signal.SIGTERM, 143, (0.5,)),
])
def test_a_stopped_tokenizer_process_does_not_keep_a_job_that_is_stopped(tmp_path, hf_model_dir, reviews_file, signum,
                                                                         code, delays):
    """A worker that answers nothing (SIGSTOP, a hang): the job printed its resume line, then hung
    joining the worker as it exited (a further Ctrl-C gave a traceback of concurrent.futures' exit
    handler), whether it stopped after its chunk or at once; or, now and then, its reading thread
    ended as the interpreter shut down and the process aborted (SIGABRT, "terminate called without
    an active exception") as that thread dropped the model."""
    source, texts = tmp_path / "in.csv", reviews_file.read_text(encoding="utf-8").splitlines()
    write_numbered_csv(source, texts)
    common = ["label", source, "--chunk-rows", "64", *model_args(hf_model_dir)]
    out = tmp_path / "out.csv"
    proc = _start([*common, "-o", out, "--tokenizer-processes", "1"])
    _wait_for_rows(tmp_path / "out.csv.manifest.json", 128, proc)
    workers = children_of(proc.pid, running="spawn_main")
    assert workers and proc.poll() is None, "the job finished before its worker could be stopped"
    try:
        os.kill(workers[0], signal.SIGSTOP)
        for delay in delays:
            time.sleep(delay)
            proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
    message = err.decode()
    # (a second signal that comes as the stopped job exits, its handler gone, ends it by the signal: the
    # shell's status is the same 128 + N)
    assert proc.returncode in ((code, -signum) if len(delays) > 1 else (code,)) and "Traceback" not in message, message
    assert any("--resume" in line for line in message.strip().splitlines()), message
    deadline = time.time() + 20
    while time.time() < deadline and any(map(is_running, workers)):
        time.sleep(0.1)
    assert not any(map(is_running, workers)), "the stopped tokenizer process outlived the job"
    run_cli(*common, "-o", out, "--resume", "--tokenizer-processes", "1")
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [int(r["n"]) for r in rows] == list(range(len(texts)))  # none lost, none duplicated, in order


@pytest.mark.parametrize("suffix, delimiter", [("csv", ","), ("tsv", "\t")])
def test_a_file_of_one_column_says_its_line_1_is_read_as_the_column_s_name(tmp_path, hf_model_dir, suffix, delimiter):
    """A .csv of bare reviews (no header line) had its first review taken for the column's name and
    left unlabelled without a word; --format txt labels every line."""
    source = tmp_path / f"in.{suffix}"
    source.write_text("这家店很好吃，下次还来\n太难吃了\n一般般\n", encoding="utf-8")
    proc = run_cli("label", source, "-o", tmp_path / f"out.{suffix}", *model_args(hf_model_dir))
    said = [line for line in proc.stderr.decode().splitlines() if "only column" in line]
    assert said == ["structsent: labelling the only column, '这家店很好吃，下次还来': line 1 is read as its name "
                    "(a file of texts without a header line: label it with --format txt)"]
    rows = (tmp_path / f"out.{suffix}").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 3 and rows[0].startswith(f"这家店很好吃，下次还来{delimiter}label")
    texts = read_jsonl_bytes(run_cli("label", source, "--format", "txt", *model_args(hf_model_dir)).stdout)
    assert [r["text"] for r in texts] == ["这家店很好吃，下次还来", "太难吃了", "一般般"]
    # a file whose column is named as --text-column (or a resumed job) says nothing of it
    named = tmp_path / f"named.{suffix}"
    named.write_text("text\n好\n", encoding="utf-8")
    assert b"only column" not in run_cli("label", named, "-o", tmp_path / f"named.out.{suffix}",
                                         *model_args(hf_model_dir)).stderr


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_a_prefix_holding_a_control_character_is_refused_before_any_work(tmp_path, hf_model_dir, reviews_file, engine):
    """--prefix $'a\\nb' wrote a CSV header split over two lines."""
    out = tmp_path / "out.csv"
    proc = run_cli("label", reviews_file, "-o", out, "--prefix", "a\nb", "--engine", engine, *model_args(hf_model_dir),
                   check=False)
    assert proc.returncode == 2 and proc.stderr.decode().strip().splitlines() == [
        "structsent: error: --prefix 'a\\nb' holds a control character (U+000A); the added columns' names must print "
        "as they are, on one line (e.g. --prefix pred_)"]
    assert not out.exists()


@pytest.mark.parametrize("prefix, says", [
    ("a\tb", "holds a control character (U+0009)"),  # split a TSV header's names
    ("a\u2028", "holds a character that does not print (U+2028)"),
    ("p\u202e", "holds a character that does not print (U+202E)"),
    ("\u200bp_", "holds a character that does not print (U+200B)"),
    ("   ", "is blank"),
])
def test_a_prefix_that_does_not_print_as_it_is_is_refused(tmp_path, hf_model_dir, reviews_file, prefix, says):
    proc = run_cli("label", reviews_file, "-o", tmp_path / "out.tsv", "--prefix", prefix, *model_args(hf_model_dir),
                   check=False)
    lines = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and says in lines[0], lines
    assert not (tmp_path / "out.tsv").exists()


def test_the_only_column_notice_shows_a_name_s_control_characters_escaped_once(tmp_path, hf_model_dir):
    source = tmp_path / "in.csv"
    source.write_bytes(b"a\x1b[31mred\n\xe5\xa5\xbd\n")
    proc = run_cli("label", source, *model_args(hf_model_dir))
    assert "labelling the only column, 'a\\x1b[31mred': line 1" in proc.stderr.decode()


@pytest.mark.parametrize(("name", "named", "tool"), [("in.csv.gz", " --format csv", "zcat"),
                                                     ("in.jsonl.zst", " --format jsonl", "zstdcat"),
                                                     ("in.csv.bz2", " --format csv", "bzcat"), ("in.gz", "", "zcat")])
def test_a_compressed_input_is_refused_with_the_way_to_stream_it(tmp_path, name, named, tool):
    """It said "cannot tell the format from the name; pass --format", which then read the compressed bytes."""
    import gzip

    source = tmp_path / name
    source.write_bytes(gzip.compress(b"id,text\n1,\xe5\xa5\xbd\n"))
    proc = run_cli("label", source, "-o", tmp_path / "out.csv", check=False)
    assert proc.returncode == 2 and proc.stderr.decode().strip() == (
        f"structsent: error: {source}: a compressed file ({source.suffix}) is not read; decompress it first, or "
        f"stream it to `structsent label -{named}` (e.g. {tool} {name} | structsent label -{named})")
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("name", ["in.tar.gz", "in.tgz", "in.zip", "in.7z", "in.tar"])
def test_an_archive_is_refused_as_one(tmp_path, name):
    """Every compressed suffix was advised `zcat X | structsent label -`, a tar archive streamed into a job."""
    source = tmp_path / name
    source.write_bytes(b"PK\x03\x04")
    proc = run_cli("label", source, "-o", tmp_path / "out.csv", check=False)
    assert proc.returncode == 2 and "is not read; extract its files and label them" in proc.stderr.decode()


def test_the_engine_line_names_pytorch_s_own_thread_count(tmp_path, hf_model_dir):
    """It said "threads: the runtime's own" where the job's manifest recorded PyTorch's 1."""
    source = tmp_path / "in.txt"
    source.write_text("好吃\n难吃\n", encoding="utf-8")
    proc = run_cli("label", source, "-o", tmp_path / "out.jsonl", "--model", hf_model_dir, "--backend", "torch",
                   env={"OMP_NUM_THREADS": "1"})
    (line,) = [line for line in proc.stderr.decode().splitlines() if line.startswith("engine: ")]
    assert " on torch fp32, cpu" in line and line.endswith("; threads: 1"), line
