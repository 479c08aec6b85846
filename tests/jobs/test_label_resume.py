"""What a resumed label job must share with its first run, checked in process: the first run
stops after its first chunk (as after Ctrl-C), the second resumes it."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import os
import re
import shutil
import threading

import pytest

import structsent
from structsent.errors import BadInputError
from structsent.io.formats import Format
from structsent.jobs.label import LabelJob, LabelJobSpec

ROWS = 120
CHUNK = 40


def write_reviews(path, header=("id", "text"), long=False):
    texts = ["味道不错，送餐很快", "差评，再也不来了", "一般般吧", "包装很好，下次还买"]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i in range(ROWS):
            text = texts[i % 4] * (60 if long else 1) + str(i)
            writer.writerow([f"r{i}", text])


def spec(source, output, **options) -> LabelJobSpec:
    return LabelJobSpec(input=str(source), output=str(output), input_format=Format.CSV, output_format=Format.CSV,
                        chunk_rows=CHUNK, **options)


def first_chunk_only(classifier, source, output, **options) -> None:
    """A job stopped after its first committed chunk, as Ctrl-C leaves it."""
    stop = threading.Event()
    stop.set()
    summary = LabelJob(spec(source, output, **options), classifier, stop=stop).run()
    assert summary.interrupted and summary.rows == CHUNK


def test_a_column_named_none_is_not_taken_for_no_id_column(tmp_path, clf):
    """Options were compared as strings: --id-column None matched a first run without --id-column,
    and the resumed rows lost their input columns."""
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    write_reviews(source, header=("None", "text"))
    first_chunk_only(clf, source, output)
    with pytest.raises(BadInputError, match=r"--id-column was not given, now 'None'"):
        LabelJob(spec(source, output, id_column="None", resume=True), clf).run()


@pytest.fixture(scope="module")
def windowed(hf_model_dir):
    return {stride: structsent.load(hf_model_dir, long_text="windows", window_stride=stride, max_length=64)
            for stride in (16, 40)}


def test_resume_with_another_window_stride_is_refused(tmp_path, windowed):
    """Where the windows begin changes a long text's result: a resumed file would mix two settings."""
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    write_reviews(source, long=True)
    first_chunk_only(windowed[16], source, output)
    with pytest.raises(BadInputError, match=r"the model's settings changed \(--window-stride was 16, now 40; each from its "
                                              r"flag or STRUCTSENT_\* variable\)"):
        LabelJob(spec(source, output, resume=True), windowed[40]).run()
    with pytest.raises(BadInputError, match=r"settings changed \(--long-text was 'windows', now 'truncate'; each from "
                                              r"its flag or STRUCTSENT_\* variable\) since"):
        LabelJob(spec(source, output, resume=True), structsent.load(windowed[16].checkpoint.directory,
                                                                    max_length=64)).run()
    LabelJob(spec(source, output, resume=True), windowed[16]).run()  # the same stride resumes
    assert len(output.read_text(encoding="utf-8").splitlines()) == ROWS + 1


def test_an_int8_resume_refuses_another_chunk_size_and_finishes_with_the_same(tmp_path, hf_model_dir):
    """int8's activation scales are per batch, so a chunk's texts decide its numbers: a resume with
    another --chunk-rows (or --max-batch-size) was accepted and wrote a file no whole run writes."""
    int8 = structsent.load(hf_model_dir, device="cpu", backend="torch", precision="int8")
    source, output, whole = tmp_path / "in.csv", tmp_path / "out.csv", tmp_path / "whole.csv"
    write_reviews(source)
    first_chunk_only(int8, source, output)
    with pytest.raises(BadInputError, match=r"the model's settings changed \(--chunk-rows was 40, now 7; each"):
        LabelJob(dataclasses.replace(spec(source, output, resume=True), chunk_rows=7), int8).run()
    LabelJob(spec(source, output, resume=True), int8).run()
    LabelJob(spec(source, whole), int8).run()
    assert output.read_bytes() == whole.read_bytes()


@pytest.mark.parametrize("how", ["touched", "copied back", "moved", "through a link"])
def test_the_same_bytes_with_a_new_modification_time_or_name_resume(tmp_path, clf, how):
    """The consumed bytes are checked against the ledger's digests: a touch or a copy of the same
    bytes is the same input (it was refused as changed, without naming rows), and so is the file
    moved or named through a link (its path was part of its fingerprint)."""
    source, output, uninterrupted = tmp_path / "in.csv", tmp_path / "out.csv", tmp_path / "whole.csv"
    write_reviews(source)
    LabelJob(spec(source, uninterrupted), clf).run()
    first_chunk_only(clf, source, output)
    renamed = tmp_path / "elsewhere.csv"
    if how == "touched":
        os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 5_000_000_000))
    elif how == "copied back":
        shutil.copy(source, tmp_path / "copy.csv")
        os.replace(tmp_path / "copy.csv", source)
    elif how == "moved":
        source.rename(renamed)
    else:
        renamed.symlink_to(source)
    summary = LabelJob(spec(source if how in ("touched", "copied back") else renamed, output, resume=True), clf).run()
    assert summary.rows == ROWS and output.read_bytes() == uninterrupted.read_bytes()


def test_an_edit_of_the_consumed_bytes_is_still_refused(tmp_path, clf):
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    write_reviews(source)
    first_chunk_only(clf, source, output)
    source.write_bytes(source.read_bytes().replace(b"r7,", b"x7,"))
    with pytest.raises(BadInputError, match="changed since the job began"):
        LabelJob(spec(source, output, resume=True), clf).run()


def test_a_resumed_json_lines_to_parquet_job_keeps_the_first_run_s_column_types(tmp_path, clf):
    """JSON Lines input takes Parquet's column types from the first chunk, which a resumed run does
    not read: it inferred others from its own first chunk (here int64 against double), and the
    parts no longer merged."""
    import json

    import pyarrow.parquet as pq

    source, output = tmp_path / "in.jsonl", tmp_path / "out.parquet"
    with open(source, "w", encoding="utf-8") as handle:
        for i in range(ROWS):
            price = i + 0.5 if i < CHUNK else i  # doubles in the first chunk, integers after it
            handle.write(json.dumps({"id": i, "text": "味道不错", "price": price}, ensure_ascii=False) + "\n")

    def job(**options):
        return LabelJobSpec(input=str(source), output=str(output), input_format=Format.JSONL,
                            output_format=Format.PARQUET, chunk_rows=CHUNK, **options)

    stop = threading.Event()
    stop.set()
    assert LabelJob(job(), clf, stop=stop).run().rows == CHUNK
    assert LabelJob(job(resume=True), clf).run().rows == ROWS
    table = pq.read_table(output)
    assert str(table.schema.field("price").type) == "double"
    assert table.column("id").to_pylist() == list(range(ROWS))
    assert table.column("price").to_pylist() == [i + 0.5 if i < CHUNK else float(i) for i in range(ROWS)]


class StopAfter:
    """A progress display that asks the job to stop once ``rows`` are committed (it stops at the
    next chunk boundary it reaches: at ``rows`` or a chunk or two later)."""

    def __init__(self, stop: threading.Event, rows: int) -> None:
        self.stop, self.rows = stop, rows

    def update(self, counters, position, total, started) -> None:
        if counters["rows"] >= self.rows:
            self.stop.set()


def whole_and_resumed_parquet(tmp_path, clf, records: list[dict], stopped: str):
    """``records`` as JSON Lines labelled into Parquet twice, in chunks of CHUNK: in one run, and in
    a run stopped ``stopped`` ("in the first chunk", or after 3 x CHUNK rows) then resumed; the
    two outputs' paths."""
    import json

    source = tmp_path / "in.jsonl"
    with open(source, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def job(output, **options):
        return LabelJobSpec(input=str(source), output=str(output), input_format=Format.JSONL,
                            output_format=Format.PARQUET, chunk_rows=CHUNK, **options)

    whole, output, stop = tmp_path / "whole.parquet", tmp_path / "out.parquet", threading.Event()
    assert LabelJob(job(whole), clf).run().rows == len(records)
    if stopped == "in the first chunk":
        stop.set()
    first_run = LabelJob(job(output), clf, stop=stop, progress=StopAfter(stop, 3 * CHUNK)).run()
    assert first_run.interrupted
    assert (first_run.rows == CHUNK) if stopped == "in the first chunk" else (3 * CHUNK <= first_run.rows < len(records))
    assert LabelJob(job(output, resume=True), clf).run().rows == len(records)
    return whole, output


@pytest.mark.parametrize("stopped", ["in the first chunk", "after the first values"])
def test_a_json_lines_field_null_in_the_first_chunks_gets_its_type_from_its_first_values(tmp_path, clf, stopped):
    """A field null in the first chunks (a discount most orders lack) and a number later was typed
    string by the first chunk, and the job stopped at its first value. Its type is now that of its
    first values, in an uninterrupted job as in one stopped before or after them and resumed."""
    import pyarrow.parquet as pq

    rows = 10 * CHUNK
    records = [{"id": i, "text": f"味道不错{i}", "discount": None if i < 2 * CHUNK else i / 4, "note": None}
               for i in range(rows)]
    whole, output = whole_and_resumed_parquet(tmp_path, clf, records, stopped)
    for path in (whole, output):
        table = pq.read_table(path)
        assert str(table.schema.field("discount").type) == "double"
        assert str(table.schema.field("note").type) == "string"  # null throughout
        assert table.column("id").to_pylist() == list(range(rows))
        assert table.column("discount").to_pylist() == [None if i < 2 * CHUNK else i / 4 for i in range(rows)]
    assert pq.read_table(output).equals(pq.read_table(whole))


@pytest.mark.parametrize("fmt", [Format.CSV, Format.TSV])
def test_a_resumed_job_with_an_id_column_reads_the_file_s_own_header(tmp_path, clf, fmt):
    """The manifest's columns are the output's (only the id with --id-column), and the resumed
    reader took them for the file's header: every row after the first chunk was flagged
    ('expected 1 fields, got 3'), exit 0."""
    delimiter = "\t" if fmt is Format.TSV else ","
    source, output, whole = tmp_path / f"in.{fmt.value}", tmp_path / "out.csv", tmp_path / "whole.csv"
    with open(source, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(["id", "text", "note"])
        writer.writerows((f"r{i}", ["好吃，下次还来", "太差了，再也不买"][i % 2] + str(i), f"n{i}") for i in range(ROWS))

    def job(out, **options):
        return LabelJobSpec(input=str(source), output=str(out), input_format=fmt, output_format=Format.CSV,
                            chunk_rows=CHUNK, id_column="id", on_bad_row="flag", **options)

    LabelJob(job(whole), clf).run()
    stop = threading.Event()
    stop.set()
    assert LabelJob(job(output), clf, stop=stop).run().rows == CHUNK
    summary = LabelJob(job(output, resume=True), clf).run()
    assert summary.rows == ROWS and summary.flagged == 0
    assert output.read_bytes() == whole.read_bytes()
    rows = list(csv.reader(output.open(encoding="utf-8")))
    assert rows[0][0] == "id" and [row[0] for row in rows[1:]] == [f"r{i}" for i in range(ROWS)]


def test_another_file_under_the_first_run_s_name_is_still_refused(tmp_path, clf):
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    write_reviews(source)
    first_chunk_only(clf, source, output)
    source.write_text(source.read_text(encoding="utf-8").replace("r1,", "x1,"), encoding="utf-8")
    with pytest.raises(BadInputError, match="changed since the job began"):
        LabelJob(spec(source, output, resume=True), clf).run()


def test_another_file_given_at_resume_is_named_as_another_file(tmp_path, clf):
    """It was refused as "other.csv changed since the job began": other.csv had never been read."""
    source, other, output = tmp_path / "in.csv", tmp_path / "other.csv", tmp_path / "out.csv"
    write_reviews(source)
    other.write_text(source.read_text(encoding="utf-8").replace("r1,", "x1,"), encoding="utf-8")
    first_chunk_only(clf, source, output)
    with pytest.raises(BadInputError, match=f"^cannot resume: the job began on {re.escape(str(source))}, and "
                                            f"{re.escape(str(other))} is not that file as it was"):
        LabelJob(spec(other, output, resume=True), clf).run()
    summary = LabelJob(spec(source, output, resume=True), clf).run()  # the input it began on finishes it
    rows = list(csv.reader(output.open(encoding="utf-8")))
    assert summary.rows == ROWS and [row[0] for row in rows[1:]] == [f"r{i}" for i in range(ROWS)]


def test_an_empty_text_column_is_refused_when_the_job_is_described(tmp_path):
    """JSON Lines took "" for "no text column": every row flagged "missing text", exit 0."""
    with pytest.raises(BadInputError, match="--text-column is empty: name the column that holds the text"):
        spec(tmp_path / "in.jsonl", tmp_path / "out.jsonl", text_column="")


def test_an_empty_output_path_and_one_through_a_file_are_said_so(tmp_path):
    """-o '' said "is a directory" (the current one), and -o a.csv/x.csv, a.csv a file, said the
    directory a.csv "does not exist"."""
    from structsent.jobs.label import check_job_paths

    source = tmp_path / "in.csv"
    write_reviews(source)
    with pytest.raises(BadInputError, match="-o: an empty path; name an output file, or - for standard output"):
        spec(source, "")
    with pytest.raises(BadInputError, match=r"in\.csv/x\.csv: .*in\.csv is not a directory"):
        check_job_paths(spec(source, source / "x.csv"))


@pytest.mark.parametrize("change", ["tokenizer_config.json", "a weight", "an unread file"])
def test_a_resume_follows_the_files_a_load_reads(tmp_path, hf_model_dir, change):
    """A changed tokenizer setting was refused as "its weights replaced"; a file no load reads
    (a README beside the weights) is not the model and does not stop the resume."""
    model = tmp_path / "model"
    shutil.copytree(hf_model_dir, model)
    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    write_reviews(source)
    first_chunk_only(structsent.load(model, device="cpu"), source, output)
    if change == "tokenizer_config.json":
        (model / "tokenizer_config.json").write_text('{"do_lower_case": false}', encoding="utf-8")
    elif change == "a weight":
        from ..test_models import copy_with_weights

        shutil.rmtree(model)
        copy_with_weights(hf_model_dir, model, lambda state: state["classifier.bias"].add_(0.5))
    else:
        (model / "README.md").write_text("notes", encoding="utf-8")
    resumed = structsent.load(model, device="cpu")
    if change == "an unread file":
        summary = LabelJob(spec(source, output, resume=True), resumed).run()
        assert summary.rows == ROWS and not summary.interrupted
        with open(output, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert [r["id"] for r in rows] == [f"r{i}" for i in range(ROWS)]
        return
    with pytest.raises(BadInputError, match=r"the model's files changed \(another --model, or its weights, config or "
                                            r"tokenizer files changed\)"):
        LabelJob(spec(source, output, resume=True), resumed).run()


def test_a_json_lines_job_with_byte_order_marks_inside_resumes_to_the_same_bytes(tmp_path, clf):
    """A mark opening later lines (`cat a.jsonl b.jsonl`) is skipped, its bytes still the job's: a
    resumed job's output is that of a job never stopped."""
    source = tmp_path / "in.jsonl"
    lines = [("\ufeff" if i % 30 == 7 else "") + f'{{"id": {i}, "text": "味道不错{i}"}}\n' for i in range(ROWS)]
    source.write_text("".join(lines), encoding="utf-8")

    jsonl = {"input_format": Format.JSONL, "output_format": Format.JSONL}
    whole = tmp_path / "whole.jsonl"
    LabelJob(dataclasses.replace(spec(source, whole), **jsonl), clf).run()
    stopped, stop = tmp_path / "stopped.jsonl", threading.Event()
    stop.set()
    assert LabelJob(dataclasses.replace(spec(source, stopped), **jsonl), clf, stop=stop).run().rows == CHUNK
    LabelJob(dataclasses.replace(spec(source, stopped, resume=True), **jsonl), clf).run()
    assert stopped.read_bytes() == whole.read_bytes() and b"invalid JSON" not in whole.read_bytes()


def test_a_job_stopped_while_a_stopped_tokenizer_process_holds_its_next_chunk_ends_its_reading_thread(tmp_path, clf,
                                                                                                    monkeypatch):
    """The reading thread, waiting on a tokenizer process stopped by SIGSTOP, was left running when
    the stopped job returned; it then ended as the interpreter shut down and, dropping the last
    reference to the model's tensors there, aborted the process now and then (SIGABRT). It ends
    before the job returns now, the process is gone, and a resume gives every row once, in order."""
    import signal

    from ..conftest import children_of, is_running

    source, output = tmp_path / "in.csv", tmp_path / "out.csv"
    with open(source, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([("id", "text"), *[(f"r{i}", f"味道不错{i}") for i in range(40 * CHUNK)]])
    stop, workers = threading.Event(), []
    label_chunk = LabelJob._label_chunk

    def stop_the_worker_then_the_job(self, chunk, summary):
        if not workers:
            workers.extend(children_of(os.getpid(), running="spawn_main"))
            for pid in workers:
                os.kill(pid, signal.SIGSTOP)
            stop.set()
        return label_chunk(self, chunk, summary)

    monkeypatch.setattr(LabelJob, "_label_chunk", stop_the_worker_then_the_job)
    try:
        summary = LabelJob(spec(source, output, tokenizer_processes=1), clf, stop=stop).run()
        readers = [t for t in threading.enumerate() if t.name == "structsent-read"]
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert workers and summary.interrupted and summary.rows == CHUNK
    assert readers == [], "the reading thread outlived the stopped job"
    assert not any(map(is_running, workers))
    monkeypatch.undo()
    assert LabelJob(spec(source, output, tokenizer_processes=1, resume=True), clf).run().rows == 40 * CHUNK
    with open(output, encoding="utf-8", newline="") as handle:
        assert [row["id"] for row in csv.DictReader(handle)] == [f"r{i}" for i in range(40 * CHUNK)]


@pytest.mark.parametrize("stopped", ["in the first chunk", "after the first values"])
def test_json_lines_fields_of_empty_lists_and_null_fields_get_their_types_from_later_values(tmp_path, clf, stopped):
    """A review's pictures ([] in every row of the first chunk) typed the column a list of null, and
    the first picture stopped the job ("holds list<item: string> values, and its type is
    list<item: null>"); an object whose fields were all null the same way. Their types are now
    filled in by the later values, uninterrupted and across a resume."""
    import pyarrow.parquet as pq

    rows = 10 * CHUNK

    def record(i: int) -> dict:
        later = i >= 2 * CHUNK
        return {"id": i, "text": f"味道不错{i}", "pictures": [f"p{i}.jpg"] if later and i % 3 else [],
                "order": {"coupon": i / 4 if later else None, "items": [{"sku": i}] if later else []}}

    whole, output = whole_and_resumed_parquet(tmp_path, clf, [record(i) for i in range(rows)], stopped)
    for path in (whole, output):
        table = pq.read_table(path)
        assert str(table.schema.field("pictures").type) == "list<element: string>"
        assert str(table.schema.field("order").type) == ("struct<coupon: double, items: list<element: "
                                                         "struct<sku: int64>>>")
        assert table.column("id").to_pylist() == list(range(rows))
        assert table.column("pictures").to_pylist() == [record(i)["pictures"] for i in range(rows)]
        assert table.column("order").to_pylist() == [record(i)["order"] for i in range(rows)]
    assert pq.read_table(output).equals(pq.read_table(whole))


def test_a_torch_resume_with_other_threads_or_batch_sizes_is_said(tmp_path, hf_model_dir, clf):
    """Threads and batch sizes change how PyTorch splits its sums, and so the last digit of a
    probability: such a resume was accepted without a word, and the file differed from an
    uninterrupted run's in its last digits, where the README promised the same bytes."""
    import torch

    threads = torch.get_num_threads()
    try:
        one = structsent.load(hf_model_dir, device="cpu", backend="torch", num_threads=1)
        source, output = tmp_path / "in.csv", tmp_path / "out.csv"
        write_reviews(source)
        first_chunk_only(one, source, output)
        other = structsent.load(hf_model_dir, device="cpu", backend="torch", num_threads=2, max_batch_size=7)
        said: list[str] = []
        stop = threading.Event()
        stop.set()  # the second run stops after its first chunk too
        LabelJob(spec(source, output, resume=True), other, notify=said.append, stop=stop).run()
        LabelJob(spec(source, output, resume=True), other, notify=said.append).run()  # as the last run
    finally:
        torch.set_num_threads(threads)
    assert said == ["resumed with other settings than the last run's (--num-threads was 1, now 2; "
                    "--max-batch-size was 64, now 7): the probabilities of the rows labelled from here may "
                    "differ from an uninterrupted run's in their last digit (PyTorch and GPUs split their sums "
                    "by threads and batches)",
                    # the same settings as the last run, but the file mixes two (it said nothing)
                    "an earlier run of this job labelled some rows with other threads or batch sizes: their "
                    "probabilities may differ from an uninterrupted run's in their last digit"]
    rows = list(csv.reader(output.open(encoding="utf-8", newline="")))
    assert [row[0] for row in rows[1:]] == [f"r{i}" for i in range(ROWS)]


def test_a_resume_with_the_same_settings_or_on_onnx_runtime_says_nothing(tmp_path, hf_model_dir, clf):
    """ONNX Runtime's probabilities on the CPU are the same bits whatever its threads and batches."""
    source = tmp_path / "in.csv"
    write_reviews(source)
    other_threads = structsent.load(hf_model_dir, device="cpu", num_threads=2, max_batch_size=7)
    assert clf.info()["backend"] == other_threads.info()["backend"] == "onnx"
    for first, then, name in ((clf, other_threads, "onnx.csv"), (clf, clf, "same.csv")):
        output = tmp_path / name
        first_chunk_only(first, source, output)
        said: list[str] = []
        LabelJob(spec(source, output, resume=True), then, notify=said.append).run()
        assert said == [] and len(output.read_text(encoding="utf-8").splitlines()) == ROWS + 1
