"""structsent.cli.lines: a name in a message is one line and nothing a terminal acts on."""

import pytest

from structsent.cli.lines import one_line


@pytest.mark.parametrize("name, shown", [
    ("a\nb.csv", "a\\nb.csv"), ("a\rb.csv", "a\\rb.csv"), ("esc\x1b[31m.csv", "esc\\x1b[31m.csv"),
    ("vt\x0bff\x0c.csv", "vt\\x0bff\\x0c.csv"), ("del\x7f.csv", "del\\x7f.csv"), ("c1\x9b.csv", "c1\\x9b.csv"),
    ("nul\x00.csv", "nul\\x00.csv"),
])
def test_control_characters_are_written_as_escapes(name, shown):
    assert one_line(name) == shown


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
