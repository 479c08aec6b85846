"""structsent.lines: a name in a message is one line and nothing a terminal acts on."""

import pytest

from structsent.lines import one_line


@pytest.mark.parametrize("name, shown", [
    ("a\nb.csv", "a\\nb.csv"), ("a\rb.csv", "a\\rb.csv"), ("esc\x1b[31m.csv", "esc\\x1b[31m.csv"),
    ("vt\x0bff\x0c.csv", "vt\\x0bff\\x0c.csv"), ("del\x7f.csv", "del\\x7f.csv"), ("c1\x9b.csv", "c1\\x9b.csv"),
    ("nul\x00.csv", "nul\\x00.csv"),
])
def test_control_characters_are_written_as_escapes(name, shown):
    assert one_line(name) == shown


def test_bytes_of_a_name_that_are_not_utf8_are_written_as_escapes_of_the_bytes():
    """os.fsdecode(b"a\\xff\\x80.csv") holds U+DCFF and U+DC80: they were kept, no UTF-8 to print."""
    import os

    assert one_line(os.fsdecode(b"a\xff\x80.csv")) == "a\\xff\\x80.csv"
    assert one_line("\udc7f\ud800") == "\udc7f\ud800"  # no surrogateescape character: not a byte


def test_text_and_tabs_are_kept_as_they_are():
    kept = "评论 数据\t(2024)  «é» ½ \u3000.csv"
    assert one_line(kept) == kept


def test_a_name_with_a_control_character_reaches_standard_error_escaped(tmp_path, capsys):
    from structsent.cli import main

    out = tmp_path / "esc\x1b[31m.csv"
    assert main(["label", str(tmp_path / "missing.txt"), "-o", str(out)]) == 2
    assert main(["report", str(out), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "esc\\x1b[31m.csv" in err and len(err.strip().splitlines()) == 2


@pytest.mark.parametrize("argv", [["label", "x.csv", "--foo", "x\x1b[31m\ny"], ["label"], ["label", "x.csv", "--chunk-rows", "1\x1b\n"],
                                  ["nosuch"], []])
def test_a_usage_error_is_one_escaped_line_and_exit_2(argv, capsys):
    """argparse printed its usage block first, and a value holding a line break or ESC as it stands."""
    from structsent.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1 and "\x1b" not in err
    assert err.startswith("structsent") and ": error: " in err and err.endswith("--help)\n")


def test_warnings_and_summaries_escape_the_names_they_print(tmp_path, capsys, monkeypatch):
    from structsent.cli import main

    labelled = tmp_path / "labelled.csv"
    labelled.write_text("text,label,score,prob_负面,prob_正面,error\n好,正面,0.9,0.1,0.9,\n", encoding="utf-8")
    monkeypatch.setenv("STRUCTSENT_THREADZ\x1b[31m\nX", "1")  # a misspelt variable: warned of, by its name
    assert main(["report", str(labelled), "-o", str(tmp_path / "r\x1b[2J\n.html")]) == 0
    err = capsys.readouterr().err
    assert "\x1b" not in err and len(err.strip().splitlines()) == 2
    assert "STRUCTSENT_THREADZ\\x1b[31m\\nX" in err and "r\\x1b[2J\\n.html: 1 row (负面 0, 正面 1" in err


def test_a_name_holding_a_byte_that_is_not_utf8_is_said_as_that_byte(tmp_path):
    """`structsent report` of a real file named b"ok\\xff.csv" said "ok\\udcff.csv" (Python's escape of
    the character standing for the byte, not of the byte)."""
    import os
    import subprocess
    import sys

    name = os.path.join(os.fsencode(tmp_path), b"ok\xff.csv")
    with open(name, "wb") as handle:
        handle.write("text\n好\n".encode())
    proc = subprocess.run([sys.executable, "-m", "structsent", "report", name, "-o", os.fsencode(tmp_path / "r.html")],
                          capture_output=True, timeout=120)
    assert proc.returncode == 2
    said = proc.stderr.decode("utf-8")  # strict: valid UTF-8
    assert said.startswith(f"structsent: error: {tmp_path}/ok\\xff.csv: no label columns"), said
    assert len(said.splitlines()) == 1


def test_bidirectional_controls_are_escaped_so_a_name_reads_as_it_is():
    """A right-to-left override in a file name showed the rest of the line reversed ("evil\\u202ecod.exe"
    read as "evilexe.doc")."""
    from structsent.lines import one_line

    for control in ("\u202e", "\u202a", "\u2066", "\u2069", "\u200f", "\u061c"):
        assert one_line(f"a{control}b") == f"a\\u{ord(control):04x}b"
    assert one_line("好\u3000评 emoji😀 zero\u200bwidth") == "好\u3000评 emoji😀 zero\u200bwidth"  # printable: as is
