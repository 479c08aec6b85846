"""The command's entry point: a stop signal while the command line is still being imported."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# The signal arrives exactly while `structsent.cli` is being imported (an import hook raises it).
SIGNAL_DURING_THE_IMPORTS = """
import importlib.abc, runpy, signal, sys

class SignalOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "structsent.cli":
            sys.meta_path.remove(self)
            signal.raise_signal(signal.{name})
        return None

# As a command started from a terminal has them (a background job of a shell inherits both ignored)
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
sys.meta_path.insert(0, SignalOnImport())
sys.argv = ["structsent", "label", "--help"]
runpy.run_module("structsent", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize(("name", "status", "said"), [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_a_stop_signal_while_the_command_line_loads_ends_it_in_one_line(name, status, said):
    """It printed a KeyboardInterrupt traceback (SIGINT) or died of the signal (-15), nothing said."""
    proc = subprocess.run([sys.executable, "-c", SIGNAL_DURING_THE_IMPORTS.replace("{name}", name)],
                          capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stderr.strip()) == (status, f"structsent: {said}"), proc.stderr[-2000:]


def test_the_signal_handler_is_the_default_again_once_loaded():
    """The commands install their own handlers; none of the entry point's is left behind."""
    code = ("import signal, structsent._entry as e, structsent.cli as c; c.main = lambda: "
            "print(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL) or 0; raise SystemExit(e.main())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stderr[-2000:]


# -- a command started with a standard stream closed -------------------------------------------

def _command(args, cwd, close=(), **streams):
    """`python -m structsent ARGS` with the descriptors in ``close`` closed when it starts (`2>&-`)."""
    def close_them():
        for fd in close:
            os.close(fd)
    return subprocess.run([sys.executable, "-m", "structsent", *args], cwd=cwd, preexec_fn=close_them,
                          timeout=300, **streams)


@pytest.fixture
def bad_csv(tmp_path):
    """Two good rows, then a malformed one: the job stops there (without flag mode)."""
    (tmp_path / "bad.csv").write_text('text,n\n好吃,1\n难吃,2\n"坏"x,3\n', encoding="utf-8")
    return tmp_path


def test_with_standard_error_closed_no_message_goes_into_the_data_on_standard_output(bad_csv):
    """print(file=sys.stderr) with sys.stderr None writes to standard output: the error line was the
    output's last row."""
    proc = _command(["label", "bad.csv", "-q", "--chunk-rows", "1"], bad_csv, close=(2,), stdout=subprocess.PIPE)
    lines = proc.stdout.decode().splitlines()
    assert proc.returncode == 2
    assert [line.split(",")[:3] for line in lines] == [["text", "n", "label"], ["好吃", "1", "正面"], ["难吃", "2", "负面"]]


def test_with_standard_error_closed_a_job_runs_to_its_end(bad_csv):
    """Without -q it checked sys.stderr.isatty(): AttributeError on None, exit 1, nothing written."""
    proc = _command(["label", "bad.csv", "-o", "out.csv", "--on-bad-row", "flag"], bad_csv, close=(2,))
    rows = (bad_csv / "out.csv").read_text(encoding="utf-8").splitlines()
    assert proc.returncode == 0
    assert [row.split(",")[:2] for row in rows[:3]] == [["text", "n"], ["好吃", "1"], ["难吃", "2"]] and len(rows) == 4


def test_a_summary_that_cannot_be_written_does_not_fail_a_finished_job(bad_csv):
    """`2>/dev/full`: the job was whole, and the summary's OSError made it exit 1."""
    with open("/dev/full", "w") as full:
        proc = _command(["label", "bad.csv", "-o", "out.csv", "--on-bad-row", "flag"], bad_csv, stderr=full)
    assert proc.returncode == 0 and len((bad_csv / "out.csv").read_text(encoding="utf-8").splitlines()) == 4


def test_output_to_a_closed_standard_output_is_refused_in_one_line(bad_csv):
    """It labelled the file, then printed a traceback (None has no attribute 'buffer')."""
    proc = _command(["label", "bad.csv", "-o", "-", "-q"], bad_csv, close=(1,), stderr=subprocess.PIPE)
    assert (proc.returncode, proc.stderr.decode().strip()) == (
        2, "structsent: error: -: standard output is closed; name an output file with -o")


def test_a_closed_standard_descriptor_is_held_so_that_no_file_opened_later_takes_its_number(tmp_path):
    """Else the next file opened got descriptor 2, and a C library's diagnostics went into it."""
    code = ("import os, structsent._entry as e; e.guard_standard_streams(); f = open('f.txt', 'w'); "
            "print(os.readlink('/proc/self/fd/2'), f.fileno() > 2, file=open('seen.txt', 'w'))")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, preexec_fn=lambda: os.close(2), check=True, timeout=120)
    assert (tmp_path / "seen.txt").read_text().split() == ["/dev/null", "True"]


# -- a standard output that fails, or whose reader has left -------------------------------------

def _with_stdout(args, stdout, *, buffered: bool, env=None):
    """`python -m structsent ARGS` writing to ``stdout``, its standard output buffered (the default)
    or not (PYTHONUNBUFFERED, as in many container images)."""
    environment = {**os.environ, **(env or {})}
    environment.pop("PYTHONUNBUFFERED", None)
    if not buffered:
        environment["PYTHONUNBUFFERED"] = "1"
    return subprocess.run([sys.executable, "-m", "structsent", *map(str, args)], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, timeout=300, env=environment)


def _pipe_without_a_reader():
    read, write = os.pipe()
    os.close(read)  # every write to it: EPIPE
    return write


@pytest.mark.parametrize("buffered", [True, False])
def test_a_reader_that_left_ends_the_command_quietly(buffered):
    # Buffered, the interpreter's own flush at exit failed: exit 120 and Python's "Exception ignored".
    write = _pipe_without_a_reader()
    try:
        proc = _with_stdout(["--help"], write, buffered=buffered)
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr) == (0, "")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("buffered", [True, False])
def test_a_full_standard_output_is_named_in_one_line(buffered, hf_model_dir, tmp_path):
    # "structsent: error: No space left on device" (unbuffered) read as the command's own files
    # failing; buffered, exit 120 and Python's two lines.
    with open("/dev/full", "w") as full:
        version = _with_stdout(["--version"], full, buffered=buffered)  # (unbuffered: argparse dropped it, exit 0)
        export = _with_stdout(["export", hf_model_dir, "-o", tmp_path / "onnx", "--validate-n", "4"], full,
                              buffered=buffered, env={"STRUCTSENT_CACHE": str(tmp_path / "cache")})
    said = "structsent: error: cannot write standard output: No space left on device\n"
    assert (version.returncode, version.stderr) == (1, said)
    assert (export.returncode, export.stderr.splitlines()[-1] + "\n") == (1, said), export.stderr
    assert "Exception ignored" not in export.stderr and (tmp_path / "onnx" / "model.onnx").is_file()


def test_bench_keeps_its_results_when_standard_output_fails(hf_model_dir, tmp_path):
    # It printed its table before writing its files: a reader that left (unbuffered) ended it with
    # exit 0, its --out removed, nothing saved.
    write = _pipe_without_a_reader()
    try:
        proc = _with_stdout(["bench", "--model", hf_model_dir, "--n", "8", "--configs", "torch-fp32", "--device", "cpu",
                             "--out", tmp_path / "out"], write, buffered=False)
    finally:
        os.close(write)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bench.json", "bench.md", "bench.png"]


# -- a stop signal during the import of a native library ---------------------------------------

# A module standing for torch: its import receives SIGTERM half way (torch's C++ init calls back into
# Python there, where a raised exception aborted the process: exit 134 and a native stack dump).
STOP_DURING_A_NATIVE_IMPORT = """
import os, signal, sys
sys.path.insert(0, {directory!r})
import structsent._entry as entry
signal.signal(signal.SIGTERM, entry.raise_terminated if {handled} else signal.SIG_DFL)
entry.hold_stops_while_importing(["native_stand_in"])
try:
    import native_stand_in
except KeyboardInterrupt as stop:
    print("stopped", type(stop).__name__)
"""


@pytest.mark.parametrize("handled", [True, False])
def test_a_stop_during_a_native_import_acts_once_the_import_is_done(tmp_path, handled):
    end = tmp_path / "end"
    (tmp_path / "native_stand_in.py").write_text(
        f"import pathlib, signal\nsignal.raise_signal(signal.SIGTERM)\npathlib.Path({str(end)!r}).touch()\n",
        encoding="utf-8")
    code = STOP_DURING_A_NATIVE_IMPORT.format(directory=str(tmp_path), handled=handled)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if handled:  # the command's handler acts, once the module's code has run to its end
        assert (proc.returncode, proc.stdout.strip()) == (0, "stopped Terminated"), proc.stderr
        assert end.exists()
    else:  # a default disposition is not a Python function: left alone (the process dies of the signal)
        assert proc.returncode == -15 and proc.stdout == ""


def test_the_entry_point_holds_stops_while_torch_and_onnxruntime_are_first_imported():
    code = ("import sys, structsent._entry as e; e.guard_standard_streams = lambda: None; "
            "import structsent.cli as c; c.main = lambda: print([type(f).__name__ for f in sys.meta_path][0], "
            "sorted(sys.meta_path[0].names)) or 0; raise SystemExit(e.main())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "_HeldStopsWhileImporting ['onnxruntime', 'torch']", proc.stderr[-2000:]


def test_a_standard_output_a_launcher_wrapped_stays_open():
    # The entry point wrapped the launcher's wrapper's buffer anew: the launcher's, unreferenced, was
    # finalised and closed the buffer both shared ("I/O operation on closed file", exit 1).
    code = ("import io, sys; sys.stdout = io.TextIOWrapper(sys.stdout.buffer, encoding='utf-8'); "
            "from structsent._entry import main; sys.argv = ['structsent', '--version']; sys.exit(main())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stderr) == (0, "") and proc.stdout.startswith("structsent ")


def test_the_import_hook_leaves_other_finders_and_copies_working(tmp_path):
    """Another finder of the module (a PEX, a zip app) after the hook was skipped, the hook having
    removed itself from the list being looped over; a copy of the wrapped loader recursed for ever."""
    code = f"""
import copy, importlib.abc, importlib.util, sys
sys.path.insert(0, {str(tmp_path)!r})
class Elsewhere(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        return importlib.util.spec_from_file_location(name, {str(tmp_path / "hidden.py")!r}) if name == "stand_in" else None
sys.meta_path.insert(0, Elsewhere())
import structsent._entry as entry
entry.hold_stops_while_importing(["stand_in"])
import stand_in
print(stand_in.FOUND, type(stand_in.__loader__).__name__, type(copy.copy(stand_in.__loader__)).__name__)
"""
    (tmp_path / "hidden.py").write_text("FOUND = 'found'\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["found", "_LoaderHoldingStops", "_LoaderHoldingStops"], proc.stderr[-2000:]
