"""structsent.cli.main: what every command says on standard error besides its own work."""

import logging

from structsent.cli import main


def test_a_library_warning_is_said_as_the_command_s_own_warning(tmp_path, hf_model_dir, capsys):
    """`structsent label --max-length 100000` printed the library's logged warning bare ("max_length=100000
    is more than ..."), among the command's "structsent: warning: ..." lines."""
    source = tmp_path / "in.txt"
    source.write_text("很好\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["label", str(source), "-o", str(out), "--model", str(hf_model_dir), "--quiet", "--max-length", "100000"]) == 0
    said = capsys.readouterr().err.splitlines()
    assert [line for line in said if "max_length=100000" in line] == [
        "structsent: warning: max_length=100000 is more than the model's 512 positions: texts are cut (or windowed) at 512 tokens"]
    assert logging.getLogger("structsent").handlers == []  # the command's handler leaves with it


def test_the_onnx_export_record_is_said_as_a_notice_not_a_warning(tmp_path, hf_model_dir, capsys, monkeypatch):
    """The first load's export record is logged at WARNING so that library users see it; the command
    line says it as what it is, a notice ("structsent: first use of ..."), not "warning:"."""
    monkeypatch.setenv("STRUCTSENT_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "in.txt"
    source.write_text("很好\n", encoding="utf-8")
    args = ["label", str(source), "-o", str(tmp_path / "out.jsonl"), "--model", str(hf_model_dir), "--backend", "onnx",
            "--quiet"]
    assert main(args) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "first use of" in line]
    assert len(said) == 1 and said[0].startswith("structsent: first use of ") and "exported it" in said[0], said


def test_a_library_warning_is_said_once_where_the_caller_configured_logging(tmp_path, hf_model_dir, capsys):
    """With the root logger configured (logging.basicConfig), the record was printed twice: the
    command's line and the root handler's "WARNING:structsent.runtime:..."; an error was said as a
    warning."""
    root = logging.getLogger()
    handler = logging.StreamHandler()  # (on sys.stderr as it is now: capsys's)
    root.addHandler(handler)
    try:
        source = tmp_path / "in.txt"
        source.write_text("很好\n", encoding="utf-8")
        args = ["label", str(source), "-o", str(tmp_path / "out.jsonl"), "--model", str(hf_model_dir), "--quiet",
                "--max-length", "100000"]
        assert main(args) == 0
        said = [line for line in capsys.readouterr().err.splitlines() if "max_length=100000" in line]
        assert len(said) == 1 and said[0].startswith("structsent: warning: "), said
        assert logging.getLogger("structsent").propagate
    finally:
        root.removeHandler(handler)
    from structsent.cli import library_warnings_said_as_ours

    with library_warnings_said_as_ours("label"):
        logging.getLogger("structsent.test").error("the cache could not be used")
    assert capsys.readouterr().err == "structsent: error: the cache could not be used\n"
