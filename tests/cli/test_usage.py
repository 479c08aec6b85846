"""The command line's usage errors (structsent.cli): one line, exit 2, pointing at the right --help."""

import pytest

from structsent.cli import SUBCOMMANDS, main

# What each subcommand requires, so that the unknown flag is its only error.
REQUIRED = {"label": ["in.csv"], "serve": [], "export": ["default", "-o", "out"], "bench": [],
            "report": ["in.csv", "-o", "r.html"]}


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_an_unknown_flag_points_at_its_subcommand_s_help(command, capsys):
    """`structsent label --bogus in.csv` said "(see structsent --help)", whose page lists no flag of label."""
    with pytest.raises(SystemExit) as stopped:
        main([command, "--bogus", *REQUIRED[command]])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.endswith(f": error: unrecognized arguments: --bogus (see structsent {command} --help)\n")


def test_an_unknown_flag_before_the_subcommand_points_at_the_command_s_help(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--bogus", "report", "in.csv", "-o", "r.html"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "structsent: error: unrecognized arguments: --bogus (see structsent --help)\n"


@pytest.mark.parametrize(("args", "flag"), [(["bench", "--corpus", ""], "--corpus"),
                                            (["export", "default", "-o", "out", "--validate", " "], "--validate")])
def test_an_empty_path_is_refused_as_empty(args, flag, capsys):
    """It became the current directory: "--corpus .: is a directory", a name never typed."""
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert stopped.value.code == 2
    assert f"error: argument {flag}: an empty path (" in capsys.readouterr().err


def test_bench_s_help_says_which_variables_set_its_engine_flags(monkeypatch, capsys):
    """It showed no default and named no variable: with STRUCTSENT_DEVICE set, --help said nothing of it."""
    monkeypatch.setenv("STRUCTSENT_DEVICE", "cpu")
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "(default: $STRUCTSENT_DEVICE, else auto; STRUCTSENT_DEVICE='cpu' sets it now)" in shown
    assert "(default: $STRUCTSENT_NUM_THREADS, else 0: each runtime's own)" in shown
    assert "(default: $STRUCTSENT_TOKEN_BUDGET, else planned for the device)" in shown
