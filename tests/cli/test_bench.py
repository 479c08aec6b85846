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
    empty, binary = tmp_path / "empty.txt", tmp_path / "random.bin"
    empty.write_text("")
    binary.write_bytes(b"ok\n\x80\x81")
    invisible = tmp_path / "invisible.txt"
    invisible.write_text("\u200b\u200b\n\x07\n", encoding="utf-8")  # reviews of nothing: was an IndexError
    cases = [
        (["--out", str(tmp_path / "afile")], "afile: exists and is not a directory"),
        (["--out", str(tmp_path / "afile" / "sub")], "afile is not a directory"),
        (["--out", ""], "--out: an empty path"),
        (["--out", str(tmp_path / "o"), "--corpus", str(empty)], "empty.txt: no reviews in it"),
        (["--out", str(tmp_path / "o"), "--corpus", str(binary)], "random.bin: not UTF-8 text (undecodable byte at offset 3)"),
        (["--out", str(tmp_path / "o"), "--corpus", str(invisible)],
         "invisible.txt: 2 of the 2 benchmark texts cannot be labelled"),
        (["--out", str(tmp_path / "o"), "--num-threads", "2147483648"], "num_threads=2147483648: must be in 0..1024"),
        (["--out", str(tmp_path / "o"), "--shape", "structbert-base", "--model", "/elsewhere"],
         "--shape structbert-base benchmarks a random model of that shape: it replaces --model /elsewhere"),
    ]
    for flags, message in cases:
        assert bench(*flags) == 2, flags
        assert message in one_line_error(capsys), flags
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "empty.txt", "invisible.txt", "random.bin"]


def test_cuda_without_cuda_is_the_same_config_error_as_label(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["bench", "--n", "2", "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    assert "device 'cuda': CUDA is not available" in one_line_error(capsys)
    assert main(["bench", "--n", "2", "--device", "gpu", "--out", str(tmp_path / "o")]) == 2
    assert "device='gpu': expected one of auto, cpu, cuda, cuda:N" in one_line_error(capsys)


def test_a_configuration_named_twice_is_measured_once(tmp_path, capsys):
    """It failed after the whole run, on arrays of two lengths."""
    out = tmp_path / "o"
    assert main(["bench", "--n", "2", "--configs", "torch-fp32,torch-fp32", "--device", "cpu", "--out", str(out)]) == 0
    rows = [line for line in (out / "bench.md").read_text(encoding="utf-8").splitlines() if line.startswith("| structsent")]
    assert rows == [rows[0]] and rows[0].startswith("| structsent torch fp32 |")
