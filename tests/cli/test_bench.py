"""`structsent bench`: what can be refused is refused before the benchmark runs, in one line, exit 2."""

import pytest

from structsent.cli import main


def bench(*flags):
    return main(["bench", "--n", "2", "--configs", "torch-fp32", "--device", "cpu", *flags])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("structsent: error: ") and err.count("\n") == 1, err  # nothing ran before it
    return err


def test_a_bad_out_corpus_or_setting_is_refused_before_running(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    empty, binary = tmp_path / "empty.txt", tmp_path / "random.bin"
    empty.write_text("")
    binary.write_bytes(b"ok\n\x80\x81")
    invisible = tmp_path / "invisible.txt"
    invisible.write_text("\u200b\u200b\n\x07\n", encoding="utf-8")  # reviews of nothing: was an IndexError
    cases = [
        (["--out", str(tmp_path / "afile")], "afile: exists and is not a directory"),
        (["--out", str(tmp_path / "afile" / "sub")], "afile is not a directory"),
        (["--out", ""], "--out: an empty path"),
        (["--out", str(tmp_path / "o"), "--configs", ",,"], "--configs ',,': names no configuration (offered: "),
        (["--out", str(tmp_path / "loop-a")], "loop-a: a loop of symbolic links"),  # (was a traceback)
        (["--out", str(tmp_path / ("n" * 300))], "File name too long"),  # (was exit 1)
        (["--out", str(tmp_path / "o"), "--corpus", str(empty)], "empty.txt: no reviews in it"),
        # (was "no such corpus file")
        (["--out", str(tmp_path / "o"), "--corpus", str(tmp_path)], f"{tmp_path}: is a directory, not a corpus file"),
        (["--out", str(tmp_path / "o"), "--corpus", str(binary)], "random.bin: not UTF-8 text (undecodable byte at offset 3)"),
        (["--out", str(tmp_path / "o"), "--corpus", str(invisible)],
         "invisible.txt: 2 of the 2 benchmark texts cannot be labelled"),
        (["--out", str(tmp_path / "o"), "--num-threads", "2147483648"], "--num-threads 2147483648: must be in 0..1024"),
        # checked against the model's positions once the model is read, before anything is prepared
        (["--out", str(tmp_path / "o"), "--token-budget", "100"], "--token-budget 100: must be at least max_length (512)"),
        (["--out", str(tmp_path / "o"), "--shape", "structbert-base", "--model", "/elsewhere"],
         "--shape structbert-base benchmarks a random model of that shape: it replaces --model /elsewhere"),
    ]
    for flags, message in cases:
        assert bench(*flags) == 2, flags
        assert message in one_line_error(capsys), flags
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "empty.txt", "invisible.txt", "loop-a", "loop-b",
                                                          "random.bin"]


def test_a_number_of_texts_past_the_ceiling_is_refused_before_any_text_is_built(tmp_path, capsys):
    """--n had no upper bound: texts were built until memory ran out, then a MemoryError traceback."""
    assert bench("--out", str(tmp_path / "o"), "--n", "9223372036854775807") == 2
    assert "--n 9223372036854775807: must be 1..10,000,000" in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_cuda_without_cuda_is_the_same_config_error_as_label(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["bench", "--n", "2", "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    assert "device 'cuda': CUDA is not available" in one_line_error(capsys)
    assert main(["bench", "--n", "2", "--device", "gpu", "--out", str(tmp_path / "o")]) == 2
    assert "--device gpu: expected one of auto, cpu, cuda, cuda:N" in one_line_error(capsys)


def test_a_configuration_named_twice_is_measured_once(tmp_path, capsys):
    """It failed after the whole run, on arrays of two lengths."""
    out = tmp_path / "o"
    assert main(["bench", "--n", "2", "--configs", "torch-fp32,torch-fp32", "--device", "cpu", "--out", str(out)]) == 0
    rows = [line for line in (out / "bench.md").read_text(encoding="utf-8").splitlines() if line.startswith("| structsent")]
    assert rows == [rows[0]] and rows[0].startswith("| structsent torch fp32 |")


@pytest.mark.parametrize("layout", ["encoder", "bert"])
def test_a_modelscope_checkpoint_is_benchmarked_against_the_pipeline_on_a_converted_copy(modelscope_dirs, tmp_path,
                                                                                         monkeypatch, layout):
    """transformers.pipeline cannot read a ModelScope StructBERT directory (model_type "structbert"):
    bench ended in its ValueError. And where structsent names the classes itself (label_mapping.json,
    or 负面/正面 without id2label), the pipeline's LABEL_0/LABEL_1 read 0% agreement."""
    import json
    import tempfile

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the converted copy is made
    out = tmp_path / "o"
    assert main(["bench", "--model", str(modelscope_dirs[layout]), "--n", "6", "--configs", "pipeline,torch-fp32",
                 "--device", "cpu", "--out", str(out)]) == 0
    rows = {row["name"]: row for row in json.loads((out / "bench.json").read_text(encoding="utf-8"))["results"]}
    assert rows["pipeline"]["label_agreement"] == 1.0 and rows["torch-fp32"]["label_agreement"] == 1.0
    assert list((tmp_path / "tmp").iterdir()) == []  # the copy is removed after the run


def test_an_output_that_cannot_be_written_is_refused_before_running_or_said_in_one_line(tmp_path, capsys,
                                                                                      monkeypatch):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "bench.json").mkdir()  # was an IsADirectoryError after the whole run
    assert bench("--out", str(tmp_path / "o")) == 2
    assert "bench.json there is not a file" in one_line_error(capsys)
    import structsent.cli.bench as bench_module

    def no_space(path, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("structsent.bench.report.write_json", no_space)
    assert bench("--out", str(tmp_path / "p")) == 1
    err = capsys.readouterr().err
    assert "cannot write bench.json (No space left on device)" in err and "Traceback" not in err
    assert not (tmp_path / "p").exists() and bench_module.OUTPUT_FILES[0] == "bench.json"  # nor the directory it made
    # an earlier run's files stay whole: the new bench.json replaced the old beside the old chart
    monkeypatch.undo()
    earlier = {name: f"earlier {name}\n" for name in bench_module.OUTPUT_FILES}
    (tmp_path / "p").mkdir()
    for name, text in earlier.items():
        (tmp_path / "p" / name).write_text(text)
    monkeypatch.setattr("structsent.bench.report.write_chart", no_space)
    assert bench("--out", str(tmp_path / "p")) == 1
    assert "cannot write bench.png (No space left on device)" in capsys.readouterr().err
    assert {p.name: p.read_text() for p in (tmp_path / "p").iterdir()} == earlier


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("STRUCTSENT_DEVICE", "gpu", "STRUCTSENT_DEVICE='gpu': expected one of auto, cpu, cuda, cuda:N"),
    ("STRUCTSENT_NUM_THREADS", "abc", "STRUCTSENT_NUM_THREADS='abc': expected an integer"),
    ("STRUCTSENT_TOKEN_BUDGET", "-5", "STRUCTSENT_TOKEN_BUDGET='-5': must be"),  # (named "token_budget=-5" before)
    ("STRUCTSENT_NUM_THREADS", "5000", "STRUCTSENT_NUM_THREADS='5000': must be in 0..1024"),
])
def test_the_engine_variables_apply_to_bench_as_to_every_command(tmp_path, capsys, monkeypatch, variable, value,
                                                                 says):
    """bench read only its flags: a STRUCTSENT_* variable label refuses was ignored (and a valid one not applied)."""
    monkeypatch.setenv(variable, value)
    assert main(["bench", "--n", "2", "--configs", "torch-fp32", "--out", str(tmp_path / "o")]) == 2
    assert says in one_line_error(capsys)


def test_structsent_model_is_a_default_that_shape_replaces(tmp_path, monkeypatch):
    """With STRUCTSENT_MODEL set, --shape was refused as if --model had been given."""
    from structsent.cli import build_parser
    from structsent.cli.bench import _model

    monkeypatch.setenv("STRUCTSENT_MODEL", str(tmp_path / "elsewhere"))
    args = build_parser().parse_args(["bench", "--shape", "structbert-base"])
    directory, _, _ = _model(args, lambda shape: tmp_path / shape)
    assert directory == tmp_path / "structbert-base"
    args = build_parser().parse_args(["bench"])
    with pytest.raises(Exception, match="elsewhere: no such model directory"):  # the variable is the model
        _model(args, lambda shape: tmp_path / shape)


def test_a_configuration_above_the_measured_peak_is_said_to_overstate_the_utilisation_column():
    """The fp32 matmul peak is measured on the host as it is: measured while it was busy, it was
    low and the table showed ONNX Runtime at 107-156% of it, without a word."""
    from structsent.bench.report import Row
    from structsent.cli.bench import _peak_caveat

    def row(title, utilisation):
        return Row(name=title, title=title, seconds=1.0, texts=10, padding_fraction=0.0, label_agreement=1.0,
                   utilisation=utilisation)

    assert _peak_caveat([row("torch fp32", 0.4), row("onnx fp32", 0.97)], 5e10) == ""
    assert _peak_caveat([row("cuda fp16", None)], None) == ""
    caveat = _peak_caveat([row("torch fp32", 0.4), row("onnx fp32", 1.31)], 5e10)
    assert "onnx fp32 ran above the fp32 matmul peak measured before and after the runs (50 GFLOP/s)" in caveat
    assert "torch fp32" not in caveat and "overstates every row" in caveat
    int8 = Row(name="onnx-int8", title="onnx int8", seconds=1.0, texts=10, padding_fraction=0.0, label_agreement=1.0,
               utilisation=1.14)  # integer matmuls pass the fp32 peak on a quiet host (VNNI): no note
    assert _peak_caveat([row("torch fp32", 0.4), int8], 5e10) == ""
    bf16 = Row(name="torch-bf16", title="structsent torch bf16", seconds=1.0, texts=10, padding_fraction=0.0,
               label_agreement=1.0, utilisation=1.99)  # AMX's bf16 matmuls too (199% on a quiet Sapphire Rapids)
    assert _peak_caveat([row("torch fp32", 0.74), bf16], 4.47e11) == ""


def test_a_stopped_bench_leaves_no_empty_output_directory(tmp_path):
    """SIGTERM while it measures: exit 143, and the --out directory it made is gone again (an empty
    one was left behind)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "made" / "here"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "structsent", "bench", "--n", "3000", "--configs", "torch-fp32",
                             "--device", "cpu", "--out", str(out)], stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "preparing" in line:
                break
        time.sleep(0.5)
        assert out.is_dir() and proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        proc.kill()
        proc.wait()
    assert not (tmp_path / "made").exists() and tmp_path.is_dir()  # every level it made, and only those


def test_the_peak_the_utilisation_divides_by_is_printed_and_the_load_is_one_figure(tmp_path, capsys, monkeypatch):
    """The start line said "fp32 matmul peak 58 GFLOP/s" while the table divided by the 174 measured
    after the runs, unsaid; and the device line's load read 2.3 on stderr, 3.2 on stdout and in bench.json."""
    import itertools
    import json
    import os

    peaks = iter([58e9, 174e9])
    monkeypatch.setattr("structsent.bench.runners.matmul_peak_flops", lambda threads: next(peaks))
    loads = itertools.count(2.3)
    monkeypatch.setattr(os, "getloadavg", lambda: (next(loads), 0.0, 0.0))
    out = tmp_path / "o"
    assert bench("--out", str(out)) == 0
    captured = capsys.readouterr()
    assert "fp32 matmul peak at the start 58 GFLOP/s" in captured.err
    used = "fp32 matmul peak used: 174 GFLOP/s (the higher of 58 at the start and 174 after the runs)"
    assert used in captured.out and used in (out / "bench.md").read_text(encoding="utf-8")
    result = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    assert result["fp32_matmul_peak_gflops"] == 174 and result["fp32_matmul_peak_gflops_at_start"] == 58
    device = result["device"]
    assert "load 2.3" in device and f"device: {device}" in captured.err and f"device: {device}\n" in captured.out


def test_bench_md_starts_with_the_model_texts_and_device_lines(tmp_path, capsys):
    """bench.md held the table alone: its CPU figures without the host's ISA and load (as stdout and
    bench.json have them)."""
    import json

    out = tmp_path / "o"
    assert bench("--out", str(out)) == 0
    result = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    lines = (out / "bench.md").read_text(encoding="utf-8").splitlines()
    assert lines[:5] == [f"- model: {result['model']}", f"- texts: {result['workload']}", f"- device: {result['device']}",
                         "- engine settings: threads each runtime's own; token budget planned for the device", ""]
    assert " ISA " in lines[2] and lines[5].startswith("| configuration |")
    assert (result["num_threads"], result["token_budget"]) == (None, None)


def test_the_engine_settings_bench_ran_with_are_recorded(tmp_path, capsys, monkeypatch):
    """--num-threads and --token-budget (or their variables) change the figures, and neither bench.json,
    bench.md nor the printed header said them."""
    import json

    out = tmp_path / "o"
    monkeypatch.setenv("STRUCTSENT_TOKEN_BUDGET", "1024")
    assert bench("--out", str(out), "--num-threads", "1") == 0
    result = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    assert (result["num_threads"], result["token_budget"]) == (1, 1024)
    line = "engine settings: threads 1; token budget 1024"
    assert f"- {line}" in (out / "bench.md").read_text(encoding="utf-8") and line in capsys.readouterr().out


def test_a_bench_stopped_after_its_runs_leaves_no_empty_output_directory(tmp_path, capsys, monkeypatch):
    """Ctrl-C during the second peak measurement, or SIGTERM while the files were written, left the
    --out directories the run had made: the cleanup covered the measurements alone."""
    import os
    import signal

    from structsent._exit import raise_terminated

    peaks = iter([5e10])

    def interrupted_second_peak(threads):
        for peak in peaks:
            return peak
        raise KeyboardInterrupt

    monkeypatch.setattr("structsent.bench.runners.matmul_peak_flops", interrupted_second_peak)
    assert bench("--out", str(tmp_path / "made" / "here")) == 130
    assert list(tmp_path.iterdir()) == []

    def terminated_while_writing(path, rows, *, title):
        assert signal.getsignal(signal.SIGTERM) is raise_terminated  # (else the signal would end pytest too)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr("structsent.bench.runners.matmul_peak_flops", lambda threads: 5e10)
    monkeypatch.setattr("structsent.bench.report.write_chart", terminated_while_writing)
    assert bench("--out", str(tmp_path / "made" / "here")) == 143
    assert list(tmp_path.iterdir()) == []


def test_earlier_results_in_out_are_said_to_be_replaced(tmp_path, capsys):
    """An --out holding an earlier run's files had them replaced without a word."""
    out = tmp_path / "o"
    out.mkdir()
    (out / "bench.json").write_text("{}")
    (out / "bench.md").write_text("earlier\n")
    assert bench("--out", str(out)) == 0
    err = capsys.readouterr().err
    assert f"note: --out {out} holds an earlier run's bench.json, bench.md: this run replaces them\n" in err
    assert err.index("this run replaces them") < err.index("preparing")
    assert bench("--out", str(tmp_path / "new")) == 0
    assert "replaces" not in capsys.readouterr().err


def test_help_lists_every_configuration_name(capsys, monkeypatch):
    """--configs' help named none but the two unfused ones: the names appeared only in the error
    for a wrong one."""
    from structsent.bench.runners import configurations

    monkeypatch.setenv("COLUMNS", "2000")  # (argparse wraps the help, at hyphens too)
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = capsys.readouterr().out
    names = [*configurations("cpu", bf16="always"), *configurations("cuda", bf16="always")]
    assert {"onnx-int8", "torch-fp16-padded", "torch-bf16", "onnx-int8-unfused"} <= set(names)
    assert all(f" {name}," in text or f" {name};" in text or f" {name} " in text for name in names)
    assert "on a CPU: one-by-one, fixed-32, pipeline, torch-fp32, onnx-fp32, onnx-int8," in text
    assert "but onnx-fp32-unfused, onnx-int8-unfused; torch-fp32 runs whatever is chosen" in text


def test_bench_json_records_the_chunks_that_ran(tmp_path):
    """--chunks 5 --n 2 ran 2 chunks and bench.json said 5."""
    import json

    from structsent.cli.bench import chunk_starts

    assert [len(chunk_starts(n, k)) for n, k in [(2, 5), (10, 5), (10, 6), (10, 4), (7, 1)]] == [2, 5, 5, 4, 1]
    out = tmp_path / "o"
    assert bench("--out", str(out), "--chunks", "5") == 0
    assert json.loads((out / "bench.json").read_text(encoding="utf-8"))["chunks"] == 2


def test_bench_takes_every_spelling_of_an_engine_flag_that_label_and_serve_take():
    """bench had --batch-tokens but not --max-batch-tokens, which label and serve take."""
    from structsent.cli import build_parser

    for command in ("bench", "label", "serve"):
        extra = ["in.txt"] if command == "label" else []
        for spelling in ("--token-budget", "--batch-tokens", "--max-batch-tokens"):
            assert build_parser().parse_args([command, *extra, spelling, "5000"]).token_budget == 5000, command
        for spelling in ("--num-threads", "--threads"):
            assert build_parser().parse_args([command, *extra, spelling, "3"]).num_threads == 3, command


def test_an_engine_variable_bench_does_not_read_is_said_not_silently_ignored(tmp_path, capsys, monkeypatch):
    """bench took STRUCTSENT_MAX_LENGTH=64 (and STRUCTSENT_BACKEND) without a word and ran as if unset."""
    monkeypatch.setenv("STRUCTSENT_MAX_LENGTH", "64")
    monkeypatch.setenv("STRUCTSENT_BACKEND", "onnx")
    monkeypatch.setenv("STRUCTSENT_NUM_THREADS", "1")  # read: nothing said
    assert main(["bench", "--n", "2", "--configs", ",,", "--out", str(tmp_path / "o")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[:2] == [f"structsent: warning: STRUCTSENT_{name} is set, but bench does not read it: each configuration "
                         "sets the engine's other settings itself" for name in ("BACKEND", "MAX_LENGTH")]
    assert len(lines) == 3 and lines[2].startswith("structsent: error: --configs ',,': names no configuration")


_WRITE_AS = """
import sys, time
from pathlib import Path
from structsent.cli.bench import _write_all_or_none

run, out = sys.argv[1], Path(sys.argv[2])
def writer(name):
    def write(path):
        path.write_text(run)
        time.sleep(0.05)
    return write
for _ in range(20):
    _write_all_or_none(out, {name: writer(name) for name in ("bench.json", "bench.png", "bench.md")})
"""


def test_two_benches_writing_one_out_leave_the_files_of_one_run(tmp_path):
    """Both used one temporary name per file: one run failed ("No such file or directory", exit 1)
    and bench.json and bench.md came from different runs."""
    import subprocess
    import sys

    out = tmp_path / "out"
    out.mkdir()
    runs = [subprocess.Popen([sys.executable, "-c", _WRITE_AS, run, str(out)], stderr=subprocess.PIPE) for run in "AB"]
    assert [run.wait() for run in runs] == [0, 0], [run.stderr.read() for run in runs]
    assert len({(out / name).read_text() for name in ("bench.json", "bench.png", "bench.md")}) == 1
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "bench.md", "bench.png"]  # no temporary file left
