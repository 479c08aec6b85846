"""`structsent label` under misuse and faults, through the real command line.

Two jobs on one output, output onto input, broken CSV in flag mode, JSONL rows without the
text, edited input on resume, a directory as input, a full disk, --resume before any commit,
and output bytes that must not depend on --chunk-rows.
"""

import csv
import io
import json
import os
import signal
import stat
import subprocess
import time

import pytest

from ..conftest import small_filesystem
from .conftest import PYTHON, read_jsonl_bytes
from .conftest import structsent as run_cli

# Subprocess tests of the real command line: CI runs them; `make test-fast` leaves them out.
pytestmark = pytest.mark.slow


def model_args(model_dir):
    return ["--model", model_dir, "--quiet"]


def one_line_error(proc, code):
    """The process exited with ``code`` and said why in one line, without a traceback."""
    message = proc.stderr.decode()
    assert proc.returncode == code, message
    # (the first test to use a model on ONNX Runtime meets its export, said on a line of its own)
    lines = [line for line in message.strip().splitlines() if not line.startswith("first use of ")]
    assert "Traceback" not in message and len(lines) == 1, message
    return message


def write_csv(path, rows, header=("id", "text")):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])


def read_csv(path):
    csv.field_size_limit(1 << 25)  # one test writes a 140,000-character text
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def wait_for(condition, proc, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if condition():
            return True
        time.sleep(0.02)
    return False


def rows_done(manifest):
    try:
        return json.loads(manifest.read_text())["rows_done"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def killed_after_rows(source, out, model_dir, rows: int, *flags: str) -> None:
    """Run `label source -o out` (chunks of 16 rows) and kill -9 it once ``rows`` rows are committed."""
    proc = subprocess.Popen([PYTHON, "-m", "structsent", "label", str(source), "-o", str(out), "--chunk-rows", "16",
                             *flags, *map(str, model_args(model_dir))], stderr=subprocess.DEVNULL)
    wait_for(lambda: rows_done(out.with_name(out.name + ".manifest.json")) >= rows, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def refused_after_a_file_was_written(fifo, texts, out, path, content, model_dir, *flags) -> str:
    """`label FIFO -o out` fed ``texts``; once 16 rows are committed another program writes
    ``content`` at ``path``; the job must then exit 2. Its one-line message."""
    job = subprocess.Popen([PYTHON, "-m", "structsent", "label", str(fifo), "-o", str(out), "--chunk-rows", "16",
                            *map(str, flags), *map(str, model_args(model_dir))], stderr=subprocess.PIPE)
    half = len(texts) // 2
    with open(fifo, "w", encoding="utf-8") as feed:
        feed.write("".join(t + "\n" for t in texts[:half]))
        feed.flush()
        assert wait_for(lambda: rows_done(out.with_name(out.name + ".manifest.json")) >= 16, job), job.stderr.read()
        path.write_text(content, encoding="utf-8")
        feed.write("".join(t + "\n" for t in texts[half:]))
    job.wait(timeout=120)
    return one_line_error(subprocess.CompletedProcess([], job.returncode, b"", job.stderr.read()), 2)


# -- two jobs, one output ------------------------------------------------------------------------
def test_a_second_job_on_the_same_output_is_refused_and_the_first_loses_nothing(tmp_path, hf_model_dir, real_reviews):
    """Job 1 reads a pipe that the test feeds, so it is surely running while job 2 starts."""
    fifo = tmp_path / "in.csv"
    os.mkfifo(fifo)
    out = tmp_path / "out.csv"
    texts = [t.replace("\n", " ") for t in real_reviews[:400]]
    first = subprocess.Popen([PYTHON, "-m", "structsent", "label", str(fifo), "-o", str(out), "--chunk-rows", "16",
                              *map(str, model_args(hf_model_dir))], stderr=subprocess.PIPE)
    with open(fifo, "w", encoding="utf-8", newline="") as feed:
        writer = csv.writer(feed)
        writer.writerow(["id", "text"])
        writer.writerows([i, t] for i, t in enumerate(texts[:200]))
        feed.flush()
        assert wait_for(lambda: rows_done(tmp_path / "out.csv.manifest.json") >= 16, first), first.stderr.read()
        for extra in ([], ["--resume"], ["--overwrite"]):
            source = tmp_path / "other.csv"
            write_csv(source, [[0, "好评"]])
            second = run_cli("label", source, "-o", out, *extra, *model_args(hf_model_dir), check=False)
            message = one_line_error(second, 2)
            assert f"PID {first.pid}" in message and "another structsent label job" in message
        for work_file, fmt in (("out.csv.lock", "csv"), ("out.csv.partial", "csv"), ("out.csv.manifest.json", "jsonl")):
            # written, its lock replaced let a third job run beside the first; its rows lost
            second = run_cli("label", source, "-o", tmp_path / work_file, "--output-format", fmt, "--overwrite",
                             *model_args(hf_model_dir), check=False)
            message = one_line_error(second, 2)
            assert f"a work file of the structsent label job (PID {first.pid}) writing {out}" in message
        writer.writerows([i, t] for i, t in enumerate(texts[200:], start=200))
    assert first.wait(timeout=120) == 0, first.stderr.read()
    rows = read_csv(out)
    assert [r["id"] for r in rows] == [str(i) for i in range(len(texts))]
    assert [r["text"] for r in rows] == texts
    assert all(r["label"] for r in rows)
    assert not (tmp_path / "out.csv.lock").exists()


def test_a_job_killed_with_sigkill_leaves_no_lock_behind(tmp_path, hf_model_dir, reviews_file):
    out = tmp_path / "out.jsonl"
    killed_after_rows(reviews_file, out, hf_model_dir, 16)
    resumed = run_cli("label", reviews_file, "-o", out, "--resume", *model_args(hf_model_dir), check=False)
    assert resumed.returncode == 0, resumed.stderr.decode()
    texts = reviews_file.read_text(encoding="utf-8").splitlines()
    assert [r["text"] for r in read_jsonl_bytes(out.read_bytes())] == texts


def test_an_output_named_as_an_unfinished_jobs_work_file_is_refused(tmp_path, hf_model_dir, reviews_file):
    """`-o out.jsonl.partial --overwrite` replaced a killed job's committed rows: its resume failed."""
    out = tmp_path / "out.jsonl"
    killed_after_rows(reviews_file, out, hf_model_dir, 16)
    source = tmp_path / "other.csv"
    write_csv(source, [[0, "好评"]])
    other = run_cli("label", source, "-o", tmp_path / "out.jsonl.partial", "--output-format", "csv", "--overwrite",
                    *model_args(hf_model_dir), check=False)
    message = one_line_error(other, 2)
    assert f"a work file of an unfinished structsent label job on {out}" in message
    resumed = run_cli("label", reviews_file, "-o", out, "--resume", *model_args(hf_model_dir), check=False)
    assert resumed.returncode == 0, resumed.stderr.decode()
    texts = reviews_file.read_text(encoding="utf-8").splitlines()
    assert [r["text"] for r in read_jsonl_bytes(out.read_bytes())] == texts


def test_a_job_whose_work_file_is_another_unfinished_jobs_output_is_refused(tmp_path, hf_model_dir, reviews_file):
    """A job on c.jsonl beside a job writing c.jsonl.partial (its own work file): each replaced the
    other's rows, and the advice (--overwrite) removed the other's output."""
    theirs = tmp_path / "c.jsonl.partial"
    killed_after_rows(reviews_file, theirs, hf_model_dir, 16)
    source = tmp_path / "other.csv"
    write_csv(source, [[0, "好评"]])
    ours = run_cli("label", source, "-o", tmp_path / "c.jsonl", *model_args(hf_model_dir), check=False)
    message = one_line_error(ours, 2)
    assert f"its work file {theirs} is the output of an unfinished structsent label job on {theirs}" in message
    resumed = run_cli("label", reviews_file, "-o", theirs, "--output-format", "jsonl", "--resume",
                      *model_args(hf_model_dir), check=False)
    assert resumed.returncode == 0, resumed.stderr.decode()
    texts = reviews_file.read_text(encoding="utf-8").splitlines()
    assert [r["text"] for r in read_jsonl_bytes(theirs.read_bytes())] == texts


def test_overwrite_keeps_the_old_output_until_the_new_one_is_complete(tmp_path, hf_model_dir, reviews_file):
    """--overwrite removed the old output first: a job that then failed (a bad row, a kill) left none."""
    out = tmp_path / "out.jsonl"
    out.write_text('{"old": "result"}\n', encoding="utf-8")
    bad = tmp_path / "bad.csv"
    bad.write_text('id,text\n1,好吃\n2,"坏\n', encoding="utf-8")
    failed = run_cli("label", bad, "-o", out, "--overwrite", *model_args(hf_model_dir), check=False)
    one_line_error(failed, 2)
    assert out.read_text(encoding="utf-8") == '{"old": "result"}\n'
    killed_after_rows(reviews_file, out, hf_model_dir, 16, "--overwrite")
    assert out.read_text(encoding="utf-8") == '{"old": "result"}\n'  # killed: the old output is still there
    run_cli("label", reviews_file, "-o", out, "--resume", *model_args(hf_model_dir))
    texts = reviews_file.read_text(encoding="utf-8").splitlines()
    assert [r["text"] for r in read_jsonl_bytes(out.read_bytes())] == texts


def test_a_file_written_at_the_output_path_while_the_job_runs_is_not_replaced(tmp_path, hf_model_dir, real_reviews):
    """The job renamed its output over a file another program (or `structsent report`) wrote there
    while it ran, without --overwrite, exit 0."""
    fifo = tmp_path / "in.txt"
    os.mkfifo(fifo)
    out = tmp_path / "out.csv"
    texts = [t.replace("\n", " ") for t in real_reviews[:200]]
    message = refused_after_a_file_was_written(fifo, texts, out, out, "precious\n", hf_model_dir)
    assert f"{out} was written by another program since the job began" in message
    assert out.read_text(encoding="utf-8") == "precious\n"
    assert (f"the labelled rows are in {out}.partial: move that file away, rename out.csv.partial to out.csv, then "
            "remove out.csv.manifest.json, out.csv.cache and out.csv.inputs") in message
    rows = read_csv(tmp_path / "out.csv.partial")  # a pipe cannot be read again: every row is in it
    assert [r["text"] for r in rows] == texts and all(r["label"] for r in rows)
    # As advised: a later job on the same output then finds no unfinished one.
    out.rename(tmp_path / "precious.csv")
    (tmp_path / "out.csv.partial").rename(out)
    for name in ("out.csv.manifest.json", "out.csv.cache", "out.csv.inputs"):
        (tmp_path / name).unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.csv", "precious.csv"]
    again = run_cli("label", tmp_path / "precious.csv", "-o", out, *model_args(hf_model_dir), check=False)
    assert again.returncode == 2 and f"{out} exists; pass --overwrite" in again.stderr.decode()


def test_a_resume_does_not_replace_a_file_written_at_the_output_path_while_the_job_was_stopped(
        tmp_path, hf_model_dir, reviews_file):
    out = tmp_path / "out.jsonl"
    killed_after_rows(reviews_file, out, hf_model_dir, 16)
    out.write_text("precious\n", encoding="utf-8")
    refused = run_cli("label", reviews_file, "-o", out, "--resume", *model_args(hf_model_dir), check=False)
    message = one_line_error(refused, 2)
    assert "was written by another program since the job began" in message and "--resume" in message
    assert out.read_text(encoding="utf-8") == "precious\n"
    out.rename(tmp_path / "moved.jsonl")
    run_cli("label", reviews_file, "-o", out, "--resume", *model_args(hf_model_dir))
    texts = reviews_file.read_text(encoding="utf-8").splitlines()
    assert [r["text"] for r in read_jsonl_bytes(out.read_bytes())] == texts


def test_a_report_is_not_written_over_a_jobs_work_file_or_a_file_written_while_the_job_ran(
        tmp_path, hf_model_dir, reviews_file, real_reviews):
    """`--report out.jsonl.partial --overwrite` destroyed an unfinished job's rows; `--report R` replaced
    a file another job wrote at R while this one ran (checked only before the job), exit 0."""
    out = tmp_path / "out.jsonl"
    killed_after_rows(reviews_file, out, hf_model_dir, 16)
    source = tmp_path / "other.csv"
    write_csv(source, [[0, "好评"]])
    labelled = tmp_path / "labelled.csv"
    run_cli("label", source, "-o", labelled, *model_args(hf_model_dir))
    for command in (["label", source, "-o", tmp_path / "again.csv", "--report", tmp_path / "out.jsonl.partial",
                     *model_args(hf_model_dir)],
                    ["report", labelled, "-o", tmp_path / "out.jsonl.partial", "--quiet"]):
        message = one_line_error(run_cli(*command, "--overwrite", check=False), 2)
        assert f"a work file of an unfinished structsent label job on {out}" in message
    run_cli("label", reviews_file, "-o", out, "--resume", *model_args(hf_model_dir))  # its rows are all there
    assert len(read_jsonl_bytes(out.read_bytes())) == len(reviews_file.read_text(encoding="utf-8").splitlines())

    fifo = tmp_path / "in.txt"
    os.mkfifo(fifo)
    report = tmp_path / "done.csv"
    texts = [t.replace("\n", " ") for t in real_reviews[:100]]
    message = refused_after_a_file_was_written(fifo, texts, tmp_path / "big.csv", report, "another job's rows\n",
                                               hf_model_dir, "--report", report)
    assert f"is written, but not the report: {report} was written by another program since the job began" in message
    assert report.read_text(encoding="utf-8") == "another job's rows\n"
    assert len(read_csv(tmp_path / "big.csv")) == len(texts)


def test_a_report_does_not_read_a_running_jobs_work_files_or_the_output_it_is_replacing(tmp_path, hf_model_dir,
                                                                                        real_reviews):
    """`report out.csv.partial` described the rows a running job had committed so far, and `report
    out.csv` the old output an --overwrite job was replacing, exit 0 both."""
    source = tmp_path / "old.csv"
    write_csv(source, [[0, "好评"], [1, "差评"]])
    out = tmp_path / "out.csv"
    run_cli("label", source, "-o", out, *model_args(hf_model_dir))  # the output the job replaces
    fifo = tmp_path / "in.txt"
    os.mkfifo(fifo)
    texts = [t.replace("\n", " ") for t in real_reviews[:100]]
    job = subprocess.Popen([PYTHON, "-m", "structsent", "label", str(fifo), "-o", str(out), "--output-format", "csv",
                            "--chunk-rows", "16", "--overwrite", *map(str, model_args(hf_model_dir))],
                           stderr=subprocess.PIPE)
    with open(fifo, "w", encoding="utf-8") as feed:
        feed.write("".join(t + "\n" for t in texts[:50]))
        feed.flush()
        assert wait_for(lambda: rows_done(tmp_path / "out.csv.manifest.json") >= 16, job), job.stderr.read()
        for read in (["out.csv.partial", "--format", "csv"], ["out.csv.manifest.json", "--format", "jsonl"]):
            message = one_line_error(run_cli("report", tmp_path / read[0], *read[1:], "-o", tmp_path / "r.html",
                                             check=False), 2)
            assert (f"a work file of the structsent label job (PID {job.pid}) writing {out}, not a labelled file; "
                    f"wait for that job to finish, then report {out}") in message
        summary = run_cli("report", source, "-o", tmp_path / "r.html", "--job-summary",
                          tmp_path / "out.csv.manifest.json", check=False)
        assert f"PID {job.pid}" in one_line_error(summary, 2)
        message = one_line_error(run_cli("report", out, "-o", tmp_path / "r.html", check=False), 2)
        assert message.strip().endswith(f"{out}: another structsent label job (PID {job.pid}) is writing this output; "
                                        "report it when that job has finished")
        # A page written over the running job's output (the job refused, at its end, to replace it), and
        # its work file labelled as an input (read as it then was, exit 0): refused both.
        page = run_cli("report", source, "-o", out, "--overwrite", check=False)
        assert one_line_error(page, 2).strip().endswith(
            f"{out}: the output of the structsent label job (PID {job.pid}) writing {out}; write the report to "
            "another path")
        labelled = run_cli("label", tmp_path / "out.csv.partial", "--format", "csv", "-o", tmp_path / "b.csv",
                           "--prefix", "p_", *model_args(hf_model_dir), check=False)
        assert (f"a work file of the structsent label job (PID {job.pid}) writing {out}, not a finished file; "
                f"wait for that job to finish, then label {out}") in one_line_error(labelled, 2)
        assert not (tmp_path / "b.csv").exists()
        feed.write("".join(t + "\n" for t in texts[50:]))
    assert job.wait(timeout=120) == 0, job.stderr.read()
    assert not (tmp_path / "r.html").exists()
    done = run_cli("report", out, "-o", tmp_path / "r.html", check=False)
    assert done.returncode == 0 and done.stderr.decode().count("\n") == 1, done.stderr
    assert done.stderr.decode().startswith(f"{tmp_path / 'r.html'}: {len(texts)} rows (")


def test_a_report_of_a_stopped_jobs_files_is_refused_and_of_the_output_it_replaces_says_so(tmp_path, hf_model_dir,
                                                                                           reviews_file):
    """The work files of a job stopped half-way hold part of its rows: refused. The output an
    --overwrite job stopped before replacing is complete, and reportable (refusing it would leave no
    way to report it but to remove the stopped job's work), with a notice; `label --resume --report`
    still reports the output it finishes."""
    source = tmp_path / "old.csv"
    write_csv(source, [[0, "好评"], [1, "差评"]])
    out = tmp_path / "out.jsonl"
    run_cli("label", source, "-o", out, *model_args(hf_model_dir))
    killed_after_rows(reviews_file, out, hf_model_dir, 16, "--overwrite")
    partial = run_cli("report", tmp_path / "out.jsonl.partial", "--format", "jsonl", "-o", tmp_path / "r.html",
                      check=False)
    assert (f"a work file of an unfinished structsent label job on {out} (its manifest {out}.manifest.json is there), "
            f"not a labelled file; resume that job (or start it over with --overwrite), then report {out}"
            ) in one_line_error(partial, 2)
    old = run_cli("report", out, "-o", tmp_path / "r.html", "--quiet", check=False)
    assert old.returncode == 0, old.stderr.decode()
    assert old.stderr.decode() == (f"structsent: {out}: an unfinished structsent label job on {out} (its manifest "
                                   f"{out}.manifest.json is there) replaces it once resumed; this describes the file "
                                   "as it is now\n")
    assert '<dd id="total-rows">2</dd>' in (tmp_path / "r.html").read_text(encoding="utf-8")
    run_cli("label", reviews_file, "-o", out, "--resume", "--report", tmp_path / "r2.html", *model_args(hf_model_dir))
    rows = len(reviews_file.read_text(encoding="utf-8").splitlines())
    assert f'<dd id="total-rows">{rows:,}</dd>' in (tmp_path / "r2.html").read_text(encoding="utf-8")


def test_a_job_on_an_output_a_ray_job_is_writing_is_not_told_to_resume_it(tmp_path, hf_model_dir):
    """It said "stop it and pass --resume", which a Ray job's output (a directory) cannot take."""
    from structsent.ray.outputs import output_directory_lock

    source = tmp_path / "in.csv"
    write_csv(source, [[0, "好评"]])
    out = tmp_path / "out"
    with output_directory_lock(str(out)):
        refused = run_cli("label", source, "-o", out, "--output-format", "csv", *model_args(hf_model_dir), check=False)
    message = one_line_error(refused, 2)
    assert message.strip().endswith(f"{out}: another structsent label job (PID {os.getpid()}) is writing this output; "
                                    "wait for it to finish, or write to another file"), message
    assert not out.exists()


def _label_with_merge_hook(hook: str, *args):
    """The command line, with the Parquet merge wrapped: ``hook`` runs "before" or "after" it."""
    code = ("import os, signal, sys, structsent.jobs.label as job\n"
            "merge = job.merge_parquet_parts\n"
            "def hooked(parts, target, before_rename=None):\n"
            f"    if {hook!r} == 'before': open(target, 'w').write('foreign\\n')\n"
            "    merge(parts, target, before_rename)\n"
            f"    if {hook!r} == 'after': os.kill(os.getpid(), signal.SIGKILL)\n"
            "job.merge_parquet_parts = hooked\n"
            "from structsent.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    return subprocess.run([PYTHON, "-c", code, *map(str, args)], capture_output=True, timeout=120)


def test_a_parquet_job_killed_right_after_its_merge_resumes_and_a_file_written_during_the_merge_stays(
        tmp_path, hf_model_dir, real_reviews):
    """Killed after the merged file was renamed onto OUT, the resume took it for another program's
    file; a file written at OUT during the merge (seconds on a large output) was renamed over, exit 0."""
    source = tmp_path / "in.csv"
    write_csv(source, [[i, t.replace("\n", " ")] for i, t in enumerate(real_reviews[:300])])
    out = tmp_path / "out.parquet"
    args = ["label", source, "-o", out, "--id-column", "id", "--chunk-rows", "64", *model_args(hf_model_dir)]
    assert _label_with_merge_hook("after", *args).returncode == -signal.SIGKILL
    assert (tmp_path / "out.parquet.manifest.json").exists()
    run_cli(*args, "--resume")
    import pyarrow.parquet as pq

    assert pq.read_table(out).column("id").to_pylist() == [str(i) for i in range(300)]
    assert not (tmp_path / "out.parquet.manifest.json").exists()
    other = tmp_path / "other.parquet"
    proc = _label_with_merge_hook("before", *[other if a == out else a for a in args])
    message = one_line_error(proc, 2)
    assert f"{other} was written by another program since the job began" in message
    assert other.read_text() == "foreign\n"


def test_a_report_inside_a_parquet_jobs_parts_directory_is_refused(tmp_path, hf_model_dir, reviews_file):
    out = tmp_path / "out.parquet"
    killed_after_rows(reviews_file, out, hf_model_dir, 32)
    labelled = tmp_path / "labelled.csv"
    write_csv(labelled, [[0, "好评"]])
    run_cli("label", labelled, "-o", tmp_path / "done.csv", *model_args(hf_model_dir))
    part = tmp_path / "out.parquet.parts" / "part-000001.parquet"
    before = part.read_bytes()
    message = one_line_error(run_cli("report", tmp_path / "done.csv", "-o", part, "--overwrite", "--quiet",
                                     check=False), 2)
    assert f"inside {tmp_path / 'out.parquet.parts'}, the work directory of an unfinished" in message
    assert part.read_bytes() == before


# -- output onto input -----------------------------------------------------------------------------
@pytest.mark.parametrize("link", ["same", "symlink", "hardlink"])
def test_output_onto_the_input_is_refused_before_touching_it(tmp_path, hf_model_dir, link):
    source = tmp_path / "same.csv"
    write_csv(source, [[1, "好评"], [2, "差评"]])
    before = source.read_bytes()
    out = source
    if link == "symlink":
        out = tmp_path / "link.csv"
        out.symlink_to(source)
    elif link == "hardlink":
        out = tmp_path / "hard.csv"
        os.link(source, out)
    for extra in (["--overwrite"], [], ["--resume"]):
        proc = run_cli("label", source, "-o", out, *extra, *model_args(hf_model_dir), check=False)
        message = one_line_error(proc, 2)
        # (it said "the job's own output file", which read as blaming some other file)
        assert f"{source} is both the input and the output (-o {out}): write the output to another path" in message
        assert source.read_bytes() == before


# -- output onto something that is not a file ----------------------------------------------------------
def test_output_onto_a_named_pipe_is_refused_even_with_overwrite(tmp_path, hf_model_dir):
    # The finished output is renamed onto the output path: that would delete a pipe or a device.
    source, fifo = tmp_path / "in.csv", tmp_path / "fifo"
    write_csv(source, [[1, "好评"]])
    os.mkfifo(fifo)
    for extra in ([], ["--overwrite"]):
        message = one_line_error(run_cli("label", source, "-o", fifo, *extra, *model_args(hf_model_dir),
                                         check=False), 2)
        assert "is a named pipe; name a regular file" in message
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.parametrize(("suffix", "kind"), [(".lock", "dir"), (".partial", "dir"), (".manifest.json", "dir"),
                                              (".cache", "dir"), (".inputs", "dir"), (".parts", "file")])
def test_something_else_where_a_work_file_goes_is_a_one_line_error_and_kept(tmp_path, hf_model_dir, suffix, kind):
    source = tmp_path / "in.csv"
    write_csv(source, [[1, "好评"]])
    output = tmp_path / ("out.parquet" if suffix == ".parts" else "out.csv")
    squatter = tmp_path / (output.name + suffix)
    if kind == "dir":
        squatter.mkdir()
        (squatter / "mine.txt").write_text("not the job's")
    else:
        squatter.write_text("not the job's")
    for extra in ([], ["--overwrite"], ["--resume"]):
        message = one_line_error(run_cli("label", source, "-o", output, *extra, *model_args(hf_model_dir),
                                         check=False), 2)
        wanted = "directory" if kind == "file" else "file"
        assert f"where the job keeps a work {wanted} beside its output" in message
    kept = squatter / "mine.txt" if kind == "dir" else squatter
    assert kept.read_text() == "not the job's" and not output.exists()


def test_output_through_a_symbolic_link_writes_the_file_it_names_and_keeps_the_link(tmp_path, hf_model_dir):
    source, target, link = tmp_path / "in.csv", tmp_path / "data" / "labelled.csv", tmp_path / "link.csv"
    write_csv(source, [[1, "好评"], [2, "差评"]])
    target.parent.mkdir()
    target.write_text("old\n")
    link.symlink_to(target)
    run_cli("label", source, "-o", link, "--overwrite", *model_args(hf_model_dir))
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert [r["text"] for r in read_csv(target)] == ["好评", "差评"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["labelled.csv"]  # no work files left behind


def test_two_jobs_through_two_links_to_one_output_share_its_lock(tmp_path, hf_model_dir, real_reviews):
    # The work files and the lock lie beside the file the links name, not beside either link.
    fifo, target = tmp_path / "in.csv", tmp_path / "data" / "labelled.csv"
    os.mkfifo(fifo)
    target.parent.mkdir()
    first_link, second_link = tmp_path / "a.csv", tmp_path / "b.csv"
    first_link.symlink_to(target)
    second_link.symlink_to(target)
    texts = [t.replace("\n", " ") for t in real_reviews[:100]]
    first = subprocess.Popen([PYTHON, "-m", "structsent", "label", str(fifo), "-o", str(first_link), "--chunk-rows",
                              "16", *map(str, model_args(hf_model_dir))], stderr=subprocess.PIPE)
    with open(fifo, "w", encoding="utf-8", newline="") as feed:  # job 1 runs until the feed is closed
        writer = csv.writer(feed)
        writer.writerow(["id", "text"])
        writer.writerows([i, t] for i, t in enumerate(texts[:50]))
        feed.flush()
        assert wait_for(lambda: rows_done(target.parent / "labelled.csv.manifest.json") >= 16, first)
        other = tmp_path / "other.csv"
        write_csv(other, [[0, "好评"]])
        message = one_line_error(run_cli("label", other, "-o", second_link, "--overwrite", *model_args(hf_model_dir),
                                         check=False), 2)
        assert f"PID {first.pid}" in message
        writer.writerows([i, t] for i, t in enumerate(texts[50:], start=50))
    assert first.wait(timeout=120) == 0, first.stderr.read() if first.stderr else ""
    assert [r["id"] for r in read_csv(target)] == [str(i) for i in range(len(texts))]
    assert first_link.is_symlink() and second_link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.csv", "data", "in.csv", "other.csv"]


# -- standard output closed early ---------------------------------------------------------------------
def test_a_reader_that_stops_early_ends_the_job_quietly(tmp_path, hf_model_dir, reviews_file):
    # `structsent label ... | head -2`: no error, no resume advice (standard output cannot be resumed).
    proc = subprocess.Popen([PYTHON, "-m", "structsent", "label", str(reviews_file), "--format", "txt",
                             "--chunk-rows", "64", *map(str, model_args(hf_model_dir))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and len([proc.stdout.readline() for _ in range(2)][1]) > 0
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and err.decode() == ""


# -- resume with a work file gone ------------------------------------------------------------------
@pytest.mark.parametrize("gone", ["cache", "inputs"])
def test_resume_with_a_work_file_missing_is_a_one_line_error(tmp_path, hf_model_dir, reviews_file, gone):
    out = tmp_path / "out.jsonl"
    args = ["label", reviews_file, "-o", out, "--chunk-rows", "64", *model_args(hf_model_dir)]
    proc = subprocess.Popen([PYTHON, "-m", "structsent", *map(str, args)], stderr=subprocess.DEVNULL)
    wait_for(lambda: rows_done(tmp_path / "out.jsonl.manifest.json") >= 128, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (tmp_path / f"out.jsonl.{gone}").unlink()
    message = one_line_error(run_cli(*args, "--resume", check=False), 2)
    assert f"out.jsonl.{gone}" in message and "is missing" in message and "--overwrite" in message
    run_cli(*args, "--overwrite")
    texts = reviews_file.read_text(encoding="utf-8").splitlines()
    assert [r["text"] for r in read_jsonl_bytes(out.read_bytes())] == texts


# -- JSON Lines rows with fields of their own ------------------------------------------------------------
def test_a_later_jsonl_field_is_never_dropped_or_overwritten(tmp_path, hf_model_dir):
    source = tmp_path / "in.jsonl"
    rows = [{"id": i, "text": "好评" if i % 2 else "差评"} for i in range(300)]
    rows[200] = {**rows[200], "shop": "A店", "label": "人工标注:差评"}
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    message = one_line_error(run_cli("label", source, "-o", tmp_path / "out.csv", "--chunk-rows", "64",
                                     *model_args(hf_model_dir), check=False), 2)
    assert "row 201: field(s) 'shop', 'label' are not among the output's columns ('id', 'text')" in message
    assert not (tmp_path / "out.csv").exists()  # the job stopped: nothing was written as finished
    message = one_line_error(run_cli("label", source, "-o", tmp_path / "out.jsonl", *model_args(hf_model_dir),
                                     check=False), 2)
    assert "row 201: field(s) 'label' would be overwritten" in message
    run_cli("label", source, "-o", tmp_path / "kept.jsonl", "--prefix", "p_", *model_args(hf_model_dir))
    kept = read_jsonl_bytes((tmp_path / "kept.jsonl").read_bytes())
    assert [r["id"] for r in kept] == list(range(300))
    assert kept[200]["label"] == "人工标注:差评" and kept[200]["shop"] == "A店" and kept[200]["p_label"]


# -- bad rows in flag mode ---------------------------------------------------------------------------
def test_an_unbalanced_quote_in_flag_mode_loses_no_other_row(tmp_path, hf_model_dir):
    source = tmp_path / "in.csv"
    lines = ["id,text"] + [f"{i},第{i}条评论，还不错" for i in range(3000)]
    lines[1000] = '999,"引号没有闭合，这一行坏了'
    lines[2000] = "1999," + "长" * 140_000  # longer than the csv module's default field limit
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    proc = run_cli("label", source, "-o", out, "--on-bad-row", "flag", "--model", hf_model_dir)
    rows = read_csv(out)
    assert len(rows) == 3000
    assert [r["id"] for r in rows] == [str(i) for i in range(3000) if i != 999][:999] + [""] + [
        str(i) for i in range(1000, 3000)]
    assert "line 1001: malformed CSV" in rows[999]["error"] and "reading went on at line 1002" in rows[999]["error"]
    assert rows[999]["label"] == "" and all(r["label"] for i, r in enumerate(rows) if i != 999)
    assert rows[1999]["text"] == "长" * 140_000
    summary = proc.stderr.decode()
    assert "3,000 rows" in summary and "flagged 1 (1 malformed multi-line CSV records" in summary


def test_an_unbalanced_quote_without_flag_mode_stops_with_the_line(tmp_path, hf_model_dir):
    source = tmp_path / "in.csv"
    source.write_text('id,text\n1,好评\n2,"差评\n3,一般\n', encoding="utf-8")
    message = one_line_error(run_cli("label", source, *model_args(hf_model_dir), check=False), 2)
    assert "line 3" in message and "unbalanced quote" in message


def test_a_jsonl_line_without_the_text_field_is_flagged(tmp_path, hf_model_dir):
    source = tmp_path / "in.jsonl"
    records = [{"id": 1, "text": "好评"}, {"id": 2, "body": "没有 text 字段"}, {"id": 3, "text": "差评"}]
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    rows = read_jsonl_bytes(run_cli("label", source, "--on-bad-row", "flag", *model_args(hf_model_dir)).stdout)
    assert [r["id"] for r in rows] == [1, 2, 3]
    assert rows[1]["label"] is None and "no 'text' field" in rows[1]["error"] and rows[1]["body"] == "没有 text 字段"
    assert rows[0]["label"] and rows[2]["label"]
    message = one_line_error(run_cli("label", source, *model_args(hf_model_dir), check=False), 2)
    assert "line 2: no 'text' field" in message and "--text-column" in message


# -- resume ----------------------------------------------------------------------------------------
def test_resume_refuses_a_same_size_edit_beyond_the_first_mib(tmp_path, hf_model_dir):
    source = tmp_path / "in.txt"
    line = "这家店的服务很好，菜也好吃，" * 30  # ~1.2 kB a line: the first MiB is ~850 lines
    source.write_text("".join(f"{i:05d}{line}\n" for i in range(4000)), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    manifest = tmp_path / "out.jsonl.manifest.json"
    args = ["label", source, "-o", out, "--chunk-rows", "100", *model_args(hf_model_dir)]
    proc = subprocess.Popen([PYTHON, "-m", "structsent", *map(str, args)], stderr=subprocess.DEVNULL)
    wait_for(lambda: rows_done(manifest) >= 2000, proc, timeout=120)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = rows_done(manifest)
    assert 1600 <= done < 4000, f"killed at {done} rows: adjust the input size"
    stat = source.stat()
    data = bytearray(source.read_bytes())
    row = 1500  # 1-based row 1501, well past the first MiB and inside what was committed
    offset = data.index(f"{row:05d}".encode())
    data[offset:offset + 5] = b"XXXXX"
    source.write_bytes(bytes(data))
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert source.stat().st_size == stat.st_size and source.stat().st_mtime_ns == stat.st_mtime_ns
    message = one_line_error(run_cli(*args, "--resume", check=False), 2)
    assert "changed since the job began: rows 1,501-1,600" in message and "--overwrite" in message


def test_resume_before_the_first_commit_starts_the_job(tmp_path, hf_model_dir, reviews_file):
    out = tmp_path / "out.jsonl"
    # What a job killed before its first commit leaves: uncommitted bytes, no manifest.
    (tmp_path / "out.jsonl.partial").write_bytes(b'{"junk": true}\n')
    (tmp_path / "out.jsonl.cache").write_bytes(b"\x00" * 1000)
    proc = run_cli("label", reviews_file, "-o", out, "--resume", "--model", hf_model_dir, "--quiet")
    assert "starting the job from the beginning" in proc.stderr.decode()
    texts = reviews_file.read_text(encoding="utf-8").splitlines()
    assert [r["text"] for r in read_jsonl_bytes(out.read_bytes())] == texts
    # The same command again finds the job finished: a no-op (a retry loop, or a kill that landed
    # after the output was complete, while the work files were removed, must not end in an error).
    (tmp_path / "out.jsonl.cache").write_bytes(b"\x00" * 10)  # left by such a kill
    finished = out.read_bytes()
    again = run_cli("label", reviews_file, "-o", out, "--resume", *model_args(hf_model_dir))
    written = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(out.stat().st_mtime))
    assert again.stderr.decode().strip().splitlines() == [
        f"structsent: {out} exists (written {written}) and no unfinished job is beside it: nothing to resume; "
        "to label the input into it again, run with --overwrite"]
    assert out.read_bytes() == finished and sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_resume_from_a_pipe_is_refused(tmp_path, hf_model_dir):
    message = one_line_error(run_cli("label", "-", "-o", tmp_path / "o.jsonl", "--resume", *model_args(hf_model_dir),
                                     input_bytes="好评\n".encode(), check=False), 2)
    assert "cannot be read again" in message


# -- one-line errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("format_flags", [["--format", "txt"], []])
def test_a_directory_as_input_is_a_one_line_error(tmp_path, hf_model_dir, format_flags):
    """Without --format it said "cannot tell the format from the name; pass --format", which led to this."""
    message = one_line_error(run_cli("label", tmp_path, "-o", tmp_path / "out.jsonl", *format_flags,
                                     *model_args(hf_model_dir), check=False), 2)
    assert message.rstrip().endswith(f"{tmp_path}: is a directory, not a file (label its files one by one, or use --engine ray)")


def test_a_full_disk_stops_with_the_resume_command_and_resume_finishes(tmp_path, hf_model_dir, reviews_file):
    reference = tmp_path / "reference.jsonl"
    run_cli("label", reviews_file, "-o", reference, "--chunk-rows", "64", *model_args(hf_model_dir))
    with small_filesystem(tmp_path / "small", "256k") as small:
        out = small / "out.jsonl"
        args = ["label", reviews_file, "-o", out, "--chunk-rows", "64", *model_args(hf_model_dir)]
        message = one_line_error(run_cli(*args, check=False), 1)
        assert "No space left on device" in message and "--resume" in message
        assert f"{out} --chunk-rows 64" in message
        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
        run_cli(*args, "--resume")
        assert out.read_bytes() == reference.read_bytes()


# -- output bytes ----------------------------------------------------------------------------------
def test_output_bytes_do_not_depend_on_chunk_rows(tmp_path, hf_model_dir, reviews_file):
    outputs = []
    for chunk_rows in (2048, 64, 7):
        out = tmp_path / f"out-{chunk_rows}.jsonl"
        run_cli("label", reviews_file, "-o", out, "--chunk-rows", chunk_rows, *model_args(hf_model_dir))
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    assert len(read_jsonl_bytes(outputs[0])) == len(reviews_file.read_text(encoding="utf-8").splitlines())


# -- the report a job writes -----------------------------------------------------------------------
@pytest.mark.parametrize("where", ["the input", "an existing file", "the output", "a missing directory",
                                   "the manifest", "the lock", "inside the parts directory"])
def test_a_report_path_that_would_destroy_or_fail_is_refused_before_the_job(tmp_path, hf_model_dir, where):
    """`label --report` replaced any file, the job's input included, and found a bad path only
    after the whole job had run."""
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(source, [(i, "好评") for i in range(5)])
    before = source.read_bytes()
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me", encoding="utf-8")
    report = {"the input": source, "an existing file": precious, "the output": out,
              "a missing directory": tmp_path / "nowhere" / "r.html",
              "the manifest": tmp_path / "out.csv.manifest.json", "the lock": tmp_path / "out.csv.lock",
              "inside the parts directory": tmp_path / "out.csv.parts" / "r.html"}[where]
    if where == "inside the parts directory":  # left by an earlier run; the job removes it at the end
        (tmp_path / "out.csv.parts").mkdir()
    proc = run_cli("label", source, "-o", out, "--report", report, *model_args(hf_model_dir), check=False)
    message = one_line_error(proc, 2)
    assert str(report) in message
    assert source.read_bytes() == before and precious.read_text(encoding="utf-8") == "keep me"
    assert not out.exists()  # refused before the job began


@pytest.mark.parametrize(("flags", "message"), [
    (["--report", "r.html", "--report-by", "shop"], "--report-by shop: the output will have no such column"),
    (["--report", "r.html", "--report-by", "text", "--id-column", "id"], "--report-by text: the output will"),
    (["--report-by", "id"], "--report-by needs --report FILE"),
    (["--report", "r.html", "--report-by", "prob_negative"], "--report-by prob_negative: the output will"),
])
def test_a_report_by_column_the_output_will_not_have_is_refused_before_the_job(tmp_path, hf_model_dir, flags,
                                                                               message):
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(source, [(i, "好评") for i in range(5)])
    flags = [str(tmp_path / f) if f == "r.html" else f for f in flags]
    proc = run_cli("label", source, "-o", out, *flags, *model_args(hf_model_dir), check=False)
    assert message in one_line_error(proc, 2)
    assert not out.exists() and not (tmp_path / "r.html").exists()  # refused before the job began


def test_a_report_by_field_no_json_line_has_is_refused_before_the_job(tmp_path, hf_model_dir):
    """JSON Lines input: a misspelt --report-by was found after the whole job, named as --by."""
    source, out, report = tmp_path / "in.jsonl", tmp_path / "out.csv", tmp_path / "r.html"
    source.write_text("".join(json.dumps({"text": "好评", **({"shop": "甲"} if i == 3 else {})}, ensure_ascii=False)
                              + "\n" for i in range(5)), encoding="utf-8")
    proc = run_cli("label", source, "-o", out, "--report", report, "--report-by", "shpo", *model_args(hf_model_dir),
                   check=False)
    assert "--report-by shpo: no line of" in one_line_error(proc, 2)
    assert not out.exists() and not report.exists()
    run_cli("label", source, "-o", tmp_path / "out.jsonl", "--report", report, "--report-by", "shop",
            *model_args(hf_model_dir))
    assert 'id="groups"' in report.read_text(encoding="utf-8")  # a field of a later line only is one


@pytest.mark.parametrize(("where", "message"), [
    ("-o loop", "loop.csv: a loop of symbolic links"),
    ("--report loop", "loop.html: a loop of symbolic links"),
    ("--report through a file", "a part of the path is a file, not a directory"),
    ("input loop", "loop.csv: a loop of symbolic links"),
])
def test_a_path_that_cannot_be_looked_at_is_a_one_line_error_before_the_job(tmp_path, hf_model_dir, where, message):
    """Tracebacks (OSError: Too many levels of symbolic links, RuntimeError: Symlink loop,
    NotADirectoryError), exit 1."""
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(source, [(1, "好评")])
    (tmp_path / "loop.csv").symlink_to("loop.csv")
    (tmp_path / "loop.html").symlink_to("loop.html")
    if where == "input loop":
        source = tmp_path / "loop.csv"
    flags = {"-o loop": ["-o", tmp_path / "loop.csv"], "input loop": ["-o", out],
             "--report loop": ["-o", out, "--report", tmp_path / "loop.html"],
             "--report through a file": ["-o", out, "--report", tmp_path / "notes.txt" / "r.html"]}[where]
    (tmp_path / "notes.txt").write_text("a regular file", encoding="utf-8")
    proc = run_cli("label", source, *flags, *model_args(hf_model_dir), check=False)
    assert message in one_line_error(proc, 2)
    assert not out.exists()


def test_a_report_directory_that_cannot_be_written_is_refused_before_the_job(tmp_path, hf_model_dir):
    """Only its existence was checked: the whole job ran, then "cannot write (Operation not permitted)"."""
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() != 0:
        locked.chmod(0o500)
    elif subprocess.run(["chattr", "+i", locked], capture_output=True).returncode != 0:
        pytest.skip("root writes any directory, and chattr +i is not available here")
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("this user can write a read-only directory")
        source, out = tmp_path / "in.csv", tmp_path / "out.csv"
        write_csv(source, [(1, "好评")])
        proc = run_cli("label", source, "-o", out, "--report", locked / "r.html", *model_args(hf_model_dir),
                       check=False)
        assert "is not writable" in one_line_error(proc, 2) and not out.exists()
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", locked], capture_output=True)
        locked.chmod(0o700)


def label_through_a_pipe(source, out, *flags, hf_model_dir):
    """`structsent label <(cat SOURCE) ...`: the input is a pipe the shell names /dev/fd/N."""
    command = [PYTHON, "-m", "structsent", "label", f"<(cat {source})", "-o", str(out), *flags,
               *model_args(hf_model_dir)]
    return subprocess.run(["bash", "-c", " ".join(map(str, command))], capture_output=True, timeout=120)


def test_a_csv_read_through_a_pipe_with_report_by_loses_no_row(tmp_path, hf_model_dir):
    """The --report-by check read the input's header first: from a pipe, that took its first 64 KB
    from the job, which then began mid-stream (a data row as the header, 263 of 3,000 rows gone, exit 0)."""
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(source, [(i, f"第{i}条评论，很好") for i in range(3000)])
    proc = label_through_a_pipe(source, out, "--format", "csv", "--report", tmp_path / "r.html",
                                "--report-by", "label", hf_model_dir=hf_model_dir)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    with open(out, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["id"], r["text"]) for r in rows] == [(str(i), f"第{i}条评论，很好") for i in range(3000)]
    assert (tmp_path / "r.html").stat().st_size > 0


def test_json_lines_read_through_a_pipe_whose_first_chunk_holds_no_good_row_loses_no_row(tmp_path, hf_model_dir):
    """The job read the input again to learn the output's fields: from a pipe, that took ~100 rows
    from the job (and cut one in half), exit 0."""
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("{broken\n" + "".join(json.dumps({"id": i, "text": f"第{i}条评论"}, ensure_ascii=False) + "\n"
                                            for i in range(3000)), encoding="utf-8")
    proc = label_through_a_pipe(source, out, "--format", "jsonl", "--on-bad-row", "flag", "--chunk-rows", "1",
                                hf_model_dir=hf_model_dir)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    rows = read_jsonl_bytes(out.read_bytes())
    assert len(rows) == 3001 and rows[0]["error"] and all(r["error"] is None for r in rows[1:])
    assert [(r["id"], r["text"]) for r in rows[1:]] == [(i, f"第{i}条评论") for i in range(3000)]


def test_a_disk_too_full_for_the_job_s_lock_is_a_one_line_error(tmp_path, hf_model_dir):
    """The PID written into the lock failed with ENOSPC: a traceback, and a lock file left."""
    source = tmp_path / "in.csv"
    write_csv(source, [(1, "好评"), (2, "差评")])
    with small_filesystem(tmp_path / "small", "64k") as small:
        (small / "filler").write_bytes(b"\0" * 64 * 1024)  # fills it (tmpfs rounds to whole pages)
        with open(small / "filler", "ab") as handle:
            with pytest.raises(OSError):
                handle.write(b"\0" * 8192)
                handle.flush()
        message = one_line_error(run_cli("label", source, "-o", small / "out.csv", *model_args(hf_model_dir),
                                         check=False), 1)
        assert "out.csv.lock (the job's lock): No space left on device" in message
        assert sorted(p.name for p in small.iterdir()) == ["filler"]


def test_a_disk_too_full_for_the_report_is_exit_1_as_for_the_output(tmp_path, hf_model_dir):
    """A full disk was exit 2 ("bad input or options") for the report, exit 1 for the output."""
    source = tmp_path / "in.csv"
    write_csv(source, [(1, "好评"), (2, "差评")])
    out = tmp_path / "out.csv"
    with small_filesystem(tmp_path / "small", "64k") as small:
        (small / "filler").write_bytes(b"\0" * 64 * 1024)
        with open(small / "filler", "ab") as handle:
            with pytest.raises(OSError):
                handle.write(b"\0" * 8192)
                handle.flush()
        message = one_line_error(run_cli("label", source, "-o", out, "--report", small / "r.html",
                                         *model_args(hf_model_dir), check=False), 1)
        assert f"{out} is written, but not the report: {small / 'r.html'}: cannot write (No space left" in message
        message = one_line_error(run_cli("report", out, "-o", small / "r.html", "--quiet", check=False), 1)
        assert "cannot write (No space left on device)" in message
        assert sorted(p.name for p in small.iterdir()) == ["filler"]
    assert len(read_csv(out)) == 2


@pytest.mark.parametrize("value", ["0", "-1", "10000001", "9223372036854775808"])
def test_chunk_rows_out_of_range_is_refused_before_the_model_loads(tmp_path, value):
    source = tmp_path / "in.csv"
    write_csv(source, [(1, "好评")])
    message = one_line_error(run_cli("label", source, "-o", tmp_path / "out.csv", "--chunk-rows", value,
                                     "--model", tmp_path / "no-model", check=False), 2)
    assert f"--chunk-rows {value}: must be 1..10,000,000" in message


@pytest.mark.parametrize("suffix, header, expected", [
    ("csv", "id,text,note\n", "id,label,score,prob_负面,prob_正面,error\n"),
    ("jsonl", "", ""),
])
def test_an_input_without_rows_writes_the_columns_of_id_column(tmp_path, hf_model_dir, suffix, header, expected):
    """The id column was ignored for an input without rows: all the columns came out (CSV), or `text` (JSON Lines)."""
    source = tmp_path / f"in.{suffix}"
    source.write_text(header, encoding="utf-8")
    for out_suffix in ("csv", "parquet"):
        out = tmp_path / f"out-{suffix}.{out_suffix}"
        run_cli("label", source, "-o", out, "--id-column", "id", *model_args(hf_model_dir))
        if out_suffix == "csv":
            assert out.read_text(encoding="utf-8") == (expected or "id,label,score,prob_负面,prob_正面,error\n")
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(out)
            assert table.num_rows == 0 and table.column_names == ["id", "label", "score", "prob_负面", "prob_正面", "error"]
    if suffix == "csv":
        message = one_line_error(run_cli("label", source, "-o", tmp_path / "nope.csv", "--id-column", "nope",
                                         *model_args(hf_model_dir), check=False), 2)
        assert "no id column 'nope'; columns are: 'id', 'text', 'note'" in message


def test_a_bad_row_after_committed_chunks_says_to_start_over(tmp_path, hf_model_dir):
    """"fix the file or pass --on-bad-row flag" led nowhere once chunks were committed: the flag is
    another option (a resume refuses it) and a fixed file another input."""
    source = tmp_path / "in.csv"
    data = "id,text\n" + "".join(f"{i},好评{i}\n" for i in range(300))
    source.write_bytes(data.encode().replace("好评200".encode(), "好评".encode() + b"\xff"))
    out = tmp_path / "out.csv"
    proc = run_cli("label", source, "-o", out, "--chunk-rows", "50", *model_args(hf_model_dir), check=False)
    message = proc.stderr.decode()  # (a first use of the model on ONNX Runtime says so on a line of its own)
    assert proc.returncode == 2 and "Traceback" not in message and message.count("structsent: error") == 1
    assert "invalid UTF-8 at line 202" in message and "fix the file or pass --on-bad-row flag" in message
    assert "200 rows were committed before it" in message and "start the job over with --overwrite" in message
    run_cli("label", source, "-o", out, "--chunk-rows", "50", "--on-bad-row", "flag", "--overwrite",
            *model_args(hf_model_dir))
    rows = read_csv(out)
    assert [r["id"] for r in rows] == [str(i) for i in range(300)]  # the flagged row keeps its id
    assert "invalid UTF-8" in rows[200]["error"] and not rows[199]["error"] and not rows[201]["error"]
    assert rows[200]["label"] == "" and rows[200]["text"] == "好评\ufffd"


def test_a_job_on_standard_input_stopped_by_a_full_disk_says_to_run_it_again_with_overwrite(tmp_path, hf_model_dir,
                                                                                          reviews_file):
    data = reviews_file.read_bytes()
    with small_filesystem(tmp_path / "small", "24k") as small:
        out = small / "out.jsonl"
        args = ["label", "-", "-o", out, "--format", "txt", "--chunk-rows", "20", *model_args(hf_model_dir)]
        message = one_line_error(run_cli(*args, input_bytes=data, check=False), 1)
        assert "No space left on device" in message and "every committed chunk is kept" not in message
        assert "a job reading standard input cannot be resumed: run it again with --overwrite" in message
        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
        run_cli(*args, "--overwrite", input_bytes=data)
        assert [r["text"] for r in read_jsonl_bytes(out.read_bytes())] == data.decode("utf-8").splitlines()


def test_json_values_nested_as_deep_as_the_reader_allows_are_written_back(tmp_path, hf_model_dir):
    """Nested 985 levels, a value was read and then crashed the writer (RecursionError, exit 1)."""
    from structsent.io.readers import MAX_JSON_DEPTH

    deep = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "好吃", "v": %s}\n{"text": "难吃", "v": [%s]}\n' % (deep, deep), encoding="utf-8")
    for suffix in ("jsonl", "csv"):
        out = tmp_path / f"out.{suffix}"
        run_cli("label", source, "-o", out, "--on-bad-row", "flag", *model_args(hf_model_dir))
        written = read_jsonl_bytes(out.read_bytes()) if suffix == "jsonl" else read_csv(out)
        assert len(written) == 2 and written[0]["label"] and not written[0]["error"]
        assert "nested more than" in written[1]["error"]
        if suffix == "jsonl":
            assert json.dumps(written[0]["v"]) == deep.replace("][", "], [")  # written back whole


def test_an_empty_json_lines_input_gets_its_report(tmp_path, hf_model_dir):
    """The job wrote an empty output, then the report failed: "no JSON object in the first 100 lines", exit 2."""
    source, out, report = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "r.html"
    source.write_bytes(b"")
    proc = run_cli("label", source, "-o", out, "--report", report, *model_args(hf_model_dir), check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert out.read_bytes() == b"" and '<dd id="total-rows">0</dd>' in report.read_text(encoding="utf-8")


def test_an_input_cut_while_the_job_reads_it_stops_the_job_and_writes_no_cut_row(tmp_path, hf_model_dir):
    """The job ended with exit 0: the rows after the cut were gone and the cut line (three
    characters of a review) was labelled as a whole one."""
    source = tmp_path / "in.csv"
    rows = [[i, f"第{i}条评论，味道很好，下次还来"] for i in range(100_000)]
    write_csv(source, rows)
    data = source.read_bytes()
    cut_at = data.index(b"\n50000,") + 9  # a few bytes into row 50000
    out = tmp_path / "out.csv"
    proc = subprocess.Popen([PYTHON, "-m", "structsent", "label", str(source), "-o", str(out), "--chunk-rows", "50",
                             *map(str, model_args(hf_model_dir))], stderr=subprocess.PIPE)
    assert wait_for(lambda: rows_done(tmp_path / "out.csv.manifest.json") >= 50, proc), proc.stderr.read()
    os.truncate(source, cut_at)  # the reader runs only a few chunks ahead of the commits
    assert proc.wait(timeout=120) == 2
    message = proc.stderr.read().decode()  # (a first use of the model on ONNX Runtime says so on a line of its own)
    assert "Traceback" not in message and message.count("structsent: error") == 1, message
    assert f"ended at byte {cut_at:,}, short of the {len(data):,} bytes" in message and "cut or rewritten" in message
    assert "rows) is written: label it again (--overwrite) once it no longer changes" in message
    assert not out.exists()  # the job did not finish: what it committed is in its work files
    written = read_csv(tmp_path / "out.csv.partial")
    assert 50 <= len(written) == rows_done(tmp_path / "out.csv.manifest.json") <= 50_000  # never the cut row 50000
    assert [[int(r["id"]), r["text"]] for r in written] == rows[: len(written)]  # a whole, ordered prefix


# -- a stop while the input is a pipe that stays open ------------------------------------------

def _job_on_an_open_pipe(tmp_path, hf_model_dir, source, *options, env=None):
    """A job (chunks of 1 row) reading ``source`` ("stdin" or "fifo") whose writer keeps it open after
    three rows; returns (process, the writer's stream, output path) once the three are committed."""
    output = tmp_path / "out.csv"
    command = [PYTHON, "-m", "structsent", "label", "-" if source == "stdin" else str(tmp_path / "in.csv"),
               "--format", "csv", "-o", str(output), "--chunk-rows", "1", "--model", hf_model_dir, *map(str, options)]
    if source == "stdin":
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        writer = proc.stdin
    else:
        os.mkfifo(tmp_path / "in.csv")
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, env=env)
        writer = open(tmp_path / "in.csv", "wb")  # noqa: SIM115 - blocks until the job opens it
    writer.write("id,text\n0,味道不错\n1,差评\n2,还行\n".encode())
    writer.flush()
    partial = tmp_path / "out.csv.partial"
    deadline = time.monotonic() + 120
    while not (partial.exists() and partial.read_bytes().count(b"\n") >= 4) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None and partial.exists(), proc.stderr.read().decode() if proc.poll() is not None else ""
    return proc, writer, output


@pytest.mark.parametrize("processes", [0, 2])
@pytest.mark.parametrize("source", ["stdin", "fifo"])
def test_sigterm_stops_a_job_whose_pipe_stays_open_with_the_rows_read_committed(tmp_path, hf_model_dir, source,
                                                                                processes):
    """It said "stopping after the current chunk" and waited for the pipe's next line, for ever if the
    producer never closed it (`tail -f | structsent label -`): a service manager's stop ran into its
    kill. (And a reader thread left waiting in sys.stdin's buffer made the interpreter abort at exit.)
    With tokenizer processes, the chunks tokenized while the next read waited on the pipe were
    dropped by the stop (two of the three rows here), and the workers' state file was left."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    proc, writer, output = _job_on_an_open_pipe(tmp_path, hf_model_dir, source, "--tokenizer-processes", processes,
                                                env={**os.environ, "TMPDIR": str(temporary)})
    try:
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        took = time.monotonic() - stopped
        message = proc.stderr.read().decode()
    finally:
        writer.close()
        proc.kill()
    assert proc.returncode == 143 and took < 15, (took, message)
    assert "Fatal Python error" not in message and "Traceback" not in message, message
    assert "interrupted after 3 rows" in message and "cannot be resumed: run it again with --overwrite" in message
    rows = list(csv.reader(io.StringIO((tmp_path / "out.csv.partial").read_text(encoding="utf-8"))))
    assert [row[:2] for row in rows] == [["id", "text"], ["0", "味道不错"], ["1", "差评"], ["2", "还行"]]
    assert not output.exists()
    assert list(temporary.glob("structsent-tokenizer-*")) == []  # (the workers' state file)


def test_the_work_files_of_a_stopped_job_on_standard_input_say_it_cannot_be_resumed(tmp_path, hf_model_dir):
    """They said "pass --resume to finish it" (which refuses standard input), and a --resume with the
    file that had been piped in blamed a change of that file."""
    proc, writer, output = _job_on_an_open_pipe(tmp_path, hf_model_dir, "stdin")
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        writer.close()
        proc.kill()
    write_csv(tmp_path / "in.csv", [("0", "味道不错"), ("1", "差评"), ("2", "还行")])
    again = run_cli("label", "-", "--format", "csv", "-o", output, *model_args(hf_model_dir),
                    input_bytes=(tmp_path / "in.csv").read_bytes(), check=False)
    assert "it read standard input, so it cannot be resumed: pass --overwrite to start over" in one_line_error(again, 2)
    resumed = run_cli("label", tmp_path / "in.csv", "-o", output, "--resume", *model_args(hf_model_dir), check=False)
    assert "cannot resume: the job began on standard input, which cannot be read again" in one_line_error(resumed, 2)


@pytest.mark.parametrize(("source", "signum", "status", "said"), [
    ("a pipe whose CSV header has not come", signal.SIGTERM, 143, "structsent: terminated"),
    ("a FIFO no writer has opened", signal.SIGINT, 130, "structsent: interrupted"),
])
def test_a_stop_while_the_input_is_being_opened_ends_the_job_at_once(tmp_path, hf_model_dir, source, signum, status,
                                                                     said):
    """The job said "stopping after the current chunk" and waited for the producer: for the pipe's
    header, or for a writer to open the FIFO; then labelled everything it sent."""
    output = tmp_path / "out.csv"
    if source.startswith("a pipe"):
        proc = subprocess.Popen([PYTHON, "-m", "structsent", "label", "-", "--format", "csv", "-o", str(output),
                                 "--model", hf_model_dir], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    else:
        os.mkfifo(tmp_path / "in.txt")
        proc = subprocess.Popen([PYTHON, "-m", "structsent", "label", str(tmp_path / "in.txt"), "--format", "txt",
                                 "-o", str(output), "--model", hf_model_dir], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "out.csv.lock").exists() and time.monotonic() < deadline:  # the job has begun
            time.sleep(0.1)
        time.sleep(1.0)  # and waits on its input
        stopped = time.monotonic()
        proc.send_signal(signum)
        proc.wait(timeout=30)
        took = time.monotonic() - stopped
    finally:
        proc.kill()
        if proc.stdin is not None:
            proc.stdin.close()
    message = proc.stderr.read().decode()
    assert (proc.returncode, message.strip().splitlines()[-1]) == (status, said), message
    assert took < 10 and "Traceback" not in message and not output.exists()


def test_rows_appended_while_the_job_runs_are_not_labelled_and_said_so(tmp_path, hf_model_dir):
    """The job labelled what was appended to its input while it ran, a line still being written
    among it (its first part as a whole row, exit 0). It labels the file as it was when it began,
    and says what was appended."""
    source = tmp_path / "in.csv"
    rows = [[i, f"第{i}条评论，味道很好，下次还来"] for i in range(100_000)]
    write_csv(source, rows)
    out = tmp_path / "out.csv"
    proc = subprocess.Popen([PYTHON, "-m", "structsent", "label", str(source), "-o", str(out), "--chunk-rows", "50",
                             *map(str, model_args(hf_model_dir))], stderr=subprocess.PIPE)
    assert wait_for(lambda: rows_done(tmp_path / "out.csv.manifest.json") >= 50, proc), proc.stderr.read()
    appended = "100000,追加的评论\n100001,还在写".encode()
    with open(source, "ab") as handle:
        handle.write(appended)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert f"in.csv grew by {len(appended)} bytes while the job ran: the rows appended after it began are not " \
           "labelled" in proc.stderr.read().decode()
    written = read_csv(out)
    assert [[int(r["id"]), r["text"]] for r in written] == rows  # every row of the file as it began, in order


@pytest.mark.parametrize("on_bad_row", ["error", "flag"])
def test_an_id_column_the_header_lacks_is_refused_at_once_naming_the_columns(tmp_path, hf_model_dir, on_bad_row):
    """In error mode the first row was refused with advice to pass --on-bad-row flag, which then
    refused the header: the header's refusal is said first, in both modes."""
    source = tmp_path / "in.csv"
    write_csv(source, [[1, "好吃"], [2, "难吃"]])
    message = one_line_error(run_cli("label", source, "-o", tmp_path / "out.csv", "--id-column", "nope",
                                     "--on-bad-row", on_bad_row, *model_args(hf_model_dir), check=False), 2)
    assert "no id column 'nope'; columns are: 'id', 'text'" in message and "--on-bad-row" not in message
    assert not (tmp_path / "out.csv").exists()
