"""`structsent report` through the real command line: exit codes, one-line errors, no model loaded."""

import csv
import os
import stat
import subprocess
import sys

import pytest

from ..conftest import run_structsent
from .conftest import sample, write_labelled


def report_cli(*args):
    return run_structsent("report", *args, text=True)


def test_writes_the_page_and_says_so(tmp_path, labelled_csv):
    out = tmp_path / "report.html"
    proc = report_cli(labelled_csv, "-o", out, "--by", "date")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == f"{out}: 40 rows (负面 17, 正面 18; 5 flagged)"
    page = out.read_text(encoding="utf-8")
    assert '<dd id="total-rows">40</dd>' in page and 'id="groups"' in page
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary file left behind


@pytest.mark.parametrize("case", ["no label columns", "missing file", "existing output", "output is input", "bad flag value",
                                  "empty output path", "a device", "inside the input directory", "a loop as output",
                                  "a loop as input", "through a file", "a pipe as input", "standard output",
                                  "a directory's name", "a directory's name with a dot", "a period without --by",
                                  "standard input", "a compressed file"])
def test_bad_input_is_exit_2_with_one_line(tmp_path, labelled_csv, case):
    plain = tmp_path / "plain.csv"
    plain.write_text("id,text\n1,好评\n", encoding="utf-8")
    taken = tmp_path / "taken.html"
    taken.write_text("keep me", encoding="utf-8")
    (tmp_path / "loop.html").symlink_to("loop.html")
    (tmp_path / "loop.csv").symlink_to("loop.csv")
    os.mkfifo(tmp_path / "fifo.csv")  # no one writes it: opening it to read would wait for ever
    (tmp_path / "out.csv.gz").write_bytes(b"\x1f\x8b\x08\x00")
    args, expected = {
        "no label columns": ([plain, "-o", tmp_path / "r.html"], "no label columns"),
        "missing file": ([tmp_path / "absent.csv", "-o", tmp_path / "r.html"], "absent.csv: no such file"),
        "existing output": ([labelled_csv, "-o", taken], "exists; pass --overwrite"),
        "output is input": ([labelled_csv, "-o", labelled_csv, "--overwrite"], "overwrite its own input"),
        "bad flag value": ([labelled_csv, "-o", tmp_path / "r.html", "--max-groups", "0"], "--max-groups (max_groups= in Python) must be"),
        # an empty path was a FileNotFoundError traceback; a device was told of an -o - that writes a file named -
        "empty output path": ([labelled_csv, "-o", ""], "the report's path is empty"),
        "a device": ([labelled_csv, "-o", "/dev/null", "--overwrite"], "is a character device; name a regular file to write\n"),
        # what is wrong with the input directory is said first ("the report would be written inside its own input")
        "inside the input directory": ([tmp_path, "-o", tmp_path / "r.html"], f"{tmp_path}: fifo.csv is not a regular file"),
        # the next three were tracebacks (RuntimeError: Symlink loop, NotADirectoryError), exit 1
        "a loop as output": ([labelled_csv, "-o", tmp_path / "loop.html"], "loop.html: a loop of symbolic links"),
        "a loop as input": ([tmp_path / "loop.csv", "-o", tmp_path / "r.html"], "loop.csv: a loop of symbolic links"),
        "through a file": ([labelled_csv, "-o", tmp_path / "plain.csv" / "r.html"], "is a file, not a directory"),
        # read twice (its header, then its rows): a pipe lost its head to the first read, a named pipe hung
        "a pipe as input": ([tmp_path / "fifo.csv", "-o", tmp_path / "r.html"], "save it to a file first"),
        # wrote a file named "-", and a file named "r.html" for "r.html/"
        "standard output": ([labelled_csv, "-o", "-"], "the report is a file, not standard output"),
        "a directory's name": ([labelled_csv, "-o", str(tmp_path / "r.html") + "/"], "names a directory"),
        "a directory's name with a dot": ([labelled_csv, "-o", str(tmp_path / "r.html") + "/."], "names a directory"),
        # accepted and ignored; refused whenever given, its default (auto) too
        "a period without --by": ([labelled_csv, "-o", tmp_path / "r.html", "--by-period", "auto"],
                                  "--by-period needs --by COLUMN"),
        # "-: no such file" (label reads "-" as standard input); "cannot tell the format from the name"
        "standard input": (["-", "-o", tmp_path / "r.html"], "-: the report reads a file, not standard input"),
        "a compressed file": ([tmp_path / "out.csv.gz", "-o", tmp_path / "r.html"],
                              "out.csv.gz: a compressed file is not read; decompress it first"),
    }[case]
    proc = report_cli(*args)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert taken.read_text(encoding="utf-8") == "keep me" and not (tmp_path / "r.html").exists()


def test_a_pipe_is_refused_and_a_symbolic_link_is_written_through(tmp_path, labelled_csv):
    fifo, target, link = tmp_path / "fifo", tmp_path / "pages" / "report.html", tmp_path / "link.html"
    os.mkfifo(fifo)
    proc = report_cli(labelled_csv, "-o", fifo, "--overwrite")
    assert proc.returncode == 2 and "is a named pipe" in proc.stderr and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    target.parent.mkdir()
    target.write_text("old", encoding="utf-8")
    link.symlink_to(target)
    assert report_cli(labelled_csv, "-o", link, "--overwrite").returncode == 0
    assert link.is_symlink() and '<dd id="total-rows">40</dd>' in target.read_text(encoding="utf-8")


def test_help_and_no_model_or_torch_loaded(tmp_path, labelled_csv):
    assert "--by-period" in report_cli("--help").stdout
    code = (
        "import sys; from structsent.cli import main\n"
        f"assert main(['report', {str(labelled_csv)!r}, '-o', {str(tmp_path / 'r.html')!r}, '-q']) == 0\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] == 'torch' or m in ('structsent.engine', 'tokenizers')]\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_a_text_over_the_csv_module_default_is_a_labelled_row(tmp_path):
    """A fresh process has csv's default field limit (131,072 characters); the label job reads 32 MiB."""
    labelled = tmp_path / "long.csv"
    with open(labelled, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "label", "score", "prob_负面", "prob_正面", "error"])
        writer.writerow([1, "好" * 200_000, "正面", 0.9, 0.1, 0.9, ""])
    out = tmp_path / "r.html"
    proc = report_cli(labelled, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == f"{out}: 1 row (负面 0, 正面 1; 0 flagged)"
    assert out.stat().st_size < 100_000  # the text is shown cut, with an ellipsis
    assert "好" * 2_000 + "…" in out.read_text(encoding="utf-8")


def test_a_report_name_near_the_file_name_limit_is_written_and_one_past_it_is_one_line(tmp_path, labelled_csv):
    """The temporary name (".<name>.<pid>.tmp") went past 255 bytes: a traceback after all the work."""
    longest = tmp_path / ("报" * 80 + "r" * 10 + ".html")  # 255 bytes
    proc = report_cli(labelled_csv, "-o", longest)
    assert proc.returncode == 0, proc.stderr
    assert '<dd id="total-rows">40</dd>' in longest.read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir()] == [longest.name]
    too_long = tmp_path / ("r" * 256 + ".html")
    proc = report_cli(labelled_csv, "-o", too_long)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_the_report_never_replaces_the_job_figures_it_reads(tmp_path, labelled_csv):
    sidecar = f"{labelled_csv}.summary.json"
    proc = report_cli(labelled_csv, "-o", sidecar)
    assert proc.returncode == 2 and "the job's figures it reads" in proc.stderr and not os.path.exists(sidecar)


def test_the_report_never_replaces_a_job_summary_named_explicitly(tmp_path, labelled_csv):
    """`-o job.json --job-summary job.json --overwrite` replaced the job's figures with the page, exit 0."""
    summary = tmp_path / "job.json"
    summary.write_text('{"rows": 40}', encoding="utf-8")
    (tmp_path / "link.json").symlink_to(summary)
    for output in (summary, tmp_path / "link.json"):
        proc = report_cli(labelled_csv, "-o", output, "--job-summary", summary, "--overwrite")
        assert proc.returncode == 2 and "the report would overwrite the job's figures it reads" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert summary.read_text(encoding="utf-8") == '{"rows": 40}'


@pytest.mark.parametrize("case", ["a device as job summary", "a directory as job summary", "utf-16 with a mark",
                                  "utf-16 without a mark", "csv read as tsv", "tsv read as csv", "parquet read as csv",
                                  "parquet named csv", "gbk json lines", "excel's delimiter hint"])
def test_a_refusal_says_what_is_wrong_with_the_file(tmp_path, labelled_csv, case):
    """These said "no such file" (/dev/null), "no label columns" (UTF-16, Parquet read as CSV) or
    named the whole header line as one column (a CSV read as TSV)."""
    text = labelled_csv.read_text(encoding="utf-8")
    (tmp_path / "u16.csv").write_bytes(text.encode("utf-16"))  # Excel's "Unicode text": UTF-16 with its mark
    (tmp_path / "u16le.csv").write_bytes(text.encode("utf-16-le"))
    (tmp_path / "labelled.tsv").write_text(text.replace(",", "\t"), encoding="utf-8")
    (tmp_path / "parquet.csv").write_bytes(b"PAR1" + bytes(range(256)) + b"PAR1")
    (tmp_path / "hint.csv").write_text("sep=,\n" + text, encoding="utf-8")
    jsonl = tmp_path / "labelled.jsonl"
    write_labelled(jsonl, "jsonl", sample())
    (tmp_path / "gbk.jsonl").write_bytes(jsonl.read_text(encoding="utf-8").encode("gbk", "replace"))
    args, expected = {
        "a device as job summary": ([labelled_csv, "--job-summary", "/dev/null"],
                                    "/dev/null: is a character device, not a regular file"),
        "a directory as job summary": ([labelled_csv, "--job-summary", tmp_path],
                                       f"{tmp_path}: is a directory, not a regular file"),
        "utf-16 with a mark": ([tmp_path / "u16.csv"], "u16.csv: not UTF-8 text (UTF-16"),
        "utf-16 without a mark": ([tmp_path / "u16le.csv"], "u16le.csv: not UTF-8 text"),
        "csv read as tsv": ([labelled_csv, "--format", "tsv"], "the header is one column holding commas: "
                                                             "not TSV; pass --format csv"),
        "tsv read as csv": ([tmp_path / "labelled.tsv", "--format", "csv"], "the header is one column holding tabs: "
                                                                            "not CSV; pass --format tsv"),
        "parquet read as csv": ([tmp_path / "parquet.csv"], "parquet.csv: a Parquet file (it starts with PAR1), "
                                                            "not CSV; pass --format parquet"),
        "parquet named csv": ([tmp_path / "parquet.csv", "--format", "jsonl"], "not JSONL; pass --format parquet"),
        # (its prob_ columns all decoded to one name of U+FFFD: "2,270 rows (���� 0; 2,270 flagged)", exit 0)
        "gbk json lines": ([tmp_path / "gbk.jsonl"], "gbk.jsonl: line 1: invalid UTF-8 at byte offset "),
        "excel's delimiter hint": ([tmp_path / "hint.csv"], "hint.csv: line 1 is 'sep=,', Excel's delimiter hint, "
                                                            "not a header; delete that line"),
    }[case]
    proc = report_cli(*args, "-o", tmp_path / "r.html")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "r.html").exists()
