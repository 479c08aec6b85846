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
