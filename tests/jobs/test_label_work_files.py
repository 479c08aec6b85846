"""The label job's own files: changed by another program while it runs, cut short, named as the
input, or left by a kill while a finished job removes them. Never a silently wrong output."""

from __future__ import annotations

import csv
import json
import shutil
import threading

import pytest

from structsent.errors import BadInputError, JobFilesChangedError
from structsent.io.formats import Format
from structsent.jobs.label import LabelJob, LabelJobSpec, OutputFiles

ROWS, CHUNK = 200, 20


@pytest.fixture()
def source(tmp_path):
    path = tmp_path / "in.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows((f"r{i}", ["好吃，下次还来", "太差了，再也不买", "一般般吧"][i % 3] + str(i)) for i in range(ROWS))
    return path


def spec(source, output, fmt=Format.CSV, **options) -> LabelJobSpec:
    return LabelJobSpec(input=str(source), output=str(output), input_format=Format.CSV, output_format=fmt,
                        chunk_rows=CHUNK, **options)


class AfterCommit:
    """A progress display that does ``act`` once, after the first commit (in the writer thread)."""

    def __init__(self, act) -> None:
        self.act, self.done = act, False

    def update(self, counters, position, total, started) -> None:
        if not self.done:
            self.done = True
            self.act()


@pytest.mark.parametrize("change", ["removed", "replaced by an empty file", "written to"])
def test_a_partial_output_changed_while_the_job_runs_stops_it(tmp_path, clf, source, change):
    """The job appended to whatever file had its name: a removed or replaced .partial became an
    output without its header and first chunks, exit 0."""
    output = tmp_path / "out.csv"
    partial = OutputFiles(str(output)).partial

    def act():
        if change == "removed":
            partial.unlink()
        elif change == "replaced by an empty file":
            partial.unlink()
            partial.write_bytes(b"")
        else:
            with open(partial, "ab") as handle:
                handle.write(b"x,y\n")

    with pytest.raises(JobFilesChangedError, match="start over with --overwrite"):
        LabelJob(spec(source, output), clf, progress=AfterCommit(act)).run()
    assert not output.exists()


def test_the_output_s_directory_moved_away_while_the_job_runs_is_said_and_the_job_resumes_once_back(tmp_path, clf,
                                                                                                     source):
    """It said "OUT.partial was removed ... start over with --overwrite": the whole directory had gone,
    its committed chunks with it, and putting it back lets the job resume."""
    directory, aside = tmp_path / "out", tmp_path / "aside"
    directory.mkdir()
    output = directory / "out.csv"
    with pytest.raises(JobFilesChangedError, match=r"^\S+/out, the directory of the job's output, was removed or "
                       r"renamed while the job ran; put it back and run the same command with --resume"):
        LabelJob(spec(source, output), clf, progress=AfterCommit(lambda: directory.rename(aside))).run()
    aside.rename(directory)
    LabelJob(spec(source, output, resume=True), clf).run()
    with open(output, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["id"] for row in rows] == [f"r{i}" for i in range(ROWS)] and all(row["label"] for row in rows)


def test_parquet_parts_removed_while_the_job_runs_stop_it(tmp_path, clf, source):
    output = tmp_path / "out.parquet"
    parts = OutputFiles(str(output)).parts
    with pytest.raises(JobFilesChangedError, match=r"out.parquet.parts: 1 of the 1 committed part files are gone"):
        LabelJob(spec(source, output, Format.PARQUET), clf,
                 progress=AfterCommit(lambda: shutil.rmtree(parts))).run()
    assert not output.exists()


def test_a_partial_output_shorter_than_committed_is_refused_not_padded(tmp_path, clf, source):
    """Truncating a short file to the committed length extended it with zero bytes, exit 0."""
    output = tmp_path / "out.csv"
    stop = threading.Event()
    stop.set()
    assert LabelJob(spec(source, output), clf, stop=stop).run().rows == CHUNK
    partial = OutputFiles(str(output)).partial
    partial.write_bytes(partial.read_bytes()[:-10])
    with pytest.raises(BadInputError, match=r"out.csv.partial holds [\d,]+ bytes of the [\d,]+ committed"):
        LabelJob(spec(source, output, resume=True), clf).run()
    assert not output.exists()


def crash_while_removing_work(monkeypatch):
    """A kill just after the finished output was renamed into place: the work files all remain."""
    remove_work = OutputFiles.remove_work

    def killed(self):
        if self.final.exists():  # at the end of the job (a fresh job removes what a crash left, too)
            raise KeyboardInterrupt("killed")
        remove_work(self)
    monkeypatch.setattr(OutputFiles, "remove_work", killed)


@pytest.mark.parametrize("fmt", [Format.CSV, Format.PARQUET])
def test_a_kill_after_the_output_is_complete_resumes_to_the_same_output(tmp_path, clf, source, monkeypatch, fmt):
    suffix = "parquet" if fmt is Format.PARQUET else "csv"
    whole, output = tmp_path / f"whole.{suffix}", tmp_path / f"out.{suffix}"
    LabelJob(spec(source, whole, fmt), clf).run()
    with monkeypatch.context() as patch:
        crash_while_removing_work(patch)
        with pytest.raises(KeyboardInterrupt):
            LabelJob(spec(source, output, fmt), clf).run()
    files = OutputFiles(str(output))
    assert files.manifest.exists() and output.exists()
    summary = LabelJob(spec(source, output, fmt, resume=True), clf).run()
    assert summary.rows == ROWS and not summary.already_complete
    assert output.read_bytes() == whole.read_bytes()
    assert not any(p.exists() for p in files.work())


def test_a_kill_after_the_manifest_is_removed_leaves_a_finished_job(tmp_path, clf, source, monkeypatch):
    """Work files were removed before the manifest: a kill in between left a manifest naming a
    missing cache, and every --resume failed after moving the finished output aside."""
    output = tmp_path / "out.csv"
    with monkeypatch.context() as patch:
        crash_while_removing_work(patch)
        with pytest.raises(KeyboardInterrupt):
            LabelJob(spec(source, output), clf).run()
    finished = output.read_bytes()
    files = OutputFiles(str(output))
    files.manifest.unlink()  # removed first now: the kill came after it
    summary = LabelJob(spec(source, output, resume=True), clf).run()
    assert summary.already_complete and output.read_bytes() == finished
    assert not any(p.exists() for p in files.work())
    with pytest.raises(BadInputError, match="exists; pass --overwrite"):  # without --resume: as before
        LabelJob(spec(source, output), clf).run()


@pytest.mark.parametrize("side_file", ["out.csv.lock", "out.csv.manifest.json.tmp", "out.csv.tmp",
                                       "out.csv.parts/part-000000.parquet"])
def test_an_input_that_is_one_of_the_job_s_own_files_is_refused(tmp_path, clf, source, side_file):
    """The lock, a temporary file renamed into place, a part: the input was truncated, overwritten or deleted."""
    named = tmp_path / side_file
    named.parent.mkdir(exist_ok=True)
    shutil.copy(source, named)
    with pytest.raises(BadInputError, match="the job's own"):
        LabelJob(spec(named, tmp_path / "out.csv"), clf).run()
    assert named.read_bytes() == source.read_bytes()


def test_cache_bytes_appended_after_a_commit_that_cached_nothing_are_cut_back(tmp_path, clf):
    """A kill between the cache's append and the manifest, when the commits before had cached
    nothing (a first chunk of empty texts): the resume found more bytes than the 0 committed and
    refused, as if another program had written to the cache."""
    source, output, whole = tmp_path / "in.csv", tmp_path / "out.csv", tmp_path / "whole.csv"
    with open(source, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows((f"r{i}", "" if i < CHUNK else f"好吃{i}") for i in range(ROWS))
    LabelJob(spec(source, whole), clf).run()
    stop = threading.Event()
    stop.set()
    assert LabelJob(spec(source, output), clf, stop=stop).run().rows == CHUNK
    cache = OutputFiles(str(output)).cache
    assert not cache.exists() or cache.stat().st_size == 0
    cache.write_bytes(b"\x01" * 1750)  # the next chunk's entries, appended before its manifest was saved
    assert LabelJob(spec(source, output, resume=True), clf).run().rows == ROWS
    assert output.read_bytes() == whole.read_bytes()


def test_a_committed_part_emptied_while_the_job_was_stopped_is_one_line_at_resume(tmp_path, clf, source):
    output = tmp_path / "out.parquet"
    stop = threading.Event()
    stop.set()
    assert LabelJob(spec(source, output, Format.PARQUET), clf, stop=stop).run().rows == CHUNK
    OutputFiles(str(output)).part(0).write_bytes(b"")
    with pytest.raises(JobFilesChangedError, match=r"part-000000.parquet no longer holds the bytes the job committed"):
        LabelJob(spec(source, output, Format.PARQUET, resume=True), clf).run()


def stopped_after(source, output, clf, fmt=Format.CSV, chunks=1) -> None:
    """A job stopped after ``chunks`` commits or a few more (the chunks already read are committed)."""
    stop = threading.Event()
    commits = 0

    class Counting:
        def update(self, *args) -> None:
            nonlocal commits
            commits += 1
            if commits == chunks:
                stop.set()
    assert chunks * CHUNK <= LabelJob(spec(source, output, fmt), clf, progress=Counting(), stop=stop).run().rows < ROWS


def flip_label(path) -> None:
    """An edit that keeps the file's length: the first 负面 becomes 正面 (the same UTF-8 length)."""
    data = path.read_bytes()
    assert "负面".encode() in data
    path.write_bytes(data.replace("负面".encode(), "正面".encode(), 1))


def flip_last_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("work_file, edit", [("partial", flip_label), ("cache", flip_last_byte),
                                             ("ledger", flip_last_byte)])
def test_a_work_file_rewritten_at_its_length_while_the_job_was_stopped_is_refused(tmp_path, clf, source, work_file, edit):
    """Only the length of a work file was checked: a label edited by hand in the .partial stayed in
    the output, and a changed cache entry labelled later repeats of its text from the changed bytes."""
    output = tmp_path / "out.csv"
    stopped_after(source, output, clf, chunks=2)
    path = getattr(OutputFiles(str(output)), work_file)
    size = path.stat().st_size
    edit(path)
    assert path.stat().st_size == size
    with pytest.raises(JobFilesChangedError, match=rf"{path.name} no longer holds the bytes the job committed"):
        LabelJob(spec(source, output, resume=True), clf).run()
    assert not output.exists() and path.stat().st_size == size


def test_parquet_parts_swapped_while_the_job_was_stopped_are_refused(tmp_path, clf, source):
    """Two parts swapped: each still reads, and the merged output held their rows out of order."""
    output = tmp_path / "out.parquet"
    stopped_after(source, output, clf, Format.PARQUET, chunks=2)
    files = OutputFiles(str(output))
    first, second = files.part(0).read_bytes(), files.part(1).read_bytes()
    files.part(0).write_bytes(second)
    files.part(1).write_bytes(first)
    with pytest.raises(JobFilesChangedError, match="out.parquet.parts no longer holds the bytes the job committed"):
        LabelJob(spec(source, output, Format.PARQUET, resume=True), clf).run()
    assert not output.exists()


@pytest.mark.parametrize("fmt", [Format.CSV, Format.PARQUET])
def test_checked_work_files_resume_to_the_uninterrupted_output(tmp_path, clf, source, fmt):
    """The checksums follow every commit (header and Parquet parts included): an untouched job resumes,
    twice, to the same output as a run without stops; a job begun without checksums resumes unchecked."""
    suffix = "parquet" if fmt is Format.PARQUET else "csv"
    whole, output, older = (tmp_path / f"{name}.{suffix}" for name in ("whole", "out", "older"))
    LabelJob(spec(source, whole, fmt), clf).run()
    stopped_after(source, output, clf, fmt, chunks=2)
    stop = threading.Event()
    stop.set()
    LabelJob(spec(source, output, fmt, resume=True), clf, stop=stop).run()
    assert LabelJob(spec(source, output, fmt, resume=True), clf).run().rows == ROWS
    stopped_after(source, older, clf, fmt, chunks=2)
    manifest = OutputFiles(str(older)).manifest
    saved = json.loads(manifest.read_text(encoding="utf-8"))
    assert set(saved["checksums"]) == ({"parts", "cache", "ledger"} if fmt is Format.PARQUET else {"output", "cache", "ledger"})
    del saved["checksums"]
    manifest.write_text(json.dumps(saved), encoding="utf-8")
    assert LabelJob(spec(source, older, fmt, resume=True), clf).run().rows == ROWS
    if fmt is Format.PARQUET:
        import pyarrow.parquet as pq

        assert pq.read_table(output).equals(pq.read_table(whole)) and pq.read_table(older).equals(pq.read_table(whole))
    else:
        assert output.read_bytes() == whole.read_bytes() == older.read_bytes()


@pytest.mark.parametrize(("fmt", "lines", "refusal"), [
    (Format.CSV, ['{"text": "好吃"}', '{"text": '], "line 2: invalid JSON"),
    (Format.PARQUET, ['{"text": "好吃"}', '{"text": '], "line 2: invalid JSON"),
    (Format.PARQUET, ['{"text": "好吃", "n": 1}', '{"text": "差", "n": "x"}'], "column 'n' holds a value Parquet"),
], ids=["csv", "parquet", "parquet-types"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_job_stopped_by_bad_input_before_its_first_commit_leaves_no_job_files(tmp_path, clf, source, fmt, lines,
                                                                                   refusal, overwrite):
    """An --overwrite job whose input failed in its first chunk left its manifest: the next plain run
    was refused ("shows an unfinished job"), its --resume too (another input), and the report said
    an unfinished job would replace the output. A Parquet job whose first chunk's types Parquet
    could not hold left an empty parts directory."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output = tmp_path / f"out.{fmt.value}"
    if overwrite:  # an earlier output, which the new job would replace
        assert LabelJob(spec(source, output, fmt), clf).run().rows == ROWS
    before = output.read_bytes() if output.exists() else None
    job = LabelJobSpec(input=str(bad), output=str(output), input_format=Format.JSONL, output_format=fmt,
                       chunk_rows=CHUNK, overwrite=overwrite)
    with pytest.raises(BadInputError, match=refusal):
        LabelJob(job, clf).run()
    files = OutputFiles(str(output))
    assert not files.manifest.exists() and not files.parts.exists() and not files.partial.exists()
    assert (output.read_bytes() if output.exists() else None) == before  # the output it would replace, untouched
