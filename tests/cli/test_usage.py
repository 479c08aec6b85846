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
    assert capsys.readouterr().err == (
        "structsent: error: unrecognized arguments: --bogus (structsent's own options are --help and --version; a "
        "command's options come after the command: label, serve, export, bench, report) (see structsent --help)\n")


def test_an_unknown_flag_without_a_command_is_named(capsys):
    """`structsent --nope` said only "the following arguments are required: COMMAND"."""
    with pytest.raises(SystemExit) as stopped:
        main(["--nope"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith("structsent: error: unrecognized arguments: --nope (")


@pytest.mark.parametrize(("typed", "meant"), [("lable", "label"), ("serv", "serve"), ("reprot", "report")])
def test_a_misspelt_command_gets_the_nearest_one(typed, meant, capsys):
    with pytest.raises(SystemExit) as stopped:
        main([typed, "in.csv"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (f"structsent: error: unknown command {typed!r}: did you mean {meant!r}? "
                                       "(see structsent --help)\n")


def test_the_top_level_options_and_their_abbreviations_still_work(capsys):
    for option in ("--version", "--vers"):
        with pytest.raises(SystemExit) as stopped:
            main([option])
        assert stopped.value.code == 0
        assert capsys.readouterr().out.startswith("structsent ")
    with pytest.raises(SystemExit) as stopped:  # far from every command: argparse's list of them
        main(["xyz"])
    assert stopped.value.code == 2
    assert "invalid choice: 'xyz' (choose from 'label', 'serve'" in capsys.readouterr().err


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
