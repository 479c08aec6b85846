"""structsent.cli.numbers: numbers in flags and STRUCTSENT_* variables are ASCII digits."""

import pytest

from structsent.cli import build_parser, main
from structsent.cli.engine_flags import engine_config
from structsent.errors import ConfigError


@pytest.mark.parametrize("value", ["١٢٣", "１２８", "1_000", "4096x", ""])
@pytest.mark.parametrize("command, flag", [("label", "--token-budget"), ("label", "--chunk-rows"),
                                           ("serve", "--max-queue"), ("serve", "--max-wait-ms"),
                                           ("report", "--least-certain"), ("bench", "--n")])
def test_a_number_not_in_ascii_digits_is_refused_by_the_parser(command, flag, value, capsys):
    """int("١٢٣") is 123 and int("1_000") is 1000: such a value ran as a number no one typed."""
    argv = [command, "x.csv", flag, value] if command in ("label", "report") else [command, flag, value]
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(argv)
    assert stopped.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert f"argument {flag}" in error and repr(value) in error


@pytest.mark.parametrize("argv, field, expected", [
    (["label", "x.csv", "--token-budget", "2048"], "token_budget", 2048),
    (["label", "x.csv", "--token-budget", "+2048"], "token_budget", 2048),
    (["label", "x.csv", "--chunk-rows", " 64 "], "chunk_rows", 64),
    (["serve", "--max-wait-ms", "2.5"], "max_wait_ms", 2.5),
    (["serve", "--read-timeout-s", "1e1"], "read_timeout_s", 10.0),
])
def test_numbers_in_ascii_digits_are_read_as_before(argv, field, expected):
    assert getattr(build_parser().parse_args(argv), field) == expected


@pytest.mark.parametrize("value", ["١٢٣", "1_000"])
def test_a_variable_not_in_ascii_digits_is_named_as_the_variable(monkeypatch, tmp_path, capsys, value):
    monkeypatch.setenv("STRUCTSENT_TOKEN_BUDGET", value)
    with pytest.raises(ConfigError, match=f"^STRUCTSENT_TOKEN_BUDGET='{value}': expected an integer in ASCII digits$"):
        engine_config(build_parser().parse_args(["label", "x.txt"]))
    source = tmp_path / "in.txt"
    source.write_text("好\n", encoding="utf-8")
    assert main(["label", str(source), "-o", str(tmp_path / "o.csv")]) == 2
    assert capsys.readouterr().err.strip().endswith(f"STRUCTSENT_TOKEN_BUDGET='{value}': expected an integer in ASCII digits")
    assert not (tmp_path / "o.csv").exists()
