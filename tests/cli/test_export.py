"""`structsent export`: the output directory is checked before anything is written, and an export
lands whole (one-line errors, exit 2; never a traceback, a clobbered checkpoint or a mix of files)."""

import json
import os
import shutil
import stat
import sys

import pytest

from structsent.cli import main

pytest.importorskip("onnxruntime")


@pytest.fixture
def source(hf_model_dir, tmp_path):
    """A private copy of the tiny checkpoint: a faulty export must not clobber the shared one."""
    return shutil.copytree(hf_model_dir, tmp_path / "checkpoint")


def export(source, output, *flags):
    return main(["export", str(source), "-o", str(output), "--validate-n", "0", *flags])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("structsent: error: export output") and err.count("\n") == 1, err
    return err


def test_bad_outputs_are_refused_before_anything_is_written(source, tmp_path, capsys, monkeypatch):
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    (tmp_path / "afile").write_text("x")
    (tmp_path / "link").symlink_to(source)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    monkeypatch.chdir(tmp_path)
    cases = {
        source: "source checkpoint", tmp_path / "link": "source checkpoint", source / "sub": "source checkpoint",
        tmp_path: "source checkpoint", tmp_path / "afile": "not a directory",
        tmp_path / "afile" / "sub": "does not exist or is not a directory",
        tmp_path / "missing" / "sub": "does not exist", "": "empty path", tmp_path / "full": "not empty",
        # (a traceback of pathlib's RuntimeError, and an "unexpected failure" exit 1, before)
        tmp_path / "loop-a": "a loop of symbolic links", tmp_path / "loop-a" / "x": "a loop of symbolic links",
        "n" * 300: "File name too long",
    }
    if sys.platform == "linux":
        cases["/proc/structsent-x"] = "cannot write"
    for output, message in cases.items():
        assert export(source, output) == 2, output
        assert message in one_line_error(capsys), output
    assert export(source, tmp_path / "full", "--overwrite") == 2  # --overwrite replaces exports only
    assert "not an ONNX export" in one_line_error(capsys)
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "checkpoint", "full", "link", "loop-a", "loop-b"]
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["notes.txt"]


def test_an_export_is_replaced_whole_with_overwrite_only(source, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()  # an existing empty directory is fine
    assert export(source, out) == 0
    first = json.loads((out / "config.json").read_text())
    capsys.readouterr()
    assert export(source, out) == 2
    assert "--overwrite" in one_line_error(capsys)
    (out / "NOTES.md").write_text("a user's own file")  # --overwrite deleted it with the export
    (out / "my_eval").mkdir()
    assert export(source, out, "--int8", "--overwrite") == 2
    assert "holds NOTES.md, my_eval, which no export writes" in one_line_error(capsys)
    assert json.loads((out / "config.json").read_text()) == first and (out / "NOTES.md").exists()
    (out / "NOTES.md").unlink()
    (out / "my_eval").rmdir()
    (out / "model.onnx").write_bytes(b"damaged")  # an export's own files are replaced whole
    os.chmod(out, 0o2750)  # a shared directory's mode (and setgid bit): kept by the replacement
    assert export(source, out, "--int8", "--overwrite") == 0
    config = json.loads((out / "config.json").read_text())
    assert (first["structsent_onnx"]["precision"], config["structsent_onnx"]["precision"]) == ("fp32", "int8")
    assert (out / "model.onnx").stat().st_size > 1000 and stat.S_IMODE(out.stat().st_mode) == 0o2750
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "out"]  # no staging left behind


def test_a_validation_file_without_texts_is_refused_not_skipped(source, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    assert main(["export", str(source), "-o", str(tmp_path / "out"), "--validate", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("structsent: error: --validate") and "no texts in it" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags", [(), ("--overwrite",)])
@pytest.mark.parametrize("put_there", ["a file in the directory", "a file in its place"])
def test_what_another_program_puts_at_the_output_during_the_export_is_never_replaced(source, tmp_path, capsys,
                                                                                       monkeypatch, flags, put_there):
    import structsent.onnx.export as export_module

    out = tmp_path / "out"
    out.mkdir()  # empty when checked
    export_into = export_module._export_into

    def export_while_another_program_writes(*args, **kwargs):
        report = export_into(*args, **kwargs)
        if put_there == "a file in the directory":
            (out / "notes.txt").write_text("mine")
        else:
            shutil.rmtree(out)  # the export's staging inside it too
            out.write_text("mine")
        return report

    monkeypatch.setattr(export_module, "_export_into", export_while_another_program_writes)
    assert export(source, out, *flags) == 2
    assert "while the export ran; nothing was replaced" in one_line_error(capsys)
    kept = out / "notes.txt" if put_there == "a file in the directory" else out
    assert kept.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "out"]  # the export discarded, no staging


def test_validation_texts_a_bom_opens_and_texts_that_are_not_strings(tmp_path):
    from structsent.errors import BadInputError
    from structsent.onnx.validate import read_texts

    good = tmp_path / "v.jsonl"
    good.write_bytes(b'\xef\xbb\xbf{"text": "\xe5\xa5\xbd"}\n\n{"text": "x"}\n')
    assert read_texts(good) == ["好", "x"]
    plain = tmp_path / "v.txt"
    plain.write_bytes(b"\xef\xbb\xbf\xe5\xa5\xbd\n")
    assert read_texts(plain) == ["好"]
    for line, message in (('{"text": null}', "'text' is null, not a string"),
                          ('{"text": ' + "9" * 5000 + "}", "expected one JSON object"),
                          ('{"body": "x"}', "expected one JSON object")):
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"text": "ok"}\n' + line + "\n", encoding="utf-8")
        with pytest.raises(BadInputError, match=message):
            read_texts(bad)


def test_sigterm_during_an_export_removes_its_staging_directory_and_exits_143(source, tmp_path):
    """`timeout`, `docker stop` and service managers send SIGTERM: the partial export (46 MB for the
    bundled model) stayed beside the output until a later export to the same name."""
    import signal
    import subprocess
    import time

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "structsent", "export", str(source), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.export-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the export ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and b"Traceback" not in err, err.decode(errors="replace")
    assert err.decode().strip().splitlines()[-1] == "structsent: terminated"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # no staging, no output


def test_an_existing_empty_directory_is_written_into_not_replaced(source, tmp_path):
    """It was replaced by a renamed sibling: an empty mount point (a container's volume) failed after
    the whole export ("Device or resource busy"), and a directory made with its own mode lost it."""
    import os
    import socket
    import stat

    out = tmp_path / "out"
    out.mkdir()
    os.chmod(out, 0o2770)
    inode = out.stat().st_ino
    dead = out / f".export-{socket.gethostname()}-999999999-dead"  # an export killed in it (kill -9)
    dead.mkdir()
    (dead / "model.onnx").write_bytes(b"half")
    assert export(source, out) == 0
    assert out.stat().st_ino == inode and stat.S_IMODE(out.stat().st_mode) == 0o2770
    assert sorted(p.name for p in out.iterdir()) == sorted(["config.json", "export_report.json", "model.onnx",
                                                            "model.onnx.blake2b", "tokenizer_config.json", "vocab.txt"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "out"]


def test_overwrite_replaces_an_export_in_a_directory_that_cannot_be_renamed(source, tmp_path, monkeypatch, capsys):
    """A mount point (a container's volume) holding an earlier export: --overwrite ran the whole
    export, then failed renaming the directory aside ("Device or resource busy")."""
    out = tmp_path / "out"
    assert export(source, out) == 0
    inode = out.stat().st_ino
    _busy_mount_point(monkeypatch, out)
    assert export(source, out, "--int8", "--overwrite") == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["structsent_onnx"]["precision"] == "int8" and out.stat().st_ino == inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "out"]  # no staging left behind


def _busy_mount_point(monkeypatch, out):
    """``out`` as a mount point: renaming it fails ("Device or resource busy"), as a volume's does."""
    import errno
    import os
    from pathlib import Path

    rename = Path.rename

    def busy(self, target):
        if self == out:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", busy)


def _files(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


@pytest.mark.parametrize("stopped_at_move", [1, 2])
def test_an_overwrite_of_a_mount_point_stopped_midway_leaves_the_earlier_export_whole(source, tmp_path, monkeypatch,
                                                                                       capsys, stopped_at_move):
    """A mount point's earlier export was deleted before the new files were copied in: Ctrl-C in the
    copy left neither (a few tokenizer files), and every rerun was refused ("not an ONNX export").
    Stopped while copying (move 1) or while swapping (move 2), the earlier export stays as it was."""
    import structsent.onnx.export as export_module

    out = tmp_path / "out"
    assert export(source, out) == 0
    before = _files(out)
    _busy_mount_point(monkeypatch, out)
    move, moves = export_module._move_export_files, []

    def stopped(staging, target):
        moves.append(target)
        if len(moves) == stopped_at_move:
            (target / "vocab.txt").write_text("half", encoding="utf-8")  # part of the files moved
            raise KeyboardInterrupt
        return move(staging, target)

    monkeypatch.setattr(export_module, "_move_export_files", stopped)
    assert export(source, out, "--int8", "--overwrite") == 130  # Ctrl-C: "structsent: interrupted"
    assert _files(out) == before and sorted(p.name for p in out.iterdir()) == sorted(before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "out"]  # no staging left behind
    monkeypatch.setattr(export_module, "_move_export_files", move)
    assert export(source, out, "--int8", "--overwrite") == 0, capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["structsent_onnx"]["precision"] == "int8"


def test_overwrite_replaces_the_remains_of_an_export_stopped_before_its_config(source, tmp_path, capsys):
    """An export's own files without config.json (stopped while they were moved in, config.json
    last): --overwrite refused them as "not an ONNX export", so only a hand clean-up went on."""
    out = tmp_path / "out"
    assert export(source, out) == 0
    (out / "config.json").unlink()
    assert export(source, out) == 2  # without --overwrite: not empty
    assert export(source, out, "--overwrite") == 0, capsys.readouterr().err
    assert (out / "config.json").is_file()
    (out / "config.json").unlink()
    (out / "notes.txt").write_text("mine", encoding="utf-8")  # a user's file: never deleted
    assert export(source, out, "--overwrite") == 2
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_an_export_whose_summary_cannot_be_written_says_so_in_one_line(tmp_path, hf_model_dir):
    """`structsent export ... >/dev/full`: the files were written, then an OSError traceback."""
    import subprocess
    import sys

    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "structsent", "export", hf_model_dir, "-o", str(tmp_path / "x")],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert (proc.returncode, proc.stderr.strip().splitlines()[-1]) == (
        1, "structsent: error: cannot write standard output: No space left on device")
    assert "Traceback" not in proc.stderr and (tmp_path / "x" / "model.onnx").is_file()


def test_an_int8_exports_default_check_says_it_ran_on_the_calibration_texts(source, tmp_path, capsys):
    """The int8 export's default agreement figure came from the texts its smoothing is calibrated
    on, and read as held-out agreement; the line says so (fp32 has no calibration: unchanged)."""
    assert main(["export", str(source), "-o", str(tmp_path / "i8"), "--int8", "--validate-n", "20"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("label agreement ") and "on 20 texts (structsent/data/sample_reviews.txt (the texts " \
        "int8's smoothing is calibrated on: --validate FILE for held-out ones)" in line, line
    assert main(["export", str(source), "-o", str(tmp_path / "f32"), "--validate-n", "20"]) == 0
    assert "on 20 texts (structsent/data/sample_reviews.txt)" in capsys.readouterr().out


def test_an_output_of_dash_is_refused_as_standard_output(source, tmp_path, capsys, monkeypatch):
    """`export default -o -` wrote into a directory named "-", where `label -o -` means standard output."""
    monkeypatch.chdir(tmp_path)
    assert export(source, "-") == 2
    assert "export output -: an export is a directory, not standard output" in one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_a_stop_between_the_mount_points_hidden_directories_leaves_neither(source, tmp_path, monkeypatch, capsys):
    """Ctrl-C after the first of the two hidden directories was made left it inside the export."""
    import structsent.onnx.export as export_module

    out = tmp_path / "out"
    assert export(source, out) == 0
    before = _files(out)
    _busy_mount_point(monkeypatch, out)
    new_inside, made = export_module._new_inside, []

    def stopped_at_the_second(target):
        if made:
            raise KeyboardInterrupt
        made.append(new_inside(target))
        return made[-1]

    monkeypatch.setattr(export_module, "_new_inside", stopped_at_the_second)
    assert export(source, out, "--overwrite") == 130
    assert made and not made[0].exists()
    assert _files(out) == before and sorted(p.name for p in out.iterdir()) == sorted(before)


def test_an_overwrite_stopped_between_its_two_renames_puts_the_earlier_export_back(source, tmp_path, monkeypatch,
                                                                                     capsys):
    """Ctrl-C (or SIGTERM) after the earlier export was renamed to .out.previous-* and before the new
    one was renamed onto out: out was missing and the earlier export stranded under the hidden name."""
    from pathlib import Path

    out = tmp_path / "out"
    assert export(source, out) == 0
    before = _files(out)
    rename = Path.rename

    def stopped_after_moving_aside(self, target):
        moved = rename(self, target)
        if Path(target).name.startswith(".out.previous-"):
            raise KeyboardInterrupt
        return moved

    monkeypatch.setattr(Path, "rename", stopped_after_moving_aside)
    assert export(source, out, "--int8", "--overwrite") == 130
    assert _files(out) == before and sorted(p.name for p in out.iterdir()) == sorted(before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "out"]  # no staging, nothing hidden


def test_an_earlier_export_left_aside_by_a_killed_overwrite_is_put_back_or_removed(source, tmp_path, capsys):
    """kill -9 between the two renames of an --overwrite: nothing put the hidden .out.previous-* back
    (out stayed missing) or removed it (the later export's staging was removed, it was not)."""
    import socket

    out = tmp_path / "out"
    assert export(source, out) == 0
    before = _files(out)
    dead = f"{socket.gethostname()}-999999999-dead"
    out.rename(tmp_path / f".out.previous-{dead}")
    (tmp_path / f".out.export-{dead}").mkdir()  # the new export, never renamed into place
    assert export(source, out) == 2  # the earlier export is back: not empty without --overwrite
    assert "--overwrite" in one_line_error(capsys)
    assert _files(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "out"]
    aside = tmp_path / f".out.previous-{dead}"  # killed after the new export was renamed onto out
    aside.mkdir()
    (aside / "model.onnx").write_bytes(b"the earlier export")
    assert export(source, out, "--int8", "--overwrite") == 0, capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["structsent_onnx"]["precision"] == "int8"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "out"]


def test_a_validation_file_is_read_only_as_far_as_validate_n_and_must_be_a_regular_file(source, tmp_path, capsys):
    """The whole --validate file was read whatever --validate-n: `--validate /dev/zero --validate-n 1`
    ran out of memory (a MemoryError traceback, or the process killed)."""
    for device, kind in (("/dev/zero", "a character device"), (tmp_path, "a directory")):
        assert main(["export", str(source), "-o", str(tmp_path / "out"), "--validate", str(device),
                     "--validate-n", "1"]) == 2
        err = capsys.readouterr().err
        assert err == f"structsent: error: --validate {device}: is {kind}, not a file of texts (one per line, " \
                      "or JSON Lines with 'text')\n", err
    texts = tmp_path / "texts.txt"
    texts.write_bytes("很好\n\n很差\n".encode() + b"\xff\xfe not UTF-8, past the texts asked for\n")
    assert main(["export", str(source), "-o", str(tmp_path / "out"), "--validate", str(texts),
                 "--validate-n", "2"]) == 0, capsys.readouterr().err
    assert "on 2 texts" in capsys.readouterr().out
    assert main(["export", str(source), "-o", str(tmp_path / "out3"), "--validate", str(texts),
                 "--validate-n", "3"]) == 2
    assert capsys.readouterr().err.startswith(f"structsent: error: --validate {texts}: cannot read texts")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "out", "texts.txt"]


def test_the_summary_writes_the_output_and_validation_names_as_one_line_each(source, tmp_path, capsys):
    """The `wrote ...` line and the agreement line printed the names as they stand: a line break in
    the output's name split its line, and ESC in the --validate file's name reached the terminal."""
    texts = tmp_path / "v\x1b[31m\nal.txt"
    texts.write_text("很好\n很差\n", encoding="utf-8")
    out = tmp_path / "o\nut\x1b[2J"
    assert main(["export", str(source), "-o", str(out), "--validate", str(texts), "--validate-n", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "\x1b" not in "".join(lines) and len(lines) == 3, lines
    assert lines[0].startswith(f"wrote {tmp_path}/o\\nut\\x1b[2J/model.onnx (fp32, fused) in "), lines
    assert lines[2].endswith("on 2 texts (" + str(tmp_path) + "/v\\x1b[31m\\nal.txt)"), lines


def test_a_validation_file_of_unlabellable_texts_is_refused_before_the_export(source, tmp_path, capsys, monkeypatch):
    """Texts the tokenizer leaves nothing of (NUL or control characters only) were found out only
    after the whole export ran, as "no labellable validation texts", without naming the file."""
    import structsent.onnx.export as export_module

    texts = tmp_path / "controls.txt"
    texts.write_text("\x00\x01\n\x07\x1b\n", encoding="utf-8")

    def not_run(*args, **kwargs):
        raise AssertionError("exported before the validation texts were checked")

    monkeypatch.setattr(export_module, "export_checkpoint", not_run)
    assert main(["export", str(source), "-o", str(tmp_path / "out"), "--validate", str(texts)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"structsent: error: --validate {texts}: no labellable texts in it (none of the 2 read "
                          "can be labelled, e.g. '\\x00\\x01': no tokens left after normalisation)"), err
    assert err.count("\n") == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "controls.txt"]


def test_overwrite_refuses_a_directory_of_export_named_files_without_an_exports_mark(source, tmp_path, capsys):
    """A user's own vocab.txt and model.onnx (no config.json, no export_report.json, no graph digest)
    were taken for the remains of a stopped export, and --overwrite replaced them without a word."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "vocab.txt").write_text("mine\n", encoding="utf-8")
    (out / "model.onnx").write_bytes(b"my own model")
    assert export(source, out, "--overwrite") == 2
    err = one_line_error(capsys)
    assert "holds model.onnx, vocab.txt but no earlier export's config.json, model.onnx.blake2b or " \
           "export_report.json" in err, err
    assert _files(out) == {"vocab.txt": b"mine\n", "model.onnx": b"my own model"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "out"]


def test_an_export_stopped_while_its_files_were_moved_in_leaves_its_mark_first(source, tmp_path, monkeypatch, capsys):
    """What a stopped move into an empty directory leaves bears the graph's digest (moved first), so
    --overwrite replaces it as an export's remains rather than refusing it as a user's files."""
    import shutil as shutil_module
    from pathlib import Path

    out = tmp_path / "out"
    out.mkdir()
    move, moved = shutil_module.move, []

    def stopped_after_the_first(source_path, target_path):
        if Path(target_path).parent != out:  # the graph into the staging directory
            return move(source_path, target_path)
        if moved:
            raise KeyboardInterrupt
        moved.append(move(source_path, target_path))
        return moved[-1]

    monkeypatch.setattr(shutil_module, "move", stopped_after_the_first)
    assert export(source, out) == 130
    assert [p.name for p in out.iterdir()] == ["model.onnx.blake2b"]
    monkeypatch.setattr(shutil_module, "move", move)
    assert export(source, out, "--overwrite") == 0, capsys.readouterr().err
    assert (out / "config.json").is_file()


def test_engine_variables_an_export_does_not_read_are_named(source, tmp_path, capsys, monkeypatch):
    """STRUCTSENT_PRECISION=int8 wrote an fp32 export without a word."""
    monkeypatch.setenv("STRUCTSENT_PRECISION", "int8")
    monkeypatch.setenv("STRUCTSENT_MAX_LENGTH", "64")
    assert export(source, tmp_path / "out") == 0
    err = capsys.readouterr().err.splitlines()
    assert sorted(line for line in err if "is set, but export does not read it" in line) == [
        f"structsent: warning: {name} is set, but export does not read it: its flags choose what is written "
        "(--int8, --no-optimize)" for name in ("STRUCTSENT_MAX_LENGTH", "STRUCTSENT_PRECISION")]
    assert json.loads((tmp_path / "out" / "config.json").read_text(encoding="utf-8"))["structsent_onnx"]["precision"] \
        == "fp32"


@pytest.mark.parametrize("precision", [["int8"], ["fp16"], []])
def test_precision_is_not_an_export_flag_and_the_refusal_names_the_one_that_is(tmp_path, capsys, precision):
    """`export --precision int8` (the engine's flag) said only "unrecognized arguments"."""
    assert main(["export", "default", "-o", str(tmp_path / "out"), "--precision", *precision]) == 2
    assert capsys.readouterr().err == ("structsent: error: export has no --precision: it writes fp32, or int8 with "
                                       "--int8 (an ONNX export holds no fp16 or bf16: the torch backend runs those "
                                       "from the source checkpoint)\n")
    assert not (tmp_path / "out").exists()
